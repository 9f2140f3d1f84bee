//! `GET /openapi.json`: the description of every HTTP route (OpenAPI 3.1).

use axum::Json;
use serde_json::{Value, json};
use tally_core::Operation;

/// Every HTTP status an error can have: each code's ([`crate::error::status_of`]), 413 for a
/// body over the limit and 405 for a known path with another method.
pub fn error_statuses() -> Vec<u16> {
    let mut statuses: Vec<u16> =
        tally_core::ErrorCode::ALL.iter().map(|&c| crate::error::status_of(c).as_u16()).collect();
    statuses.extend([405, 413]);
    statuses.sort_unstable();
    statuses.dedup();
    statuses
}

fn error_responses() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    Value::Object(error_statuses().into_iter().map(|s| (s.to_string(), error.clone())).collect())
}

/// What each operation does, in a line (the `summary` of each).
const SUMMARIES: &[(Operation, &str)] = &[
    (Operation::AddCount, "Add a delta to a counter, exactly once per idempotency token"),
    (Operation::AddAndGetCount, "Add a delta and return the count that includes it"),
    (Operation::GetCount, "Read a counter"),
    (Operation::ClearCount, "Set a counter to zero as of the token's generation time"),
    (Operation::ListCounters, "List a namespace's counters with their counts, by pages"),
    (Operation::ListEvents, "List a counter's events (its history, for audit), by pages"),
    (Operation::GetCountSeries, "A counter's adds per time bucket, from its kept events"),
    (Operation::BatchAddCount, "Add to many counters at once, each answered on its own"),
    (Operation::BatchGetCount, "Read many counters at once"),
    (Operation::PutNamespace, "Create a namespace, or update its settings"),
    (Operation::GetNamespace, "Read a namespace's settings"),
    (Operation::DeleteNamespace, "Delete a namespace with all its counters"),
    (Operation::ListNamespaces, "List the namespaces the token may read"),
    (Operation::Metrics, "Prometheus metrics"),
    (Operation::Health, "Liveness: the process is up (no token needed)"),
    (Operation::Ready, "Readiness: the server takes traffic"),
    (Operation::OpenApi, "This document"),
    (Operation::Ui, "The dashboard (no token needed: the page holds no data)"),
    (Operation::UiScript, "The dashboard's script"),
];

/// Adds each operation's summary, and marks `/healthz` and the dashboard as needing no token.
fn annotate(mut doc: Value) -> Value {
    let Some(paths) = doc["paths"].as_object_mut() else { return doc };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            if let Some((_, summary)) = SUMMARIES.iter().find(|(op, _)| op.as_str() == id) {
                operation["summary"] = json!(summary);
            }
            if matches!(path.as_str(), "/healthz" | "/ui" | "/ui/app.js") {
                operation["security"] = json!([]);
            }
        }
    }
    doc
}

fn with_errors(ok: Value) -> Value {
    let mut all = error_responses();
    if let (Some(all), Some(ok)) = (all.as_object_mut(), ok.as_object()) {
        all.extend(ok.clone());
    }
    all
}

