//! What ARM enforces on writes and deletes: references inside a load balancer, public IP / LB SKU match,
//! resources in use, NSG priorities, per-resource limits; plus address allocation for public IPs,
//! internal frontends and NICs. Error codes are ARM's where known.

use crate::store::{prop_array, props_mut, str_at, Store};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Limits enforced (published Azure limits).
pub const MAX_LB_RULES: usize = 1500;
/// Frontend IP configurations per load balancer.
pub const MAX_LB_FRONTENDS: usize = 600;
/// Rules per NSG.
pub const MAX_NSG_RULES: usize = 1000;
/// Routes per route table.
pub const MAX_ROUTES: usize = 400;

/// A refused write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// ARM error code.
    pub code: String,
    /// Message.
    pub message: String,
}

fn err(code: &str, message: String) -> Result<(), RuleError> {
    Err(RuleError {
        code: code.into(),
        message,
    })
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Validates (and completes: addresses) a body about to be stored at `id` with ARM type `arm_type`.
pub fn validate(store: &mut Store, arm_type: &str, id: &str, body: &mut Value) -> Result<(), RuleError> {
    let t = lower(arm_type);
    if t.starts_with("microsoft.network/") {
        resource_name(id.rsplit('/').next().unwrap_or_default())?;
    }
    match t.as_str() {
        "microsoft.network/loadbalancers" => load_balancer(store, id, body),
        "microsoft.network/publicipaddresses" => public_ip(store, id, body),
        "microsoft.network/networksecuritygroups" => security_group(body),
        "microsoft.network/routetables" => route_table(body),
        "microsoft.network/networkinterfaces" => nic(store, id, body),
        "microsoft.network/privatelinkservices" => private_link_service(store, id, body),
        "microsoft.compute/virtualmachines" | "microsoft.compute/virtualmachinescalesets/virtualmachines" => {
            data_disks(store, id, body)
        }
        _ => Ok(()),
    }
}

/// ARM's rule for network resource names: 1–80 characters, word characters, `.`, `-`, `_`; starts with a
/// word character and ends with a word character or `_`.
fn resource_name(name: &str) -> Result<(), RuleError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = (1..=80).contains(&name.len())
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
        && name.chars().next().is_some_and(word)
        && name.chars().last().is_some_and(word);
    if ok {
        Ok(())
    } else {
        err(
            "InvalidResourceName",
            format!(
                "Resource name {name} is invalid. The name can be up to 80 characters long. It must begin with a word \
                 character, and it must end with a word character or with '_'. The name may contain word characters \
                 or '.', '-', '_'."
            ),
        )
    }
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_i64()
}

/// ARM's parameter-range error.
fn out_of_range(what: &str, value: i64, allowed: &str) -> Result<(), RuleError> {
    err(
        "InvalidParameter",
        format!("Value '{value}' specified for parameter '{what}' is invalid. Allowed values are '{allowed}'."),
    )
}

/// Ports of a load balancer's probes (1–65535) and rules (frontend 0–65534, backend 0–65535; 0 = all ports).
fn lb_ports(body: &Value) -> Result<(), RuleError> {
    for p in prop_array(body, "probes") {
        let port = int_at(p, &["properties", "port"]).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            return out_of_range("Probe.Port", port, "a number between 1 to 65535");
        }
    }
    for r in prop_array(body, "loadBalancingRules") {
        let fe = int_at(r, &["properties", "frontendPort"]).unwrap_or(0);
        if !(0..=65534).contains(&fe) {
            return out_of_range("LoadBalancingRule.FrontendPort", fe, "a number between 0 to 65534");
        }
        let be = int_at(r, &["properties", "backendPort"]).unwrap_or(0);
        if !(0..=65535).contains(&be) {
            return out_of_range("LoadBalancingRule.BackendPort", be, "a number between 0 to 65535");
        }
    }
    Ok(())
}

fn zones_of(v: &Value) -> Vec<String> {
    let mut z: Vec<String> = v
        .get("zones")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    z.sort();
    z
}

