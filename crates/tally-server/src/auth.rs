//! Authentication and authorization: bearer tokens from the config file, each with scopes.
//!
//! Off by default. When on, every request but the health checks (`/healthz`, the gRPC health
//! service) must carry a configured token: HTTP `Authorization: Bearer <token>`, gRPC metadata
//! `authorization: Bearer <token>`, RESP `AUTH <token>` (or `HELLO 3 AUTH <user> <token>`).
//! A missing or unknown token is `UNAUTHENTICATED`; a token whose scopes do not cover the
//! operation on that namespace is `PERMISSION_DENIED`. Either way nothing is changed.
//!
//! A scope is `<access>:<namespace>` with access `read`, `write` or `admin` (each including
//! the ones before it) and `*` for every namespace. Counter reads need `read`, counter
//! mutations `write`, creating, updating and deleting a namespace `admin`; listing namespaces
//! shows those the token can read; metrics, readiness, the OpenAPI document and reflection need
//! any valid token. The scope `peer` (no namespace) is what peer traffic needs
//! (`tally.v1.PeerService`): instances send `[auth] peer_token`, which every peer lists with it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_core::{ErrorCode, Namespace};

use crate::error::ApiError;

/// `[auth]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Whether requests must carry a token.
    pub enabled: bool,
    /// The token this instance sends to its peers (rollup routing); it must be one of `tokens`
    /// on every peer.
    pub peer_token: String,
    /// The accepted tokens.
    pub tokens: Vec<TokenEntry>,
}

/// One accepted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for logs and error messages; never the secret.
    pub name: String,
    /// The secret, at least 16 characters.
    pub token: String,
    /// What the token may do, e.g. `["write:web", "read:*"]`.
    pub scopes: Vec<String>,
}

/// What an operation needs, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read counters and namespace settings.
    Read,
    /// Mutate counters.
    Write,
    /// Create, update and delete namespaces.
    Admin,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "administer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    access: Access,
    /// `None` is every namespace.
    namespace: Option<Namespace>,
}

impl Scope {
    fn parse(text: &str) -> Result<Self, String> {
        let (access, namespace) =
            text.split_once(':').ok_or_else(|| format!("scope {text:?} must look like read:<namespace>"))?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            "admin" => Access::Admin,
            other => return Err(format!("scope {text:?}: access {other:?} is not read, write or admin")),
        };
        let namespace = match namespace {
            "*" => None,
            name => Some(Namespace::new(name).map_err(|e| format!("scope {text:?}: {e}"))?),
        };
        Ok(Self { access, namespace })
    }
}

/// The token of an `Authorization` header (`Bearer <token>`); `None` without the header.
fn bearer(header: Option<&str>) -> Result<Option<&str>, ApiError> {
    let Some(value) = header else { return Ok(None) };
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim);
    token.map(Some).ok_or_else(|| {
        ApiError::new(ErrorCode::Unauthenticated, "the authorization header must be `Bearer <token>`")
    })
}

/// The scope of instances' tokens: they may call `PeerService`.
const PEER_SCOPE: &str = "peer";

/// Who is asking: the token a request was authenticated with, or everyone when auth is off.
#[derive(Debug, Clone)]
pub struct Principal {
    name: Arc<str>,
    /// `None`: unrestricted (authentication is off).
    scopes: Option<Arc<[Scope]>>,
    /// Whether it has the `peer` scope (always, when authentication is off).
    peer: bool,
}

impl Principal {
    /// The principal of every request when authentication is off.
    pub fn unrestricted() -> Self {
        Self { name: Arc::from("anonymous"), scopes: None, peer: true }
    }

    /// `PERMISSION_DENIED` unless this principal is another instance (the `peer` scope).
    pub fn require_peer(&self) -> Result<(), ApiError> {
        match self.peer {
            true => Ok(()),
            false => Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("token {:?} is not a peer's: PeerService needs the scope \"peer\"", self.name),
            )),
        }
    }

    /// Whether this principal may do `access` on `namespace`.
    pub fn allows(&self, access: Access, namespace: &Namespace) -> bool {
        self.scopes.as_ref().is_none_or(|scopes| {
            scopes.iter().any(|s| s.access >= access && s.namespace.as_ref().is_none_or(|n| n == namespace))
        })
    }

    /// `PERMISSION_DENIED` unless this principal may do `access` on `namespace`.
    pub fn require(&self, access: Access, namespace: &Namespace) -> Result<(), ApiError> {
        if self.allows(access, namespace) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("token {:?} may not {} namespace {namespace}", self.name, access.verb()),
            ))
        }
    }
}

