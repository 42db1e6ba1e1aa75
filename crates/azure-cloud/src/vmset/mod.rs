//! VM sets: which VM backs a node, and what Azure knows about it — for `vmType: standard` (availability-set
//! and standalone VMs) and `vmType: vmss` (uniform scale sets, plus availability-set or standalone VMs in
//! the same cluster).
//!
//! Everything comes from list calls cached with a TTL and a single flight per key: a full pass over 1,000
//! scale-set nodes costs one scale-set list plus one instance list and one NIC list per scale set, never a GET
//! per node. An unknown node refreshes its list at most once per [`UNKNOWN_REFRESH_INTERVAL`]. A throttled or
//! failed lookup is an error, never "not found"; `InstanceNotFound` needs a fresh list without the node (and
//! for provider ids, a 404 from ARM).

pub mod availability_set;
pub mod names;
pub mod scale_set;

use crate::arm::{ArmError, ResourceId};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// An unknown node triggers at most one list refresh per scale set (or resource group) per this interval.
pub const UNKNOWN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Errors of VM-set lookups.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VmSetError {
    /// The node's VM does not exist (confirmed by a fresh list or a 404).
    #[error("instance not found: {0}")]
    InstanceNotFound(String),
    /// The node is not managed by this provider (unmanaged provider id or foreign resource).
    #[error("node {0} is not managed by the Azure cloud provider")]
    NotManaged(String),
    /// ARM failed (throttled, 5xx, timeout): the answer is unknown.
    #[error(transparent)]
    Arm(#[from] ArmError),
    /// Azure returned something the provider cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// The kind of VM set a node belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmSetKind {
    /// A uniform virtual machine scale set.
    ScaleSet,
    /// A flexible virtual machine scale set (its instances are ordinary VMs with their own NICs).
    FlexScaleSet,
    /// An availability set.
    AvailabilitySet,
    /// A standalone VM (no availability set).
    Standalone,
}

/// A node's VM set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSetRef {
    /// Kind.
    pub kind: VmSetKind,
    /// Name (scale set or availability set; the VM name for standalone VMs).
    pub name: String,
    /// Resource group.
    pub resource_group: String,
}

/// What Azure knows about a node's VM.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeVm {
    /// The Kubernetes node name (lower-cased computer name for scale sets; VM name otherwise).
    pub node_name: String,
    /// The ARM id of the VM or scale-set instance.
    pub id: String,
    /// `azure://` + the id with the resource group lower-cased.
    pub provider_id: String,
    /// VM size.
    pub instance_type: String,
    /// Location (lower-cased).
    pub location: String,
    /// Availability zone, when zonal.
    pub zone: Option<String>,
    /// Platform fault domain, when the instance view had it.
    pub fault_domain: Option<i32>,
    /// Power state (`running`, `stopped`, `deallocated`, ..., `unknown`).
    pub power_state: String,
    /// Provisioning state.
    pub provisioning_state: String,
    /// The VM set.
    pub vm_set: VmSetRef,
    /// NIC ids, primary first.
    pub nic_ids: Vec<String>,
}

impl NodeVm {
    /// The zone label value (`<location>-<zone>` or the fault domain).
    pub fn failure_domain(&self) -> Result<String, VmSetError> {
        names::zone_failure_domain(&self.location, self.zone.as_deref(), self.fault_domain).map_err(VmSetError::Invalid)
    }

    /// Upstream's shutdown rule.
    pub fn is_shut_down(&self) -> bool {
        names::is_shut_down(&self.provisioning_state, &self.power_state)
    }
}

/// A node's addresses from its primary NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIps {
    /// Private IPv4 addresses, primary IP configuration first.
    pub internal_v4: Vec<String>,
    /// Private IPv6 addresses.
    pub internal_v6: Vec<String>,
    /// Public addresses.
    pub external: Vec<String>,
}

/// Lookups the provider needs from a VM set backend.
#[async_trait]
pub trait VmSet: Send + Sync {
    /// The VM of a node name.
    async fn node(&self, node_name: &str) -> Result<Arc<NodeVm>, VmSetError>;
    /// The VM of a provider id.
    async fn node_by_provider_id(&self, provider_id: &str) -> Result<Arc<NodeVm>, VmSetError>;
    /// The node's private and public addresses.
    async fn node_ips(&self, vm: &NodeVm) -> Result<NodeIps, VmSetError>;
    /// The VM sets of the cluster.
    async fn vm_sets(&self) -> Result<Vec<VmSetRef>, VmSetError>;
}

/// The string of a generated closed enum (they serialise to their ARM string, `UnknownValue` included).
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Resource group of an ARM id (as written), or empty.
pub(crate) fn rg_of(id: &str) -> String {
    ResourceId::parse(id).map(|r| r.resource_group).unwrap_or_default()
}

/// The backend chosen by `vmType`.
pub struct Dispatch {
    scale_sets: Option<scale_set::ScaleSets>,
    vms: Option<availability_set::AvailabilitySets>,
}

impl Dispatch {
    /// `vmType: standard`: VMs only.
    pub fn standard(vms: availability_set::AvailabilitySets) -> Self {
        Self {
            scale_sets: None,
            vms: Some(vms),
        }
    }

    /// `vmType: vmss`: scale sets, plus VMs unless `disableAvailabilitySetNodes`.
    pub fn vmss(scale_sets: scale_set::ScaleSets, vms: Option<availability_set::AvailabilitySets>) -> Self {
        Self {
            scale_sets: Some(scale_sets),
            vms,
        }
    }
}

