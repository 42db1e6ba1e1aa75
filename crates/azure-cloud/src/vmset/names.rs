//! Pure naming rules: scale-set computer names (prefix + 6 base-36 characters of the instance id),
//! provider-id parsing as upstream, power and provisioning states, zones.

use crate::arm::id::resource_id_from_provider_id;

/// Length of the base-36 instance suffix of scale-set computer names.
pub const INSTANCE_SUFFIX_LEN: usize = 6;

/// The instance id encoded in a scale-set computer name (upstream `getScaleSetVMInstanceID`):
/// the last six characters parsed as base 36. `None` for shorter or non-base-36 names.
pub fn instance_id_from_computer_name(name: &str) -> Option<u64> {
    if name.len() < INSTANCE_SUFFIX_LEN || !name.is_ascii() {
        return None;
    }
    let suffix = &name[name.len() - INSTANCE_SUFFIX_LEN..];
    u64::from_str_radix(suffix, 36).ok()
}

/// The computer-name prefix part of a scale-set computer name (everything but the six-character suffix).
pub fn computer_name_prefix(name: &str) -> Option<&str> {
    instance_id_from_computer_name(name).map(|_| &name[..name.len() - INSTANCE_SUFFIX_LEN])
}

/// The computer name of instance `id` of a scale set with `prefix`.
pub fn computer_name(prefix: &str, id: u64) -> String {
    let mut digits = Vec::with_capacity(INSTANCE_SUFFIX_LEN);
    let mut n = id;
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while digits.len() < INSTANCE_SUFFIX_LEN {
        digits.push('0');
    }
    let suffix: String = digits.iter().rev().collect();
    format!("{prefix}{suffix}")
}

/// What a provider id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderTarget {
    /// A scale-set instance.
    ScaleSetInstance {
        /// Subscription.
        subscription: String,
        /// Resource group (as written).
        resource_group: String,
        /// Scale set.
        scale_set: String,
        /// Instance id.
        instance_id: String,
    },
    /// A VM (availability set or standalone).
    VirtualMachine {
        /// Subscription.
        subscription: String,
        /// Resource group.
        resource_group: String,
        /// VM name.
        name: String,
    },
}

fn segment_after<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let lower = path.to_ascii_lowercase();
    let k = format!("/{}/", key.to_ascii_lowercase());
    let i = lower.find(&k)?;
    path[i + k.len()..].split('/').next().filter(|s| !s.is_empty())
}

/// Parses a provider id as upstream: any scheme prefix (`azure://`) or none; scale-set instance ids
/// (`.../virtualMachineScaleSets/<ss>/virtualMachines/<id>`, also the disk `managedBy` form whose last
/// segment is `<ss>_<id>`) and VM ids (`.../Microsoft.Compute/virtualMachines/<name>`). `None` for anything
/// else (unmanaged nodes).
pub fn parse_provider_id(provider_id: &str) -> Option<ProviderTarget> {
    let path = resource_id_from_provider_id(provider_id.trim());
    let path = match path.find("/subscriptions/") {
        Some(i) => &path[i..],
        None => return None,
    };
    let subscription = segment_after(path, "subscriptions")?.to_string();
    let resource_group = segment_after(path, "resourceGroups")?.to_string();
    if let Some(ss) = segment_after(path, "virtualMachineScaleSets") {
        let last = path.trim_end_matches('/').rsplit('/').next()?;
        if !path.to_ascii_lowercase().contains("/virtualmachines/") {
            return None;
        }
        let instance_id = match last.strip_prefix(&format!("{ss}_")) {
            Some(id) => id,
            None => last,
        };
        return Some(ProviderTarget::ScaleSetInstance {
            subscription,
            resource_group,
            scale_set: ss.to_string(),
            instance_id: instance_id.to_string(),
        });
    }
    // Upstream's VM regex is case-sensitive on `Microsoft.Compute/virtualMachines/`.
    let i = path.find("/Microsoft.Compute/virtualMachines/")?;
    let name = &path[i + "/Microsoft.Compute/virtualMachines/".len()..];
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(ProviderTarget::VirtualMachine {
        subscription,
        resource_group,
        name: name.to_string(),
    })
}

/// The power state in an instance view's statuses (`PowerState/<x>` → `x`, lower-cased; `unknown` when absent).
pub fn power_state<'a>(codes: impl IntoIterator<Item = &'a str>) -> String {
    codes
        .into_iter()
        .find_map(|c| c.strip_prefix("PowerState/"))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "unknown".into())
}

/// Upstream's InstanceShutdown rule: provisioning `Succeeded` (any case) and power stopped, deallocated or deallocating.
pub fn is_shut_down(provisioning_state: &str, power_state: &str) -> bool {
    provisioning_state.eq_ignore_ascii_case("succeeded")
        && matches!(power_state, "stopped" | "deallocated" | "deallocating")
}

