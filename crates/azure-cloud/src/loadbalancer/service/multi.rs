//! The applier's side of multiple standard load balancers (`multipleStandardLoadBalancerConfigurations`):
//! where a Service goes (and when it moves), which nodes each LB's pool holds. The rules themselves are the
//! pure functions of [`crate::loadbalancer::multislb`]; this reads the facts they need from the cached LBs.

use super::*;
use crate::loadbalancer::multislb::{self, MultiSlb, NodeFacts, ServiceFacts};

/// Namespace labels for `serviceNamespaceSelector` (the CCM serves them from its Namespace cache).
pub trait NamespaceLabels: Send + Sync {
    /// The labels of a namespace; `None` when it is not known (yet).
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

/// The public LB of a configured LB name (`<name>-internal` → `<name>`).
fn public_name(lb_name: &str) -> &str {
    lb_name.strip_suffix(names::INTERNAL_SUFFIX).unwrap_or(lb_name)
}

/// Whether the Service asks for a particular address (its LB is then the one already holding it).
fn asks_for_ip(spec: &ServiceLbSpec) -> bool {
    spec.ip_v4.is_some() || spec.ip_v6.is_some() || spec.pip_name_v4.is_some() || spec.pip_name_v6.is_some()
}

/// Where a Service goes.
pub(super) struct Placement {
    /// The LB (internal name for internal Services).
    pub lb_name: String,
    /// The configured LB it is leaving (internal name for internal Services), when it moves.
    pub leaving: Option<String>,
}

/// A Service counted as on its way to an LB (`choose_multi`) until this is dropped: after its LB write, or
/// when its ensure fails or panics on the way (nothing can leave it counted for ever).
pub(super) struct OnItsWay<'a> {
    /// The applier.
    pub applier: &'a LoadBalancerApplier,
    /// The Service's base name.
    pub base: &'a str,
}

impl Drop for OnItsWay<'_> {
    fn drop(&mut self) {
        self.applier.placed(self.base);
    }
}

/// The node sets of the configured LBs for one node list (computed once per list).
pub(super) struct NodePlacement {
    /// The node list it was computed for (held, so its address cannot be reused by another list).
    nodes: Arc<Vec<Node>>,
    /// Lower-cased public LB name → its nodes.
    by_lb: HashMap<String, Arc<Vec<Node>>>,
}

impl LoadBalancerApplier {
    /// The parsed multiple-LB configuration, when set.
    pub(super) fn multi(&self) -> Option<&MultiSlb> {
        self.multi.as_ref()
    }

    /// Whether Services need their namespace's labels (a `serviceNamespaceSelector` is configured): the
    /// embedding program should then call [`Self::set_namespace_labels`].
    pub fn needs_namespace_labels(&self) -> bool {
        self.multi.as_ref().is_some_and(MultiSlb::needs_namespace_labels)
    }

    /// Whether Service labels choose the load balancer (a `serviceLabelSelector` is configured).
    pub fn needs_service_labels(&self) -> bool {
        self.multi.as_ref().is_some_and(MultiSlb::needs_service_labels)
    }

