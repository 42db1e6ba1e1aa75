//! Time arithmetic on values that come from the network or a config file (`Retry-After`, token
//! expiries, rate-limit QPS). None of these may panic: `Instant + Duration`, `SystemTime + Duration`
//! and float → `Duration` conversions all panic on overflow, so every such value goes through here.

use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The longest wait a remote answer may impose (`Retry-After`, `retry-after-ms`). Longer values are
/// treated as this long and logged: ARM never asks for more than minutes.
pub const MAX_REMOTE_WAIT: Duration = Duration::from_secs(3600);

/// The longest lifetime a token answer may claim (Azure AD tokens live at most 24 h).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A wait a remote party asked for, clamped to [`MAX_REMOTE_WAIT`] (logged when clamped).
pub fn remote_wait(d: Duration, what: &'static str) -> Duration {
    if d > MAX_REMOTE_WAIT {
        tracing::warn!(requested = ?d, used = ?MAX_REMOTE_WAIT, what, "remote wait longer than the maximum; using the maximum");
        MAX_REMOTE_WAIT
    } else {
        d
    }
}

/// `base + d`, saturating far in the future instead of panicking.
pub fn instant_after(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(base)
}

/// `base + d` on the wall clock, `None` when it cannot be represented.
pub fn system_after(base: SystemTime, d: Duration) -> Option<SystemTime> {
    base.checked_add(d)
}

/// Seconds as a float → `Duration`, clamped to `[0, max]` (NaN and negatives are zero, infinity is `max`).
pub fn secs_f64(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_on_extremes() {
        let now = Instant::now();
        assert!(instant_after(now, Duration::MAX) > now);
        assert_eq!(instant_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        assert!(system_after(SystemTime::now(), Duration::MAX).is_none());
        assert_eq!(secs_f64(f64::INFINITY, MAX_REMOTE_WAIT), MAX_REMOTE_WAIT);
        assert_eq!(secs_f64(1e300, MAX_REMOTE_WAIT), MAX_REMOTE_WAIT);
        assert_eq!(secs_f64(f64::NAN, MAX_REMOTE_WAIT), Duration::ZERO);
        assert_eq!(secs_f64(-3.0, MAX_REMOTE_WAIT), Duration::ZERO);
        assert_eq!(secs_f64(1.5, MAX_REMOTE_WAIT), Duration::from_millis(1500));
        assert_eq!(remote_wait(Duration::from_secs(u64::MAX), "test"), MAX_REMOTE_WAIT);
        assert_eq!(remote_wait(Duration::from_secs(30), "test"), Duration::from_secs(30));
    }
}
