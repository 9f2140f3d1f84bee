//! The Redis protocol front door (RESP2 and RESP3), so `redis-cli`, `redis-benchmark` and
//! every Redis client library are Tally clients.
//!
//! One task per connection reads whatever arrived, takes every complete request off the
//! buffer ([`parser`]), runs them ([`commands`]) and writes all their replies ([`reply`]) in
//! one write. Within a pipeline, each run of consecutive adds goes to the engine as one batch
//! ([`tally_engine::Engine::add_batch`]): one group commit, and each add answers as if sent
//! alone, in order. Every other command waits for the adds before it. Replies keep request
//! order, and a read sees the adds sent before it. A reply to a mutation is written only after
//! the mutation is durable.

pub mod command;
pub mod commands;
mod introspect;
pub mod parser;
pub mod reply;
mod scan;
pub mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tally_engine::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use command::Command;
use commands::{DoorState, Session};

use crate::connections::Doorkeeper;

use crate::auth::{Authenticator, Principal};
pub use parser::Limits;
use reply::Reply;

/// Settings of the RESP listener.
#[derive(Debug, Clone)]
pub struct RespOptions {
    /// Request bounds.
    pub limits: Limits,
    /// Who may do what; connections start unauthenticated when it is enabled.
    pub auth: Arc<Authenticator>,
    /// TLS for every connection, when configured.
    pub tls: Option<crate::tls::Tls>,
}

