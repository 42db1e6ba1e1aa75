//! Respecting ARM's buckets: a gate per (resource provider, read/write) closed by 429 `Retry-After`
//! and by low `x-ms-ratelimit-remaining-*` headers, and optional client-side token buckets
//! (`cloudProviderRateLimit*`) that make callers wait, never fail.

use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Read or write bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// GET / HEAD (and long-running-operation polls).
    Read,
    /// PUT / PATCH / POST / DELETE.
    Write,
}

impl Access {
    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Gate behaviour.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// How long a caller waits for a closed gate before getting `Throttled`.
    pub max_wait: Duration,
    /// A remaining count at or below this closes the gate (proactive self-throttling).
    pub low_remaining: u64,
    /// How long a low remaining count closes the gate.
    pub low_remaining_pause: Duration,
    /// Used for a 429 without `Retry-After`.
    pub default_retry_after: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(30),
            low_remaining: 1,
            low_remaining_pause: Duration::from_secs(2),
            default_retry_after: Duration::from_secs(10),
        }
    }
}

/// The gates of one ARM client.
#[derive(Debug, Default)]
pub struct ThrottleGates {
    settings: GateSettings,
    closed_until: Mutex<HashMap<(String, Access), Instant>>,
}

impl ThrottleGates {
    /// Gates with settings.
    pub fn new(settings: GateSettings) -> Self {
        Self {
            settings,
            closed_until: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    fn key(provider: &str, access: Access) -> (String, Access) {
        (provider.to_ascii_lowercase(), access)
    }

    /// When the gate reopens, if it is closed now.
    pub fn closed_until(&self, provider: &str, access: Access) -> Option<Instant> {
        let now = Instant::now();
        let map = self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Self::key(provider, access)).copied().filter(|t| *t > now)
    }

    /// Closes the gate until `until` (never shortens an existing closure).
    pub fn close(&self, provider: &str, access: Access, until: Instant) {
        let mut map = self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(Self::key(provider, access)).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// Waits while the gate is closed, at most `max_wait` in all. `Err(remaining)` when the gate stays
    /// closed beyond the bound: nothing may be sent, the caller gets `Throttled`.
    pub async fn pass(&self, provider: &str, access: Access) -> Result<(), Duration> {
        let deadline = crate::clock::instant_after(Instant::now(), self.settings.max_wait);
        while let Some(until) = self.closed_until(provider, access) {
            if until > deadline {
                return Err(until.saturating_duration_since(Instant::now()));
            }
            tokio::time::sleep_until(until).await;
        }
        Ok(())
    }

    /// Learns from a response: a 429 closes the gate for `Retry-After`; a low remaining count closes it
    /// briefly. Returns the closure applied, if any.
    pub fn observe(&self, provider: &str, access: Access, status: u16, headers: &HeaderMap) -> Option<Duration> {
        let pause = if status == 429 {
            Some(retry_after(headers).unwrap_or(self.settings.default_retry_after))
        } else {
            lowest_remaining(headers, access)
                .filter(|r| *r <= self.settings.low_remaining)
                .map(|_| self.settings.low_remaining_pause)
        };
        if let Some(p) = pause {
            self.close(provider, access, crate::clock::instant_after(Instant::now(), p));
        }
        pause
    }
}

/// Parses `Retry-After` (integer seconds or an HTTP date; `retry-after-ms` / `x-ms-retry-after-ms` first),
/// clamped to [`crate::clock::MAX_REMOTE_WAIT`]: an absurd value is treated as one hour and logged.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    raw_retry_after(headers).map(|d| crate::clock::remote_wait(d, "Retry-After"))
}

fn raw_retry_after(headers: &HeaderMap) -> Option<Duration> {
    // Millisecond forms first, as Azure SDKs read them (`retry-after-ms`, `x-ms-retry-after-ms`).
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The lowest `x-ms-ratelimit-remaining-*` count that applies to this access. Subscription and tenant
/// `-reads` apply to reads, `-writes`/`-deletes` to writes; the per-resource (Compute policy) header
/// `Microsoft.Compute/HighCostGet3Min;107,...` applies to the request that received it.
pub fn lowest_remaining(headers: &HeaderMap, access: Access) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for (name, value) in headers {
        let Some(kind) = name.as_str().strip_prefix("x-ms-ratelimit-remaining-") else {
            continue;
        };
        let applies = if kind.ends_with("-reads") {
            access == Access::Read
        } else if kind.ends_with("-writes") || kind.ends_with("-deletes") {
            access == Access::Write
        } else {
            true
        };
        if !applies {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        for part in v.split(',') {
            let count = part.rsplit(';').next().unwrap_or(part).trim();
            if let Ok(n) = count.parse::<u64>() {
                lowest = Some(lowest.map_or(n, |l| l.min(n)));
            }
        }
    }
    lowest
}

/// A token bucket: `qps` refill, `burst` capacity. Callers reserve a token and wait for it.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: qps.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token; returns how long the caller must wait before using it (zero when one was free).
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.qps).min(self.burst);
        s.1 = now;
        s.0 -= 1.0;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            // Validation keeps qps ≥ 0.001; an embedder's value is clamped rather than trusted.
            crate::clock::secs_f64(-s.0 / self.qps, crate::clock::MAX_REMOTE_WAIT)
        }
    }
}