/// Zones of an existing public IP or frontend IP configuration cannot be changed (ARM refuses the PUT).
fn zones_unchanged(what: &str, before: &Value, after: &Value) -> Result<(), RuleError> {
    let (b, a) = (zones_of(before), zones_of(after));
    if b == a {
        return Ok(());
    }
    err(
        "ResourceAvailabilityZonesCannotBeModified",
        format!("Zones of {what} cannot be modified: they are {b:?}, the request has {a:?}."),
    )
}

/// A security rule's port or range: `*`, `N` or `N-M` with 0 ≤ N ≤ M ≤ 65535.
fn valid_port_range(s: &str) -> bool {
    let port = |p: &str| p.trim().parse::<u32>().ok().filter(|n| *n <= 65535);
    match s.trim() {
        "*" => true,
        r => match r.split_once('-') {
            Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b),
            None => port(r).is_some(),
        },
    }
}

fn names(body: &Value, prop: &str) -> HashSet<String> {
    prop_array(body, prop)
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .map(lower)
        .collect()
}

fn check_ref(
    lb_id: &str,
    prop: &str,
    known: &HashSet<String>,
    reference: Option<&str>,
    rule: &str,
) -> Result<(), RuleError> {
    let Some(r) = reference else {
        return err(
            "InvalidResourceReference",
            format!("Load balancing rule {rule} has no {prop} reference."),
        );
    };
    let prefix = format!("{}/{}/", lower(lb_id), lower(prop));
    let l = lower(r);
    match l.strip_prefix(&prefix) {
        Some(name) if known.contains(name) => Ok(()),
        _ => err(
            "InvalidResourceReference",
            format!("Resource {r} referenced by load balancing rule {rule} was not found in load balancer {lb_id}."),
        ),
    }
}

/// The subnet object of a subnet id, from its virtual network.
fn subnet_of<'a>(store: &'a Store, subnet_id: &str) -> Option<&'a Value> {
    let l = lower(subnet_id);
    let idx = l.find("/subnets/")?;
    let vnet = store.get(&subnet_id[..idx])?;
    let name = &l[idx + "/subnets/".len()..];
    prop_array(&vnet.body, "subnets")
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str).map(lower).as_deref() == Some(name))
}

/// The IPv6 prefix of a subnet id (from `addressPrefixes`), when it is dual-stack.
pub(crate) fn subnet_prefix_v6(store: &Store, subnet_id: &str) -> Option<String> {
    let prefixes = subnet_of(store, subnet_id)?
        .pointer("/properties/addressPrefixes")?
        .as_array()?;
    prefixes
        .iter()
        .filter_map(Value::as_str)
        .find(|p| p.contains(':'))
        .map(str::to_string)
}

/// The (IPv4) address prefix of a subnet id.
pub(crate) fn subnet_prefix(store: &Store, subnet_id: &str) -> Option<String> {
    str_at(subnet_of(store, subnet_id)?, &["properties", "addressPrefix"]).map(str::to_string)
}

