//! Counter routes: `AddCount`, `AddAndGetCount`, `GetCount`, `ClearCount`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use tally_core::{CounterType, IdempotencyToken, Timestamp};
use tally_engine::{Count, Mutated};

use super::{HttpState, WirePath, json_body};
use crate::auth::{Access, Principal};
use crate::convert::{counter_key, token};
use crate::error::ApiError;
use crate::metrics::observe;

/// `{"token": "...", "generation_time": "RFC 3339"}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJson {
    token: String,
    generation_time: String,
}

impl TokenJson {
    fn parse(&self) -> Result<IdempotencyToken, ApiError> {
        let time = Timestamp::parse_rfc3339(&self.generation_time)
            .map_err(|e| ApiError::invalid(format!("idempotency_token.generation_time: {e}")))?;
        token(&self.token, Some(time))
    }

    fn of(t: &IdempotencyToken) -> Self {
        Self { token: t.token().to_owned(), generation_time: t.generation_time().to_string() }
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
    observe("http", "AddCount", async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: AddBody = json_body(body, state.max_body_bytes)?;
        let token = body.idempotency_token.as_ref().map(TokenJson::parse).transpose()?;
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
    observe("http", "AddAndGetCount", async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: AddBody = json_body(body, state.max_body_bytes)?;
        let token = body.idempotency_token.as_ref().map(TokenJson::parse).transpose()?;
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
) -> Result<Json<CountJson>, ApiError> {
    observe("http", "GetCount", async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Read, &key.namespace)?;
        let count = state.engine.get_count(&key).await?;
        Ok(Json(count_json(ns, counter, count)))
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
    observe("http", "ClearCount", async {
        let key = counter_key(&ns, &counter)?;
        who.require(Access::Write, &key.namespace)?;
        let body: ClearBody = json_body(body, state.max_body_bytes)?;
        let token = body.idempotency_token.as_ref().map(TokenJson::parse).transpose()?;
        Ok(Json(state.engine.clear_count(&key, token).await?.into()))
    })
    .await
}
