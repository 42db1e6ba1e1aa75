//! Kubernetes events (`events.k8s.io/v1`) with a small, bounded aggregation cache.
//!
//! Repeated events (same object, type, reason and note within [`SERIES_WINDOW`]) are folded into one event
//! whose `series` counts them, as client-go's recorder and kube-runtime's do. kube-runtime's recorder keeps a
//! full copy of every event it published for six minutes in a map without a bound (≈ 3 KiB each: 7 MiB at
//! 1,000 nodes and 200 Services, far more at start-up of a large cluster); this one keeps a 64-bit key, the
//! event's name and its count, at most [`CACHE_CAPACITY`] of them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;

pub use kube::runtime::events::EventType;

/// Events repeated within this window are counted on the first one instead of being created anew.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Aggregated events remembered at most; beyond it the oldest are forgotten (their next repetition creates
/// a new event, which is all that is lost).
pub const CACHE_CAPACITY: usize = 4096;

/// What is remembered of a published event.
#[derive(Debug, Clone)]
struct Seen {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// Publishes events for one reporting controller. Cheap to clone (shared cache).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: Arc<str>,
    cache: Arc<Mutex<HashMap<u64, Seen>>>,
}

impl Recorder {
    /// A recorder reporting as `controller` (also the reporting instance, as kube-runtime's default).
    pub fn new(client: Client, controller: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            cache: Arc::default(),
        }
    }

    /// Publishes one event about `regarding`: creates it, or counts a repetition on the event already
    /// published within [`SERIES_WINDOW`] (a merge patch of its `series`).
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = event_key(&self.controller, type_, reason, note, regarding);
        let repeat = self.remember_repeat(key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        if let Some(seen) = repeat {
            let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count: seen.count, last_observed_time: MicroTime(now) }
            });
            match events
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The API server dropped the event (its TTL): publish it anew.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(type_, reason, note, regarding, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.remember_new(
            key,
            Seen {
                name: name.into(),
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// When `key` was published within the window: counts this repetition and returns what to patch.
    fn remember_repeat(&self, key: u64, now: Timestamp) -> Option<Seen> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let seen = cache.get_mut(&key)?;
        if seen.last + SERIES_WINDOW <= now {
            cache.remove(&key);
            return None;
        }
        seen.count = seen.count.saturating_add(1);
        seen.last = now;
        Some(seen.clone())
    }

    fn remember_new(&self, key: u64, seen: Seen) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&key) {
            evict(&mut cache, seen.last);
        }
        cache.insert(key, seen);
    }

    fn new_event(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> K8sEvent {
        let controller = self.controller.to_string();
        K8sEvent {
            action: Some(reason.to_string()),
            reason: Some(reason.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(note.to_string()),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(controller),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    /// Events remembered for aggregation (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Makes room in a full cache: forgets what is past the window, then the oldest quarter.
fn evict(cache: &mut HashMap<u64, Seen>, now: Timestamp) {
    cache.retain(|_, s| s.last + SERIES_WINDOW > now);
    if cache.len() < CACHE_CAPACITY {
        return;
    }
    let mut times: Vec<Timestamp> = cache.values().map(|s| s.last).collect();
    times.sort_unstable();
    let cut = times[times.len() / 4];
    cache.retain(|_, s| s.last > cut);
}

/// The aggregation key: what makes two events "the same" (client-go's: object, type, reason, message and
/// reporting component).
fn event_key(controller: &str, type_: EventType, reason: &str, note: &str, r: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    controller.hash(&mut h);
    matches!(type_, EventType::Warning).hash(&mut h);
    reason.hash(&mut h);
    note.hash(&mut h);
    (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(last: Timestamp) -> Seen {
        Seen {
            name: "e".into(),
            count: 1,
            last,
        }
    }

    #[test]
    fn eviction_keeps_the_cache_bounded_and_the_newest() {
        let now = Timestamp::now();
        let mut cache = HashMap::new();
        for i in 0..CACHE_CAPACITY as u64 {
            cache.insert(
                i,
                seen(now - SignedDuration::from_millis((CACHE_CAPACITY as i64 - i as i64) * 10)),
            );
        }
        evict(&mut cache, now);
        assert!(cache.len() <= CACHE_CAPACITY * 3 / 4 + 1, "{}", cache.len());
        assert!(cache.contains_key(&(CACHE_CAPACITY as u64 - 1)), "the newest stays");
        assert!(!cache.contains_key(&0), "the oldest goes");
    }

    #[test]
    fn eviction_drops_expired_first() {
        let now = Timestamp::now();
        let mut cache = HashMap::new();
        for i in 0..CACHE_CAPACITY as u64 {
            let last = if i % 2 == 0 {
                now - SignedDuration::from_mins(7)
            } else {
                now
            };
            cache.insert(i, seen(last));
        }
        evict(&mut cache, now);
        assert_eq!(cache.len(), CACHE_CAPACITY / 2);
        assert!(cache.keys().all(|k| k % 2 == 1));
    }

    #[test]
    fn the_key_tells_objects_reasons_and_notes_apart() {
        let r = |name: &str| ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        };
        let k = event_key("c", EventType::Normal, "Ensured", "ok", &r("a"));
        assert_eq!(k, event_key("c", EventType::Normal, "Ensured", "ok", &r("a")));
        assert_ne!(k, event_key("c", EventType::Normal, "Ensured", "ok", &r("b")));
        assert_ne!(k, event_key("c", EventType::Warning, "Ensured", "ok", &r("a")));
        assert_ne!(k, event_key("c", EventType::Normal, "Ensuring", "ok", &r("a")));
        assert_ne!(k, event_key("c", EventType::Normal, "Ensured", "other", &r("a")));
        assert_ne!(k, event_key("d", EventType::Normal, "Ensured", "ok", &r("a")));
    }
}
