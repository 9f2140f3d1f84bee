//! Every command this door serves, in one table: `COMMAND` reports it (arity, flags, docs),
//! and `MULTI` checks a queued command's argument count against it. What each command may
//! touch is [`Command::needs`], not a column here, so it cannot be left out.

use super::command::{Command, Keys, Needs};

/// One command's entry.
#[derive(Debug)]
pub struct Spec {
    /// The command.
    pub command: Command,
    /// Redis' convention: the argument count including the name; negative: at least that many.
    pub arity: i64,
    /// `COMMAND INFO` flags.
    pub flags: &'static [&'static str],
    /// `COMMAND DOCS`: group, summary and arguments (name and type).
    pub group: &'static str,
    pub summary: &'static str,
    pub args: &'static [(&'static str, &'static str)],
}

const fn spec(command: Command, arity: i64) -> Spec {
    Spec { command, arity, flags: &[], group: "string", summary: "", args: &[] }
}

const KEY: (&str, &str) = ("key", "key");

/// The table.
pub const COMMANDS: &[Spec] = &[
    Spec {
        flags: &["write", "denyoom", "fast"],
        summary: "Adds 1 to a counter and returns its count (AddAndGetCount).",
        args: &[KEY],
        ..spec(Command::Incr, 2)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        summary: "Adds an integer to a counter and returns its count (AddAndGetCount).",
        args: &[KEY, ("increment", "integer")],
        ..spec(Command::IncrBy, 3)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        summary: "Subtracts 1 from a counter and returns its count (AddAndGetCount).",
        args: &[KEY],
        ..spec(Command::Decr, 2)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        summary: "Subtracts an integer from a counter and returns its count (AddAndGetCount).",
        args: &[KEY, ("decrement", "integer")],
        ..spec(Command::DecrBy, 3)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        summary: "Adds with an idempotency token: 1 if applied, 0 if the token was applied already (AddCount).",
        args: &[KEY, ("delta", "integer"), ("token", "string"), ("generation_time_ms", "integer")],
        ..spec(Command::TallyAdd, -4)
    },
    Spec {
        flags: &["write", "fast"],
        summary: "Clears a counter with an idempotency token: 1 if applied, 0 if applied already (ClearCount).",
        args: &[KEY, ("token", "string"), ("generation_time_ms", "integer")],
        ..spec(Command::TallyClear, -3)
    },
    Spec {
        flags: &["readonly", "fast"],
        summary: "Reads a counter (GetCount).",
        args: &[KEY],
        ..spec(Command::Get, 2)
    },
    Spec {
        flags: &["readonly", "fast"],
        summary: "Reads counters (GetCount each).",
        args: &[KEY],
        ..spec(Command::MGet, -2)
    },
    Spec {
        flags: &["write"],
        group: "generic",
        summary: "Clears counters (ClearCount each) and returns how many were cleared.",
        args: &[KEY],
        ..spec(Command::Del, -2)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "How many of the keys name counters that were ever written.",
        args: &[KEY],
        ..spec(Command::Exists, -2)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "-1 for a counter that exists and does not expire, -2 for one never written.",
        args: &[KEY],
        ..spec(Command::Ttl, 2)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "TTL in milliseconds.",
        args: &[KEY],
        ..spec(Command::PTtl, 2)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "Refused: durable counters never expire; best_effort ones expire by their namespace's best_effort_ttl.",
        args: &[KEY, ("seconds", "integer")],
        ..spec(Command::Expire, -3)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "Refused, as EXPIRE.",
        args: &[KEY, ("milliseconds", "integer")],
        ..spec(Command::PExpire, -3)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "0: a counter has no per-key timeout to remove.",
        args: &[KEY],
        ..spec(Command::Persist, 2)
    },
    Spec {
        flags: &["readonly"],
        group: "generic",
        summary: "Iterates over counter keys (ListCounters), a page per call.",
        args: &[("cursor", "integer"), ("pattern", "pattern"), ("count", "integer")],
        ..spec(Command::Scan, -2)
    },
    Spec {
        flags: &["readonly"],
        group: "generic",
        summary: "Every counter key matching a pattern, at most 10,000 (use SCAN beyond).",
        args: &[("pattern", "pattern")],
        ..spec(Command::Keys, 2)
    },
    Spec {
        flags: &["fast", "allow_busy"],
        group: "transactions",
        summary: "Queues the commands that follow until EXEC (run as a pipeline: not atomic across counters).",
        ..spec(Command::Multi, 1)
    },
    Spec {
        flags: &["slow"],
        group: "transactions",
        summary: "Runs the commands queued since MULTI, in order, and returns their replies.",
        ..spec(Command::Exec, 1)
    },
    Spec {
        flags: &["fast", "allow_busy"],
        group: "transactions",
        summary: "Drops the commands queued since MULTI.",
        ..spec(Command::Discard, 1)
    },
    Spec { flags: &["fast"], group: "connection", summary: "Answers PONG.", ..spec(Command::Ping, -1) },
    Spec {
        flags: &["fast"],
        group: "connection",
        summary: "Returns its argument.",
        args: &[("message", "string")],
        ..spec(Command::Echo, 2)
    },
    Spec {
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        summary: "Chooses the protocol version (2 or 3), optionally authenticating.",
        args: &[("protover", "integer")],
        ..spec(Command::Hello, -1)
    },
    Spec {
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        summary: "Authenticates the connection with a bearer token.",
        args: &[("password", "string")],
        ..spec(Command::Auth, -2)
    },
    Spec {
        flags: &["fast"],
        group: "connection",
        summary: "Selects database 0, the only one.",
        args: &[("index", "integer")],
        ..spec(Command::Select, 2)
    },
    Spec { group: "connection", summary: "SETNAME, GETNAME, SETINFO and ID.", ..spec(Command::Client, -2) },
    Spec { group: "server", summary: "This table: COUNT, INFO and DOCS.", ..spec(Command::Introspect, -1) },
    Spec {
        group: "server",
        summary: "CONFIG GET of what clients ask; CONFIG SET is refused.",
        ..spec(Command::Config, -2)
    },
    Spec {
        group: "server",
        summary: "Server, clients, stats, persistence and keyspace sections.",
        args: &[("section", "string")],
        ..spec(Command::Info, -1)
    },
    Spec {
        flags: &["fast", "no_auth"],
        group: "connection",
        summary: "Closes the connection.",
        ..spec(Command::Quit, -1)
    },
];

