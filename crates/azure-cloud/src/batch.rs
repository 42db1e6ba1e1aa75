//! Group commit: concurrent callers queue an operation each; the first caller to find no applier running
//! becomes the applier, lets a burst gather for a few milliseconds, and applies every pending operation in
//! one batch (one read and one write of the shared resource), batch after batch, until none is left. Each
//! caller gets its own result. Used for route tables, load balancers and the security group.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// One step of the coalescing window of a burst.
pub const COALESCE_STEP: Duration = Duration::from_millis(2);
/// The longest a burst waits to gather before its first write.
pub const COALESCE_MAX: Duration = Duration::from_millis(50);

type Pending<Op, R> = Vec<(Op, oneshot::Sender<R>)>;

/// The queue of one shared resource.
pub struct GroupCommit<Op, R> {
    pending: Mutex<Pending<Op, R>>,
    applying: Mutex<bool>,
}

impl<Op, R> Default for GroupCommit<Op, R> {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            applying: Mutex::new(false),
        }
    }
}

struct LeaderGuard<'a>(&'a Mutex<bool>);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

impl<Op, R> GroupCommit<Op, R> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Queues `op` and waits for its result. `apply` gets a batch and returns one result per operation, in
    /// order. `None` when the applier was dropped before answering (the caller's future was cancelled).
    pub async fn submit<F, Fut>(&self, op: Op, apply: F) -> Option<R>
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((op, tx));
        let lead = {
            let mut a = self.applying.lock().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut *a, true)
        };
        if lead {
            // Whatever happens to this caller (even a dropped future), the next submitter can lead.
            let guard = LeaderGuard(&self.applying);
            self.coalesce().await;
            loop {
                let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
                if batch.is_empty() {
                    let mut a = self.applying.lock().unwrap_or_else(|p| p.into_inner());
                    // Re-check under the flag lock: an operation queued after the take must not be stranded.
                    if self.pending_len() == 0 {
                        *a = false;
                        std::mem::forget(guard);
                        break;
                    }
                    continue;
                }
                let (ops, txs): (Vec<Op>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
                let results = apply(ops).await;
                for (tx, r) in txs.into_iter().zip(results) {
                    let _ = tx.send(r);
                }
            }
        }
        rx.await.ok()
    }

    /// Lets a burst gather: waits while operations keep arriving, a few milliseconds at a time, at most
    /// [`COALESCE_MAX`]. A lone operation waits one step.
    async fn coalesce(&self) {
        let deadline = tokio::time::Instant::now() + COALESCE_MAX;
        let mut seen = 0;
        loop {
            tokio::time::sleep(COALESCE_STEP).await;
            let n = self.pending_len();
            if n == seen || tokio::time::Instant::now() >= deadline {
                return;
            }
            seen = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_burst_is_applied_in_few_batches_and_everyone_gets_their_result() {
        let q = Arc::new(GroupCommit::<usize, usize>::new());
        let batches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (q, batches) = (q.clone(), batches.clone());
            tasks.push(tokio::spawn(async move {
                q.submit(i, |ops| {
                    let batches = batches.clone();
                    async move {
                        batches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        ops.into_iter().map(|o| o * 2).collect()
                    }
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i * 2));
        }
        assert!(
            batches.load(Ordering::SeqCst) <= 3,
            "{} batches",
            batches.load(Ordering::SeqCst)
        );
    }
}