fn allocate_in(store: &mut Store, ipconf: &mut Value, owner: &str) -> Result<(), RuleError> {
    let Some(subnet) = str_at(ipconf, &["properties", "subnet", "id"]).map(str::to_string) else {
        return Ok(());
    };
    let Some(prefix) = subnet_prefix(store, &subnet) else {
        return err(
            "InvalidResourceReference",
            format!("Subnet {subnet} referenced by {owner} was not found."),
        );
    };
    let has_ip = str_at(ipconf, &["properties", "privateIPAddress"]).is_some_and(|s| !s.is_empty());
    let v6 = str_at(ipconf, &["properties", "privateIPAddressVersion"]).is_some_and(|v| v.eq_ignore_ascii_case("IPv6"));
    if v6 {
        // An IPv6 configuration takes its address from the subnet's IPv6 prefix (a subnet without one has none).
        let Some(prefix6) = subnet_prefix_v6(store, &subnet) else {
            return err(
                "SubnetDoesNotSupportIPv6",
                format!("Subnet {subnet} referenced by {owner} has no IPv6 address prefix."),
            );
        };
        if !has_ip {
            let Some(ip) = store.allocate_private_ipv6(&subnet, &prefix6) else {
                return err(
                    "SubnetIsFull",
                    format!("Subnet {subnet} has no free IPv6 address for {owner}."),
                );
            };
            if let Some(p) = props_mut(ipconf) {
                p.insert("privateIPAddress".into(), json!(ip.to_string()));
                p.entry("privateIPAllocationMethod").or_insert(json!("Dynamic"));
            }
        }
        return Ok(());
    }
    if let Some(p) = props_mut(ipconf) {
        if has_ip {
            if let Some(ip) = p
                .get("privateIPAddress")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                store.reserve_private_ip(&subnet, ip);
            }
        } else {
            let Some(ip) = store.allocate_private_ip(&subnet, &prefix) else {
                return err(
                    "SubnetIsFull",
                    format!("Subnet {subnet} has no free address for {owner}."),
                );
            };
            p.insert("privateIPAddress".into(), json!(ip.to_string()));
            p.entry("privateIPAllocationMethod").or_insert(json!("Dynamic"));
        }
        p.entry("privateIPAddressVersion").or_insert(json!("IPv4"));
    }
    Ok(())
}

fn sku_of(v: &Value) -> String {
    str_at(v, &["sku", "name"]).map(lower).unwrap_or_else(|| "basic".into())
}

fn load_balancer(store: &mut Store, id: &str, body: &mut Value) -> Result<(), RuleError> {
    let frontends = names(body, "frontendIPConfigurations");
    let pools = names(body, "backendAddressPools");
    let probes = names(body, "probes");
    let rules = prop_array(body, "loadBalancingRules").to_vec();
    lb_ports(body)?;
    if let Some(existing) = store.get(id) {
        for old in prop_array(&existing.body, "frontendIPConfigurations") {
            let name = old.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Some(new) = prop_array(body, "frontendIPConfigurations").iter().find(|f| {
                f.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            }) {
                zones_unchanged(&format!("frontend IP configuration {name} of {id}"), old, new)?;
            } else {
                // As ARM: a frontend a Private Link Service serves cannot be removed before the service.
                let fe_id = format!("{}/frontendIPConfigurations/{name}", existing.id);
                if let Some(pls) = store
                    .referrers(&fe_id)
                    .into_iter()
                    .find(|r| lower(r).contains("/providers/microsoft.network/privatelinkservices/"))
                {
                    return err(
                        "CannotDeleteFrontendIPConfigurationReferencedByPrivateLinkService",
                        format!("Frontend IP configuration {fe_id} cannot be deleted: private link service {pls} references it."),
                    );
                }
            }
        }
    }
    if frontends.len() > MAX_LB_FRONTENDS {
        return err(
            "LoadBalancerFrontendIPConfigurationsLimitReached",
            format!(
                "Load balancer {id} has {} frontend IP configurations; the limit is {MAX_LB_FRONTENDS}.",
                frontends.len()
            ),
        );
    }
    if rules.len() > MAX_LB_RULES {
        return err(
            "LoadBalancerRulesLimitReached",
            format!(
                "Load balancer {id} has {} rules; the limit is {MAX_LB_RULES}.",
                rules.len()
            ),
        );
    }
    for r in &rules {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("?");
        check_ref(
            id,
            "frontendIPConfigurations",
            &frontends,
            str_at(r, &["properties", "frontendIPConfiguration", "id"]),
            name,
        )?;
        if let Some(pool) = str_at(r, &["properties", "backendAddressPool", "id"]) {
            check_ref(id, "backendAddressPools", &pools, Some(pool), name)?;
        }
        if let Some(probe) = str_at(r, &["properties", "probe", "id"]) {
            check_ref(id, "probes", &probes, Some(probe), name)?;
        }
    }
    let lb_sku = sku_of(body);
    let mut fes = prop_array(body, "frontendIPConfigurations").to_vec();
    // As ARM: one public IP serves at most one frontend of a load balancer (Services sharing an IP share
    // the frontend).
    let mut seen_pips = HashSet::new();
    for fe in &fes {
        if let Some(pip) = str_at(fe, &["properties", "publicIPAddress", "id"]) {
            if !seen_pips.insert(lower(pip)) {
                return err(
                    "PublicIPAddressInUse",
                    format!("Public IP {pip} is referenced by more than one frontend IP configuration of {id}."),
                );
            }
        }
    }
    for fe in fes.iter_mut() {
        let fe_name = fe.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        if let Some(pip_id) = str_at(fe, &["properties", "publicIPAddress", "id"]).map(str::to_string) {
            let Some(pip) = store.get(&pip_id) else {
                return err(
                    "InvalidResourceReference",
                    format!("Public IP {pip_id} referenced by frontend {fe_name} of {id} was not found."),
                );
            };
            if sku_of(&pip.body) != lb_sku {
                return err(
                    "PublicIPAndLBSkuDoNotMatch",
                    format!(
                        "{} sku load balancer {id} cannot reference {} sku publicIP {pip_id}.",
                        lb_sku,
                        sku_of(&pip.body)
                    ),
                );
            }
            let users: Vec<String> = store
                .referrers(&pip_id)
                .into_iter()
                .filter(|r| !lower(r).starts_with(&lower(id)))
                .collect();
            if let Some(other) = users.first() {
                return err(
                    "PublicIPAddressInUse",
                    format!("Public IP {pip_id} is already used by {other} and cannot be referenced by {id}."),
                );
            }
        } else {
            allocate_in(store, fe, &format!("frontend {fe_name} of {id}"))?;
        }
    }
    if let Some(p) = props_mut(body) {
        p.insert("frontendIPConfigurations".into(), Value::Array(fes));
    }
    Ok(())
}

