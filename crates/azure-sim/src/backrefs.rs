//! ARM's read-only back-references: what a resource's body says about the resources that use it, which ARM
//! computes and clients rely on — a backend pool's `backendIPConfigurations` (which NICs and scale-set
//! instances to detach before deleting a load balancer), a frontend's and a pool's `loadBalancingRules`, a
//! public IP's `ipConfiguration`, a subnet's `ipConfigurations`, a security group's `networkInterfaces` and
//! `subnets`, a route table's `subnets`.
//!
//! They are never stored: [`strip`] drops them from a written body (ARM ignores what a client echoes back)
//! and [`fill`] computes them from the store whenever a resource is served, so they cannot go stale.

use crate::store::{prop_array, str_at, Resource, Store};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The read-only back-reference properties of each embedded child array, by resource type (lower-case).
const CHILD_BACKREFS: &[(&str, &str, &[&str])] = &[
    (
        "microsoft.network/loadbalancers",
        "frontendIPConfigurations",
        &[
            "loadBalancingRules",
            "inboundNatRules",
            "inboundNatPools",
            "outboundRules",
        ],
    ),
    (
        "microsoft.network/loadbalancers",
        "backendAddressPools",
        &[
            "backendIPConfigurations",
            "loadBalancingRules",
            "inboundNatRules",
            "outboundRule",
            "outboundRules",
        ],
    ),
    ("microsoft.network/loadbalancers", "probes", &["loadBalancingRules"]),
    ("microsoft.network/virtualnetworks", "subnets", &["ipConfigurations"]),
];

/// The read-only back-reference properties at the top of `properties`, by resource type (lower-case).
const TOP_BACKREFS: &[(&str, &[&str])] = &[
    ("microsoft.network/publicipaddresses", &["ipConfiguration"]),
    (
        "microsoft.network/networksecuritygroups",
        &["networkInterfaces", "subnets"],
    ),
    ("microsoft.network/routetables", &["subnets"]),
];

/// Removes the back-references a client sent back in a body of `arm_type`.
pub fn strip(arm_type: &str, body: &mut Value) {
    let t = arm_type.to_ascii_lowercase();
    let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (_, keys) in TOP_BACKREFS.iter().filter(|(ty, _)| *ty == t) {
        for k in *keys {
            p.remove(*k);
        }
    }
    for (_, prop, keys) in CHILD_BACKREFS.iter().filter(|(ty, _, _)| *ty == t) {
        for child in p.get_mut(*prop).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(cp) = child.get_mut("properties").and_then(Value::as_object_mut) {
                for k in *keys {
                    cp.remove(*k);
                }
            }
        }
    }
}

/// `{"id": ...}` references.
fn id_refs(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|id| json!({ "id": id })).collect())
}

fn is_type(r: &Resource, ty: &str) -> bool {
    r.body
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case(ty))
}

/// Every IP configuration (NIC `ipConfigurations`, load-balancer `frontendIPConfigurations`) of the
/// resources that reference `id`, with its own id.
fn ip_configurations<'s, 'a>(users: &'s [&'a Resource]) -> impl Iterator<Item = (&'a str, &'a Value)> + use<'s, 'a> {
    users.iter().copied().flat_map(|r| {
        ["ipConfigurations", "frontendIPConfigurations"]
            .into_iter()
            .flat_map(|prop| prop_array(&r.body, prop))
            .filter_map(|ipc| ipc.get("id").and_then(Value::as_str).map(|id| (id, ipc)))
    })
}

