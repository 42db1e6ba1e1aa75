//! Node groups, for a cluster autoscaler embedding the provider: the cluster's scale sets (uniform and
//! flexible) with their size bounds (from the `min`/`max` tags the Azure autoscaler's auto-discovery reads, or
//! from explicit specs), the group of a node, the target size (read and set with a capacity-only PATCH — never
//! a full model PUT, which would drop backend pools and other settings), deletion of given instances (one
//! `deleteInstances` call per uniform scale set; a flexible scale set's instances are VMs, each deleted, its
//! capacity following), and instance status (a flexible scale set's from the resource group's VM list).

use crate::arm::ArmError;
use crate::cloud::ArmClients;
use crate::vmset::{VmSet, VmSetError, VmSetKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bounds of a node group given by configuration (they win over tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroupSpec {
    /// Scale set name.
    pub name: String,
    /// Minimum size.
    pub min_size: i64,
    /// Maximum size.
    pub max_size: i64,
}

/// A node group (a uniform scale set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    /// Scale set name.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// Minimum size.
    pub min_size: i64,
    /// Maximum size.
    pub max_size: i64,
    /// Current target size (`sku.capacity`).
    pub target_size: i64,
    /// VM size of its instances.
    pub vm_size: String,
    /// Zones.
    pub zones: Vec<String>,
    /// A flexible scale set (its instances are VMs named `<scale set>_<id>`).
    pub flexible: bool,
}

/// What an instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Being created.
    Creating,
    /// Running (or provisioned and stopped).
    Running,
    /// Being deleted.
    Deleting,
    /// Provisioning failed.
    Failed,
}

/// An instance of a node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInstance {
    /// `azure://` provider id (the node's `spec.providerID`).
    pub provider_id: String,
    /// Node name (lower-cased computer name).
    pub node_name: String,
    /// Instance id (a flexible scale set's: the VM name).
    pub instance_id: String,
    /// State.
    pub state: InstanceState,
}

/// Errors of node-group operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeGroupError {
    /// No such node group.
    #[error("node group {0} not found (scale sets of the cluster resource group only)")]
    NotFound(String),
    /// A size outside the group's bounds.
    #[error("node group {group}: size {size} is outside {min}..={max}")]
    OutOfBounds {
        /// Group.
        group: String,
        /// Asked size.
        size: i64,
        /// Min.
        min: i64,
        /// Max.
        max: i64,
    },
    /// A node that is not in the group.
    #[error("node {node} is not in node group {group}")]
    NotInGroup {
        /// Node.
        node: String,
        /// Group.
        group: String,
    },
    /// Azure failed: retry later.
    #[error("{0}")]
    Azure(String),
}

impl From<ArmError> for NodeGroupError {
    fn from(e: ArmError) -> Self {
        NodeGroupError::Azure(e.to_string())
    }
}

/// Upstream's instance state from provisioning state (and power state for stopped instances).
pub fn instance_state(provisioning: &str) -> InstanceState {
    match provisioning.to_ascii_lowercase().as_str() {
        "creating" => InstanceState::Creating,
        "deleting" => InstanceState::Deleting,
        "failed" => InstanceState::Failed,
        _ => InstanceState::Running,
    }
}

/// The bounds of a scale set: explicit spec, else `min`/`max` tags, else 0..=capacity... (a group without
/// bounds cannot grow: max = its current size).
pub fn bounds(name: &str, tags: &BTreeMap<String, String>, capacity: i64, specs: &[NodeGroupSpec]) -> (i64, i64) {
    if let Some(s) = specs.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
        return (s.min_size, s.max_size);
    }
    let tag = |k: &str| tags.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    (tag("min").unwrap_or(0), tag("max").unwrap_or(capacity))
}

/// Node groups of one cluster. The group list and each group's instances are cached (single flight, TTL
/// of [`NodeGroups::with_cache_ttls`]) and refreshed by our own writes, so an autoscaler polling every few
/// seconds costs one scale-set list and one instance list per group per TTL, not per poll.
pub struct NodeGroups {
    clients: ArmClients,
    vmset: Arc<dyn VmSet>,
    resource_group: String,
    specs: Vec<NodeGroupSpec>,
    groups: crate::arm::TtlCache<(), Vec<NodeGroup>, NodeGroupError>,
    members: crate::arm::TtlCache<String, Vec<GroupInstance>, NodeGroupError>,
}

impl NodeGroups {
    /// Node groups of the scale sets in `resource_group`, bounded by `specs` (else by tags); nothing cached
    /// (see [`NodeGroups::with_cache_ttls`]).
    pub fn new(clients: ArmClients, vmset: Arc<dyn VmSet>, resource_group: &str, specs: Vec<NodeGroupSpec>) -> Self {
        Self {
            clients,
            vmset,
            resource_group: resource_group.to_string(),
            specs,
            groups: crate::arm::TtlCache::new(std::time::Duration::ZERO),
            members: crate::arm::TtlCache::new(std::time::Duration::ZERO),
        }
    }