/// A Private Link Service: on an existing load-balancer frontend, its IP configurations in a subnet whose
/// Private Link Service network policies are disabled (ARM refuses otherwise), addresses allocated there.
fn private_link_service(store: &mut Store, id: &str, body: &mut Value) -> Result<(), RuleError> {
    let fes = body
        .pointer("/properties/loadBalancerFrontendIpConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if fes.is_empty() {
        return err(
            "PrivateLinkServiceMustHaveLoadBalancerFrontendIpConfiguration",
            format!("Private link service {id} must reference one load balancer frontend IP configuration."),
        );
    }
    for fe in &fes {
        let fe_id = str_at(fe, &["id"]).unwrap_or_default().to_string();
        let exists = fe_id
            .to_ascii_lowercase()
            .split_once("/frontendipconfigurations/")
            .and_then(|(lb, name)| {
                let lb_body = &store.get(&fe_id[..lb.len()])?.body;
                Some(names(lb_body, "frontendIPConfigurations").contains(name))
            })
            .unwrap_or(false);
        if !exists {
            return err(
                "InvalidResourceReference",
                format!("Frontend IP configuration {fe_id} referenced by {id} was not found."),
            );
        }
    }
    let mut ipcs = prop_array(body, "ipConfigurations").to_vec();
    for ipc in ipcs.iter_mut() {
        let subnet = str_at(ipc, &["properties", "subnet", "id"])
            .unwrap_or_default()
            .to_string();
        let policies = subnet_of(store, &subnet)
            .and_then(|s| str_at(s, &["properties", "privateLinkServiceNetworkPolicies"]).map(lower))
            .unwrap_or_else(|| "enabled".into());
        if policies != "disabled" {
            return err(
                "PrivateLinkServiceNetworkPoliciesCannotBeEnabledOnPrivateLinkServiceSubnet",
                format!("Private link service network policies must be disabled on subnet {subnet} used by {id}."),
            );
        }
        allocate_in(store, ipc, &format!("private link service {id}"))?;
    }
    if let Some(p) = props_mut(body) {
        p.insert("ipConfigurations".into(), Value::Array(ipcs));
        p.entry("alias").or_insert(json!(format!(
            "{}.{}.eastus.azure.privatelinkservice",
            id.rsplit('/').next().unwrap_or_default(),
            "00000000-0000-0000-0000-000000000000"
        )));
    }
    Ok(())
}

