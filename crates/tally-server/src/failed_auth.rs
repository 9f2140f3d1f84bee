//! Failed authentications, counted per client address: past [`MAX_FAILURES`] within
//! [`WINDOW`], an address is refused without a token check until its window ends, so a client
//! guessing tokens gets a few dozen guesses a minute, not thousands a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications one address may make within [`WINDOW`].
pub const MAX_FAILURES: u32 = 20;
/// How long failures are counted, and how long an address over the limit waits.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once; past it the table starts over (a flood of addresses gets a
/// fresh allowance each, which the per-address limit cannot prevent anyway).
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The failures of every address that failed lately.
#[derive(Debug, Default)]
pub struct FailedAttempts {
    table: Mutex<HashMap<IpAddr, Window>>,
}

impl FailedAttempts {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` while `client` is over the limit at `now`.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.table().get(&client) {
            Some(w) if w.failures >= MAX_FAILURES && now < w.started + WINDOW => {
                Err(w.started + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `client` at `now`.
    pub fn record(&self, client: IpAddr, now: Instant) {
        let mut table = self.table();
        if table.len() >= MAX_ADDRESSES && !table.contains_key(&client) {
            table.clear();
        }
        let window = table.entry(client).or_insert(Window { started: now, failures: 0 });
        if now >= window.started + WINDOW {
            *window = Window { started: now, failures: 0 };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_the_limit_waits_out_its_window_and_others_do_not() {
        let attempts = FailedAttempts::default();
        let (guesser, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(attempts.check(guesser, start).is_ok());
            attempts.record(guesser, start);
        }
        let wait = attempts.check(guesser, start + Duration::from_secs(10)).expect_err("locked out");
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        assert!(attempts.check(other, start).is_ok(), "another address is not affected");
        assert!(attempts.check(guesser, start + WINDOW).is_ok(), "the window ended");
        attempts.record(guesser, start + WINDOW);
        assert!(attempts.check(guesser, start + WINDOW).is_ok(), "a new window starts with one failure");
    }
}
