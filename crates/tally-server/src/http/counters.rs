//! Counter routes: `AddCount`, `AddAndGetCount`, `GetCount`, `ClearCount`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use serde::{Deserialize, Serialize};
use tally_core::Operation;
use tally_core::{CounterType, ErrorCode, IdempotencyToken, TimeError, Timestamp};
use tally_engine::{Count, Mutated};

use super::{HttpState, WirePath, json_body};
use crate::auth::{Access, Principal};
use crate::convert::{counter_key, token};
use crate::error::ApiError;
use crate::metrics::observe;
use crate::{batch, list};

/// `{"token": "...", "generation_time": "RFC 3339"}`; the time is optional on the way in (the
/// server's clock) and always given on the way out (the time the token's first arrival fixed).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJson {
    token: String,
    #[serde(default)]
    generation_time: Option<String>,
}

impl TokenJson {
    fn parse(&self, now: Timestamp) -> Result<IdempotencyToken, ApiError> {
        let time =
            self.generation_time.as_deref().map(Timestamp::parse_rfc3339).transpose().map_err(|e| {
                let code = match e {
                    TimeError::OutOfRange(_) => ErrorCode::OutOfRange,
                    TimeError::Malformed(_) => ErrorCode::InvalidArgument,
                };
                ApiError::new(code, format!("idempotency_token.generation_time: {e}"))
            })?;
        token(&self.token, time, now)
    }

    fn of(t: &IdempotencyToken) -> Self {
        Self { token: t.token().to_owned(), generation_time: Some(t.generation_time().to_string()) }
    }
}

fn one() -> i64 {
    1
}

/// The body of an add: `delta` defaults to 1; the token is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default = "one")]
    delta: i64,
    idempotency_token: Option<TokenJson>,
}

impl Default for AddBody {
    fn default() -> Self {
        Self { delta: 1, idempotency_token: None }
    }
}

/// The body of a clear: only the optional token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    idempotency_token: Option<TokenJson>,
}

/// The answer to a mutation.
#[derive(Debug, Serialize)]
pub struct MutationJson {
    applied: bool,
    idempotency_token: Option<TokenJson>,
}

impl From<Mutated> for MutationJson {
    fn from(m: Mutated) -> Self {
        Self { applied: m.applied, idempotency_token: m.token.as_ref().map(TokenJson::of) }
    }
}

/// The answer to a read.
#[derive(Debug, Serialize)]
pub struct CountJson {
    namespace: String,
    counter_name: String,
    count: i64,
    counter_type: CounterType,
    as_of: Option<String>,
}

fn count_json(ns: String, counter: String, c: Count) -> CountJson {
    CountJson {
        namespace: ns,
        counter_name: counter,
        count: c.value,
        counter_type: c.counter_type,
        as_of: c.as_of.map(|t| t.to_string()),
    }
}

/// The answer to an add-and-get: the count and the mutation.
#[derive(Debug, Serialize)]
pub struct AddAndGetJson {
    #[serde(flatten)]
    count: CountJson,
    #[serde(flatten)]
    mutation: MutationJson,
}

/// `POST /v1/namespaces/{ns}/counters/{counter}/add`
pub async fn add_count(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MutationJson>, ApiError> {
    observe("http", Operation::AddCount, async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: AddBody = json_body(body)?;
        let token = body.idempotency_token.as_ref().map(|t| t.parse(state.engine.now())).transpose()?;
        Ok(Json(state.engine.add_count(&key, body.delta, token).await?.into()))
    })
    .await
}

/// `POST /v1/namespaces/{ns}/counters/{counter}/add-and-get`
pub async fn add_and_get_count(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AddAndGetJson>, ApiError> {
    observe("http", Operation::AddAndGetCount, async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: AddBody = json_body(body)?;
        let token = body.idempotency_token.as_ref().map(|t| t.parse(state.engine.now())).transpose()?;
        let (mutated, count) = state.engine.add_and_get_count(&key, body.delta, token).await?;
        Ok(Json(AddAndGetJson { count: count_json(ns, counter, count), mutation: mutated.into() }))
    })
    .await
}

/// `GET /v1/namespaces/{ns}/counters/{counter}`
pub async fn get_count(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    query: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Json<CountJson>, ApiError> {
    observe("http", Operation::GetCount, async {
        let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
        let key = counter_key(&ns, &counter)?;
        let window = super::query_duration("window", q.window.as_deref())?;
        who.require(Access::Read, &key.namespace)?;
        let count = match window {
            Some(window) => state.engine.windowed_count(&key, window).await?,
            None => state.engine.get_count(&key).await?,
        };
        Ok(Json(count_json(ns, counter, count)))
    })
    .await
}

/// The query of `GET /v1/namespaces/{ns}/counters/{counter}`: `window` (a duration such as
/// `1h`) asks for the windowed count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountQuery {
    #[serde(default)]
    window: Option<String>,
}

