//! The cloud-node and cloud-node-lifecycle controllers (k8s.io/cloud-provider semantics) over kube-rs.
//!
//! - cloud-node: a Node with the taint `node.cloudprovider.kubernetes.io/uninitialized` gets its provider id,
//!   instance-type, zone and region labels (current and beta keys) and addresses from InstancesV2, then loses
//!   the taint (event `Synced`); failures are retried with backoff and reported as events. Addresses of
//!   every node are refreshed every `node_status_update_frequency`.
//! - cloud-node-lifecycle: every `node_monitor_period`, a NotReady node is deleted only when the provider
//!   confirms its instance is gone; a stopped or deallocated instance gets the shutdown taint and (as
//!   upstream Azure does) `node.kubernetes.io/out-of-service:NoExecute`, both removed when the node is Ready. Errors (throttling, timeouts) never delete anything.

use crate::events::{EventType, Recorder};
use crate::informer::{NodeChange, NodeInformer};
use azure_cloud::provider::{CloudError, InstancesV2};
use k8s_openapi::api::core::v1::{Node, NodeAddress, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The taint kubelet sets with `--cloud-provider=external`.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The taint of shut-down instances.
pub const SHUTDOWN_TAINT: &str = "node.cloudprovider.kubernetes.io/shutdown";
/// The non-graceful-shutdown taint Azure adds to NotReady nodes whose instance is shut down (upstream
/// `updateNodeTaint`), so their pods and volumes are released.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// The component name on events.
pub const COMPONENT: &str = "cloud-node-controller";
/// Node initialisations in flight at most.
pub const INIT_CONCURRENCY: usize = 32;

/// Controller timing.
#[derive(Debug, Clone)]
pub struct Timing {
    /// `--node-status-update-frequency` (address refresh).
    pub node_status_update_frequency: Duration,
    /// `--node-monitor-period` (lifecycle).
    pub node_monitor_period: Duration,
    /// Where reconcile durations and errors go.
    pub metrics: crate::metrics::ControllerMetrics,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            node_status_update_frequency: Duration::from_secs(300),
            node_monitor_period: Duration::from_secs(5),
            metrics: Default::default(),
        }
    }
}

pub(crate) fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

fn taints_without(node: &Node, key: &str) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != key)
        .collect()
}

/// True when the node's Ready condition is True.
pub(crate) fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The labels and provider id the node controller sets (pure).
pub fn node_labels(md: &azure_cloud::provider::InstanceMetadata) -> serde_json::Map<String, serde_json::Value> {
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("node.kubernetes.io/instance-type", &md.instance_type),
        ("beta.kubernetes.io/instance-type", &md.instance_type),
        ("topology.kubernetes.io/zone", &md.zone),
        ("failure-domain.beta.kubernetes.io/zone", &md.zone),
        ("topology.kubernetes.io/region", &md.region),
        ("failure-domain.beta.kubernetes.io/region", &md.region),
    ] {
        if !v.is_empty() {
            labels.insert(k.to_string(), json!(v));
        }
    }
    labels
}

/// Runs both controllers until the future is dropped, over the shared Node cache.
pub async fn run(client: Client, cloud: Arc<dyn InstancesV2>, timing: Timing, nodes: NodeInformer) {
    tokio::join!(
        run_node_controller(client.clone(), cloud.clone(), timing.clone(), nodes.clone()),
        run_lifecycle_controller(client, cloud, timing, nodes)
    );
}

/// Runs cloud-node (initialisation of new Nodes, address refresh) alone until dropped
/// (`--controllers=*,-cloud-node-lifecycle`).
pub async fn run_node_controller(client: Client, cloud: Arc<dyn InstancesV2>, timing: Timing, nodes: NodeInformer) {
    let recorder = Recorder::new(client.clone(), COMPONENT);
    node_controller(client, cloud, recorder, timing, nodes).await
}

/// Runs cloud-node-lifecycle (deletion of Nodes whose VM is gone, the shutdown taint) alone until dropped
/// (`--controllers=*,-cloud-node`, upstream's chart default with a per-node agent).
pub async fn run_lifecycle_controller(
    client: Client,
    cloud: Arc<dyn InstancesV2>,
    timing: Timing,
    nodes: NodeInformer,
) {
    let recorder = Recorder::new(client.clone(), COMPONENT);
    lifecycle_controller(client, cloud, recorder, timing, nodes).await
}

