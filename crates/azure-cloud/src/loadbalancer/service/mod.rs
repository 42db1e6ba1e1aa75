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
use super::security::{self, NsgWish};
use crate::arm::cache::{ReadMode, TtlCache};
use crate::arm::shared::{self as shared, SharedCopy};
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

mod lb_writer;
mod multi;
mod nsg_writer;
mod pls_writer;
mod public_ips;

pub use multi::NamespaceLabels;

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

/// The Service's destination addresses that other Services share (a shared frontend), with the ports those
/// Services serve on them: the security rules keep allowing those.
fn shared_destinations(lb: &Value, base: &str, addresses: &[(Family, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (frontend, ports) in plan::ports_of_others_on_shared_frontends(lb, base) {
        let family = if frontend.to_ascii_lowercase().ends_with("-ipv6") {
            Family::V6
        } else {
            Family::V4
        };
        for (_, a) in addresses.iter().filter(|(f, _)| *f == family) {
            out.entry(a.clone()).or_default().extend(ports.iter().cloned());
        }
    }
    out
}

/// Tag keys this provider owns (and `systemTags` reconciliation never removes): `k8s-azure-*` and
/// upstream's legacy names of the same tags.
fn is_our_tag(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.starts_with("k8s-azure-")
        || matches!(
            k.as_str(),
            "service" | "kubernetes-cluster-name" | "kubernetes-dns-label-service"
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
    /// Make the service's part of the LB exactly this, with this backend node set.
    Ensure(Box<ServiceWish>, Arc<Vec<Node>>),
    /// Remove everything the service owns.
    Remove(String),
    /// Only backend membership for this node set (UpdateLoadBalancer).
    Nodes(Arc<Vec<Node>>),
}

impl LbOp {
    fn nodes(&self) -> Option<&Arc<Vec<Node>>> {
        match self {
            LbOp::Ensure(_, n) | LbOp::Nodes(n) => Some(n),
            LbOp::Remove(_) => None,
        }
    }
}

type LbResult = Result<Option<Arc<Value>>, CloudError>;

struct LbState {
    queue: GroupCommit<LbOp, LbResult>,
    copy: SharedCopy<Value>,
    /// One placement read at a time when there is no copy (see `peek_lb`).
    read_gate: tokio::sync::Mutex<()>,
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
    nsg_copy: SharedCopy<Value>,
    pips: TtlCache<String, PipMap, ArmError>,
    /// Private Link Services per resource group (`plsCacheTTLInSeconds`), refreshed by our writes.
    pls_lists: TtlCache<String, Vec<Value>, ArmError>,
    nodes: Mutex<Option<Arc<Vec<Node>>>>,
    /// The region's availability zones (read once: new standard public IPs and internal frontends get them).
    region_zones: tokio::sync::OnceCell<Vec<String>>,
    lb_ttl: Duration,
    events: Mutex<Option<Arc<dyn EventSink>>>,
    /// `multipleStandardLoadBalancerConfigurations`, parsed (validated at start).
    multi: Option<super::multislb::MultiSlb>,
    /// Namespace labels for `serviceNamespaceSelector`.
    namespace_labels: Mutex<Option<Arc<dyn NamespaceLabels>>>,
    /// Multiple LBs: the node sets of the configured LBs for the latest node list.
    node_placement: Mutex<Option<multi::NodePlacement>>,
    /// Multiple LBs: Services placed on an LB whose rules are not written yet (LB → base → rule count).
    placing: Mutex<HashMap<String, HashMap<String, usize>>>,
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
        let nsg_ttl = secs(cfg.nsg_cache_ttl_in_seconds);
        let multi = super::multislb::MultiSlb::from_config(&cfg.multiple_standard_load_balancer_configurations)
            .unwrap_or_else(|e| {
                // Validation refuses such a config at start; an embedder that skipped it gets one LB and this.
                tracing::error!(error = %e, "multipleStandardLoadBalancerConfigurations is invalid and is not used");
                None
            });
        Self {
            multi,
            namespace_labels: Mutex::new(None),
            node_placement: Mutex::new(None),
            placing: Mutex::new(HashMap::new()),
            membership: Membership::new(clients.clone(), vmset.clone(), cfg.clone()),
            lb_ttl: secs(cfg.load_balancer_cache_ttl_in_seconds),
            pips: TtlCache::new(secs(cfg.public_ip_cache_ttl_in_seconds)),
            pls_lists: TtlCache::new(secs(cfg.pls_cache_ttl_in_seconds)),
            cfg,
            clients,
            vmset,
            lbs: Mutex::new(HashMap::new()),
            nsg_queue: GroupCommit::new(),
            nsg_copy: SharedCopy::new(nsg_ttl),
            nodes: Mutex::new(None),
            region_zones: tokio::sync::OnceCell::new(),
            events: Mutex::new(None),
        }
    }

    /// Where Warning events about Services go (the CCM's event recorder).
    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Reports a failed ensure/update/delete as upstream does: a Warning event on the Service whose reason
    /// names the Azure operation that failed (`CreateOrUpdatePublicIPAddress`, `DeleteLoadBalancer`, ...).
    pub fn report_failure(&self, service: &Service, err: &CloudError) {
        if let CloudError::Arm(e) = err {
            if let Some(reason) = upstream_event_reason(e.operation()) {
                self.warn(
                    service,
                    &Warning {
                        reason,
                        message: e.to_string(),
                    },
                );
            }
        }
    }

    fn warn(&self, service: &Service, w: &Warning) {
        tracing::warn!(service = %service_key(service), reason = w.reason, "{}", w.message);
        if let Some(sink) = self.events.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            sink.warning(service, w.reason, &w.message);
        }
    }

    /// The region's availability zones for new standard-SKU public IPs and internal frontends, as upstream
    /// gives them (zone-redundant in zonal regions); read once from the Compute provider's `zoneMappings`.
    /// Basic SKU: none. Existing frontends and public IPs keep theirs (zones cannot change in Azure).
    async fn region_zones(&self) -> Result<&[String], CloudError> {
        if !self.standard() {
            return Ok(&[]);
        }
        let zones = self
            .region_zones
            .get_or_try_init(|| async {
                let z = self
                    .clients
                    .providers
                    .region_zones(&self.cfg.location)
                    .await
                    .map_err(arm)?;
                tracing::info!(location = %self.cfg.location, zones = ?z, "region availability zones");
                Ok::<_, CloudError>(z)
            })
            .await?;
        Ok(zones.as_slice())
    }

    fn standard(&self) -> bool {
        self.cfg.is_standard_sku()
    }

    fn node_ip_mode(&self) -> bool {
        self.cfg.pool_type() == crate::config::BackendPoolType::NodeIp
    }

    /// Whether node membership of this LB kind is left to someone else
    /// (`preConfiguredBackendPoolLoadBalancerTypes`).
    fn preconfigured(&self, internal: bool) -> bool {
        self.cfg.preconfigured_pools().covers(internal)
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
        if self.cfg.vm_kind() == crate::config::VmType::Standard {
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
                    copy: SharedCopy::new(self.lb_ttl),
                    read_gate: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The node set as a shared list for the operations that carry it: the same set passed by a burst of
    /// Services is one copy (an interning cache, not state the writers read: each operation carries its set).
    pub(crate) fn intern_nodes(&self, nodes: &[Node]) -> Arc<Vec<Node>> {
        let mut kept = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let same = kept.as_ref().is_some_and(|k| {
            k.len() == nodes.len()
                && k.iter().zip(nodes).all(|(a, b)| {
                    a.metadata.name == b.metadata.name
                        && match (&a.metadata.resource_version, &b.metadata.resource_version) {
                            // The same version of the same Node is the same object (an informer's nodes
                            // carry it): two short strings instead of every label and address (comparing
                            // those for 5,000 nodes on each of 1,000 ensures was 7% of the CPU).
                            (Some(x), Some(y)) if x == y => true,
                            _ => {
                                a.metadata.labels == b.metadata.labels
                                    && a.status.as_ref().map(|s| &s.addresses)
                                        == b.status.as_ref().map(|s| &s.addresses)
                            }
                        }
                })
        });
        match kept.as_ref() {
            Some(k) if same => k.clone(),
            _ => {
                let fresh = Arc::new(nodes.to_vec());
                *kept = Some(fresh.clone());
                fresh
            }
        }
    }

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
        nodes: Arc<Vec<Node>>,
    ) -> Result<LoadBalancerStatus, CloudError> {
        // Every step below is boxed: a future holds the largest of its steps inline, and 1,000 Services
        // being ensured at once each held ≈ 35 KiB that way (heaptrack); boxed, each holds only the step it is in.
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
        let shared_probe = (self.cfg.probe_mode() == crate::config::ProbeMode::Shared).then(|| {
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
        let mut on_its_way = None;
        let (lb_name, fronts) = if self.multi().is_some() {
            // Refused before anything is written (no public IP for a Service that cannot be placed).
            self.check_multi_request(service, &spec)?;
            let mut fronts = Box::pin(self.resolve_frontends(cluster, &spec, &base, &key)).await?;
            let placed =
                Box::pin(self.choose_multi(cluster, service, &spec, &base, Some(&fronts.wishes), rules.len())).await?;
            on_its_way = Some(multi::OnItsWay {
                applier: self,
                base: &base,
            });
            if let Some(old) = &placed.leaving {
                Box::pin(self.move_off(cluster, service, &spec, old, &base, &mut fronts.wishes)).await?;
                tracing::info!(service = %key, from = %old, to = %placed.lb_name, "service moved to another load balancer (it was no longer eligible where it was)");
            }
            if local {
                self.warn(service, &Warning {
                    reason: "UnsupportedLocalServiceBackendPool",
                    message: format!("externalTrafficPolicy Local with multiple standard load balancers: only the nodes placed on load balancer {} serve this Service (upstream's per-Service backend pool that follows the endpoints is not implemented); pods on other nodes are not reached", placed.lb_name),
                });
            }
            (placed.lb_name, fronts)
        } else {
            if spec.load_balancer_configurations.is_some() {
                self.warn(service, &Warning {
                    reason: "InvalidAnnotation",
                    message: format!("{}azure-load-balancer-configurations has no effect: multipleStandardLoadBalancerConfigurations is not set in the cloud config", annotations::PREFIX),
                });
            }
            let lb_name = Box::pin(self.choose_lb(cluster, &spec, &base)).await?;
            (
                lb_name,
                Box::pin(self.resolve_frontends(cluster, &spec, &base, &key)).await?,
            )
        };
        let lb_nodes = Box::pin(self.nodes_for_lb(cluster, &lb_name, &nodes)).await?;
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
        let written = Box::pin(self.submit_lb(cluster, &lb_name, LbOp::Ensure(Box::new(wish), lb_nodes))).await;
        drop(on_its_way);
        let lb = written?.ok_or_else(|| CloudError::Azure(format!("load balancer {lb_name} was not written")))?;
        // Ingress: the PIP address (external) or the frontend's private address (internal).
        let mut addresses: Vec<(Family, String)> = fronts.public.clone();
        if spec.internal {
            for w in &fronts.wishes {
                match plan::frontend_backing(&lb, &w.name) {
                    Some((Some(ip), _)) => addresses.push((w.family, ip)),
                    // Sharing another Service's frontend: its static address is the one asked for.
                    None if w.private_ip.is_some() => {
                        addresses.push((w.family, w.private_ip.clone().unwrap_or_default()))
                    }
                    _ => {
                        return Err(CloudError::Azure(format!(
                            "frontend {} of load balancer {lb_name} has no private address yet; will retry",
                            w.name
                        )))
                    }
                }
            }
        }
        Box::pin(self.ensure_pls(cluster, &key, &spec, &lb_name, &lb, &base)).await?;
        let shared = shared_destinations(&lb, &base, &addresses);
        // The LB copy is megabytes at scale and each batch writes a new one: let go of it before waiting for
        // the security group (1,000 Services holding 48 generations of a 5,000-node LB took 150 MiB).
        drop(lb);
        let mut nsg_wish = self.nsg_wish(service, &spec, &base, &addresses, &nodes);
        nsg_wish.shared = shared;
        Box::pin(self.submit_nsg(nsg_wish)).await?;
        // The service's leftovers: the other LB of the pair (every other configured LB with multiple LBs),
        // PIPs it no longer uses.
        let others = if self.multi().is_some() {
            self.multi_lb_names()
        } else {
            vec![self.other_lb(&lb_name)]
        };
        for other in others.iter().filter(|o| !o.eq_ignore_ascii_case(&lb_name)) {
            Box::pin(self.remove_from(cluster, other, &base)).await?;
        }
        Box::pin(self.release_pips(&key, cluster, &fronts.used_pips, &self.pip_groups(Some(&spec)))).await?;
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
    pub async fn update(&self, cluster: &str, service: &Service, nodes: Arc<Vec<Node>>) -> Result<(), CloudError> {
        let spec = self.parse(service)?;
        let base = service_base_name(service.metadata.uid.as_deref().unwrap_or_default());
        // Steps boxed as in `ensure`: a node change updates every Service at once (300 waiting updates held
        // 6.5 MB inline in the throttle-storm scenario).
        let lb_name = if self.multi().is_some() {
            // The LB it is on; one it is not on yet gets its nodes with its next ensure.
            match Box::pin(self.multi_lb_of(&base)).await? {
                Some(n) => n,
                None => return Ok(()),
            }
        } else {
            Box::pin(self.choose_lb(cluster, &spec, &base)).await?
        };
        let nodes = Box::pin(self.nodes_for_lb(cluster, &lb_name, &nodes)).await?;
        Box::pin(self.submit_lb(cluster, &lb_name, LbOp::Nodes(nodes)))
            .await
            .map(|_| ())
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
        for n in self.multi_lb_names() {
            if !lbs.iter().any(|x| x.eq_ignore_ascii_case(&n)) {
                lbs.push(n);
            }
        }
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
        let mut shared = BTreeMap::new();
        for lb_name in &lbs {
            if let Some(lb) = Box::pin(self.peek_lb(lb_name)).await? {
                remove.extend(Box::pin(self.owned_addresses(&lb, &base)).await?);
                let by_family: Vec<(Family, String)> = remove
                    .iter()
                    .map(|a| (if a.contains(':') { Family::V6 } else { Family::V4 }, a.clone()))
                    .collect();
                shared.extend(shared_destinations(&lb, &base, &by_family));
                for fe in plan::frontends_kept_for_others(&lb, &self.lb_id(lb_name), &base) {
                    let id = plan::child_id(&self.lb_id(lb_name), "frontendIPConfigurations", &fe);
                    self.warn(
                        service,
                        &Warning {
                            reason: "DeletingFrontendIPConfiguration",
                            message: format!("frontend IP configuration with ID {id} on LB {lb_name} cannot be deleted because it is being referenced by load balancing rules of other services; it goes with the last of them"),
                        },
                    );
                }
            }
        }
        if let Some(s) = &spec {
            remove.extend(s.additional_public_ips.iter().map(|ip| ip.to_string()));
        }
        // Steps boxed as in `ensure` (a Service being deleted holds only the step it is in).
        Box::pin(self.submit_nsg(NsgWish {
            remove,
            base: base.clone(),
            shared,
            ..Default::default()
        }))
        .await?;
        for lb_name in &lbs {
            // A Private Link Service goes before the frontend it serves (ARM refuses the other order).
            if let Some(lb) = Box::pin(self.peek_lb(lb_name)).await? {
                Box::pin(self.delete_pls_of(service, spec.as_ref(), lb_name, &lb, &base)).await?;
            }
            Box::pin(self.remove_from(cluster, lb_name, &base)).await?;
        }
        Box::pin(self.release_pips(&key, cluster, &BTreeSet::new(), &self.pip_groups(spec.as_ref()))).await?;
        tracing::info!(service = %key, "load balancer resources of the service deleted");
        Ok(())
    }

    /// GetLoadBalancer: the status when the service has a frontend (either LB of the pair) or its PIP exists.
    pub async fn get(&self, cluster: &str, service: &Service) -> Result<Option<LoadBalancerStatus>, CloudError> {
        let key = service_key(service);
        let base = service_base_name(service.metadata.uid.as_deref().unwrap_or_default());
        let spec = self.parse(service)?;
        let candidates = if self.multi().is_some() {
            self.multi_lb_names()
        } else {
            let lb_name = self.choose_lb(cluster, &spec, &base).await?;
            vec![lb_name.clone(), self.other_lb(&lb_name)]
        };
        let mut ingress = Vec::new();
        for name in candidates {
            let Some(lb) = self.peek_lb(&name).await? else {
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

/// Upstream's event reason for a failed Azure operation (`<resource>_<operation>` as our clients name it).
pub fn upstream_event_reason(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "public_ip_addresses_create_or_update" => "CreateOrUpdatePublicIPAddress",
        "public_ip_addresses_delete" => "DeletePublicIPAddress",
        "load_balancers_create_or_update" | "load_balancer_backend_address_pools_create_or_update" => {
            "CreateOrUpdateLoadBalancer"
        }
        "load_balancers_delete" => "DeleteLoadBalancer",
        "load_balancers_list" | "load_balancers_get" => "ListLoadBalancers",
        "interfaces_create_or_update" => "CreateOrUpdateInterface",
        "security_groups_create_or_update" => "CreateOrUpdateSecurityGroup",
        _ => return None,
    })
}
