//! Typed settings: validated string values resolved once into enums, so the provider makes no raw string
//! comparisons on config values.

use super::CloudConfig;
use std::time::Duration;

/// `vmType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmType {
    /// VMs and availability sets.
    Standard,
    /// Uniform scale sets (and availability-set VMs, and with `enableVmssFlexNodes` flexible scale sets'
    /// VMs, in mixed clusters).
    Vmss,
    /// Flexible scale sets (their instances are ordinary VMs).
    VmssFlex,
}

/// `loadBalancerSku`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbSku {
    /// Basic.
    Basic,
    /// Standard.
    Standard,
}

/// `loadBalancerBackendPoolConfigurationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPoolType {
    /// Pools reference the nodes' NIC IP configurations.
    NodeIpConfiguration,
    /// Pools hold node IP addresses.
    NodeIp,
}

/// `clusterServiceLoadBalancerHealthProbeMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// One probe per service node port.
    ServiceNodePort,
    /// One shared HTTP probe to kube-proxy.
    Shared,
}

/// `preConfiguredBackendPoolLoadBalancerTypes`: load balancers whose node membership is left to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreconfiguredPools {
    /// None (we manage every pool).
    None,
    /// Internal load balancers.
    Internal,
    /// External load balancers.
    External,
    /// All load balancers.
    All,
}

impl PreconfiguredPools {
    /// Whether an internal (`true`) or external load balancer's membership is preconfigured.
    pub fn covers(self, internal: bool) -> bool {
        match self {
            Self::None => false,
            Self::Internal => internal,
            Self::External => !internal,
            Self::All => true,
        }
    }
}

fn is(value: &str, name: &str) -> bool {
    value.eq_ignore_ascii_case(name)
}

impl CloudConfig {
    /// `vmType` (validated: `standard`, `vmss` or `vmssflex`).
    pub fn vm_kind(&self) -> VmType {
        if is(&self.vm_type, "standard") {
            VmType::Standard
        } else if is(&self.vm_type, "vmssflex") {
            VmType::VmssFlex
        } else {
            VmType::Vmss
        }
    }

    /// `loadBalancerSku` (validated: `basic` or `standard`).
    pub fn sku(&self) -> LbSku {
        if is(&self.load_balancer_sku, "basic") {
            LbSku::Basic
        } else {
            LbSku::Standard
        }
    }

    /// `loadBalancerBackendPoolConfigurationType`.
    pub fn pool_type(&self) -> BackendPoolType {
        if is(&self.load_balancer_backend_pool_configuration_type, "nodeIP") {
            BackendPoolType::NodeIp
        } else {
            BackendPoolType::NodeIpConfiguration
        }
    }

    /// `clusterServiceLoadBalancerHealthProbeMode`.
    pub fn probe_mode(&self) -> ProbeMode {
        if is(&self.cluster_service_load_balancer_health_probe_mode, "shared") {
            ProbeMode::Shared
        } else {
            ProbeMode::ServiceNodePort
        }
    }

    /// `preConfiguredBackendPoolLoadBalancerTypes`.
    pub fn preconfigured_pools(&self) -> PreconfiguredPools {
        let v = &self.pre_configured_backend_pool_load_balancer_types;
        if is(v, "all") {
            PreconfiguredPools::All
        } else if is(v, "internal") {
            PreconfiguredPools::Internal
        } else if is(v, "external") {
            PreconfiguredPools::External
        } else {
            PreconfiguredPools::None
        }
    }

    /// `identitySystem: adfs` (Azure Stack).
    pub fn is_adfs(&self) -> bool {
        is(&self.identity_system, "adfs")
    }

    /// A TTL key's value as a duration (validation refuses negatives).
    pub fn ttl(secs: i64) -> Duration {
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BACKEND_POOL_TYPES, HEALTH_PROBE_MODES, LB_SKUS, PRECONFIGURED_POOL_TYPES, VM_TYPES};
    use super::*;

    fn cfg(key: &str, value: &str) -> CloudConfig {
        let text = format!(r#"{{"useInstanceMetadata": true, "{key}": "{value}"}}"#);
        CloudConfig::parse(&text, &|_| None).unwrap().0
    }

    /// Every value validation accepts resolves to its own variant (the lists and the enums cannot drift).
    #[test]
    fn every_accepted_value_has_its_variant() {
        let vm: Vec<VmType> = VM_TYPES.iter().map(|v| cfg("vmType", v).vm_kind()).collect();
        assert_eq!(vm, [VmType::Standard, VmType::Vmss, VmType::VmssFlex]);
        let sku: Vec<LbSku> = LB_SKUS.iter().map(|v| cfg("loadBalancerSku", v).sku()).collect();
        assert_eq!(sku, [LbSku::Basic, LbSku::Standard]);
        let pools: Vec<BackendPoolType> = BACKEND_POOL_TYPES
            .iter()
            .map(|v| cfg("loadBalancerBackendPoolConfigurationType", v).pool_type())
            .collect();
        assert_eq!(pools, [BackendPoolType::NodeIpConfiguration, BackendPoolType::NodeIp]);
        let modes: Vec<ProbeMode> = HEALTH_PROBE_MODES
            .iter()
            .map(|v| cfg("clusterServiceLoadBalancerHealthProbeMode", v).probe_mode())
            .collect();
        assert_eq!(modes, [ProbeMode::ServiceNodePort, ProbeMode::Shared]);
        let pre: Vec<PreconfiguredPools> = PRECONFIGURED_POOL_TYPES
            .iter()
            .map(|v| cfg("preConfiguredBackendPoolLoadBalancerTypes", v).preconfigured_pools())
            .collect();
        assert_eq!(
            pre,
            [
                PreconfiguredPools::None,
                PreconfiguredPools::Internal,
                PreconfiguredPools::External,
                PreconfiguredPools::All
            ]
        );
        assert!(PreconfiguredPools::Internal.covers(true) && !PreconfiguredPools::Internal.covers(false));
    }
}
