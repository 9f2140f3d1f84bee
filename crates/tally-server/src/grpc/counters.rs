//! `tally.v1.CounterService`.

use tally_core::Operation;
use tally_engine::{Count, Engine, Mutated};
use tally_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::convert::{
    counter_key, counter_type_to_proto, duration_from_proto, duration_to_proto, timestamp_from_proto,
    timestamp_to_proto, token_from_proto, token_to_proto,
};
use crate::error::ApiError;
use crate::metrics::observe;
use crate::{batch, events, list, series};

/// The counter operations over gRPC.
pub struct GrpcCounters {
    engine: Engine,
}

impl GrpcCounters {
    /// Serves `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

fn mutated(m: &Mutated) -> (Option<pb::IdempotencyToken>, bool) {
    (m.token.as_ref().map(token_to_proto), m.applied)
}

fn item_error(e: &ApiError) -> pb::ItemError {
    pb::ItemError { code: e.code.as_str().to_owned(), message: e.message.clone() }
}

fn added(m: &Mutated, c: &Count) -> pb::AddAndGetCountResponse {
    let (idempotency_token, applied) = mutated(m);
    let (count, counter_type, as_of) = count_fields(c);
    pb::AddAndGetCountResponse { count, idempotency_token, applied, counter_type, as_of }
}

fn count_fields(c: &Count) -> (i64, i32, Option<prost_types::Timestamp>) {
    (c.value, counter_type_to_proto(c.counter_type) as i32, c.as_of.map(timestamp_to_proto))
}

#[tonic::async_trait]
impl pb::counter_service_server::CounterService for GrpcCounters {
    async fn add_count(
        &self,
        request: Request<pb::AddCountRequest>,
    ) -> Result<Response<pb::AddCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::AddCount, async {
            let key = counter_key(&r.namespace, &r.counter_name)?;
            who?.require(Access::Write, &key.namespace)?;
            let token = token_from_proto(r.idempotency_token.as_ref(), self.engine.now())?;
            let (idempotency_token, applied) = mutated(&self.engine.add_count(&key, r.delta, token).await?);
            Ok(pb::AddCountResponse { idempotency_token, applied })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn add_and_get_count(
        &self,
        request: Request<pb::AddAndGetCountRequest>,
    ) -> Result<Response<pb::AddAndGetCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::AddAndGetCount, async {
            let key = counter_key(&r.namespace, &r.counter_name)?;
            who?.require(Access::Write, &key.namespace)?;
            let token = token_from_proto(r.idempotency_token.as_ref(), self.engine.now())?;
            let (m, c) = self.engine.add_and_get_count(&key, r.delta, token).await?;
            Ok(added(&m, &c))
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn get_count(
        &self,
        request: Request<pb::GetCountRequest>,
    ) -> Result<Response<pb::GetCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::GetCount, async {
            let key = counter_key(&r.namespace, &r.counter_name)?;
            let window = duration_from_proto("window", r.window.as_ref())?;
            who?.require(Access::Read, &key.namespace)?;
            let count = match window {
                Some(window) => self.engine.windowed_count(&key, window).await?,
                None => self.engine.get_count(&key).await?,
            };
            let (count, counter_type, as_of) = count_fields(&count);
            Ok(pb::GetCountResponse { count, counter_type, as_of })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn clear_count(
        &self,
        request: Request<pb::ClearCountRequest>,
    ) -> Result<Response<pb::ClearCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::ClearCount, async {
            let key = counter_key(&r.namespace, &r.counter_name)?;
            who?.require(Access::Write, &key.namespace)?;
            let token = token_from_proto(r.idempotency_token.as_ref(), self.engine.now())?;
            let (idempotency_token, applied) = mutated(&self.engine.clear_count(&key, token).await?);
            Ok(pb::ClearCountResponse { idempotency_token, applied })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn batch_add_count(
        &self,
        request: Request<pb::BatchAddCountRequest>,
    ) -> Result<Response<pb::BatchAddCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::BatchAddCount, async {
            let who = who?;
            batch::check_size(r.adds.len())?;
            // One clock read for the batch: a token without a generation time takes the batch's.
            let now = self.engine.now();
            let adds = r
                .adds
                .iter()
                .map(|a| {
                    let token = token_from_proto(a.idempotency_token.as_ref(), now);
                    batch::WireAdd::new(&a.namespace, &a.counter_name, a.delta, token)
                })
                .collect();
            let results = batch::add(&self.engine, &who, adds)
                .await
                .iter()
                .map(|r| pb::BatchAddCountResult {
                    result: Some(match r {
                        Ok((m, c)) => pb::batch_add_count_result::Result::Added(added(m, c)),
                        Err(e) => pb::batch_add_count_result::Result::Error(item_error(e)),
                    }),
                })
                .collect();
            Ok(pb::BatchAddCountResponse { results })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn batch_get_count(
        &self,
        request: Request<pb::BatchGetCountRequest>,
    ) -> Result<Response<pb::BatchGetCountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::BatchGetCount, async {
            let who = who?;
            batch::check_size(r.gets.len())?;
            if let Some(i) = r.gets.iter().position(|g| g.window.is_some()) {
                return Err(ApiError::invalid(format!(
                    "gets[{i}] has a window: BatchGetCount reads counts only; ask GetCount for a windowed count"
                )));
            }
            let keys = r.gets.iter().map(|g| counter_key(&g.namespace, &g.counter_name)).collect();
            let results = batch::get(&self.engine, &who, keys)
                .await
                .iter()
                .map(|r| pb::BatchGetCountResult {
                    result: Some(match r {
                        Ok(c) => {
                            let (count, counter_type, as_of) = count_fields(c);
                            pb::batch_get_count_result::Result::Count(pb::GetCountResponse {
                                count,
                                counter_type,
                                as_of,
                            })
                        }
                        Err(e) => pb::batch_get_count_result::Result::Error(item_error(e)),
                    }),
                })
                .collect();
            Ok(pb::BatchGetCountResponse { results })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn list_counters(
        &self,
        request: Request<pb::ListCountersRequest>,
    ) -> Result<Response<pb::ListCountersResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::ListCounters, async {
            let page = list::Page::parse(&r.namespace, &r.prefix, r.page_size.into(), &r.page_token)?;
            who?.require(Access::Read, &page.namespace)?;
            let listed = page.run(&self.engine).await?;
            let counters = listed
                .counters
                .iter()
                .map(|(name, c)| {
                    let (count, counter_type, as_of) = count_fields(c);
                    pb::ListedCounter { counter_name: name.to_string(), count, counter_type, as_of }
                })
                .collect();
            let next_page_token = listed.next.map(|n| n.to_string()).unwrap_or_default();
            Ok(pb::ListCountersResponse { counters, next_page_token })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::ListEvents, async {
            let time = |t: Option<&prost_types::Timestamp>| t.map(timestamp_from_proto).transpose();
            let asked = events::EventsRequest::parse(
                &r.namespace,
                &r.counter_name,
                time(r.from.as_ref())?,
                time(r.to.as_ref())?,
                r.page_size.into(),
                &r.page_token,
            )?;
            who?.require(Access::Read, &asked.key.namespace)?;
            let page = asked.run(&self.engine).await?;
            let events = page
                .events
                .iter()
                .map(|listed| {
                    let (kind, delta) = match listed.event.kind {
                        tally_core::EventKind::Add(delta) => (pb::MutationKind::Add, delta),
                        tally_core::EventKind::Clear => (pb::MutationKind::Clear, 0),
                    };
                    pb::CounterEvent {
                        generation_time: Some(timestamp_to_proto(listed.event.token.generation_time())),
                        token: listed.event.token.token().to_owned(),
                        kind: kind as i32,
                        delta,
                        folded: listed.folded,
                    }
                })
                .collect();
            let next_page_token = page.next.as_ref().map(events::page_token).unwrap_or_default();
            Ok(pb::ListEventsResponse { events, next_page_token })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn get_count_series(
        &self,
        request: Request<pb::GetCountSeriesRequest>,
    ) -> Result<Response<pb::GetCountSeriesResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::GetCountSeries, async {
            let time = |t: Option<&prost_types::Timestamp>| t.map(timestamp_from_proto).transpose();
            let range = series::AskedRange {
                from: time(r.from.as_ref())?,
                to: time(r.to.as_ref())?,
                last: duration_from_proto("last", r.last.as_ref())?,
                step: duration_from_proto("step", r.step.as_ref())?,
            };
            let asked =
                series::SeriesRequest::parse(&r.namespace, &r.counter_name, range, self.engine.now())?;
            who?.require(Access::Read, &asked.key.namespace)?;
            let series = asked.run(&self.engine).await?;
            let buckets = series
                .buckets
                .iter()
                .map(|b| pb::SeriesBucket {
                    start: Some(timestamp_to_proto(b.start)),
                    added: b.added,
                    adds: b.adds,
                    clears: b.clears,
                    folded: b.folded,
                    retained: b.retained,
                })
                .collect();
            Ok(pb::GetCountSeriesResponse {
                buckets,
                total: series.total,
                kept_since: Some(timestamp_to_proto(series.kept_since)),
                step: Some(duration_to_proto(asked.range.step())),
            })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }

    async fn recount(
        &self,
        request: Request<pb::RecountRequest>,
    ) -> Result<Response<pb::RecountResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        observe("grpc", Operation::Recount, async {
            let key = counter_key(&r.namespace, &r.counter_name)?;
            who?.require(Access::Read, &key.namespace)?;
            let recount = self.engine.recount(&key).await?;
            let until = recount.checkpoint.until;
            Ok(pb::RecountResponse {
                checkpoint_count: recount.checkpoint.count,
                checkpoint_until: (until > tally_core::Timestamp::MIN).then(|| timestamp_to_proto(until)),
                recounted: recount.recounted,
                events: recount.events,
                oldest_event: recount.oldest.map(timestamp_to_proto),
                cleared: recount.cleared,
                agrees: recount.agrees(),
            })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }
}
