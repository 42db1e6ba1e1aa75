//! Private Link Services of Services (`azure-pls-create`): created or updated on the Service's internal
//! frontend after the load balancer is written (one list of the resource group's services, one PUT only when
//! something differs), shared by a Service without settings of its own, refused when unmanaged or owned by a
//! Service that asks for other settings; deleted (private endpoint connections first) before the frontend it
//! serves goes.

use super::*;
use crate::loadbalancer::pls::{self, PlsContext};

impl LoadBalancerApplier {
    fn pls_resource_group(&self, spec: Option<&annotations::PlsSpec>) -> String {
        spec.and_then(|p| p.resource_group.clone())
            .unwrap_or_else(|| self.cfg.private_link_service_resource_group.clone())
    }

    /// The Private Link Service serving a frontend, if any (from the resource group's list, cached for
    /// `plsCacheTTLInSeconds`; our own writes drop the copy).
    async fn pls_of_frontend(&self, rg: &str, frontend_id: &str) -> Result<Option<Value>, CloudError> {
        let client = self.clients.private_link_services.clone();
        let rg_owned = rg.to_string();
        let all = self
            .pls_lists
            .get(
                &lower(rg),
                ReadMode::Default,
                || async move { client.list(&rg_owned).await },
            )
            .await
            .map_err(arm)?;
        Ok(all
            .iter()
            .find(|p| pls::frontend_of(p).is_some_and(|f| f.eq_ignore_ascii_case(frontend_id)))
            .cloned())
    }

    /// The subnet of the IP configurations: `azure-pls-ip-configuration-subnet` (or the internal subnet),
    /// else `subnetName`.
    fn pls_subnet_name(&self, spec: &annotations::PlsSpec) -> String {
        spec.subnet.clone().unwrap_or_else(|| self.cfg.subnet_name.clone())
    }

