//! Respecting ARM's buckets: a gate per (resource provider, read/write) closed by 429 `Retry-After`
//! and by low per-resource `x-ms-ratelimit-remaining-*` headers; a pacer per (subscription, reads /
//! writes / deletes) that sends no faster than ARM's token bucket refills, as the
//! `x-ms-ratelimit-remaining-subscription-*` headers show it; and optional client-side token buckets
//! (`cloudProviderRateLimit*`) that make callers wait, never fail.

use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    pacers: Mutex<HashMap<(String, Charge), Arc<Pacer>>>,
}

impl ThrottleGates {
    /// Gates with settings.
    pub fn new(settings: GateSettings) -> Self {
        Self {
            settings,
            closed_until: Mutex::new(HashMap::new()),
            pacers: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a token of the subscription bucket the request is charged to (see [`Pacer`]), at most
    /// `max_wait`. `Err(expected wait)` when none is expected in time: nothing may be sent.
    pub async fn pace(&self, subscription: &str, charge: Charge) -> Result<Ticket, Duration> {
        let pacer = {
            let mut map = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((subscription.to_ascii_lowercase(), charge))
                .or_insert_with(|| Arc::new(Pacer::new(charge)))
                .clone()
        };
        pacer.take(self.settings.max_wait).await
    }

    /// Teaches the pacer of a sent request what its answer says of the bucket: the remaining count, or
    /// a 429's `Retry-After`.
    pub fn learn(&self, ticket: &Ticket, status: u16, headers: &HeaderMap) {
        let now = Instant::now();
        let remaining = paced_remaining(headers, ticket.pacer.charge);
        if status == 429 && remaining.unwrap_or(0) == 0 {
            // The subscription bucket is empty (count 0) or may be (no count): hold the line until
            // Retry-After only when ARM says so; otherwise go on one request at a time until an answer
            // shows the count. A 429 with a count left came from a resource provider's own bucket,
            // which the provider gate handles.
            let wait = retry_after(headers).unwrap_or(self.settings.default_retry_after);
            let hold = if remaining == Some(0) { wait } else { Duration::ZERO };
            ticket.pacer.throttled(ticket, hold, now);
        } else if let Some(remaining) = remaining {
            ticket.pacer.observe(ticket, remaining, now);
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
            remaining_counts(headers, access, false)
                .min()
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
    remaining_counts(headers, access, true).min()
}

/// The `x-ms-ratelimit-remaining-*` counts that apply to this access; the subscription and tenant
/// buckets (which the pacer follows) only when `with_paced`.
fn remaining_counts(headers: &HeaderMap, access: Access, with_paced: bool) -> impl Iterator<Item = u64> + '_ {
    headers
        .iter()
        .filter_map(move |(name, value)| {
            let kind = name.as_str().strip_prefix("x-ms-ratelimit-remaining-")?;
            let paced = kind.starts_with("subscription-") || kind.starts_with("tenant-");
            let applies = if kind.ends_with("-reads") {
                access == Access::Read
            } else if kind.ends_with("-writes") || kind.ends_with("-deletes") {
                access == Access::Write
            } else {
                true
            };
            (applies && (with_paced || !paced)).then_some(value.to_str().ok()?)
        })
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.rsplit(';').next().unwrap_or(part).trim().parse::<u64>().ok())
}

/// ARM's per-subscription (and per-tenant) token buckets a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charge {
    /// GET / HEAD, long-running-operation polls included.
    Reads,
    /// PUT / PATCH / POST.
    Writes,
    /// DELETE.
    Deletes,
}

impl Charge {
    /// The bucket a request of this method is charged to.
    pub fn of(method: &reqwest::Method) -> Self {
        if method == reqwest::Method::GET || method == reqwest::Method::HEAD {
            Charge::Reads
        } else if method == reqwest::Method::DELETE {
            Charge::Deletes
        } else {
            Charge::Writes
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Charge::Reads => "reads",
            Charge::Writes => "writes",
            Charge::Deletes => "deletes",
        }
    }

