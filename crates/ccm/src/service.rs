//! The service controller (k8s.io/cloud-provider `service-lb-controller` semantics) over kube-rs.
//!
//! Services of type LoadBalancer get the finalizer `service.kubernetes.io/load-balancer-cleanup`, then
//! `EnsureLoadBalancer` with the current backend nodes, then `status.loadBalancer.ingress`; a Service
//! deleted or changed to another type has its load balancer removed (`EnsureLoadBalancerDeleted`), its
//! status cleared and the finalizer removed. Events use upstream's reasons. Failures are retried per
//! Service with exponential backoff from 5 s to 300 s. A change of the backend node set (a node added or
//! removed, the exclusion label, the autoscaler's deletion taint; not readiness, as upstream since KEP-3458)
//! calls `UpdateLoadBalancer` for every LoadBalancer Service; the
//! node set is also re-synced every 100 s. Services are reconciled by `--concurrent-service-syncs` workers
//! at once: the provider group-commits their writes, so concurrency costs no extra ARM writes.

use crate::events::{EventType, Recorder};
use crate::informer::NodeInformer;
use crate::runtime::{contain, retry_delay, Backoff};
use azure_cloud::loadbalancer::backends::EXCLUDE_LABEL;
use azure_cloud::loadbalancer::service::EventSink;
use azure_cloud::provider::{CloudError, LoadBalancer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Namespace, Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The finalizer that keeps a Service until its load balancer is gone.
pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
/// The component name on events.
pub const COMPONENT: &str = "service-controller";
/// Periodic re-sync of the backend node set (default of `--node-sync-period`).
pub const NODE_SYNC_PERIOD: Duration = Duration::from_secs(100);

/// Service controller settings.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// `--cluster-name`.
    pub cluster_name: String,
    /// `--concurrent-service-syncs`.
    pub workers: usize,
    /// Where reconcile durations, errors and the queue depth go.
    pub metrics: crate::metrics::ControllerMetrics,
    /// `--node-sync-period`.
    pub node_sync_period: Duration,
    /// The provider chooses load balancers by Service labels (`serviceLabelSelector`): a label change is a
    /// change to ensure (otherwise labels are not looked at, as upstream).
    pub labels_matter: bool,
}

/// A work queue with per-key de-duplication: a key is processed by one worker at a time; a key added while
/// in progress is processed again afterwards. Retries wait in the queue itself (one due time per key, never
/// a timer per failure), driven by [`Queue::run_timers`], which the controller owns: when the controller
/// stops, no retry fires.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
    timers_changed: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    again: HashSet<String>,
    /// Keys waiting for a retry, with when (one entry per key).
    delayed: HashMap<String, tokio::time::Instant>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a key (no-op when queued; deferred when in progress).
    pub fn add(&self, key: String) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.again.insert(key);
        } else if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds a key after a delay. A key already waiting keeps one entry, due at the later of the two times
    /// (so a `Retry-After` is never cut short by a later, shorter backoff).
    pub fn add_after(&self, key: String, delay: Duration) {
        let due = azure_cloud::clock::instant_after(tokio::time::Instant::now(), delay);
        {
            let mut s = self.lock();
            let e = s.delayed.entry(key).or_insert(due);
            if *e < due {
                *e = due;
            }
        }
        self.timers_changed.notify_one();
    }

    /// Keys waiting for a retry.
    pub fn delayed(&self) -> usize {
        self.lock().delayed.len()
    }

    /// Moves due retries to the queue, forever (until the owner drops this future).
    pub async fn run_timers(&self) {
        loop {
            let changed = self.timers_changed.notified();
            let now = tokio::time::Instant::now();
            let (due, next) = {
                let mut s = self.lock();
                let due: Vec<String> = s
                    .delayed
                    .iter()
                    .filter(|(_, t)| **t <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &due {
                    s.delayed.remove(k);
                }
                (due, s.delayed.values().min().copied())
            };
            for k in due {
                self.add(k);
            }
            match next {
                Some(t) => tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = changed => {}
                },
                None => changed.await,
            }
        }
    }

    /// Waits for the next key.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Marks a key done (re-queued if it was added meanwhile).
    pub fn done(&self, key: &str) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            s.again.remove(key)
        };
        if again {
            self.add(key.to_string());
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why one reconcile failed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    /// The provider failed (typed: Retry-After, permanent input errors).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The API server refused a write (finalizer, status).
    #[error("{0}")]
    Kube(String),
    /// The reconcile panicked (a bug): retried with backoff like a transient failure.
    #[error("internal error (panic): {0}")]
    Panic(String),
}

