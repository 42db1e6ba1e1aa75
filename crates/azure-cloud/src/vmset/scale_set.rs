//! Uniform scale sets: the scale-set list per resource group, an instance list per scale set (with
//! instance view: power state and fault domain) and a NIC list per scale set, each cached with its TTL.

use super::names::{computer_name_prefix, power_state};
use super::{enum_str, NodeIps, NodeVm, VmSetError, VmSetKind, VmSetRef, UNKNOWN_REFRESH_INTERVAL};
use crate::arm::{
    provider_id_for, ArmError, NetworkInterfaces, ReadMode, ResourceId, TtlCache, VirtualMachineScaleSetVms,
    VirtualMachineScaleSets,
};
use azure_mgmt_compute::models as compute;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A scale set as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetInfo {
    /// Name.
    pub name: String,
    /// Lower-cased computer-name prefix (default: the name).
    pub prefix: String,
    /// Resource group.
    pub resource_group: String,
}

/// The instances of one scale set.
#[derive(Debug, Default)]
pub struct InstanceIndex {
    by_name: HashMap<String, Arc<NodeVm>>,
    by_instance_id: HashMap<String, Arc<NodeVm>>,
}

impl InstanceIndex {
    /// Every instance.
    pub fn all(&self) -> impl Iterator<Item = &Arc<NodeVm>> {
        self.by_instance_id.values()
    }
}

type Key = (String, String);

/// Cache TTLs.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSetTtls {
    /// `vmssCacheTTLInSeconds`.
    pub scale_sets: Duration,
    /// `vmssVirtualMachinesCacheTTLInSeconds` (also the scale-set NIC lists).
    pub instances: Duration,
}

/// The scale-set backend.
pub struct ScaleSets {
    vmss: Arc<dyn VirtualMachineScaleSets>,
    vmss_vms: Arc<dyn VirtualMachineScaleSetVms>,
    nics: Arc<dyn NetworkInterfaces>,
    resource_group: String,
    location: String,
    with_instance_view: bool,
    sets: TtlCache<String, Vec<ScaleSetInfo>, ArmError>,
    instances: TtlCache<Key, InstanceIndex, ArmError>,
    nic_lists: TtlCache<Key, super::NicIndex, ArmError>,
    refreshed: super::RefreshLimiter,
}

impl ScaleSets {
    /// A backend for the cluster's resource group and location.
    pub fn new(
        vmss: Arc<dyn VirtualMachineScaleSets>,
        vmss_vms: Arc<dyn VirtualMachineScaleSetVms>,
        nics: Arc<dyn NetworkInterfaces>,
        resource_group: &str,
        location: &str,
        ttls: ScaleSetTtls,
        with_instance_view: bool,
    ) -> Self {
        Self {
            vmss,
            vmss_vms,
            nics,
            resource_group: resource_group.to_string(),
            location: location.to_ascii_lowercase(),
            with_instance_view,
            sets: TtlCache::new(ttls.scale_sets),
            instances: TtlCache::new(ttls.instances),
            nic_lists: TtlCache::new(ttls.instances),
            refreshed: super::RefreshLimiter::default(),
        }
    }

    /// True when the cache behind `key` may be force-refreshed now (at most once per interval).
    fn may_refresh(&self, key: String) -> bool {
        self.refreshed.allow(key)
    }

    async fn scale_sets(&self, rg: &str, mode: ReadMode) -> Result<Arc<Vec<ScaleSetInfo>>, ArmError> {
        let key = rg.to_ascii_lowercase();
        self.sets
            .get(&key, mode, || async {
                let list = self.vmss.list(rg).await?;
                Ok(list
                    .into_iter()
                    .filter(|s| !is_being_deleted(s) && !is_flexible(s))
                    .filter_map(|s| {
                        let name = s.resource.name.clone()?;
                        let prefix = s
                            .properties
                            .as_ref()
                            .and_then(|p| p.virtual_machine_profile.as_ref())
                            .and_then(|p| p.os_profile.as_ref())
                            .and_then(|o| o.computer_name_prefix.clone())
                            .unwrap_or_else(|| name.clone())
                            .to_ascii_lowercase();
                        Some(ScaleSetInfo {
                            name,
                            prefix,
                            resource_group: rg.to_string(),
                        })
                    })
                    .collect())
            })
            .await
    }

    async fn index(&self, rg: &str, ss: &str, mode: ReadMode) -> Result<Arc<InstanceIndex>, VmSetError> {
        let key = (rg.to_ascii_lowercase(), ss.to_ascii_lowercase());
        let loaded = self
            .instances
            .get(&key, mode, || async {
                let vms = self.vmss_vms.list(rg, ss, self.with_instance_view).await?;
                let mut idx = InstanceIndex::default();
                for vm in vms {
                    if let Some(n) = self.to_node(&vm, rg, ss) {
                        let n = Arc::new(n);
                        idx.by_name.insert(n.node_name.clone(), n.clone());
                        if let Some(id) = &vm.instance_id {
                            idx.by_instance_id.insert(id.clone(), n);
                        }
                    }
                }
                Ok(idx)
            })
            .await;
        match loaded {
            Ok(i) => Ok(i),
            // The scale set itself is gone: so are its instances.
            Err(e) if e.is_not_found() => Err(VmSetError::InstanceNotFound(format!("scale set {rg}/{ss}: {e}"))),
            Err(e) => Err(e.into()),
        }
    }