fn ok_json(schema: &str, description: &str) -> Value {
    json!({"200": {"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": false, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn counter_params() -> Value {
    json!([
        {"name": "ns", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}},
        {"name": "counter", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}
    ])
}

fn ns_param() -> Value {
    json!([{"name": "ns", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}}])
}

fn text(description: &str) -> Value {
    json!({"200": {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}})
}

/// The OpenAPI document.
pub fn spec() -> Value {
    annotate(document_body())
}

fn document_body() -> Value {
    let duration = json!({"type": "string", "description": "a duration such as 5s, 250ms, 7days"});
    let codes: Vec<&str> = tally_core::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tally", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Distributed counters: AddCount, AddAndGetCount, GetCount, ClearCount, their batches, a counter's events, and namespaces. With authentication on (`[auth]`), every operation but /healthz needs a bearer token whose scopes cover it (401 without one, 403 outside its scopes, 429 after too many failed attempts from one address)."},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/namespaces/{ns}/counters/{counter}/add": {"post": {
                "operationId": "AddCount", "parameters": counter_params(), "requestBody": body("AddBody"),
                "responses": with_errors(ok_json("Mutation", "the add is durable"))}},
            "/v1/namespaces/{ns}/counters/{counter}/add-and-get": {"post": {
                "operationId": "AddAndGetCount", "parameters": counter_params(), "requestBody": body("AddBody"),
                "responses": with_errors(ok_json("AddAndGet", "the count including this add"))}},
            "/v1/namespaces/{ns}/counters/{counter}": {"get": {
                "operationId": "GetCount",
                "parameters": [counter_params()[0].clone(), counter_params()[1].clone(),
                    {"name": "window", "in": "query", "schema": {"type": "string"}, "description": "a duration such as `1h`: answer the windowed count instead, how much was added in that window before now (clears not subtracted; as_of null)"}],
                "responses": with_errors(ok_json("Count", "the count"))}},
            "/v1/namespaces/{ns}/counters/{counter}/clear": {"post": {
                "operationId": "ClearCount", "parameters": counter_params(), "requestBody": body("ClearBody"),
                "responses": with_errors(ok_json("Mutation", "the clear is durable"))}},
            "/v1/namespaces/{ns}/counters": {"get": {
                "operationId": "ListCounters",
                "parameters": [ns_param()[0].clone(),
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}, "description": "only counters whose names start with it"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}},
                    {"name": "page_token", "in": "query", "schema": {"type": "string"}, "description": "a previous page's next_page_token"}],
                "responses": with_errors(ok_json("CounterPage",
                    "durable counters with their counts; a page reads at most 10,000 counters, so it may be short and still have a next_page_token"))}},
            "/v1/namespaces/{ns}/counters/{counter}/events": {"get": {
                "operationId": "ListEvents",
                "parameters": [counter_params()[0].clone(), counter_params()[1].clone(),
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "events generated at or after this time (default: the oldest kept)"},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "events generated before this time (default: every one)"},
                    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}},
                    {"name": "page_token", "in": "query", "schema": {"type": "string"}, "description": "a previous page's next_page_token"}],
                "responses": with_errors(ok_json("EventPage",
                    "the counter's events, oldest first; best_effort counters keep none"))}},
            "/v1/namespaces/{ns}/counters/{counter}/series": {"get": {
                "operationId": "GetCountSeries",
                "parameters": [counter_params()[0].clone(), counter_params()[1].clone(),
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "start of the range (default: `last` before `to`)"},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "end of the range (default: now)"},
                    {"name": "last", "in": "query", "schema": {"type": "string"}, "description": "instead of from: how far back from `to`, e.g. `1h` (default 1h)"},
                    {"name": "step", "in": "query", "schema": {"type": "string"}, "description": "bucket length, e.g. `1m` (default 1m; at least 1ms, at most 10,000 buckets)"}],
                "responses": with_errors(ok_json("Series",
                    "the counter's adds per bucket, from the events still kept; best_effort counters keep none (FAILED_PRECONDITION); more than 5,000,000 events in the range is OUT_OF_RANGE"))}},
            "/v1/counters:batchAdd": {"post": {
                "operationId": "BatchAddCount", "requestBody": body("BatchAddBody"),
                "responses": with_errors(ok_json("BatchAddResults",
                    "one result per add, in order; each is the add-and-get answer or that item's error"))}},
            "/v1/counters:batchGet": {"post": {
                "operationId": "BatchGetCount", "requestBody": body("BatchGetBody"),
                "responses": with_errors(ok_json("BatchGetResults", "one result per read, in order"))}},
            "/v1/namespaces/{ns}": {
                "put": {"operationId": "PutNamespace", "parameters": ns_param(), "requestBody": body("NamespaceConfigPatch"),
                        "responses": with_errors(json!({
                            "200": {"description": "updated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Namespace"}}}},
                            "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Namespace"}}}}}))},
                "get": {"operationId": "GetNamespace", "parameters": ns_param(),
                        "responses": with_errors(ok_json("Namespace", "the namespace"))},
                "delete": {"operationId": "DeleteNamespace", "parameters": ns_param(),
                           "responses": with_errors(json!({"204": {"description": "deleted with all its counters"}}))}
            },
            "/v1/namespaces": {"get": {"operationId": "ListNamespaces",
                "responses": with_errors(ok_json("NamespaceList", "every namespace"))}},
            "/metrics": {"get": {"operationId": "Metrics", "responses": text("Prometheus metrics")}},
            "/healthz": {"get": {"operationId": "Health", "responses": ok_json("Status", "the process is up")}},
            "/readyz": {"get": {"operationId": "Ready", "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
                "503": {"description": "shutting down, or the store can no longer write until a restart (`status` \"not writable\" with a `reason`)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}}}},
            "/openapi.json": {"get": {"operationId": "OpenApi", "responses": {"200": {"description": "this document"}}}},
            "/ui": {"get": {"operationId": "Ui", "responses": {"200": {"description": "the dashboard page (HTML)"}}}},
            "/ui/app.js": {"get": {"operationId": "UiScript", "responses": {"200": {"description": "the dashboard's script"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "one of the tokens in [auth]; needed only when authentication is on"}},
            "responses": {"Error": {"description": "the request was refused or failed; nothing was written unless the code is UNAVAILABLE or INTERNAL (retry a mutation with the same token)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": codes,
                        "description": "every code but UNAVAILABLE and INTERNAL means nothing was written; after those two a mutation may have been, so retry it with the same token"},
                    "message": {"type": "string"}}}}},
                "IdempotencyToken": {"type": "object", "additionalProperties": false, "required": ["token"],
                    "description": "A retry with the same token within the namespace's idempotency_window applies once, whatever generation_time it carries.",
                    "properties": {
                    "token": {"type": "string", "minLength": 1, "maxLength": 128},
                    "generation_time": {"type": "string", "format": "date-time", "description": "the server's clock when absent; answers carry the time the first arrival fixed"}}},
                "AddBody": {"type": "object", "additionalProperties": false, "properties": {
                    "delta": {"type": "integer", "format": "int64", "default": 1},
                    "idempotency_token": {"$ref": "#/components/schemas/IdempotencyToken"}}},
                "ClearBody": {"type": "object", "additionalProperties": false, "properties": {
                    "idempotency_token": {"$ref": "#/components/schemas/IdempotencyToken"}}},
                "Mutation": {"type": "object", "properties": {
                    "applied": {"type": "boolean", "description": "false if the token had been applied already"},
                    "idempotency_token": {"oneOf": [{"$ref": "#/components/schemas/IdempotencyToken"}, {"type": "null"}]}}},
                "Count": {"type": "object", "properties": {
                    "namespace": {"type": "string"}, "counter_name": {"type": "string"},
                    "count": {"type": "integer", "format": "int64"},
                    "counter_type": {"$ref": "#/components/schemas/CounterType"},
                    "as_of": {"type": ["string", "null"], "format": "date-time"}}},
                "CounterPage": {"type": "object", "properties": {
                    "counters": {"type": "array", "items": {"type": "object", "properties": {
                        "counter_name": {"type": "string"}, "count": {"type": "integer", "format": "int64"},
                        "counter_type": {"$ref": "#/components/schemas/CounterType"},
                        "as_of": {"type": ["string", "null"], "format": "date-time"}}}},
                    "next_page_token": {"type": ["string", "null"]}}},
                "Series": {"type": "object", "properties": {
                    "buckets": {"type": "array", "items": {"type": "object", "properties": {
                        "start": {"type": "string", "format": "date-time"},
                        "added": {"type": "integer", "format": "int64", "description": "the sum of the deltas of the adds in the bucket; clears are counted, not subtracted"},
                        "adds": {"type": "integer"},
                        "clears": {"type": "integer"},
                        "folded": {"type": "boolean", "description": "the checkpoint covers the whole bucket"},
                        "retained": {"type": "boolean", "description": "the whole bucket is within the namespace's retention"}}}},
                    "total": {"type": "integer", "format": "int64", "description": "the sum of the buckets: how much was added in the range"},
                    "kept_since": {"type": "string", "format": "date-time", "description": "events before it may have been deleted by retention"},
                    "step": {"type": "string"}}},
                "EventPage": {"type": "object", "properties": {
                    "events": {"type": "array", "items": {"type": "object", "properties": {
                        "generation_time": {"type": "string", "format": "date-time"},
                        "token": {"type": "string"},
                        "kind": {"type": "string", "enum": ["add", "clear"]},
                        "delta": {"type": "integer", "format": "int64", "description": "0 for a clear"},
                        "folded": {"type": "boolean", "description": "whether the counter's checkpoint covers it"}}}},
                    "next_page_token": {"type": ["string", "null"]}}},
                "AddAndGet": {"allOf": [{"$ref": "#/components/schemas/Count"}, {"$ref": "#/components/schemas/Mutation"}]},
                "CounterType": {"type": "string", "enum": ["best_effort", "eventual", "accurate"]},
                "BatchAddBody": {"type": "object", "additionalProperties": false, "required": ["adds"], "properties": {
                    "adds": {"type": "array", "maxItems": 1000, "items": {"type": "object", "additionalProperties": false,
                        "required": ["namespace", "counter_name"], "properties": {
                        "namespace": {"type": "string"}, "counter_name": {"type": "string"},
                        "delta": {"type": "integer", "format": "int64", "default": 1},
                        "idempotency_token": {"$ref": "#/components/schemas/IdempotencyToken"}}}}}},
                "BatchGetBody": {"type": "object", "additionalProperties": false, "required": ["gets"], "properties": {
                    "gets": {"type": "array", "maxItems": 1000, "items": {"type": "object", "additionalProperties": false,
                        "required": ["namespace", "counter_name"], "properties": {
                        "namespace": {"type": "string"}, "counter_name": {"type": "string"}}}}}},
                "BatchAddResults": {"type": "object", "properties": {"results": {"type": "array", "items": {
                    "oneOf": [{"$ref": "#/components/schemas/AddAndGet"}, {"$ref": "#/components/schemas/Error"}]}}}},
                "BatchGetResults": {"type": "object", "properties": {"results": {"type": "array", "items": {
                    "oneOf": [{"$ref": "#/components/schemas/Count"}, {"$ref": "#/components/schemas/Error"}]}}}},
                "NamespaceConfigPatch": {"type": "object", "additionalProperties": false, "properties": {
                    "counter_type": {"$ref": "#/components/schemas/CounterType"},
                    "accept_limit": duration, "clock_skew": duration, "coalesce": duration,
                    "retention": duration, "cache_ttl": duration, "best_effort_ttl": duration,
                    "idempotency_window": duration}},
                "Namespace": {"type": "object", "properties": {"name": {"type": "string"},
                    "config": {"$ref": "#/components/schemas/NamespaceConfigPatch"}}},
                "NamespaceList": {"type": "object", "properties": {"namespaces": {"type": "array", "items": {"$ref": "#/components/schemas/Namespace"}}}},
                "Status": {"type": "object", "properties": {"status": {"type": "string"}, "reason": {"type": "string"}}}
            }
        }
    })
}

/// `GET /openapi.json`
pub async fn document() -> Json<Value> {
    Json(spec())
}
