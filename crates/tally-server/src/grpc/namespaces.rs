//! `tally.v1.NamespaceService`.

use tally_core::Namespace;
use tally_core::Operation;
use tally_engine::Engine;
use tally_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::convert::{namespace_to_proto, patch_from_proto};
use crate::error::ApiError;
use crate::metrics::observe;

/// The namespace control plane over gRPC.
pub struct GrpcNamespaces {
    engine: Engine,
}

impl GrpcNamespaces {
    /// Serves `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

fn reply<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(ApiError::into_status)
}

#[tonic::async_trait]
impl pb::namespace_service_server::NamespaceService for GrpcNamespaces {
    async fn create_namespace(
        &self,
        request: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        reply(
            observe("grpc", Operation::CreateNamespace, async {
                let name = Namespace::new(&r.name)?;
                who?.require(Access::Admin, &name)?;
                let config = crate::convert::config_from_proto(r.config.as_ref())?;
                let created = self.engine.create_namespace(&name, config).await?;
                Ok(namespace_to_proto(&name, &created))
            })
            .await,
        )
    }

    async fn get_namespace(
        &self,
        request: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        reply(
            observe("grpc", Operation::GetNamespace, async {
                let name = Namespace::new(&r.name)?;
                who?.require(Access::Read, &name)?;
                Ok(namespace_to_proto(&name, &self.engine.get_namespace(&name).await?))
            })
            .await,
        )
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let who = super::principal(&request);
        reply(
            observe("grpc", Operation::ListNamespaces, async {
                let who = who?;
                let all = self.engine.list_namespaces().await?;
                Ok(pb::ListNamespacesResponse {
                    namespaces: all
                        .iter()
                        .filter(|(n, _)| who.allows(Access::Read, n))
                        .map(|(n, c)| namespace_to_proto(n, c))
                        .collect(),
                })
            })
            .await,
        )
    }

    async fn update_namespace(
        &self,
        request: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        reply(
            observe("grpc", Operation::UpdateNamespace, async {
                let name = Namespace::new(&r.name)?;
                who?.require(Access::Admin, &name)?;
                let patch = patch_from_proto(r.config.as_ref())?;
                let current = self.engine.get_namespace(&name).await?;
                let updated = self.engine.update_namespace(&name, patch.apply_to(&current)).await?;
                Ok(namespace_to_proto(&name, &updated))
            })
            .await,
        )
    }

    async fn delete_namespace(
        &self,
        request: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<pb::DeleteNamespaceResponse>, Status> {
        let who = super::principal(&request);
        let r = request.into_inner();
        reply(
            observe("grpc", Operation::DeleteNamespace, async {
                let name = Namespace::new(&r.name)?;
                who?.require(Access::Admin, &name)?;
                self.engine.delete_namespace(&name).await?;
                Ok(pb::DeleteNamespaceResponse {})
            })
            .await,
        )
    }
}
