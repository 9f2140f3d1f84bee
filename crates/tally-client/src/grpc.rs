//! The gRPC door: `tally.v1.CounterService` and `NamespaceService`.

use std::time::Duration;

use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tally_proto::v1::namespace_service_client::NamespaceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::{Add, Applied, ClientError, ConnectOptions, Door, Token};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `authorization: Bearer <token>` to every call when a token is given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the bearer token.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// One channel to a server's gRPC door (tonic reconnects it as needed).
#[derive(Clone)]
pub struct GrpcDoor {
    counters: CounterServiceClient<Authed>,
    namespaces: NamespaceServiceClient<Authed>,
}

impl GrpcDoor {
    pub(crate) async fn connect(addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let url = crate::url(addr, "http");
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Config(format!("bad gRPC address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        let endpoint = with_tls(endpoint, options)?;
        let channel = if options.lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.map_err(|e| ClientError::NoAnswer {
                door: Door::Grpc,
                message: format!("cannot reach a tally server at {url}: {}", source_text(&e)),
            })?
        };
        let bearer = Bearer(
            options
                .auth_token
                .as_ref()
                .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
                .transpose()
                .map_err(|_| ClientError::Config("the auth token must be printable ASCII".into()))?,
        );
        Ok(Self {
            counters: CounterServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            namespaces: NamespaceServiceClient::with_interceptor(channel, bearer),
        })
    }

    /// The generated `CounterService` client.
    pub fn counters(&self) -> CounterServiceClient<Authed> {
        self.counters.clone()
    }

    /// The generated `NamespaceService` client.
    pub fn namespaces_service(&self) -> NamespaceServiceClient<Authed> {
        self.namespaces.clone()
    }

    pub(crate) async fn add(&self, add: Add<'_>) -> Result<Applied, ClientError> {
        let r = self.counters().add_count(add_request(add)).await.map_err(refused)?.into_inner();
        Ok(Applied { applied: r.applied, token: echoed(r.idempotency_token), count: None })
    }

    pub(crate) async fn add_and_get(&self, add: Add<'_>) -> Result<i64, ClientError> {
        let a = add_request(add);
        let request = pb::AddAndGetCountRequest {
            namespace: a.namespace,
            counter_name: a.counter_name,
            delta: a.delta,
            idempotency_token: a.idempotency_token,
        };
        Ok(self.counters().add_and_get_count(request).await.map_err(refused)?.into_inner().count)
    }

    pub(crate) async fn get(&self, namespace: &str, counter: &str) -> Result<i64, ClientError> {
        let request =
            pb::GetCountRequest { namespace: namespace.into(), counter_name: counter.into(), window: None };
        Ok(self.counters().get_count(request).await.map_err(refused)?.into_inner().count)
    }

    pub(crate) async fn clear(
        &self,
        namespace: &str,
        counter: &str,
        token: Option<&Token>,
    ) -> Result<Applied, ClientError> {
        let request = pb::ClearCountRequest {
            namespace: namespace.into(),
            counter_name: counter.into(),
            idempotency_token: token.map(token_to_proto),
        };
        let r = self.counters().clear_count(request).await.map_err(refused)?.into_inner();
        Ok(Applied { applied: r.applied, token: echoed(r.idempotency_token), count: None })
    }

    pub(crate) async fn batch_add(
        &self,
        adds: &[Add<'_>],
    ) -> Result<Vec<Result<Applied, ClientError>>, ClientError> {
        let request = pb::BatchAddCountRequest { adds: adds.iter().copied().map(add_request).collect() };
        let results = self.counters().batch_add_count(request).await.map_err(refused)?.into_inner().results;
        Ok(results.into_iter().map(batch_result).collect())
    }

    pub(crate) async fn namespaces(&self) -> Result<Vec<String>, ClientError> {
        let r = self.namespaces_service().list_namespaces(pb::ListNamespacesRequest {}).await;
        Ok(r.map_err(refused)?.into_inner().namespaces.into_iter().map(|n| n.name).collect())
    }
}

#[cfg(feature = "tls")]
fn with_tls(endpoint: Endpoint, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let Some(pem) = &options.tls_ca_pem else { return Ok(endpoint) };
    let tls =
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
    endpoint.tls_config(tls).map_err(|e| ClientError::Config(format!("TLS: {e}")))
}

#[cfg(not(feature = "tls"))]
fn with_tls(endpoint: Endpoint, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    match options.tls_ca_pem {
        Some(_) => Err(ClientError::Config("TLS needs tally-client's feature `tls`".into())),
        None => Ok(endpoint),
    }
}

fn add_request(add: Add<'_>) -> pb::AddCountRequest {
    pb::AddCountRequest {
        namespace: add.namespace.into(),
        counter_name: add.counter.into(),
        delta: add.delta,
        idempotency_token: add.token.map(token_to_proto),
    }
}

fn token_to_proto(token: &Token) -> pb::IdempotencyToken {
    pb::IdempotencyToken {
        token: token.token.clone(),
        generation_time: token.generation_time.map(tally_proto::time::to_proto),
    }
}

/// The token an answer echoes (one without a readable time is left out).
fn echoed(token: Option<pb::IdempotencyToken>) -> Option<Token> {
    let token = token?;
    let time = tally_proto::time::from_proto(token.generation_time.as_ref()?).ok()?;
    Some(Token::at(token.token, time))
}

fn batch_result(result: pb::BatchAddCountResult) -> Result<Applied, ClientError> {
    match result.result {
        Some(pb::batch_add_count_result::Result::Added(r)) => {
            Ok(Applied { applied: r.applied, token: echoed(r.idempotency_token), count: Some(r.count) })
        }
        Some(pb::batch_add_count_result::Result::Error(e)) => Err(item_error(e)),
        None => {
            Err(ClientError::NoAnswer { door: Door::Grpc, message: "a batch item without a result".into() })
        }
    }
}

fn item_error(e: pb::ItemError) -> ClientError {
    match e.code.parse() {
        Ok(code) => ClientError::Refused { code, message: e.message, http_status: None },
        Err(_) => ClientError::NoAnswer {
            door: Door::Grpc,
            message: format!("a batch item refused with unknown code {:?}: {}", e.code, e.message),
        },
    }
}

fn refused(status: tonic::Status) -> ClientError {
    ClientError::from_grpc(&status)
}

/// An error with its chain of causes, which tonic's transport errors keep apart.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