fn same(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// Sets a child's property (creating `properties`) when `ids` is not empty, as ARM omits empty ones.
fn set_refs(child: &mut Value, key: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    if let Some(m) = child.as_object_mut() {
        let p = m.entry("properties").or_insert_with(|| Value::Object(Map::new()));
        if let Some(p) = p.as_object_mut() {
            p.insert(key.to_string(), id_refs(ids));
        }
    }
}

/// Fills the back-references of a served body (a stored resource of any type; others are unchanged).
pub fn fill(store: &Store, body: &mut Value) {
    let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    let ty = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ty.as_str() {
        "microsoft.network/loadbalancers" => load_balancer(store, &id, body),
        "microsoft.network/publicipaddresses" => {
            let users = store.referring(&id);
            let user = ip_configurations(&users)
                .find(|(_, ipc)| same(str_at(ipc, &["properties", "publicIPAddress", "id"]), &id))
                .map(|(ipc_id, _)| ipc_id.to_string());
            if let (Some(u), Some(p)) = (user, body.get_mut("properties").and_then(Value::as_object_mut)) {
                p.insert("ipConfiguration".into(), json!({ "id": u }));
            }
        }
        "microsoft.network/virtualnetworks" => {
            let users = store.referring(&id);
            let mut by_subnet: HashMap<String, Vec<String>> = HashMap::new();
            for (ipc_id, ipc) in ip_configurations(&users) {
                if let Some(subnet) = str_at(ipc, &["properties", "subnet", "id"]) {
                    by_subnet
                        .entry(subnet.to_ascii_lowercase())
                        .or_default()
                        .push(ipc_id.to_string());
                }
            }
            for subnet in children_mut(body, "subnets") {
                let sid = subnet
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if let Some(ids) = by_subnet.get(&sid) {
                    set_refs(subnet, "ipConfigurations", ids);
                }
            }
        }
        "microsoft.network/networksecuritygroups" | "microsoft.network/routetables" => {
            let key = if ty.ends_with("networksecuritygroups") {
                "networkSecurityGroup"
            } else {
                "routeTable"
            };
            let users = store.referring(&id);
            let nics: Vec<String> = users
                .iter()
                .filter(|r| is_type(r, "Microsoft.Network/networkInterfaces"))
                .filter(|r| same(str_at(&r.body, &["properties", key, "id"]), &id))
                .map(|r| r.id.clone())
                .collect();
            let subnets: Vec<String> = users
                .iter()
                .filter(|r| is_type(r, "Microsoft.Network/virtualNetworks"))
                .flat_map(|r| prop_array(&r.body, "subnets"))
                .filter(|s| same(str_at(s, &["properties", key, "id"]), &id))
                .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_string))
                .collect();
            if key == "networkSecurityGroup" {
                set_refs(body, "networkInterfaces", &nics);
            }
            set_refs(body, "subnets", &subnets);
        }
        _ => {}
    }
}

fn children_mut<'a>(body: &'a mut Value, prop: &str) -> impl Iterator<Item = &'a mut Value> {
    body.get_mut("properties")
        .and_then(|p| p.get_mut(prop))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn load_balancer(store: &Store, id: &str, body: &mut Value) {
    // Pools ← the NIC (and scale-set instance NIC) IP configurations that join them.
    let users = store.referring(id);
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for r in users
        .iter()
        .filter(|r| is_type(r, "Microsoft.Network/networkInterfaces"))
    {
        for ipc in prop_array(&r.body, "ipConfigurations") {
            let Some(ipc_id) = ipc.get("id").and_then(Value::as_str) else {
                continue;
            };
            for pool in ipc
                .pointer("/properties/loadBalancerBackendAddressPools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(pid) = pool.get("id").and_then(Value::as_str) {
                    members
                        .entry(pid.to_ascii_lowercase())
                        .or_default()
                        .push(ipc_id.to_string());
                }
            }
        }
    }
    // Who uses each child, in one pass per collection (lower-case id → user ids): a 250-frontend LB with 250
    // rules cost 62,500 comparisons per served body when each child scanned every rule.
    let mut users: HashMap<(&str, String), Vec<String>> = HashMap::new();
    let snapshot = body.clone();
    for (prop, keys) in [
        (
            "loadBalancingRules",
            &["backendAddressPool", "probe", "frontendIPConfiguration"][..],
        ),
        ("outboundRules", &["backendAddressPool", "frontendIPConfigurations"][..]),
        ("inboundNatRules", &["frontendIPConfiguration"][..]),
    ] {
        for c in prop_array(&snapshot, prop) {
            let Some(cid) = c.get("id").and_then(Value::as_str) else {
                continue;
            };
            for key in keys {
                let targets: Vec<&str> = match c.pointer(&format!("/properties/{key}")) {
                    Some(Value::Array(a)) => a.iter().filter_map(|f| f.get("id").and_then(Value::as_str)).collect(),
                    Some(v) => v.get("id").and_then(Value::as_str).into_iter().collect(),
                    None => Vec::new(),
                };
                for t in targets {
                    users
                        .entry((prop, t.to_ascii_lowercase()))
                        .or_default()
                        .push(cid.to_string());
                }
            }
        }
    }
    let of = |prop: &'static str, id: &str| -> Vec<String> {
        users.get(&(prop, id.to_ascii_lowercase())).cloned().unwrap_or_default()
    };
    for pool in children_mut(body, "backendAddressPools") {
        let pid = pool.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some(ids) = members.get(&pid.to_ascii_lowercase()) {
            set_refs(pool, "backendIPConfigurations", ids);
        }
        set_refs(pool, "loadBalancingRules", &of("loadBalancingRules", &pid));
        set_refs(pool, "outboundRules", &of("outboundRules", &pid));
    }
    for fe in children_mut(body, "frontendIPConfigurations") {
        let fid = fe.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        for prop in ["loadBalancingRules", "inboundNatRules", "outboundRules"] {
            set_refs(fe, prop, &of(prop, &fid));
        }
    }
    for probe in children_mut(body, "probes") {
        let pid = probe.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        set_refs(probe, "loadBalancingRules", &of("loadBalancingRules", &pid));
    }
}
