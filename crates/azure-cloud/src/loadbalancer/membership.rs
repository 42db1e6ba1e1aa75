//! Backend-pool membership in `nodeIPConfiguration` mode (the default): the pool id is added to the primary
//! IP configuration (of the pool's family) of each node's primary NIC — for availability-set and standalone
//! VMs a NIC PUT, for scale sets one model PATCH per scale set plus one PUT per instance that lacks it.
//! Nothing is written when membership is already right; a node set ensured once is not re-checked until
//! the instance cache TTL passes or the set changes. Removal mirrors it (nodes that became ineligible, and
//! every member before an LB is deleted).

use super::backends::exclusion;
use super::names::Family;
use crate::arm::ArmError;
use crate::cloud::ArmClients;
use crate::config::CloudConfig;
use crate::provider::CloudError;
use crate::vmset::{VmSet, VmSetError, VmSetKind};
use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Concurrent scale-set instance PUTs when `putVMSSVMBatchSize` is 0.
pub const DEFAULT_INSTANCE_CONCURRENCY: usize = 16;

/// A pool and its family.
pub type PoolRef = (Family, String);

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn flag(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

fn is_v6(ipc: &Value) -> bool {
    ipc.pointer("/properties/privateIPAddressVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("IPv6"))
}

/// Adds (or removes) the pools on the IP configurations of their family: IPv4 → the primary one, IPv6 →
/// the first IPv6 one. Returns true when something changed.
pub fn edit_ip_configs(ipcs: &mut [Value], pools: &[PoolRef], add: bool) -> bool {
    let mut changed = false;
    for (family, pool) in pools {
        let idx = match family {
            Family::V4 => ipcs
                .iter()
                .position(|c| flag(c, "/properties/primary") && !is_v6(c))
                .or_else(|| ipcs.iter().position(|c| !is_v6(c))),
            Family::V6 => ipcs.iter().position(is_v6),
        };
        let Some(ipc) = idx.and_then(|i| ipcs.get_mut(i)) else {
            continue;
        };
        if !ipc.get("properties").is_some_and(Value::is_object) {
            ipc["properties"] = json!({});
        }
        let list = ipc["properties"]
            .as_object_mut()
            .map(|p| p.entry("loadBalancerBackendAddressPools").or_insert_with(|| json!([])));
        let Some(list) = list else { continue };
        if !list.is_array() {
            *list = json!([]);
        }
        let Some(arr) = list.as_array_mut() else { continue };
        let has = arr.iter().any(|p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(pool))
        });
        if add && !has {
            arr.push(json!({ "id": pool }));
            changed = true;
        } else if !add && has {
            arr.retain(|p| {
                !p.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(pool))
            });
            changed = true;
        }
    }
    changed
}

/// The same on NIC configurations (scale-set model or instance): the primary configuration's IP configs.
pub fn edit_nic_configs(configs: &mut [Value], pools: &[PoolRef], add: bool) -> bool {
    let idx = configs
        .iter()
        .position(|c| flag(c, "/properties/primary"))
        .or(if configs.is_empty() { None } else { Some(0) });
    let Some(cfg) = idx.and_then(|i| configs.get_mut(i)) else {
        return false;
    };
    match cfg
        .pointer_mut("/properties/ipConfigurations")
        .and_then(Value::as_array_mut)
    {
        Some(ipcs) => edit_ip_configs(ipcs, pools, add),
        None => false,
    }
}

/// The LB of a pool id, lower-cased and without `-internal` (the cluster's internal/external pair is one).
pub fn lb_pair_of_pool(pool_id: &str) -> Option<String> {
    let lower = pool_id.to_ascii_lowercase();
    let lb = lower.split("/backendaddresspools/").next()?;
    if lb.len() == lower.len() {
        return None;
    }
    Some(lb.strip_suffix(super::names::INTERNAL_SUFFIX).unwrap_or(lb).to_string())
}

