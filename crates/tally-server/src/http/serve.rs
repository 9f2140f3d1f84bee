//! The HTTP door's connection loop: the router on hyper, one task per connection, drained on
//! shutdown.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout never runs,
//! and a client that trickles a request head a byte at a time holds its connection (and its
//! place under `max_connections`) for as long as it likes. Here an HTTP/1 connection that has
//! not sent a whole request head within `header_read_timeout` of starting to send one is
//! closed, and each request counts as its connection's progress, so that an HTTP/2
//! connection sending only pings goes idle (see `connections::Progress::Calls`). What hyper
//! answers on its own to a request it cannot parse is recast in the JSON error shape
//! (`parse_refusals.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::connections::{Activity, ClientAddr, CountsCalls};

/// Serves `router` on every connection `listener` admits until `shutdown` completes; then
/// stops accepting, lets each connection finish the requests it has begun, and returns once
/// all have closed.
pub async fn serve_connections<L>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: CountsCalls,
{
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    let connections = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        connections.spawn(connection(io, addr, router.clone(), header_read_timeout, stop.clone()));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, HTTP/1 or HTTP/2, until it closes or, after `stop`, finishes what it began.
async fn connection<I>(
    io: I,
    addr: SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + CountsCalls + Unpin + Send + 'static,
{
    let calls = io.calls();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
        Activity::during(calls.clone(), router.clone().oneshot(request))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(super::parse_refusals::MAX_HEAD_BYTES);
    let io = super::parse_refusals::Recast::new(io);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
