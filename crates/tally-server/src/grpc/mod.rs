//! The gRPC front door: `tally.v1.CounterService` and `tally.v1.NamespaceService`, with server
//! reflection and the standard health service; `tally.v1.PeerService` for rollup routing.

mod counters;
mod namespaces;
mod peers;

use tally_engine::Engine;
use tally_proto::v1::counter_service_server::CounterServiceServer;
use tally_proto::v1::namespace_service_server::NamespaceServiceServer;
use tally_proto::v1::peer_service_server::PeerServiceServer;
use tokio::net::TcpListener;

pub use counters::GrpcCounters;
pub use namespaces::GrpcNamespaces;
pub use peers::{GrpcPeers, PeerRouter};

/// Serves gRPC on `listener` until `shutdown` completes, then finishes in-flight calls.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    max_message_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CounterServiceServer<GrpcCounters>>().await;
    health.set_serving::<NamespaceServiceServer<GrpcNamespaces>>().await;
    // Both reflection versions: grpcurl and ghz releases still in use speak only v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let counters = CounterServiceServer::new(GrpcCounters::new(engine.clone()))
        .max_decoding_message_size(max_message_bytes);
    let namespaces = NamespaceServiceServer::new(GrpcNamespaces::new(engine.clone()))
        .max_decoding_message_size(max_message_bytes);
    let peers = PeerServiceServer::new(GrpcPeers::new(engine)).max_decoding_message_size(max_message_bytes);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(counters)
        .add_service(namespaces)
        .add_service(peers)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}