/// Events published in the background and not yet taken by the API server, at most.
static PENDING_EVENTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// Publishes an event (reason doubles as action) on an object in the background, as client-go's broadcaster
/// does: a reconcile never waits for the API server to take its events. A failure is logged, never returned.
pub(crate) fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let reference = obj.object_ref(&());
    let reason = reason.to_string();
    // At most PENDING_EVENTS wait for the API server at once; beyond that an event is dropped, as client-go's
    // broadcaster drops events when its queue is full (5,000 nodes initialised at start-up would otherwise
    // park 5,000 publishing tasks — hundreds of MiB — behind the API-request limit).
    let Ok(permit) = PENDING_EVENTS.try_acquire() else {
        tracing::debug!(object = %reference.name.as_deref().unwrap_or_default(), %reason, "event queue full; event dropped");
        return;
    };
    let recorder = recorder.clone();
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(err) = recorder.publish(type_, &reason, &note, &reference).await {
            tracing::debug!(object = %reference.name.as_deref().unwrap_or_default(), %reason, error = %err, "cannot publish event");
        }
    });
}

fn event(recorder: &Recorder, node: &Node, type_: EventType, reason: &str, note: String) {
    publish(recorder, node, type_, reason, note);
}

/// Initialises one node; returns the error to retry on.
pub async fn initialize(api: &Api<Node>, cloud: &dyn InstancesV2, node: &Node) -> Result<(), CloudError> {
    let md = cloud.instance_metadata(node).await?;
    apply_initialisation(api, node, &md, &[]).await
}

/// Writes what initialisation sets (provider id unless set, labels of [`node_labels`] and `extra_labels`, the
/// node's addresses) and removes the uninitialised taint.
pub async fn apply_initialisation(
    api: &Api<Node>,
    node: &Node,
    md: &azure_cloud::provider::InstanceMetadata,
    extra_labels: &[(String, String)],
) -> Result<(), CloudError> {
    let name = node.name_any();
    let mut labels = node_labels(md);
    for (k, v) in extra_labels {
        labels.insert(k.clone(), json!(v));
    }
    let mut spec = json!({"taints": taints_without(node, UNINITIALIZED_TAINT)});
    if node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .is_none_or(str::is_empty)
    {
        spec["providerID"] = json!(md.provider_id);
    }
    // Addresses first: removing the taint is what marks the node initialised, and a watcher (the service
    // controller's backend pools) that sees an untainted node without its InternalIP leaves it out.
    let addresses = json!({"status": {"addresses": md.node_addresses}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&addresses))
        .await
        .map_err(|e| CloudError::Azure(format!("patching node {name} status: {e}")))?;
    let patch = json!({"metadata": {"labels": labels}, "spec": spec});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| CloudError::Azure(format!("patching node {name}: {e}")))?;
    tracing::info!(node = %name, provider_id = %md.provider_id, zone = %md.zone, instance_type = %md.instance_type, "node initialised");
    Ok(())
}

