//! VM nodes: availability-set and standalone VMs, and the VMs of flexible scale sets (`vmType: vmssflex`, or
//! `vmss` with `enableVmssFlexNodes`) — all from one VM list (with instance view) per resource group, one NIC
//! list and one public-IP list per resource group, each cached with its TTL. In `vmType: vmss` clusters this is
//! the mixed-cluster cache (`nonVmssUniformNodesCacheTTLInSeconds`). A flexible scale set's VM is known by its
//! computer name (the node name, as the kubelet registers it) and by its VM name (its provider id); without
//! flex handling such VMs are skipped (they are not availability-set nodes).

use super::names::power_state;
use super::{enum_str, NodeIps, NodeVm, VmSetError, VmSetKind, VmSetRef, UNKNOWN_REFRESH_INTERVAL};
use crate::arm::{
    provider_id_for, ArmError, NetworkInterfaces, PublicIpAddresses, ReadMode, ResourceId, TtlCache, VirtualMachines,
};
use azure_mgmt_compute::models as compute;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// VMs of one resource group by lower-cased VM name and computer name.
#[derive(Debug, Default)]
pub struct VmIndex {
    by_name: HashMap<String, Arc<NodeVm>>,
}

/// Cache TTLs.
#[derive(Debug, Clone, Copy)]
pub struct VmTtls {
    /// The VM list.
    pub vms: Duration,
    /// NIC lists.
    pub nics: Duration,
    /// Public-IP lists.
    pub public_ips: Duration,
}

/// The availability-set backend.
pub struct AvailabilitySets {
    vms: Arc<dyn VirtualMachines>,
    nics: Arc<dyn NetworkInterfaces>,
    pips: Arc<dyn PublicIpAddresses>,
    resource_group: String,
    index: TtlCache<String, VmIndex, ArmError>,
    nic_lists: TtlCache<String, super::NicIndex, ArmError>,
    pip_lists: TtlCache<String, HashMap<String, String>, ArmError>,
    refreshed: super::RefreshLimiter,
    /// Whether VMs of flexible scale sets are nodes.
    flex: bool,
    /// Whether the other VMs (availability-set and standalone) are nodes.
    others: bool,
}

impl AvailabilitySets {
    /// A backend for the cluster's resource group.
    pub fn new(
        vms: Arc<dyn VirtualMachines>,
        nics: Arc<dyn NetworkInterfaces>,
        pips: Arc<dyn PublicIpAddresses>,
        resource_group: &str,
        ttls: VmTtls,
    ) -> Self {
        Self {
            vms,
            nics,
            pips,
            resource_group: resource_group.to_string(),
            index: TtlCache::new(ttls.vms),
            nic_lists: TtlCache::new(ttls.nics),
            pip_lists: TtlCache::new(ttls.public_ips),
            refreshed: super::RefreshLimiter::default(),
            flex: false,
            others: true,
        }
    }

    /// Also serve the VMs of flexible scale sets (`vmType: vmssflex`, `enableVmssFlexNodes`).
    pub fn with_flex(mut self, flex: bool) -> Self {
        self.flex = flex;
        self
    }

    /// Serve no availability-set or standalone VM (`disableAvailabilitySetNodes` with `enableVmssFlexNodes`:
    /// only flexible scale sets' VMs).
    pub fn without_availability_set_vms(mut self) -> Self {
        self.others = false;
        self
    }

    fn may_refresh(&self, key: String) -> bool {
        self.refreshed.allow(key)
    }

    async fn index(&self, rg: &str, mode: ReadMode) -> Result<Arc<VmIndex>, ArmError> {
        self.index
            .get(&rg.to_ascii_lowercase(), mode, || async {
                let list = self.vms.list(rg, true).await?;
                let mut idx = VmIndex::default();
                for vm in list.iter().filter(|v| if is_flex(v) { self.flex } else { self.others }) {
                    if let Some(n) = to_node(vm) {
                        let n = Arc::new(n);
                        if let Some(name) = &vm.resource.name {
                            idx.by_name.insert(name.to_ascii_lowercase(), n.clone());
                        }
                        idx.by_name.insert(n.node_name.clone(), n);
                    }
                }
                Ok(idx)
            })
            .await
    }

