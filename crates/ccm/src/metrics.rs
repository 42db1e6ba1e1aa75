//! Controller metrics.
//!
//! - k8s.io/cloud-provider's own series, as upstream's CCM exposes them (names, types, buckets):
//!   `service_controller_loadbalancer_sync_total`, `service_controller_nodesync_error_total`,
//!   `service_controller_nodesync_latency_seconds`, `service_controller_update_loadbalancer_host_latency_seconds`,
//!   `route_controller_route_sync_total`, `node_controller_cloud_provider_taint_removal_delay_seconds`,
//!   `node_controller_initial_node_sync_delay_seconds`.
//! - Ours, in the controller-runtime convention: `controller_reconcile_duration_seconds{controller}`,
//!   `controller_reconcile_errors_total{controller}`, `controller_reconcile_panics_total{controller}`,
//!   `workqueue_depth{name}`.
//!
//! [`to_text_format`] turns the registry's OpenMetrics text into the Prometheus text format (0.0.4) that
//! upstream serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The `controller` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// Controller name (`service`, `cloud-node`, `cloud-node-lifecycle`, `route`).
    pub controller: String,
}

/// The `name` label of a work queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// Queue name.
    pub name: String,
}

fn histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
}

/// component-base's `ExponentialBuckets(start, factor, count)`.
fn exponential(start: f64, factor: f64, count: u16) -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        start, factor, count,
    ))
}

fn sync_latency() -> Histogram {
    exponential(1.0, 2.0, 15)
}

fn node_delay() -> Histogram {
    exponential(1.0, 4.0, 6)
}

/// Metrics shared by the controllers (cheap to clone: the families are shared).
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    errors: Family<ControllerLabel, Counter>,
    panics: Family<ControllerLabel, Counter>,
    depth: Family<QueueLabel, Gauge>,
    lb_syncs: Counter,
    nodesync_errors: Counter,
    nodesync_latency: Histogram,
    lb_host_latency: Histogram,
    route_syncs: Counter,
    taint_removal_delay: Histogram,
    initial_sync_delay: Histogram,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(histogram),
            errors: Family::default(),
            panics: Family::default(),
            depth: Family::default(),
            lb_syncs: Counter::default(),
            nodesync_errors: Counter::default(),
            nodesync_latency: sync_latency(),
            lb_host_latency: sync_latency(),
            route_syncs: Counter::default(),
            taint_removal_delay: node_delay(),
            initial_sync_delay: node_delay(),
        }
    }
}

