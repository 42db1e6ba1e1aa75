//! Scenarios: the subscription, resource group, vnet, subnet, NSG, route table and a cluster of scale sets
//! (computer-name prefix + 6 base-36 characters of the instance id, zones, fault domains, sizes, power
//! states, NICs with addresses) and availability-set or standalone VMs. From a Rust builder or a JSON/YAML
//! file. Runtime changes (add, remove, stop, deallocate) operate on the same store.

use crate::store::{str_at, Store};
use crate::ClusterInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A scale set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleSetSpec {
    /// Name.
    pub name: String,
    /// Computer-name prefix (default: the name).
    pub computer_name_prefix: Option<String>,
    /// Instances.
    pub instances: u32,
    /// Zones the instances are spread over (empty: non-zonal).
    pub zones: Vec<String>,
    /// Fault domains the instances are spread over.
    pub fault_domains: u32,
    /// VM size.
    pub sku: String,
    /// `running`, `stopped`, `deallocated`.
    pub power_state: String,
    /// Give each instance NIC a public IP.
    pub public_ips: bool,
    /// `Uniform` (instances under the scale set) or `Flexible` (instances are ordinary VMs named
    /// `<name>_<8 hex>` with their own NICs and `properties.virtualMachineScaleSet`).
    pub orchestration_mode: String,
}

impl Default for ScaleSetSpec {
    fn default() -> Self {
        Self {
            name: "vmss".into(),
            computer_name_prefix: None,
            instances: 3,
            zones: vec![],
            fault_domains: 5,
            sku: "Standard_D2s_v3".into(),
            power_state: "running".into(),
            public_ips: false,
            orchestration_mode: "Uniform".into(),
        }
    }
}

/// An availability set and its VMs (`<vmNamePrefix><i>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AvailabilitySetSpec {
    /// Name.
    pub name: String,
    /// VM name prefix.
    pub vm_name_prefix: String,
    /// VMs.
    pub vms: u32,
    /// Fault domains.
    pub fault_domains: u32,
    /// VM size.
    pub sku: String,
    /// Power state.
    pub power_state: String,
    /// Public IP per VM.
    pub public_ips: bool,
}

impl Default for AvailabilitySetSpec {
    fn default() -> Self {
        Self {
            name: "avset".into(),
            vm_name_prefix: "vm-".into(),
            vms: 2,
            fault_domains: 2,
            sku: "Standard_D2s_v3".into(),
            power_state: "running".into(),
            public_ips: false,
        }
    }
}

/// A standalone VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmSpec {
    /// Name.
    pub name: String,
    /// Zone.
    pub zone: Option<String>,
    /// Size.
    pub sku: String,
    /// Power state.
    pub power_state: String,
}

impl Default for VmSpec {
    fn default() -> Self {
        Self {
            name: "vm".into(),
            zone: None,
            sku: "Standard_D2s_v3".into(),
            power_state: "running".into(),
        }
    }
}

/// A whole simulated environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Scenario {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Location.
    pub location: String,
    /// VNet name.
    pub vnet_name: String,
    /// VNet address space.
    pub vnet_cidr: String,
    /// Subnet name.
    pub subnet_name: String,
    /// Subnet prefix.
    pub subnet_cidr: String,
    /// IPv6 subnet prefix: when set, the subnet is dual-stack and every NIC gets an IPv6 configuration.
    pub subnet_ipv6_cidr: Option<String>,
    /// NSG name.
    pub nsg_name: String,
    /// Route table name (`None`: not created, as before the route controller's first write).
    pub route_table_name: Option<String>,
    /// `vmss` or `standard` (what the written azure.json says).
    pub vm_type: String,
    /// Scale sets.
    pub scale_sets: Vec<ScaleSetSpec>,
    /// Availability sets.
    pub availability_sets: Vec<AvailabilitySetSpec>,
    /// Standalone VMs.
    pub standalone_vms: Vec<VmSpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            subscription: "00000000-0000-0000-0000-00000000005b".into(),
            resource_group: "sim-cluster-rg".into(),
            location: "eastus".into(),
            vnet_name: "sim-vnet".into(),
            vnet_cidr: "10.0.0.0/8".into(),
            subnet_name: "nodes".into(),
            subnet_cidr: "10.240.0.0/16".into(),
            subnet_ipv6_cidr: None,
            nsg_name: "sim-nsg".into(),
            route_table_name: Some("sim-routes".into()),
            vm_type: "vmss".into(),
            scale_sets: vec![],
            availability_sets: vec![],
            standalone_vms: vec![],
        }
    }
}

