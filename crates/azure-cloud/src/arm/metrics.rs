//! ARM call metrics under upstream's names, plus a per-operation count of requests actually sent
//! (our main performance figure, read by tests and benchmarks).
//!
//! Upstream (≥ v1.32, its `azclient` clients) exposes `arm_request_duration_seconds` (histogram, buckets
//! .1 … 600 s), `arm_request_errors_counter`, `arm_request_rate_limit_counter` and
//! `arm_request_throttle_counter` (counters), labelled `subscription_id`, `resource_group` (lower-case),
//! `resource` (the SDK type, e.g. `LoadBalancer`) and `method` (`get`, `create_or_update`, ...); errors add
//! `status_code` and `error_code` when ARM answered. Those are exposed here with the same names, types and
//! labels (counters as counters: their samples end in `_total`).
//!
//! Upstream exposes `cloudprovider_azure_api_request_{duration_seconds,errors,throttled_count,
//! ratelimited_count}` through component-base (no `_total` suffix). OpenMetrics requires counters to end
//! in `_total`, so to keep upstream's exact names (dashboards depend on them) the three monotonic series
//! are exposed with the gauge type.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
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

/// Labels of upstream's `arm_request_*` series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    /// Subscription of the target.
    pub subscription_id: String,
    /// Resource group of the target, lower-case.
    pub resource_group: String,
    /// The SDK resource type (`LoadBalancer`, `VirtualMachineScaleSetVM`, ...).
    pub resource: String,
    /// `get`, `list`, `create_or_update`, `delete`, ...
    pub method: String,
}

/// Labels of `arm_request_errors_counter`: [`ArmLabels`] plus the answer's status and ARM error code (empty
/// when there was no answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmErrorLabels {
    /// Subscription of the target.
    pub subscription_id: String,
    /// Resource group of the target, lower-case.
    pub resource_group: String,
    /// The SDK resource type.
    pub resource: String,
    /// The operation.
    pub method: String,
    /// HTTP status of the answer (`0` when none came).
    pub status_code: String,
    /// ARM's `error.code`.
    pub error_code: String,
}

/// Upstream's resource label for an ARM resource type path (its SDK type names).
pub fn upstream_resource(resource_type: &str) -> &'static str {
    match resource_type {
        "virtualMachines" => "VirtualMachine",
        "virtualMachineScaleSets" => "VirtualMachineScaleSet",
        "virtualMachineScaleSets/virtualMachines" => "VirtualMachineScaleSetVM",
        "availabilitySets" => "AvailabilitySet",
        "disks" => "Disk",
        "providers" => "Provider",
        "networkInterfaces" | "virtualMachineScaleSets/virtualMachines/networkInterfaces" => "Interface",
        "loadBalancers" => "LoadBalancer",
        "loadBalancers/backendAddressPools" => "BackendAddressPool",
        "publicIPAddresses"
        | "virtualMachineScaleSets/virtualMachines/networkInterfaces/ipConfigurations/publicIPAddresses" => {
            "PublicIPAddress"
        }
        "networkSecurityGroups" => "SecurityGroup",
        "routeTables" => "RouteTable",
        "routeTables/routes" => "Route",
        "virtualNetworks/subnets" => "Subnet",
        "virtualNetworks" => "VirtualNetwork",
        "privateLinkServices" | "privateLinkServices/privateEndpointConnections" => "PrivateLinkService",
        _ => "Other",
    }
}

const ARM_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 600.0];

fn arm_histogram() -> Histogram {
    Histogram::new(ARM_BUCKETS)
}

/// Labels of the legacy `cloudprovider_azure_api_request_errors`: [`RequestLabels`] plus ARM's error `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestErrorLabels {
    /// `<resource>_<operation>`.
    pub request: String,
    /// Resource group of the target.
    pub resource_group: String,
    /// Subscription of the target.
    pub subscription_id: String,
    /// Component that made the call.
    pub source: String,
    /// ARM's `error.code` (empty without an answer).
    pub code: String,
}

/// The legacy families that are counters upstream but keep their exact sample names here only as gauges
/// (an OpenMetrics counter's samples end in `_total`); `/metrics` in the Prometheus text format (0.0.4)
/// declares them counters again.
pub const LEGACY_COUNTERS: &[&str] = &[
    "cloudprovider_azure_api_request_errors",
    "cloudprovider_azure_api_request_throttled_count",
    "cloudprovider_azure_api_request_ratelimited_count",
    "cloudprovider_azure_op_failure_count",
];

const OP_BUCKETS: [f64; 17] = [
    0.1, 0.2, 0.5, 1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 100.0, 200.0, 300.0, 600.0, 1200.0,
];

fn op_histogram() -> Histogram {
    Histogram::new(OP_BUCKETS)
}

const BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0, 1200.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// How a call ended, for upstream's series.
#[derive(Debug, Clone, Copy)]
pub enum ArmOutcome<'a> {
    /// Succeeded (or a 404 read: an answer, not an error).
    Ok,
    /// Ended throttled (429 after retries, or refused by a throttle gate).
    Throttled,
    /// Failed otherwise.
    Failed {
        /// HTTP status (`0`: no answer).
        status: u16,
        /// ARM's `error.code`.
        error_code: &'a str,
    },
}

/// The ARM metrics of one client.
#[derive(Debug)]
pub struct ArmMetrics {
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    errors: Family<RequestErrorLabels, Gauge>,
    throttled: Family<RequestLabels, Gauge>,
    op_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    op_failures: Family<RequestLabels, Gauge>,
    ratelimited: Family<RequestLabels, Gauge>,
    arm_duration: Family<ArmLabels, Histogram, fn() -> Histogram>,
    arm_errors: Family<ArmErrorLabels, Counter>,
    arm_rate_limits: Family<ArmLabels, Counter>,
    arm_throttles: Family<ArmLabels, Counter>,
    sent: Mutex<BTreeMap<String, u64>>,
}

impl Default for ArmMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(histogram),
            errors: Family::default(),
            throttled: Family::default(),
            op_duration: Family::new_with_constructor(op_histogram),
            op_failures: Family::default(),
            ratelimited: Family::default(),
            arm_duration: Family::new_with_constructor(arm_histogram),
            arm_errors: Family::default(),
            arm_rate_limits: Family::default(),
            arm_throttles: Family::default(),
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
        registry.register(
            "cloudprovider_azure_op_duration_seconds",
            "Latency of an Azure service operation",
            self.op_duration.clone(),
        );
        registry.register(
            "cloudprovider_azure_op_failure_count",
            "Number of failed Azure service operations",
            self.op_failures.clone(),
        );
        registry.register(
            "arm_request_duration_seconds",
            "Measures the duration of Azure ARM API calls.",
            self.arm_duration.clone(),
        );
        registry.register(
            "arm_request_errors_counter",
            "Measures the number of errors in Azure ARM API calls.",
            self.arm_errors.clone(),
        );
        registry.register(
            "arm_request_rate_limit_counter",
            "Measures the number of rate-limited Azure ARM API calls.",
            self.arm_rate_limits.clone(),
        );
        registry.register(
            "arm_request_throttle_counter",
            "Measures the number of throttled Azure ARM API calls.",
            self.arm_throttles.clone(),
        );
    }

    /// Records one finished call in upstream's `arm_request_*` series: its duration always, and one of
    /// error (with `status`/`error_code`), throttle or nothing, as upstream's `ARMContext.Observe`.
    pub fn observe_arm(&self, labels: &ArmLabels, elapsed: Duration, outcome: ArmOutcome<'_>) {
        self.arm_duration.get_or_create(labels).observe(elapsed.as_secs_f64());
        match outcome {
            ArmOutcome::Ok => {}
            ArmOutcome::Throttled => {
                self.arm_throttles.get_or_create(labels).inc();
            }
            ArmOutcome::Failed { status, error_code } => {
                let l = ArmErrorLabels {
                    subscription_id: labels.subscription_id.clone(),
                    resource_group: labels.resource_group.clone(),
                    resource: labels.resource.clone(),
                    method: labels.method.clone(),
                    status_code: status.to_string(),
                    error_code: error_code.to_string(),
                };
                self.arm_errors.get_or_create(&l).inc();
            }
        }
    }

    /// Records a call held back by a client-side token bucket (`arm_request_rate_limit_counter`).
    pub fn rate_limited_arm(&self, labels: &ArmLabels) {
        self.arm_rate_limits.get_or_create(labels).inc();
    }

    /// Records one whole operation (upstream's `ObserveOperationWithResult`: ensuring a Service's load
    /// balancer, creating a route, ...), `request` like `services_ensure_loadbalancer`.
    pub fn observe_op(&self, labels: &RequestLabels, elapsed: Duration, ok: bool) {
        self.op_duration.get_or_create(labels).observe(elapsed.as_secs_f64());
        if !ok {
            self.op_failures.get_or_create(labels).inc();
        }
    }

    /// Records one finished call (after retries and polling); `failed` carries ARM's error code.
    pub fn observe(&self, labels: &RequestLabels, elapsed: Duration, failed: Option<&str>, throttled: bool) {
        self.duration.get_or_create(labels).observe(elapsed.as_secs_f64());
        if let Some(code) = failed {
            let l = RequestErrorLabels {
                request: labels.request.clone(),
                resource_group: labels.resource_group.clone(),
                subscription_id: labels.subscription_id.clone(),
                source: labels.source.clone(),
                code: code.to_string(),
            };
            self.errors.get_or_create(&l).inc();
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