impl ControllerMetrics {
    /// Registers the families.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time of one reconcile, per controller",
            self.duration.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Failed reconciles, per controller",
            self.errors.clone(),
        );
        registry.register(
            "controller_reconcile_panics",
            "Reconciles that panicked (contained: the key is retried), per controller",
            self.panics.clone(),
        );
        registry.register("workqueue_depth", "Items waiting in a work queue", self.depth.clone());
        registry.register(
            "service_controller_loadbalancer_sync",
            "A metric counting the amount of times any load balancer has been configured, as an effect of service/node changes on the cluster",
            self.lb_syncs.clone(),
        );
        registry.register(
            "service_controller_nodesync_error",
            "A metric counting the amount of times any load balancer has been configured and errored, as an effect of node changes on the cluster",
            self.nodesync_errors.clone(),
        );
        registry.register(
            "service_controller_nodesync_latency_seconds",
            "A metric measuring the latency for nodesync which updates loadbalancer hosts on cluster node updates.",
            self.nodesync_latency.clone(),
        );
        registry.register(
            "service_controller_update_loadbalancer_host_latency_seconds",
            "A metric measuring the latency for updating each load balancer hosts.",
            self.lb_host_latency.clone(),
        );
        registry.register(
            "route_controller_route_sync",
            "A metric counting the amount of times routes have been synced with the cloud provider.",
            self.route_syncs.clone(),
        );
        registry.register(
            "node_controller_cloud_provider_taint_removal_delay_seconds",
            "Number of seconds after node creation when NodeController removed the cloud-provider taint of a single node.",
            self.taint_removal_delay.clone(),
        );
        registry.register(
            "node_controller_initial_node_sync_delay_seconds",
            "Number of seconds after node creation when NodeController finished the initial synchronization of a single node.",
            self.initial_sync_delay.clone(),
        );
    }

    /// A load balancer configured (ensure or host update), as an effect of a Service or node change.
    pub fn lb_synced(&self) {
        self.lb_syncs.inc();
    }

    /// One load balancer's host update (node sync) took `took`; `ok` false counts a node-sync error.
    pub fn lb_hosts_updated(&self, took: Duration, ok: bool) {
        self.lb_syncs.inc();
        self.lb_host_latency.observe(took.as_secs_f64());
        if !ok {
            self.nodesync_errors.inc();
        }
    }

    /// One node sync (every load balancer's hosts) took `took`.
    pub fn nodesync(&self, took: Duration) {
        self.nodesync_latency.observe(took.as_secs_f64());
    }

    /// One route reconciliation pass.
    pub fn route_synced(&self) {
        self.route_syncs.inc();
    }

    /// A node was initialised `since_creation` after it was created (taint removed, first sync done).
    pub fn node_initialised(&self, since_creation: Duration) {
        self.taint_removal_delay.observe(since_creation.as_secs_f64());
        self.initial_sync_delay.observe(since_creation.as_secs_f64());
    }

    /// Records a contained panic of one reconcile.
    pub fn panicked(&self, controller: &str) {
        self.panics
            .get_or_create(&ControllerLabel {
                controller: controller.to_string(),
            })
            .inc();
    }

    /// Records one reconcile.
    pub fn observe(&self, controller: &str, took: Duration, ok: bool) {
        let l = ControllerLabel {
            controller: controller.to_string(),
        };
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&l).inc();
        }
    }

    /// Sets a queue's depth.
    pub fn set_depth(&self, queue: &str, depth: usize) {
        self.depth
            .get_or_create(&QueueLabel {
                name: queue.to_string(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

/// The registry's OpenMetrics text as the Prometheus text format 0.0.4, which upstream serves (component-base
/// does not negotiate OpenMetrics): `# EOF` and `# UNIT` dropped; an OpenMetrics counter `x` (samples
/// `x_total`) declared as `x_total`; the families in `legacy_counters` (kept as gauges to keep upstream's
/// sample names without `_total`) declared counters, as upstream's are.
pub fn to_text_format(openmetrics: &str, legacy_counters: &[&str]) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name);
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# TYPE ", "# HELP "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            if counters.contains(name) {
                return Some(format!("{tag}{name}_total {tail}"));
            }
            if *tag == "# TYPE " && tail == "gauge" && legacy_counters.contains(&name) {
                return Some(format!("# TYPE {name} counter"));
            }
            None
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_depths_are_exposed() {
        let m = ControllerMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.observe("service", Duration::from_millis(20), true);
        m.observe("service", Duration::from_millis(20), false);
        m.set_depth("service", 3);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(
            s.contains("controller_reconcile_duration_seconds_count{controller=\"service\"} 2"),
            "{s}"
        );
        assert!(
            s.contains("controller_reconcile_errors_total{controller=\"service\"} 1"),
            "{s}"
        );
        assert!(s.contains("workqueue_depth{name=\"service\"} 3"), "{s}");
    }

    #[test]
    fn text_format_declares_counters_as_upstream() {
        let om = "# HELP a_errors Errors.\n# TYPE a_errors counter\na_errors_total{x=\"1\"} 2\n# HELP legacy Legacy.\n# TYPE legacy gauge\nlegacy{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# UNIT h seconds\n# EOF\n";
        let t = to_text_format(om, &["legacy"]);
        assert_eq!(
            t,
            "# HELP a_errors_total Errors.\n# TYPE a_errors_total counter\na_errors_total{x=\"1\"} 2\n# HELP legacy Legacy.\n# TYPE legacy counter\nlegacy{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn upstream_controller_series_with_their_buckets() {
        let m = ControllerMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.lb_synced();
        m.lb_hosts_updated(Duration::from_secs(3), false);
        m.nodesync(Duration::from_secs(3));
        m.route_synced();
        m.node_initialised(Duration::from_secs(20));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let text = to_text_format(&text, &[]);
        for want in [
            "service_controller_loadbalancer_sync_total 2",
            "service_controller_nodesync_error_total 1",
            "# TYPE service_controller_nodesync_error_total counter",
            "route_controller_route_sync_total 1",
            "service_controller_nodesync_latency_seconds_bucket{le=\"16384.0\"} 1",
            "service_controller_update_loadbalancer_host_latency_seconds_count 1",
            "node_controller_cloud_provider_taint_removal_delay_seconds_bucket{le=\"1024.0\"} 1",
            "node_controller_initial_node_sync_delay_seconds_bucket{le=\"16.0\"} 0",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }
}