/// The 6-character base-36 suffix of an instance id (`000003`, `00000a`).
pub fn base36_suffix(id: u64) -> String {
    let mut digits = Vec::new();
    let mut n = id;
    loop {
        let d = (n % 36) as u32;
        digits.push(std::char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while digits.len() < 6 {
        digits.push('0');
    }
    digits.iter().rev().collect()
}

impl Scenario {
    /// `sets` zonal scale sets `pool0`, `pool1`, ... of `per` instances each, in a /12 subnet (room for
    /// benchmarks with thousands of nodes).
    pub fn scale_sets(sets: u32, per: u32) -> Self {
        Self {
            scale_sets: (0..sets)
                .map(|i| ScaleSetSpec {
                    name: format!("pool{i}"),
                    instances: per,
                    zones: vec!["1".into(), "2".into(), "3".into()],
                    ..Default::default()
                })
                .collect(),
            subnet_cidr: "10.128.0.0/12".into(),
            ..Default::default()
        }
    }

    /// The default cluster: one scale set of 3 instances across zones 1–3 plus 2 availability-set VMs.
    pub fn default_cluster() -> Self {
        Self {
            scale_sets: vec![ScaleSetSpec {
                name: "k8s-pool1-vmss".into(),
                computer_name_prefix: Some("k8s-pool1-vmss".into()),
                instances: 3,
                zones: vec!["1".into(), "2".into(), "3".into()],
                ..Default::default()
            }],
            availability_sets: vec![AvailabilitySetSpec {
                name: "k8s-pool2-avset".into(),
                vm_name_prefix: "k8s-pool2-".into(),
                vms: 2,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A scenario from JSON or YAML text.
    pub fn from_text(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("invalid scenario JSON: {e}"))
        } else {
            serde_saphyr::from_str(text).map_err(|e| format!("invalid scenario YAML: {e}"))
        }
    }

    fn rg_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }

    fn id(&self, provider: &str, path: &str) -> String {
        format!("{}/providers/{provider}/{path}", self.rg_id())
    }

    /// The subnet id.
    pub fn subnet_id(&self) -> String {
        self.id(
            "Microsoft.Network",
            &format!("virtualNetworks/{}/subnets/{}", self.vnet_name, self.subnet_name),
        )
    }

    /// Creates everything in the store.
    pub fn build(&self, store: &mut Store) -> Result<ClusterInfo, String> {
        store.put(
            &self.rg_id(),
            "Microsoft.Resources/resourceGroups",
            json!({"location": self.location, "properties": {"provisioningState": "Succeeded"}}),
            0,
        );
        let nsg_id = self.id("Microsoft.Network", &format!("networkSecurityGroups/{}", self.nsg_name));
        store.put(
            &nsg_id,
            "Microsoft.Network/networkSecurityGroups",
            json!({"location": self.location, "properties": {"securityRules": [], "provisioningState": "Succeeded"}}),
            0,
        );
        let mut subnet = json!({"name": self.subnet_name, "properties": {"addressPrefix": self.subnet_cidr, "networkSecurityGroup": {"id": nsg_id}, "provisioningState": "Succeeded"}});
        if let Some(v6) = &self.subnet_ipv6_cidr {
            subnet["properties"]["addressPrefixes"] = json!([self.subnet_cidr, v6]);
        }
        if let Some(rt) = &self.route_table_name {
            let rt_id = self.id("Microsoft.Network", &format!("routeTables/{rt}"));
            store.put(
                &rt_id,
                "Microsoft.Network/routeTables",
                json!({"location": self.location, "properties": {"routes": [], "provisioningState": "Succeeded"}}),
                0,
            );
            subnet["properties"]["routeTable"] = json!({"id": rt_id});
        }
        let vnet_id = self.id("Microsoft.Network", &format!("virtualNetworks/{}", self.vnet_name));
        store.put(
            &vnet_id,
            "Microsoft.Network/virtualNetworks",
            json!({"location": self.location, "properties": {"addressSpace": {"addressPrefixes": [self.vnet_cidr]}, "subnets": [subnet], "provisioningState": "Succeeded"}}),
            0,
        );
        for ss in &self.scale_sets {
            self.build_scale_set(store, ss)?;
        }
        for av in &self.availability_sets {
            let av_id = self.id("Microsoft.Compute", &format!("availabilitySets/{}", av.name));
            let mut vm_refs = Vec::new();
            for i in 0..av.vms {
                let name = format!("{}{i}", av.vm_name_prefix);
                let fd = i % av.fault_domains.max(1);
                let vm_id = self.add_vm(
                    store,
                    &name,
                    &av.sku,
                    None,
                    fd,
                    &av.power_state,
                    Some(&av_id),
                    av.public_ips,
                )?;
                vm_refs.push(json!({"id": vm_id}));
            }
            store.put(
                &av_id,
                "Microsoft.Compute/availabilitySets",
                json!({"location": self.location, "sku": {"name": "Aligned"}, "properties": {"platformFaultDomainCount": av.fault_domains, "platformUpdateDomainCount": 5, "virtualMachines": vm_refs}}),
                0,
            );
        }
        for vm in &self.standalone_vms {
            self.add_vm(
                store,
                &vm.name,
                &vm.sku,
                vm.zone.as_deref(),
                0,
                &vm.power_state,
                None,
                false,
            )?;
        }
        let primary = match self.vm_type.as_str() {
            "vmss" => self.scale_sets.first().map(|s| s.name.clone()),
            _ => self.availability_sets.first().map(|a| a.name.clone()),
        };
        Ok(ClusterInfo {
            subscription: self.subscription.clone(),
            resource_group: self.resource_group.clone(),
            location: self.location.clone(),
            vnet: self.vnet_name.clone(),
            subnet: self.subnet_name.clone(),
            nsg: self.nsg_name.clone(),
            route_table: self.route_table_name.clone().unwrap_or_else(|| "sim-routes".into()),
            vm_type: self.vm_type.clone(),
            primary_vm_set: primary.unwrap_or_default(),
        })
    }

    fn build_scale_set(&self, store: &mut Store, ss: &ScaleSetSpec) -> Result<(), String> {
        let ss_id = self.id("Microsoft.Compute", &format!("virtualMachineScaleSets/{}", ss.name));
        let prefix = ss.computer_name_prefix.clone().unwrap_or_else(|| ss.name.clone());
        let mut ipcs = vec![
            json!({"name": "ipconfig1", "properties": {"primary": true, "subnet": {"id": self.subnet_id()}, "loadBalancerBackendAddressPools": []}}),
        ];
        if self.subnet_ipv6_cidr.is_some() {
            // A dual-stack scale set's model has an IPv6 configuration too (its instances' NICs get one).
            ipcs.push(json!({"name": "ipconfig-v6", "properties": {"primary": false, "privateIPAddressVersion": "IPv6", "subnet": {"id": self.subnet_id()}, "loadBalancerBackendAddressPools": []}}));
        }
        let nic_config =
            json!([{"name": format!("{}-nic", ss.name), "properties": {"primary": true, "ipConfigurations": ipcs}}]);
        let flexible = ss.orchestration_mode.eq_ignore_ascii_case("Flexible");
        let mut props = json!({
            "orchestrationMode": if flexible { "Flexible" } else { "Uniform" },
            "provisioningState": "Succeeded",
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": prefix, "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaceConfigurations": nic_config},
            },
        });
        if flexible {
            // Flexible scale sets spread over fault domains per VM, and build their VMs' NICs themselves.
            props["platformFaultDomainCount"] = json!(1);
            props["virtualMachineProfile"]["networkProfile"]["networkApiVersion"] = json!("2020-11-01");
        } else {
            props["upgradePolicy"] = json!({"mode": "Manual"});
        }
        store.put(
            &ss_id,
            "Microsoft.Compute/virtualMachineScaleSets",
            json!({
                "location": self.location, "zones": ss.zones,
                "sku": {"name": ss.sku, "tier": "Standard", "capacity": ss.instances},
                "properties": props,
            }),
            0,
        );
        for i in 0..ss.instances {
            if flexible {
                add_flex_vm(store, &ss_id, u64::from(i), &ss.power_state, ss.public_ips)?;
            } else {
                add_scale_set_instance(store, &ss_id, u64::from(i), &ss.power_state, ss.public_ips)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_vm(
        &self,
        store: &mut Store,
        name: &str,
        sku: &str,
        zone: Option<&str>,
        fd: u32,
        power: &str,
        avset: Option<&str>,
        public_ip: bool,
    ) -> Result<String, String> {
        let vm_id = self.id("Microsoft.Compute", &format!("virtualMachines/{name}"));
        let nic_id = put_vm_nic(
            store,
            &self.rg_id(),
            &json!(self.location),
            name,
            &vm_id,
            &self.subnet_id(),
            None,
            public_ip,
        )?;
        let mut props = json!({
            "vmId": format!("{:032x}", rand::random::<u128>()),
            "hardwareProfile": {"vmSize": sku},
            "osProfile": {"computerName": name, "adminUsername": "azureuser"},
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": true}}]},
            "provisioningState": "Succeeded",
            "instanceView": instance_view(fd, power),
        });
        if let Some(a) = avset {
            props["availabilitySet"] = json!({"id": a});
        }
        let mut body = json!({"location": self.location, "properties": props});
        if let Some(z) = zone {
            body["zones"] = json!([z]);
        }
        store.put(&vm_id, "Microsoft.Compute/virtualMachines", body, 0);
        Ok(vm_id)
    }
}

fn allocate(store: &mut Store, subnet: &str) -> Result<String, String> {
    let prefix = crate::rules::subnet_prefix(store, subnet).ok_or_else(|| format!("subnet {subnet} not found"))?;
    store
        .allocate_private_ip(subnet, &prefix)
        .map(|ip| ip.to_string())
        .ok_or_else(|| format!("subnet {subnet} is full"))
}

/// The IP configurations of a NIC: the given IPv4 one, plus an IPv6 one when the subnet is dual-stack.
fn with_ipv6(store: &mut Store, subnet: &str, v4: Value) -> Value {
    let Some(prefix) = crate::rules::subnet_prefix_v6(store, subnet) else {
        return json!([v4]);
    };
    match store.allocate_private_ipv6(subnet, &prefix) {
        Some(ip) => {
            json!([v4, {"name": "ipconfig-v6", "properties": {"primary": false, "privateIPAddress": ip.to_string(),
            "privateIPAllocationMethod": "Dynamic", "privateIPAddressVersion": "IPv6", "subnet": {"id": subnet}}}])
        }
        None => json!([v4]),
    }
}

fn instance_view(fd: u32, power: &str) -> Value {
    json!({
        "platformFaultDomain": fd,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
            {"code": format!("PowerState/{power}"), "level": "Info", "displayStatus": format!("VM {power}")},
        ],
    })
}

/// Adds instance `instance_id` to a scale set (its NIC, address, zone and fault domain follow the model).
pub fn add_scale_set_instance(
    store: &mut Store,
    ss_id: &str,
    instance_id: u64,
    power: &str,
    public_ip: bool,
) -> Result<String, String> {
    let ss = store
        .get(ss_id)
        .ok_or_else(|| format!("scale set {ss_id} not found"))?
        .body
        .clone();
    let name = ss.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let location = ss.get("location").cloned().unwrap_or(json!("eastus"));
    let prefix = str_at(
        &ss,
        &["properties", "virtualMachineProfile", "osProfile", "computerNamePrefix"],
    )
    .unwrap_or(&name)
    .to_string();
    let zones: Vec<Value> = ss.get("zones").and_then(Value::as_array).cloned().unwrap_or_default();
    let sku = ss.get("sku").cloned().unwrap_or(json!({}));
    let nic_cfg = ss
        .pointer("/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations")
        .cloned()
        .unwrap_or(json!([]));
    let nic_name = nic_cfg
        .pointer("/0/name")
        .and_then(Value::as_str)
        .unwrap_or("nic")
        .to_string();
    let subnet = nic_cfg
        .pointer("/0/properties/ipConfigurations/0/properties/subnet/id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("scale set {ss_id} has no subnet in its network profile"))?
        .to_string();
    let pools = nic_cfg
        .pointer("/0/properties/ipConfigurations/0/properties/loadBalancerBackendAddressPools")
        .cloned()
        .unwrap_or(json!([]));
    let vm_id = format!("{ss_id}/virtualMachines/{instance_id}");
    if store.get(&vm_id).is_some() {
        return Err(format!("instance {vm_id} already exists"));
    }
    let nic_id = format!("{vm_id}/networkInterfaces/{nic_name}");
    let ip = allocate(store, &subnet)?;
    let mut ipc = json!({"name": "ipconfig1", "properties": {"primary": true, "privateIPAddress": ip, "privateIPAllocationMethod": "Dynamic", "privateIPAddressVersion": "IPv4", "subnet": {"id": subnet}, "loadBalancerBackendAddressPools": pools}});
    if public_ip {
        let pip_id = format!("{nic_id}/ipConfigurations/ipconfig1/publicIPAddresses/pip");
        let addr = store.allocate_public_ip();
        store.put(&pip_id, "Microsoft.Network/publicIPAddresses", json!({"location": location, "properties": {"publicIPAllocationMethod": "Static", "ipAddress": addr.to_string()}}), 0);
        ipc["properties"]["publicIPAddress"] = json!({"id": pip_id});
    }
    let ipcs = with_ipv6(store, &subnet, ipc);
    store.put(&nic_id, "Microsoft.Network/networkInterfaces", json!({"location": location, "properties": {"primary": true, "ipConfigurations": ipcs, "virtualMachine": {"id": vm_id}, "provisioningState": "Succeeded"}}), 0);
    let zone: Vec<Value> = if zones.is_empty() {
        vec![]
    } else {
        vec![zones[(instance_id as usize) % zones.len()].clone()]
    };
    let fd = (instance_id % 5) as u32;
    store.put(
        &vm_id,
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        json!({
            "location": location, "instanceId": instance_id.to_string(), "zones": zone,
            "sku": {"name": sku.get("name").cloned().unwrap_or(json!("Standard_D2s_v3")), "tier": "Standard"},
            "properties": {
                "latestModelApplied": true, "provisioningState": "Succeeded",
                "vmId": format!("{:032x}", rand::random::<u128>()),
                "osProfile": {"computerName": format!("{prefix}{}", base36_suffix(instance_id)), "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
                "networkProfileConfiguration": {"networkInterfaceConfigurations": nic_cfg},
                "instanceView": instance_view(fd, power),
            },
        }),
        0,
    );
    Ok(vm_id)
}

/// The NIC `<vm>-nic` of a VM in resource group `rg` (id), with an address from `subnet`, the given backend
/// pools, an IPv6 configuration on dual-stack subnets, and a public IP `<vm>-pip` when asked; returns its id.
#[allow(clippy::too_many_arguments)]
fn put_vm_nic(
    store: &mut Store,
    rg: &str,
    location: &Value,
    vm_name: &str,
    vm_id: &str,
    subnet: &str,
    pools: Option<&Value>,
    public_ip: bool,
) -> Result<String, String> {
    let nic_id = format!("{rg}/providers/Microsoft.Network/networkInterfaces/{vm_name}-nic");
    let ip = allocate(store, subnet)?;
    let mut ipc = json!({"name": "ipconfig1", "properties": {"primary": true, "privateIPAddress": ip, "privateIPAllocationMethod": "Dynamic", "privateIPAddressVersion": "IPv4", "subnet": {"id": subnet}}});
    if let Some(pools) = pools {
        ipc["properties"]["loadBalancerBackendAddressPools"] = pools.clone();
    }
    if public_ip {
        let pip_id = format!("{rg}/providers/Microsoft.Network/publicIPAddresses/{vm_name}-pip");
        let addr = store.allocate_public_ip();
        store.put(&pip_id, "Microsoft.Network/publicIPAddresses", json!({"location": location, "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static", "ipAddress": addr.to_string()}}), 0);
        ipc["properties"]["publicIPAddress"] = json!({"id": pip_id});
    }
    let ipcs = with_ipv6(store, subnet, ipc);
    store.put(&nic_id, "Microsoft.Network/networkInterfaces", json!({"location": location, "properties": {"primary": true, "ipConfigurations": ipcs, "virtualMachine": {"id": vm_id}, "provisioningState": "Succeeded"}}), 0);
    Ok(nic_id)
}

/// Whether the scale set is in Flexible orchestration mode.
pub fn is_flexible(store: &Store, ss_id: &str) -> bool {
    store
        .get(ss_id)
        .and_then(|r| {
            r.body
                .pointer("/properties/orchestrationMode")?
                .as_str()
                .map(str::to_string)
        })
        .is_some_and(|m| m.eq_ignore_ascii_case("Flexible"))
}

/// The resource-group id of a resource id.
fn rg_of(id: &str) -> &str {
    let lower = id.to_ascii_lowercase();
    match lower.find("/providers/") {
        Some(i) => &id[..i],
        None => id,
    }
}

/// A flexible scale set's VMs: `(index, VM id)`, by index (VM names are `<scale set>_<index as 8 hex>`).
pub fn flex_vms(store: &Store, ss_id: &str) -> Vec<(u64, String)> {
    let prefix = format!(
        "{}/providers/microsoft.compute/virtualmachines/",
        rg_of(ss_id).to_ascii_lowercase()
    );
    let ss_name = ss_id.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let mut out: Vec<(u64, String)> = store
        .all()
        .filter(|r| r.id.to_ascii_lowercase().starts_with(&prefix))
        .filter(|r| {
            r.body
                .pointer("/properties/virtualMachineScaleSet/id")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(ss_id))
        })
        .filter_map(|r| {
            let name = r.id.rsplit('/').next()?.to_ascii_lowercase();
            let hex = name.strip_prefix(&format!("{ss_name}_"))?;
            Some((u64::from_str_radix(hex, 16).ok()?, r.id.clone()))
        })
        .collect();
    out.sort();
    out
}

/// Adds VM `index` of a flexible scale set from its model: `<scale set>_<index as 8 hex>`, computer name
/// prefix + base 36, its own NIC `<vm>-nic` (with the model's backend pools), zone round robin.
pub fn add_flex_vm(store: &mut Store, ss_id: &str, index: u64, power: &str, public_ip: bool) -> Result<String, String> {
    let ss = store
        .get(ss_id)
        .ok_or_else(|| format!("scale set {ss_id} not found"))?
        .body
        .clone();
    let ss_name = ss_id.rsplit('/').next().unwrap_or_default().to_string();
    let location = ss.get("location").cloned().unwrap_or(json!("eastus"));
    let prefix = str_at(
        &ss,
        &["properties", "virtualMachineProfile", "osProfile", "computerNamePrefix"],
    )
    .unwrap_or(&ss_name)
    .to_string();
    let zones: Vec<Value> = ss.get("zones").and_then(Value::as_array).cloned().unwrap_or_default();
    let size = ss.pointer("/sku/name").cloned().unwrap_or(json!("Standard_D2s_v3"));
    let ipc_model = ss
        .pointer("/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations/0/properties/ipConfigurations/0/properties")
        .cloned()
        .unwrap_or(json!({}));
    let subnet = ipc_model
        .pointer("/subnet/id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("scale set {ss_id} has no subnet in its network profile"))?
        .to_string();
    let rg = rg_of(ss_id).to_string();
    let vm_name = format!("{ss_name}_{index:08x}");
    let vm_id = format!("{rg}/providers/Microsoft.Compute/virtualMachines/{vm_name}");
    if store.get(&vm_id).is_some() {
        return Err(format!("VM {vm_id} already exists"));
    }
    let pools = ipc_model
        .get("loadBalancerBackendAddressPools")
        .filter(|p| p.as_array().is_some_and(|a| !a.is_empty()));
    let nic_id = put_vm_nic(store, &rg, &location, &vm_name, &vm_id, &subnet, pools, public_ip)?;
    let mut body = json!({
        "location": location,
        "properties": {
            "vmId": format!("{:032x}", rand::random::<u128>()),
            "virtualMachineScaleSet": {"id": ss_id},
            "hardwareProfile": {"vmSize": size},
            "osProfile": {"computerName": format!("{prefix}{}", base36_suffix(index)), "adminUsername": "azureuser"},
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": true}}]},
            "provisioningState": "Succeeded",
            "instanceView": instance_view((index % 3) as u32, power),
        },
    });
    if !zones.is_empty() {
        body["zones"] = json!([zones[(index as usize) % zones.len()].clone()]);
    }
    store.put(&vm_id, "Microsoft.Compute/virtualMachines", body, 0);
    Ok(vm_id)
}

/// The instance ids of a scale set (a flexible one's: its VMs' indexes).
pub fn instance_ids(store: &Store, ss_id: &str) -> Vec<u64> {
    if is_flexible(store, ss_id) {
        return flex_vms(store, ss_id).into_iter().map(|(i, _)| i).collect();
    }
    let mut ids: Vec<u64> = store
        .list(&format!("{ss_id}/virtualMachines"))
        .iter()
        .filter_map(|r| {
            r.body
                .get("instanceId")
                .and_then(Value::as_str)
                .and_then(|i| i.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn set_capacity(store: &mut Store, ss_id: &str) {
    let n = instance_ids(store, ss_id).len();
    if let Some(r) = store.get_mut(ss_id) {
        r.body["sku"]["capacity"] = json!(n);
    }
}

/// Adds `count` instances to a scale set with the next free instance ids (computer names: prefix + base 36);
/// the capacity follows.
pub fn scale_out(store: &mut Store, ss_id: &str, count: u64) -> Result<Vec<String>, String> {
    let next = instance_ids(store, ss_id).last().map_or(0, |m| m + 1);
    let flexible = is_flexible(store, ss_id);
    let mut added = Vec::new();
    for id in next..next + count {
        added.push(if flexible {
            add_flex_vm(store, ss_id, id, "running", false)?
        } else {
            add_scale_set_instance(store, ss_id, id, "running", false)?
        });
    }
    set_capacity(store, ss_id);
    Ok(added)
}

/// Removes `count` instances, highest instance ids first (Azure's default scale-in order within a zone
/// balance); the capacity follows.
pub fn scale_in(store: &mut Store, ss_id: &str, count: u64) -> Result<Vec<String>, String> {
    let vms: Vec<String> = if is_flexible(store, ss_id) {
        flex_vms(store, ss_id).into_iter().map(|(_, id)| id).collect()
    } else {
        instance_ids(store, ss_id)
            .into_iter()
            .map(|id| format!("{ss_id}/virtualMachines/{id}"))
            .collect()
    };
    let mut removed = Vec::new();
    for vm in vms.into_iter().rev().take(usize::try_from(count).unwrap_or(usize::MAX)) {
        remove_vm(store, &vm)?;
        removed.push(vm);
    }
    Ok(removed)
}

/// Removes a VM or scale-set instance and its NICs and instance public IPs; its data disks are released and
/// a scale set's capacity follows.
pub fn remove_vm(store: &mut Store, vm_id: &str) -> Result<(), String> {
    let vm = store
        .get(vm_id)
        .ok_or_else(|| format!("{vm_id} not found"))?
        .body
        .clone();
    crate::rules::release_disks(store, vm_id, &Default::default());
    for nic in crate::store::nic_ids(&vm) {
        if let Some(n) = store.get(&nic).map(|r| r.body.clone()) {
            crate::rules::release_addresses(store, &n);
        }
        store.remove(&nic);
    }
    store.remove(vm_id);
    let lower = vm_id.to_ascii_lowercase();
    if let Some(i) = lower
        .find("/virtualmachines/")
        .filter(|_| lower.contains("/virtualmachinescalesets/"))
    {
        set_capacity(store, &vm_id[..i]);
    }
    // A flexible scale set's VM: its scale set's capacity follows too.
    if let Some(ss) = vm
        .pointer("/properties/virtualMachineScaleSet/id")
        .and_then(Value::as_str)
    {
        set_capacity(store, ss);
    }
    Ok(())
}

/// Sets the power state (`running`, `stopped`, `deallocating`, `deallocated`) of a VM or instance.
pub fn set_power_state(store: &mut Store, vm_id: &str, power: &str) -> Result<(), String> {
    let r = store.get_mut(vm_id).ok_or_else(|| format!("{vm_id} not found"))?;
    let statuses = r
        .body
        .pointer_mut("/properties/instanceView/statuses")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format!("{vm_id} has no instance view"))?;
    statuses.retain(|s| {
        !s.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("PowerState/"))
    });
    statuses
        .push(json!({"code": format!("PowerState/{power}"), "level": "Info", "displayStatus": format!("VM {power}")}));
    Ok(())
}

/// The first scale-set instance, else the first VM: what IMDS describes by default.
pub fn first_vm(store: &Store) -> Option<String> {
    let of_type = |ty: &str| {
        store
            .all()
            .find(|r| {
                r.body
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(ty))
            })
            .map(|r| r.id.clone())
    };
    of_type("Microsoft.Compute/virtualMachineScaleSets/virtualMachines")
        .or_else(|| of_type("Microsoft.Compute/virtualMachines"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36() {
        for (id, want) in [
            (0, "000000"),
            (3, "000003"),
            (10, "00000a"),
            (35, "00000z"),
            (36, "000010"),
            (1_000_000, "00lfls"),
        ] {
            assert_eq!(base36_suffix(id), want);
        }
    }

    #[test]
    fn default_cluster_builds() {
        let mut store = Store::default();
        let info = Scenario::default_cluster().build(&mut store).unwrap();
        assert_eq!(info.vm_type, "vmss");
        assert_eq!(info.primary_vm_set, "k8s-pool1-vmss");
        let sc = Scenario::default_cluster();
        let ss = format!(
            "{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
            sc.rg_id()
        );
        let vms = store.list(&format!("{ss}/virtualMachines"));
        assert_eq!(vms.len(), 3);
        let names: Vec<&str> = vms
            .iter()
            .filter_map(|v| str_at(&v.body, &["properties", "osProfile", "computerName"]))
            .collect();
        assert_eq!(
            names,
            vec!["k8s-pool1-vmss000000", "k8s-pool1-vmss000001", "k8s-pool1-vmss000002"]
        );
        let zones: Vec<&str> = vms
            .iter()
            .filter_map(|v| v.body.pointer("/zones/0").and_then(Value::as_str))
            .collect();
        assert_eq!(zones, vec!["1", "2", "3"]);
        let vm_list = store.list(&format!("{}/providers/Microsoft.Compute/virtualMachines", sc.rg_id()));
        assert_eq!(vm_list.len(), 2);
        // Distinct addresses from the subnet, skipping the reserved ones.
        let nics = store.list(&format!("{}/providers/Microsoft.Network/networkInterfaces", sc.rg_id()));
        let ips: Vec<&str> = nics
            .iter()
            .filter_map(|n| {
                n.body
                    .pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(ips, vec!["10.240.0.7", "10.240.0.8"]);
    }

    #[test]
    fn yaml_scenario_and_runtime_changes() {
        let sc = Scenario::from_text("resourceGroup: rg1\nscaleSets:\n  - name: ss\n    instances: 2\n").unwrap();
        let mut store = Store::default();
        sc.build(&mut store).unwrap();
        let ss = format!("{}/providers/Microsoft.Compute/virtualMachineScaleSets/ss", sc.rg_id());
        let id = add_scale_set_instance(&mut store, &ss, 40, "running", true).unwrap();
        assert_eq!(
            str_at(
                &store.get(&id).unwrap().body,
                &["properties", "osProfile", "computerName"]
            ),
            Some("ss000014")
        );
        assert!(add_scale_set_instance(&mut store, &ss, 40, "running", false).is_err());
        set_power_state(&mut store, &id, "deallocated").unwrap();
        let codes: Vec<String> = store
            .get(&id)
            .unwrap()
            .body
            .pointer("/properties/instanceView/statuses")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["code"].as_str().unwrap().to_string())
            .collect();
        assert!(codes.contains(&"PowerState/deallocated".to_string()));
        remove_vm(&mut store, &id).unwrap();
        assert!(store.get(&id).is_none());
        assert_eq!(store.list(&format!("{ss}/virtualMachines")).len(), 2);
        assert!(Scenario::from_text("{nonsense").is_err());
    }
}
