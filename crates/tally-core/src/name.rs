//! Names of namespaces and counters, validated once at the edge.

use std::fmt;
use std::sync::Arc;

/// Longest namespace name, in bytes. Short enough to be a key prefix on every event.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest counter name, in bytes. Long enough for composite names such as `video:123:views:2026-11`.
pub const MAX_COUNTER_NAME_LEN: usize = 256;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// `namespace` or `counter name`.
        what: &'static str,
    },
    /// The name is longer than its limit.
    #[error("{what} is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// `namespace` or `counter name`.
        what: &'static str,
        /// The length seen.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character that is not allowed.
    #[error("{what} {name:?} contains {ch:?}, which is not allowed: {rule}")]
    BadCharacter {
        /// `namespace` or `counter name`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The first offending character.
        ch: char,
        /// The rule the name must follow.
        rule: &'static str,
    },
}

/// The first control character of `text`. Names and tokens are nearly always ASCII, whose
/// control characters are the bytes below 0x20 and 0x7f, found without decoding; only other
/// text is decoded (it may hold the C1 controls, U+0080 to U+009F). Every add parses a name,
/// so this is on the hot path of each front door.
pub(crate) fn first_control(text: &str) -> Option<char> {
    match text.is_ascii() {
        true => text.bytes().find(u8::is_ascii_control).map(char::from),
        false => text.chars().find(|c| c.is_control()),
    }
}

/// A namespace: a group of counters sharing one configuration.
///
/// 1 to 64 characters from `A-Z a-z 0-9 _ - .`. A colon is never allowed, so the Redis key
/// `ns:counter` always splits at its first colon.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// The built-in namespace that always exists.
    pub const DEFAULT: &'static str = "default";
    const RULE: &'static str = "use letters, digits, '_', '-' and '.'";

    /// Validates and wraps a namespace name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        const WHAT: &str = "namespace";
        if name.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if name.len() > MAX_NAMESPACE_LEN {
            return Err(NameError::TooLong { what: WHAT, len: name.len(), max: MAX_NAMESPACE_LEN });
        }
        if let Some(ch) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(NameError::BadCharacter { what: WHAT, name: name.to_owned(), ch, rule: Self::RULE });
        }
        Ok(Self(name.into()))
    }

    /// The built-in `default` namespace.
    pub fn default_namespace() -> Self {
        Self(Self::DEFAULT.into())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the built-in `default` namespace.
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }
}

/// The name of one counter inside a namespace.
///
/// 1 to 256 bytes of UTF-8 without control characters. Colons, slashes and spaces are allowed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterName(Arc<str>);

impl CounterName {
    const RULE: &'static str = "control characters (newlines, tabs, NUL, ...) are not allowed";

    /// Validates and wraps a counter name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        const WHAT: &str = "counter name";
        if name.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if name.len() > MAX_COUNTER_NAME_LEN {
            return Err(NameError::TooLong { what: WHAT, len: name.len(), max: MAX_COUNTER_NAME_LEN });
        }
        if let Some(ch) = first_control(name) {
            return Err(NameError::BadCharacter { what: WHAT, name: name.to_owned(), ch, rule: Self::RULE });
        }
        Ok(Self(name.into()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A counter's full identity: its namespace and its name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The namespace the counter lives in.
    pub namespace: Namespace,
    /// The counter's name inside it.
    pub counter: CounterName,
}

impl CounterKey {
    /// Pairs a namespace and a counter name.
    pub fn new(namespace: Namespace, counter: CounterName) -> Self {
        Self { namespace, counter }
    }

    /// Parses `namespace:counter`; a key without a colon is in the `default` namespace.
    ///
    /// This is the Redis key convention: the split is at the first colon, so counter names may
    /// contain further colons.
    pub fn parse_joined(joined: &str) -> Result<Self, NameError> {
        match joined.split_once(':') {
            Some((ns, counter)) => Ok(Self::new(Namespace::new(ns)?, CounterName::new(counter)?)),
            None => Ok(Self::new(Namespace::default_namespace(), CounterName::new(joined)?)),
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    )*};
}
display_as_str!(Namespace, CounterName);

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.counter)
    }
}

impl fmt::Debug for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_accepts_the_documented_alphabet() {
        assert!(Namespace::new("ads-prod_v2.eu").is_ok());
        assert_eq!(Namespace::new(&"a".repeat(64)).map(|n| n.as_str().len()), Ok(64));
    }

    #[test]
    fn namespace_refuses_colon_space_empty_and_long_names() {
        assert!(matches!(Namespace::new("a:b"), Err(NameError::BadCharacter { ch: ':', .. })));
        assert!(matches!(Namespace::new("a b"), Err(NameError::BadCharacter { ch: ' ', .. })));
        assert!(matches!(Namespace::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(Namespace::new(&"a".repeat(65)), Err(NameError::TooLong { len: 65, .. })));
    }

    #[test]
    fn counter_name_allows_colons_and_refuses_control_characters() {
        assert!(CounterName::new("video:123:views").is_ok());
        assert!(matches!(CounterName::new("a\nb"), Err(NameError::BadCharacter { ch: '\n', .. })));
        assert!(matches!(CounterName::new(&"é".repeat(129)), Err(NameError::TooLong { len: 258, .. })));
    }

    #[test]
    fn the_first_control_character_is_found_in_ascii_and_in_other_text() {
        assert_eq!(first_control("plain:ascii-name"), None);
        assert_eq!(first_control("del\u{7f}then\ttab"), Some('\u{7f}'));
        assert_eq!(first_control("café"), None);
        assert_eq!(first_control("café\u{85}\n"), Some('\u{85}'));
        assert!(matches!(CounterName::new("é\u{9f}"), Err(NameError::BadCharacter { ch: '\u{9f}', .. })));
    }

    #[test]
    fn joined_key_splits_at_first_colon_and_defaults_namespace() {
        let key = CounterKey::parse_joined("ads:video:1").expect("valid");
        assert_eq!((key.namespace.as_str(), key.counter.as_str()), ("ads", "video:1"));
        let key = CounterKey::parse_joined("plain").expect("valid");
        assert_eq!((key.namespace.as_str(), key.counter.as_str()), ("default", "plain"));
        assert!(CounterKey::parse_joined("ads:").is_err());
    }

    #[test]
    fn error_messages_name_the_input_and_the_rule() {
        let err = Namespace::new("bad/ns").expect_err("slash is refused");
        assert_eq!(
            err.to_string(),
            "namespace \"bad/ns\" contains '/', which is not allowed: use letters, digits, '_', '-' and '.'"
        );
    }
}
