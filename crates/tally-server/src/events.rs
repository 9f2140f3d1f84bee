//! `ListEvents` as every door asks for it: the counter, the time range, a page size and the
//! token of where the last page stopped, checked once here.

use tally_core::{CounterKey, EventKind, Timestamp};
use tally_engine::{Engine, EventPage, MAX_EVENTS_PAGE};
use tally_store::EventCursor;

use crate::convert;
use crate::error::ApiError;

/// Events in a page when the request names no size.
pub const DEFAULT_EVENTS_PAGE: usize = 100;

/// A checked `ListEvents` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsRequest {
    /// The counter.
    pub key: CounterKey,
    /// Events generated at or after this time.
    pub from: Timestamp,
    /// Events generated before this time.
    pub until: Timestamp,
    /// At most this many events.
    pub size: usize,
    /// Where the page starts (exclusive).
    pub after: Option<EventCursor>,
}

impl EventsRequest {
    /// Checks a request: `size` 0 means [`DEFAULT_EVENTS_PAGE`], more than
    /// [`MAX_EVENTS_PAGE`] or less than 0 is refused; no `from` is the oldest event, no `to`
    /// the newest; an empty token starts from the beginning.
    pub fn parse(
        namespace: &str,
        counter: &str,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        size: i64,
        page_token: &str,
    ) -> Result<Self, ApiError> {
        let size = match usize::try_from(size) {
            Ok(0) => DEFAULT_EVENTS_PAGE,
            Ok(n) if n <= MAX_EVENTS_PAGE => n,
            _ => {
                return Err(ApiError::invalid(format!("page size {size} is outside 1..={MAX_EVENTS_PAGE}")));
            }
        };
        let (from, until) = (from.unwrap_or(Timestamp::MIN), to.unwrap_or(Timestamp::MAX));
        if from > until {
            return Err(ApiError::invalid(format!("from {from} is after to {until}")));
        }
        let after = match page_token {
            "" => None,
            token => Some(cursor(token)?),
        };
        Ok(Self { key: convert::counter_key(namespace, counter)?, from, until, size, after })
    }

    /// Reads the page.
    pub async fn run(&self, engine: &Engine) -> Result<EventPage, ApiError> {
        Ok(engine.list_events(&self.key, self.from, self.until, self.after.as_ref(), self.size).await?)
    }
}

/// The token that resumes after `cursor`: its time in microseconds, a colon, its token.
pub fn page_token(cursor: &EventCursor) -> String {
    format!("{}:{}", cursor.generation_time.as_micros(), cursor.token)
}

fn cursor(text: &str) -> Result<EventCursor, ApiError> {
    let bad = || ApiError::invalid(format!("page token {text:?} is not one this server gave"));
    let (micros, token) = text.split_once(':').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    Ok(EventCursor { generation_time: Timestamp::from_micros(micros), token: token.to_owned() })
}

/// `add` or `clear`, and the delta (0 for a clear), as both doors write them.
pub fn kind_and_delta(kind: EventKind) -> (&'static str, i64) {
    match kind {
        EventKind::Add(delta) => ("add", delta),
        EventKind::Clear => ("clear", 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_once_and_page_tokens_round_trip() {
        let r = EventsRequest::parse("shop", "orders", None, None, 0, "").expect("valid");
        assert_eq!(
            (r.size, r.from, r.until, r.after),
            (DEFAULT_EVENTS_PAGE, Timestamp::MIN, Timestamp::MAX, None)
        );
        let cursor = EventCursor { generation_time: Timestamp::from_micros(-5), token: "a:b".into() };
        let again =
            EventsRequest::parse("shop", "orders", None, None, 3, &page_token(&cursor)).expect("valid");
        assert_eq!(again.after, Some(cursor), "a token may hold colons");
        let err = EventsRequest::parse("shop", "orders", None, None, 1001, "").expect_err("too many");
        assert!(err.message.contains("page size 1001 is outside 1..=1000"), "{err}");
        assert!(EventsRequest::parse("shop", "orders", None, None, 1, "nonsense").is_err());
        let (late, early) = (Some(Timestamp::from_micros(9)), Some(Timestamp::from_micros(1)));
        assert!(EventsRequest::parse("shop", "orders", late, early, 1, "").is_err(), "from after to");
        assert!(EventsRequest::parse("no way", "orders", None, None, 1, "").is_err());
    }
}