    /// Where namespace labels come from (`serviceNamespaceSelector`).
    pub fn set_namespace_labels(&self, source: Arc<dyn NamespaceLabels>) {
        *self.namespace_labels.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn kind_name(name: &str, internal: bool) -> String {
        if internal {
            format!("{name}{}", names::INTERNAL_SUFFIX)
        } else {
            name.to_string()
        }
    }

    /// Every LB name the configuration allows (both kinds), for deletion and lookups.
    pub(super) fn multi_lb_names(&self) -> Vec<String> {
        self.multi()
            .map(|m| {
                m.lbs
                    .iter()
                    .flat_map(|l| [Self::kind_name(&l.name, false), Self::kind_name(&l.name, true)])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first of `names` whose LB (our copy) has frontends or rules of the Service.
    async fn first_holding(&self, names: Vec<String>, base: &str) -> Result<Option<String>, CloudError> {
        for name in names {
            if let Some(lb) = self.peek_lb(&name).await? {
                if plan::has_service(&lb, base) {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }

    /// The configured LB (either kind) the Service is on.
    pub(super) async fn multi_lb_of(&self, base: &str) -> Result<Option<String>, CloudError> {
        self.first_holding(self.multi_lb_names(), base).await
    }

    /// The configured LB (public name) of this kind the Service has frontends or rules on.
    async fn multi_current(&self, m: &MultiSlb, base: &str, internal: bool) -> Result<Option<String>, CloudError> {
        let names = m.lbs.iter().map(|l| Self::kind_name(&l.name, internal)).collect();
        Ok(self
            .first_holding(names, base)
            .await?
            .map(|n| public_name(&n).to_string()))
    }

    /// The configured LB (public name) of this kind whose frontend already holds an address the Service
    /// asks for (upstream's IP sharing across Services overrides the fewest-rules choice).
    async fn multi_ip_host(
        &self,
        m: &MultiSlb,
        internal: bool,
        wishes: &[FrontendWish],
    ) -> Result<Option<String>, CloudError> {
        for l in &m.lbs {
            let Some(lb) = self.peek_lb(&Self::kind_name(&l.name, internal)).await? else {
                continue;
            };
            let hosts = plan::children_ref(&lb, "frontendIPConfigurations").iter().any(|fe| {
                wishes.iter().any(|w| {
                    let pip = fe.pointer("/properties/publicIPAddress/id").and_then(Value::as_str);
                    let private = fe.pointer("/properties/privateIPAddress").and_then(Value::as_str);
                    matches!((&w.public_ip_id, pip), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
                        || matches!((&w.private_ip, private), (Some(a), Some(b)) if a == b)
                })
            });
            if hosts {
                return Ok(Some(l.name.clone()));
            }
        }
        Ok(None)
    }

    /// What can be refused before anything is written: configuration names that do not exist, and the
    /// annotation combined with a requested IP.
    pub(super) fn check_multi_request(&self, service: &Service, spec: &ServiceLbSpec) -> Result<(), CloudError> {
        let (Some(m), Some(requested)) = (self.multi(), &spec.load_balancer_configurations) else {
            return Ok(());
        };
        let key = service_key(service);
        if asks_for_ip(spec) {
            return Err(CloudError::InvalidInput(format!(
                "service {key}: annotation {}azure-load-balancer-configurations cannot be combined with a requested IP (the load balancer holding the IP decides, as upstream)",
                annotations::PREFIX
            )));
        }
        m.check_requested(requested)
            .map_err(|e| CloudError::InvalidInput(format!("service {key}: {e}")))
    }

    /// The LB a Service goes to under multiple standard LBs (see [`multislb`]); `wishes` are its resolved
    /// frontends (for IP sharing), absent where only the current placement matters.
    pub(super) async fn choose_multi(
        &self,
        cluster: &str,
        service: &Service,
        spec: &ServiceLbSpec,
        base: &str,
        wishes: Option<&[FrontendWish]>,
        own_rules: usize,
    ) -> Result<Placement, CloudError> {
        let m = self
            .multi()
            .ok_or_else(|| CloudError::Azure("multiple standard load balancers are not configured".into()))?;
        let default = load_balancer_name(
            cluster,
            &self.cfg.load_balancer_name,
            None,
            self.primary_vm_set(),
            false,
        );
        if m.get(&default).is_none() {
            return Err(CloudError::InvalidInput(format!(
                "multipleStandardLoadBalancerConfigurations has no entry named {default:?} (the cluster's default load balancer, required as upstream)"
            )));
        }
        let key = service_key(service);
        let current = self.multi_current(m, base, spec.internal).await?;
        let ns_labels = self.needs_namespace_labels().then(|| {
            let ns = service.metadata.namespace.as_deref().unwrap_or("default");
            self.namespace_labels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|src| src.labels(ns))
        });
        let ns_labels = ns_labels.flatten();
        let requested = spec.load_balancer_configurations.clone();
        let facts = ServiceFacts {
            labels: service.metadata.labels.as_ref(),
            namespace_labels: ns_labels.as_ref(),
            requested: requested.clone(),
            current: current.as_deref(),
        };
        let eligible = m
            .eligible(&facts)
            .map_err(|e| CloudError::InvalidInput(format!("service {key}: {e}")))?;
        let mut chosen: Option<String> = None;
        if asks_for_ip(spec) {
            if let Some(w) = wishes {
                if let Some(host) = self.multi_ip_host(m, spec.internal, w).await? {
                    if !eligible.iter().any(|l| l.name.eq_ignore_ascii_case(&host)) {
                        return Err(CloudError::InvalidInput(format!(
                            "service {key}: the requested IP is on load balancer {host}, which is not eligible for the Service (allowServicePlacement, serviceLabelSelector, serviceNamespaceSelector)"
                        )));
                    }
                    chosen = Some(host);
                }
            }
        }
        let chosen = match chosen {
            Some(c) => c,
            None => {
                let mut rules: HashMap<String, usize> = HashMap::new();
                for l in &eligible {
                    let lb_name = Self::kind_name(&l.name, spec.internal);
                    let n = self
                        .peek_lb(&lb_name)
                        .await?
                        .as_deref()
                        .map(plan::rule_count)
                        .unwrap_or(0);
                    rules.insert(lower(&lb_name), n);
                }
                // Services placed concurrently count where they go until their rules are written (`placed`),
                // so a burst spreads over the LBs instead of all taking the one that was emptiest when they
                // started. (Between a write and `placed` a Service counts twice: a brief, harmless overcount.)
                let mut pending = self.placing.lock().unwrap_or_else(|p| p.into_inner());
                let count = |n: &str| {
                    let lb_name = lower(&Self::kind_name(n, spec.internal));
                    let on_the_way: usize = pending.get(&lb_name).map(|m| m.values().sum()).unwrap_or(0);
                    rules.get(&lb_name).copied().unwrap_or(0) + on_the_way
                };
                let chosen = multislb::choose(&eligible, current.as_deref(), count).to_string();
                pending
                    .entry(lower(&Self::kind_name(&chosen, spec.internal)))
                    .or_default()
                    .insert(base.to_string(), own_rules);
                chosen
            }
        };
        let leaving = current
            .filter(|c| !c.eq_ignore_ascii_case(&chosen))
            .map(|c| Self::kind_name(&c, spec.internal));
        Ok(Placement {
            lb_name: Self::kind_name(&chosen, spec.internal),
            leaving,
        })
    }

    /// The Service's rules are on its LB (or its ensure failed): it no longer counts as on its way there.
    fn placed(&self, base: &str) {
        if self.multi.is_some() {
            let mut pending = self.placing.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|_, m| {
                m.remove(base);
                !m.is_empty()
            });
        }
    }

    /// Takes a Service off the configured LB it is leaving. Refused when another Service shares its frontend
    /// there (moving would take their address away, as upstream refuses). An internal frontend's address goes
    /// along (the Service keeps it); a Private Link Service goes before its frontend.
    pub(super) async fn move_off(
        &self,
        cluster: &str,
        service: &Service,
        spec: &ServiceLbSpec,
        lb_name: &str,
        base: &str,
        wishes: &mut [FrontendWish],
    ) -> Result<(), CloudError> {
        let Some(lb) = self.read_lb(lb_name, false).await? else {
            return Ok(());
        };
        let shared = plan::frontends_kept_for_others(&lb, &self.lb_id(lb_name), base);
        if !shared.is_empty() {
            return Err(CloudError::InvalidInput(format!(
                "service {} should move off load balancer {lb_name}, but its frontend {} is shared with other Services' rules there; move or delete those first",
                service_key(service),
                shared.join(", ")
            )));
        }
        for w in wishes
            .iter_mut()
            .filter(|w| w.subnet_id.is_some() && w.private_ip.is_none())
        {
            if let Some((Some(ip), _)) = plan::frontend_backing(&lb, &w.name) {
                w.private_ip = Some(ip);
            }
        }
        self.delete_pls_of(service, Some(spec), lb_name, &lb, base).await?;
        drop(lb);
        self.submit_lb(cluster, lb_name, LbOp::Remove(base.to_string())).await?;
        Ok(())
    }

    /// The nodes of `lb_name`'s pool under multiple standard LBs: every node placed on its configuration
    /// (the internal LB shares its public counterpart's). Computed once per node list; a node stays in the
    /// pool it is in while it may.
    pub(super) async fn nodes_for_lb(
        &self,
        cluster: &str,
        lb_name: &str,
        nodes: &Arc<Vec<Node>>,
    ) -> Result<Arc<Vec<Node>>, CloudError> {
        let Some(m) = self.multi() else {
            return Ok(nodes.clone());
        };
        let public = lower(public_name(lb_name));
        if let Some(p) = self.node_placement.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if Arc::ptr_eq(&p.nodes, nodes) {
                return Ok(p.by_lb.get(&public).cloned().unwrap_or_default());
            }
        }
        // Where each node is now: the `<cluster>` pools of the configured public LBs (cached copies).
        let pool = backend_pool_name(cluster, Family::V4);
        let mut current: HashMap<String, String> = HashMap::new();
        for l in &m.lbs {
            if let Some(lb) = self.peek_lb(&l.name).await? {
                for (node, _) in plan::pool_addresses(&lb, &pool) {
                    current.insert(node, l.name.clone());
                }
            }
        }
        let mut facts = Vec::with_capacity(nodes.len());
        for n in nodes.iter() {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            let vm_set = if m.needs_vm_sets() {
                self.vm_set_of(n).await
            } else {
                None
            };
            facts.push(NodeFacts {
                name,
                labels: n.metadata.labels.as_ref(),
                vm_set,
                current: current.get(&name.to_ascii_lowercase()).cloned(),
            });
        }
        let (placed, unplaced) = m.place_nodes(&facts);
        if !unplaced.is_empty() {
            tracing::warn!(nodes = ?unplaced.iter().take(10).collect::<Vec<_>>(), count = unplaced.len(), "nodes match no load balancer of multipleStandardLoadBalancerConfigurations (no primaryVMSet, nodeSelector or unselective entry takes them): they are in no backend pool");
        }
        let mut by_lb: HashMap<String, Vec<Node>> = HashMap::new();
        for n in nodes.iter() {
            let name = n.metadata.name.as_deref().unwrap_or_default().to_ascii_lowercase();
            if let Some(&i) = placed.get(&name) {
                by_lb.entry(lower(&m.lbs[i].name)).or_default().push(n.clone());
            }
        }
        let by_lb: HashMap<String, Arc<Vec<Node>>> = by_lb.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let out = by_lb.get(&public).cloned().unwrap_or_default();
        *self.node_placement.lock().unwrap_or_else(|p| p.into_inner()) = Some(NodePlacement {
            nodes: nodes.clone(),
            by_lb,
        });
        Ok(out)
    }

    /// The VM set of a node: the scale set from its provider id, else the VM set the provider knows it by.
    async fn vm_set_of(&self, node: &Node) -> Option<String> {
        let pid = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .unwrap_or_default();
        if let Some(crate::vmset::names::ProviderTarget::ScaleSetInstance { scale_set, .. }) =
            crate::vmset::names::parse_provider_id(pid)
        {
            return Some(scale_set);
        }
        let name = node.metadata.name.as_deref()?;
        match self.vmset.node(name).await {
            Ok(vm) => Some(vm.vm_set.name.clone()),
            Err(e) => {
                tracing::debug!(node = name, error = %e, "VM set of the node unknown; placed by its labels");
                None
            }
        }
    }
}
