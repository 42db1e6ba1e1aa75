//! The load-balancer writer: every concurrent Ensure/Remove/Nodes on one LB merged into one read (or the
//! copy our last write returned) and one PUT with `If-Match`; a batch refused for its content is re-applied
//! one Service at a time; an LB left without frontends is deleted after its pools are detached.

use super::*;

impl LoadBalancerApplier {
    // ---------------------------------------------------------------- reads

    /// The LB (cached copy within its TTL unless `fresh`).
    pub(super) async fn read_lb(&self, lb_name: &str, fresh: bool) -> Result<Option<Arc<Value>>, CloudError> {
        let st = self.state(lb_name);
        if !fresh {
            if let Some(v) = st.copy.within_ttl() {
                return Ok(v);
            }
        }
        let version = st.copy.version();
        let got = match self.clients.load_balancers.get(self.lb_rg(), lb_name).await {
            Ok(lb) => Some(Arc::new(to_value(&lb))),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(arm(e)),
        };
        // A read racing one of our writes (placement reads run beside the writer) must not put back the
        // older state: the writer would then PUT without the other Services' changes.
        st.copy.set_read(version, got.clone());
        Ok(got)
    }

    /// The LB for placement decisions (which LB holds a Service, rule counts, pool members), read beside
    /// the writers by every Service being placed: the copy of any age (our writes keep it current; its ETag
    /// still guards every write), else one GET per LB however many ask at once.
    pub(super) async fn peek_lb(&self, lb_name: &str) -> Result<Option<Arc<Value>>, CloudError> {
        let st = self.state(lb_name);
        if let Some(v) = st.copy.get(Duration::MAX) {
            return Ok(v);
        }
        let _one_read = st.read_gate.lock().await;
        if let Some(v) = st.copy.get(Duration::MAX) {
            return Ok(v);
        }
        self.read_lb(lb_name, true).await
    }

    // ---------------------------------------------------------------- the LB batch

