//! Admission of connections on every door: at most `max_connections` open at once per door,
//! HTTP and gRPC connections closed after `idle_timeout` without a byte either way (Redis
//! clients keep idle pooled connections, as Redis allows), and accept errors logged at a
//! bounded rate.
//!
//! A door at its limit stops accepting: further connections wait in the kernel's accept queue
//! (and are refused by it once that is full) instead of taking file descriptors. With the
//! process's open-files limit raised to its hard limit at start ([`raise_open_files_limit`])
//! and checked against the doors' limits, a flood of connections cannot take the descriptors
//! the store needs to flush and compact.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept for the store, logs and the process itself, beyond the doors' limits
/// (half the limit where that is less).
pub const RESERVED_FILES: u64 = 1_024;

/// Raises the soft limit on open files to the hard limit and returns `(soft, hard)` after.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    rlimit::increase_nofile_limit(hard)?;
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// How one door admits connections.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// How many connections a door holds now and has admitted since it opened.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: AtomicU64,
    /// Admitted in all.
    pub total: AtomicU64,
}

/// A listener that admits at most [`Admission::max_connections`] at once.
pub struct Doorkeeper {
    listener: TcpListener,
    door: &'static str,
    admission: Admission,
    permits: Arc<Semaphore>,
    counts: Arc<ConnectionCounts>,
    errors: tally_engine::LogLimit,
}

impl Doorkeeper {
    /// Admits connections of `listener` for the door named `door` (a metrics label).
    pub fn new(listener: TcpListener, door: &'static str, admission: Admission) -> Self {
        let permits = Arc::new(Semaphore::new(admission.max_connections.max(1)));
        Self {
            listener,
            door,
            admission,
            permits,
            counts: Arc::default(),
            errors: tally_engine::LogLimit::new(Duration::from_secs(1)),
        }
    }

    /// The door's connection counts, for reports such as the Redis door's `INFO`.
    pub fn counts(&self) -> Arc<ConnectionCounts> {
        self.counts.clone()
    }

    /// How the door admits connections.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// The next connection, once the door has room for it. Accept errors (out of file
    /// descriptors and the like) are logged at most once a second and retried after a pause.
    pub async fn admit(&mut self) -> (Admitted, SocketAddr) {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => return std::future::pending().await,
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, door = self.door, "cannot set TCP_NODELAY");
                    }
                    let gauge = Gauge::open(self.door, self.counts.clone());
                    return (Admitted::new(stream, permit, gauge, self.admission.idle_timeout), peer);
                }
                Err(e) => {
                    log_accept_error(&self.errors, self.door, &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl axum::serve::Listener for Doorkeeper {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.admit().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The client's address, as HTTP handlers and middleware see it
/// (`axum::extract::ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Doorkeeper>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Doorkeeper>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The door's counts and `tally_connections{door}`, kept by each connection from admission
/// to close.
struct Gauge {
    door: &'static str,
    counts: Arc<ConnectionCounts>,
}

impl Gauge {
    fn open(door: &'static str, counts: Arc<ConnectionCounts>) -> Self {
        counts.total.fetch_add(1, Ordering::Relaxed);
        let now = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("tally_connections", "door" => door).set(now as f64);
        Self { door, counts }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        let now = self.counts.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("tally_connections", "door" => self.door).set(now as f64);
    }
}

/// An admitted connection: holds its place at the door until dropped, and, where the door
/// has an idle timeout, fails its reads and writes once idle that long (so the server closes it).
pub struct Admitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _gauge: Gauge,
    idle: Option<Idle>,
}

/// The idle clock of a connection.
struct Idle {
    timeout: Duration,
    /// When the connection last made progress.
    active: tokio::time::Instant,
    /// Fires at the earliest time the connection can have been idle long enough. It is not
    /// moved on every read and write (a timer update each time): when it fires, it is set
    /// again from `active` if the connection made progress meanwhile.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        Self { timeout, active: tokio::time::Instant::now(), timer: Box::pin(tokio::time::sleep(timeout)) }
    }

    /// While an I/O call waits: `Ready` once the connection has been idle for the timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let idle_until = self.active + self.timeout;
            if tokio::time::Instant::now() >= idle_until {
                return Poll::Ready(());
            }
            // Progress since the timer was set: wait out the rest from the last of it.
            self.timer.as_mut().reset(idle_until);
        }
    }
}

impl Admitted {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, gauge: Gauge, idle: Option<Duration>) -> Self {
        Self { stream, _permit: permit, _gauge: gauge, idle: idle.map(Idle::new) }
    }

    /// After an I/O call: progress is noted; waiting checks how long since the last.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(idle) = &mut self.idle else { return polled };
        if polled.is_ready() {
            idle.active = tokio::time::Instant::now();
            return polled;
        }
        match idle.poll_expired(cx) {
            Poll::Ready(()) => {
                let message = format!("connection idle for {:?}", idle.timeout);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watch(cx, polled)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// An accept error, logged at most once a second per door (a flood repeats it thousands of
/// times a second), with how many were left out in between.
pub(crate) fn log_accept_error(limit: &tally_engine::LogLimit, door: &'static str, error: &io::Error) {
    if let Some(left_out) = limit.check() {
        tracing::warn!(door, error = %error, left_out, "accept failed (left_out: accept errors not logged since the last line)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A door on port 0, and its address.
    async fn door(max_connections: usize, idle_timeout: Duration) -> (Doorkeeper, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idle_timeout = Some(idle_timeout);
        (Doorkeeper::new(listener, "test", Admission { max_connections, idle_timeout }), addr)
    }

    #[tokio::test]
    async fn a_door_at_its_limit_admits_the_next_connection_only_when_one_closes() {
        let (mut door, addr) = door(1, Duration::from_secs(60)).await;
        let _first_client = TcpStream::connect(addr).await.expect("connect");
        let _second_client = TcpStream::connect(addr).await.expect("connect (kernel queue)");
        let (first, _) = door.admit().await;
        let mut second = Box::pin(door.admit());
        assert!(futures::poll!(second.as_mut()).is_pending(), "a second connection while one is open");
        drop(first);
        let (_second, _) = second.await;
    }

    #[tokio::test(start_paused = true)]
    async fn progress_keeps_a_connection_open_and_the_timeout_counts_from_the_last_of_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut door, addr) = door(4, Duration::from_secs(30)).await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (mut admitted, _) = door.admit().await;
        let mut buf = [0u8; 8];
        tokio::time::advance(Duration::from_secs(20)).await;
        client.write_all(b"a").await.expect("write");
        assert_eq!(admitted.read(&mut buf).await.expect("read"), 1);
        // 45 s after the start, 25 s after the last byte: still open.
        let mut read = Box::pin(admitted.read(&mut buf));
        assert!(futures::poll!(read.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(futures::poll!(read.as_mut()).is_pending(), "closed 25 s after the last byte");
        tokio::time::advance(Duration::from_secs(10)).await;
        let error = read.await.expect_err("idle for 35 s");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_fails_its_read_after_the_timeout() {
        use tokio::io::AsyncReadExt;
        let (mut door, addr) = door(4, Duration::from_secs(30)).await;
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (mut admitted, _) = door.admit().await;
        let mut buf = [0u8; 8];
        let error = admitted.read(&mut buf).await.expect_err("an idle read fails");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
