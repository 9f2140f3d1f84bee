//! Idempotency tokens: what makes a retried mutation apply at most once.

use std::fmt;
use std::sync::Arc;

use crate::time::Timestamp;

/// Longest token, in bytes. A UUID is 36; 128 leaves room for source-prefixed ids.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token string is empty.
    #[error("idempotency token must not be empty")]
    Empty,
    /// The token string is too long.
    #[error("idempotency token is {len} bytes long; the limit is {MAX_TOKEN_LEN} bytes")]
    TooLong {
        /// The length seen.
        len: usize,
    },
    /// The token string holds a control character.
    #[error("idempotency token {token:?} contains a control character")]
    BadCharacter {
        /// The token as given.
        token: String,
    },
}

/// `{token, generation_time}`: a mutation's identity.
///
/// Two mutations with the same token string and generation time are the same mutation: the
/// second is a retry and changes nothing. The generation time is also the event's place in
/// the counter's history, and decides whether the write window still accepts it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyToken {
    generation_time: Timestamp,
    token: Arc<str>,
}

impl IdempotencyToken {
    /// Validates a client-supplied token.
    pub fn new(token: &str, generation_time: Timestamp) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        if crate::name::first_control(token).is_some() {
            return Err(TokenError::BadCharacter { token: token.to_owned() });
        }
        Ok(Self { generation_time, token: token.into() })
    }

    /// The token string.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the client generated the mutation.
    pub fn generation_time(&self) -> Timestamp {
        self.generation_time
    }
}

impl fmt::Debug for IdempotencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", &*self.token, self.generation_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_validation_refuses_empty_long_and_control() {
        let t = Timestamp::from_millis(1);
        assert_eq!(IdempotencyToken::new("", t), Err(TokenError::Empty));
        assert_eq!(IdempotencyToken::new(&"x".repeat(129), t), Err(TokenError::TooLong { len: 129 }));
        assert!(matches!(IdempotencyToken::new("a\0b", t), Err(TokenError::BadCharacter { .. })));
        assert!(IdempotencyToken::new("6f1c0a2e-4b1d-4a5e-9d7c-2f3b1e0a9c88", t).is_ok());
    }

    #[test]
    fn control_characters_are_refused_in_ascii_and_in_other_text() {
        let t = Timestamp::from_millis(1);
        for bad in ["tab\there", "del\u{7f}", "é-next-line-\u{85}", "\u{9f}"] {
            assert!(
                matches!(IdempotencyToken::new(bad, t), Err(TokenError::BadCharacter { .. })),
                "{bad:?} was accepted"
            );
        }
        for good in ["srv-00000000000000ff-0123456789abcdef", "café-ünïcode", "~!@#$%^&*()"] {
            assert!(IdempotencyToken::new(good, t).is_ok(), "{good:?} was refused");
        }
    }
}