    fn to_node(&self, vm: &compute::VirtualMachineScaleSetVm, rg: &str, ss: &str) -> Option<NodeVm> {
        let id = vm.resource.id.clone()?;
        let props = vm.properties.as_ref();
        let computer_name = props
            .and_then(|p| p.os_profile.as_ref())
            .and_then(|o| o.computer_name.clone())
            .or_else(|| {
                props
                    .and_then(|p| p.instance_view.as_ref())
                    .and_then(|iv| iv.computer_name.clone())
            })?;
        let iv = props.and_then(|p| p.instance_view.as_ref());
        let nics = super::primary_first(props.and_then(|p| p.network_profile.as_ref()));
        let parsed = ResourceId::parse(&id).ok()?;
        Some(NodeVm {
            node_name: computer_name.to_ascii_lowercase(),
            provider_id: provider_id_for(&parsed),
            id,
            instance_type: vm
                .sku
                .as_ref()
                .and_then(|s| s.name.clone())
                .or_else(|| {
                    props
                        .and_then(|p| p.hardware_profile.as_ref())
                        .and_then(|h| h.vm_size.as_ref())
                        .map(enum_str)
                })
                .unwrap_or_default(),
            location: vm.resource.location.to_ascii_lowercase(),
            zone: vm.zones.first().cloned(),
            fault_domain: iv.and_then(|i| i.platform_fault_domain),
            power_state: iv
                .map(|i| power_state(i.statuses.iter().filter_map(|s| s.code.as_deref())))
                .unwrap_or_else(|| "unknown".into()),
            provisioning_state: props.and_then(|p| p.provisioning_state.clone()).unwrap_or_default(),
            vm_set: VmSetRef {
                kind: VmSetKind::ScaleSet,
                name: ss.to_string(),
                resource_group: rg.to_string(),
            },
            nic_ids: nics,
        })
    }

    /// The node when its name is a computer name of a known scale set; `Ok(None)` when no scale set's
    /// prefix matches (another backend may own it). `InstanceNotFound` when the scale set matches but
    /// the instance is not in a fresh list.
    pub async fn node_if_scale_set(&self, node_name: &str) -> Result<Option<Arc<NodeVm>>, VmSetError> {
        let Some(prefix) = computer_name_prefix(node_name) else {
            return Ok(None);
        };
        let prefix = prefix.to_ascii_lowercase();
        let rg = self.resource_group.clone();
        let mut sets = self.scale_sets(&rg, ReadMode::Default).await?;
        if !sets.iter().any(|s| s.prefix == prefix) && self.may_refresh(format!("sets/{rg}")) {
            sets = self.scale_sets(&rg, ReadMode::ForceRefresh).await?;
        }
        let Some(ss) = sets.iter().find(|s| s.prefix == prefix) else {
            return Ok(None);
        };
        let name = node_name.to_ascii_lowercase();
        let idx = self.index(&ss.resource_group, &ss.name, ReadMode::Default).await?;
        if let Some(n) = idx.by_name.get(&name) {
            return Ok(Some(n.clone()));
        }
        if self.may_refresh(format!("vms/{}/{}", ss.resource_group, ss.name).to_ascii_lowercase()) {
            let idx = self.index(&ss.resource_group, &ss.name, ReadMode::ForceRefresh).await?;
            if let Some(n) = idx.by_name.get(&name) {
                return Ok(Some(n.clone()));
            }
            return Err(VmSetError::InstanceNotFound(node_name.to_string()));
        }
        Err(VmSetError::InstanceNotFound(format!(
            "{node_name} (not in scale set {}; its list was refreshed less than {:?} ago)",
            ss.name, UNKNOWN_REFRESH_INTERVAL
        )))
    }