    /// ARM's documented bucket (token-bucket model, per service principal and subscription): capacity
    /// and refill per second — reads 250 and 25/s, writes and deletes 200 and 10/s. The pacer starts
    /// from these and follows what the remaining-count headers show.
    pub fn documented(self) -> (f64, f64) {
        match self {
            Charge::Reads => (250.0, 25.0),
            Charge::Writes | Charge::Deletes => (200.0, 10.0),
        }
    }
}

/// The lowest of `x-ms-ratelimit-remaining-subscription-<charge>` and `-tenant-<charge>`.
fn paced_remaining(headers: &HeaderMap, charge: Charge) -> Option<u64> {
    ["subscription", "tenant"]
        .iter()
        .filter_map(|scope| {
            let name = format!("x-ms-ratelimit-remaining-{scope}-{}", charge.suffix());
            headers.get(name.as_str())?.to_str().ok()?.trim().parse::<u64>().ok()
        })
        .min()
}

/// A request let through by its pacer; counted as in flight until dropped (answered or abandoned).
#[derive(Debug)]
pub struct Ticket {
    pacer: Arc<Pacer>,
    /// Its number, in the order requests were let through.
    seq: u64,
    /// When it was let through (ARM charges it about then).
    at: Instant,
    waited: bool,
}

impl Ticket {
    /// Whether the request waited in line for the bucket's refill.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.pacer.state();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

#[derive(Debug)]
struct PaceState {
    /// Tokens expected in ARM's bucket at `at`, every request in flight already charged.
    tokens: f64,
    at: Instant,
    cap: f64,
    /// Refill per second: the documented rate at first, then what the answers show.
    rate: f64,
    /// Requests let through so far.
    issued: u64,
    /// Requests let through and not answered yet.
    in_flight: u64,
    /// The newest request whose answer set the estimate (older answers are out of date).
    newest_seen: u64,
    /// The exact count a refill-rate sample is measured from.
    anchor: Option<Anchor>,
}

/// An exact count of the bucket: when, how many tokens, how many requests had been let through, and the
/// highest count seen since.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: Instant,
    tokens: f64,
    issued: u64,
    peak: f64,
}

impl Anchor {
    fn at(at: Instant, tokens: f64, issued: u64) -> Self {
        Self {
            at,
            tokens,
            issued,
            peak: tokens,
        }
    }
}

/// Paces one ARM bucket so a burst does not run into 429s: requests pass while the bucket is expected to
/// hold a token and otherwise wait in line (first come, first served) for its refill. The estimate starts
/// at the documented capacity and is reset by every answer's remaining count less the other requests in
/// flight (ARM may charge any of them after the answered one), so it errs low, not high; the refill
/// rate is measured from those estimates, so a bucket shared with other clients, or refilled faster than
/// documented, is followed.
#[derive(Debug)]
pub struct Pacer {
    charge: Charge,
    state: Mutex<PaceState>,
    line: tokio::sync::Mutex<()>,
    news: tokio::sync::Notify,
}

/// Bounds of a measured refill rate, relative to the documented one.
const RATE_BOUNDS: (f64, f64) = (0.1, 1000.0);

impl Pacer {
    /// A pacer of a full bucket of the documented size.
    pub fn new(charge: Charge) -> Self {
        let (cap, rate) = charge.documented();
        Self {
            charge,
            state: Mutex::new(PaceState {
                tokens: cap,
                at: Instant::now(),
                cap,
                rate,
                issued: 0,
                in_flight: 0,
                newest_seen: 0,
                anchor: None,
            }),
            line: tokio::sync::Mutex::new(()),
            news: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token now (the ticket's number), or says how long until one is expected.
    fn try_take(&self, now: Instant) -> Result<u64, Duration> {
        let mut s = self.state();
        if now > s.at {
            s.tokens = (s.tokens + now.duration_since(s.at).as_secs_f64() * s.rate).min(s.cap);
            s.at = now;
        }
        if s.at <= now && s.tokens >= 1.0 {
            s.tokens -= 1.0;
            s.issued += 1;
            s.in_flight += 1;
            return Ok(s.issued);
        }
        let refill = crate::clock::secs_f64((1.0 - s.tokens) / s.rate, crate::clock::MAX_REMOTE_WAIT);
        Err(s.at.saturating_duration_since(now) + refill)
    }

    /// Waits in line for a token, at most `max_wait`.
    async fn take(self: &Arc<Self>, max_wait: Duration) -> Result<Ticket, Duration> {
        let deadline = crate::clock::instant_after(Instant::now(), max_wait);
        let (_turn, mut waited) = match self.line.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => (
                tokio::time::timeout_at(deadline, self.line.lock())
                    .await
                    .map_err(|_| max_wait)?,
                true,
            ),
        };
        loop {
            let now = Instant::now();
            match self.try_take(now) {
                Ok(seq) => {
                    return Ok(Ticket {
                        pacer: self.clone(),
                        seq,
                        at: now,
                        waited,
                    })
                }
                Err(wait) if crate::clock::instant_after(now, wait) > deadline => return Err(wait),
                Err(wait) => {
                    waited = true;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.news.notified() => {}
                    }
                }
            }
        }
    }

    /// The tokens left now if the bucket held `remaining` after `ticket`'s request: every other request
    /// in flight may yet be charged.
    fn left(s: &PaceState, remaining: f64) -> f64 {
        remaining - s.in_flight.saturating_sub(1) as f64
    }

    /// The answer to `ticket` said `remaining` tokens were left after it. Answers usually come in the order
    /// ARM charged the requests; one that comes after the answer to a request let through later than it
    /// was probably charged before that one, and its count is out of date: it is not used.
    fn observe(&self, ticket: &Ticket, remaining: u64, now: Instant) {
        let mut s = self.state();
        if s.at > now || ticket.seq <= s.newest_seen {
            // Charged before the answer the estimate stands on, or before a 429 that emptied the bucket.
            return;
        }
        s.newest_seen = ticket.seq;
        let tokens = Self::left(&s, remaining as f64);
        tracing::trace!(
            bucket = self.charge.suffix(),
            remaining,
            seq = ticket.seq,
            in_flight = s.in_flight,
            tokens,
            "ARM bucket count"
        );
        let documented = self.charge.documented().1;
        // The refill rate is measured between counts at least `20 / rate` seconds apart (timed when their
        // requests were let through, which is about when ARM charged them).
        match s.anchor {
            Some(a) if ticket.at > a.at => {
                let peak = a.peak.max(tokens);
                let dt = ticket.at.duration_since(a.at).as_secs_f64();
                if dt < (20.0 / s.rate).max(0.25) {
                    s.anchor = Some(Anchor { peak, ..a });
                } else {
                    // A bucket seen near its capacity may have overflowed in between (refill lost): no sample.
                    let refilled = tokens - a.tokens + s.issued.saturating_sub(a.issued) as f64;
                    if peak < s.cap - (s.cap / 10.0).max(2.0) && refilled >= 0.0 {
                        let sample = refilled / dt;
                        s.rate =
                            ((s.rate + sample) / 2.0).clamp(documented * RATE_BOUNDS.0, documented * RATE_BOUNDS.1);
                        tracing::debug!(
                            bucket = self.charge.suffix(),
                            sample,
                            rate = s.rate,
                            "ARM bucket refill measured"
                        );
                    }
                    s.anchor = Some(Anchor::at(ticket.at, tokens, s.issued));
                }
            }
            Some(_) => {}
            None => s.anchor = Some(Anchor::at(ticket.at, tokens, s.issued)),
        }
        s.cap = s.cap.max(remaining as f64 + 1.0);
        s.tokens = tokens;
        s.at = now;
        drop(s);
        self.news.notify_one();
    }

    /// A 429 on `ticket`: the bucket holds at most its next token in `retry_after` (zero: now).
    fn throttled(&self, ticket: &Ticket, retry_after: Duration, now: Instant) {
        let mut s = self.state();
        let until = crate::clock::instant_after(now, retry_after);
        s.tokens = if retry_after.is_zero() {
            s.tokens.min(Self::left(&s, 1.0))
        } else {
            Self::left(&s, 1.0)
        };
        s.at = s.at.max(until);
        s.newest_seen = s.newest_seen.max(ticket.seq);
        s.anchor = None;
    }

    /// The refill rate it paces at (tokens per second).
    pub fn rate(&self) -> f64 {
        self.state().rate
    }
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

    fn write_answer(remaining: u64) -> HeaderMap {
        headers(&[("x-ms-ratelimit-remaining-subscription-writes", &remaining.to_string())])
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spends_the_documented_bucket_then_waits_for_its_refill() {
        let gates = ThrottleGates::new(GateSettings::default());
        let t0 = Instant::now();
        for _ in 0..200 {
            assert!(!gates.pace("sub", Charge::Writes).await.unwrap().waited());
        }
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "a full bucket lets 200 writes through at once"
        );
        // Nothing answered yet: the 201st waits for the documented refill (10/s).
        assert!(gates.pace("sub", Charge::Writes).await.unwrap().waited());
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        // Reads and deletes, and other subscriptions, are other buckets.
        let t1 = Instant::now();
        gates.pace("sub", Charge::Deletes).await.unwrap();
        gates.pace("other", Charge::Writes).await.unwrap();
        gates.pace("SUB", Charge::Reads).await.unwrap();
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_follows_the_remaining_count_of_answers() {
        let gates = ThrottleGates::new(GateSettings::default());
        // The bucket is nearly empty (another client, or a restart): the first answer says 2 are left.
        let first = gates.pace("sub", Charge::Writes).await.unwrap();
        gates.learn(&first, 201, &write_answer(2));
        drop(first);
        let t0 = Instant::now();
        gates.pace("sub", Charge::Writes).await.unwrap();
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(100), "then one per refill");
        // A later answer says 5 left (faster refill, or another client done): followed upwards too.
        let later = gates.pace("sub", Charge::Writes).await.unwrap();
        gates.learn(&later, 201, &write_answer(5));
        drop(later);
        let t1 = Instant::now();
        for _ in 0..5 {
            gates.pace("sub", Charge::Writes).await.unwrap();
        }
        assert_eq!(t1.elapsed(), Duration::ZERO);
        // A 429 holds everything until its Retry-After; then one token, then the refill rate.
        let t = gates.pace("sub", Charge::Writes).await.unwrap();
        let empty = [
            ("retry-after", "3"),
            ("x-ms-ratelimit-remaining-subscription-writes", "0"),
        ];
        gates.learn(&t, 429, &headers(&empty));
        drop(t);
        let t2 = Instant::now();
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t2.elapsed(), Duration::from_secs(3));
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t2.elapsed(), Duration::from_millis(3100));
        // A 429 from a resource provider's own bucket (150 subscription writes left) does not hold the
        // subscription's line; one without a count lets requests go one at a time.
        let t = gates.pace("sub", Charge::Writes).await.unwrap();
        let provider = [
            ("retry-after", "30"),
            ("x-ms-ratelimit-remaining-subscription-writes", "150"),
        ];
        gates.learn(&t, 429, &headers(&provider));
        drop(t);
        let t3 = Instant::now();
        let t = gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t3.elapsed(), Duration::ZERO);
        gates.learn(&t, 429, &headers(&[("retry-after", "30")]));
        drop(t);
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t3.elapsed(), Duration::ZERO);
        gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t3.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_counts_every_request_in_flight_against_an_answer() {
        // 200 writes at once; ARM charges them in any order. The first answer says 199 left (it was
        // charged first), but the other 199 are still to be charged: nothing more may go yet.
        let gates = ThrottleGates::new(GateSettings::default());
        let mut burst = Vec::new();
        for _ in 0..200 {
            burst.push(gates.pace("sub", Charge::Writes).await.unwrap());
        }
        gates.learn(&burst[199], 201, &write_answer(199));
        let t0 = Instant::now();
        let next = gates.pace("sub", Charge::Writes).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(100), "waited for the refill");
        drop(next);
        // Answers to requests let through before one already answered are out of date, high (115 left
        // when it was charged) or low.
        gates.learn(&burst[20], 201, &write_answer(115));
        gates.learn(&burst[30], 201, &write_answer(0));
        let t1 = Instant::now();
        drop(gates.pace("sub", Charge::Writes).await.unwrap());
        assert_eq!(t1.elapsed(), Duration::from_millis(100));
        // Once every request is answered, a request sent alone is answered exactly.
        burst.clear();
        let alone = gates.pace("sub", Charge::Writes).await.unwrap();
        gates.learn(&alone, 201, &write_answer(30));
        drop(alone);
        let t2 = Instant::now();
        for _ in 0..30 {
            gates.pace("sub", Charge::Writes).await.unwrap();
        }
        assert_eq!(t2.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_measures_a_faster_refill_from_the_answers() {
        let gates = ThrottleGates::new(GateSettings::default());
        // ARM refills 100/s (ten times the documented rate); every write is answered at once.
        let mut bucket = 200.0_f64;
        let mut last = Instant::now();
        let t0 = Instant::now();
        for _ in 0..1_000 {
            let t = gates.pace("sub", Charge::Writes).await.unwrap();
            let now = Instant::now();
            bucket = (bucket + now.duration_since(last).as_secs_f64() * 100.0).min(200.0);
            last = now;
            assert!(bucket >= 1.0, "the pacer sent into an empty bucket");
            bucket -= 1.0;
            gates.learn(&t, 201, &write_answer(bucket as u64));
        }
        // 800 writes beyond the bucket take 8 s at 100/s (80 s at the documented rate).
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(12), "{took:?}");
        let rate = gates.pacers.lock().unwrap()[&("sub".to_string(), Charge::Writes)].rate();
        assert!((60.0..=140.0).contains(&rate), "measured rate {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_serves_waiters_in_order_and_gives_up_beyond_the_bound() {
        let gates = Arc::new(ThrottleGates::new(GateSettings {
            max_wait: Duration::from_secs(5),
            ..Default::default()
        }));
        let first = gates.pace("sub", Charge::Writes).await.unwrap();
        gates.learn(&first, 201, &write_answer(0));
        // Ten waiters at 10/s: all within 1 s, in the order they came.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (g, o) = (gates.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                g.pace("sub", Charge::Writes).await.unwrap();
                o.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
        // A 429 asking for a minute: beyond the 5 s bound, the caller is told at once.
        let t = gates.pace("sub", Charge::Writes).await.unwrap();
        let empty = [
            ("retry-after", "60"),
            ("x-ms-ratelimit-remaining-subscription-writes", "0"),
        ];
        gates.learn(&t, 429, &headers(&empty));
        let t0 = Instant::now();
        let wait = gates.pace("sub", Charge::Writes).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(wait >= Duration::from_secs(59), "{wait:?}");
    }

    #[test]
    fn paced_buckets_do_not_close_the_gate() {
        // A low subscription count is the pacer's: the provider gate only closes on per-resource counts.
        let gates = ThrottleGates::new(GateSettings::default());
        assert_eq!(gates.observe("p", Access::Write, 201, &write_answer(0)), None);
        assert_eq!(lowest_remaining(&write_answer(0), Access::Write), Some(0));
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
