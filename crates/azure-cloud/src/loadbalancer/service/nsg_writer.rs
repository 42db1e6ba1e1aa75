//! The security-group writer: each Service's wish (allow rules for its addresses, legacy rules removed)
//! merged purely by `security::apply`, one read (or our last copy) and one PUT per batch.

use super::*;

impl LoadBalancerApplier {
    // ---------------------------------------------------------------- the NSG batch

    pub(super) async fn apply_nsg_batch(&self, wishes: Vec<NsgWish>) -> Vec<Result<(), CloudError>> {
        match self.apply_nsg_ops(&wishes).await {
            Ok(r) => r,
            Err(e) => wishes.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    pub(super) async fn apply_nsg_ops(&self, wishes: &[NsgWish]) -> Result<Vec<Result<(), CloudError>>, CloudError> {
        let (rg, name) = (&self.cfg.security_group_resource_group, &self.cfg.security_group_name);
        let mut fresh = false;
        for attempt in 0..shared::MAX_ATTEMPTS {
            let cached = if fresh { None } else { self.nsg_copy.within_ttl() };
            let current = match cached {
                Some(Some(v)) => v,
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
            if let Some(t) = self.cfg.reconciled_tags(&tags_of(&nsg), is_our_tag) {
                tracing::info!(security_group = %name, "security group tags reconciled with the cloud config's");
                nsg["tags"] = json!(t);
                changed = true;
            }
            if !changed {
                self.nsg_copy.set(Some(current));
                return Ok(results);
            }
            nsg["properties"]["securityRules"] = Value::Array(rules);
            shared::strip_read_only(shared::Kind::SecurityGroup, &mut nsg);
            match self.clients.security_groups.create_or_update(rg, name, &nsg).await {
                Ok(w) => {
                    tracing::info!(security_group = %name, services = wishes.len(), "security group updated");
                    self.nsg_copy.set(Some(Arc::new(w)));
                    return Ok(results);
                }
                Err(e) if e.is_conflict() && attempt + 1 < shared::MAX_ATTEMPTS => {
                    self.nsg_copy.forget();
                    fresh = true;
                }
                Err(e) => {
                    self.nsg_copy.forget();
                    return Err(arm(e));
                }
            }
        }
        Err(CloudError::Azure(format!(
            "security group {name} kept changing under us; will retry"
        )))
    }

    pub(super) async fn submit_nsg(&self, wish: NsgWish) -> Result<(), CloudError> {
        if self.cfg.security_group_name.is_empty() {
            return Ok(());
        }
        self.nsg_queue
            .submit(wish, |w| self.apply_nsg_batch(w))
            .await
            .unwrap_or_else(|| Err(CloudError::Azure("security group update was abandoned".into())))
    }

    /// Addresses of the frontends the service owns on an LB: private addresses, and their PIPs' addresses.
    pub(super) async fn owned_addresses(&self, lb: &Value, base: &str) -> Result<Vec<String>, CloudError> {
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
    pub(super) fn previous_addresses(service: &Service) -> Vec<String> {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
            .unwrap_or_default()
    }

    /// The Service's wish for the NSG: the pure [`security::service_wish`] over its ports, addresses, the
    /// nodes' addresses (floating IP off) and the addresses its status still shows.
    pub(super) fn nsg_wish(
        &self,
        service: &Service,
        spec: &ServiceLbSpec,
        base: &str,
        addresses: &[(Family, String)],
        nodes: &[Node],
    ) -> NsgWish {
        let ports = service.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        let node_ips: Vec<(Family, String)> = if spec.floating_ip_disabled {
            spec.families
                .iter()
                .flat_map(|f| {
                    self.node_ip_addresses(nodes, *f)
                        .into_iter()
                        .map(move |(_, ip)| (*f, ip))
                })
                .collect()
        } else {
            Vec::new()
        };
        security::service_wish(
            &ports,
            spec,
            base,
            addresses,
            &node_ips,
            Self::previous_addresses(service),
        )
    }
}
