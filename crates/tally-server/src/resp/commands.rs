//! What each command does. Counter commands map onto the engine's operations:
//! `INCR`/`INCRBY`/`DECR`/`DECRBY` are AddAndGetCount, `GET`/`MGET` GetCount, `DEL`
//! ClearCount, `TALLY.ADD` an AddCount and `TALLY.CLEAR` a ClearCount with an idempotency
//! token, `SCAN` and `KEYS` ListCounters. The rest is what clients send on connect.
//! [`super::table`] lists them all.

use std::sync::Arc;

use bytes::Bytes;
use tally_core::{CounterKey, ErrorCode, IdempotencyToken, Operation, Timestamp};
use tally_engine::{BatchAdd, Engine};

use super::command::{Command, Needs};
use super::reply::Reply;
use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;
use crate::metrics::observe;

/// Per-connection state the commands change.
pub struct Session {
    /// Whether replies use RESP3.
    pub resp3: bool,
    /// `CLIENT SETNAME`.
    pub name: Option<Vec<u8>>,
    /// This connection's id, for `CLIENT ID` and `HELLO`.
    pub id: u64,
    /// The client's address, for limiting failed `AUTH`s.
    pub address: Option<std::net::IpAddr>,
    /// Set by `QUIT`: close after replying.
    pub closing: bool,
    /// The configured tokens.
    pub auth: Arc<Authenticator>,
    /// Who this connection authenticated as; `None` until `AUTH` when authentication is on.
    pub principal: Option<Principal>,
    /// The commands queued since `MULTI`, and whether one was refused (then `EXEC` aborts).
    pub multi: Option<(Vec<Vec<Bytes>>, bool)>,
    /// What the door's connections share.
    pub door: Arc<DoorState>,
}

/// What every connection of the door shares: `SCAN` cursors and `INFO` figures.
pub struct DoorState {
    pub started: std::time::Instant,
    pub port: u16,
    pub max_connections: usize,
    /// Kept by the door's admission (`connections.rs`).
    pub connections: Arc<crate::connections::ConnectionCounts>,
    pub commands_total: std::sync::atomic::AtomicU64,
    pub cursors: super::scan::Cursors,
}

impl DoorState {
    /// The state of a door on `port` that takes at most `max_connections` at once.
    pub fn new(
        port: u16,
        max_connections: usize,
        connections: Arc<crate::connections::ConnectionCounts>,
    ) -> Self {
        Self {
            started: std::time::Instant::now(),
            port,
            max_connections,
            connections,
            commands_total: Default::default(),
            cursors: super::scan::Cursors::default(),
        }
    }
}

/// The reply to a refused request.
pub fn err(e: ApiError) -> Reply {
    Reply::Error(format!("{} {}", e.code, e.message))
}

fn arity(command: Command) -> Reply {
    Reply::Error(format!(
        "INVALID_ARGUMENT wrong number of arguments for '{}' command",
        command.name().to_lowercase()
    ))
}

pub(super) fn key(arg: &Bytes) -> Result<CounterKey, ApiError> {
    let text = std::str::from_utf8(arg).map_err(|_| ApiError::invalid("key is not valid UTF-8"))?;
    Ok(CounterKey::parse_joined(text)?)
}

pub(super) fn integer(arg: &Bytes) -> Result<i64, ApiError> {
    std::str::from_utf8(arg).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        ApiError::invalid(format!(
            "value {:?} is not an integer or out of range",
            String::from_utf8_lossy(arg)
        ))
    })
}

/// An idempotency token from its text and an optional generation time in Unix milliseconds
/// (`now`, the server's clock, when absent).
fn token(text: &Bytes, millis: Option<&Bytes>, now: Timestamp) -> Result<IdempotencyToken, ApiError> {
    let time = match millis {
        Some(ms) => Timestamp::from_millis(integer(ms)?),
        None => now,
    };
    let text = std::str::from_utf8(text).map_err(|_| ApiError::invalid("token is not valid UTF-8"))?;
    Ok(IdempotencyToken::new(text, time)?)
}

pub(super) fn upper(arg: &Bytes) -> String {
    String::from_utf8_lossy(arg).to_uppercase()
}

async fn add_and_get(engine: &Engine, key_arg: &Bytes, delta: Result<i64, ApiError>) -> Reply {
    let result = observe("resp", Operation::AddAndGetCount, async {
        let key = key(key_arg)?;
        let (_, count) = engine.add_and_get_count(&key, delta?, None).await?;
        Ok(count.value)
    })
    .await;
    result.map_or_else(err, Reply::Integer)
}

