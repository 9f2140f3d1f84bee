//! Every command this door serves, in one table: `COMMAND` reports it, authorisation reads
//! each command's keys and the access they need from it, and pipelines batch the commands it
//! marks as adds. A command missing here is unknown, so a new counter command cannot skip
//! authorisation by being left out of a second list.

use crate::auth::Access;

/// Which arguments of a command are counter keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// None.
    None,
    /// The first argument.
    First,
    /// Every argument.
    All,
}

/// One command.
#[derive(Debug)]
pub struct Spec {
    /// The name, upper case.
    pub name: &'static str,
    /// Redis' convention: the argument count including the name; negative: at least that many.
    pub arity: i64,
    /// `COMMAND INFO` flags.
    pub flags: &'static [&'static str],
    /// Its counter keys, and the access each needs.
    pub keys: Keys,
    pub access: Access,
    /// Whether consecutive ones of a pipeline run as one engine batch.
    pub add: bool,
    /// `COMMAND DOCS`: group, summary and arguments (name and type).
    pub group: &'static str,
    pub summary: &'static str,
    pub args: &'static [(&'static str, &'static str)],
}

const fn spec(name: &'static str, arity: i64, keys: Keys, access: Access) -> Spec {
    Spec { name, arity, flags: &[], keys, access, add: false, group: "string", summary: "", args: &[] }
}

const KEY: (&str, &str) = ("key", "key");