/// Who presents a token: the client's address (when known) and the door it came through.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The client's IP address; `None` where the door cannot tell.
    pub address: Option<std::net::IpAddr>,
    /// `http`, `grpc`, `resp` or `ops`, for metrics.
    pub door: &'static str,
}

/// The configured tokens.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    tokens: Vec<(Vec<u8>, Principal)>,
    failures: crate::failed_auth::FailedAttempts,
}

impl Authenticator {
    /// Everyone may do everything.
    pub fn disabled() -> Self {
        Self { enabled: false, tokens: Vec::new(), failures: Default::default() }
    }

    /// Checks and loads `[auth]`.
    pub fn from_config(section: &AuthSection) -> anyhow::Result<Self> {
        if !section.enabled {
            return Ok(Self::disabled());
        }
        anyhow::ensure!(!section.tokens.is_empty(), "[auth] is enabled but lists no tokens");
        let mut tokens = Vec::with_capacity(section.tokens.len());
        for entry in &section.tokens {
            anyhow::ensure!(
                entry.token.len() >= 16,
                "[auth] token {:?} is shorter than 16 characters",
                entry.name
            );
            anyhow::ensure!(
                !tokens.iter().any(|(t, _): &(Vec<u8>, Principal)| t == entry.token.as_bytes()),
                "[auth] token {:?} is listed twice",
                entry.name
            );
            let peer = entry.scopes.iter().any(|s| s == PEER_SCOPE);
            let scopes = entry
                .scopes
                .iter()
                .filter(|s| *s != PEER_SCOPE)
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("[auth] token {:?}: {e}", entry.name))?;
            let name = Arc::from(entry.name.as_str());
            let principal = Principal { name, scopes: Some(scopes.into()), peer };
            tokens.push((entry.token.as_bytes().to_vec(), principal));
        }
        Ok(Self { enabled: true, tokens, failures: Default::default() })
    }

    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The principal a presented token stands for. A caller whose address failed too often
    /// lately is refused `RESOURCE_EXHAUSTED` without a check (see `failed_auth.rs`); every
    /// failure is counted in `tally_auth_failures_total{door}`.
    pub fn authenticate(&self, presented: Option<&str>, caller: Caller) -> Result<Principal, ApiError> {
        self.counted(caller, || self.check_token(presented))
    }

    /// Runs `check` unless `caller`'s address failed too often lately, and counts its failure.
    fn counted(
        &self,
        caller: Caller,
        check: impl FnOnce() -> Result<Principal, ApiError>,
    ) -> Result<Principal, ApiError> {
        if !self.enabled {
            return Ok(Principal::unrestricted());
        }
        let now = std::time::Instant::now();
        if let Some(address) = caller.address
            && let Err(wait) = self.failures.check(address, now)
        {
            metrics::counter!("tally_auth_throttled_total", "door" => caller.door).increment(1);
            let message = format!(
                "{} failed authentications from {address} within {}s: retry in {}s",
                crate::failed_auth::MAX_FAILURES,
                crate::failed_auth::WINDOW.as_secs(),
                wait.as_secs().max(1)
            );
            return Err(ApiError::new(ErrorCode::ResourceExhausted, message));
        }
        let checked = check();
        if checked.is_err() {
            metrics::counter!("tally_auth_failures_total", "door" => caller.door).increment(1);
            if let Some(address) = caller.address {
                self.failures.record(address, now);
            }
        }
        checked
    }

    fn check_token(&self, presented: Option<&str>) -> Result<Principal, ApiError> {
        let presented = presented.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "this server requires a token: Authorization: Bearer <token>",
            )
        })?;
        // Every configured token is compared, in constant time each, so the time taken does
        // not tell which prefix matched.
        let mut found = None;
        for (token, principal) in &self.tokens {
            if constant_time_eq(token, presented.as_bytes()) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the token is not valid"))
    }

    /// Authenticates an `Authorization` header value (`Bearer <token>`); a value of another
    /// shape counts as a failure too.
    pub fn authenticate_header(&self, header: Option<&str>, caller: Caller) -> Result<Principal, ApiError> {
        self.counted(caller, || self.check_token(bearer(header)?))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).expect("ns")
    }

    const LOCAL: Caller = Caller { address: None, door: "test" };

    fn auth() -> Authenticator {
        let entry = |name: &str, token: &str, scopes: &[&str]| TokenEntry {
            name: name.to_owned(),
            token: token.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        Authenticator::from_config(&AuthSection {
            enabled: true,
            peer_token: String::new(),
            tokens: vec![
                entry("ingest", "ingest-0123456789abcdef", &["write:web"]),
                entry("dash", "dash-0123456789abcdef", &["read:*"]),
                entry("ops", "ops-0123456789abcdef", &["admin:*"]),
            ],
        })
        .expect("valid")
    }

    #[test]
    fn scopes_include_weaker_access_and_stop_at_their_namespace() {
        let auth = auth();
        let ingest = auth.authenticate(Some("ingest-0123456789abcdef"), LOCAL).expect("known");
        assert!(ingest.allows(Access::Write, &ns("web")) && ingest.allows(Access::Read, &ns("web")));
        assert!(!ingest.allows(Access::Admin, &ns("web")) && !ingest.allows(Access::Read, &ns("app")));
        let dash = auth.authenticate_header(Some("Bearer dash-0123456789abcdef"), LOCAL).expect("known");
        assert!(dash.allows(Access::Read, &ns("any")) && !dash.allows(Access::Write, &ns("any")));
        let err = dash.require(Access::Write, &ns("web")).expect_err("read only");
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains("\"dash\"") && err.message.contains("web"), "{}", err.message);
        let ops = auth.authenticate(Some("ops-0123456789abcdef"), LOCAL).expect("known");
        assert!(ops.allows(Access::Admin, &ns("web")));
    }

    #[test]
    fn missing_wrong_and_malformed_tokens_are_unauthenticated() {
        let auth = auth();
        for header in [None, Some("Bearer nope-0123456789abcdef"), Some("Basic abc"), Some("Bearer ")] {
            let err = auth.authenticate_header(header, LOCAL).expect_err("refused");
            assert_eq!(err.code, ErrorCode::Unauthenticated, "{header:?}");
        }
        // A header of another shape says so (the throttling round answered it as an unknown token).
        let err = auth.authenticate_header(Some("Basic abc"), LOCAL).expect_err("refused");
        assert!(err.message.contains("Bearer <token>"), "{}", err.message);
        assert!(
            Authenticator::disabled().authenticate(None, LOCAL).expect("off").allows(Access::Admin, &ns("x"))
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_the_token_named() {
        let config = |token: &str, scope: &str| AuthSection {
            enabled: true,
            peer_token: String::new(),
            tokens: vec![TokenEntry { name: "t1".into(), token: token.into(), scopes: vec![scope.into()] }],
        };
        for (section, needle) in [
            (config("short", "read:*"), "shorter than 16"),
            (config("long-enough-token-1", "read"), "must look like"),
            (config("long-enough-token-1", "delete:*"), "not read, write or admin"),
            (config("long-enough-token-1", "read:bad name"), "scope"),
            (AuthSection { enabled: true, ..AuthSection::default() }, "no tokens"),
        ] {
            let err = Authenticator::from_config(&section).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    /// Failed AUTHs and 401s were not limited: a client could guess tokens as fast as it could
    /// send them.
    #[test]
    fn regression_failed_authentications_are_limited_per_address() {
        let entry = TokenEntry {
            name: "t".into(),
            token: "valid-0123456789abcdef".into(),
            scopes: vec!["read:*".into()],
        };
        let auth = Authenticator::from_config(&AuthSection {
            enabled: true,
            peer_token: String::new(),
            tokens: vec![entry],
        })
        .expect("valid");
        let guesser = Caller { address: Some(std::net::IpAddr::from([192, 0, 2, 1])), door: "test" };
        let other = Caller { address: Some(std::net::IpAddr::from([192, 0, 2, 2])), door: "test" };
        for i in 0..crate::failed_auth::MAX_FAILURES {
            let err = auth.authenticate(Some(&format!("guess-{i:016}")), guesser).expect_err("wrong");
            assert_eq!(err.code, ErrorCode::Unauthenticated);
        }
        let err = auth.authenticate(Some("valid-0123456789abcdef"), guesser).expect_err("locked out");
        assert_eq!(err.code, ErrorCode::ResourceExhausted, "{}", err.message);
        assert!(err.message.contains("192.0.2.1") && err.message.contains("retry in"), "{}", err.message);
        auth.authenticate(Some("valid-0123456789abcdef"), other).expect("another address is not locked out");
    }
}