/// What a pipelined add answers.
#[derive(Debug, Clone, Copy)]
pub enum AddReply {
    /// `INCR`, `INCRBY`, `DECR`, `DECRBY`: the count after the add.
    Count,
    /// `TALLY.ADD`: 1 if applied, 0 for a retry.
    Applied,
}

impl AddReply {
    /// The operation's name in metrics.
    pub fn operation(self) -> Operation {
        match self {
            Self::Count => Operation::AddAndGetCount,
            Self::Applied => Operation::AddCount,
        }
    }

    /// The reply to an add that was answered.
    pub fn reply(self, applied: bool, count: i64) -> Reply {
        match self {
            Self::Count => Reply::Integer(count),
            Self::Applied => Reply::Integer(i64::from(applied)),
        }
    }
}

/// Parses and authorises an add of a pipeline (a command [`is_add`] accepts) so that a run of
/// them can go to the engine as one batch; a refusal is its reply. `now`: the generation time
/// of a token given without one.
pub fn prepare_add(
    session: &Session,
    command: Command,
    args: &[Bytes],
    now: Timestamp,
) -> Result<(BatchAdd, AddReply), Reply> {
    debug_assert!(command.is_add(), "{command:?} is not an add");
    let Needs::Counters(access, _) = command.needs() else {
        return Err(err(ApiError::new(ErrorCode::Internal, format!("{command:?} is not an add"))));
    };
    let rest = args.get(1..).unwrap_or_default();
    // What `authorize` checks, with the key parsed once: an add names one counter.
    let principal = authenticated(session).map_err(err)?;
    let (k, delta, token, reply) = match (command, rest) {
        (Command::Incr, [k]) => (k, Ok(1), None, AddReply::Count),
        (Command::Decr, [k]) => (k, Ok(-1), None, AddReply::Count),
        (Command::IncrBy, [k, d]) => (k, integer(d), None, AddReply::Count),
        (Command::DecrBy, [k, d]) => (k, negated(d), None, AddReply::Count),
        (Command::TallyAdd, [k, d, t, at @ ..]) if at.len() <= 1 => {
            (k, integer(d), Some(token(t, at.first(), now)), AddReply::Applied)
        }
        _ => return Err(arity(command)),
    };
    let refused = |e: ApiError| {
        crate::metrics::record("resp", reply.operation(), e.code.as_str(), std::time::Instant::now());
        err(e)
    };
    let key = key(k).map_err(refused)?;
    principal.require(access, &key.namespace).map_err(err)?;
    let delta = delta.map_err(refused)?;
    let token = token.transpose().map_err(refused)?;
    Ok((BatchAdd { key, delta, token }, reply))
}

/// The argument of `DECRBY`, negated.
fn negated(arg: &Bytes) -> Result<i64, ApiError> {
    integer(arg).and_then(|d| {
        d.checked_neg()
            .ok_or_else(|| ApiError::new(tally_core::ErrorCode::OutOfRange, "decrement is out of range"))
    })
}

fn unauthenticated() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "authentication required: send AUTH <token>")
}

/// The connection's principal; `UNAUTHENTICATED` before `AUTH`.
fn authenticated(session: &Session) -> Result<&Principal, ApiError> {
    session.principal.as_ref().ok_or_else(unauthenticated)
}

/// What [`Command::needs`] asks: `UNAUTHENTICATED` before `AUTH` (but for the commands that
/// need nothing), `PERMISSION_DENIED` for a key outside the token's scopes, checked for every
/// key before any of them is touched. Keys that do not parse are left to the command, which
/// refuses them.
fn authorize(session: &Session, command: Command, rest: &[Bytes]) -> Result<(), ApiError> {
    let needs = command.needs();
    if needs == Needs::Nothing {
        return Ok(());
    }
    let principal = authenticated(session)?;
    if let Needs::Counters(access, _) = needs {
        for key in command.keys_in(rest).iter().filter_map(|k| key(k).ok()) {
            principal.require(access, &key.namespace)?;
        }
    }
    Ok(())
}

/// `AUTH [user] token`: the user name is ignored, as with Redis' default user.
fn auth(session: &mut Session, token: &Bytes) -> Reply {
    let presented = std::str::from_utf8(token).ok();
    let caller = crate::auth::Caller { address: session.address, door: "resp" };
    match session.auth.authenticate(presented.or(Some("")), caller) {
        Ok(principal) => {
            session.principal = Some(principal);
            Reply::Simple("OK")
        }
        Err(e) => err(e),
    }
}