    /// Before a Private Link Service is written: its subnet exists and has Private Link Service network
    /// policies disabled (as upstream does; ARM refuses the service otherwise).
    async fn prepare_pls_subnet(&self, name: &str) -> Result<(), CloudError> {
        let rg = if self.cfg.vnet_resource_group.is_empty() {
            self.cfg.resource_group.clone()
        } else {
            self.cfg.vnet_resource_group.clone()
        };
        let subnet = match self.clients.subnets.get(&rg, &self.cfg.vnet_name, name).await {
            Ok(s) => to_value(&s),
            Err(e) if e.is_not_found() => {
                return Err(CloudError::InvalidInput(format!(
                    "the private link service subnet {name} (azure-pls-ip-configuration-subnet or subnetName) was not found in virtual network {}",
                    self.cfg.vnet_name
                )))
            }
            Err(e) => return Err(arm(e)),
        };
        let policy = subnet
            .pointer("/properties/privateLinkServiceNetworkPolicies")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !policy.eq_ignore_ascii_case("Disabled") {
            let mut body = subnet.clone();
            body["properties"]["privateLinkServiceNetworkPolicies"] = json!("Disabled");
            if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("provisioningState");
                p.remove("ipConfigurations");
            }
            self.clients
                .subnets
                .create_or_update(&rg, &self.cfg.vnet_name, name, &body)
                .await
                .map_err(arm)?;
            tracing::info!(subnet = %name, "private link service network policies disabled on the subnet");
        }
        Ok(())
    }

    /// Creates or updates the Service's Private Link Service on its IPv4 frontend of `lb` (upstream's
    /// `reconcilePrivateLinkService` with a PLS wanted).
    pub(super) async fn ensure_pls(
        &self,
        cluster: &str,
        key: &str,
        spec: &ServiceLbSpec,
        lb_name: &str,
        lb: &Value,
        base: &str,
    ) -> Result<(), CloudError> {
        let Some(want) = &spec.pls else { return Ok(()) };
        if !spec.families.contains(&Family::V4) {
            return Err(CloudError::InvalidInput(format!(
                "service {key}: a private link service needs an IPv4 frontend (IPv6 is not supported for private link service)"
            )));
        }
        if !spec.internal && !spec.floating_ip_disabled {
            return Err(CloudError::InvalidInput(format!(
                "service {key}: a service requiring a private link service must be internal or disable floating IP"
            )));
        }
        let Some(fe_name) = plan::service_frontend_v4(lb, base) else {
            return Err(CloudError::Azure(format!(
                "service {key}: no IPv4 frontend on load balancer {lb_name} yet for the private link service; will retry"
            )));
        };
        let fe_id = plan::child_id(&self.lb_id(lb_name), "frontendIPConfigurations", &fe_name);
        let rg = self.pls_resource_group(Some(want));
        let existing = self.pls_of_frontend(&rg, &fe_id).await?;
        if let Some(e) = &existing {
            if !pls::managed_by(e, cluster) {
                return Err(CloudError::InvalidInput(format!(
                    "service {key}: frontend {fe_id} already has a private link service not managed by this cluster ({})",
                    e.get("id").and_then(Value::as_str).unwrap_or_default()
                )));
            }
            let owner = pls::owner(e).unwrap_or_default().to_string();
            if !owner.eq_ignore_ascii_case(key) {
                if want.has_settings {
                    return Err(CloudError::InvalidInput(format!(
                        "service {key}: frontend {fe_id} already has private link service {} owned by service {owner}; only the owner sets its azure-pls-* settings",
                        e.get("name").and_then(Value::as_str).unwrap_or_default()
                    )));
                }
                tracing::info!(service = key, owner = %owner, "sharing the private link service of another service");
                return Ok(());
            }
        }
        let name = pls::pls_name(existing.as_ref(), want, &fe_name)
            .map_err(|e| CloudError::InvalidInput(format!("service {key}: {e}")))?;
        // The subnet id is derived (no read): the subnet is read only when the service is to be written.
        let subnet_name = self.pls_subnet_name(want);
        let subnet_id = format!("{}/subnets/{subnet_name}", self.vnet_id());
        let config_tags = self.cfg.merged_tags();
        let system_tags = crate::config::parse_system_tags(&self.cfg.system_tags);
        let ctx = PlsContext {
            location: &self.cfg.location,
            cluster,
            service_key: key,
            frontend_id: &fe_id,
            frontend_name: &fe_name,
            subnet_id: &subnet_id,
            subnet_name: &subnet_name,
            config_tags: &config_tags,
            system_tags: &system_tags,
        };
        let (mut body, dirty) = pls::expected_pls(existing.as_ref(), &name, want, &ctx);
        if !dirty {
            return Ok(());
        }
        self.prepare_pls_subnet(&subnet_name).await?;
        if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
            for k in [
                "provisioningState",
                "privateEndpointConnections",
                "networkInterfaces",
                "alias",
            ] {
                p.remove(k);
            }
        }
        let written = self
            .clients
            .private_link_services
            .create_or_update(&rg, &name, &body)
            .await;
        self.pls_lists.invalidate(&lower(&rg));
        written.map_err(arm)?;
        tracing::info!(service = key, private_link_service = %name, created = existing.is_none(), "private link service ensured");
        Ok(())
    }

    /// Deletes the Private Link Services on the frontends the Service's removal deletes from `lb` (its own,
    /// not those other Services still use), private endpoint connections first.
    pub(super) async fn delete_pls_of(
        &self,
        service: &Service,
        spec: Option<&ServiceLbSpec>,
        lb_name: &str,
        lb: &Value,
        base: &str,
    ) -> Result<(), CloudError> {
        let lb_id = self.lb_id(lb_name);
        let kept = plan::frontends_kept_for_others(lb, &lb_id, base);
        let own: Vec<String> = plan::children_ref(lb, "frontendIPConfigurations")
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .filter(|n| names::service_owns(base, n) && !kept.iter().any(|k| k.eq_ignore_ascii_case(n)))
            .map(|n| plan::child_id(&lb_id, "frontendIPConfigurations", n))
            .collect();
        if own.is_empty() {
            return Ok(());
        }
        let rg = self.pls_resource_group(spec.and_then(|s| s.pls.as_ref()));
        for fe in own {
            let Some(p) = self.pls_of_frontend(&rg, &fe).await? else {
                continue;
            };
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            for c in p
                .pointer("/properties/privateEndpointConnections")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(conn) = c.get("name").and_then(Value::as_str) {
                    self.clients
                        .private_link_services
                        .delete_endpoint_connection(&rg, &name, conn)
                        .await
                        .map_err(arm)?;
                }
            }
            let deleted = self.clients.private_link_services.delete(&rg, &name).await;
            self.pls_lists.invalidate(&lower(&rg));
            match deleted {
                Ok(()) | Err(ArmError::NotFound { .. }) => {
                    tracing::info!(service = %service_key(service), private_link_service = %name, "private link service deleted")
                }
                Err(e) => return Err(arm(e)),
            }
        }
        Ok(())
    }
}
