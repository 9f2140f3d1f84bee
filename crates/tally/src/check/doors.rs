//! Sending the checker's operations through the three front doors, and reading counts back,
//! with every answer sorted into what it says about the write.

use std::time::Duration;

use serde_json::json;
use tally_core::ErrorCode;
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tonic::transport::Channel;

use super::history::{Door, Mutation};

/// How long one attempt may take before the client gives up on it (and it is indeterminate).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One instance's addresses (fixed for the whole run, across restarts).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub http: String,
    pub grpc: String,
    pub resp: String,
}

/// A counter the checker drives.
#[derive(Debug, Clone)]
pub struct Counter {
    pub namespace: String,
    pub name: String,
}

/// One mutation with its idempotency token, as every attempt sends it.
#[derive(Clone, Copy)]
pub struct Mutate<'a> {
    pub counter: &'a Counter,
    pub mutation: Mutation,
    pub token: &'a str,
    /// The token's `generation_time`, in Unix milliseconds; `None`: the server's clock.
    pub time_ms: Option<i64>,
}

/// What one attempt's answer says about the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Acknowledged (applied now or before): it is written.
    Acked,
    /// Refused with a code that says nothing was written by this attempt.
    Refused(String),
    /// Shed before anything started (`RESOURCE_EXHAUSTED`): nothing written, try again.
    Shed,
    /// No answer, or `UNAVAILABLE`: it may have been written.
    Unknown(String),
}

/// What an error code says about the attempt: shed, certainly not written
/// ([`ErrorCode::wrote_nothing`]), or maybe written (`UNAVAILABLE`, `INTERNAL`, and whatever
/// is not a Tally code, such as a transport failure).
fn classify(code: &str, message: String) -> Answer {
    match code.parse::<ErrorCode>() {
        Ok(ErrorCode::ResourceExhausted) => Answer::Shed,
        Ok(c) if c.wrote_nothing() => Answer::Refused(code.to_owned()),
        _ => Answer::Unknown(format!("{code} {message}")),
    }
}

/// One client's connections to every instance. Each checker client owns one, so nothing here
/// is shared between clients.
pub struct Doors {
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    grpc: Vec<CounterServiceClient<Channel>>,
    resp: Vec<Option<redis::aio::MultiplexedConnection>>,
}

impl Doors {
    pub fn new(endpoints: &[Endpoint]) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build()?;
        let grpc = endpoints
            .iter()
            .map(|e| {
                let channel = Channel::from_shared(format!("http://{}", e.grpc))?
                    .connect_timeout(Duration::from_secs(1))
                    // No channel timeout: its status could read as the server's
                    // DEADLINE_EXCEEDED (not written); `send` times attempts out itself.
                    .connect_lazy();
                Ok(CounterServiceClient::new(channel))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { endpoints: endpoints.to_vec(), http, grpc, resp: vec![None; endpoints.len()] })
    }

