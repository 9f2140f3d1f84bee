//! The commands this door serves, as a type. A request's name is parsed once, here; every
//! later step matches on the variant: authorisation asks [`Command::needs`], which has no
//! default arm, so a new command does not compile until it says what access it needs.

use crate::auth::Access;

/// One command of the Redis protocol that Tally serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Incr,
    IncrBy,
    Decr,
    DecrBy,
    /// `TALLY.ADD key delta token [generation_time_ms]`.
    TallyAdd,
    /// `TALLY.CLEAR key token [generation_time_ms]`.
    TallyClear,
    Get,
    MGet,
    Del,
    Exists,
    Ttl,
    PTtl,
    Expire,
    PExpire,
    Persist,
    Scan,
    Keys,
    Multi,
    Exec,
    Discard,
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Client,
    /// `COMMAND`: the server's own command table.
    Introspect,
    Config,
    Info,
    Quit,
}

/// Which arguments of a command are counter keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The first argument.
    First,
    /// Every argument.
    All,
}

/// What a command needs before it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: it may run before `AUTH` (to authenticate, negotiate or leave).
    Nothing,
    /// An authenticated connection; it names no counter (a listing filters by the scopes
    /// itself).
    Session,
    /// An authenticated connection whose scopes grant this access to the namespace of every
    /// key it names.
    Counters(Access, Keys),
}

impl Command {
    /// Every command, in the order `COMMAND` lists them.
    pub const ALL: [Command; 30] = [
        Self::Incr,
        Self::IncrBy,
        Self::Decr,
        Self::DecrBy,
        Self::TallyAdd,
        Self::TallyClear,
        Self::Get,
        Self::MGet,
        Self::Del,
        Self::Exists,
        Self::Ttl,
        Self::PTtl,
        Self::Expire,
        Self::PExpire,
        Self::Persist,
        Self::Scan,
        Self::Keys,
        Self::Multi,
        Self::Exec,
        Self::Discard,
        Self::Ping,
        Self::Echo,
        Self::Hello,
        Self::Auth,
        Self::Select,
        Self::Client,
        Self::Introspect,
        Self::Config,
        Self::Info,
        Self::Quit,
    ];

    /// The command a request names (any case), if this door serves it.
    pub fn parse(name: &[u8]) -> Option<Self> {
        // Upper-cased on the stack: this runs for every request of a pipeline.
        let mut buf = [0u8; 12];
        let upper = buf.get_mut(..name.len())?;
        for (u, b) in upper.iter_mut().zip(name) {
            *u = b.to_ascii_uppercase();
        }
        Some(match &*upper {
            b"INCR" => Self::Incr,
            b"INCRBY" => Self::IncrBy,
            b"DECR" => Self::Decr,
            b"DECRBY" => Self::DecrBy,
            b"TALLY.ADD" => Self::TallyAdd,
            b"TALLY.CLEAR" => Self::TallyClear,
            b"GET" => Self::Get,
            b"MGET" => Self::MGet,
            b"DEL" => Self::Del,
            b"EXISTS" => Self::Exists,
            b"TTL" => Self::Ttl,
            b"PTTL" => Self::PTtl,
            b"EXPIRE" => Self::Expire,
            b"PEXPIRE" => Self::PExpire,
            b"PERSIST" => Self::Persist,
            b"SCAN" => Self::Scan,
            b"KEYS" => Self::Keys,
            b"MULTI" => Self::Multi,
            b"EXEC" => Self::Exec,
            b"DISCARD" => Self::Discard,
            b"PING" => Self::Ping,
            b"ECHO" => Self::Echo,
            b"HELLO" => Self::Hello,
            b"AUTH" => Self::Auth,
            b"SELECT" => Self::Select,
            b"CLIENT" => Self::Client,
            b"COMMAND" => Self::Introspect,
            b"CONFIG" => Self::Config,
            b"INFO" => Self::Info,
            b"QUIT" => Self::Quit,
            _ => return None,
        })
    }

