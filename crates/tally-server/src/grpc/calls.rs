//! What every gRPC call goes through before its service: it is counted as its connection's
//! progress (see [`Progress::Calls`]), and its request message must arrive whole within
//! `body_read_timeout` of its headers.
//!
//! Without the first, an HTTP/2 client that sends only pings, or a header block a frame at a
//! time, holds its connection (and its place under `max_connections`) forever: every frame is
//! a byte of progress. Without the second, a client that trickles a request message holds the
//! call, and so the connection, for as long as it keeps sending.
//!
//! [`Progress::Calls`]: crate::connections::Progress::Calls

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::connections::{Activity, ConnectionInfo};
use crate::error::ApiError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The connection a gRPC request came on, under TLS or not.
pub(crate) fn connection_of(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    #[cfg(feature = "tls")]
    if let Some(tls) = extensions.get::<tonic::transport::server::TlsConnectInfo<ConnectionInfo>>() {
        return Some(tls.get_ref());
    }
    extensions.get::<ConnectionInfo>()
}

/// The layer: see the module's documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchCalls {
    pub body_read_timeout: Duration,
}

impl<S> tower::Layer<S> for WatchCalls {
    type Service = Watched<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Watched { inner, body_read_timeout: self.body_read_timeout }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Watched<S> {
    inner: S,
    body_read_timeout: Duration,
}

type Request = http::Request<tonic::body::Body>;

impl<S> tower::Service<Request> for Watched<S>
where
    S: tower::Service<Request> + Send,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let activity = connection_of(request.extensions()).and_then(|c| c.activity.clone());
        let timeout = self.body_read_timeout;
        let request = request.map(|body| tonic::body::Body::new(Deadlined::new(body, timeout)));
        Box::pin(Activity::during(activity, self.inner.call(request)))
    }
}

/// A request body that fails with `DEADLINE_EXCEEDED` if it has not ended within its timeout.
struct Deadlined {
    inner: tonic::body::Body,
    timeout: Duration,
    /// `None` once the body has ended (or failed).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Refused for its deadline: it yields nothing more.
    expired: bool,
}

impl Deadlined {
    fn new(inner: tonic::body::Body, timeout: Duration) -> Self {
        let deadline = (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(timeout)));
        Self { inner, timeout, deadline, expired: false }
    }
}

impl Body for Deadlined {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
                    this.deadline = None;
                }
                Poll::Ready(frame)
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                this.deadline = None;
                this.expired = true;
                metrics::counter!("tally_grpc_messages_late_total").increment(1);
                Poll::Ready(Some(Err(ApiError::body_too_slow(this.timeout).into_status())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
