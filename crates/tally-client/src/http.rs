//! The HTTP/JSON door: `/v1/namespaces/{ns}/counters/{counter}/...`.

use serde_json::{Value, json};
use tally_core::Timestamp;

use crate::{Add, Applied, ClientError, ConnectOptions, Door, Token};

/// A pool of HTTP/1.1 connections to one server.
#[derive(Clone)]
pub(crate) struct HttpDoor {
    client: reqwest::Client,
    base: String,
}

impl HttpDoor {
    pub(crate) fn new(addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        if options.tls_ca_pem.is_some() {
            return Err(ClientError::Config("this client offers TLS on the gRPC door only".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &options.auth_token {
            let value = reqwest::header::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ClientError::Config("the auth token must be printable ASCII".into()))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { client, base: crate::url(addr, "http").trim_end_matches('/').to_owned() })
    }

    fn counter_url(&self, namespace: &str, counter: &str) -> String {
        format!("{}/v1/namespaces/{}/counters/{}", self.base, encode(namespace), encode(counter))
    }

    pub(crate) async fn add(&self, add: Add<'_>) -> Result<Applied, ClientError> {
        let url = format!("{}/add", self.counter_url(add.namespace, add.counter));
        let body = json!({"delta": add.delta, "idempotency_token": add.token.map(token_json)});
        applied(&self.call(self.client.post(url).body(body.to_string())).await?)
    }

    pub(crate) async fn add_and_get(&self, add: Add<'_>) -> Result<i64, ClientError> {
        let url = format!("{}/add-and-get", self.counter_url(add.namespace, add.counter));
        let body = json!({"delta": add.delta, "idempotency_token": add.token.map(token_json)});
        count(&self.call(self.client.post(url).body(body.to_string())).await?)
    }

    pub(crate) async fn get(&self, namespace: &str, counter: &str) -> Result<i64, ClientError> {
        count(&self.call(self.client.get(self.counter_url(namespace, counter))).await?)
    }

    pub(crate) async fn clear(
        &self,
        namespace: &str,
        counter: &str,
        token: Option<&Token>,
    ) -> Result<Applied, ClientError> {
        let url = format!("{}/clear", self.counter_url(namespace, counter));
        let body = json!({"idempotency_token": token.map(token_json)});
        applied(&self.call(self.client.post(url).body(body.to_string())).await?)
    }

    pub(crate) async fn batch_add(
        &self,
        adds: &[Add<'_>],
    ) -> Result<Vec<Result<Applied, ClientError>>, ClientError> {
        let adds: Vec<Value> = adds
            .iter()
            .map(|a| {
                json!({"namespace": a.namespace, "counter_name": a.counter, "delta": a.delta,
                       "idempotency_token": a.token.map(token_json)})
            })
            .collect();
        let url = format!("{}/v1/counters:batchAdd", self.base);
        let answer = self.call(self.client.post(url).body(json!({ "adds": adds }).to_string())).await?;
        let results = answer["results"].as_array().ok_or_else(|| unreadable(&answer))?;
        Ok(results
            .iter()
            .map(|item| match item.get("error") {
                Some(error) => Err(refusal(error, None).unwrap_or_else(|| unreadable(item))),
                None => {
                    let mut added = applied(item)?;
                    added.count = Some(count(item)?);
                    Ok(added)
                }
            })
            .collect())
    }

    pub(crate) async fn namespaces(&self) -> Result<Vec<String>, ClientError> {
        let answer = self.call(self.client.get(format!("{}/v1/namespaces", self.base))).await?;
        let list = answer["namespaces"].as_array().ok_or_else(|| unreadable(&answer))?;
        list.iter().map(|n| n["name"].as_str().map(str::to_owned).ok_or_else(|| unreadable(n))).collect()
    }

    /// Sends a request and reads its JSON answer; a refusal is read from the error body.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let no_answer =
            |e: reqwest::Error| ClientError::NoAnswer { door: Door::Http, message: e.to_string() };
        let response = request.send().await.map_err(no_answer)?;
        let status = response.status();
        let text = response.text().await.map_err(no_answer)?;
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(body);
        }
        Err(refusal(&body["error"], Some(status.as_u16())).unwrap_or_else(|| ClientError::NoAnswer {
            door: Door::Http,
            message: format!(
                "HTTP {status} without a Tally error body: {}",
                text.chars().take(200).collect::<String>()
            ),
        }))
    }
}

/// `{"code": "...", "message": "..."}` as a refusal; `None` when it is not Tally's error shape.
fn refusal(error: &Value, http_status: Option<u16>) -> Option<ClientError> {
    let code = error["code"].as_str()?.parse().ok()?;
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    Some(ClientError::Refused { code, message, http_status })
}

fn unreadable(body: &Value) -> ClientError {
    ClientError::NoAnswer { door: Door::Http, message: format!("an answer Tally does not give: {body}") }
}

fn count(body: &Value) -> Result<i64, ClientError> {
    body["count"].as_i64().ok_or_else(|| unreadable(body))
}

fn applied(body: &Value) -> Result<Applied, ClientError> {
    let applied = body["applied"].as_bool().ok_or_else(|| unreadable(body))?;
    let token = body["idempotency_token"].as_object().and_then(|t| {
        let time = Timestamp::parse_rfc3339(t.get("generation_time")?.as_str()?).ok()?;
        Some(Token::at(t.get("token")?.as_str()?, time))
    });
    Ok(Applied { applied, token, count: None })
}

fn token_json(token: &Token) -> Value {
    match token.generation_time {
        Some(time) => json!({"token": token.token, "generation_time": time.to_string()}),
        None => json!({"token": token.token}),
    }
}

/// Percent-encodes a path segment: everything but unreserved characters.
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(encode("plain-name_1.x~"), "plain-name_1.x~");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn a_body_that_is_not_tally_s_error_shape_is_no_refusal() {
        assert_eq!(refusal(&json!({"code": "TEAPOT"}), Some(418)), None);
        assert_eq!(refusal(&Value::Null, Some(502)), None);
        let r = refusal(&json!({"code": "NOT_FOUND", "message": "no namespace x"}), Some(404));
        assert_eq!(r.and_then(|e| e.code()), Some(tally_core::ErrorCode::NotFound));
    }
}