    /// Caches the group list for `groups` and each group's instances for `instances` (the provider uses
    /// `vmssCacheTTLInSeconds` and `vmssVirtualMachinesCacheTTLInSeconds`).
    pub fn with_cache_ttls(mut self, groups: std::time::Duration, instances: std::time::Duration) -> Self {
        self.groups = crate::arm::TtlCache::new(groups);
        self.members = crate::arm::TtlCache::new(instances);
        self
    }

    /// Forgets what our write to `group` changed.
    fn changed(&self, group: &str) {
        self.groups.invalidate(&());
        self.members.invalidate(&group.to_ascii_lowercase());
    }

    fn group_of(&self, ss: &azure_mgmt_compute::models::VirtualMachineScaleSet) -> Option<NodeGroup> {
        let v = serde_json::to_value(ss).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let tags: BTreeMap<String, String> = v
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let capacity = v.pointer("/sku/capacity").and_then(Value::as_i64).unwrap_or(0);
        let (min_size, max_size) = bounds(&name, &tags, capacity, &self.specs);
        Some(NodeGroup {
            resource_group: self.resource_group.clone(),
            min_size,
            max_size,
            target_size: capacity,
            vm_size: v
                .pointer("/sku/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            zones: v
                .get("zones")
                .and_then(Value::as_array)
                .map(|z| z.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            flexible: crate::vmset::scale_set::is_flexible(ss),
            name,
        })
    }

    /// The node groups (one scale-set list per cache TTL).
    pub async fn list(&self) -> Result<Vec<NodeGroup>, NodeGroupError> {
        let got = self
            .groups
            .get(&(), crate::arm::ReadMode::Default, || async {
                let sets = self.clients.scale_sets.list(&self.resource_group).await?;
                Ok(sets.iter().filter_map(|s| self.group_of(s)).collect())
            })
            .await?;
        Ok((*got).clone())
    }

    /// One node group (from the cached list).
    pub async fn get(&self, group: &str) -> Result<NodeGroup, NodeGroupError> {
        self.list()
            .await?
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(group))
            .ok_or_else(|| NodeGroupError::NotFound(group.to_string()))
    }

    /// The group of a node (`None` for availability-set and standalone VMs, and unknown nodes).
    pub async fn node_group_of(&self, node: &str) -> Result<Option<String>, NodeGroupError> {
        match self.vmset.node(node).await {
            Ok(vm) if matches!(vm.vm_set.kind, VmSetKind::ScaleSet | VmSetKind::FlexScaleSet) => {
                Ok(Some(vm.vm_set.name.clone()))
            }
            Ok(_) | Err(VmSetError::InstanceNotFound(_)) | Err(VmSetError::NotManaged(_)) => Ok(None),
            Err(e) => Err(NodeGroupError::Azure(e.to_string())),
        }
    }

    /// Sets the target size with a capacity-only PATCH (`{"sku": {"capacity": n}}`).
    pub async fn set_target_size(&self, group: &str, size: i64) -> Result<(), NodeGroupError> {
        let g = self.get(group).await?;
        if size < g.min_size || size > g.max_size {
            return Err(NodeGroupError::OutOfBounds {
                group: group.to_string(),
                size,
                min: g.min_size,
                max: g.max_size,
            });
        }
        if size == g.target_size {
            return Ok(());
        }
        let written = self
            .clients
            .scale_sets
            .update(&self.resource_group, group, &json!({"sku": {"capacity": size}}))
            .await;
        // Whatever the answer, our copies of this group may be stale now.
        self.changed(group);
        written?;
        tracing::info!(
            node_group = group,
            from = g.target_size,
            to = size,
            "node group resized"
        );
        Ok(())
    }

    /// Deletes the instances behind these nodes in one `deleteInstances` call; they must all be in the
    /// group, and the group must stay at or above its minimum.
    pub async fn delete_nodes(&self, group: &str, nodes: &[&str]) -> Result<(), NodeGroupError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let g = self.get(group).await?;
        let mut ids = Vec::with_capacity(nodes.len());
        for n in nodes {
            let vm = match self.vmset.node(n).await {
                Ok(vm) => vm,
                Err(VmSetError::InstanceNotFound(_)) | Err(VmSetError::NotManaged(_)) => {
                    return Err(NodeGroupError::NotInGroup {
                        node: n.to_string(),
                        group: group.to_string(),
                    })
                }
                Err(e) => return Err(NodeGroupError::Azure(e.to_string())),
            };
            let kind = if g.flexible {
                VmSetKind::FlexScaleSet
            } else {
                VmSetKind::ScaleSet
            };
            if vm.vm_set.kind != kind || !vm.vm_set.name.eq_ignore_ascii_case(group) {
                return Err(NodeGroupError::NotInGroup {
                    node: n.to_string(),
                    group: group.to_string(),
                });
            }
            ids.push(vm.id.rsplit('/').next().unwrap_or_default().to_string());
        }
        let after = g.target_size - i64::try_from(ids.len()).unwrap_or(i64::MAX);
        if after < g.min_size {
            return Err(NodeGroupError::OutOfBounds {
                group: group.to_string(),
                size: after,
                min: g.min_size,
                max: g.max_size,
            });
        }
        let deleted = if g.flexible {
            // A flexible scale set's instances are VMs (ids: their names): deleted together, each on its own.
            let results =
                futures::future::join_all(ids.iter().map(|vm| self.clients.vms.delete(&self.resource_group, vm))).await;
            results.into_iter().collect::<Result<Vec<()>, ArmError>>().map(|_| ())
        } else {
            self.clients
                .scale_sets
                .delete_instances(&self.resource_group, group, &ids)
                .await
        };
        self.changed(group);
        deleted?;
        tracing::info!(node_group = group, instances = ?ids, "instances deleted");
        Ok(())
    }