fn public_ip(store: &mut Store, id: &str, body: &mut Value) -> Result<(), RuleError> {
    if let Some(existing) = store.get(id) {
        zones_unchanged(&format!("public IP address {id}"), &existing.body, body)?;
    }
    let sku = sku_of(body);
    let method = str_at(body, &["properties", "publicIPAllocationMethod"]).map(lower);
    if sku == "standard" && method.as_deref() == Some("dynamic") {
        return err(
            "StandardSkuPublicIPAddressesMustBeStatic",
            "Standard sku publicIp addresses must use the Static allocation method.".into(),
        );
    }
    if let Some(label) = str_at(body, &["properties", "dnsSettings", "domainNameLabel"]).filter(|l| !l.is_empty()) {
        let b = label.as_bytes();
        let ok = (3..=63).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-';
        if !ok {
            let shown: String = label.chars().take(80).collect();
            return err(
                "InvalidDomainNameLabel",
                format!(
                    "The domain name label {shown} is invalid. It must conform to the following regular expression: \
                     ^[a-z][a-z0-9-]{{1,61}}[a-z0-9]$."
                ),
            );
        }
    }
    let has = str_at(body, &["properties", "ipAddress"]).is_some_and(|s| !s.is_empty());
    // As ARM: an IPv6 public IP gets an IPv6 address.
    let v6 = str_at(body, &["properties", "publicIPAddressVersion"]).is_some_and(|v| v.eq_ignore_ascii_case("IPv6"));
    let ip = (!has).then(|| {
        if v6 {
            store.allocate_public_ipv6().to_string()
        } else {
            store.allocate_public_ip().to_string()
        }
    });
    if let Some(p) = props_mut(body) {
        p.entry("publicIPAllocationMethod")
            .or_insert(json!(if sku == "standard" { "Static" } else { "Dynamic" }));
        p.entry("publicIPAddressVersion").or_insert(json!("IPv4"));
        if let Some(ip) = ip {
            p.insert("ipAddress".into(), json!(ip));
        }
    }
    Ok(())
}