async fn node_controller(
    client: Client,
    cloud: Arc<dyn InstancesV2>,
    recorder: Recorder,
    timing: Timing,
    nodes: NodeInformer,
) {
    let api: Api<Node> = Api::all(client);
    let mut backoff: HashMap<String, u32> = HashMap::new();
    let mut changes = nodes.subscribe();
    nodes.ready().await;
    // Nodes waiting from before we started (or from before a lag): every tainted one in the cache.
    let tainted = |nodes: &NodeInformer| -> Vec<Arc<Node>> {
        nodes
            .nodes()
            .into_iter()
            .filter(|n| has_taint(n, UNINITIALIZED_TAINT))
            .collect()
    };
    let mut todo: std::collections::VecDeque<Arc<Node>> = tainted(&nodes).into();
    let mut refresh = tokio::time::interval(timing.node_status_update_frequency);
    // Retry timers belong to this controller (dropped with it), one per node.
    let mut retries: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Initialisations run concurrently, at most INIT_CONCURRENCY at once and one per node: the provider
    // answers them from shared cached lists (single flight), so a thousand new nodes cost the same ARM reads
    // whether they are initialised one by one or together, and start-up no longer waits for each in turn.
    type Init = std::pin::Pin<
        Box<dyn std::future::Future<Output = (Arc<Node>, Result<(), CloudError>, bool, Duration)> + Send>,
    >;
    let mut in_flight: futures::stream::FuturesUnordered<Init> = futures::stream::FuturesUnordered::new();
    let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
    // The periodic address refresh runs beside the initialisations, never in front of them.
    let mut refreshing: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = None;
    loop {
        while in_flight.len() < INIT_CONCURRENCY {
            let Some(node) = todo.pop_front() else { break };
            if !has_taint(&node, UNINITIALIZED_TAINT) || !busy.insert(node.name_any()) {
                continue;
            }
            let (api, cloud) = (api.clone(), cloud.clone());
            in_flight.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let (result, panicked) = match crate::runtime::contain(initialize(&api, cloud.as_ref(), &node)).await {
                    Ok(r) => (r, false),
                    Err(panic) => (Err(CloudError::Azure(format!("internal error (panic): {panic}"))), true),
                };
                (node, result, panicked, started.elapsed())
            }));
        }
        tokio::select! {
            Some((node, result, panicked, took)) = futures::StreamExt::next(&mut in_flight), if !in_flight.is_empty() => {
                let name = node.name_any();
                busy.remove(&name);
                if panicked {
                    tracing::error!(node = %name, error = ?result.as_ref().err(), "node initialisation panicked; retrying with backoff");
                    timing.metrics.panicked("cloud-node");
                }
                timing.metrics.observe("cloud-node", took, result.is_ok());
                match result {
                    Ok(()) => {
                        backoff.remove(&name);
                        if let Some(created) = node.metadata.creation_timestamp.as_ref() {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs_f64())
                                .unwrap_or(0.0);
                            let age = (now - created.0.as_second() as f64).max(0.0);
                            timing.metrics.node_initialised(Duration::from_secs_f64(age));
                        }
                        event(&recorder, &node, EventType::Normal, "Synced", "Node synced successfully".into());
                    }
                    Err(e) => {
                        let failures = backoff.entry(name.clone()).or_insert(0);
                        *failures += 1;
                        let wait = crate::runtime::retry_delay(crate::runtime::Backoff::NODE, *failures, &e)
                            .unwrap_or(crate::runtime::Backoff::NODE.max);
                        tracing::warn!(node = %name, error = %e, retry_in = ?wait, "failed to initialise node");
                        event(&recorder, &node, EventType::Warning, "FailedToInitializeNode", e.to_string());
                        if waiting.insert(name.clone()) {
                            retries.spawn(async move {
                                tokio::time::sleep(wait).await;
                                name
                            });
                        }
                    }
                }
            }
            change = changes.next() => match change {
                Some(NodeChange::Touched(n)) => todo.push_back(n),
                Some(NodeChange::Resynced) => todo.extend(tainted(&nodes)),
                None => return,
            },
            Some(Ok(name)) = retries.join_next() => {
                waiting.remove(&name);
                if let Some(n) = api.get_opt(&name).await.ok().flatten() {
                    todo.push_back(Arc::new(n));
                }
            }
            _ = refresh.tick(), if refreshing.is_none() => {
                let (api, cloud, current) = (api.clone(), cloud.clone(), nodes.nodes());
                refreshing = Some(Box::pin(async move { refresh_addresses(&api, cloud.as_ref(), &current).await }));
            }
            () = async { if let Some(r) = refreshing.as_mut() { r.await } }, if refreshing.is_some() => {
                refreshing = None;
            }
        }
    }
}

async fn refresh_addresses(api: &Api<Node>, cloud: &dyn InstancesV2, nodes: &[Arc<Node>]) {
    for node in nodes.iter().filter(|n| !has_taint(n, UNINITIALIZED_TAINT)) {
        let Ok(md) = cloud.instance_metadata(node).await else {
            continue;
        };
        if let Err(e) = update_addresses(api, node, &md.node_addresses).await {
            tracing::warn!(node = %node.name_any(), error = %e, "cannot update the node's addresses");
        }
    }
}

/// Writes a node's addresses when they differ from what it has; true when it wrote.
pub(crate) async fn update_addresses(
    api: &Api<Node>,
    node: &Node,
    addresses: &[NodeAddress],
) -> Result<bool, kube::Error> {
    let current = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    if current == addresses {
        return Ok(false);
    }
    let show = |a: &[NodeAddress]| {
        a.iter()
            .map(|x| format!("{}={}", x.type_, x.address))
            .collect::<Vec<_>>()
    };
    tracing::info!(node = %node.name_any(), from = ?show(&current), to = ?show(addresses), "node addresses changed");
    let p = json!({"status": {"addresses": addresses}});
    api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Merge(&p))
        .await?;
    Ok(true)
}