    /// The instances of a group with their state (one instance list per cache TTL).
    pub async fn instances(&self, group: &str) -> Result<Vec<GroupInstance>, NodeGroupError> {
        let got = self
            .members
            .get(&group.to_ascii_lowercase(), crate::arm::ReadMode::Default, || {
                self.list_instances(group)
            })
            .await?;
        Ok((*got).clone())
    }

    async fn list_instances(&self, group: &str) -> Result<Vec<GroupInstance>, NodeGroupError> {
        if self.get(group).await?.flexible {
            return self.list_flexible_instances(group).await;
        }
        let list = match self
            .clients
            .scale_set_vms
            .list(&self.resource_group, group, false)
            .await
        {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Err(NodeGroupError::NotFound(group.to_string())),
            Err(e) => return Err(e.into()),
        };
        Ok(list
            .iter()
            .filter_map(|i| {
                let v = serde_json::to_value(i).ok()?;
                let instance_id = v
                    .get("instanceId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                group_instance(&v, instance_id)
            })
            .collect())
    }
}

impl NodeGroups {
    /// A flexible scale set's instances: the resource group's VMs that name it as their scale set.
    async fn list_flexible_instances(&self, group: &str) -> Result<Vec<GroupInstance>, NodeGroupError> {
        let vms = self.clients.vms.list(&self.resource_group, false).await?;
        Ok(vms
            .iter()
            .filter_map(|vm| {
                let v = serde_json::to_value(vm).ok()?;
                let ss = v.pointer("/properties/virtualMachineScaleSet/id")?.as_str()?;
                let ss = crate::arm::ResourceId::parse(ss).ok()?;
                if !ss.name().eq_ignore_ascii_case(group) {
                    return None;
                }
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                group_instance(&v, name)
            })
            .collect())
    }
}

/// An instance (scale-set instance or VM, as ARM serves it) of a group.
fn group_instance(v: &Value, instance_id: String) -> Option<GroupInstance> {
    let id = crate::arm::ResourceId::parse(v.get("id")?.as_str()?).ok()?;
    Some(GroupInstance {
        provider_id: crate::arm::provider_id_for(&id),
        node_name: v
            .pointer("/properties/osProfile/computerName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        instance_id,
        state: instance_state(
            v.pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_come_from_specs_then_tags() {
        let tags: BTreeMap<String, String> = [
            ("min".to_string(), "1".to_string()),
            ("max".to_string(), "10".to_string()),
        ]
        .into();
        assert_eq!(bounds("pool", &tags, 3, &[]), (1, 10));
        let spec = NodeGroupSpec {
            name: "POOL".into(),
            min_size: 2,
            max_size: 5,
        };
        assert_eq!(bounds("pool", &tags, 3, &[spec]), (2, 5));
        assert_eq!(
            bounds("pool", &BTreeMap::new(), 3, &[]),
            (0, 3),
            "no bounds: it can shrink, not grow"
        );
    }

    #[test]
    fn states_follow_provisioning() {
        assert_eq!(instance_state("Creating"), InstanceState::Creating);
        assert_eq!(instance_state("deleting"), InstanceState::Deleting);
        assert_eq!(instance_state("Failed"), InstanceState::Failed);
        assert_eq!(instance_state("Succeeded"), InstanceState::Running);
        assert_eq!(instance_state("Updating"), InstanceState::Running);
    }
}