/// Runs one command; `command` is what its name parsed to (`None`: not one this door serves).
pub async fn run(engine: &Engine, session: &mut Session, command: Option<Command>, args: &[Bytes]) -> Reply {
    let Some((name, rest)) = args.split_first() else { return Reply::Error("ERR empty command".into()) };
    let Some(command) = command else {
        if session.principal.is_none() {
            return err(unauthenticated());
        }
        return unknown(name, rest);
    };
    if let Err(e) = authorize(session, command, rest) {
        return err(e);
    }
    match (command, rest) {
        (Command::Incr, [k]) => add_and_get(engine, k, Ok(1)).await,
        (Command::Decr, [k]) => add_and_get(engine, k, Ok(-1)).await,
        (Command::IncrBy, [k, d]) => add_and_get(engine, k, integer(d)).await,
        (Command::DecrBy, [k, d]) => add_and_get(engine, k, negated(d)).await,
        (Command::TallyAdd, [k, d, t, at @ ..]) if at.len() <= 1 => {
            let result = observe("resp", Operation::AddCount, async {
                let key = key(k)?;
                let delta = integer(d)?;
                let token = token(t, at.first(), engine.now())?;
                Ok(engine.add_count(&key, delta, Some(token)).await?.applied)
            })
            .await;
            result.map_or_else(err, |applied| Reply::Integer(i64::from(applied)))
        }
        (Command::TallyClear, [k, t, at @ ..]) if at.len() <= 1 => {
            let result = observe("resp", Operation::ClearCount, async {
                let key = key(k)?;
                let token = token(t, at.first(), engine.now())?;
                Ok(engine.clear_count(&key, Some(token)).await?.applied)
            })
            .await;
            result.map_or_else(err, |applied| Reply::Integer(i64::from(applied)))
        }
        (Command::Get, [k]) => {
            let result =
                observe("resp", Operation::GetCount, async { Ok(engine.get_count(&key(k)?).await?.value) }).await;
            result.map_or_else(err, |v| Reply::text(v.to_string()))
        }
        (Command::MGet, keys) if !keys.is_empty() => {
            let mut values = Vec::with_capacity(keys.len());
            for k in keys {
                let result =
                    observe("resp", Operation::GetCount, async { Ok(engine.get_count(&key(k)?).await?.value) }).await;
                match result {
                    Ok(v) => values.push(Reply::text(v.to_string())),
                    Err(e) => return err(e),
                }
            }
            Reply::Array(values)
        }
        (Command::Del, keys) if !keys.is_empty() => {
            let mut cleared = 0;
            for k in keys {
                let result =
                    observe("resp", Operation::ClearCount, async { Ok(engine.clear_count(&key(k)?, None).await?) })
                        .await;
                match result {
                    Ok(m) => cleared += i64::from(m.applied),
                    Err(e) => return err(e),
                }
            }
            Reply::Integer(cleared)
        }
        (Command::Exists, keys) if !keys.is_empty() => {
            let mut found = 0;
            for k in keys {
                let result =
                    observe("resp", Operation::Exists, async { Ok(engine.counter_exists(&key(k)?).await?) }).await;
                match result {
                    Ok(exists) => found += i64::from(exists),
                    Err(e) => return err(e),
                }
            }
            Reply::Integer(found)
        }
        (Command::Ttl | Command::PTtl, [k]) => observe("resp", Operation::GetCount, expiry(engine, k)).await.unwrap_or_else(err),
        (Command::Expire | Command::PExpire | Command::Persist, [k, ..]) => {
            observe("resp", Operation::ClearCount, timeout_change(engine, command, k)).await.unwrap_or_else(err)
        }
        (Command::Scan, [cursor, options @ ..]) => super::scan::scan(engine, session, cursor, options).await,
        (Command::Keys, [pattern]) => super::scan::keys(engine, session, pattern).await,
        (Command::Ping, []) => Reply::Simple("PONG"),
        (Command::Ping | Command::Echo, [msg]) => Reply::Bulk(msg.to_vec()),
        (Command::Hello, rest) => hello(session, rest),
        (Command::Auth, [token] | [_, token]) => auth(session, token),
        (Command::Select, [db]) if db.as_ref() == b"0" => Reply::Simple("OK"),
        (Command::Select, [_]) => Reply::Error("ERR DB index is out of range; tally has database 0 only".into()),
        (Command::Client, [sub, rest @ ..]) => client(session, &upper(sub), rest),
        (Command::Introspect, rest) => super::introspect::command(rest),
        (Command::Config, [sub, params @ ..]) if upper(sub) == "GET" && !params.is_empty() => config_get(params),
        (Command::Config, [sub, ..]) if upper(sub) == "SET" => Reply::Error(
            "ERR CONFIG SET is not supported: tally's settings live in its config file and in namespace settings"
                .into(),
        ),
        (Command::Info, sections) => Reply::text(super::introspect::info(engine, session, sections)),
        (Command::Quit, _) => {
            session.closing = true;
            Reply::Simple("OK")
        }
        (command, _) => arity(command),
    }
}

