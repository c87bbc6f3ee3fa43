//! Exponential backoff between retries, the one rule every reconnecting or restarting loop
//! of shelf follows.

use std::time::Duration;

/// Waits of `start`, doubled after each failure in a row, never longer than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub start: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before the retry that follows `failures` failures in a row (1 for the first
    /// failure: `start`).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.start.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff {
            start: Duration::from_millis(100),
            max: Duration::from_secs(30),
        };
        let ms: Vec<u128> = [0, 1, 2, 3, 9, 10, 1000]
            .iter()
            .map(|f| b.delay(*f).as_millis())
            .collect();
        assert_eq!(ms, [100, 100, 200, 400, 25_600, 30_000, 30_000]);
    }
}
