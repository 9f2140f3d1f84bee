//! Namespace routes: the control plane.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Serialize;
use tally_core::Operation;
use tally_core::{ErrorCode, Namespace, NamespaceConfig, NamespaceConfigPatch};

use super::{HttpState, WirePath, json_body};
use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::metrics::observe;

/// A namespace with its full configuration.
#[derive(Debug, Serialize)]
pub struct NamespaceJson {
    name: String,
    config: NamespaceConfig,
}

fn namespace_json(name: &Namespace, config: NamespaceConfig) -> NamespaceJson {
    NamespaceJson { name: name.to_string(), config }
}

/// `PUT /v1/namespaces/{ns}`: creates the namespace (201) or updates it (200). Fields the
/// body leaves out take their defaults on create and keep their values on update.
pub async fn put_namespace(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath(ns): WirePath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<NamespaceJson>), ApiError> {
    observe("http", Operation::PutNamespace, async {
        let name = Namespace::new(&ns)?;
        who.require(Access::Admin, &name)?;
        let patch: NamespaceConfigPatch = json_body(body)?;
        match state.engine.get_namespace(&name).await {
            Ok(current) => {
                let updated = state.engine.update_namespace(&name, patch.apply_to(&current)).await?;
                Ok((StatusCode::OK, Json(namespace_json(&name, updated))))
            }
            Err(e) if e.code() == ErrorCode::NotFound => {
                let created =
                    state.engine.create_namespace(&name, patch.apply_to(&NamespaceConfig::default())).await?;
                Ok((StatusCode::CREATED, Json(namespace_json(&name, created))))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// `GET /v1/namespaces/{ns}`
pub async fn get_namespace(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath(ns): WirePath<String>,
) -> Result<Json<NamespaceJson>, ApiError> {
    observe("http", Operation::GetNamespace, async {
        let name = Namespace::new(&ns)?;
        who.require(Access::Read, &name)?;
        Ok(Json(namespace_json(&name, state.engine.get_namespace(&name).await?)))
    })
    .await
}

/// `DELETE /v1/namespaces/{ns}`: 204 when deleted.
pub async fn delete_namespace(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
    WirePath(ns): WirePath<String>,
) -> Result<StatusCode, ApiError> {
    observe("http", Operation::DeleteNamespace, async {
        let name = Namespace::new(&ns)?;
        who.require(Access::Admin, &name)?;
        state.engine.delete_namespace(&name).await?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /v1/namespaces`
pub async fn list_namespaces(
    State(state): State<HttpState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    observe("http", Operation::ListNamespaces, async {
        let all = state.engine.list_namespaces().await?;
        let list: Vec<_> = all
            .into_iter()
            .filter(|(n, _)| who.allows(Access::Read, n))
            .map(|(n, c)| namespace_json(&n, c))
            .collect();
        Ok(Json(serde_json::json!({ "namespaces": list })))
    })
    .await
}
