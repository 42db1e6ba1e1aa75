//! TTL caches with a single flight per key: N concurrent readers of a missing or expired key cause one
//! load; a failed load is shared with the readers that waited for it (no storm of retries), and never
//! cached. Our own writes update or invalidate entries.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How a read treats an expired entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Reload when expired.
    Default,
    /// Serve a stale entry if there is one (load only when absent).
    AllowStale,
    /// Always reload.
    ForceRefresh,
}

struct SlotState<V, E> {
    value: Option<(Arc<V>, Instant)>,
    /// Bumped by every finished load.
    generation: u64,
    last_error: Option<(u64, E)>,
}

struct Slot<V, E> {
    state: tokio::sync::Mutex<SlotState<V, E>>,
    generation_hint: std::sync::atomic::AtomicU64,
}

/// A TTL cache of `K → Arc<V>`.
pub struct TtlCache<K, V, E> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Arc<Slot<V, E>>>>,
}

impl<K, V, E> std::fmt::Debug for TtlCache<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V, E: Clone> TtlCache<K, V, E> {
    /// A cache whose entries live `ttl` (zero: every read loads, but concurrent reads still share one load).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn slot(&self, key: &K) -> Arc<Slot<V, E>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: tokio::sync::Mutex::new(SlotState {
                        value: None,
                        generation: 0,
                        last_error: None,
                    }),
                    generation_hint: Default::default(),
                })
            })
            .clone()
    }

    /// Returns the entry, loading it with `load` when needed. Concurrent callers for one key wait for a
    /// single load and share its result (value or error).
    pub async fn get<F, Fut>(&self, key: &K, mode: ReadMode, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        let seen = slot.generation_hint.load(std::sync::atomic::Ordering::Acquire);
        let mut st = slot.state.lock().await;
        // A load finished while we waited: share its outcome.
        if st.generation != seen {
            if let Some((g, e)) = &st.last_error {
                if *g == st.generation {
                    return Err(e.clone());
                }
            }
            if let Some((v, _)) = &st.value {
                return Ok(v.clone());
            }
        }
        if let Some((v, at)) = &st.value {
            let fresh = at.elapsed() < self.ttl;
            if mode == ReadMode::AllowStale || (mode == ReadMode::Default && fresh) {
                return Ok(v.clone());
            }
        }
        let result = load().await;
        st.generation += 1;
        slot.generation_hint
            .store(st.generation, std::sync::atomic::Ordering::Release);
        match result {
            Ok(v) => {
                let v = Arc::new(v);
                st.value = Some((v.clone(), Instant::now()));
                st.last_error = None;
                Ok(v)
            }
            Err(e) => {
                st.last_error = Some((st.generation, e.clone()));
                Err(e)
            }
        }
    }

    /// The entry if present and fresh, without loading.
    pub async fn peek(&self, key: &K) -> Option<Arc<V>> {
        let slot = self.slots.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()?;
        let st = slot.state.lock().await;
        st.value
            .as_ref()
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// Stores a value we know is current (after our own successful write).
    pub async fn set(&self, key: &K, value: V) {
        let slot = self.slot(key);
        let mut st = slot.state.lock().await;
        st.value = Some((Arc::new(value), Instant::now()));
        st.last_error = None;
    }

    /// Drops an entry (after a write whose result we do not hold, or a 412).
    pub fn invalidate(&self, key: &K) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn single_flight_and_ttl() {
        let cache: Arc<TtlCache<String, u32, String>> = Arc::new(TtlCache::new(Duration::from_secs(60)));
        let loads = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, l) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&"k".to_string(), ReadMode::Default, || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(l.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(*t.await.unwrap().unwrap(), 1);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let load = || async { Ok::<u32, String>(99) };
        assert_eq!(*cache.get(&"k".into(), ReadMode::Default, load).await.unwrap(), 1);
        assert_eq!(*cache.get(&"k".into(), ReadMode::ForceRefresh, load).await.unwrap(), 99);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(cache.peek(&"k".into()).await.is_none());
        assert_eq!(
            *cache
                .get(&"k".into(), ReadMode::AllowStale, || async { Ok(7) })
                .await
                .unwrap(),
            99
        );
        assert_eq!(
            *cache
                .get(&"k".into(), ReadMode::Default, || async { Ok(7) })
                .await
                .unwrap(),
            7
        );
        cache.set(&"k".into(), 5).await;
        assert_eq!(*cache.peek(&"k".into()).await.unwrap(), 5);
        cache.invalidate(&"k".into());
        assert!(cache.peek(&"k".into()).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_load_is_shared_not_cached() {
        let cache: Arc<TtlCache<u8, u32, String>> = Arc::new(TtlCache::new(Duration::from_secs(60)));
        let loads = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, l) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&1, ReadMode::Default, || async {
                    l.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err::<u32, _>("throttled".to_string())
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), "throttled");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(*cache.get(&1, ReadMode::Default, || async { Ok(3) }).await.unwrap(), 3);
    }
}
