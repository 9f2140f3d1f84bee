//! `GET /v1/namespaces/{ns}/counters/{counter}/events`: `ListEvents` over HTTP.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use serde::{Deserialize, Serialize};
use tally_core::Operation;

use super::{HttpState, WirePath, query_time};
use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::events::{EventsRequest, kind_and_delta, page_token};
use crate::metrics::observe;

/// The query: `from` and `to` as RFC 3339, both optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    page_size: i64,
    #[serde(default)]
    page_token: String,
}

/// One event.
#[derive(Debug, Serialize)]
pub struct EventJson {
    generation_time: String,
    token: String,
    kind: &'static str,
    delta: i64,
    folded: bool,
}

/// A page of events.
#[derive(Debug, Serialize)]
pub struct EventPageJson {
    events: Vec<EventJson>,
    next_page_token: Option<String>,
}

/// `GET /v1/namespaces/{ns}/counters/{counter}/events?from=&to=&page_size=&page_token=`
pub async fn list_events(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath((ns, counter)): WirePath<(String, String)>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPageJson>, ApiError> {
    observe("http", Operation::ListEvents, async {
        let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
        let (from, to) = (query_time("from", q.from.as_deref())?, query_time("to", q.to.as_deref())?);
        let asked = EventsRequest::parse(&ns, &counter, from, to, q.page_size, &q.page_token)?;
        who.require(Access::Read, &asked.key.namespace)?;
        let page = asked.run(&state.engine).await?;
        let events = page
            .events
            .iter()
            .map(|listed| {
                let (kind, delta) = kind_and_delta(listed.event.kind);
                EventJson {
                    generation_time: listed.event.token.generation_time().to_string(),
                    token: listed.event.token.token().to_owned(),
                    kind,
                    delta,
                    folded: listed.folded,
                }
            })
            .collect();
        Ok(Json(EventPageJson { events, next_page_token: page.next.as_ref().map(page_token) }))
    })
    .await
}
