//! Controller metrics: reconcile durations and errors per controller, and work-queue depths.
//!
//! Names follow the controller-runtime convention operators already chart:
//! `controller_reconcile_duration_seconds{controller}`, `controller_reconcile_errors_total{controller}`,
//! `controller_reconcile_panics_total{controller}`, `workqueue_depth{name}`.

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

/// Metrics shared by the controllers (cheap to clone: the families are shared).
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    errors: Family<ControllerLabel, Counter>,
    panics: Family<ControllerLabel, Counter>,
    depth: Family<QueueLabel, Gauge>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(histogram),
            errors: Family::default(),
            panics: Family::default(),
            depth: Family::default(),
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
}