    /// The name, upper case, as `COMMAND` reports it (lower-cased there).
    pub fn name(self) -> &'static str {
        match self {
            Self::Incr => "INCR",
            Self::IncrBy => "INCRBY",
            Self::Decr => "DECR",
            Self::DecrBy => "DECRBY",
            Self::TallyAdd => "TALLY.ADD",
            Self::TallyClear => "TALLY.CLEAR",
            Self::Get => "GET",
            Self::MGet => "MGET",
            Self::Del => "DEL",
            Self::Exists => "EXISTS",
            Self::Ttl => "TTL",
            Self::PTtl => "PTTL",
            Self::Expire => "EXPIRE",
            Self::PExpire => "PEXPIRE",
            Self::Persist => "PERSIST",
            Self::Scan => "SCAN",
            Self::Keys => "KEYS",
            Self::Multi => "MULTI",
            Self::Exec => "EXEC",
            Self::Discard => "DISCARD",
            Self::Ping => "PING",
            Self::Echo => "ECHO",
            Self::Hello => "HELLO",
            Self::Auth => "AUTH",
            Self::Select => "SELECT",
            Self::Client => "CLIENT",
            Self::Introspect => "COMMAND",
            Self::Config => "CONFIG",
            Self::Info => "INFO",
            Self::Quit => "QUIT",
        }
    }

    /// What the command needs before it runs. No default arm: every command says.
    pub fn needs(self) -> Needs {
        use {Access::*, Keys::*};
        match self {
            Self::Incr | Self::IncrBy | Self::Decr | Self::DecrBy | Self::TallyAdd | Self::TallyClear => {
                Needs::Counters(Write, First)
            }
            Self::Expire | Self::PExpire | Self::Persist => Needs::Counters(Write, First),
            Self::Del => Needs::Counters(Write, All),
            Self::Get | Self::Ttl | Self::PTtl => Needs::Counters(Read, First),
            Self::MGet | Self::Exists => Needs::Counters(Read, All),
            Self::Scan | Self::Keys => Needs::Session,
            Self::Multi | Self::Exec | Self::Discard => Needs::Session,
            Self::Echo | Self::Select | Self::Client | Self::Introspect | Self::Config | Self::Info => {
                Needs::Session
            }
            Self::Ping | Self::Hello | Self::Auth | Self::Quit => Needs::Nothing,
        }
    }

    /// Whether consecutive ones of a pipeline go to the engine as one batch of adds.
    pub fn is_add(self) -> bool {
        matches!(self, Self::Incr | Self::IncrBy | Self::Decr | Self::DecrBy | Self::TallyAdd)
    }

    /// The arguments (after the name) that are counter keys.
    pub fn keys_in<T>(self, rest: &[T]) -> &[T] {
        match self.needs() {
            Needs::Counters(_, Keys::First) => rest.get(..1).unwrap_or(&[]),
            Needs::Counters(_, Keys::All) => rest,
            Needs::Nothing | Needs::Session => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_from_its_name_in_any_case() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.name().as_bytes()), Some(command));
            assert_eq!(Command::parse(command.name().to_lowercase().as_bytes()), Some(command));
        }
        for unknown in [&b"SET"[..], b"", b"INCRBYFLOAT", b"TALLY.ADDX", b"A-VERY-LONG-COMMAND-NAME"] {
            assert_eq!(Command::parse(unknown), None, "{}", String::from_utf8_lossy(unknown));
        }
    }

    #[test]
    fn every_add_writes_its_first_key_and_only_connection_commands_run_before_auth() {
        for command in Command::ALL {
            if command.is_add() {
                assert_eq!(command.needs(), Needs::Counters(Access::Write, Keys::First), "{command:?}");
            }
        }
        let before_auth: Vec<_> = Command::ALL.into_iter().filter(|c| c.needs() == Needs::Nothing).collect();
        assert_eq!(before_auth, [Command::Ping, Command::Hello, Command::Auth, Command::Quit]);
        assert_eq!(Command::MGet.keys_in(&[1, 2, 3]), &[1, 2, 3]);
        assert_eq!(Command::IncrBy.keys_in(&[1, 2]), &[1]);
        assert!(Command::Scan.keys_in(&[1]).is_empty());
    }
}