/// Token buckets per (client key, access) from the config; absent where limiting is off.
#[derive(Debug, Default)]
pub struct RateLimiters {
    buckets: HashMap<(String, Access), TokenBucket>,
}

impl RateLimiters {
    /// Builds the buckets of every client whose effective rate limit is enabled.
    pub fn from_config(cfg: &crate::config::CloudConfig) -> Self {
        let mut buckets = HashMap::new();
        for key in crate::config::ClientRateLimits::KEYS {
            let rl = cfg.rate_limit_for(key);
            if rl.enabled {
                buckets.insert((key.to_string(), Access::Read), TokenBucket::new(rl.qps, rl.bucket));
                buckets.insert(
                    (key.to_string(), Access::Write),
                    TokenBucket::new(rl.qps_write, rl.bucket_write),
                );
            }
        }
        Self { buckets }
    }

    /// Waits for a token of the client's bucket. Returns true when the caller had to wait.
    pub async fn acquire(&self, client_key: &str, access: Access) -> bool {
        let Some(b) = self.buckets.get(&(client_key.to_string(), access)) else {
            return false;
        };
        let wait = b.reserve();
        if wait.is_zero() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "17")])),
            Some(Duration::from_secs(17))
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&headers(&[("retry-after", &future)])).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[])), None);
        // Absurd values: clamped to one hour, never a panic.
        for (k, v) in [
            ("retry-after", "18446744073709551615"),
            ("retry-after-ms", "18446744073709551615"),
            ("x-ms-retry-after-ms", "99999999999999"),
        ] {
            assert_eq!(
                retry_after(&headers(&[(k, v)])),
                Some(crate::clock::MAX_REMOTE_WAIT),
                "{k}"
            );
        }
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")])),
            Some(crate::clock::MAX_REMOTE_WAIT)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_inputs_never_panic() {
        let gates = ThrottleGates::new(GateSettings::default());
        gates.observe(
            "p",
            Access::Write,
            429,
            &headers(&[("retry-after", "18446744073709551615")]),
        );
        let err = gates.pass("p", Access::Write).await.unwrap_err();
        assert!(err <= crate::clock::MAX_REMOTE_WAIT);
        let b = TokenBucket::new(1e-300, 1);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), crate::clock::MAX_REMOTE_WAIT);
        let b = TokenBucket::new(f64::NAN, 1);
        b.reserve();
        b.reserve();
    }

    #[test]
    fn remaining_headers() {
        let h = headers(&[
            ("x-ms-ratelimit-remaining-subscription-reads", "11999"),
            ("x-ms-ratelimit-remaining-subscription-writes", "3"),
            (
                "x-ms-ratelimit-remaining-resource",
                "Microsoft.Compute/HighCostGet3Min;107,Microsoft.Compute/HighCostGet30Min;517",
            ),
        ]);
        assert_eq!(lowest_remaining(&h, Access::Read), Some(107));
        assert_eq!(lowest_remaining(&h, Access::Write), Some(3));
        assert_eq!(lowest_remaining(&headers(&[]), Access::Read), None);
    }

    #[tokio::test(start_paused = true)]
    async fn gate_waits_then_fails_beyond_bound() {
        let gates = ThrottleGates::new(GateSettings {
            max_wait: Duration::from_secs(5),
            ..Default::default()
        });
        gates.observe(
            "Microsoft.Network",
            Access::Write,
            429,
            &headers(&[("retry-after", "3")]),
        );
        assert!(gates.closed_until("microsoft.network", Access::Write).is_some());
        assert!(gates.closed_until("microsoft.network", Access::Read).is_none());
        let t0 = Instant::now();
        gates.pass("Microsoft.Network", Access::Write).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        gates.observe(
            "Microsoft.Network",
            Access::Write,
            429,
            &headers(&[("retry-after", "60")]),
        );
        let err = gates.pass("Microsoft.Network", Access::Write).await.unwrap_err();
        assert_eq!(err, Duration::from_secs(60));
        // Low remaining closes briefly.
        let p = gates.observe(
            "Microsoft.Compute",
            Access::Read,
            200,
            &headers(&[(
                "x-ms-ratelimit-remaining-resource",
                "Microsoft.Compute/GetVMScaleSet3Min;0",
            )]),
        );
        assert_eq!(p, Some(Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_waits_never_fails() {
        let b = TokenBucket::new(2.0, 3);
        let waits: Vec<Duration> = (0..5).map(|_| b.reserve()).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_millis(500));
        assert_eq!(waits[4], Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.reserve(), Duration::ZERO);
    }
}
