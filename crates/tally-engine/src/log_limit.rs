//! A warning that repeats while a condition lasts (a peer down, a store failing, a flood of
//! connections) logged at most once per period, with how many were left out in between: an
//! outage then costs a few lines a minute, not thousands.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    /// When the last line was let through, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// Lets one line through per `period`.
    pub const fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((None, 0)) }
    }

    /// `Some(left_out)` when this occurrence is to be logged (with how many were left out
    /// since the last one logged), `None` when it is left out.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, left_out) = &mut *state;
        if last.is_some_and(|last| now.duration_since(last) < self.period) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_then_the_count_of_those_left_out() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limit.check_at(start), Some(0));
        for s in 1..10 {
            assert_eq!(limit.check_at(start + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.check_at(start + Duration::from_secs(10)), Some(9));
        assert_eq!(limit.check_at(start + Duration::from_secs(11)), None);
    }
}