/// The reply to a command this door does not serve, in Redis' words.
fn unknown(name: &Bytes, rest: &[Bytes]) -> Reply {
    Reply::Error(format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(name).to_lowercase(),
        rest.iter()
            .take(3)
            .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

fn hello(session: &mut Session, args: &[Bytes]) -> Reply {
    if let Some(version) = args.first() {
        match version.as_ref() {
            b"2" => session.resp3 = false,
            b"3" => session.resp3 = true,
            _ => return Reply::Error("NOPROTO unsupported protocol version; tally speaks 2 and 3".into()),
        }
    }
    // Options after the version: AUTH user token, SETNAME name.
    let mut rest = args.iter().skip(1);
    while let Some(option) = rest.next() {
        match upper(option).as_str() {
            "AUTH" => {
                let (Some(_user), Some(token)) = (rest.next(), rest.next()) else {
                    return Reply::Error("ERR syntax error in HELLO option 'AUTH'".into());
                };
                if let Reply::Error(e) = auth(session, token) {
                    return Reply::Error(e);
                }
            }
            "SETNAME" => session.name = rest.next().map(|n| n.to_vec()),
            other => return Reply::Error(format!("ERR syntax error in HELLO option '{other}'")),
        }
    }
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("tally")),
        (Reply::text("version"), Reply::text(env!("CARGO_PKG_VERSION"))),
        (Reply::text("proto"), Reply::Integer(if session.resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Integer(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])
}

fn client(session: &mut Session, sub: &str, args: &[Bytes]) -> Reply {
    match (sub, args) {
        ("SETNAME", [name]) => {
            session.name = Some(name.to_vec());
            Reply::Simple("OK")
        }
        ("GETNAME", []) => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        ("SETINFO", [_, _]) => Reply::Simple("OK"),
        ("ID", []) => Reply::Integer(session.id as i64),
        _ => Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for 'client {}'",
            sub.to_lowercase()
        )),
    }
}

/// `TTL`/`PTTL`: counters have no per-key timeout. -1 for one that exists, -2 for one never
/// written; a `best_effort` counter of a namespace with `best_effort_ttl` lives that long after
/// its last write, which is not tracked per key, so its TTL is refused rather than guessed.
async fn expiry(engine: &Engine, k: &Bytes) -> Result<Reply, ApiError> {
    let key = key(k)?;
    if !engine.counter_exists(&key).await? {
        return Ok(Reply::Integer(-2));
    }
    let config = engine.get_namespace(&key.namespace).await?;
    match config.best_effort_ttl {
        Some(ttl) if config.counter_type == tally_core::CounterType::BestEffort => Err(ApiError::new(
            ErrorCode::FailedPrecondition,
            format!(
                "the remaining time of {key} is not tracked: best_effort counters of namespace {} live {ttl:?} after their last write",
                key.namespace
            ),
        )),
        _ => Ok(Reply::Integer(-1)),
    }
}

/// `EXPIRE`/`PEXPIRE` are refused (no per-key timeouts: durable counters never expire, and
/// `best_effort` ones expire by their namespace's `best_effort_ttl`); `PERSIST` answers 0, as
/// Redis does for a key without a timeout.
async fn timeout_change(engine: &Engine, command: Command, k: &Bytes) -> Result<Reply, ApiError> {
    let key = key(k)?;
    let counter_type = engine.counter_type(&key.namespace).await?;
    if command == Command::Persist {
        return Ok(Reply::Integer(0));
    }
    let why = match counter_type {
        tally_core::CounterType::BestEffort => format!(
            "best_effort counters expire by their namespace's best_effort_ttl, not per key: set it on namespace {}",
            key.namespace
        ),
        _ => format!("counters of namespace {} are durable and never expire; DEL clears one", key.namespace),
    };
    Err(ApiError::new(ErrorCode::FailedPrecondition, format!("{} {key}: {why}", command.name())))
}

/// `CONFIG GET`: what `redis-benchmark` and clients ask on connect. Tally persists every
/// acknowledged write, which in Redis terms is `appendonly yes` with `appendfsync always`.
fn config_get(params: &[Bytes]) -> Reply {
    const KNOWN: &[(&str, &str)] =
        &[("save", ""), ("appendonly", "yes"), ("appendfsync", "always"), ("databases", "1")];
    let mut pairs = Vec::new();
    for p in params {
        let wanted = String::from_utf8_lossy(p).to_lowercase();
        for (k, v) in KNOWN {
            if wanted == *k || wanted == "*" {
                pairs.push((Reply::text(*k), Reply::text(*v)));
            }
        }
    }
    Reply::Map(pairs)
}