    /// The VM of a node name; an unknown name refreshes the list at most once per interval.
    pub async fn node(&self, node_name: &str) -> Result<Arc<NodeVm>, VmSetError> {
        let rg = self.resource_group.clone();
        let name = node_name.to_ascii_lowercase();
        if let Some(n) = self.index(&rg, ReadMode::Default).await?.by_name.get(&name) {
            return Ok(n.clone());
        }
        if self.may_refresh(format!("vms/{}", rg.to_ascii_lowercase())) {
            if let Some(n) = self.index(&rg, ReadMode::ForceRefresh).await?.by_name.get(&name) {
                return Ok(n.clone());
            }
            return Err(VmSetError::InstanceNotFound(node_name.to_string()));
        }
        Err(VmSetError::InstanceNotFound(format!(
            "{node_name} (not in the VM list of {rg}, refreshed less than {UNKNOWN_REFRESH_INTERVAL:?} ago)"
        )))
    }

    /// The VM of a provider id: cached list, one rate-limited refresh, then a GET whose 404 alone means gone.
    pub async fn vm(&self, rg: &str, name: &str) -> Result<Arc<NodeVm>, VmSetError> {
        let key = name.to_ascii_lowercase();
        if let Some(n) = self.index(rg, ReadMode::Default).await?.by_name.get(&key) {
            return Ok(n.clone());
        }
        if self.may_refresh(format!("vms/{}", rg.to_ascii_lowercase())) {
            if let Some(n) = self.index(rg, ReadMode::ForceRefresh).await?.by_name.get(&key) {
                return Ok(n.clone());
            }
        }
        match self.vms.get(rg, name, true).await {
            Ok(vm) => to_node(&vm)
                .map(Arc::new)
                .ok_or_else(|| VmSetError::Invalid(format!("VM {rg}/{name} has no id"))),
            Err(e) if e.is_not_found() => Err(VmSetError::InstanceNotFound(format!("{rg}/virtualMachines/{name}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Addresses from the resource group's NIC and public-IP lists.
    pub async fn node_ips(&self, vm: &NodeVm) -> Result<NodeIps, VmSetError> {
        let Some(primary) = vm.nic_ids.first() else {
            return Err(VmSetError::Invalid(format!("VM {} has no network interface", vm.id)));
        };
        let nic_rg = super::rg_of(primary);
        let key = nic_rg.to_ascii_lowercase();
        let load_nics = |mode| {
            let rg = nic_rg.clone();
            self.nic_lists.get(&key, mode, move || async move {
                Ok(super::index_nics(self.nics.list(&rg).await?))
            })
        };
        let mut nics = load_nics(ReadMode::Default).await?;
        if !nics.contains_key(&primary.to_ascii_lowercase())
            && self.may_refresh(format!("nics/{}", nic_rg.to_ascii_lowercase()))
        {
            nics = load_nics(ReadMode::ForceRefresh).await?;
        }
        let Some(nic) = nics.get(&primary.to_ascii_lowercase()) else {
            return Err(VmSetError::Invalid(format!(
                "network interface {primary} of {} was not found",
                vm.node_name
            )));
        };
        let mut ips = nic.ips.clone();
        for pip_id in &nic.public_ids {
            let pip_rg = super::rg_of(pip_id);
            let pips = self
                .pip_lists
                .get(&pip_rg.to_ascii_lowercase(), ReadMode::Default, || async {
                    let list = self.pips.list(&pip_rg).await?;
                    Ok(list
                        .into_iter()
                        .filter_map(|p| Some((p.resource.id.clone()?.to_ascii_lowercase(), p.properties?.ip_address?)))
                        .collect::<HashMap<_, _>>())
                })
                .await?;
            if let Some(addr) = pips.get(&pip_id.to_ascii_lowercase()) {
                ips.external.push(addr.clone());
            }
        }
        Ok(ips)
    }

    /// The availability sets (and standalone VMs, and flexible scale sets) of the cluster's resource group.
    pub async fn vm_sets(&self) -> Result<Vec<VmSetRef>, VmSetError> {
        let idx = self.index(&self.resource_group, ReadMode::Default).await?;
        let mut sets: Vec<VmSetRef> = idx.by_name.values().map(|n| n.vm_set.clone()).collect();
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        sets.dedup();
        Ok(sets)
    }

    /// Every VM of the cluster's resource group.
    pub async fn all_vms(&self) -> Result<Vec<Arc<NodeVm>>, VmSetError> {
        let idx = self.index(&self.resource_group, ReadMode::Default).await?;
        let mut seen = std::collections::HashSet::new();
        Ok(idx
            .by_name
            .values()
            .filter(|n| seen.insert(n.id.clone()))
            .cloned()
            .collect())
    }
}

fn is_flex(vm: &compute::VirtualMachine) -> bool {
    vm.properties
        .as_ref()
        .and_then(|p| p.virtual_machine_scale_set.as_ref())
        .is_some()
}

fn to_node(vm: &compute::VirtualMachine) -> Option<NodeVm> {
    let id = vm.resource.id.clone()?;
    let parsed = ResourceId::parse(&id).ok()?;
    let props = vm.properties.as_ref();
    let name = vm.resource.name.clone().unwrap_or_else(|| parsed.name().to_string());
    let iv = props.and_then(|p| p.instance_view.as_ref());
    let nics = super::primary_first(props.and_then(|p| p.network_profile.as_ref()));
    let flex_set = props
        .and_then(|p| p.virtual_machine_scale_set.as_ref())
        .and_then(|s| s.id.clone());
    let availability_set = props
        .and_then(|p| p.availability_set.as_ref())
        .and_then(|a| a.id.clone());
    let vm_set = match (flex_set, availability_set) {
        (Some(ss), _) => VmSetRef {
            kind: VmSetKind::FlexScaleSet,
            name: ResourceId::parse(&ss)
                .map(|r| r.name().to_string())
                .unwrap_or(ss.clone()),
            resource_group: super::rg_of(&ss),
        },
        (None, Some(av)) => VmSetRef {
            kind: VmSetKind::AvailabilitySet,
            name: ResourceId::parse(&av).map(|r| r.name().to_string()).unwrap_or(av),
            resource_group: parsed.resource_group.clone(),
        },
        (None, None) => VmSetRef {
            kind: VmSetKind::Standalone,
            name: name.clone(),
            resource_group: parsed.resource_group.clone(),
        },
    };
    // A flexible scale set's VM is named `<scale set>_<id>`; its node is named by its computer name.
    let computer_name = props
        .and_then(|p| p.os_profile.as_ref())
        .and_then(|o| o.computer_name.clone())
        .or_else(|| iv.and_then(|i| i.computer_name.clone()));
    let node_name = match (&vm_set.kind, computer_name) {
        (VmSetKind::FlexScaleSet, Some(c)) => c,
        _ => name.clone(),
    };
    Some(NodeVm {
        node_name: node_name.to_ascii_lowercase(),
        provider_id: provider_id_for(&parsed),
        id,
        instance_type: props
            .and_then(|p| p.hardware_profile.as_ref())
            .and_then(|h| h.vm_size.as_ref())
            .map(enum_str)
            .unwrap_or_default(),
        location: vm.resource.location.to_ascii_lowercase(),
        zone: vm.zones.first().cloned(),
        // Without an instance view (Azure Stack) upstream uses fault domain 0.
        fault_domain: Some(
            iv.and_then(|i| i.platform_fault_domain)
                .or(props.and_then(|p| p.platform_fault_domain))
                .unwrap_or(0),
        ),
        power_state: iv
            .map(|i| power_state(i.statuses.iter().filter_map(|s| s.code.as_deref())))
            .unwrap_or_else(|| "unknown".into()),
        provisioning_state: props.and_then(|p| p.provisioning_state.clone()).unwrap_or_default(),
        vm_set,
        nic_ids: nics,
    })
}