/// Zone string: `<location lower>-<zone>` for zonal VMs, else the fault domain as a decimal string ("0" when
/// the VM reports none).
/// A non-numeric zone is an error, as upstream.
pub fn zone_failure_domain(location: &str, zone: Option<&str>, fault_domain: Option<i32>) -> Result<String, String> {
    match zone.filter(|z| !z.is_empty()) {
        Some(z) => {
            z.parse::<u32>()
                .map_err(|_| format!("failed to parse zone {z:?}: not a number"))?;
            Ok(format!("{}-{z}", location.to_ascii_lowercase()))
        }
        // No zone and no instance view: fault domain "0", as upstream (its zero value).
        None => Ok(fault_domain.unwrap_or(0).to_string()),
    }
}

/// True when a zone string is an availability zone of `location` (`eastus-1`), not a fault domain.
pub fn is_availability_zone(zone: &str, location: &str) -> bool {
    zone.to_ascii_lowercase()
        .starts_with(&format!("{}-", location.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_names() {
        for (name, id) in [
            ("k8s-pool1-vmss000000", Some(0)),
            ("k8s-pool1-vmss00000a", Some(10)),
            ("k8s-pool1-vmss000010", Some(36)),
            ("aks-nodepool1-12345678-vmss00lfls", Some(1_000_000)),
            ("AKS-VMSS00000Z", Some(35)),
            ("short", None),
            ("k8s-pool2-0", None),
            ("vm-with-dash-00-00", None),
        ] {
            assert_eq!(instance_id_from_computer_name(name), id, "{name}");
        }
        assert_eq!(computer_name("k8s-pool1-vmss", 36), "k8s-pool1-vmss000010");
        assert_eq!(computer_name_prefix("k8s-pool1-vmss000010"), Some("k8s-pool1-vmss"));
        assert_eq!(
            instance_id_from_computer_name(&computer_name("p", 123_456)),
            Some(123_456)
        );
    }

    #[test]
    fn provider_ids() {
        let ss = |rg: &str, ss: &str, id: &str| {
            Some(ProviderTarget::ScaleSetInstance {
                subscription: "sub".into(),
                resource_group: rg.into(),
                scale_set: ss.into(),
                instance_id: id.into(),
            })
        };
        let cases = [
            ("azure:///subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3", ss("rg", "ss", "3")),
            ("/subscriptions/sub/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/ss_12", ss("RG", "ss", "12")),
            ("kind:///subscriptions/sub/resourcegroups/rg/providers/microsoft.compute/virtualmachinescalesets/ss/virtualmachines/0", ss("rg", "ss", "0")),
            (
                "azure:///subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-0",
                Some(ProviderTarget::VirtualMachine { subscription: "sub".into(), resource_group: "rg".into(), name: "vm-0".into() }),
            ),
            ("azure:///subscriptions/sub/resourceGroups/rg/providers/microsoft.compute/virtualmachines/vm-0", None),
            ("azure:///subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss", None),
            ("", None),
            ("kind://node-1", None),
        ];
        for (pid, want) in cases {
            assert_eq!(parse_provider_id(pid), want, "{pid}");
        }
    }

    #[test]
    fn states_and_zones() {
        assert_eq!(
            power_state(["ProvisioningState/succeeded", "PowerState/Deallocated"]),
            "deallocated"
        );
        assert_eq!(power_state(["ProvisioningState/succeeded"]), "unknown");
        for (prov, power, want) in [
            ("Succeeded", "stopped", true),
            ("succeeded", "deallocated", true),
            ("Succeeded", "deallocating", true),
            ("Succeeded", "running", false),
            ("Updating", "stopped", false),
            ("Failed", "deallocated", false),
        ] {
            assert_eq!(is_shut_down(prov, power), want, "{prov} {power}");
        }
        assert_eq!(zone_failure_domain("EastUS", Some("2"), Some(1)).unwrap(), "eastus-2");
        assert_eq!(zone_failure_domain("eastus", None, Some(3)).unwrap(), "3");
        assert_eq!(zone_failure_domain("eastus", Some(""), Some(0)).unwrap(), "0");
        assert!(zone_failure_domain("eastus", Some("one"), None)
            .unwrap_err()
            .contains("failed to parse zone"));
        // Neither a zone nor an instance view: "0", as upstream.
        assert_eq!(zone_failure_domain("eastus", None, None).unwrap(), "0");
        assert!(is_availability_zone("eastus-1", "EastUS"));
        assert!(!is_availability_zone("1", "eastus"));
    }
}