    pub(super) fn new_lb(&self) -> Value {
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

    pub(super) fn pools_for(&self, cluster: &str, lb_name: &str, lb: &Value) -> Vec<PoolRef> {
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
    pub(super) fn node_ip_addresses(&self, nodes: &[Node], family: Family) -> Vec<(String, String)> {
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

    pub(super) async fn apply_lb_batch(&self, cluster: &str, lb_name: &str, ops: Vec<LbOp>) -> Vec<LbResult> {
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
    pub(super) async fn apply_lb_ops(
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
        // The node set of the batch: the latest one its operations carry (a removal carries none; a batch
        // of removals only leaves membership as it is).
        let nodes: Option<Arc<Vec<Node>>> = ops.iter().rev().find_map(|op| op.nodes().cloned());
        let mut fresh = false;
        for attempt in 0..shared::MAX_ATTEMPTS {
            let current = self.read_lb(lb_name, fresh).await.map_err(|e| (e, false))?;
            let existed = current.is_some();
            let mut lb = current.as_deref().cloned().unwrap_or_else(|| self.new_lb());
            let mut changed = false;
            let mut results: Vec<Result<(), CloudError>> = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    LbOp::Ensure(w, _) => match plan::apply_service(&mut lb, &lb_id, lb_name, w) {
                        Ok(c) => {
                            changed |= c;
                            Ok(())
                        }
                        Err(e) => Err(CloudError::Conflict(e.to_string())),
                    },
                    LbOp::Remove(base) => {
                        changed |= plan::remove_service(&mut lb, &lb_id, base);
                        Ok(())
                    }
                    LbOp::Nodes(_) => Ok(()),
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
                        st.copy.set(None);
                        // Its nodes (multiple LBs) are placed again on the LBs that remain.
                        *self.node_placement.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        return Ok(results.into_iter().map(|r| r.map(|_| None)).collect());
                    }
                    Err(e) => {
                        st.copy.forget();
                        return Err((arm(e), false));
                    }
                }
            }
            let manage_nodes = !self.preconfigured(internal);
            if existed {
                if let Some(t) = self.cfg.reconciled_tags(&tags_of(&lb), is_our_tag) {
                    tracing::info!(
                        load_balancer = lb_name,
                        "load balancer tags reconciled with the cloud config's"
                    );
                    lb["tags"] = json!(t);
                    changed = true;
                }
            }
            // What the services of the batch changed (and tags), before the node set is applied.
            let services_changed = changed;
            let mut changed_pools: Vec<String> = Vec::new();
            if self.node_ip_mode() && manage_nodes {
                if let Some(nodes) = &nodes {
                    for (family, _) in &pools {
                        let addrs = self.node_ip_addresses(nodes, *family);
                        let pool = backend_pool_name(cluster, *family);
                        if let Some(before) = plan::set_pool_addresses(&mut lb, &pool, &addrs, &self.vnet_id()) {
                            changed = true;
                            changed_pools.push(pool.clone());
                            let (added, removed) = pool_changes(&before, &addrs);
                            tracing::info!(load_balancer = lb_name, pool = %pool, nodes = nodes.len(), addresses = addrs.len(), added = ?added, removed = ?removed, "backend pool addresses changed");
                        }
                    }
                }
            }
            // Only pool membership changed on an existing LB: write the pools as the child resources they are
            // (as upstream does), not the whole LB with every Service's frontends, rules and probes.
            if existed && !services_changed && !changed_pools.is_empty() {
                let mut updated = lb.clone();
                for pool in &changed_pools {
                    let written = self.write_pool(lb_name, &lb, pool).await.map_err(|e| (e, false))?;
                    plan::replace_child(&mut updated, "backendAddressPools", pool, written);
                }
                st.copy.set(Some(Arc::new(updated.clone())));
                let written = Some(Arc::new(updated));
                return Ok(results.into_iter().map(|r| r.map(|_| written.clone())).collect());
            }
            let mut written = current.clone();
            if changed || !existed {
                shared::strip_read_only(shared::Kind::LoadBalancer, &mut lb);
                match self
                    .clients
                    .load_balancers
                    .create_or_update(self.lb_rg(), lb_name, lb)
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
                        st.copy.set(Some(v.clone()));
                        written = Some(v);
                    }
                    Err(e) if e.is_conflict() && attempt + 1 < shared::MAX_ATTEMPTS => {
                        tracing::debug!(load_balancer = lb_name, "load balancer changed under us; re-reading");
                        st.copy.forget();
                        fresh = true;
                        continue;
                    }
                    Err(e) => {
                        st.copy.forget();
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

    /// PUTs one backend pool of `lb` (its `loadBalancerBackendAddresses`) as the child resource; returns the
    /// pool as ARM answered. The LB's etag moves with it: the returned pool carries the new one.
    async fn write_pool(&self, lb_name: &str, lb: &Value, pool: &str) -> Result<Value, CloudError> {
        let mut body = plan::children_ref(lb, "backendAddressPools")
            .iter()
            .find(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(pool))
            })
            .cloned()
            .ok_or_else(|| CloudError::Azure(format!("backend pool {pool} missing from load balancer {lb_name}")))?;
        if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
            for k in [
                "provisioningState",
                "backendIPConfigurations",
                "loadBalancingRules",
                "outboundRule",
                "outboundRules",
                "inboundNatRules",
            ] {
                p.remove(k);
            }
        }
        let model = from_value(body, "backend address pool")?;
        match self
            .clients
            .load_balancers
            .create_or_update_backend_pool(self.lb_rg(), lb_name, pool, &model)
            .await
        {
            Ok(w) => {
                tracing::info!(load_balancer = lb_name, pool, "backend pool written");
                Ok(to_value(&w))
            }
            Err(e) => {
                self.state(lb_name).copy.forget();
                Err(arm(e))
            }
        }
    }

    /// Takes what the Service has on `lb_name` away — only when our copy shows something of it there (the
    /// copy follows our writes): an LB holding nothing of it costs neither a batch nor a copy of its body.
    pub(super) async fn remove_from(&self, cluster: &str, lb_name: &str, base: &str) -> Result<(), CloudError> {
        match self.peek_lb(lb_name).await? {
            Some(lb) if plan::holds_any_of(&lb, base) => {
                drop(lb);
                self.submit_lb(cluster, lb_name, LbOp::Remove(base.to_string()))
                    .await
                    .map(|_| ())
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn submit_lb(&self, cluster: &str, lb_name: &str, op: LbOp) -> LbResult {
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
