//! The controller runtime shared by every controller: what keeps the controllers honest.
//!
//! - [`Health`]: `/healthz` fails (500) with a reason once any controller task has ended unexpectedly, so the
//!   kubelet restarts the pod and the lease moves on. No controller dies quietly.
//! - [`Supervisor`]: the controller tasks of one leadership term in a `JoinSet`: aborting it (lease lost,
//!   shutdown) or dropping it stops every task, and everything those tasks own (workers, retry timers).
//! - [`contain`]: runs one reconcile with panics caught, so a panic costs that key a retry, not a worker.
//! - [`Backoff`] and [`retry_delay`]: the one backoff of the controllers, honouring ARM's `Retry-After` and
//!   never retrying input that cannot succeed until the object changes.

use azure_cloud::provider::CloudError;
use futures::FutureExt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Process health for `/healthz`: ok, or the reason it is not.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<Option<String>>>);

impl Health {
    /// Marks the process unhealthy (the first reason is kept).
    pub fn fail(&self, reason: impl Into<String>) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            let reason = reason.into();
            tracing::error!(reason = %reason, "health check now failing: the pod should be restarted");
            *r = Some(reason);
        }
    }

    /// `Ok` when healthy, else the reason.
    pub fn status(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(r) => Err(r.clone()),
        }
    }
}

/// The panic message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs `fut`, turning a panic into `Err(message)`.
pub async fn contain<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| panic_message(p.as_ref()))
}

/// The controller tasks of one leadership term. Dropping it aborts them all.
#[derive(Default)]
pub struct Supervisor {
    tasks: tokio::task::JoinSet<&'static str>,
}

impl Supervisor {
    /// Starts a named controller task. A controller runs until aborted: returning is an error.
    pub fn spawn(&mut self, name: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            fut.await;
            name
        });
    }

    /// Number of tasks running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no task runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Aborts every task and waits until they have stopped (so nothing they own acts after this returns).
    pub async fn stop(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until a task ends and says which and why; pending forever when none runs.
    pub async fn exited(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(Ok(name)) => format!("controller {name} exited"),
            Some(Err(e)) if e.is_panic() => {
                format!("a controller task panicked: {}", panic_message(e.into_panic().as_ref()))
            }
            Some(Err(e)) => format!("a controller task was cancelled: {e}"),
            None => std::future::pending().await,
        }
    }
}

/// Exponential backoff per key: `min`, doubling, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The service controller's: 5 s → 300 s (upstream's).
    pub const SERVICE: Backoff = Backoff {
        min: Duration::from_secs(5),
        max: Duration::from_secs(300),
    };
    /// The node controller's: 1 s → 300 s.
    pub const NODE: Backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// The delay after `failures` consecutive failures (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        self.min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.max)
    }
}

/// When to retry a key after its `failures`-th consecutive failure with `err`: the backoff, but never
/// before ARM's `Retry-After` (clamped by the pipeline to an hour); `None` for input that cannot succeed
/// until the object changes.
pub fn retry_delay(backoff: Backoff, failures: u32, err: &CloudError) -> Option<Duration> {
    if err.is_permanent() {
        return None;
    }
    let d = backoff.delay(failures);
    Some(err.retry_after().map_or(d, |ra| d.max(ra)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_cloud::arm::ArmError;

    #[test]
    fn retry_delays() {
        let b = Backoff::SERVICE;
        assert_eq!(b.delay(1), Duration::from_secs(5));
        assert_eq!(b.delay(2), Duration::from_secs(10));
        assert_eq!(b.delay(100), Duration::from_secs(300));
        let throttled = CloudError::Arm(ArmError::Throttled {
            operation: "op".into(),
            resource: "r".into(),
            bucket: "b".into(),
            retry_after: Duration::from_secs(30),
        });
        assert_eq!(retry_delay(b, 1, &throttled), Some(Duration::from_secs(30)));
        assert_eq!(retry_delay(b, 7, &throttled), Some(Duration::from_secs(300)));
        assert_eq!(
            retry_delay(b, 1, &CloudError::InvalidInput("bad annotation".into())),
            None
        );
        assert_eq!(
            retry_delay(b, 1, &CloudError::Conflict("port".into())),
            Some(Duration::from_secs(5))
        );
    }

    #[tokio::test]
    async fn panics_are_contained_and_exits_reported() {
        let r = contain(async { panic!("boom {}", 7) }).await;
        assert_eq!(r, Err::<(), _>("boom 7".into()));
        assert_eq!(contain(async { 3 }).await, Ok(3));
        let mut s = Supervisor::default();
        s.spawn("quits", async {});
        assert_eq!(s.exited().await, "controller quits exited");
        s.spawn("panics", async { panic!("kaput") });
        assert!(s.exited().await.contains("kaput"));
        let h = Health::default();
        assert!(h.status().is_ok());
        h.fail("first");
        h.fail("second");
        assert_eq!(h.status(), Err("first".into()));
    }

    #[tokio::test]
    async fn stopping_aborts_everything_the_tasks_own() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut s = Supervisor::default();
        let f = flag.clone();
        s.spawn("owner", async move {
            // A nested JoinSet (workers) owned by the task: aborted with it.
            let mut workers = tokio::task::JoinSet::new();
            workers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                f.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.stop().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !flag.load(std::sync::atomic::Ordering::SeqCst),
            "a worker outlived its controller"
        );
        assert!(s.is_empty());
    }
}
