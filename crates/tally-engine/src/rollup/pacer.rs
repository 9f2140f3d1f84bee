//! Adaptive back-pressure between rollup batches.
//!
//! A worker waits for each batch to finish before it takes the next. If a batch took longer
//! than the target, the store is struggling: the pause before the next batch doubles (and is
//! at least the overshoot). If it was quick, the pause halves, down to none. Additive catch-up
//! is not needed: halving empties the pause within a few quick batches.

use std::time::Duration;

/// The longest pause between two batches.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Pauses shorter than this are not worth a timer.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// Decides the pause after each batch.
#[derive(Debug, Clone)]
pub struct Pacer {
    target: Duration,
    pause: Duration,
}

impl Pacer {
    /// A pacer aiming at batches of at most `target`.
    pub fn new(target: Duration) -> Self {
        Self { target, pause: Duration::ZERO }
    }

    /// Records how long a batch took and returns how long to wait before the next one.
    pub fn after_batch(&mut self, took: Duration) -> Duration {
        self.pause = if took > self.target {
            (self.pause * 2).max(took - self.target).min(MAX_PAUSE)
        } else {
            let halved = self.pause / 2;
            if halved < MIN_PAUSE { Duration::ZERO } else { halved }
        };
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_batches_grow_the_pause_and_quick_ones_shrink_it() {
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(ms(50));
        assert_eq!(pacer.after_batch(ms(10)), Duration::ZERO);
        assert_eq!(pacer.after_batch(ms(80)), ms(30));
        assert_eq!(pacer.after_batch(ms(60)), ms(60));
        assert_eq!(pacer.after_batch(ms(900)), ms(850));
        assert_eq!(pacer.after_batch(ms(5000)), MAX_PAUSE);
        assert_eq!(pacer.after_batch(ms(10)), ms(500));
        let mut quick = 0;
        while pacer.after_batch(ms(10)) > Duration::ZERO {
            quick += 1;
        }
        assert_eq!(quick, 8);
    }
}
