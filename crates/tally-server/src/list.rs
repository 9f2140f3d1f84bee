//! `ListCounters` as every door asks for it: the namespace, a name prefix, a page size and
//! the token of where the last page stopped, checked once here.

use tally_core::{CounterName, Namespace};
use tally_engine::{CounterPage, Engine, MAX_LIST_LIMIT};

use crate::error::ApiError;

/// Counters in a page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// A checked `ListCounters` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The namespace listed.
    pub namespace: Namespace,
    /// Only counters whose names start with this.
    pub prefix: String,
    /// At most this many counters.
    pub size: usize,
    /// Where the page starts (exclusive).
    pub after: Option<CounterName>,
}

impl Page {
    /// Checks a request: `size` 0 means [`DEFAULT_PAGE_SIZE`], more than [`MAX_LIST_LIMIT`]
    /// or less than 0 is refused, and an empty token starts from the beginning.
    pub fn parse(namespace: &str, prefix: &str, size: i64, page_token: &str) -> Result<Self, ApiError> {
        let size = match usize::try_from(size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= MAX_LIST_LIMIT => n,
            _ => {
                return Err(ApiError::invalid(format!("page size {size} is outside 1..={MAX_LIST_LIMIT}")));
            }
        };
        let after = match page_token {
            "" => None,
            token => Some(CounterName::new(token).map_err(|e| {
                ApiError::invalid(format!("page token {token:?} is not a counter name: {e}"))
            })?),
        };
        Ok(Self { namespace: Namespace::new(namespace)?, prefix: prefix.to_owned(), size, after })
    }

    /// Reads the page.
    pub async fn run(&self, engine: &Engine) -> Result<CounterPage, ApiError> {
        Ok(engine.list_counters(&self.namespace, &self.prefix, self.after.as_ref(), self.size).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_are_checked_once() {
        let page = Page::parse("shop", "orders:", 0, "").expect("valid");
        assert_eq!((page.size, page.after), (DEFAULT_PAGE_SIZE, None));
        assert_eq!(
            Page::parse("shop", "", 7, "orders:9").expect("valid").after.map(|n| n.to_string()),
            Some("orders:9".into())
        );
        let err = Page::parse("shop", "", 1001, "").expect_err("too many");
        assert!(err.message.contains("page size 1001 is outside 1..=1000"), "{err}");
        assert!(Page::parse("shop", "", -1, "").is_err());
        assert!(Page::parse("no way", "", 1, "").is_err());
    }
}