    /// The instance of a provider id. Absent from the cached list → one refresh (rate-limited), then a
    /// GET: only ARM's 404 makes it `InstanceNotFound`.
    pub async fn instance(&self, rg: &str, ss: &str, instance_id: &str) -> Result<Arc<NodeVm>, VmSetError> {
        let idx = self.index(rg, ss, ReadMode::Default).await?;
        if let Some(n) = idx.by_instance_id.get(instance_id) {
            return Ok(n.clone());
        }
        if self.may_refresh(format!("vms/{rg}/{ss}").to_ascii_lowercase()) {
            let idx = self.index(rg, ss, ReadMode::ForceRefresh).await?;
            if let Some(n) = idx.by_instance_id.get(instance_id) {
                return Ok(n.clone());
            }
        }
        match self.vmss_vms.get(rg, ss, instance_id, self.with_instance_view).await {
            Ok(vm) => self.to_node(&vm, rg, ss).map(Arc::new).ok_or_else(|| {
                VmSetError::Invalid(format!(
                    "scale-set instance {rg}/{ss}/{instance_id} has no id or computer name"
                ))
            }),
            Err(e) if e.is_not_found() => Err(VmSetError::InstanceNotFound(format!(
                "{rg}/{ss}/virtualMachines/{instance_id}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Addresses from the scale set's NIC list (one list per scale set, cached).
    pub async fn node_ips(&self, vm: &NodeVm) -> Result<NodeIps, VmSetError> {
        let (rg, ss) = (vm.vm_set.resource_group.clone(), vm.vm_set.name.clone());
        let Some(primary) = vm.nic_ids.first() else {
            return Err(VmSetError::Invalid(format!(
                "scale-set instance {} has no network interface",
                vm.id
            )));
        };
        let key = (rg.to_ascii_lowercase(), ss.to_ascii_lowercase());
        let load = |mode| {
            let (rg, ss) = (rg.clone(), ss.clone());
            self.nic_lists.get(&key, mode, move || async move {
                Ok(super::index_nics(self.nics.list_scale_set_nics(&rg, &ss).await?))
            })
        };
        let mut nics = load(ReadMode::Default).await?;
        if !nics.contains_key(&primary.to_ascii_lowercase()) && self.may_refresh(format!("nics/{}/{}", key.0, key.1)) {
            nics = load(ReadMode::ForceRefresh).await?;
        }
        let Some(nic) = nics.get(&primary.to_ascii_lowercase()) else {
            return Err(VmSetError::Invalid(format!(
                "network interface {primary} of {} was not found",
                vm.node_name
            )));
        };
        let mut ips = nic.ips.clone();
        for pip_id in &nic.public_ids {
            // Instance public IPs live under the instance NIC's IP configuration.
            let Ok(p) = ResourceId::parse(pip_id) else { continue };
            let seg = |t: &str| p.name_of(t).unwrap_or_default().to_string();
            let pip = self
                .nics
                .get_scale_set_public_ip(
                    &rg,
                    &ss,
                    &seg("virtualMachines"),
                    &seg("networkInterfaces"),
                    &seg("ipConfigurations"),
                    p.name(),
                )
                .await?;
            if let Some(addr) = pip.properties.as_ref().and_then(|p| p.ip_address.clone()) {
                ips.external.push(addr);
            }
        }
        Ok(ips)
    }

    /// The cluster's scale sets.
    pub async fn vm_sets(&self) -> Result<Vec<VmSetRef>, VmSetError> {
        Ok(self
            .scale_sets(&self.resource_group, ReadMode::Default)
            .await?
            .iter()
            .map(|s| VmSetRef {
                kind: VmSetKind::ScaleSet,
                name: s.name.clone(),
                resource_group: s.resource_group.clone(),
            })
            .collect())
    }

    /// Every instance of every scale set (one list per scale set).
    pub async fn all_instances(&self) -> Result<Vec<Arc<NodeVm>>, VmSetError> {
        let sets = self.scale_sets(&self.resource_group, ReadMode::Default).await?;
        let mut out = Vec::new();
        for s in sets.iter() {
            out.extend(
                self.index(&s.resource_group, &s.name, ReadMode::Default)
                    .await?
                    .all()
                    .cloned(),
            );
        }
        Ok(out)
    }

    /// The location of the cluster.
    pub fn location(&self) -> &str {
        &self.location
    }
}

/// Scale sets being deleted are skipped, as upstream does.
fn is_being_deleted(s: &compute::VirtualMachineScaleSet) -> bool {
    s.properties
        .as_ref()
        .and_then(|p| p.provisioning_state.as_deref())
        .is_some_and(|st| st.eq_ignore_ascii_case("deleting"))
}

/// Turns a scale-set instance as read (JSON) into the body of its PUT: drops what ARM computes (instance
/// view, provisioning state, latest-model flag, extension resources), keeps everything else as read.
pub(crate) fn instance_put_body(v: &mut serde_json::Value) {
    if let Some(p) = v.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
        p.remove("instanceView");
        p.remove("provisioningState");
        p.remove("latestModelApplied");
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("resources");
    }
}

/// A flexible scale set: its instances are ordinary VMs (the VM-list backend serves them); ARM refuses the
/// uniform instance list for it.
pub fn is_flexible(s: &compute::VirtualMachineScaleSet) -> bool {
    s.properties
        .as_ref()
        .and_then(|p| p.orchestration_mode.as_ref())
        .is_some_and(|m| enum_str(m).eq_ignore_ascii_case("Flexible"))
}