/// The query of `GET /v1/namespaces/{ns}/counters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    page_token: String,
}

/// One counter of a page.
#[derive(Debug, Serialize)]
pub struct ListedJson {
    counter_name: String,
    count: i64,
    counter_type: CounterType,
    as_of: Option<String>,
}

/// A page of counters.
#[derive(Debug, Serialize)]
pub struct CounterPageJson {
    counters: Vec<ListedJson>,
    next_page_token: Option<String>,
}

/// `GET /v1/namespaces/{ns}/counters?prefix=&limit=&page_token=`
pub async fn list_counters(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath(ns): WirePath<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<CounterPageJson>, ApiError> {
    observe("http", Operation::ListCounters, async {
        let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
        let page = list::Page::parse(&ns, &q.prefix, q.limit, &q.page_token)?;
        who.require(Access::Read, &page.namespace)?;
        let listed = page.run(&state.engine).await?;
        let counters = listed
            .counters
            .into_iter()
            .map(|(name, c)| ListedJson {
                counter_name: name.to_string(),
                count: c.value,
                counter_type: c.counter_type,
                as_of: c.as_of.map(|t| t.to_string()),
            })
            .collect();
        Ok(Json(CounterPageJson { counters, next_page_token: listed.next.map(|n| n.to_string()) }))
    })
    .await
}

/// `POST /v1/namespaces/{ns}/counters/{counter}/clear`
pub async fn clear_count(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MutationJson>, ApiError> {
    observe("http", Operation::ClearCount, async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: ClearBody = json_body(body)?;
        let token = body.idempotency_token.as_ref().map(|t| t.parse(state.engine.now())).transpose()?;
        Ok(Json(state.engine.clear_count(&key, token).await?.into()))
    })
    .await
}

/// One add of `POST /v1/counters:batchAdd`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchAddItem {
    namespace: String,
    counter_name: String,
    #[serde(default = "one")]
    delta: i64,
    idempotency_token: Option<TokenJson>,
}

/// The body of `POST /v1/counters:batchAdd`; an empty body is an empty batch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchAddBody {
    adds: Vec<BatchAddItem>,
}

/// One counter of `POST /v1/counters:batchGet`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGetItem {
    namespace: String,
    counter_name: String,
}

/// The body of `POST /v1/counters:batchGet`; an empty body is an empty batch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGetBody {
    gets: Vec<BatchGetItem>,
}

/// One item's answer: its result, or `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ItemJson<T> {
    /// The item's result.
    Done(T),
    /// Why the item was refused.
    Refused {
        /// The refusal, in the shape of every HTTP error body.
        error: crate::error::ErrorBody,
    },
}

impl<T> ItemJson<T> {
    fn of(result: Result<T, ApiError>) -> Self {
        match result {
            Ok(t) => Self::Done(t),
            Err(e) => Self::Refused { error: e.body() },
        }
    }
}

/// The answer to a batch: one item per request item, in order.
#[derive(Debug, Serialize)]
pub struct BatchJson<T> {
    results: Vec<ItemJson<T>>,
}

/// `POST /v1/counters:batchAdd`
pub async fn batch_add(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchJson<AddAndGetJson>>, ApiError> {
    observe("http", Operation::BatchAddCount, async {
        let body: BatchAddBody = json_body(body)?;
        batch::check_size(body.adds.len())?;
        let names: Vec<_> = body.adds.iter().map(|a| (a.namespace.clone(), a.counter_name.clone())).collect();
        // One clock read for the batch: a token without a generation time takes the batch's.
        let now = state.engine.now();
        let adds = body
            .adds
            .iter()
            .map(|a| {
                let token = a.idempotency_token.as_ref().map(|t| t.parse(now)).transpose();
                batch::WireAdd::new(&a.namespace, &a.counter_name, a.delta, token)
            })
            .collect();
        let answers = batch::add(&state.engine, &who, adds).await;
        let results = names
            .into_iter()
            .zip(answers)
            .map(|((ns, counter), answer)| {
                ItemJson::of(answer.map(|(mutated, count)| AddAndGetJson {
                    count: count_json(ns, counter, count),
                    mutation: mutated.into(),
                }))
            })
            .collect();
        Ok(Json(BatchJson { results }))
    })
    .await
}

/// `POST /v1/counters:batchGet`
pub async fn batch_get(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchJson<CountJson>>, ApiError> {
    observe("http", Operation::BatchGetCount, async {
        let body: BatchGetBody = json_body(body)?;
        batch::check_size(body.gets.len())?;
        let keys = body.gets.iter().map(|g| counter_key(&g.namespace, &g.counter_name)).collect();
        let answers = batch::get(&state.engine, &who, keys).await;
        let results = body
            .gets
            .into_iter()
            .zip(answers)
            .map(|(g, answer)| ItemJson::of(answer.map(|c| count_json(g.namespace, g.counter_name, c))))
            .collect();
        Ok(Json(BatchJson { results }))
    })
    .await
}
