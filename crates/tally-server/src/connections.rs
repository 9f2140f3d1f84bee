//! Admission of connections on every door: at most `max_connections` open at once per door,
//! HTTP and gRPC connections closed after `idle_timeout` without a request (Redis clients
//! keep idle pooled connections, as Redis allows), and accept errors logged at a bounded rate.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// A connection that made no [`Progress`] for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// What keeps a connection from being idle.
    pub progress: Progress,
}

/// What counts as progress on a connection, for its idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Any byte read or written: the ops listener, whose requests are short and unauthenticated
    /// anyway, and the Redis door (without an idle timeout).
    Bytes,
    /// A call (request) in flight, or one answered: frames alone (an HTTP/2 `PING`, a
    /// `HEADERS` frame trickled in pieces, a window update) do not keep the connection open.
    /// This is gRPC's own servers' `MaxConnectionIdle`. Calls report through the connection's
    /// [`Activity`] ([`CountsCalls`]; on gRPC, through its [`ConnectionInfo`]).
    Calls,
}

/// The calls of one connection, for an idle clock that counts calls rather than bytes.
#[derive(Debug)]
pub struct Activity {
    since: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// When the last call ended (or the connection opened), in µs after `since`.
    last_end_micros: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_micros: AtomicU64::new(0),
        }
    }

    /// Marks a call in flight until the returned guard is dropped.
    pub fn begin(self: Arc<Self>) -> CallInFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallInFlight(self)
    }

    /// `answer`, with a call of `activity`'s connection in flight until it is ready (or
    /// dropped). A call ends when its answer is ready: sending it is the connection's progress.
    /// `None`: a connection whose progress is not counted in calls.
    pub async fn during<T>(activity: Option<Arc<Self>>, answer: impl Future<Output = T>) -> T {
        let _in_flight = activity.map(Self::begin);
        answer.await
    }

    /// Since when the connection has had no call in flight; `None` while one is.
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.since + Duration::from_micros(self.last_end_micros.load(Ordering::Acquire)))
    }
}

/// A call in flight on a connection whose progress is [`Progress::Calls`].
#[derive(Debug)]
pub struct CallInFlight(Arc<Activity>);

impl Drop for CallInFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ended = tokio::time::Instant::now().saturating_duration_since(activity.since);
        let micros = u64::try_from(ended.as_micros()).unwrap_or(u64::MAX);
        // Before the count drops: a reader that sees no call in flight sees this end too.
        activity.last_end_micros.fetch_max(micros, Ordering::AcqRel);
        let before = activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a call ended that never began");
    }
}

/// A connection that may count its calls as its progress: the HTTP door's connection loop
/// reports each request through it.
pub trait CountsCalls {
    /// The connection's calls, where its door's progress is [`Progress::Calls`].
    fn calls(&self) -> Option<Arc<Activity>>;
}

impl CountsCalls for Admitted {
    fn calls(&self) -> Option<Arc<Activity>> {
        self.idle.as_ref().and_then(|idle| idle.calls.clone())
    }
}

/// What the gRPC door's calls learn of their connection (tonic's connect info): the client's
/// address, and where a connection counts calls as progress, its [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address, where the socket still knows it.
    pub remote: Option<SocketAddr>,
    /// `Some` where the door's progress is [`Progress::Calls`].
    pub activity: Option<Arc<Activity>>,
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
                    return (Admitted::new(stream, permit, gauge, self.admission), peer);
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
    /// When the connection last read or wrote a byte.
    active: tokio::time::Instant,
    /// Where progress is calls, not bytes: the connection's calls.
    calls: Option<Arc<Activity>>,
    /// Fires at the earliest time the connection can have been idle long enough. It is not
    /// moved on every read and write (a timer update each time): when it fires, it is set
    /// again from `active` if the connection made progress meanwhile.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(timeout: Duration, calls: Option<Arc<Activity>>) -> Self {
        let now = tokio::time::Instant::now();
        Self { timeout, active: now, calls, timer: Box::pin(tokio::time::sleep(timeout)) }
    }

    /// After an I/O call made progress.
    fn moved(&mut self) {
        if self.calls.is_none() {
            self.active = tokio::time::Instant::now();
        }
    }

    /// While an I/O call waits: `Ready` once the connection has been idle for the timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = tokio::time::Instant::now();
            let idle_until = match &self.calls {
                None => self.active + self.timeout,
                // A call in flight: look again a whole timeout later.
                Some(calls) => calls.idle_since().unwrap_or(now) + self.timeout,
            };
            if now >= idle_until {
                return Poll::Ready(());
            }
            // Progress since the timer was set: wait out the rest from the last of it.
            self.timer.as_mut().reset(idle_until);
        }
    }
}

impl Admitted {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, gauge: Gauge, admission: Admission) -> Self {
        let calls = (admission.progress == Progress::Calls).then(|| Arc::new(Activity::new()));
        let idle = admission.idle_timeout.map(|timeout| Idle::new(timeout, calls));
        Self { stream, _permit: permit, _gauge: gauge, idle }
    }

    /// After an I/O call: progress is noted; waiting checks how long since the last.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(idle) = &mut self.idle else { return polled };
        if polled.is_ready() {
            idle.moved();
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
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo { remote: self.stream.peer_addr().ok(), activity: self.calls() }
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
        door_counting(Progress::Bytes, max_connections, idle_timeout).await
    }

    async fn door_counting(
        progress: Progress,
        max_connections: usize,
        idle_timeout: Duration,
    ) -> (Doorkeeper, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admission = Admission { max_connections, idle_timeout: Some(idle_timeout), progress };
        (Doorkeeper::new(listener, "test", admission), addr)
    }

    #[tokio::test(start_paused = true)]
    async fn where_calls_are_progress_a_connection_is_idle_only_with_no_call_in_flight() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tonic::transport::server::Connected;
        let (mut door, addr) = door_counting(Progress::Calls, 4, Duration::from_secs(30)).await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (mut admitted, _) = door.admit().await;
        let activity = admitted.connect_info().activity.expect("the connection counts calls");
        let call = activity.begin();
        let mut buf = [0u8; 8];
        let mut read = Box::pin(admitted.read(&mut buf));
        tokio::time::advance(Duration::from_secs(45)).await;
        assert!(futures::poll!(read.as_mut()).is_pending(), "closed with a call in flight");
        drop(call);
        // Bytes are not progress here: a frame 20 s after the call does not move the clock.
        tokio::time::advance(Duration::from_secs(20)).await;
        client.write_all(b"p").await.expect("write");
        assert_eq!(read.await.expect("the byte"), 1);
        let mut read = Box::pin(admitted.read(&mut buf));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(futures::poll!(read.as_mut()).is_pending(), "closed 25 s after the call ended");
        tokio::time::advance(Duration::from_secs(6)).await;
        let error = read.await.expect_err("idle for 31 s since the call ended");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
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
