//! The floor of a unary gRPC call on this stack: `tally.v1.CounterService` served by the same
//! tonic, codec and runtime settings as `tally serve`, with an `AddCount`, a `BatchAddCount` and
//! a `GetCount` that touch no engine and no disk (an add answers the request's token, applied,
//! with its delta as the count; a read answers 0). Every other method answers UNIMPLEMENTED.
//! `bench/compare.sh` drives it with the same `tally bench` commands as Tally's own
//! `AddCount`, `BatchAddCount` and `GetCount` rows, so the figures side by side show how much
//! of a call is the protocol stack and the shared cores.
//!
//!   cargo run --release -p tally-server --example grpc_floor -- 127.0.0.1:17091

use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_server::{CounterService, CounterServiceServer};
use tonic::{Request, Response, Status};

/// A `CounterService` that does nothing but answer.
struct Floor;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the gRPC floor serves AddCount, BatchAddCount and GetCount only"))
}

#[tonic::async_trait]
impl CounterService for Floor {
    async fn add_count(
        &self,
        request: Request<pb::AddCountRequest>,
    ) -> Result<Response<pb::AddCountResponse>, Status> {
        let idempotency_token = request.into_inner().idempotency_token;
        Ok(Response::new(pb::AddCountResponse { idempotency_token, applied: true }))
    }

    async fn add_and_get_count(
        &self,
        _: Request<pb::AddAndGetCountRequest>,
    ) -> Result<Response<pb::AddAndGetCountResponse>, Status> {
        unimplemented()
    }

    async fn get_count(
        &self,
        _: Request<pb::GetCountRequest>,
    ) -> Result<Response<pb::GetCountResponse>, Status> {
        let counter_type = pb::CounterType::Eventual as i32;
        Ok(Response::new(pb::GetCountResponse { count: 0, counter_type, as_of: None }))
    }

    async fn clear_count(
        &self,
        _: Request<pb::ClearCountRequest>,
    ) -> Result<Response<pb::ClearCountResponse>, Status> {
        unimplemented()
    }

    async fn batch_add_count(
        &self,
        request: Request<pb::BatchAddCountRequest>,
    ) -> Result<Response<pb::BatchAddCountResponse>, Status> {
        let counter_type = pb::CounterType::Eventual as i32;
        let results = (request.into_inner().adds.into_iter())
            .map(|add| pb::BatchAddCountResult {
                result: Some(pb::batch_add_count_result::Result::Added(pb::AddAndGetCountResponse {
                    count: add.delta,
                    idempotency_token: add.idempotency_token,
                    applied: true,
                    counter_type,
                    as_of: None,
                })),
            })
            .collect();
        Ok(Response::new(pb::BatchAddCountResponse { results }))
    }

    async fn batch_get_count(
        &self,
        _: Request<pb::BatchGetCountRequest>,
    ) -> Result<Response<pb::BatchGetCountResponse>, Status> {
        unimplemented()
    }

    async fn list_counters(
        &self,
        _: Request<pb::ListCountersRequest>,
    ) -> Result<Response<pb::ListCountersResponse>, Status> {
        unimplemented()
    }

    async fn list_events(
        &self,
        _: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        unimplemented()
    }

    async fn recount(&self, _: Request<pb::RecountRequest>) -> Result<Response<pb::RecountResponse>, Status> {
        unimplemented()
    }

    async fn get_count_series(
        &self,
        _: Request<pb::GetCountSeriesRequest>,
    ) -> Result<Response<pb::GetCountSeriesResponse>, Status> {
        unimplemented()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:17091".to_owned()).parse()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // As `tally serve` runs (see `runtime()` in the binary): without the LIFO slot, responses
    // answered together are written together.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    runtime.enable_all().build()?.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        eprintln!("gRPC floor listening on {address}");
        // Tally's door sets no-delay on every connection it admits.
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(CounterServiceServer::new(Floor))
            .serve_with_shutdown(address, shutdown)
            .await
    })?;
    Ok(())
}
