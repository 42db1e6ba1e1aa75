//! Group commit: concurrent callers queue an operation each; a caller that finds no applier running becomes
//! the applier, lets a burst gather for a few milliseconds, and applies every pending operation in one batch
//! (one read and one write of the shared resource). Each caller gets its own result. Used for route tables,
//! load balancers, the security group and each VM's disks.
//!
//! Cancellation-safe: every caller takes part. An applier applies the batch holding its own operation and
//! the ones that queued behind it (at most [`MAX_BATCHES_PER_APPLIER`]), then hands the applier role to a
//! waiting caller, so its own call returns even under sustained load. If an applier's future is dropped (a timeout, a gRPC deadline), the operations of its
//! batch whose callers still wait go back to the front of the queue and a waiting caller takes over at once:
//! no operation is lost and none waits for an unrelated later submit. Operations whose callers have gone
//! are dropped before a batch is applied, so when every caller is cancelled (a controller stopped on losing
//! its lease) nothing more is written. Operations must therefore be declarative (idempotent): one whose
//! batch was cut short may be applied again.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// One step of the coalescing window of a burst.
pub const COALESCE_STEP: Duration = Duration::from_millis(2);
/// The longest a burst waits to gather before its first write.
pub const COALESCE_MAX: Duration = Duration::from_millis(50);
/// Batches one applier writes before it hands over (so its own call returns under sustained load).
pub const MAX_BATCHES_PER_APPLIER: usize = 8;

type Pending<Op, R> = Vec<(Op, oneshot::Sender<R>)>;

/// The queue of one shared resource.
pub struct GroupCommit<Op, R> {
    pending: Mutex<Pending<Op, R>>,
    applying: Mutex<bool>,
    handoff: Notify,
}

impl<Op, R> Default for GroupCommit<Op, R> {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            applying: Mutex::new(false),
            handoff: Notify::new(),
        }
    }
}

/// Held by the applier: on drop (normal end or cancellation) the batch in flight, if any, goes back to the
/// front of the queue for the callers still waiting, the role is released and a waiter is woken.
struct ApplierGuard<'a, Op, R> {
    queue: &'a GroupCommit<Op, R>,
    in_flight: Pending<Op, R>,
}

impl<Op, R> Drop for ApplierGuard<'_, Op, R> {
    fn drop(&mut self) {
        let live: Pending<Op, R> = self.in_flight.drain(..).filter(|(_, tx)| !tx.is_closed()).collect();
        let more = {
            let mut p = self.queue.lock_pending();
            if !live.is_empty() {
                let later = std::mem::take(&mut *p);
                *p = live;
                p.extend(later);
            }
            !p.is_empty()
        };
        *self.queue.applying.lock().unwrap_or_else(|p| p.into_inner()) = false;
        if more {
            self.queue.handoff.notify_one();
        }
    }
}

impl<Op, R> GroupCommit<Op, R> {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending<Op, R>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<Op: Clone, R> GroupCommit<Op, R> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn pending_len(&self) -> usize {
        self.lock_pending().len()
    }