impl From<String> for SyncError {
    fn from(s: String) -> Self {
        SyncError::Kube(s)
    }
}

fn key_of(s: &Service) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

fn wants_load_balancer(s: &Service) -> bool {
    s.metadata.deletion_timestamp.is_none() && s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

fn has_finalizer(s: &Service) -> bool {
    s.finalizers().iter().any(|f| f == FINALIZER)
}

fn ingress_ips(status: Option<&LoadBalancerStatus>) -> Vec<String> {
    status
        .and_then(|s| s.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

fn current_ingress(s: &Service) -> Vec<String> {
    ingress_ips(s.status.as_ref().and_then(|st| st.load_balancer.as_ref()))
}

/// What decides whether a Service must be ensured again: uid, spec and annotations; its labels when the
/// provider selects load balancers by them, and its namespace's labels when those are watched.
fn fingerprint(
    s: &Service,
    labels_matter: bool,
    namespace_labels: Option<&std::collections::BTreeMap<String, String>>,
) -> String {
    let labels = labels_matter.then_some(&s.metadata.labels);
    json!([s.metadata.uid, s.spec, s.metadata.annotations, labels, namespace_labels]).to_string()
}

/// Namespace labels from the controller's Namespace cache, for the provider's `serviceNamespaceSelector`.
pub struct NamespaceStore(pub Store<Namespace>);

impl azure_cloud::loadbalancer::service::NamespaceLabels for NamespaceStore {
    fn labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.0
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }
}

/// The Namespace cache of the service controller (only when the provider selects Services by namespace
/// labels): the store the provider reads and the writer the controller's watch fills.
pub type NamespaceCache = (Store<Namespace>, reflector::store::Writer<Namespace>);

/// The cluster autoscaler's taint on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// The nodes a load balancer should send traffic to — k8s.io/cloud-provider's stable node set (KEP-3458,
/// the only behaviour since Kubernetes 1.30): not being deleted, not labelled for exclusion, not tainted for
/// deletion by the cluster autoscaler. Readiness is not a criterion: a NotReady node stays in the pools (the
/// health probes take it out of rotation), so a flapping node costs no ARM write. Each node is reduced to what
/// the provider reads (name, uid, labels, deletion, provider ID, addresses), so the shared list costs about
/// 1 KiB per node instead of a full Node's images, conditions and capacity.
pub fn backend_nodes(nodes: &[Arc<Node>]) -> Vec<Node> {
    let mut out: Vec<Node> = nodes
        .iter()
        .filter(|n| {
            n.metadata.deletion_timestamp.is_none()
                && !n.labels().contains_key(EXCLUDE_LABEL)
                && !n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
        })
        .map(|n| slim(n))
        .collect();
    out.sort_by_key(|n| n.name_any());
    out
}

/// The parts of `node` a load balancer provider reads.
fn slim(node: &Node) -> Node {
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Node {
        metadata: ObjectMeta {
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            labels: node.metadata.labels.clone(),
            deletion_timestamp: node.metadata.deletion_timestamp.clone(),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: node.status.as_ref().and_then(|s| s.addresses.clone()),
            ..Default::default()
        }),
    }
}

/// A comparable view of the backend set (names, exclusion, and addresses).
fn node_set_key(nodes: &[Node]) -> BTreeSet<String> {
    nodes
        .iter()
        .map(|n| {
            let addrs = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .map(|a| a.iter().map(|x| x.address.clone()).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            format!("{}={addrs}", n.name_any())
        })
        .collect()
}

/// Publishes the provider's Warning events on the Service.
pub struct RecorderSink(pub Recorder);

impl EventSink for RecorderSink {
    fn warning(&self, service: &Service, reason: &str, message: &str) {
        crate::controllers::publish(&self.0, service, EventType::Warning, reason, message.to_string());
    }
}

struct Controller {
    client: Client,
    lb: Arc<dyn LoadBalancer>,
    settings: ServiceSettings,
    recorder: Recorder,
    services: Store<Service>,
    nodes: NodeInformer,
    queue: Arc<Queue>,
    failures: Mutex<HashMap<String, u32>>,
    /// Per Service whose input is invalid: the fingerprint that failed (not retried until it changes).
    invalid: Mutex<HashMap<String, String>>,
    /// Per Service: the fingerprint last ensured and the ingress IPs we wrote for it.
    synced: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// Bumped on every node event; the backend list is recomputed when it changes.
    node_generation: std::sync::atomic::AtomicU64,
    backends: Mutex<Option<(u64, Arc<Vec<Node>>)>>,
    /// Namespaces, when the provider selects Services by namespace labels.
    namespaces: Option<NamespaceStore>,
}

impl Controller {
    fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        crate::controllers::publish(&self.recorder, svc, type_, reason, note);
    }

    /// The backend nodes, computed once per node-store change and shared by every worker (200 workers each
    /// holding their own copy of 1,000 Nodes would cost hundreds of MiB).
    fn backends(&self) -> Arc<Vec<Node>> {
        let generation = self.node_generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cached = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, v)) = cached.as_ref() {
            if *g == generation {
                return v.clone();
            }
        }
        let fresh = backend_nodes(&self.nodes.nodes());
        // Most node events (status heartbeats) leave the backend view as it was: keep sharing the old list so
        // workers still holding it and new ones hold one copy between them.
        let v = match cached.take() {
            Some((_, old)) if *old == fresh => old,
            _ => Arc::new(fresh),
        };
        *cached = Some((generation, v.clone()));
        v
    }

    fn api(&self, svc: &Service) -> Api<Service> {
        Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default())
    }

    /// Adds (`add`) or removes our finalizer, keeping the others. The patch carries the resourceVersion so a
    /// concurrent change of the list is not overwritten; on a conflict (our cached copy was stale) the
    /// Service is read fresh and the patch retried once.
    async fn set_finalizer(&self, svc: &Service, add: bool) -> Result<(), String> {
        let api = self.api(svc);
        let name = svc.name_any();
        let mut current = svc.clone();
        for attempt in 0..2 {
            let mut list: Vec<String> = current
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            if add {
                list.push(FINALIZER.into());
            }
            if list.as_slice() == current.finalizers() {
                return Ok(());
            }
            let patch = json!({"metadata": {"finalizers": list, "resourceVersion": current.resource_version()}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 => {
                    current = api
                        .get(&name)
                        .await
                        .map_err(|e| format!("re-reading the Service after a conflict: {e}"))?;
                }
                Err(e) => return Err(format!("updating finalizers: {e}")),
            }
        }
        Err("updating finalizers: the Service kept changing".into())
    }

    async fn set_status(&self, svc: &Service, status: &LoadBalancerStatus) -> Result<(), String> {
        let patch = json!({"status": {"loadBalancer": status}});
        self.api(svc)
            .patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| format!("updating status: {e}"))
    }

    /// One reconcile of one Service.
    async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(svc) = self.cached(key) else {
            self.forget(key);
            return Ok(());
        };
        let cluster = &self.settings.cluster_name;
        if !wants_load_balancer(&svc) {
            self.forget(key);
            if !has_finalizer(&svc) && current_ingress(&svc).is_empty() {
                return Ok(());
            }
            self.event(
                &svc,
                EventType::Normal,
                "DeletingLoadBalancer",
                "Deleting load balancer".into(),
            );
            if let Err(e) = self.lb.ensure_load_balancer_deleted(cluster, &svc).await {
                self.event(
                    &svc,
                    EventType::Warning,
                    "DeleteLoadBalancerFailed",
                    format!("Error deleting load balancer: {e}"),
                );
                return Err(e.into());
            }
            if !current_ingress(&svc).is_empty() && svc.metadata.deletion_timestamp.is_none() {
                self.set_status(&svc, &LoadBalancerStatus::default()).await?;
            }
            if has_finalizer(&svc) {
                self.set_finalizer(&svc, false).await?;
            }
            self.event(
                &svc,
                EventType::Normal,
                "DeletedLoadBalancer",
                "Deleted load balancer".into(),
            );
            tracing::info!(service = %key, "load balancer deleted");
            return Ok(());
        }
        // What the provider reads for serviceNamespaceSelector (unknown namespace included).
        let ns_labels = self.namespaces.as_ref().map(|store| {
            use azure_cloud::loadbalancer::service::NamespaceLabels;
            store.labels(&svc.namespace().unwrap_or_default())
        });
        let ns_labels = ns_labels.flatten();
        let fp = fingerprint(&svc, self.settings.labels_matter, ns_labels.as_ref());
        // Invalid input already reported for exactly this Service: nothing to retry until it changes.
        if self.invalid.lock().unwrap_or_else(|p| p.into_inner()).get(key) == Some(&fp) {
            return Ok(());
        }
        // Unchanged since we ensured it: nothing to do. An empty ingress with our write on record is the cache
        // not yet showing our own status update (the finalizer and status patches each come back as an event).
        if let Some((done, ingress)) = self.synced.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            let now = current_ingress(&svc);
            if *done == fp && !ingress.is_empty() && (now.is_empty() || now == *ingress) {
                return Ok(());
            }
        }
        if !has_finalizer(&svc) {
            self.set_finalizer(&svc, true).await?;
        }
        self.event(
            &svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer".into(),
        );
        let nodes = self.backends();
        if nodes.is_empty() {
            self.event(
                &svc,
                EventType::Warning,
                "UnAvailableLoadBalancer",
                "There are no available nodes for LoadBalancer".into(),
            );
        }
        self.settings.metrics.lb_synced();
        match self.lb.ensure_load_balancer_shared(cluster, &svc, nodes.clone()).await {
            Ok(status) => {
                if ingress_ips(Some(&status)) != current_ingress(&svc) {
                    self.set_status(&svc, &status).await?;
                }
                self.synced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.to_string(), (fp, ingress_ips(Some(&status))));
                self.event(
                    &svc,
                    EventType::Normal,
                    "EnsuredLoadBalancer",
                    "Ensured load balancer".into(),
                );
                tracing::info!(service = %key, ingress = ?ingress_ips(Some(&status)), "load balancer ensured");
                Ok(())
            }
            Err(e) => {
                let note = if e.is_permanent() {
                    format!("Error syncing load balancer: {e} (not retried until the Service changes)")
                } else {
                    format!("Error syncing load balancer: {e}")
                };
                self.event(&svc, EventType::Warning, "SyncLoadBalancerFailed", note);
                if e.is_permanent() {
                    self.invalid
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.to_string(), fp);
                }
                Err(e.into())
            }
        }
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let key = self.queue.next().await;
            self.settings.metrics.set_depth(COMPONENT, self.queue.len());
            let started = std::time::Instant::now();
            // A panic costs this key a retry, not the worker: the key is released below either way. The sync is
            // boxed: 1,000 idle workers would otherwise each hold its largest state inline (8 MiB).
            let result = match contain(Box::pin(self.sync(&key))).await {
                Ok(r) => r,
                Err(panic) => {
                    tracing::error!(service = %key, panic = %panic, "service sync panicked; retrying with backoff");
                    self.settings.metrics.panicked("service");
                    if let Some(svc) = self.cached(&key) {
                        self.event(
                            &svc,
                            EventType::Warning,
                            "SyncLoadBalancerFailed",
                            format!("Error syncing load balancer: internal error (panic): {panic}"),
                        );
                    }
                    Err(SyncError::Panic(panic))
                }
            };
            self.settings
                .metrics
                .observe("service", started.elapsed(), result.is_ok());
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(()) => {
                    failures.remove(&key);
                }
                Err(e) => {
                    let n = failures.entry(key.clone()).or_insert(0);
                    *n += 1;
                    let delay = match &e {
                        SyncError::Cloud(c) => retry_delay(Backoff::SERVICE, *n, c),
                        _ => Some(Backoff::SERVICE.delay(*n)),
                    };
                    match delay {
                        Some(wait) => {
                            tracing::warn!(service = %key, error = %e, retry_in = ?wait, "service sync failed");
                            self.queue.add_after(key.clone(), wait);
                        }
                        None => {
                            tracing::warn!(service = %key, error = %e, "service sync failed on invalid input; not retried until the Service changes");
                            failures.remove(&key);
                        }
                    }
                }
            }
            drop(failures);
            self.queue.done(&key);
        }
    }

    /// Drops what is remembered of a Service that is gone or no longer a LoadBalancer (its last ensured
    /// fingerprint and an invalid-input mark), so neither map grows with deleted Services.
    fn forget(&self, key: &str) {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.invalid.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    fn cached(&self, key: &str) -> Option<Arc<Service>> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        self.services.get(&ObjectRef::new(name).within(ns))
    }

    /// Calls UpdateLoadBalancer for every LoadBalancer Service whose load balancer we ensured (concurrently,
    /// `workers` at a time). Services not ensured yet get their nodes when a worker ensures them.
    async fn update_hosts(&self, nodes: &Arc<Vec<Node>>) -> bool {
        let ensured: HashSet<String> = self
            .synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let services: Vec<Arc<Service>> = self
            .services
            .state()
            .into_iter()
            .filter(|s| wants_load_balancer(s) && has_finalizer(s) && ensured.contains(&key_of(s)))
            .collect();
        let results: Vec<bool> = futures::stream::iter(services.into_iter().map(|svc| async move {
            if nodes.is_empty() {
                self.event(
                    &svc,
                    EventType::Warning,
                    "UnAvailableLoadBalancer",
                    "There are no available nodes for LoadBalancer".into(),
                );
            }
            let started = std::time::Instant::now();
            let result = self
                .lb
                .update_load_balancer_shared(&self.settings.cluster_name, &svc, nodes.clone())
                .await;
            self.settings
                .metrics
                .lb_hosts_updated(started.elapsed(), result.is_ok());
            match result {
                Ok(()) => {
                    self.event(
                        &svc,
                        EventType::Normal,
                        "UpdatedLoadBalancer",
                        "Updated load balancer with new hosts".into(),
                    );
                    true
                }
                Err(e) => {
                    self.event(
                        &svc,
                        EventType::Warning,
                        "UpdateLoadBalancerFailed",
                        format!("Error updating load balancer with new hosts: {e}"),
                    );
                    false
                }
            }
        }))
        .buffer_unordered(self.settings.workers.max(1))
        .collect()
        .await;
        results.into_iter().all(|ok| ok)
    }

    /// Re-syncs backends when the node set changes (checked on node events, debounced) and every
    /// `--node-sync-period`.
    async fn node_sync(self: Arc<Self>, changed: Arc<Notify>) {
        let mut last: Option<BTreeSet<String>> = None;
        let mut tick = tokio::time::interval(self.settings.node_sync_period);
        loop {
            let periodic = tokio::select! {
                _ = changed.notified() => false,
                _ = tick.tick() => true,
            };
            // Let a burst of node events settle: wait until no node changed for a quiet second, at most
            // 10 s (both bounded by the sync period), so nodes joining one after another share one update.
            let quiet = Duration::from_secs(1).min(self.settings.node_sync_period);
            let cap = Duration::from_secs(10).min(self.settings.node_sync_period);
            let started = tokio::time::Instant::now();
            loop {
                let before = self.node_generation.load(std::sync::atomic::Ordering::Acquire);
                tokio::time::sleep(quiet).await;
                let after = self.node_generation.load(std::sync::atomic::Ordering::Acquire);
                if after == before || started.elapsed() >= cap {
                    break;
                }
            }
            let nodes = self.backends();
            let key = node_set_key(&nodes);
            if last.as_ref() == Some(&key) && !periodic {
                continue;
            }
            if last.is_none() {
                // The first view: services are ensured with it by the workers.
                last = Some(key);
                continue;
            }
            if last.as_ref() == Some(&key) {
                tracing::debug!(nodes = nodes.len(), "periodic node sync: updating load balancers");
            } else {
                tracing::info!(nodes = nodes.len(), "backend node set changed; updating load balancers");
            }
            let started = std::time::Instant::now();
            let ok = self.update_hosts(&nodes).await;
            self.settings.metrics.nodesync(started.elapsed());
            if ok {
                last = Some(key);
            }
        }
    }
}

