//! `GET /v1/namespaces/{ns}/counters/{counter}/series`: `GetCountSeries` over HTTP.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use serde::{Deserialize, Serialize};
use tally_core::Operation;

use super::{HttpState, WirePath, query_duration, query_time};
use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::metrics::observe;
use crate::series::{AskedRange, SeriesRequest};

/// The query: `from` and `to` as RFC 3339, `last` and `step` as durations (`1h`, `30s`); all
/// optional, `from` and `last` not both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    last: Option<String>,
    #[serde(default)]
    step: Option<String>,
}

/// One bucket.
#[derive(Debug, Serialize)]
pub struct BucketJson {
    start: String,
    added: i64,
    adds: u64,
    clears: u64,
    folded: bool,
    retained: bool,
}

/// A series.
#[derive(Debug, Serialize)]
pub struct SeriesJson {
    buckets: Vec<BucketJson>,
    total: i64,
    kept_since: String,
    step: String,
}

/// `GET /v1/namespaces/{ns}/counters/{counter}/series?from=&to=&last=&step=`
pub async fn get_count_series(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<SeriesJson>, ApiError> {
    observe("http", Operation::GetCountSeries, async {
        let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
        let range = AskedRange {
            from: query_time("from", q.from.as_deref())?,
            to: query_time("to", q.to.as_deref())?,
            last: query_duration("last", q.last.as_deref())?,
            step: query_duration("step", q.step.as_deref())?,
        };
        let asked = SeriesRequest::parse(&ns, &counter, range, state.engine.now())?;
        who.require(Access::Read, &asked.key.namespace)?;
        let series = asked.run(&state.engine).await?;
        let buckets = series
            .buckets
            .iter()
            .map(|b| BucketJson {
                start: b.start.to_string(),
                added: b.added,
                adds: b.adds,
                clears: b.clears,
                folded: b.folded,
                retained: b.retained,
            })
            .collect();
        Ok(Json(SeriesJson {
            buckets,
            total: series.total,
            kept_since: series.kept_since.to_string(),
            step: humantime::format_duration(asked.range.step()).to_string(),
        }))
    })
    .await
}