fn security_group(body: &mut Value) -> Result<(), RuleError> {
    let rules = prop_array(body, "securityRules");
    if rules.len() > MAX_NSG_RULES {
        return err(
            "SecurityRulesLimitExceeded",
            format!(
                "{} security rules exceed the limit of {MAX_NSG_RULES} per network security group.",
                rules.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    for r in rules {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("?");
        let prio = r
            .get("properties")
            .and_then(|p| p.get("priority"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !(100..=4096).contains(&prio) {
            return err(
                "SecurityRuleInvalidPriority",
                format!("Security rule {name} has invalid priority {prio}: values must be in 100..4096."),
            );
        }
        let props = r.get("properties");
        for key in [
            "sourcePortRange",
            "destinationPortRange",
            "sourcePortRanges",
            "destinationPortRanges",
        ] {
            let values: Vec<&str> = match props.and_then(|p| p.get(key)) {
                Some(Value::String(v)) => vec![v.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if let Some(bad) = values.into_iter().find(|v| !valid_port_range(v)) {
                return err(
                    "SecurityRuleInvalidPortRange",
                    format!(
                        "Security rule {name} has invalid Port range. Value provided: {bad}. Value should be an \
                         integer OR integer range with '-' delimiter. Valid range 0-65535."
                    ),
                );
            }
        }
        let dir = str_at(r, &["properties", "direction"]).map(lower).unwrap_or_default();
        if !seen.insert((dir.clone(), prio)) {
            return err(
                "SecurityRuleConflict",
                format!("Security rule {name} has the same priority {prio} and direction {dir} as another rule."),
            );
        }
    }
    Ok(())
}

fn route_table(body: &mut Value) -> Result<(), RuleError> {
    let n = prop_array(body, "routes").len();
    if n > MAX_ROUTES {
        return err(
            "RouteTableRouteLimitReached",
            format!("{n} routes exceed the limit of {MAX_ROUTES} per route table."),
        );
    }
    Ok(())
}

fn nic(store: &mut Store, id: &str, body: &mut Value) -> Result<(), RuleError> {
    let mut ipcs = prop_array(body, "ipConfigurations").to_vec();
    for ipc in ipcs.iter_mut() {
        allocate_in(store, ipc, id)?;
    }
    if let Some(p) = props_mut(body) {
        p.insert("ipConfigurations".into(), Value::Array(ipcs));
    }
    Ok(())
}

/// Data disks of a VM or scale-set instance: LUNs 0..63 and unique; each managed disk exists and is not
/// attached to another VM.
fn data_disks(store: &Store, vm_id: &str, body: &Value) -> Result<(), RuleError> {
    let disks = body
        .pointer("/properties/storageProfile/dataDisks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut luns = HashSet::new();
    for d in &disks {
        let lun = d.get("lun").and_then(Value::as_i64).unwrap_or(-1);
        if !(0..=63).contains(&lun) {
            return err(
                "InvalidParameter",
                format!("Data disk LUN {lun} of {vm_id} is outside 0..63."),
            );
        }
        if !luns.insert(lun) {
            return err("InvalidParameter", format!("Two data disks of {vm_id} use LUN {lun}."));
        }
        let Some(disk_id) = str_at(d, &["managedDisk", "id"]) else {
            continue;
        };
        let Some(disk) = store.get(disk_id) else {
            return err("NotFound", format!("Disk {disk_id} was not found."));
        };
        if let Some(owner) = disk.body.get("managedBy").and_then(Value::as_str) {
            if !owner.is_empty() && !owner.eq_ignore_ascii_case(vm_id) {
                return err(
                    "OperationNotAllowed",
                    format!("Disk {disk_id} is already attached to VM {owner}; detach it first."),
                );
            }
        }
    }
    Ok(())
}

/// After a VM write: the disks it lists are attached to it (`managedBy`), the ones it no longer lists are not.
fn attach_disks(store: &mut Store, vm_id: &str, body: &Value) {
    let wanted: HashSet<String> = body
        .pointer("/properties/storageProfile/dataDisks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| str_at(d, &["managedDisk", "id"]).map(lower))
        .collect();
    release_disks(store, vm_id, &wanted);
    for id in &wanted {
        if let Some(r) = store.get_mut(id) {
            r.body["managedBy"] = json!(vm_id);
            r.body["properties"]["diskState"] = json!("Attached");
        }
    }
}

/// Clears `managedBy` on the disks attached to `vm_id`, except `keep` (lower-cased ids).
pub fn release_disks(store: &mut Store, vm_id: &str, keep: &HashSet<String>) {
    let attached: Vec<String> = store
        .all()
        .filter(|r| {
            r.body
                .get("managedBy")
                .and_then(Value::as_str)
                .is_some_and(|m| m.eq_ignore_ascii_case(vm_id))
        })
        .map(|r| r.id.clone())
        .filter(|id| !keep.contains(&lower(id)))
        .collect();
    for id in attached {
        if let Some(r) = store.get_mut(&id) {
            if let Some(o) = r.body.as_object_mut() {
                o.remove("managedBy");
            }
            r.body["properties"]["diskState"] = json!("Unattached");
        }
    }
}

/// The scale-set id of a scale set or of one of its instances (or their NICs).
fn scale_set_of(id: &str) -> Option<String> {
    let l = lower(id);
    let i = l.find("/virtualmachinescalesets/")?;
    let rest = &id[i + "/virtualMachineScaleSets/".len()..];
    let name = rest.split('/').next()?;
    Some(format!("{}/virtualMachineScaleSets/{name}", &id[..i]))
}

/// Refuses deleting a resource that another resource references.
pub fn check_delete(store: &Store, arm_type: &str, id: &str) -> Result<(), RuleError> {
    let users = store.referrers(id);
    let Some(user) = users.first() else { return Ok(()) };
    if lower(arm_type) == "microsoft.network/loadbalancers" {
        // As ARM: the scale set is named (clients parse it to find what to detach), not an instance.
        if let Some(ss) = users.iter().find_map(|u| scale_set_of(u)) {
            let lb_name = id.rsplit('/').next().unwrap_or_default();
            return err(
                "LoadBalancerInUseByVirtualMachineScaleSet",
                format!(
                    "Cannot delete load balancer {id} since its child resources {lb_name} are in use by virtual machine scale set {ss}."
                ),
            );
        }
    }
    let code = match lower(arm_type).as_str() {
        "microsoft.network/publicipaddresses" => "PublicIPAddressInUse",
        "microsoft.network/networksecuritygroups" => "InUseNetworkSecurityGroupCannotBeDeleted",
        "microsoft.network/routetables" => "InUseRouteTableCannotBeDeleted",
        "microsoft.network/loadbalancers" => "LoadBalancerInUseByVirtualMachineScaleSet",
        _ => "InUseResourceCannotBeDeleted",
    };
    err(code, format!("{id} is in use by {user} and cannot be deleted."))
}

/// Releases private addresses held by a deleted NIC or load balancer.
pub fn release_addresses(store: &mut Store, body: &Value) {
    for prop in ["ipConfigurations", "frontendIPConfigurations"] {
        for ipc in prop_array(body, prop) {
            if let (Some(subnet), Some(ip)) = (
                str_at(ipc, &["properties", "subnet", "id"]),
                str_at(ipc, &["properties", "privateIPAddress"]).and_then(|s| s.parse().ok()),
            ) {
                store.release_private_ip(subnet, ip);
            }
        }
    }
}

/// What ARM does after a write beyond storing it: a scale-set instance's network profile configuration
/// (backend pools of its IP configurations) is applied to the instance's NICs; the data disks a VM or
/// instance lists are attached to it (`managedBy`) and the ones it dropped are released.
pub fn propagate(store: &mut Store, arm_type: &str, body: &Value) {
    let t = lower(arm_type);
    if t == "microsoft.compute/virtualmachines" || t == "microsoft.compute/virtualmachinescalesets/virtualmachines" {
        if let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_string) {
            attach_disks(store, &id, body);
        }
    }
    if !t.ends_with("virtualmachinescalesets/virtualmachines") {
        return;
    }
    let configs = body
        .pointer("/properties/networkProfileConfiguration/networkInterfaceConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for nic_id in crate::store::nic_ids(body) {
        let Some(nic) = store.get(&nic_id).map(|r| r.body.clone()) else {
            continue;
        };
        let nic_name = nic.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        // The configuration of this NIC: same name, else the primary one.
        let Some(cfg) = configs
            .iter()
            .find(|c| {
                c.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&nic_name))
            })
            .or_else(|| {
                configs
                    .iter()
                    .find(|c| c.pointer("/properties/primary").and_then(Value::as_bool) == Some(true))
            })
        else {
            continue;
        };
        let mut updated = nic.clone();
        let mut changed = false;
        if let Some(ipcs) = updated
            .pointer_mut("/properties/ipConfigurations")
            .and_then(Value::as_array_mut)
        {
            for ipc in ipcs.iter_mut() {
                let name = ipc.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let want = prop_array(cfg, "ipConfigurations")
                    .iter()
                    .find(|c| {
                        c.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                    })
                    .and_then(|c| c.pointer("/properties/loadBalancerBackendAddressPools").cloned());
                if let Some(pools) = want {
                    if ipc.pointer("/properties/loadBalancerBackendAddressPools") != Some(&pools) {
                        ipc["properties"]["loadBalancerBackendAddressPools"] = pools;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            let ty = updated
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("Microsoft.Network/networkInterfaces")
                .to_string();
            store.put(&nic_id, &ty, updated, 0);
        }
    }
}