#[async_trait]
impl VmSet for Dispatch {
    async fn node(&self, node_name: &str) -> Result<Arc<NodeVm>, VmSetError> {
        if let Some(ss) = &self.scale_sets {
            // A scale-set computer name whose prefix matches a scale set: the scale-set path.
            if let Some(found) = ss.node_if_scale_set(node_name).await? {
                return Ok(found);
            }
        }
        match &self.vms {
            Some(vms) => vms.node(node_name).await,
            None => Err(VmSetError::InstanceNotFound(node_name.to_string())),
        }
    }

    async fn node_by_provider_id(&self, provider_id: &str) -> Result<Arc<NodeVm>, VmSetError> {
        match names::parse_provider_id(provider_id) {
            Some(names::ProviderTarget::ScaleSetInstance {
                resource_group,
                scale_set,
                instance_id,
                ..
            }) => match &self.scale_sets {
                Some(ss) => ss.instance(&resource_group, &scale_set, &instance_id).await,
                None => Err(VmSetError::NotManaged(provider_id.to_string())),
            },
            Some(names::ProviderTarget::VirtualMachine {
                resource_group, name, ..
            }) => match &self.vms {
                Some(vms) => vms.vm(&resource_group, &name).await,
                None => Err(VmSetError::NotManaged(provider_id.to_string())),
            },
            None => Err(VmSetError::NotManaged(provider_id.to_string())),
        }
    }

    async fn node_ips(&self, vm: &NodeVm) -> Result<NodeIps, VmSetError> {
        match (&vm.vm_set.kind, &self.scale_sets, &self.vms) {
            (VmSetKind::ScaleSet, Some(ss), _) => ss.node_ips(vm).await,
            (_, _, Some(vms)) => vms.node_ips(vm).await,
            _ => Err(VmSetError::NotManaged(vm.node_name.clone())),
        }
    }

    async fn vm_sets(&self) -> Result<Vec<VmSetRef>, VmSetError> {
        let mut out = Vec::new();
        if let Some(ss) = &self.scale_sets {
            out.extend(ss.vm_sets().await?);
        }
        if let Some(vms) = &self.vms {
            out.extend(vms.vm_sets().await?);
        }
        Ok(out)
    }
}

/// What is kept of a NIC (the generated model of a 1,000-NIC list is several MiB; this is a few bytes per NIC):
/// its private addresses and the ids of its public IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NicAddresses {
    /// Private addresses, primary IP configuration first.
    pub ips: NodeIps,
    /// Public IP ids of its IP configurations.
    pub public_ids: Vec<String>,
}

/// A NIC list by lower-cased id, as cached by the backends.
pub(crate) type NicIndex = std::collections::HashMap<String, NicAddresses>;

/// Indexes a NIC list as read.
pub(crate) fn index_nics(list: Vec<azure_mgmt_network::models::NetworkInterface>) -> NicIndex {
    list.iter()
        .filter_map(|n| Some((n.resource.id.as_ref()?.to_ascii_lowercase(), nic_addresses(n))))
        .collect()
}

/// Private addresses (v4, v6; primary IP configuration first) and public IP ids of a NIC.
fn nic_addresses(nic: &azure_mgmt_network::models::NetworkInterface) -> NicAddresses {
    let mut ips = NodeIps::default();
    let mut public = Vec::new();
    let mut configs: Vec<_> = nic
        .properties
        .as_ref()
        .map(|p| p.ip_configurations.iter().collect())
        .unwrap_or_default();
    configs.sort_by_key(|c| !c.properties.as_ref().and_then(|p| p.primary).unwrap_or(false));
    for c in configs {
        let Some(p) = c.properties.as_ref() else { continue };
        if let Some(addr) = p.private_ip_address.clone() {
            let v6 = p
                .private_ip_address_version
                .as_ref()
                .map(enum_str)
                .is_some_and(|v| v.eq_ignore_ascii_case("IPv6"))
                || addr.contains(':');
            if v6 {
                ips.internal_v6.push(addr);
            } else {
                ips.internal_v4.push(addr);
            }
        }
        if let Some(id) = p.public_ip_address.as_ref().and_then(|pip| pip.resource.id.clone()) {
            public.push(id);
        }
    }
    NicAddresses {
        ips,
        public_ids: public,
    }
}

/// NIC ids of a VM's network profile, primary first.
pub(crate) fn primary_first(profile: Option<&azure_mgmt_compute::models::NetworkProfile>) -> Vec<String> {
    let mut nics: Vec<(bool, String)> = profile
        .map(|n| {
            n.network_interfaces
                .iter()
                .filter_map(|r| {
                    Some((
                        r.properties.as_ref().and_then(|p| p.primary).unwrap_or(false),
                        r.sub_resource.id.clone()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    nics.sort_by_key(|(primary, _)| !*primary);
    nics.into_iter().map(|(_, id)| id).collect()
}

/// Allows a forced refresh of a key at most once per [`UNKNOWN_REFRESH_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct RefreshLimiter(std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>);

impl RefreshLimiter {
    /// True (and remembered) when `key` was not refreshed within the interval.
    pub(crate) fn allow(&self, key: String) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        match m.get(&key) {
            Some(t) if now.duration_since(*t) < UNKNOWN_REFRESH_INTERVAL => false,
            _ => {
                m.insert(key, now);
                true
            }
        }
    }
}