impl Command {
    /// The command's entry in [`COMMANDS`], which lists every command in declaration order
    /// (a test checks), so the variant is its index.
    pub fn spec(self) -> &'static Spec {
        let spec = &COMMANDS[self as usize];
        debug_assert_eq!(spec.command, self, "COMMANDS is in Command's declaration order");
        spec
    }
}

impl Spec {
    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn fits(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        if self.arity >= 0 { argc == self.arity } else { argc >= -self.arity }
    }

    /// `COMMAND INFO`'s first key, last key and step.
    pub fn key_positions(&self) -> (i64, i64, i64) {
        match self.command.needs() {
            Needs::Nothing | Needs::Session => (0, 0, 0),
            Needs::Counters(_, Keys::First) => (1, 1, 1),
            Needs::Counters(_, Keys::All) => (1, -1, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_one_entry_and_writers_name_their_keys() {
        assert_eq!(COMMANDS.len(), Command::ALL.len());
        for (command, spec) in Command::ALL.iter().zip(COMMANDS) {
            assert_eq!(spec.command, *command, "the table lists commands in Command::ALL's order");
            if spec.flags.contains(&"write") {
                assert!(
                    matches!(command.needs(), Needs::Counters(..)),
                    "{command:?} writes keys it does not name"
                );
            }
        }
    }

    #[test]
    fn arity_follows_the_redis_convention() {
        let incr = Command::Incr.spec();
        assert!(incr.fits(2) && !incr.fits(3));
        let mget = Command::MGet.spec();
        assert!(mget.fits(2) && mget.fits(9) && !mget.fits(1));
    }
}
