//! Sending the checker's operations through the three front doors, and reading counts back,
//! with every answer sorted into what it says about the write.

use std::collections::HashMap;
use std::time::Duration;

use tally_client::{Client, ClientError, ConnectOptions, ErrorCode, Token};
use tally_core::Timestamp;

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

/// What a failed attempt says about the write: shed (nothing written, try again), certainly
/// not written ([`ClientError::wrote_nothing`]), or maybe written (`UNAVAILABLE`, `INTERNAL`,
/// no answer, a timeout).
fn classify(error: &ClientError) -> Answer {
    match error.code() {
        Some(ErrorCode::ResourceExhausted) => Answer::Shed,
        _ if error.wrote_nothing() => Answer::Refused(error.name().to_owned()),
        _ => Answer::Unknown(error.to_string()),
    }
}

/// One client's connections to every instance through every door, each made on first use.
/// Each checker client owns one, so nothing here is shared between clients.
pub struct Doors {
    endpoints: Vec<Endpoint>,
    clients: HashMap<(Door, usize), Client>,
}

impl Doors {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self { endpoints: endpoints.to_vec(), clients: HashMap::new() }
    }

    /// The client of `door` on `instance`. gRPC connects lazily, so an instance that is down
    /// fails the attempt, not the checker.
    async fn client(&mut self, door: Door, instance: usize) -> Result<Client, ClientError> {
        if let Some(c) = self.clients.get(&(door, instance)) {
            return Ok(c.clone());
        }
        let e = &self.endpoints[instance];
        let addr = match door {
            Door::Grpc => &e.grpc,
            Door::Http => &e.http,
            Door::Resp => &e.resp,
        };
        // The client times attempts out itself: a gRPC deadline's status could read as the
        // server's DEADLINE_EXCEEDED (not written).
        let options =
            ConnectOptions { timeout: Some(ATTEMPT_TIMEOUT), lazy: true, ..ConnectOptions::default() };
        let client = Client::connect(door, addr, &options).await?;
        self.clients.insert((door, instance), client.clone());
        Ok(client)
    }

    /// Sends `m` through `door` of `instance`.
    pub async fn send(&mut self, door: Door, instance: usize, m: &Mutate<'_>) -> Answer {
        let Mutate { counter, mutation, token, time_ms } = *m;
        let client = match self.client(door, instance).await {
            Ok(c) => c,
            Err(e) => return Answer::Unknown(e.to_string()),
        };
        let token = Token { token: token.to_owned(), generation_time: time_ms.map(Timestamp::from_millis) };
        let (ns, name) = (counter.namespace.as_str(), counter.name.as_str());
        let result = match mutation {
            Mutation::Add(delta) => client.add(ns, name, delta, Some(&token)).await,
            Mutation::Clear => client.clear(ns, name, Some(&token)).await,
        };
        match result {
            Ok(_) => Answer::Acked,
            Err(e) => classify(&e),
        }
    }

    /// A counter's count as `instance` answers it through `door`.
    pub async fn get(&mut self, door: Door, instance: usize, counter: &Counter) -> Result<i64, String> {
        let client = self.client(door, instance).await.map_err(|e| e.to_string())?;
        client.get(&counter.namespace, &counter.name).await.map_err(|e| e.to_string())
    }
}