    fn try_lead(&self) -> bool {
        let mut a = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *a, true)
    }

    /// Queues `op` and waits for its result. `apply` gets a batch and returns one result per operation, in
    /// order. `None` only when `apply` returned fewer results than operations.
    pub async fn submit<F, Fut>(&self, op: Op, apply: F) -> Option<R>
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.lock_pending().push((op, tx));
        let mut from_idle = true;
        loop {
            // An applier goes on with the batches that queued behind it (a burst's second and third batch are
            // written by the same applier, so its callers' next steps stay together), at most
            // MAX_BATCHES_PER_APPLIER, then hands over so its own call returns under sustained load.
            let mut batches = 0;
            while batches < MAX_BATCHES_PER_APPLIER && self.try_lead() {
                self.apply_one_batch(&apply, from_idle && batches == 0).await;
                batches += 1;
                if self.pending_len() == 0 {
                    break;
                }
            }
            from_idle = false;
            tokio::select! {
                biased;
                r = &mut rx => return r.ok(),
                _ = self.handoff.notified() => {}
            }
        }
    }

    /// One batch: every pending operation whose caller still waits.
    async fn apply_one_batch<F, Fut>(&self, apply: &F, from_idle: bool)
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let mut guard = ApplierGuard {
            queue: self,
            in_flight: Vec::new(),
        };
        if from_idle {
            self.coalesce().await;
        }
        guard.in_flight = std::mem::take(&mut *self.lock_pending())
            .into_iter()
            .filter(|(_, tx)| !tx.is_closed())
            .collect();
        if guard.in_flight.is_empty() {
            return;
        }
        let ops: Vec<Op> = guard.in_flight.iter().map(|(op, _)| op.clone()).collect();
        let results = apply(ops).await;
        for ((_, tx), r) in std::mem::take(&mut guard.in_flight).into_iter().zip(results) {
            let _ = tx.send(r);
        }
        // The guard releases the role and wakes a waiter when more is pending.
    }

    /// Lets a burst gather: waits while operations keep arriving, a few milliseconds at a time, at most
    /// [`COALESCE_MAX`]. A lone operation waits one step.
    async fn coalesce(&self) {
        let deadline = crate::clock::instant_after(tokio::time::Instant::now(), COALESCE_MAX);
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
    use std::sync::{Arc, Mutex};

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

    #[tokio::test]
    async fn a_cancelled_applier_loses_nothing_and_strands_no_one() {
        let q = Arc::new(GroupCommit::<usize, usize>::new());
        let applied = Arc::new(Mutex::new(Vec::<usize>::new()));
        let slow = |q: Arc<GroupCommit<usize, usize>>, applied: Arc<Mutex<Vec<usize>>>, i: usize| async move {
            q.submit(i, |ops| {
                let applied = applied.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    applied.lock().unwrap().extend(ops.iter().copied());
                    ops.into_iter().map(|o| o + 1000).collect()
                }
            })
            .await
        };
        // The first caller becomes the applier; others queue behind it; it is cancelled mid-batch.
        let first = tokio::spawn(slow(q.clone(), applied.clone(), 0));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let others: Vec<_> = (1..5)
            .map(|i| tokio::spawn(slow(q.clone(), applied.clone(), i)))
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        first.abort();
        // Every other caller is answered without any further submit.
        for (i, t) in others.into_iter().enumerate() {
            let r = tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("stranded")
                .unwrap();
            assert_eq!(r, Some(i + 1 + 1000));
        }
        let got = applied.lock().unwrap().clone();
        assert!(
            !got.contains(&0),
            "the cancelled caller's operation was applied: {got:?}"
        );
    }

    #[tokio::test]
    async fn when_every_caller_is_gone_nothing_is_applied() {
        let q = Arc::new(GroupCommit::<usize, usize>::new());
        let batches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (q, batches) = (q.clone(), batches.clone());
                tokio::spawn(async move {
                    q.submit(i, |ops| {
                        let batches = batches.clone();
                        async move {
                            batches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            ops
                        }
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = batches.load(Ordering::SeqCst);
        for t in &tasks {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            batches.load(Ordering::SeqCst),
            started,
            "a batch started after every caller was cancelled"
        );
    }

    #[tokio::test]
    async fn under_sustained_load_the_applier_returns() {
        let q = Arc::new(GroupCommit::<usize, usize>::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A stream of submitters keeps the queue busy.
        let feeder = {
            let (q, stop) = (q.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 1;
                let mut set = tokio::task::JoinSet::new();
                while !stop.load(Ordering::SeqCst) {
                    let q = q.clone();
                    set.spawn(async move {
                        q.submit(i, |ops| async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            ops
                        })
                        .await
                    });
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                while set.join_next().await.is_some() {}
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mine = q.submit(0, |ops| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            ops
        });
        let r = tokio::time::timeout(Duration::from_secs(2), mine).await;
        stop.store(true, Ordering::SeqCst);
        assert_eq!(r.expect("the applier's own call never returned"), Some(0));
        tokio::time::timeout(Duration::from_secs(5), feeder)
            .await
            .unwrap()
            .unwrap();
    }
}
