//! The gRPC front door: `tally.v1.CounterService` and `tally.v1.NamespaceService`, with server
//! reflection and the standard health service; `tally.v1.PeerService` for rollup routing.

mod calls;
mod counters;
mod namespaces;
mod peers;

use std::sync::Arc;

use tally_engine::Engine;
use tally_proto::v1::counter_service_server::CounterServiceServer;
use tally_proto::v1::namespace_service_server::NamespaceServiceServer;
use tally_proto::v1::peer_service_server::PeerServiceServer;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;

pub use counters::GrpcCounters;
pub use namespaces::GrpcNamespaces;
pub use peers::{GrpcPeers, PeerRouter};

/// Authenticates each call from its `authorization: Bearer <token>` metadata and attaches the
/// [`Principal`] for the handlers' scope checks; refuses with `UNAUTHENTICATED` otherwise.
#[derive(Clone)]
struct Authenticate(Arc<Authenticator>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = request.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
        let address = calls::connection_of(request.extensions()).and_then(|c| c.remote).map(|a| a.ip());
        let caller = crate::auth::Caller { address, door: "grpc" };
        let principal = self.0.authenticate_header(header, caller).map_err(ApiError::into_status)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The caller's principal. Fails closed: a call that reached a handler without passing the
/// interceptor has no principal and is refused.
fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, ApiError> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::new(tally_core::ErrorCode::Unauthenticated, "the call was not authenticated")
    })
}

/// The services gRPC reflection lists.
pub const REFLECTED_SERVICES: &[&str] = &[
    "tally.v1.CounterService",
    "tally.v1.NamespaceService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Limits on each gRPC call's request.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// A request message must arrive whole within this long of the call's headers.
    pub body_read_timeout: std::time::Duration,
}

/// Serves gRPC on `listener` until `shutdown` completes, then finishes in-flight calls.
/// Everything but the health service goes through authentication.
pub async fn serve(
    engine: Engine,
    listener: crate::connections::Doorkeeper,
    limits: GrpcLimits,
    auth: Arc<Authenticator>,
    tls: Option<crate::tls::Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CounterServiceServer<GrpcCounters>>().await;
    health.set_serving::<NamespaceServiceServer<GrpcNamespaces>>().await;
    // Both reflection versions: grpcurl and ghz releases still in use speak only v1alpha.
    // They list the services clients call, health included; not PeerService, which only other
    // instances call.
    let reflection_of = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for service in REFLECTED_SERVICES {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let reflection = reflection_of().build_v1()?;
    let reflection_alpha = reflection_of().build_v1alpha()?;
    let counters = CounterServiceServer::new(GrpcCounters::new(engine.clone()))
        .max_decoding_message_size(limits.max_message_bytes);
    let namespaces = NamespaceServiceServer::new(GrpcNamespaces::new(engine.clone()))
        .max_decoding_message_size(limits.max_message_bytes);
    let peers =
        PeerServiceServer::new(GrpcPeers::new(engine)).max_decoding_message_size(limits.max_message_bytes);
    let guard = Authenticate(auth);
    // The door admits connections (with no-delay set: tonic sets it only on listeners it
    // binds itself).
    let incoming = futures::stream::unfold(listener, |mut door| async move {
        let (connection, _) = door.admit().await;
        Some((Ok::<_, std::io::Error>(connection), door))
    });
    #[allow(unused_mut)]
    let mut builder = tonic::transport::Server::builder()
        .layer(calls::WatchCalls { body_read_timeout: limits.body_read_timeout });
    #[cfg(feature = "tls")]
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc())?;
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls; // `Tls::load` never yields one without the feature.
    builder
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, guard.clone()))
        .add_service(InterceptedService::new(reflection_alpha, guard.clone()))
        .add_service(InterceptedService::new(counters, guard.clone()))
        .add_service(InterceptedService::new(namespaces, guard.clone()))
        .add_service(InterceptedService::new(peers, guard))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
