//! The LoadBalancer applier: turns a Service into its public IPs, its part of the cluster's load balancer and
//! its part of the security group, with writes group-committed per resource.
//!
//! Per Service: public IPs first (one PUT each when missing or different), then the LB (every concurrent
//! Ensure/Update/Delete for the same LB merges into one read and one PUT), then the NSG (the same), then
//! the service's leftovers elsewhere (the other LB of the internal/external pair, public IPs it no longer
//! uses). The LB and NSG copies our last write returned are reused (with their ETags) so a steady cluster
//! costs no reads; a concurrent writer shows up as 412 and costs one re-read. A batch that changes nothing
//! writes nothing.

use super::annotations::{self, ServiceLbSpec, Warning};
use super::backends::{eligible, node_ip_pool_addresses};
use super::frontend::{
    bound_services, plan_frontends, rebind, FrontendContext, FrontendKind, PlannedPublicIp, PublicIpSource, CLUSTER_TAG,
};
use super::membership::{Membership, PoolRef};
use super::names::{self, backend_pool_name, load_balancer_name, service_base_name, Family};
use super::plan::{self, FrontendWish, ServiceWish};
use super::rules::{expected_rules, RuleContext};
use super::security::{self, allow_specs, NsgWish};
use crate::arm::cache::{ReadMode, TtlCache};
use crate::arm::ArmError;
use crate::batch::GroupCommit;
use crate::cloud::ArmClients;
use crate::config::CloudConfig;
use crate::provider::CloudError;
use crate::vmset::VmSet;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Receives the provider's Warning events about a Service (invalid ranges, conflicting configuration).
pub trait EventSink: Send + Sync {
    /// A Warning event on the Service.
    fn warning(&self, service: &Service, reason: &str, message: &str);
}

