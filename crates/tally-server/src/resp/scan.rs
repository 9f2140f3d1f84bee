//! `SCAN` and `KEYS`: counter keys (`namespace:counter`) a page at a time, over the
//! namespaces the connection may read, through the engine's `ListCounters` scan.
//!
//! A cursor is a number standing for where the last page stopped (a namespace and a counter
//! name), kept in a table the door's connections share, so a client may continue on another
//! connection. The table is bounded: the oldest cursors are forgotten first, and a forgotten
//! cursor is refused (`ERR invalid cursor`), as is any number the table never gave out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tally_core::{CounterName, Namespace};
use tally_engine::Engine;

use super::commands::{Session, err, integer, upper};
use super::reply::Reply;
use crate::auth::Access;
use crate::error::ApiError;

/// Cursors kept at once.
const MAX_CURSORS: usize = 4_096;
/// `SCAN`'s default `COUNT`, as in Redis.
const DEFAULT_COUNT: usize = 10;
/// Most keys one `KEYS` answers; beyond it, `SCAN` is the way.
pub const MAX_KEYS: usize = 10_000;

/// Where a scan goes on from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    namespace: Namespace,
    after: Option<CounterName>,
}

/// The door's cursors.
#[derive(Default)]
pub struct Cursors {
    inner: Mutex<CursorTable>,
}

#[derive(Default)]
struct CursorTable {
    next: u64,
    positions: HashMap<u64, Position>,
    order: VecDeque<u64>,
}

impl Cursors {
    fn remember(&self, position: Position) -> u64 {
        let mut table = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        table.next += 1;
        let id = table.next;
        if table.order.len() >= MAX_CURSORS
            && let Some(oldest) = table.order.pop_front()
        {
            table.positions.remove(&oldest);
        }
        table.positions.insert(id, position);
        table.order.push_back(id);
        id
    }

    fn take(&self, id: u64) -> Option<Position> {
        let table = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        table.positions.get(&id).cloned()
    }
}

/// What a scan looks for.
struct Filter {
    pattern: Vec<u8>,
    /// The namespace the pattern names literally (`user:*`), if any.
    namespace: Option<String>,
    /// The literal start of the pattern.
    literal: Vec<u8>,
}

impl Filter {
    fn new(pattern: &[u8]) -> Self {
        let special =
            pattern.iter().position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')).unwrap_or(pattern.len());
        let literal = pattern[..special].to_vec();
        let namespace = literal
            .iter()
            .position(|&b| b == b':')
            .and_then(|colon| std::str::from_utf8(&literal[..colon]).ok().map(str::to_owned));
        Self { pattern: pattern.to_vec(), namespace, literal }
    }