/// One lifecycle pass over `nodes` (the shared cache's).
pub async fn lifecycle_pass(
    api: &Api<Node>,
    cloud: &dyn InstancesV2,
    recorder: Option<&Recorder>,
    nodes: &[Arc<Node>],
) {
    for node in nodes {
        let name = node.name_any();
        if is_ready(node) {
            if has_taint(node, SHUTDOWN_TAINT) || has_taint(node, OUT_OF_SERVICE_TAINT) {
                let kept: Vec<Taint> = taints_without(node, SHUTDOWN_TAINT)
                    .into_iter()
                    .filter(|t| t.key != OUT_OF_SERVICE_TAINT)
                    .collect();
                let p = json!({"spec": {"taints": kept}});
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .is_ok()
                {
                    tracing::info!(node = %name, "node is Ready: removed shutdown and out-of-service taints");
                }
            }
            continue;
        }
        match cloud.instance_exists(node).await {
            Ok(false) => {
                tracing::info!(node = %name, "instance no longer exists: deleting node");
                if let Some(r) = recorder {
                    event(
                        r,
                        node,
                        EventType::Normal,
                        "DeletingNode",
                        format!("Deleting node {name} because it does not exist in the cloud provider"),
                    );
                }
                if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                    tracing::warn!(node = %name, error = %e, "cannot delete node");
                    if let Some(r) = recorder {
                        event(
                            r,
                            node,
                            EventType::Warning,
                            "DeletingNodeFailed",
                            format!("Error deleting node {name}: {e}"),
                        );
                    }
                }
                continue;
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot tell whether the instance exists; keeping the node");
                continue;
            }
        }
        match cloud.instance_shutdown(node).await {
            Ok(true) if !has_taint(node, SHUTDOWN_TAINT) || !has_taint(node, OUT_OF_SERVICE_TAINT) => {
                let mut taints: Vec<Taint> = taints_without(node, SHUTDOWN_TAINT)
                    .into_iter()
                    .filter(|t| t.key != OUT_OF_SERVICE_TAINT)
                    .collect();
                taints.push(Taint {
                    key: SHUTDOWN_TAINT.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
                taints.push(Taint {
                    key: OUT_OF_SERVICE_TAINT.into(),
                    value: Some("nodeshutdown".into()),
                    effect: "NoExecute".into(),
                    ..Default::default()
                });
                let p = json!({"spec": {"taints": taints}});
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .is_ok()
                {
                    tracing::info!(node = %name, "instance is shut down: tainted shutdown and out-of-service");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot tell whether the instance is shut down"),
        }
    }
}

async fn lifecycle_controller(
    client: Client,
    cloud: Arc<dyn InstancesV2>,
    recorder: Recorder,
    timing: Timing,
    nodes: NodeInformer,
) {
    let api: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(timing.node_monitor_period);
    nodes.ready().await;
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let ok = match crate::runtime::contain(lifecycle_pass(&api, cloud.as_ref(), Some(&recorder), &nodes.nodes()))
            .await
        {
            Ok(()) => true,
            Err(panic) => {
                tracing::error!(panic = %panic, "node lifecycle pass panicked; the next pass runs as scheduled");
                timing.metrics.panicked("cloud-node-lifecycle");
                false
            }
        };
        timing.metrics.observe("cloud-node-lifecycle", started.elapsed(), ok);
    }
}

/// Route controller settings (`--cluster-name`, `--cluster-cidr`).
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Cluster name passed to the provider.
    pub cluster_name: String,
    /// Cluster CIDRs (dual-stack: two); routes inside them that no node needs are removed.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// `--route-reconciliation-period`.
    pub period: Duration,
    /// Where reconcile durations and errors go.
    pub metrics: crate::metrics::ControllerMetrics,
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut v: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if v.is_empty() {
        v.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    v
}

/// One route reconciliation: a route per node pod CIDR, stale routes inside the cluster CIDRs removed,
/// `NetworkUnavailable` set from the outcome. Returns (created, deleted).
pub async fn route_pass(
    api: &Api<Node>,
    routes: &dyn azure_cloud::provider::Routes,
    settings: &RouteSettings,
    nodes: &[Arc<Node>],
) -> Result<(usize, usize), CloudError> {
    route_pass_with_events(api, routes, settings, nodes, None).await
}

/// [`route_pass`] that also reports a route it could not create as upstream's `FailedToCreateRoute` Warning
/// event on the node.
pub async fn route_pass_with_events(
    api: &Api<Node>,
    routes: &dyn azure_cloud::provider::Routes,
    settings: &RouteSettings,
    nodes: &[Arc<Node>],
    recorder: Option<&Recorder>,
) -> Result<(usize, usize), CloudError> {
    for node in nodes {
        let unmanaged = node
            .labels()
            .get("kubernetes.azure.com/managed")
            .is_some_and(|v| v == "false");
        routes.set_node_unmanaged(&node.name_any(), unmanaged);
    }
    let existing = routes.list_routes(&settings.cluster_name).await?;
    let has = |node: &str, cidr: &str| {
        existing
            .iter()
            .any(|r| r.target_node == node && r.destination_cidrs.iter().any(|c| c == cidr) && !r.blackhole)
    };
    let mut creates = Vec::new();
    for node in nodes {
        let name = node.name_any();
        for cidr in pod_cidrs(node).into_iter().filter(|c| !has(&name, c)) {
            let route = azure_cloud::provider::Route {
                name: String::new(),
                target_node: name.clone(),
                destination_cidrs: vec![cidr],
                blackhole: false,
            };
            let hint = node.metadata.uid.clone().unwrap_or_default();
            creates.push(async move {
                let started = std::time::Instant::now();
                let result = routes.create_route(&settings.cluster_name, &hint, &route).await;
                if let (Err(e), Some(r)) = (&result, recorder) {
                    let took = started.elapsed();
                    let cidr = route.destination_cidrs.join(",");
                    event(
                        r,
                        node,
                        EventType::Warning,
                        "FailedToCreateRoute",
                        format!(
                            "Could not create route {hint} {cidr} for node {} after {took:?}: {e}",
                            route.target_node
                        ),
                    );
                }
                (route.target_node.clone(), result)
            });
        }
    }
    let created = futures::future::join_all(creates).await;
    let mut failed: HashMap<String, String> = HashMap::new();
    for (node, r) in &created {
        if let Err(e) = r {
            tracing::warn!(node = %node, error = %e, "failed to create route");

            failed.insert(node.clone(), e.to_string());
        }
    }
    // Stale routes: inside the cluster CIDRs, for a node that is gone or no longer has that CIDR.
    let wanted: HashMap<String, Vec<String>> = nodes.iter().map(|n| (n.name_any(), pod_cidrs(n))).collect();
    let in_cluster = |cidr: &str| {
        cidr.parse::<ipnet::IpNet>()
            .is_ok_and(|c| settings.cluster_cidrs.iter().any(|cc| cc.contains(&c)))
    };
    let stale: Vec<_> = existing
        .iter()
        .filter(|r| r.destination_cidrs.iter().all(|c| in_cluster(c)))
        .filter(|r| {
            r.blackhole
                || !wanted
                    .get(&r.target_node)
                    .is_some_and(|c| r.destination_cidrs.iter().all(|d| c.contains(d)))
        })
        .collect();
    let deleted = futures::future::join_all(stale.iter().map(|r| routes.delete_route(&settings.cluster_name, r))).await;
    let deleted_ok = deleted.iter().filter(|r| r.is_ok()).count();
    // NetworkUnavailable reflects whether every route of the node exists.
    for node in nodes.iter().filter(|n| !pod_cidrs(n).is_empty()) {
        let name = node.name_any();
        let (status, reason, message) = match failed.get(&name) {
            Some(e) => (
                "True",
                "NoRouteCreated",
                format!("RouteController failed to create a route: {e}"),
            ),
            None => ("False", "RouteCreated", "RouteController created a route".to_string()),
        };
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"))
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()));
        if current == Some((status.to_string(), reason.to_string())) {
            continue;
        }
        let p = json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": status, "reason": reason, "message": message}]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&p))
            .await
        {
            tracing::warn!(node = %name, error = %e, "cannot update NetworkUnavailable");
        }
    }
    Ok((created.len() - failed.len(), deleted_ok))
}

/// Runs the route controller until dropped.
pub async fn route_controller(
    client: Client,
    routes: Arc<dyn azure_cloud::provider::Routes>,
    settings: RouteSettings,
    nodes: NodeInformer,
) {
    let recorder = Recorder::new(client.clone(), "route_controller");
    let api: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(settings.period);
    nodes.ready().await;
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        settings.metrics.route_synced();
        let current = nodes.nodes();
        let pass = route_pass_with_events(&api, routes.as_ref(), &settings, &current, Some(&recorder));
        let result = crate::runtime::contain(pass).await.unwrap_or_else(|panic| {
            settings.metrics.panicked("route");
            Err(CloudError::Azure(format!("internal error (panic): {panic}")))
        });
        settings.metrics.observe("route", started.elapsed(), result.is_ok());
        match result {
            Ok((c, d)) if c + d > 0 => tracing::info!(created = c, deleted = d, "routes reconciled"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "route reconciliation failed"),
        }
    }
}