/// Every backend pool id the IP configurations of a NIC (JSON) reference.
pub fn pool_ids_in(nic: &Value) -> Vec<String> {
    nic.pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .map(|ipcs| {
            ipcs.iter()
                .flat_map(|c| {
                    c.pointer("/properties/loadBalancerBackendAddressPools")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// True when some IP configuration of the NIC configurations references one of the pools.
pub fn references_any(v: &Value, pools: &[String]) -> bool {
    let text = lower(&v.to_string());
    pools.iter().any(|p| text.contains(&format!("\"{}\"", lower(p))))
}

use crate::arm::to_json as to_value;

fn arm(e: ArmError) -> CloudError {
    CloudError::Arm(e)
}

/// Writes backend-pool membership for one cluster.
pub struct Membership {
    clients: ArmClients,
    vmset: Arc<dyn VmSet>,
    cfg: Arc<CloudConfig>,
    ttl: Duration,
    concurrency: usize,
    /// pool ids → (node names ensured, when).
    memo: Mutex<HashMap<String, (BTreeSet<String>, Instant)>>,
}

/// What one pass found per VM set.
#[derive(Default)]
struct Targets {
    /// (rg, scale set) → instance ids to add; and to remove.
    scale_sets: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)>,
    /// Primary NIC ids of VMs to add; and to remove.
    nics_add: BTreeSet<String>,
    nics_remove: BTreeSet<String>,
}

impl Membership {
    /// Membership writer.
    pub fn new(clients: ArmClients, vmset: Arc<dyn VmSet>, cfg: Arc<CloudConfig>) -> Self {
        let concurrency = match cfg.put_vmss_vm_batch_size {
            n if n >= 1 => usize::try_from(n).unwrap_or(1),
            _ => DEFAULT_INSTANCE_CONCURRENCY,
        };
        Self {
            ttl: Duration::from_secs(u64::try_from(cfg.vmss_virtual_machines_cache_ttl_in_seconds).unwrap_or(600)),
            clients,
            vmset,
            cfg,
            concurrency,
            memo: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what was ensured (after an LB is deleted, or a write failed).
    pub fn forget(&self) {
        self.memo.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Ensures every eligible node (restricted to `vm_set` on the basic SKU) is in the pools and nodes that
    /// became ineligible are not.
    pub async fn ensure(&self, pools: &[PoolRef], nodes: &[Node], vm_set: Option<&str>) -> Result<(), CloudError> {
        if pools.is_empty() {
            return Ok(());
        }
        let key = pools.iter().map(|(_, p)| lower(p)).collect::<Vec<_>>().join(",");
        let mut targets = Targets::default();
        let mut names = BTreeSet::new();
        for node in nodes {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let add = exclusion(node, &self.cfg).is_none();
            let vm = match self.vmset.node(&name).await {
                Ok(vm) => vm,
                // A node whose VM is gone or that we do not manage has nothing to add or remove.
                Err(VmSetError::InstanceNotFound(_)) | Err(VmSetError::NotManaged(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(set) = vm_set {
                if add && !vm.vm_set.name.eq_ignore_ascii_case(set) {
                    continue;
                }
            }
            if add {
                names.insert(name.clone());
            }
            match vm.vm_set.kind {
                VmSetKind::ScaleSet => {
                    let instance = vm.id.rsplit('/').next().unwrap_or_default().to_string();
                    let entry = targets
                        .scale_sets
                        .entry((vm.vm_set.resource_group.clone(), vm.vm_set.name.clone()))
                        .or_default();
                    if add {
                        entry.0.insert(instance);
                    } else {
                        entry.1.insert(instance);
                    }
                }
                _ => {
                    if let Some(nic) = vm.nic_ids.first() {
                        if add {
                            targets.nics_add.insert(nic.clone());
                        } else {
                            targets.nics_remove.insert(nic.clone());
                        }
                    }
                }
            }
        }
        {
            let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((set, at)) = memo.get(&key) {
                let removals = targets.nics_remove.is_empty() && targets.scale_sets.values().all(|(_, r)| r.is_empty());
                if *set == names && at.elapsed() < self.ttl && removals {
                    return Ok(());
                }
            }
        }
        let result = self.write(pools, &targets).await;
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(()) => {
                memo.insert(key, (names, Instant::now()));
            }
            Err(_) => {
                memo.remove(&key);
            }
        }
        result
    }

    async fn write(&self, pools: &[PoolRef], t: &Targets) -> Result<(), CloudError> {
        // Scale sets are updated concurrently (each with its own bounded instance concurrency), as upstream
        // does: one Service on two scale sets no longer waits for the first set's instances.
        let sets = t
            .scale_sets
            .iter()
            .map(|((rg, ss), (add, remove))| self.scale_set(rg, ss, pools, add, remove));
        let results: Vec<Result<(), CloudError>> = futures::future::join_all(sets).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for (nics, add) in [(&t.nics_add, true), (&t.nics_remove, false)] {
            let futs: Vec<_> = nics.iter().map(|nic| self.nic(nic, pools, add)).collect();
            let results: Vec<Result<(), CloudError>> =
                stream::iter(futs).buffer_unordered(self.concurrency).collect().await;
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        Ok(())
    }

    /// One NIC of an availability-set or standalone VM.
    async fn nic(&self, nic_id: &str, pools: &[PoolRef], add: bool) -> Result<(), CloudError> {
        let id = crate::arm::ResourceId::parse(nic_id)
            .map_err(|e| CloudError::Azure(format!("cannot parse NIC id {nic_id}: {e}")))?;
        let nic = match self.clients.nics.get(&id.resource_group, id.name()).await {
            Ok(n) => n,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(arm(e)),
        };
        let mut v = to_value(&nic);
        let state = v
            .pointer("/properties/provisioningState")
            .and_then(Value::as_str)
            .unwrap_or("");
        if state.eq_ignore_ascii_case("Failed") {
            tracing::warn!(nic = %nic_id, "NIC is in the Failed state; not changing its backend pools");
            return Ok(());
        }
        if add && self.cfg.is_standard_sku() {
            // A NIC already in a pool of another standard LB cannot join ours (the internal/external pair of
            // the cluster counts as one LB, as upstream's `isBackendPoolOnSameLB`).
            let ours: BTreeSet<String> = pools.iter().filter_map(|(_, p)| lb_pair_of_pool(p)).collect();
            let foreign = pool_ids_in(&v)
                .iter()
                .filter_map(|p| lb_pair_of_pool(p))
                .any(|lb| !ours.contains(&lb));
            if foreign {
                tracing::info!(nic = %nic_id, "NIC is in a backend pool of another load balancer; skipped");
                return Ok(());
            }
        }
        let changed = match v
            .pointer_mut("/properties/ipConfigurations")
            .and_then(Value::as_array_mut)
        {
            Some(ipcs) => edit_ip_configs(ipcs, pools, add),
            None => false,
        };
        if !changed {
            return Ok(());
        }
        self.clients
            .nics
            .create_or_update(&id.resource_group, id.name(), &v)
            .await
            .map_err(arm)?;
        tracing::info!(nic = %nic_id, add, "backend pool membership of NIC updated");
        Ok(())
    }

    /// One scale set: the model (PATCH of its network profile), then each instance that differs.
    async fn scale_set(
        &self,
        rg: &str,
        ss: &str,
        pools: &[PoolRef],
        add: &BTreeSet<String>,
        remove: &BTreeSet<String>,
    ) -> Result<(), CloudError> {
        let model = self.clients.scale_sets.get(rg, ss).await.map_err(arm)?;
        let mut mv = to_value(&model);
        let state = mv
            .pointer("/properties/provisioningState")
            .and_then(Value::as_str)
            .unwrap_or("");
        if state.eq_ignore_ascii_case("Deleting") {
            tracing::info!(scale_set = ss, "scale set is being deleted; backend pools left alone");
            return Ok(());
        }
        if !add.is_empty() {
            let ptr = "/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations";
            let changed = mv
                .pointer_mut(ptr)
                .and_then(Value::as_array_mut)
                .is_some_and(|c| edit_nic_configs(c, pools, true));
            if changed {
                let configs = mv.pointer(ptr).cloned().unwrap_or(Value::Null);
                let patch = json!({"properties": {"virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": configs}}}});
                self.clients.scale_sets.update(rg, ss, &patch).await.map_err(arm)?;
                tracing::info!(scale_set = ss, "backend pools added to the scale-set model");
            }
        }
        let instances = self.clients.scale_set_vms.list(rg, ss, false).await.map_err(arm)?;
        let mut writes = Vec::new();
        for inst in instances {
            let id = inst.instance_id.clone().unwrap_or_default();
            let want_add = add.contains(&id);
            if !want_add && !remove.contains(&id) {
                continue;
            }
            let mut v = to_value(&inst);
            let state = v
                .pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .unwrap_or("");
            if state.eq_ignore_ascii_case("Deleting") {
                continue;
            }
            let changed = v
                .pointer_mut("/properties/networkProfileConfiguration/networkInterfaceConfigurations")
                .and_then(Value::as_array_mut)
                .is_some_and(|c| edit_nic_configs(c, pools, want_add));
            if !changed {
                continue;
            }
            crate::vmset::scale_set::instance_put_body(&mut v);
            writes.push((id, v));
        }
        let n = writes.len();
        let client = self.clients.scale_set_vms.clone();
        let futs: Vec<_> = writes
            .into_iter()
            .map(|(id, body)| {
                let (client, rg, ss) = (client.clone(), rg.to_string(), ss.to_string());
                async move { client.update(&rg, &ss, &id, &body).await.map(|_| ()).map_err(arm) }
            })
            .collect();
        let results: Vec<Result<(), CloudError>> =
            stream::iter(futs).buffer_unordered(self.concurrency).collect().await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        if n > 0 {
            tracing::info!(
                scale_set = ss,
                instances = n,
                "backend pool membership of scale-set instances updated"
            );
        }
        Ok(())
    }

    /// Removes the pools from every NIC and scale set (model and instances) of the resource group that
    /// references them: the step before an LB can be deleted.
    pub async fn detach_all(&self, pools: &[PoolRef]) -> Result<(), CloudError> {
        self.forget();
        let ids: Vec<String> = pools.iter().map(|(_, p)| p.clone()).collect();
        let rg = &self.cfg.resource_group;
        if matches!(
            self.cfg.vm_kind(),
            crate::config::VmType::Vmss | crate::config::VmType::VmssFlex
        ) {
            for ss in self.clients.scale_sets.list(rg).await.map_err(arm)? {
                let v = to_value(&ss);
                let Some(name) = ss.resource.name.clone() else { continue };
                let ptr = "/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations";
                let mut configs = v.pointer(ptr).cloned().unwrap_or(json!([]));
                let model_refs = configs
                    .as_array_mut()
                    .is_some_and(|c| edit_nic_configs(c, pools, false));
                if model_refs {
                    let patch = json!({"properties": {"virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": configs}}}});
                    self.clients.scale_sets.update(rg, &name, &patch).await.map_err(arm)?;
                }
                // A flexible scale set's instances are VMs with their own NICs (below); ARM refuses the
                // uniform instance list for it.
                if crate::vmset::scale_set::is_flexible(&ss) {
                    continue;
                }
                let members: BTreeSet<String> = self
                    .clients
                    .scale_set_vms
                    .list(rg, &name, false)
                    .await
                    .map_err(arm)?
                    .into_iter()
                    .filter(|i| references_any(&to_value(&i.properties), &ids))
                    .filter_map(|i| i.instance_id)
                    .collect();
                if !members.is_empty() {
                    self.scale_set(rg, &name, pools, &BTreeSet::new(), &members).await?;
                }
            }
        }
        let nics: Vec<String> = self
            .clients
            .nics
            .list(rg)
            .await
            .map_err(arm)?
            .into_iter()
            .filter(|n| references_any(&to_value(&n.properties), &ids))
            .filter_map(|n| n.resource.id)
            .collect();
        for nic in nics {
            self.nic(&nic, pools, false).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_go_to_the_ip_configuration_of_their_family() {
        let mut cfgs = vec![
            json!({"name": "nic0", "properties": {"primary": false, "ipConfigurations": [{"name": "x"}]}}),
            json!({"name": "nic1", "properties": {"primary": true, "ipConfigurations": [
                {"name": "secondary", "properties": {"primary": false}},
                {"name": "ipconfig1", "properties": {"primary": true, "loadBalancerBackendAddressPools": [{"id": "/other"}]}},
                {"name": "v6", "properties": {"privateIPAddressVersion": "IPv6"}},
            ]}}),
        ];
        let pools = vec![
            (Family::V4, "/lb/pools/k".to_string()),
            (Family::V6, "/lb/pools/k-IPv6".to_string()),
        ];
        assert!(edit_nic_configs(&mut cfgs, &pools, true));
        assert!(!edit_nic_configs(&mut cfgs, &pools, true), "idempotent");
        let ipcs = &cfgs[1]["properties"]["ipConfigurations"];
        assert_eq!(
            ipcs[1]["properties"]["loadBalancerBackendAddressPools"],
            json!([{"id": "/other"}, {"id": "/lb/pools/k"}])
        );
        assert_eq!(
            ipcs[2]["properties"]["loadBalancerBackendAddressPools"],
            json!([{"id": "/lb/pools/k-IPv6"}])
        );
        assert!(ipcs[0]["properties"].get("loadBalancerBackendAddressPools").is_none());
        assert!(references_any(&json!(cfgs), &["/LB/pools/K".to_string()]));
        assert!(edit_nic_configs(&mut cfgs, &pools, false));
        assert_eq!(
            cfgs[1]["properties"]["ipConfigurations"][1]["properties"]["loadBalancerBackendAddressPools"],
            json!([{"id": "/other"}])
        );
        assert!(!references_any(&json!(cfgs), &["/lb/pools/k".to_string()]));
    }

    #[test]
    fn the_internal_and_external_lb_of_the_cluster_are_one_pair() {
        let p = |lb: &str| {
            format!("/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/loadBalancers/{lb}/backendAddressPools/kubernetes")
        };
        assert_eq!(
            lb_pair_of_pool(&p("kubernetes")),
            lb_pair_of_pool(&p("kubernetes-internal"))
        );
        assert_ne!(lb_pair_of_pool(&p("kubernetes")), lb_pair_of_pool(&p("other")));
        assert_eq!(lb_pair_of_pool("/not/a/pool"), None);
        let nic = json!({"properties": {"ipConfigurations": [{"properties": {"loadBalancerBackendAddressPools": [{"id": p("x")}]}}]}});
        assert_eq!(pool_ids_in(&nic), [p("x")]);
    }
}
