//! The Redis-protocol door: a key is `namespace:counter`; `TALLY.ADD`/`TALLY.CLEAR` carry a
//! token, `INCRBY`/`DEL` do not; `GET` reads.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::sync::Mutex;

use crate::{Add, Applied, ClientError, ConnectOptions, Door, Token};

/// One multiplexed connection, made on first use and made again after it broke.
#[derive(Clone)]
pub(crate) struct RespDoor {
    client: redis::Client,
    auth_token: Option<String>,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl RespDoor {
    pub(crate) fn new(addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        if options.tls_ca_pem.is_some() {
            return Err(ClientError::Config("this client offers TLS on the gRPC door only".into()));
        }
        let client = redis::Client::open(crate::url(addr, "redis"))
            .map_err(|e| ClientError::Config(format!("bad Redis-protocol address {addr:?}: {e}")))?;
        Ok(Self { client, auth_token: options.auth_token.clone(), connection: Arc::default() })
    }

    /// The connection, connected (and authenticated) if it is not.
    async fn connection(&self) -> Result<MultiplexedConnection, ClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut c = self.client.get_multiplexed_async_connection().await.map_err(no_answer)?;
        if let Some(token) = &self.auth_token {
            redis::cmd("AUTH").arg(token).query_async::<()>(&mut c).await.map_err(failed)?;
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection: the next call makes a new one.
    pub(crate) async fn reset(&self) {
        *self.connection.lock().await = None;
    }

    /// Sends one command and reads its answer as a `T`.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, ClientError> {
        let mut c = self.connection().await?;
        match command.query_async(&mut c).await {
            Ok(value) => Ok(value),
            Err(e) => {
                let error = failed(e);
                if matches!(error, ClientError::NoAnswer { .. }) {
                    self.reset().await;
                }
                Err(error)
            }
        }
    }

    pub(crate) async fn add(&self, add: Add<'_>) -> Result<Applied, ClientError> {
        match add.token {
            Some(token) => {
                let applied: i64 = self.query(&tally_add(add, token)).await?;
                Ok(Applied { applied: applied == 1, token: None, count: None })
            }
            None => {
                let count: i64 = self.query(&incrby(add)).await?;
                Ok(Applied { applied: true, token: None, count: Some(count) })
            }
        }
    }

    pub(crate) async fn add_and_get(&self, add: Add<'_>) -> Result<i64, ClientError> {
        if add.token.is_some() {
            return Err(ClientError::Unsupported {
                door: Door::Resp,
                what: "add and read back with a token",
            });
        }
        self.query(&incrby(add)).await
    }

    pub(crate) async fn get(&self, namespace: &str, counter: &str) -> Result<i64, ClientError> {
        let value: Option<String> = self.query(redis::cmd("GET").arg(key(namespace, counter))).await?;
        let Some(text) = value else { return Ok(0) };
        text.parse().map_err(|_| ClientError::NoAnswer {
            door: Door::Resp,
            message: format!("GET answered {text:?}, not a count"),
        })
    }

    pub(crate) async fn clear(
        &self,
        namespace: &str,
        counter: &str,
        token: Option<&Token>,
    ) -> Result<Applied, ClientError> {
        let key = key(namespace, counter);
        let command = match token {
            Some(t) => {
                let mut c = redis::cmd("TALLY.CLEAR");
                c.arg(&key).arg(&t.token);
                if let Some(time) = t.generation_time {
                    c.arg(time.as_millis());
                }
                c
            }
            None => {
                let mut c = redis::cmd("DEL");
                c.arg(&key);
                c
            }
        };
        let applied: i64 = self.query(&command).await?;
        Ok(Applied { applied: applied == 1, token: None, count: None })
    }

    /// One pipeline: each add is `TALLY.ADD` with a token, `INCRBY` without.
    pub(crate) async fn batch_add(
        &self,
        adds: &[Add<'_>],
    ) -> Result<Vec<Result<Applied, ClientError>>, ClientError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for add in adds {
            pipe.add_command(match add.token {
                Some(token) => tally_add(*add, token),
                None => incrby(*add),
            });
        }
        let mut c = self.connection().await?;
        let values: Vec<Value> = match pipe.query_async(&mut c).await {
            Ok(values) => values,
            Err(e) => {
                self.reset().await;
                return Err(no_answer(e));
            }
        };
        Ok(adds.iter().zip(values).map(|(add, value)| item(add.token.is_some(), value)).collect())
    }
}

fn key(namespace: &str, counter: &str) -> String {
    format!("{namespace}:{counter}")
}

fn tally_add(add: Add<'_>, token: &Token) -> redis::Cmd {
    let mut c = redis::cmd("TALLY.ADD");
    c.arg(key(add.namespace, add.counter)).arg(add.delta).arg(&token.token);
    if let Some(time) = token.generation_time {
        c.arg(time.as_millis());
    }
    c
}

fn incrby(add: Add<'_>) -> redis::Cmd {
    let mut c = redis::cmd("INCRBY");
    c.arg(key(add.namespace, add.counter)).arg(add.delta);
    c
}

/// One answer of a pipeline of adds: `TALLY.ADD` answers 1 or 0, `INCRBY` the count.
fn item(tokened: bool, value: Value) -> Result<Applied, ClientError> {
    match value {
        Value::Int(n) if tokened => Ok(Applied { applied: n == 1, token: None, count: None }),
        Value::Int(count) => Ok(Applied { applied: true, token: None, count: Some(count) }),
        Value::ServerError(e) => Err(server_error(e.code(), e.details().unwrap_or_default())),
        other => {
            Err(ClientError::NoAnswer { door: Door::Resp, message: format!("an add answered {other:?}") })
        }
    }
}

/// An error of the redis crate: a server error is a refusal, anything else no answer.
fn failed(e: RedisError) -> ClientError {
    match e.code() {
        Some(code) if !e.is_io_error() => server_error(code, e.detail().unwrap_or_default()),
        _ => no_answer(e),
    }
}

/// `-CODE message`: one of Tally's codes is a refusal; `-ERR` (and any other word) is the
/// door refusing the request itself.
fn server_error(code: &str, detail: &str) -> ClientError {
    match code.parse() {
        Ok(code) => ClientError::Refused { code, message: detail.to_owned(), http_status: None },
        Err(_) => ClientError::Protocol { door: Door::Resp, message: format!("{code} {detail}") },
    }
}

fn no_answer(e: RedisError) -> ClientError {
    ClientError::NoAnswer { door: Door::Resp, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::ErrorCode;

    #[test]
    fn tally_codes_are_refusals_and_err_is_the_door_s_own() {
        let refused = server_error("OUT_OF_RANGE", "adding 1 to counter ns:c would overflow");
        assert_eq!(refused.code(), Some(ErrorCode::OutOfRange));
        assert_eq!(refused.message(), "adding 1 to counter ns:c would overflow");
        let protocol = server_error("ERR", "unknown command 'SET'");
        assert!(matches!(protocol, ClientError::Protocol { .. }));
        assert!(protocol.wrote_nothing());
    }

    #[test]
    fn pipeline_answers_read_by_the_command_that_made_them() {
        assert_eq!(item(true, Value::Int(0)).map(|a| a.applied), Ok(false));
        assert_eq!(item(false, Value::Int(7)).map(|a| a.count), Ok(Some(7)));
        assert!(matches!(item(false, Value::Nil), Err(ClientError::NoAnswer { .. })));
    }
}