/// Serves RESP on the connections `doorkeeper` admits until `shutdown` fires, then lets open connections finish the
/// requests they have read and closes them.
pub async fn serve(
    engine: Engine,
    mut doorkeeper: Doorkeeper,
    options: RespOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let ids = AtomicU64::new(1);
    let port = axum::serve::Listener::local_addr(&doorkeeper).map(|a| a.port()).unwrap_or(0);
    let max_connections = doorkeeper.admission().max_connections;
    let door = Arc::new(DoorState::new(port, max_connections, doorkeeper.counts()));
    loop {
        // The door admits at most `max_connections` at once; the rest wait to be accepted.
        let (socket, peer) = tokio::select! {
            admitted = doorkeeper.admit() => admitted,
            () = shutdown.cancelled() => break,
        };
        // A token of its own: each read waits on it, and waiters on one shared token would
        // all take that token's lock, on every request of every connection.
        let (engine, shutdown, auth) = (engine.clone(), shutdown.child_token(), options.auth.clone());
        let client = Client { id: ids.fetch_add(1, Ordering::Relaxed), address: Some(peer.ip()) };
        let door = door.clone();
        let tls = options.tls.clone();
        tracker.spawn(async move {
            let ended = match tls {
                #[cfg(feature = "tls")]
                Some(tls) => match tls.accept_resp(socket).await {
                    Ok(stream) => {
                        connection(engine, stream, client, options.limits, auth, door.clone(), shutdown).await
                    }
                    Err(e) => Err(e),
                },
                _ => connection(engine, socket, client, options.limits, auth, door.clone(), shutdown).await,
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "resp connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
struct Client {
    id: u64,
    address: Option<std::net::IpAddr>,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    engine: Engine,
    mut socket: S,
    client: Client,
    limits: Limits,
    auth: Arc<Authenticator>,
    door: Arc<DoorState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let principal = (!auth.enabled()).then(Principal::unrestricted);
    let (id, address) = (client.id, client.address);
    let mut session =
        Session { resp3: false, name: None, id, address, closing: false, auth, principal, multi: None, door };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        let read = tokio::select! {
            r = socket.read_buf(&mut input) => r?,
            () = shutdown.cancelled() => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        let mut requests = Vec::new();
        let mut protocol_error = None;
        loop {
            match parser::parse(&mut input, limits) {
                Ok(Some(request)) if request.is_empty() => {}
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        for reply in run_pipeline(&engine, &mut session, &requests).await {
            reply.encode(session.resp3, &mut output);
        }
        if let Some(e) = &protocol_error {
            Reply::Error(format!("ERR {e}")).encode(session.resp3, &mut output);
        }
        socket.write_all(&output).await?;
        output.clear();
        if protocol_error.is_some() || session.closing {
            return socket.shutdown().await;
        }
    }
}

/// Runs a pipeline in order. `MULTI` … `EXEC` queues the commands between them and runs
/// them as a pipeline of their own when `EXEC` comes, answering their replies as one array:
/// they run in order with no other command of this connection between them, but not
/// atomically (an add to one counter may land while another fails).
async fn run_pipeline(engine: &Engine, session: &mut Session, requests: &[Vec<Bytes>]) -> Vec<Reply> {
    session.door.commands_total.fetch_add(requests.len() as u64, Ordering::Relaxed);
    // Each request's command, parsed once for every step below.
    let commands: Vec<Option<Command>> = requests.iter().map(|r| Command::parse(&r[0])).collect();
    let mut replies = Vec::with_capacity(requests.len());
    let mut i = 0;
    while i < requests.len() {
        if session.multi.is_some() || transaction_control(commands[i]).is_some() {
            replies.push(transaction(engine, session, commands[i], &requests[i]).await);
            i += 1;
            continue;
        }
        let plain = commands[i..].iter().take_while(|c| transaction_control(**c).is_none()).count();
        replies.extend(run_plain(engine, session, &requests[i..i + plain], &commands[i..i + plain]).await);
        i += plain;
        if session.closing {
            break;
        }
    }
    replies
}

/// `MULTI`, `EXEC` and `DISCARD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Multi,
    Exec,
    Discard,
}

fn transaction_control(command: Option<Command>) -> Option<Control> {
    match command? {
        Command::Multi => Some(Control::Multi),
        Command::Exec => Some(Control::Exec),
        Command::Discard => Some(Control::Discard),
        _ => None,
    }
}

/// One request while a transaction is open, or one that opens or closes it.
async fn transaction(
    engine: &Engine,
    session: &mut Session,
    command: Option<Command>,
    request: &[Bytes],
) -> Reply {
    let open = session.multi.is_some();
    match (transaction_control(command), open) {
        (Some(Control::Multi), false) => {
            session.multi = Some((Vec::new(), false));
            Reply::Simple("OK")
        }
        (Some(Control::Multi), true) => Reply::Error("ERR MULTI calls can not be nested".into()),
        (Some(Control::Exec), false) => Reply::Error("ERR EXEC without MULTI".into()),
        (Some(Control::Discard), false) => Reply::Error("ERR DISCARD without MULTI".into()),
        (Some(Control::Discard), true) => {
            session.multi = None;
            Reply::Simple("OK")
        }
        (Some(Control::Exec), true) => {
            let (queued, refused) = session.multi.take().unwrap_or_default();
            if refused {
                return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
            }
            let commands: Vec<Option<Command>> = queued.iter().map(|r| Command::parse(&r[0])).collect();
            Reply::Array(run_plain(engine, session, &queued, &commands).await)
        }
        (None, _) => {
            // Queued if the table knows the command with this many arguments; refused (and
            // the transaction with it) otherwise, as Redis does.
            let name = commands::upper(&request[0]);
            match command.map(Command::spec) {
                Some(spec) if spec.fits(request.len()) => {
                    if let Some((queued, _)) = session.multi.as_mut() {
                        queued.push(request.to_vec());
                    }
                    Reply::Simple("QUEUED")
                }
                found => {
                    if let Some((_, refused)) = session.multi.as_mut() {
                        *refused = true;
                    }
                    match found {
                        Some(_) => Reply::Error(format!(
                            "INVALID_ARGUMENT wrong number of arguments for '{}' command",
                            name.to_lowercase()
                        )),
                        None => Reply::Error(format!("ERR unknown command '{}'", name.to_lowercase())),
                    }
                }
            }
        }
    }
}

/// Runs requests with no transaction control among them; each run of consecutive adds goes
/// to the engine as one batch.
/// `commands`: each request's command, parsed.
async fn run_plain(
    engine: &Engine,
    session: &mut Session,
    requests: &[Vec<Bytes>],
    commands: &[Option<Command>],
) -> Vec<Reply> {
    debug_assert_eq!(requests.len(), commands.len(), "one parsed command per request");
    let mut replies = Vec::with_capacity(requests.len());
    let mut i = 0;
    while i < requests.len() {
        let adds = commands[i..].iter().map_while(|c| c.filter(|c| c.is_add())).count();
        if adds > 0 {
            replies.extend(run_adds(engine, session, &requests[i..i + adds], &commands[i..i + adds]).await);
            i += adds;
        } else {
            replies.push(commands::run(engine, session, commands[i], &requests[i]).await);
            i += 1;
            if session.closing {
                break;
            }
        }
    }
    replies
}

/// Runs consecutive adds as one engine batch: each answers as if sent alone, in order (a
/// count includes the adds before it in the pipeline), and all share one group commit.
/// `commands`: their commands, each an add.
async fn run_adds(
    engine: &Engine,
    session: &Session,
    requests: &[Vec<Bytes>],
    commands: &[Option<Command>],
) -> Vec<Reply> {
    let started = std::time::Instant::now();
    let now = engine.now();
    let prepared = requests
        .iter()
        .zip(commands.iter().flatten())
        .map(|(request, &command)| commands::prepare_add(session, command, request, now))
        .collect();
    let answers = crate::batch::run_prepared(engine, prepared).await;
    let took = started.elapsed();
    let mut outcomes = crate::metrics::Outcomes::default();
    let replies = answers
        .into_iter()
        .map(|answer| {
            let (kind, result) = match answer {
                Ok(ran) => ran,
                Err(refused) => return refused,
            };
            let (code, reply) = match result {
                Ok((mutated, count)) => ("OK", kind.reply(mutated.applied, count.value)),
                Err(e) => {
                    let e = crate::error::ApiError::from(e);
                    (e.code.as_str(), commands::err(e))
                }
            };
            outcomes.note(kind.operation(), code);
            reply
        })
        .collect();
    outcomes.record("resp", took);
    replies
}
