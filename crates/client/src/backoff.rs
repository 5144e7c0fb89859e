//! Reconnection settings and the exponential backoff between attempts.

use std::time::Duration;

/// When and how often to reconnect after the connection is lost.
///
/// The defaults are the JavaScript client's: unlimited attempts, a first delay of 1 s that
/// doubles on each attempt up to 5 s, each delay randomised by ±50 %.
///
/// ```
/// use std::time::Duration;
/// use tether_client::Reconnection;
///
/// let r = Reconnection::default()
///     .attempts(5)
///     .delay(Duration::from_millis(200))
///     .delay_max(Duration::from_secs(2))
///     .randomization_factor(0.0);
/// assert_eq!(r.nth_delay(0), Duration::from_millis(200));
/// assert_eq!(r.nth_delay(1), Duration::from_millis(400));
/// assert_eq!(r.nth_delay(10), Duration::from_secs(2));
/// let off = Reconnection::disabled();
/// assert!(!off.enabled);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnection {
    /// Whether to reconnect at all.
    pub enabled: bool,
    /// How many attempts before giving up (`None`: never give up).
    pub attempts: Option<u32>,
    /// The delay before the first attempt; it doubles on each further attempt.
    pub delay: Duration,
    /// The longest delay between attempts.
    pub delay_max: Duration,
    /// How much each delay is randomised, between 0 (not at all) and 1 (±100 %).
    pub randomization_factor: f64,
}

impl Default for Reconnection {
    fn default() -> Self {
        Reconnection {
            enabled: true,
            attempts: None,
            delay: Duration::from_millis(1000),
            delay_max: Duration::from_millis(5000),
            randomization_factor: 0.5,
        }
    }
}

impl Reconnection {
    /// No reconnection: a lost connection stays lost.
    pub fn disabled() -> Self {
        Reconnection {
            enabled: false,
            ..Self::default()
        }
    }

    /// Sets the number of attempts before giving up.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = Some(n);
        self
    }

    /// Sets the first delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Sets the longest delay.
    pub fn delay_max(mut self, d: Duration) -> Self {
        self.delay_max = d;
        self
    }

    /// Sets the randomisation factor (clamped to 0..=1).
    pub fn randomization_factor(mut self, f: f64) -> Self {
        self.randomization_factor = f.clamp(0.0, 1.0);
        self
    }

    /// The delay before attempt `n` (0-based), without randomisation.
    pub fn nth_delay(&self, n: u32) -> Duration {
        let factor = 2f64.powi(n.min(64) as i32);
        let ms = self.delay.as_secs_f64() * 1000.0 * factor;
        let max = self.delay_max.as_secs_f64() * 1000.0;
        Duration::from_secs_f64(ms.min(max).max(0.0) / 1000.0)
    }

    /// The delay before attempt `n`, randomised. `r` is a uniform random number in `[0, 1)`.
    pub(crate) fn jittered_delay(&self, n: u32, r: f64) -> Duration {
        let base = self.delay.as_secs_f64() * 2f64.powi(n.min(64) as i32);
        let deviation = r * self.randomization_factor * base;
        // Like the JavaScript client: half of the draws shorten, half lengthen.
        let secs = if (r * 10.0) as u64 & 1 == 0 {
            base - deviation
        } else {
            base + deviation
        };
        Duration::from_secs_f64(secs.min(self.delay_max.as_secs_f64()).max(0.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let r = Reconnection::default();
        assert_eq!(r.nth_delay(0), Duration::from_secs(1));
        assert_eq!(r.nth_delay(2), Duration::from_secs(4));
        assert_eq!(r.nth_delay(3), Duration::from_secs(5));
        for n in 0..40 {
            for i in 0..20 {
                let x = f64::from(i) / 20.0;
                let d = r.jittered_delay(n, x);
                assert!(d <= r.delay_max);
                let base = r.nth_delay(n).as_secs_f64();
                assert!(d.as_secs_f64() >= base * 0.5 - 1e-9 || d == r.delay_max);
            }
        }
        let fixed = r.clone().randomization_factor(0.0);
        assert_eq!(fixed.jittered_delay(1, 0.37), Duration::from_secs(2));
        assert_eq!(
            r.clone().randomization_factor(7.0).randomization_factor,
            1.0
        );
    }
}