fn arm(e: ArmError) -> CloudError {
    CloudError::Arm(e)
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

use crate::arm::to_json as to_value;

fn from_value<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, CloudError> {
    serde_json::from_value(v).map_err(|e| CloudError::Azure(format!("cannot encode the {what}: {e}")))
}

/// `<namespace>/<name>`.
pub fn service_key(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

fn tags_of(v: &Value) -> BTreeMap<String, String> {
    v.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One operation on one LB.
#[derive(Debug, Clone)]
enum LbOp {
    /// Make the service's part of the LB exactly this.
    Ensure(Box<ServiceWish>),
    /// Remove everything the service owns.
    Remove(String),
    /// Only backend membership (UpdateLoadBalancer).
    Nodes,
}

type LbResult = Result<Option<Arc<Value>>, CloudError>;

/// A cached copy of a resource (our last write or read) and when it was taken; `None` = known absent.
type Cached = Option<(Option<Arc<Value>>, Instant)>;

struct LbState {
    queue: GroupCommit<LbOp, LbResult>,
    last: Mutex<Cached>,
}

/// Public IPs of a resource group by lower-cased name.
type PipMap = Mutex<HashMap<String, Arc<Value>>>;

/// The applier of one cluster.
pub struct LoadBalancerApplier {
    cfg: Arc<CloudConfig>,
    clients: ArmClients,
    vmset: Arc<dyn VmSet>,
    membership: Membership,
    lbs: Mutex<HashMap<String, Arc<LbState>>>,
    nsg_queue: GroupCommit<NsgWish, Result<(), CloudError>>,
    nsg_last: Mutex<Cached>,
    pips: TtlCache<String, PipMap, ArmError>,
    nodes: Mutex<Option<Arc<Vec<Node>>>>,
    lb_ttl: Duration,
    events: Mutex<Option<Arc<dyn EventSink>>>,
}

/// What Ensure found out, for the status and the NSG.
struct Frontends {
    wishes: Vec<FrontendWish>,
    /// Public frontends: family → address (PIP).
    public: Vec<(Family, String)>,
    /// PIP ids the service uses (kept when cleaning up).
    used_pips: BTreeSet<String>,
}

impl LoadBalancerApplier {
    /// An applier over the given clients.
    pub fn new(cfg: Arc<CloudConfig>, clients: ArmClients, vmset: Arc<dyn VmSet>) -> Self {
        let secs = |v: i64| Duration::from_secs(u64::try_from(v).unwrap_or(0));
        Self {
            membership: Membership::new(clients.clone(), vmset.clone(), cfg.clone()),
            lb_ttl: secs(cfg.load_balancer_cache_ttl_in_seconds),
            pips: TtlCache::new(secs(cfg.public_ip_cache_ttl_in_seconds)),
            cfg,
            clients,
            vmset,
            lbs: Mutex::new(HashMap::new()),
            nsg_queue: GroupCommit::new(),
            nsg_last: Mutex::new(None),
            nodes: Mutex::new(None),
            events: Mutex::new(None),
        }
    }

    /// Where Warning events about Services go (the CCM's event recorder).
    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn warn(&self, service: &Service, w: &Warning) {
        tracing::warn!(service = %service_key(service), reason = w.reason, "{}", w.message);
        if let Some(sink) = self.events.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            sink.warning(service, w.reason, &w.message);
        }
    }

    fn standard(&self) -> bool {
        self.cfg.is_standard_sku()
    }

    fn node_ip_mode(&self) -> bool {
        self.cfg
            .load_balancer_backend_pool_configuration_type
            .eq_ignore_ascii_case("nodeIP")
    }

    /// Whether node membership of this LB kind is left to someone else
    /// (`preConfiguredBackendPoolLoadBalancerTypes`).
    fn preconfigured(&self, internal: bool) -> bool {
        match self
            .cfg
            .pre_configured_backend_pool_load_balancer_types
            .to_ascii_lowercase()
            .as_str()
        {
            "all" => true,
            "internal" => internal,
            "external" => !internal,
            _ => false,
        }
    }

    fn lb_rg(&self) -> &str {
        if self.cfg.load_balancer_resource_group.is_empty() {
            &self.cfg.resource_group
        } else {
            &self.cfg.load_balancer_resource_group
        }
    }

    fn network_subscription(&self) -> &str {
        if self.cfg.network_resource_subscription_id.is_empty() {
            &self.cfg.subscription_id
        } else {
            &self.cfg.network_resource_subscription_id
        }
    }

    fn lb_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/{name}",
            self.network_subscription(),
            self.lb_rg()
        )
    }

    fn vnet_id(&self) -> String {
        let rg = if self.cfg.vnet_resource_group.is_empty() {
            &self.cfg.resource_group
        } else {
            &self.cfg.vnet_resource_group
        };
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{}",
            self.network_subscription(),
            self.cfg.vnet_name
        )
    }

    fn primary_vm_set(&self) -> &str {
        if self.cfg.vm_type.eq_ignore_ascii_case("standard") {
            &self.cfg.primary_availability_set_name
        } else {
            &self.cfg.primary_scale_set_name
        }
    }

    fn state(&self, lb_name: &str) -> Arc<LbState> {
        self.lbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(lower(lb_name))
            .or_insert_with(|| {
                Arc::new(LbState {
                    queue: GroupCommit::new(),
                    last: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Keeps the node set for the batch appliers; copies it only when it differs from the one kept (a burst of
    /// Services passes the same set each time).
    fn remember_nodes(&self, nodes: &[Node]) {
        let mut kept = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let same = kept.as_ref().is_some_and(|k| {
            k.len() == nodes.len()
                && k.iter().zip(nodes).all(|(a, b)| {
                    a.metadata.name == b.metadata.name
                        && a.metadata.labels == b.metadata.labels
                        && a.status.as_ref().map(|s| &s.addresses) == b.status.as_ref().map(|s| &s.addresses)
                })
        });
        if !same {
            *kept = Some(Arc::new(nodes.to_vec()));
        }
    }

    fn known_nodes(&self) -> Option<Arc<Vec<Node>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    // ---------------------------------------------------------------- reads

    /// The LB (cached copy within its TTL unless `fresh`).
    async fn read_lb(&self, lb_name: &str, fresh: bool) -> Result<Option<Arc<Value>>, CloudError> {
        let st = self.state(lb_name);
        if !fresh {
            if let Some((v, at)) = st.last.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                if at.elapsed() < self.lb_ttl {
                    return Ok(v);
                }
            }
        }
        let got = match self.clients.load_balancers.get(self.lb_rg(), lb_name).await {
            Ok(lb) => Some(Arc::new(to_value(&lb))),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(arm(e)),
        };
        *st.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((got.clone(), Instant::now()));
        Ok(got)
    }

    async fn pip_map(&self, rg: &str) -> Result<Arc<PipMap>, CloudError> {
        let client = self.clients.public_ips.clone();
        let rg_owned = rg.to_string();
        self.pips
            .get(&lower(rg), ReadMode::Default, || async move {
                // A resource group that does not exist holds no public IP (ARM: 404 ResourceGroupNotFound);
                // deleting a Service that names one must complete.
                let list = match client.list(&rg_owned).await {
                    Err(e) if e.is_not_found() => Vec::new(),
                    other => other?,
                };
                Ok(Mutex::new(
                    list.iter()
                        .filter_map(|p| Some((lower(p.resource.name.as_deref()?), Arc::new(to_value(p)))))
                        .collect(),
                ))
            })
            .await
            .map_err(arm)
    }

    fn pip_set(map: &PipMap, name: &str, v: Option<Value>) {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        match v {
            Some(v) => {
                m.insert(lower(name), Arc::new(v));
            }
            None => {
                m.remove(&lower(name));
            }
        }
    }

    fn pip_get(map: &PipMap, name: &str) -> Option<Arc<Value>> {
        map.lock().unwrap_or_else(|p| p.into_inner()).get(&lower(name)).cloned()
    }

    // ---------------------------------------------------------------- public IPs

    /// Creates or updates a managed PIP (one PUT only when missing or different); returns (id, address).
    async fn ensure_managed_pip(&self, p: &PlannedPublicIp, key: &str) -> Result<(String, String), CloudError> {
        let map = self.pip_map(&p.resource_group).await?;
        let current = Self::pip_get(&map, &p.name);
        let mut body = match &current {
            Some(cur) => (**cur).clone(),
            None => {
                let mut b = json!({
                    "location": self.cfg.location,
                    "sku": {"name": p.sku},
                    "properties": {
                        "publicIPAllocationMethod": "Static",
                        "publicIPAddressVersion": p.version,
                    },
                });
                if !p.zones.is_empty() {
                    b["zones"] = json!(p.zones);
                }
                if let Some(prefix) = &p.prefix_id {
                    b["properties"]["publicIPPrefix"] = json!({"id": prefix});
                }
                b
            }
        };
        // Tags: ours win, the service binding is merged with services already bound.
        let mut tags = tags_of(&body);
        let before = tags.clone();
        for (k, v) in &p.tags {
            if k != super::frontend::SERVICE_TAG {
                tags.insert(k.clone(), v.clone());
            }
        }
        if let Some(t) = rebind(&tags, key, true) {
            tags = t;
        }
        let mut changed = current.is_none() || tags != before;
        body["tags"] = json!(tags);
        let dns_now = body
            .pointer("/properties/dnsSettings/domainNameLabel")
            .and_then(Value::as_str)
            .map(str::to_string);
        match p.dns_label.as_deref() {
            Some("") | None if dns_now.is_some() && p.dns_label.is_some() => {
                if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
                    props.remove("dnsSettings");
                }
                changed = true;
            }
            Some(label) if !label.is_empty() && dns_now.as_deref() != Some(label) => {
                body["properties"]["dnsSettings"] = json!({"domainNameLabel": label});
                changed = true;
            }
            _ => {}
        }
        if !changed {
            return Self::pip_address(&body, &p.name);
        }
        if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove("provisioningState");
            props.remove("ipConfiguration");
            props.remove("resourceGuid");
        }
        let model = from_value(body, "public IP")?;
        let written = self
            .clients
            .public_ips
            .create_or_update(&p.resource_group, &p.name, &model)
            .await
            .map_err(|e| {
                // Our copy may be stale (412) or wrong: reload the list next time.
                self.pips.invalidate(&lower(&p.resource_group));
                arm(e)
            })?;
        let v = to_value(&written);
        tracing::info!(service = key, public_ip = %p.name, created = current.is_none(), "public IP ensured");
        Self::pip_set(&map, &p.name, Some(v.clone()));
        Self::pip_address(&v, &p.name)
    }

    fn pip_address(v: &Value, name: &str) -> Result<(String, String), CloudError> {
        let id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        match v.pointer("/properties/ipAddress").and_then(Value::as_str) {
            Some(ip) if !ip.is_empty() => Ok((id, ip.to_string())),
            _ => Err(CloudError::Azure(format!(
                "public IP {name} has no address yet; it will be read again on the next sync"
            ))),
        }
    }

    async fn existing_pip(&self, src: &PublicIpSource) -> Result<(String, String), CloudError> {
        match src {
            PublicIpSource::Named { name, resource_group } => {
                let map = self.pip_map(resource_group).await?;
                let found = match Self::pip_get(&map, name) {
                    Some(v) => Some(v),
                    // Maybe created after our list: one GET.
                    None => match self.clients.public_ips.get(resource_group, name).await {
                        Ok(p) => {
                            let v = to_value(&p);
                            Self::pip_set(&map, name, Some(v.clone()));
                            Some(Arc::new(v))
                        }
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(arm(e)),
                    },
                };
                let v = found.ok_or_else(|| {
                    CloudError::InvalidInput(format!(
                        "public IP {name} named by annotation {}azure-pip-name was not found in resource group {resource_group}",
                        annotations::PREFIX
                    ))
                })?;
                Self::pip_address(&v, name)
            }
            PublicIpSource::ByAddress {
                address,
                resource_group,
            } => {
                let find = |map: &PipMap| {
                    map.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .find(|v| v.pointer("/properties/ipAddress").and_then(Value::as_str) == Some(address.as_str()))
                        .cloned()
                };
                let mut found = find(&*self.pip_map(resource_group).await?);
                if found.is_none() {
                    self.pips.invalidate(&lower(resource_group));
                    found = find(&*self.pip_map(resource_group).await?);
                }
                let v = found.ok_or_else(|| {
                    CloudError::InvalidInput(format!(
                        "user supplied IP Address {address} was not found in resource group {resource_group}"
                    ))
                })?;
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                Self::pip_address(&v, &name)
            }
            PublicIpSource::Managed(_) => Err(CloudError::Azure("internal: managed PIP passed as existing".into())),
        }
    }

    /// Unbinds the service from managed PIPs it no longer uses; deletes those no other service uses.
    /// PIPs without our cluster tag or the service binding are never touched.
    async fn release_pips(
        &self,
        key: &str,
        cluster: &str,
        keep: &BTreeSet<String>,
        rgs: &[String],
    ) -> Result<(), CloudError> {
        for rg in rgs {
            let map = self.pip_map(rg).await?;
            let candidates: Vec<Arc<Value>> = map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|v| {
                    let tags = tags_of(v);
                    let ours = tags.get(CLUSTER_TAG).is_none_or(|c| c.eq_ignore_ascii_case(cluster));
                    let id = lower(v.get("id").and_then(Value::as_str).unwrap_or_default());
                    ours && bound_services(&tags).iter().any(|s| s == key) && !keep.contains(&id)
                })
                .cloned()
                .collect();
            for v in candidates {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let tags = tags_of(&v);
                let Some(remaining) = rebind(&tags, key, false) else {
                    continue;
                };
                if bound_services(&remaining).is_empty() {
                    match self.clients.public_ips.delete(rg, &name).await {
                        Ok(()) => {
                            tracing::info!(service = key, public_ip = %name, "public IP deleted");
                            Self::pip_set(&map, &name, None);
                        }
                        Err(e) => {
                            self.pips.invalidate(&lower(rg));
                            return Err(arm(e));
                        }
                    }
                } else {
                    let mut body = (*v).clone();
                    body["tags"] = json!(remaining);
                    let model = from_value(body, "public IP")?;
                    let w = self
                        .clients
                        .public_ips
                        .create_or_update(rg, &name, &model)
                        .await
                        .map_err(arm)?;
                    Self::pip_set(&map, &name, Some(to_value(&w)));
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- the LB batch

    fn new_lb(&self) -> Value {
        let mut lb = json!({
            "location": self.cfg.location,
            "sku": {"name": if self.standard() { "Standard" } else { "Basic" }},
            "properties": {},
        });
        let tags = self.cfg.merged_tags();
        if !tags.is_empty() {
            lb["tags"] = json!(tags);
        }
        lb
    }

    fn pools_for(&self, cluster: &str, lb_name: &str, lb: &Value) -> Vec<PoolRef> {
        let id = self.lb_id(lb_name);
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| {
                let name = backend_pool_name(cluster, f);
                plan::children_ref(lb, "backendAddressPools")
                    .iter()
                    .any(|p| {
                        p.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                    })
                    .then(|| (f, plan::child_id(&id, "backendAddressPools", &name)))
            })
            .collect()
    }

    /// nodeIP mode: the pool addresses of the eligible nodes (InternalIP of each family from the Node).
    fn node_ip_addresses(&self, nodes: &[Node], family: Family) -> Vec<(String, String)> {
        let list: Vec<(String, Option<String>)> = eligible(nodes, &self.cfg)
            .into_iter()
            .map(|n| {
                let ip = n.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| {
                    a.iter()
                        .filter(|x| x.type_ == "InternalIP")
                        .map(|x| x.address.clone())
                        .find(|ip| ip.contains(':') == (family == Family::V6))
                });
                (n.metadata.name.clone().unwrap_or_default(), ip)
            })
            .collect();
        node_ip_pool_addresses(&list)
    }

    async fn apply_lb_batch(&self, cluster: &str, lb_name: &str, ops: Vec<LbOp>) -> Vec<LbResult> {
        match self.apply_lb_ops(cluster, lb_name, &ops).await {
            Ok(r) => r,
            // A write refused for its content (4xx other than 409/412/429) with several services in the batch:
            // apply them one by one so one bad service cannot block the others.
            Err(e) if ops.len() > 1 && e.1 => {
                tracing::warn!(load_balancer = lb_name, error = %e.0, "batch refused; applying its services one at a time");
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.push(
                        match self.apply_lb_ops(cluster, lb_name, std::slice::from_ref(&op)).await {
                            Ok(mut r) => r.pop().unwrap_or(Ok(None)),
                            Err((e, _)) => Err(e),
                        },
                    );
                }
                out
            }
            Err((e, _)) => ops.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Applies a batch; the error says whether the content was refused (worth splitting the batch).
    async fn apply_lb_ops(
        &self,
        cluster: &str,
        lb_name: &str,
        ops: &[LbOp],
    ) -> Result<Vec<LbResult>, (CloudError, bool)> {
        let st = self.state(lb_name);
        let lb_id = self.lb_id(lb_name);
        let internal = names::is_internal_load_balancer(lb_name);
        let vm_set_filter =
            (!self.standard()).then(|| names::vm_set_of_load_balancer(lb_name, cluster, self.primary_vm_set()));
        let nodes = self.known_nodes();
        let mut fresh = false;
        for attempt in 0..3 {
            let current = self.read_lb(lb_name, fresh).await.map_err(|e| (e, false))?;
            let existed = current.is_some();
            let mut lb = current.as_deref().cloned().unwrap_or_else(|| self.new_lb());
            let mut changed = false;
            let mut results: Vec<Result<(), CloudError>> = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    LbOp::Ensure(w) => match plan::apply_service(&mut lb, &lb_id, lb_name, w) {
                        Ok(c) => {
                            changed |= c;
                            Ok(())
                        }
                        Err(e) => Err(CloudError::Conflict(e.to_string())),
                    },
                    LbOp::Remove(base) => {
                        changed |= plan::remove_service(&mut lb, base);
                        Ok(())
                    }
                    LbOp::Nodes => Ok(()),
                });
            }
            if !existed && plan::is_empty(&lb) {
                // Nothing to create (a removal or node update on an LB that does not exist).
                return Ok(results.into_iter().map(|r| r.map(|_| None)).collect());
            }
            let pools = self.pools_for(cluster, lb_name, &lb);
            if plan::is_empty(&lb) {
                // The LB lost its last frontend: detach its pools from the nodes, then delete it.
                if !self.node_ip_mode() {
                    self.membership.detach_all(&pools).await.map_err(|e| (e, false))?;
                }
                match self.clients.load_balancers.delete(self.lb_rg(), lb_name).await {
                    Ok(()) => {
                        tracing::info!(
                            load_balancer = lb_name,
                            "load balancer had no frontend left and was deleted"
                        );
                        *st.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((None, Instant::now()));
                        return Ok(results.into_iter().map(|r| r.map(|_| None)).collect());
                    }
                    Err(e) => {
                        *st.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        return Err((arm(e), false));
                    }
                }
            }
            let manage_nodes = !self.preconfigured(internal);
            if self.node_ip_mode() && manage_nodes {
                if let Some(nodes) = &nodes {
                    for (family, _) in &pools {
                        let addrs = self.node_ip_addresses(nodes, *family);
                        let pool = backend_pool_name(cluster, *family);
                        if let Some(before) = plan::set_pool_addresses(&mut lb, &pool, &addrs, &self.vnet_id()) {
                            changed = true;
                            let (added, removed) = pool_changes(&before, &addrs);
                            tracing::info!(load_balancer = lb_name, pool = %pool, nodes = nodes.len(), addresses = addrs.len(), added = ?added, removed = ?removed, "backend pool addresses changed");
                        }
                    }
                }
            }
            let mut written = current.clone();
            if changed || !existed {
                plan::strip_read_only(&mut lb);
                match self
                    .clients
                    .load_balancers
                    .create_or_update(self.lb_rg(), lb_name, &lb)
                    .await
                {
                    Ok(w) => {
                        let v = Arc::new(w);
                        tracing::info!(
                            load_balancer = lb_name,
                            services = ops.len(),
                            created = !existed,
                            "load balancer updated"
                        );
                        *st.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Some(v.clone()), Instant::now()));
                        written = Some(v);
                    }
                    Err(e) if e.is_conflict() && attempt < 2 => {
                        tracing::debug!(load_balancer = lb_name, "load balancer changed under us; re-reading");
                        fresh = true;
                        continue;
                    }
                    Err(e) => {
                        *st.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        let content = matches!(e.status(), 400 | 404 | 422);
                        return Err((arm(e), content));
                    }
                }
            }
            if !self.node_ip_mode() && manage_nodes {
                if let (Some(nodes), Some(lbv)) = (&nodes, &written) {
                    let pools = self.pools_for(cluster, lb_name, lbv);
                    self.membership
                        .ensure(&pools, nodes, vm_set_filter.as_deref())
                        .await
                        .map_err(|e| (e, false))?;
                }
            }
            return Ok(results.into_iter().map(|r| r.map(|_| written.clone())).collect());
        }
        Err((
            CloudError::Azure(format!(
                "load balancer {lb_name} kept changing under us (412 three times); will retry"
            )),
            false,
        ))
    }

    async fn submit_lb(&self, cluster: &str, lb_name: &str, op: LbOp) -> LbResult {
        let st = self.state(lb_name);
        st.queue
            .submit(op, |ops| self.apply_lb_batch(cluster, lb_name, ops))
            .await
            .unwrap_or_else(|| {
                Err(CloudError::Azure(format!(
                    "update of load balancer {lb_name} was abandoned"
                )))
            })
    }

    // ---------------------------------------------------------------- the NSG batch

    async fn apply_nsg_batch(&self, wishes: Vec<NsgWish>) -> Vec<Result<(), CloudError>> {
        match self.apply_nsg_ops(&wishes).await {
            Ok(r) => r,
            Err(e) => wishes.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn apply_nsg_ops(&self, wishes: &[NsgWish]) -> Result<Vec<Result<(), CloudError>>, CloudError> {
        let (rg, name) = (&self.cfg.security_group_resource_group, &self.cfg.security_group_name);
        let mut fresh = false;
        for attempt in 0..3 {
            let cached = self.nsg_last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let current = match cached {
                Some((Some(v), at)) if !fresh && at.elapsed() < self.lb_ttl => v,
                _ => {
                    let nsg = self.clients.security_groups.get(rg, name).await.map_err(|e| {
                        if e.is_not_found() {
                            CloudError::Azure(format!(
                                "network security group {name} (securityGroupName) was not found in resource group {rg}: create it or fix the cloud config"
                            ))
                        } else {
                            arm(e)
                        }
                    })?;
                    Arc::new(to_value(&nsg))
                }
            };
            let mut nsg = (*current).clone();
            let mut rules: Vec<Value> = nsg
                .pointer("/properties/securityRules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut changed = false;
            let mut results = Vec::with_capacity(wishes.len());
            for w in wishes {
                let mut trial = rules.clone();
                match security::apply(&mut trial, name, w) {
                    Ok(c) => {
                        changed |= c;
                        rules = trial;
                        results.push(Ok(()));
                    }
                    Err(e) => results.push(Err(CloudError::Conflict(e.to_string()))),
                }
            }
            if !changed {
                *self.nsg_last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Some(current), Instant::now()));
                return Ok(results);
            }
            nsg["properties"]["securityRules"] = Value::Array(rules);
            if let Some(p) = nsg.get_mut("properties").and_then(Value::as_object_mut) {
                for k in [
                    "provisioningState",
                    "resourceGuid",
                    "networkInterfaces",
                    "subnets",
                    "defaultSecurityRules",
                    "flowLogs",
                ] {
                    p.remove(k);
                }
            }
            match self.clients.security_groups.create_or_update(rg, name, &nsg).await {
                Ok(w) => {
                    tracing::info!(security_group = %name, services = wishes.len(), "security group updated");
                    *self.nsg_last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Some(Arc::new(w)), Instant::now()));
                    return Ok(results);
                }
                Err(e) if e.is_conflict() && attempt < 2 => fresh = true,
                Err(e) => {
                    *self.nsg_last.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Err(arm(e));
                }
            }
        }
        Err(CloudError::Azure(format!(
            "security group {name} kept changing under us; will retry"
        )))
    }

    async fn submit_nsg(&self, wish: NsgWish) -> Result<(), CloudError> {
        if self.cfg.security_group_name.is_empty() {
            return Ok(());
        }
        self.nsg_queue
            .submit(wish, |w| self.apply_nsg_batch(w))
            .await
            .unwrap_or_else(|| Err(CloudError::Azure("security group update was abandoned".into())))
    }

    // ---------------------------------------------------------------- per service

    fn parse(&self, service: &Service) -> Result<ServiceLbSpec, CloudError> {
        let (spec, warnings) = annotations::parse(service)
            .map_err(|e| CloudError::InvalidInput(format!("service {}: {e}", service_key(service))))?;
        for w in &warnings {
            self.warn(service, w);
        }
        Ok(spec)
    }

    /// The LB the service uses. Standard SKU: the cluster's (internal) LB. Basic SKU: the LB of the VM set
    /// chosen by `azure-load-balancer-mode` (the one already holding the service, else the one with the
    /// fewest rules), the primary VM set's when the annotation is absent.
    async fn choose_lb(&self, cluster: &str, spec: &ServiceLbSpec, base: &str) -> Result<String, CloudError> {
        let primary = self.primary_vm_set().to_string();
        let name_for = |vm_set: Option<&str>| {
            load_balancer_name(cluster, &self.cfg.load_balancer_name, vm_set, &primary, spec.internal)
        };
        if self.standard() {
            return Ok(name_for(None));
        }
        let candidates: Vec<String> = match spec.mode.as_deref().map(str::trim) {
            None | Some("") => return Ok(name_for(None)),
            Some(m) if m.eq_ignore_ascii_case("__auto__") => self
                .vmset
                .vm_sets()
                .await
                .map_err(CloudError::from)?
                .into_iter()
                .map(|s| s.name)
                .collect(),
            Some(m) => m
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        let mut best: Option<(usize, String)> = None;
        for vm_set in candidates {
            let lb_name = name_for(Some(&vm_set));
            let lb = self.read_lb(&lb_name, false).await?;
            let rules = match &lb {
                Some(v) if plan::has_service(v, base) => return Ok(lb_name),
                Some(v) => plan::rule_count(v),
                None => 0,
            };
            if i64::try_from(rules).unwrap_or(i64::MAX) >= self.cfg.maximum_load_balancer_rule_count {
                continue;
            }
            if best.as_ref().is_none_or(|(n, _)| rules < *n) {
                best = Some((rules, lb_name));
            }
        }
        best.map(|(_, n)| n).ok_or_else(|| {
            CloudError::InvalidInput(format!(
                "no load balancer of the VM sets in annotation {}azure-load-balancer-mode has room (maximumLoadBalancerRuleCount {})",
                annotations::PREFIX,
                self.cfg.maximum_load_balancer_rule_count
            ))
        })
    }

    async fn resolve_frontends(
        &self,
        cluster: &str,
        spec: &ServiceLbSpec,
        base: &str,
        key: &str,
    ) -> Result<Frontends, CloudError> {
        let config_tags = self.cfg.merged_tags();
        let vnet_rg = if self.cfg.vnet_resource_group.is_empty() {
            self.cfg.resource_group.clone()
        } else {
            self.cfg.vnet_resource_group.clone()
        };
        if spec.internal && spec.internal_subnet.is_none() && self.cfg.subnet_name.is_empty() {
            return Err(CloudError::InvalidInput(format!(
                "service {key} is internal but neither annotation {}azure-load-balancer-internal-subnet nor subnetName in the cloud config names a subnet",
                annotations::PREFIX
            )));
        }
        let ctx = FrontendContext {
            cluster,
            base,
            service_key: key,
            subscription: self.network_subscription(),
            resource_group: &self.cfg.resource_group,
            vnet_resource_group: &vnet_rg,
            vnet: &self.cfg.vnet_name,
            subnet: &self.cfg.subnet_name,
            standard_sku: self.standard(),
            region_zones: &[],
            config_tags: &config_tags,
        };
        let mut out = Frontends {
            wishes: Vec::new(),
            public: Vec::new(),
            used_pips: BTreeSet::new(),
        };
        for f in plan_frontends(spec, &ctx) {
            let mut wish = FrontendWish {
                name: f.name.clone(),
                family: f.family,
                public_ip_id: None,
                subnet_id: None,
                private_ip: None,
                zones: f.zones.clone(),
            };
            match &f.kind {
                FrontendKind::Private { subnet_id, address } => {
                    wish.subnet_id = Some(subnet_id.clone());
                    wish.private_ip = address.clone();
                }
                FrontendKind::Public(src) => {
                    let (id, ip) = match src {
                        PublicIpSource::Managed(p) => self.ensure_managed_pip(p, key).await?,
                        other => self.existing_pip(other).await?,
                    };
                    out.used_pips.insert(lower(&id));
                    out.public.push((f.family, ip));
                    wish.public_ip_id = Some(id);
                }
            }
            out.wishes.push(wish);
        }
        Ok(out)
    }

    fn pip_groups(&self, spec: Option<&ServiceLbSpec>) -> Vec<String> {
        let mut rgs = vec![self.cfg.resource_group.clone()];
        if let Some(rg) = spec.and_then(|s| s.pip_resource_group.clone()) {
            if !rgs.iter().any(|r| r.eq_ignore_ascii_case(&rg)) {
                rgs.push(rg);
            }
        }
        rgs
    }

    /// Addresses of the frontends the service owns on an LB: private addresses, and their PIPs' addresses.
    async fn owned_addresses(&self, lb: &Value, base: &str) -> Result<Vec<String>, CloudError> {
        let mut out = Vec::new();
        for fe in plan::children_ref(lb, "frontendIPConfigurations") {
            let name = fe.get("name").and_then(Value::as_str).unwrap_or_default();
            if !names::service_owns(base, name) {
                continue;
            }
            if let Some(ip) = fe.pointer("/properties/privateIPAddress").and_then(Value::as_str) {
                out.push(ip.to_string());
            } else if let Some(pip) = fe.pointer("/properties/publicIPAddress/id").and_then(Value::as_str) {
                let rg = crate::arm::ResourceId::parse(pip)
                    .map(|r| r.resource_group)
                    .unwrap_or_else(|_| self.cfg.resource_group.clone());
                let map = self.pip_map(&rg).await?;
                let ip = map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .find(|v| {
                        v.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|i| i.eq_ignore_ascii_case(pip))
                    })
                    .and_then(|v| {
                        v.pointer("/properties/ipAddress")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                out.extend(ip);
            }
        }
        Ok(out)
    }

    /// Addresses the service had (status) — removed from the NSG before the new ones are added.
    fn previous_addresses(service: &Service) -> Vec<String> {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
            .unwrap_or_default()
    }

    fn nsg_wish(&self, service: &Service, spec: &ServiceLbSpec, base: &str, addresses: &[(Family, String)]) -> NsgWish {
        let ports: Vec<(&'static str, i32)> = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                            "UDP" => "Udp",
                            "SCTP" => "*",
                            _ => "Tcp",
                        };
                        if spec.ha_ports {
                            ("*", 0)
                        } else if spec.floating_ip_disabled {
                            (proto, p.node_port.unwrap_or(p.port))
                        } else {
                            (proto, p.port)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut destinations: Vec<(Family, String)> = addresses.to_vec();
        for ip in &spec.additional_public_ips {
            destinations.push((if ip.is_ipv6() { Family::V6 } else { Family::V4 }, ip.to_string()));
        }
        if spec.floating_ip_disabled {
            // Traffic reaches the nodes' own addresses.
            if let Some(nodes) = self.known_nodes() {
                for f in &spec.families {
                    for (_, ip) in self.node_ip_addresses(&nodes, *f) {
                        destinations.push((*f, ip));
                    }
                }
            }
        }
        let mut allow = Vec::new();
        let mut deny_all = Vec::new();
        for &family in &spec.families {
            let ranges: Vec<String> = spec
                .source_ranges
                .iter()
                .filter(|r| r.addr().is_ipv6() == (family == Family::V6))
                .map(|r| r.to_string())
                .collect();
            let mut sources = ranges.clone();
            sources.extend(spec.allowed_service_tags.iter().cloned());
            if sources.is_empty() && spec.source_ranges.is_empty() && !spec.internal && !spec.invalid_ranges {
                sources.push("Internet".into());
            }
            if !spec.nsg_rules_disabled {
                allow.extend(allow_specs(family, &sources, &ports));
            }
            if spec.invalid_ranges || (spec.deny_all_except_source_ranges && !spec.source_ranges.is_empty()) {
                deny_all.push(family);
            }
        }
        let mut remove = Self::previous_addresses(service);
        remove.extend(destinations.iter().map(|(_, a)| a.clone()));
        NsgWish {
            remove,
            destinations,
            allow,
            deny_all,
            base: base.to_string(),
        }
    }

    fn other_lb(&self, lb_name: &str) -> String {
        match lb_name.strip_suffix(names::INTERNAL_SUFFIX) {
            Some(external) => external.to_string(),
            None => format!("{lb_name}{}", names::INTERNAL_SUFFIX),
        }
    }

    /// EnsureLoadBalancer.
    pub async fn ensure(
        &self,
        cluster: &str,
        service: &Service,
        nodes: &[Node],
    ) -> Result<LoadBalancerStatus, CloudError> {
        let key = service_key(service);
        let uid = service.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return Err(CloudError::InvalidInput(format!("service {key} has no metadata.uid")));
        }
        let base = service_base_name(&uid);
        let spec = self.parse(service)?;
        let sspec = service.spec.clone().unwrap_or_default();
        let ports = sspec.ports.clone().unwrap_or_default();
        if ports.is_empty() {
            return Err(CloudError::InvalidInput(format!("service {key} has no ports")));
        }
        let local = sspec.external_traffic_policy.as_deref() == Some("Local");
        let shared_path = self.cfg.cluster_service_shared_load_balancer_health_probe_path.clone();
        let shared_probe = self
            .cfg
            .cluster_service_load_balancer_health_probe_mode
            .eq_ignore_ascii_case("shared")
            .then(|| {
                (
                    i32::try_from(self.cfg.cluster_service_shared_load_balancer_health_probe_port).unwrap_or(10256),
                    shared_path.as_str(),
                )
            });
        let rctx = RuleContext {
            base: &base,
            standard_sku: self.standard(),
            disable_outbound_snat: self.cfg.disable_outbound_snat.unwrap_or(false),
            local_health_check_port: if local { sspec.health_check_node_port } else { None },
            client_ip_affinity: sspec.session_affinity.as_deref() == Some("ClientIP"),
            shared_probe,
        };
        let (rules, probes) = expected_rules(&spec, &ports, &rctx)
            .map_err(|e| CloudError::InvalidInput(format!("service {key}: {e}")))?;
        self.remember_nodes(nodes);
        let lb_name = self.choose_lb(cluster, &spec, &base).await?;
        let fronts = self.resolve_frontends(cluster, &spec, &base, &key).await?;
        let wish = ServiceWish {
            base: base.clone(),
            frontends: fronts.wishes.clone(),
            rules,
            probes,
            pools: spec
                .families
                .iter()
                .map(|f| (*f, backend_pool_name(cluster, *f)))
                .collect(),
        };
        let lb = self
            .submit_lb(cluster, &lb_name, LbOp::Ensure(Box::new(wish)))
            .await?
            .ok_or_else(|| CloudError::Azure(format!("load balancer {lb_name} was not written")))?;
        // Ingress: the PIP address (external) or the frontend's private address (internal).
        let mut addresses: Vec<(Family, String)> = fronts.public.clone();
        if spec.internal {
            for w in &fronts.wishes {
                match plan::frontend_backing(&lb, &w.name) {
                    Some((Some(ip), _)) => addresses.push((w.family, ip)),
                    _ => {
                        return Err(CloudError::Azure(format!(
                            "frontend {} of load balancer {lb_name} has no private address yet; will retry",
                            w.name
                        )))
                    }
                }
            }
        }
        // The LB copy is megabytes at scale and each batch writes a new one: let go of it before waiting for
        // the security group (1,000 Services holding 48 generations of a 5,000-node LB took 150 MiB).
        drop(lb);
        self.submit_nsg(self.nsg_wish(service, &spec, &base, &addresses))
            .await?;
        // The service's leftovers: the other LB of the pair, PIPs it no longer uses.
        self.submit_lb(cluster, &self.other_lb(&lb_name), LbOp::Remove(base.clone()))
            .await?;
        self.release_pips(&key, cluster, &fronts.used_pips, &self.pip_groups(Some(&spec)))
            .await?;
        let mut ingress: Vec<LoadBalancerIngress> = addresses
            .iter()
            .map(|(_, ip)| LoadBalancerIngress {
                ip: Some(ip.clone()),
                ..Default::default()
            })
            .collect();
        for ip in &spec.additional_public_ips {
            ingress.push(LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ..Default::default()
            });
        }
        tracing::info!(service = %key, load_balancer = %lb_name, ingress = ?addresses, "load balancer ensured");
        Ok(LoadBalancerStatus { ingress: Some(ingress) })
    }

    /// UpdateLoadBalancer: backend membership for a new node set.
    pub async fn update(&self, cluster: &str, service: &Service, nodes: &[Node]) -> Result<(), CloudError> {
        let spec = self.parse(service)?;
        let base = service_base_name(service.metadata.uid.as_deref().unwrap_or_default());
        self.remember_nodes(nodes);
        let lb_name = self.choose_lb(cluster, &spec, &base).await?;
        self.submit_lb(cluster, &lb_name, LbOp::Nodes).await.map(|_| ())
    }

    /// EnsureLoadBalancerDeleted: NSG, both LBs of the pair, then the PIPs (in that order, so nothing
    /// still references what is deleted).
    pub async fn delete(&self, cluster: &str, service: &Service) -> Result<(), CloudError> {
        let key = service_key(service);
        let base = service_base_name(service.metadata.uid.as_deref().unwrap_or_default());
        // Bad annotations must not block deletion: fall back to the defaults.
        let spec = annotations::parse(service).map(|(s, _)| s).ok();
        let primary = self.primary_vm_set().to_string();
        let mut lbs = vec![
            load_balancer_name(cluster, &self.cfg.load_balancer_name, None, &primary, false),
            load_balancer_name(cluster, &self.cfg.load_balancer_name, None, &primary, true),
        ];
        if !self.standard() {
            for s in self.vmset.vm_sets().await.map_err(CloudError::from)? {
                for internal in [false, true] {
                    let n =
                        load_balancer_name(cluster, &self.cfg.load_balancer_name, Some(&s.name), &primary, internal);
                    if !lbs.iter().any(|x| x.eq_ignore_ascii_case(&n)) {
                        lbs.push(n);
                    }
                }
            }
        }
        // Addresses to take out of the NSG: the frontends the service owns and its status.
        let mut remove = Self::previous_addresses(service);
        for lb_name in &lbs {
            if let Some(lb) = self.read_lb(lb_name, false).await? {
                remove.extend(self.owned_addresses(&lb, &base).await?);
            }
        }
        if let Some(s) = &spec {
            remove.extend(s.additional_public_ips.iter().map(|ip| ip.to_string()));
        }
        self.submit_nsg(NsgWish {
            remove,
            base: base.clone(),
            ..Default::default()
        })
        .await?;
        for lb_name in &lbs {
            self.submit_lb(cluster, lb_name, LbOp::Remove(base.clone())).await?;
        }
        self.release_pips(&key, cluster, &BTreeSet::new(), &self.pip_groups(spec.as_ref()))
            .await?;
        tracing::info!(service = %key, "load balancer resources of the service deleted");
        Ok(())
    }

    /// GetLoadBalancer: the status when the service has a frontend (either LB of the pair) or its PIP exists.
    pub async fn get(&self, cluster: &str, service: &Service) -> Result<Option<LoadBalancerStatus>, CloudError> {
        let key = service_key(service);
        let base = service_base_name(service.metadata.uid.as_deref().unwrap_or_default());
        let spec = self.parse(service)?;
        let lb_name = self.choose_lb(cluster, &spec, &base).await?;
        let mut ingress = Vec::new();
        for name in [lb_name.clone(), self.other_lb(&lb_name)] {
            let Some(lb) = self.read_lb(&name, false).await? else {
                continue;
            };
            ingress.extend(self.owned_addresses(&lb, &base).await?);
        }
        if ingress.is_empty() && !spec.internal {
            // kubernetes#80571: the service's PIP alone means it exists.
            for rg in self.pip_groups(Some(&spec)) {
                let map = self.pip_map(&rg).await?;
                let found: Vec<String> = map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|v| bound_services(&tags_of(v)).contains(&key))
                    .filter_map(|v| {
                        v.pointer("/properties/ipAddress")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect();
                ingress.extend(found);
            }
        }
        if ingress.is_empty() {
            return Ok(None);
        }
        ingress.extend(spec.additional_public_ips.iter().map(|ip| ip.to_string()));
        Ok(Some(LoadBalancerStatus {
            ingress: Some(
                ingress
                    .into_iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }))
    }

    /// The LB name the service uses (without Azure reads: the basic SKU's selection is not consulted).
    pub fn name(&self, cluster: &str, service: &Service) -> String {
        let internal = annotations::parse(service).map(|(s, _)| s.internal).unwrap_or(false);
        load_balancer_name(
            cluster,
            &self.cfg.load_balancer_name,
            None,
            self.primary_vm_set(),
            internal,
        )
    }
}

/// The first few pool entries added and removed (`node=ip`), for the log line of a pool write.
fn pool_changes(before: &[(String, String)], after: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let after: BTreeSet<(String, String)> = after
        .iter()
        .map(|(n, ip)| (n.to_ascii_lowercase(), ip.clone()))
        .collect();
    let before: BTreeSet<(String, String)> = before.iter().cloned().collect();
    let show = |d: std::collections::btree_set::Difference<'_, (String, String)>| {
        d.take(5).map(|(n, ip)| format!("{n}={ip}")).collect::<Vec<_>>()
    };
    (show(after.difference(&before)), show(before.difference(&after)))
}