/// The table.
pub const COMMANDS: &[Spec] = &[
    Spec {
        flags: &["write", "denyoom", "fast"],
        add: true,
        summary: "Adds 1 to a counter and returns its count (AddAndGetCount).",
        args: &[KEY],
        ..spec("INCR", 2, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        add: true,
        summary: "Adds an integer to a counter and returns its count (AddAndGetCount).",
        args: &[KEY, ("increment", "integer")],
        ..spec("INCRBY", 3, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        add: true,
        summary: "Subtracts 1 from a counter and returns its count (AddAndGetCount).",
        args: &[KEY],
        ..spec("DECR", 2, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        add: true,
        summary: "Subtracts an integer from a counter and returns its count (AddAndGetCount).",
        args: &[KEY, ("decrement", "integer")],
        ..spec("DECRBY", 3, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "denyoom", "fast"],
        add: true,
        summary: "Adds with an idempotency token: 1 if applied, 0 if the token was applied already (AddCount).",
        args: &[KEY, ("delta", "integer"), ("token", "string"), ("generation_time_ms", "integer")],
        ..spec("TALLY.ADD", -4, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "fast"],
        summary: "Clears a counter with an idempotency token: 1 if applied, 0 if applied already (ClearCount).",
        args: &[KEY, ("token", "string"), ("generation_time_ms", "integer")],
        ..spec("TALLY.CLEAR", -3, Keys::First, Access::Write)
    },
    Spec {
        flags: &["readonly", "fast"],
        summary: "Reads a counter (GetCount).",
        args: &[KEY],
        ..spec("GET", 2, Keys::First, Access::Read)
    },
    Spec {
        flags: &["readonly", "fast"],
        summary: "Reads counters (GetCount each).",
        args: &[KEY],
        ..spec("MGET", -2, Keys::All, Access::Read)
    },
    Spec {
        flags: &["write"],
        group: "generic",
        summary: "Clears counters (ClearCount each) and returns how many were cleared.",
        args: &[KEY],
        ..spec("DEL", -2, Keys::All, Access::Write)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "How many of the keys name counters that were ever written.",
        args: &[KEY],
        ..spec("EXISTS", -2, Keys::All, Access::Read)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "-1 for a counter that exists and does not expire, -2 for one never written.",
        args: &[KEY],
        ..spec("TTL", 2, Keys::First, Access::Read)
    },
    Spec {
        flags: &["readonly", "fast"],
        group: "generic",
        summary: "TTL in milliseconds.",
        args: &[KEY],
        ..spec("PTTL", 2, Keys::First, Access::Read)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "Refused: durable counters never expire; best_effort ones expire by their namespace's best_effort_ttl.",
        args: &[KEY, ("seconds", "integer")],
        ..spec("EXPIRE", -3, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "Refused, as EXPIRE.",
        args: &[KEY, ("milliseconds", "integer")],
        ..spec("PEXPIRE", -3, Keys::First, Access::Write)
    },
    Spec {
        flags: &["write", "fast"],
        group: "generic",
        summary: "0: a counter has no per-key timeout to remove.",
        args: &[KEY],
        ..spec("PERSIST", 2, Keys::First, Access::Write)
    },
    Spec {
        flags: &["readonly"],
        group: "generic",
        summary: "Iterates over counter keys (ListCounters), a page per call.",
        args: &[("cursor", "integer"), ("pattern", "pattern"), ("count", "integer")],
        ..spec("SCAN", -2, Keys::None, Access::Read)
    },
    Spec {
        flags: &["readonly"],
        group: "generic",
        summary: "Every counter key matching a pattern, at most 10,000 (use SCAN beyond).",
        args: &[("pattern", "pattern")],
        ..spec("KEYS", 2, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast", "allow_busy"],
        group: "transactions",
        summary: "Queues the commands that follow until EXEC (run as a pipeline: not atomic across counters).",
        ..spec("MULTI", 1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["slow"],
        group: "transactions",
        summary: "Runs the commands queued since MULTI, in order, and returns their replies.",
        ..spec("EXEC", 1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast", "allow_busy"],
        group: "transactions",
        summary: "Drops the commands queued since MULTI.",
        ..spec("DISCARD", 1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast"],
        group: "connection",
        summary: "Answers PONG.",
        ..spec("PING", -1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast"],
        group: "connection",
        summary: "Returns its argument.",
        args: &[("message", "string")],
        ..spec("ECHO", 2, Keys::None, Access::Read)
    },
    Spec {
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        summary: "Chooses the protocol version (2 or 3), optionally authenticating.",
        args: &[("protover", "integer")],
        ..spec("HELLO", -1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        summary: "Authenticates the connection with a bearer token.",
        args: &[("password", "string")],
        ..spec("AUTH", -2, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast"],
        group: "connection",
        summary: "Selects database 0, the only one.",
        args: &[("index", "integer")],
        ..spec("SELECT", 2, Keys::None, Access::Read)
    },
    Spec {
        group: "connection",
        summary: "SETNAME, GETNAME, SETINFO and ID.",
        ..spec("CLIENT", -2, Keys::None, Access::Read)
    },
    Spec {
        group: "server",
        summary: "This table: COUNT, INFO and DOCS.",
        ..spec("COMMAND", -1, Keys::None, Access::Read)
    },
    Spec {
        group: "server",
        summary: "CONFIG GET of what clients ask; CONFIG SET is refused.",
        ..spec("CONFIG", -2, Keys::None, Access::Read)
    },
    Spec {
        group: "server",
        summary: "Server, clients, stats, persistence and keyspace sections.",
        args: &[("section", "string")],
        ..spec("INFO", -1, Keys::None, Access::Read)
    },
    Spec {
        flags: &["fast", "no_auth"],
        group: "connection",
        summary: "Closes the connection.",
        ..spec("QUIT", -1, Keys::None, Access::Read)
    },
];

/// The command named `name` (upper case).
pub fn find(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name == name)
}

impl Spec {
    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn fits(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        if self.arity >= 0 { argc == self.arity } else { argc >= -self.arity }
    }

    /// The arguments that are counter keys.
    pub fn keys_in<'a, T>(&self, rest: &'a [T]) -> &'a [T] {
        match self.keys {
            Keys::None => &[],
            Keys::First => rest.get(..1).unwrap_or(&[]),
            Keys::All => rest,
        }
    }

    /// `COMMAND INFO`'s first key, last key and step.
    pub fn key_positions(&self) -> (i64, i64, i64) {
        match self.keys {
            Keys::None => (0, 0, 0),
            Keys::First => (1, 1, 1),
            Keys::All => (1, -1, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_once_and_every_add_writes_its_first_key() {
        let mut names: Vec<_> = COMMANDS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len(), "a command is listed twice");
        for s in COMMANDS {
            assert_eq!(s.name, s.name.to_uppercase());
            if s.add {
                assert_eq!((s.keys, s.access), (Keys::First, Access::Write), "{}", s.name);
            }
            if s.flags.contains(&"write") {
                assert_ne!(s.keys, Keys::None, "{} writes keys it does not name", s.name);
            }
        }
    }

    #[test]
    fn arity_follows_the_redis_convention() {
        let incr = find("INCR").expect("INCR");
        assert!(incr.fits(2) && !incr.fits(3));
        let mget = find("MGET").expect("MGET");
        assert!(mget.fits(2) && mget.fits(9) && !mget.fits(1));
        assert_eq!(mget.keys_in(&[1, 2, 3]), &[1, 2, 3]);
        assert_eq!(find("INCRBY").expect("INCRBY").keys_in(&[1, 2]), &[1]);
    }
}