/// Runs the service controller until aborted.
pub async fn run(
    client: Client,
    lb: Arc<dyn LoadBalancer>,
    settings: ServiceSettings,
    recorder: Recorder,
    nodes: NodeInformer,
    namespaces: Option<NamespaceCache>,
) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (ns_store, ns_writer) = match namespaces {
        Some((store, writer)) => (Some(store), Some(writer)),
        None => (None, None),
    };
    let ctl = Arc::new(Controller {
        client: client.clone(),
        lb,
        recorder,
        services: services.clone(),
        nodes: nodes.clone(),
        queue: Arc::new(Queue::default()),
        failures: Mutex::new(HashMap::new()),
        invalid: Mutex::new(HashMap::new()),
        synced: Mutex::new(HashMap::new()),
        node_generation: std::sync::atomic::AtomicU64::new(0),
        backends: Mutex::new(None),
        namespaces: ns_store.clone().map(NamespaceStore),
        settings,
    });
    let node_changed = Arc::new(Notify::new());
    let svc_stream = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(svc_writer)
        .touched_objects();
    let mut node_changes = nodes.subscribe();
    // Workers start once both caches are filled, so the first ensures see every node.
    let feed_services = {
        let ctl = ctl.clone();
        async move {
            let mut s = svc_stream.boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(svc) => ctl.queue.add(key_of(&svc)),
                    Err(e) => tracing::warn!(error = %e, "service watch failed; retrying"),
                }
            }
        }
    };
    // A namespace's labels changed: its Services may belong on another load balancer now.
    let feed_namespaces = {
        let ctl = ctl.clone();
        let client = client.clone();
        async move {
            let Some(writer) = ns_writer else { return };
            let mut s = watcher(Api::<Namespace>::all(client), watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects()
                .boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(ns) => {
                        let name = ns.name_any();
                        for svc in ctl.services.state() {
                            if svc.namespace().as_deref() == Some(name.as_str()) && wants_load_balancer(&svc) {
                                ctl.queue.add(key_of(&svc));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                }
            }
        }
    };
    let feed_nodes = {
        let changed = node_changed.clone();
        let ctl = ctl.clone();
        async move {
            // Any change (or a lag, which may hide several) bumps the generation the backend list is keyed by.
            while node_changes.next().await.is_some() {
                ctl.node_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                changed.notify_one()
            }
        }
    };
    let start_workers = {
        let ctl = ctl.clone();
        async move {
            let _ = services.wait_until_ready().await;
            if let Some(ns) = &ns_store {
                let _ = ns.wait_until_ready().await;
            }
            ctl.nodes.ready().await;
            // The workers belong to this future: aborting the controller (lease lost) aborts them.
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..ctl.settings.workers.max(1) {
                workers.spawn(ctl.clone().worker());
            }
            tracing::info!(workers = workers.len(), "service controller running");
            tokio::select! {
                _ = ctl.node_sync(node_changed) => {}
                // A worker never returns (panics are contained per key); if one does, the controller ends and
                // the supervisor fails /healthz.
                r = workers.join_next() => tracing::error!(result = ?r.map(|r| r.map_err(|e| e.to_string())), "a service worker stopped"),
            }
        }
    };
    let timers = {
        let ctl = ctl.clone();
        async move { ctl.queue.run_timers().await }
    };
    tokio::join!(feed_services, feed_namespaces, feed_nodes, timers, start_workers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5s_to_300s() {
        let d: Vec<u64> = (1..=8).map(|n| Backoff::SERVICE.delay(n).as_secs()).collect();
        assert_eq!(d, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(Backoff::SERVICE.delay(100).as_secs(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_in_the_queue_one_per_key_never_cut_short() {
        let q = Arc::new(Queue::default());
        let driver = tokio::spawn({
            let q = q.clone();
            async move { q.run_timers().await }
        });
        // A Retry-After of 30 s, then (a watch event's failure) a 5 s backoff for the same key: one entry,
        // due at 30 s.
        q.add_after("a".into(), Duration::from_secs(30));
        q.add_after("a".into(), Duration::from_secs(5));
        assert_eq!(q.delayed(), 1);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(q.is_empty(), "retried before Retry-After");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
        q.done("a");
        // Dropping the driver (the controller stops) means no retry fires.
        q.add_after("b".into(), Duration::from_secs(1));
        driver.abort();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn queue_deduplicates_and_requeues_keys_added_while_active() {
        let q = Queue::default();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a".into()); // while active
        assert_eq!(q.len(), 1);
        q.done("a");
        assert_eq!(q.len(), 2, "a is back after b");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[test]
    fn backends_are_the_stable_node_set() {
        let node = |name: &str, ready: &str, excluded: bool| {
            let mut n: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": {"big": "x".repeat(100)}},
                "spec": {"providerID": format!("azure:///{name}"), "podCIDR": "10.0.0.0/24"},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                           "images": [{"names": ["a"], "sizeBytes": 1}]},
            }))
            .unwrap();
            if excluded {
                n.labels_mut().insert(EXCLUDE_LABEL.into(), "".into());
            }
            Arc::new(n)
        };
        let mut deleting = (*node("e", "True", false)).clone();
        deleting.metadata.deletion_timestamp = serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        let mut draining = (*node("f", "True", false)).clone();
        draining.spec.get_or_insert_with(Default::default).taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: TO_BE_DELETED_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let got = backend_nodes(&[
            node("b", "True", false),
            node("a", "True", false),
            node("c", "False", false),
            node("d", "True", true),
            Arc::new(deleting),
            Arc::new(draining),
        ]);
        let names: Vec<String> = got.iter().map(|n| n.name_any()).collect();
        assert_eq!(
            names,
            ["a", "b", "c"],
            "NotReady c stays; excluded, deleting and draining nodes go"
        );
        // Only what the provider reads is kept.
        let a = &got[0];
        assert_eq!(
            a.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
            Some("azure:///a")
        );
        assert!(a.spec.as_ref().is_some_and(|s| s.pod_cidr.is_none()));
        let status = a.status.as_ref().unwrap();
        assert_eq!(status.addresses.as_ref().map(Vec::len), Some(1));
        assert!(status.conditions.is_none() && status.images.is_none());
        assert!(a.metadata.annotations.is_none());
    }
}