    fn may_hold(&self, namespace: &Namespace) -> bool {
        match &self.namespace {
            Some(ns) => ns == namespace.as_str(),
            None => {
                let name = namespace.as_str().as_bytes();
                let n = self.literal.len().min(name.len());
                name[..n] == self.literal[..n]
            }
        }
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT n]`.
pub async fn scan(engine: &Engine, session: &Session, cursor: &Bytes, options: &[Bytes]) -> Reply {
    let request = match parse_scan(cursor, options) {
        Ok(request) => request,
        Err(e) => return err(e),
    };
    let (cursor, pattern, count) = request;
    let start = match cursor {
        0 => None,
        id => match session.door.cursors.take(id) {
            Some(position) => Some(position),
            None => {
                return Reply::Error(format!(
                    "ERR invalid cursor {id}: unknown or forgotten; start again from 0"
                ));
            }
        },
    };
    let filter = Filter::new(&pattern);
    match step(engine, session, &filter, start, count).await {
        Ok((keys, next)) => {
            let cursor = next.map_or(0, |position| session.door.cursors.remember(position));
            Reply::Array(vec![
                Reply::text(cursor.to_string()),
                Reply::Array(keys.into_iter().map(Reply::text).collect()),
            ])
        }
        Err(e) => err(e),
    }
}

/// `KEYS pattern`: every key `SCAN` would list, at most [`MAX_KEYS`].
pub async fn keys(engine: &Engine, session: &Session, pattern: &Bytes) -> Reply {
    let filter = Filter::new(pattern);
    let (mut all, mut position) = (Vec::new(), None);
    loop {
        match step(engine, session, &filter, position, 1_000).await {
            Ok((keys, next)) => {
                all.extend(keys);
                if all.len() > MAX_KEYS {
                    return Reply::Error(format!("ERR KEYS would list more than {MAX_KEYS} keys; use SCAN"));
                }
                match next {
                    Some(next) => position = Some(next),
                    None => return Reply::Array(all.into_iter().map(Reply::text).collect()),
                }
            }
            Err(e) => return err(e),
        }
    }
}

fn parse_scan(cursor: &Bytes, options: &[Bytes]) -> Result<(u64, Vec<u8>, usize), ApiError> {
    let cursor =
        u64::try_from(integer(cursor)?).map_err(|_| ApiError::invalid("cursor must not be negative"))?;
    let (mut pattern, mut count) = (b"*".to_vec(), DEFAULT_COUNT);
    let mut rest = options.iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or_else(|| ApiError::invalid("SCAN option without a value"))?;
        match upper(option).as_str() {
            "MATCH" => pattern = value.to_vec(),
            "COUNT" => {
                count = usize::try_from(integer(value)?)
                    .ok()
                    .filter(|n| (1..=tally_engine::MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::invalid("COUNT must be 1 to 1000"))?;
            }
            // Every counter reads as a string.
            "TYPE" if upper(value) == "STRING" => {}
            "TYPE" => pattern = Vec::new(),
            other => return Err(ApiError::invalid(format!("unknown SCAN option {other}"))),
        }
    }
    Ok((cursor, pattern, count))
}

/// One page: keys from `start` (the first namespace when `None`) until about `count` keys
/// were found or the namespaces ran out; the position to go on from, if any.
async fn step(
    engine: &Engine,
    session: &Session,
    filter: &Filter,
    start: Option<Position>,
    count: usize,
) -> Result<(Vec<String>, Option<Position>), ApiError> {
    let principal = session.principal.as_ref();
    let readable = |ns: &Namespace| principal.is_some_and(|p| p.require(Access::Read, ns).is_ok());
    let mut namespaces: Vec<Namespace> = engine
        .list_namespaces()
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|ns| filter.may_hold(ns) && readable(ns))
        .collect();
    namespaces.sort();
    let mut position = match start {
        Some(position) => position,
        None => match namespaces.first() {
            Some(first) => Position { namespace: first.clone(), after: None },
            None => return Ok((Vec::new(), None)),
        },
    };
    let mut keys = Vec::new();
    loop {
        if filter.pattern.is_empty() {
            return Ok((keys, None));
        }
        let ns = position.namespace.clone();
        let wanted = |name: &str| glob(&filter.pattern, format!("{ns}:{name}").as_bytes());
        let page = engine.counter_names(&ns, &wanted, position.after.as_ref(), count).await?;
        keys.extend(page.names.iter().map(|name| format!("{ns}:{name}")));
        if let Some(after) = page.next {
            return Ok((keys, Some(Position { namespace: ns, after: Some(after) })));
        }
        let Some(next) = namespaces.iter().find(|n| **n > ns) else { return Ok((keys, None)) };
        position = Position { namespace: next.clone(), after: None };
        if keys.len() >= count {
            return Ok((keys, Some(position)));
        }
    }
}

/// Redis' glob: `*` any run, `?` any byte, `[abc]`, `[^abc]`, `[a-z]`, `\\x` a literal `x`.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, end)) = class(&pattern[p..], text[t])
                        && matched
                    {
                        p += end;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class that starts `pattern` (`[...]`), and the class's length.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = pattern.get(1) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (i < pattern.len()).then_some((matched != negated, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_redis_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "user:1", true),
            ("user:*", "user:1000:visits", true),
            ("user:*", "users:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*:visits", "user:1:visits", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("[", "[", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), *expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn a_pattern_names_a_namespace_only_through_its_literal_start() {
        assert_eq!(Filter::new(b"user:*").namespace.as_deref(), Some("user"));
        assert_eq!(Filter::new(b"us*:x").namespace, None);
        let filter = Filter::new(b"us*");
        assert!(filter.may_hold(&Namespace::new("user").expect("ns")));
        assert!(!filter.may_hold(&Namespace::new("shop").expect("ns")));
    }
}