    /// Sends `m` through `door` of `instance`.
    pub async fn send(&mut self, door: Door, instance: usize, m: &Mutate<'_>) -> Answer {
        let attempt = async {
            match door {
                Door::Grpc => self.send_grpc(instance, m).await,
                Door::Http => self.send_http(instance, m).await,
                Door::Resp => self.send_resp(instance, m).await,
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(answer) => answer,
            Err(_) => {
                self.resp[instance] = None;
                Answer::Unknown(format!("no answer within {ATTEMPT_TIMEOUT:?}"))
            }
        }
    }

    async fn send_grpc(&mut self, instance: usize, m: &Mutate<'_>) -> Answer {
        let Mutate { counter, mutation, token, time_ms } = *m;
        let idempotency_token = Some(pb::IdempotencyToken {
            token: token.to_owned(),
            generation_time: time_ms.map(|ms| prost_types::Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
        });
        let client = &mut self.grpc[instance];
        let result = match mutation {
            Mutation::Add(delta) => client
                .add_count(pb::AddCountRequest {
                    namespace: counter.namespace.clone(),
                    counter_name: counter.name.clone(),
                    delta,
                    idempotency_token,
                })
                .await
                .map(drop),
            Mutation::Clear => client
                .clear_count(pb::ClearCountRequest {
                    namespace: counter.namespace.clone(),
                    counter_name: counter.name.clone(),
                    idempotency_token,
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Answer::Acked,
            Err(status) => {
                classify(crate::client::grpc_code_name(status.code()).as_str(), status.message().to_owned())
            }
        }
    }

    async fn send_http(&mut self, instance: usize, m: &Mutate<'_>) -> Answer {
        let Mutate { counter, mutation, token, time_ms } = *m;
        let token = match time_ms {
            Some(ms) => {
                json!({"token": token, "generation_time": tally_core::Timestamp::from_millis(ms).to_string()})
            }
            None => json!({"token": token}),
        };
        let (verb, body) = match mutation {
            Mutation::Add(delta) => ("add", json!({"delta": delta, "idempotency_token": token})),
            Mutation::Clear => ("clear", json!({"idempotency_token": token})),
        };
        let url = format!(
            "http://{}/v1/namespaces/{}/counters/{}/{verb}",
            self.endpoints[instance].http, counter.namespace, counter.name
        );
        match self.http.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => Answer::Acked,
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
                if code.is_empty() {
                    Answer::Unknown(format!("HTTP {status} without an error code"))
                } else {
                    classify(&code, message)
                }
            }
            Err(e) => Answer::Unknown(format!("HTTP: {e}")),
        }
    }

    async fn resp_connection(
        &mut self,
        instance: usize,
    ) -> Result<redis::aio::MultiplexedConnection, String> {
        if let Some(c) = &self.resp[instance] {
            return Ok(c.clone());
        }
        let url = format!("redis://{}/", self.endpoints[instance].resp);
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let connection = client.get_multiplexed_async_connection().await.map_err(|e| format!("RESP: {e}"))?;
        self.resp[instance] = Some(connection.clone());
        Ok(connection)
    }

    async fn send_resp(&mut self, instance: usize, m: &Mutate<'_>) -> Answer {
        let Mutate { counter, mutation, token, time_ms } = *m;
        let mut connection = match self.resp_connection(instance).await {
            Ok(c) => c,
            Err(e) => return Answer::Unknown(e),
        };
        let key = format!("{}:{}", counter.namespace, counter.name);
        let mut cmd = match mutation {
            Mutation::Add(delta) => {
                let mut c = redis::cmd("TALLY.ADD");
                c.arg(&key).arg(delta);
                c
            }
            Mutation::Clear => {
                let mut c = redis::cmd("TALLY.CLEAR");
                c.arg(&key);
                c
            }
        };
        cmd.arg(token);
        if let Some(ms) = time_ms {
            cmd.arg(ms);
        }
        match cmd.query_async::<i64>(&mut connection).await {
            Ok(_) => Answer::Acked,
            Err(e) => match e.code() {
                Some(code) if e.kind() != redis::ErrorKind::Io => classify(code, e.to_string()),
                _ => {
                    self.resp[instance] = None;
                    Answer::Unknown(format!("RESP: {e}"))
                }
            },
        }
    }

    /// A counter's count as `instance` answers it through `door`.
    pub async fn get(&mut self, door: Door, instance: usize, counter: &Counter) -> Result<i64, String> {
        let read = async {
            match door {
                Door::Grpc => self.grpc[instance]
                    .get_count(pb::GetCountRequest {
                        namespace: counter.namespace.clone(),
                        counter_name: counter.name.clone(),
                    })
                    .await
                    .map(|r| r.into_inner().count)
                    .map_err(|s| format!("{:?} {}", s.code(), s.message())),
                Door::Http => {
                    let url = format!(
                        "http://{}/v1/namespaces/{}/counters/{}",
                        self.endpoints[instance].http, counter.namespace, counter.name
                    );
                    let response = self.http.get(&url).send().await.map_err(|e| e.to_string())?;
                    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
                    body["count"].as_i64().ok_or_else(|| format!("no count in {body}"))
                }
                Door::Resp => {
                    let mut connection = self.resp_connection(instance).await?;
                    let key = format!("{}:{}", counter.namespace, counter.name);
                    let text: String =
                        redis::cmd("GET").arg(&key).query_async(&mut connection).await.map_err(|e| {
                            self.resp[instance] = None;
                            e.to_string()
                        })?;
                    text.parse().map_err(|_| format!("GET answered {text:?}"))
                }
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, read).await.unwrap_or_else(|_| Err("read timed out".to_owned()))
    }
}
