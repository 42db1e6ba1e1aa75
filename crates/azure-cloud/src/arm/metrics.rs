//! ARM call metrics under upstream's names, plus a per-operation count of requests actually sent
//! (our main performance figure, read by tests and benchmarks).
//!
//! Upstream exposes `cloudprovider_azure_api_request_{duration_seconds,errors,throttled_count,
//! ratelimited_count}` through component-base (no `_total` suffix). OpenMetrics requires counters to end
//! in `_total`, so to keep upstream's exact names (dashboards depend on them) the three monotonic series
//! are exposed with the gauge type.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Labels of every ARM metric (upstream's set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `<resource>_<operation>`, e.g. `load_balancer_create_or_update`.
    pub request: String,
    /// Resource group of the target.
    pub resource_group: String,
    /// Subscription of the target.
    pub subscription_id: String,
    /// Component that made the call.
    pub source: String,
}

const BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0, 1200.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The ARM metrics of one client.
#[derive(Debug)]
pub struct ArmMetrics {
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    errors: Family<RequestLabels, Gauge>,
    throttled: Family<RequestLabels, Gauge>,
    ratelimited: Family<RequestLabels, Gauge>,
    sent: Mutex<BTreeMap<String, u64>>,
}

impl Default for ArmMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(histogram),
            errors: Family::default(),
            throttled: Family::default(),
            ratelimited: Family::default(),
            sent: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ArmMetrics {
    /// Registers the metrics in a registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cloudprovider_azure_api_request_duration_seconds",
            "Latency of an Azure API call",
            self.duration.clone(),
        );
        registry.register(
            "cloudprovider_azure_api_request_errors",
            "Number of errors for an Azure API call",
            self.errors.clone(),
        );
        registry.register(
            "cloudprovider_azure_api_request_throttled_count",
            "Number of throttled Azure API calls",
            self.throttled.clone(),
        );
        registry.register(
            "cloudprovider_azure_api_request_ratelimited_count",
            "Number of rate limited Azure API calls",
            self.ratelimited.clone(),
        );
    }

    /// Records one finished call (after retries and polling).
    pub fn observe(&self, labels: &RequestLabels, elapsed: Duration, failed: bool, throttled: bool) {
        self.duration.get_or_create(labels).observe(elapsed.as_secs_f64());
        if failed {
            self.errors.get_or_create(labels).inc();
        }
        if throttled {
            self.throttled.get_or_create(labels).inc();
        }
    }

    /// Records a caller that waited for a client-side token bucket.
    pub fn rate_limited(&self, labels: &RequestLabels) {
        self.ratelimited.get_or_create(labels).inc();
    }

    /// Counts one HTTP request sent to ARM, by operation (e.g. `PUT Microsoft.Network/loadBalancers`).
    pub fn count_sent(&self, operation: &str) {
        let mut m = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(operation.to_string()).or_default() += 1;
    }

    /// Requests sent so far, by operation.
    pub fn sent(&self) -> BTreeMap<String, u64> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests sent so far whose operation starts with a method (`GET`, `PUT`, ...).
    pub fn sent_with_method(&self, method: &str) -> u64 {
        self.sent()
            .iter()
            .filter(|(k, _)| k.split(' ').next() == Some(method))
            .map(|(_, v)| v)
            .sum()
    }
}
