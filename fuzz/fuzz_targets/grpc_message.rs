//! Arbitrary protobuf bytes decoded as each `tally.v1` request and handed to the real service
//! implementations over an in-memory store: no panic, no hang, never INTERNAL.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tally_core::SystemClock;
use tally_engine::{Engine, EngineOptions, LocalBestEffort, LocalCache};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_server::CounterService;
use tally_proto::v1::namespace_service_server::NamespaceService;
use tally_server::auth::Principal;
use tally_server::grpc::{GrpcCounters, GrpcNamespaces};
use tally_store::MemoryStore;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fn services() -> &'static (GrpcCounters, GrpcNamespaces) {
    static SERVICES: OnceLock<(GrpcCounters, GrpcNamespaces)> = OnceLock::new();
    SERVICES.get_or_init(|| {
        runtime().block_on(async {
            let clock = Arc::new(SystemClock);
            let engine = Engine::open(
                Arc::new(MemoryStore::new(clock.clone())),
                Arc::new(LocalCache::new(1_000)),
                Arc::new(LocalBestEffort::default()),
                clock,
                EngineOptions::default(),
            )
            .await
            .expect("engine");
            (GrpcCounters::new(engine.clone()), GrpcNamespaces::new(engine))
        })
    })
}

/// A request as the interceptor leaves it: authenticated (authentication off).
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Principal::unrestricted());
    request
}

fn check<T>(result: Result<tonic::Response<T>, tonic::Status>) {
    if let Err(status) = result {
        assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let (counters, namespaces) = services();
    runtime().block_on(async {
        match which % 6 {
            0 => {
                if let Ok(m) = pb::AddCountRequest::decode(bytes) {
                    check(counters.add_count(request(m)).await);
                }
            }
            1 => {
                if let Ok(m) = pb::AddAndGetCountRequest::decode(bytes) {
                    check(counters.add_and_get_count(request(m)).await);
                }
            }
            2 => {
                if let Ok(m) = pb::GetCountRequest::decode(bytes) {
                    check(counters.get_count(request(m)).await);
                }
            }
            3 => {
                if let Ok(m) = pb::ClearCountRequest::decode(bytes) {
                    check(counters.clear_count(request(m)).await);
                }
            }
            4 => {
                if let Ok(m) = pb::CreateNamespaceRequest::decode(bytes) {
                    check(namespaces.create_namespace(request(m)).await);
                }
            }
            _ => {
                if let Ok(m) = pb::UpdateNamespaceRequest::decode(bytes) {
                    check(namespaces.update_namespace(request(m)).await);
                }
            }
        }
    });
});
