//! Pure planning of a load balancer: what one Service owns on it (frontends, rules, probes by name prefix),
//! merged into the LB object as ARM returned it. Every function takes the current LB (JSON as ARM sends it)
//! and a service's wish, changes the object in place and says whether anything changed, so a batch of
//! services becomes one PUT and a batch that changes nothing becomes none.
//!
//! The applier (`service`) converts between these JSON objects and the network models at the edge; the
//! planning stays free of I/O and is table-tested here.

use super::names::{service_owns, Family};
use super::rules::{PlannedProbe, PlannedRule};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// A frontend a service wants, with its backing resolved (PIP id known, or subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendWish {
    /// Frontend IP configuration name.
    pub name: String,
    /// Family.
    pub family: Family,
    /// Public frontends: the PIP id.
    pub public_ip_id: Option<String>,
    /// Internal frontends: the subnet id.
    pub subnet_id: Option<String>,
    /// Internal frontends: a static address (requested, or kept from before).
    pub private_ip: Option<String>,
    /// Zones (standard internal frontends).
    pub zones: Vec<String>,
}

/// Everything one service wants on one LB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWish {
    /// The service base name (ownership prefix).
    pub base: String,
    /// Frontends, one per family.
    pub frontends: Vec<FrontendWish>,
    /// Rules.
    pub rules: Vec<PlannedRule>,
    /// Probes.
    pub probes: Vec<PlannedProbe>,
    /// Backend pool name per family.
    pub pools: Vec<(Family, String)>,
}

/// A service's wish collides with another service's rule on the same frontend and port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule} of load balancer {lb} conflicts with {other}: same frontend, protocol and port {port}; choose another port or frontend")]
pub struct PortConflict {
    /// Our rule.
    pub rule: String,
    /// LB name.
    pub lb: String,
    /// The other rule.
    pub other: String,
    /// Frontend port.
    pub port: i64,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The child collection `prop` of an LB's properties (created when absent).
pub fn children<'a>(lb: &'a mut Value, prop: &str) -> &'a mut Vec<Value> {
    if !lb.is_object() {
        *lb = json!({});
    }
    let obj = lb.as_object_mut().expect("object");
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if !props.is_object() {
        *props = json!({});
    }
    let arr = props
        .as_object_mut()
        .expect("object")
        .entry(prop)
        .or_insert_with(|| json!([]));
    if !arr.is_array() {
        *arr = json!([]);
    }
    arr.as_array_mut().expect("array")
}

/// Read-only view of a child collection.
pub fn children_ref<'a>(lb: &'a Value, prop: &str) -> &'a [Value] {
    lb.pointer(&format!("/properties/{prop}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Puts a child resource as ARM answered a write of it in place of the one with its name (added when absent);
/// the LB takes the child's etag, which is the LB's after that write.
pub fn replace_child(lb: &mut Value, prop: &str, name: &str, child: Value) {
    if let Some(etag) = child.get("etag").cloned() {
        if let Some(m) = lb.as_object_mut() {
            m.insert("etag".into(), etag);
        }
    }
    let Some(arr) = lb
        .pointer_mut(&format!("/properties/{prop}"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    match arr.iter_mut().find(|c| {
        c.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }) {
        Some(slot) => *slot = child,
        None => arr.push(child),
    }
}

/// `<lb id>/<collection>/<name>`.
pub fn child_id(lb_id: &str, collection: &str, name: &str) -> String {
    format!("{lb_id}/{collection}/{name}")
}

fn id_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr).and_then(Value::as_str).map(lower).unwrap_or_default()
}

/// The fields of a child that decide whether it must be rewritten (ids compared case-insensitively).
fn frontend_key(v: &Value) -> Value {
    let p = v.get("properties").cloned().unwrap_or(Value::Null);
    let mut zones: Vec<String> = v
        .get("zones")
        .and_then(Value::as_array)
        .map(|z| z.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    zones.sort();
    let static_ip = p
        .get("privateIPAllocationMethod")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("static"));
    json!({
        "pip": id_at(v, "/properties/publicIPAddress/id"),
        "subnet": id_at(v, "/properties/subnet/id"),
        "ip": if static_ip { p.get("privateIPAddress").cloned().unwrap_or(Value::Null) } else { Value::Null },
        "zones": zones,
    })
}

fn frontend_value(f: &FrontendWish, current: Option<&Value>) -> Value {
    let mut props = Map::new();
    if let Some(pip) = &f.public_ip_id {
        props.insert("publicIPAddress".into(), json!({ "id": pip }));
    }
    if let Some(subnet) = &f.subnet_id {
        props.insert("subnet".into(), json!({ "id": subnet }));
        match &f.private_ip {
            Some(ip) => {
                props.insert("privateIPAllocationMethod".into(), json!("Static"));
                props.insert("privateIPAddress".into(), json!(ip));
            }
            None => {
                props.insert("privateIPAllocationMethod".into(), json!("Dynamic"));
                // Keep the address Azure gave: a dynamic frontend rewritten without it could move.
                if let Some(ip) = current.and_then(|c| c.pointer("/properties/privateIPAddress")) {
                    props.insert("privateIPAddress".into(), ip.clone());
                }
            }
        }
        props.insert("privateIPAddressVersion".into(), json!(f.family.as_str()));
    }
    let mut v = json!({ "name": f.name, "properties": Value::Object(props) });
    // Zones of a frontend cannot change in Azure: an existing frontend keeps its own (e.g. the region's
    // zones upstream gave an internal frontend); only a new one gets the planned zones.
    match current {
        // An existing frontend keeps exactly its zones, none included.
        Some(c) => {
            if let Some(z) = c.get("zones").filter(|z| z.as_array().is_some_and(|a| !a.is_empty())) {
                v["zones"] = z.clone();
            }
        }
        None if !f.zones.is_empty() => v["zones"] = json!(f.zones),
        None => {}
    }
    v
}

fn probe_value(p: &PlannedProbe) -> Value {
    let mut props = json!({
        "protocol": p.protocol,
        "port": p.port,
        "intervalInSeconds": p.interval,
        // As upstream: `probeThreshold` only (`numberOfProbes` is the deprecated form).
        "probeThreshold": p.num,
    });
    if let Some(path) = &p.path {
        props["requestPath"] = json!(path);
    }
    json!({ "name": p.name, "properties": props })
}

fn probe_key(v: &Value) -> Value {
    let p = v.get("properties").cloned().unwrap_or(Value::Null);
    json!({
        "protocol": p.get("protocol").and_then(Value::as_str).map(lower),
        "port": p.get("port"),
        "interval": p.get("intervalInSeconds"),
        // Upstream writes only probeThreshold; older probes may carry only numberOfProbes.
        "num": p.get("probeThreshold").filter(|v| !v.is_null()).or_else(|| p.get("numberOfProbes")),
        "path": p.get("requestPath"),
    })
}

fn rule_value(r: &PlannedRule, lb_id: &str, frontend: &str, pool: &str) -> Value {
    let mut props = json!({
        "frontendIPConfiguration": { "id": child_id(lb_id, "frontendIPConfigurations", frontend) },
        "backendAddressPool": { "id": child_id(lb_id, "backendAddressPools", pool) },
        "protocol": r.protocol,
        "frontendPort": r.frontend_port,
        "backendPort": r.backend_port,
        "enableFloatingIP": r.floating_ip,
        "loadDistribution": r.load_distribution,
        "idleTimeoutInMinutes": r.idle_timeout_minutes,
    });
    if r.tcp_reset {
        props["enableTcpReset"] = json!(true);
    }
    if r.standard_sku {
        // As upstream: explicit on standard load balancers, true or false.
        props["disableOutboundSnat"] = json!(r.disable_outbound_snat);
    }
    if let Some(probe) = &r.probe {
        props["probe"] = json!({ "id": child_id(lb_id, "probes", probe) });
    }
    json!({ "name": r.name, "properties": props })
}

fn rule_key(v: &Value) -> Value {
    let p = v.get("properties").cloned().unwrap_or(Value::Null);
    let flag = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    json!({
        "fe": id_at(v, "/properties/frontendIPConfiguration/id"),
        "pool": id_at(v, "/properties/backendAddressPool/id"),
        "probe": id_at(v, "/properties/probe/id"),
        "protocol": p.get("protocol").and_then(Value::as_str).map(lower),
        "fp": p.get("frontendPort"),
        "bp": p.get("backendPort"),
        "fip": flag("enableFloatingIP"),
        "dist": p.get("loadDistribution").and_then(Value::as_str).map(lower).unwrap_or_else(|| "default".into()),
        "idle": p.get("idleTimeoutInMinutes").and_then(Value::as_i64).unwrap_or(4),
        "reset": flag("enableTcpReset"),
        "snat": flag("disableOutboundSnat"),
    })
}

/// Replaces the owned children of `prop` by `wanted` (matched by name, rewritten only when `key` differs),
/// keeping everything the service does not own. Returns true when something changed.
fn sync_owned(
    lb: &mut Value,
    prop: &str,
    owns: &dyn Fn(&str) -> bool,
    wanted: Vec<Value>,
    key: fn(&Value) -> Value,
) -> bool {
    let list = children(lb, prop);
    let before = list.len();
    let mut changed = false;
    // Drop owned children that are no longer wanted.
    list.retain(|c| {
        let n = name_of(c);
        !owns(n) || wanted.iter().any(|w| name_of(w).eq_ignore_ascii_case(n))
    });
    changed |= list.len() != before;
    for w in wanted {
        match list.iter_mut().find(|c| name_of(c).eq_ignore_ascii_case(name_of(&w))) {
            Some(c) if key(c) == key(&w) => {}
            Some(c) => {
                *c = w;
                changed = true;
            }
            None => {
                list.push(w);
                changed = true;
            }
        }
    }
    changed
}

/// Ensures the backend pools exist (empty pools are created; existing ones are kept as they are).
pub fn ensure_pools(lb: &mut Value, names: &[String]) -> bool {
    let pools = children(lb, "backendAddressPools");
    let mut changed = false;
    for n in names {
        if !pools.iter().any(|p| name_of(p).eq_ignore_ascii_case(n)) {
            pools.push(json!({ "name": n, "properties": {} }));
            changed = true;
        }
    }
    changed
}

/// `loadBalancerBackendPoolConfigurationType: nodeIP`: sets a pool's addresses (name = node, sorted by the
/// caller) in the given virtual network. Returns the entries it replaced (lower-case name, IP; sorted) when they
/// changed, `None` when they were already so.
pub fn set_pool_addresses(
    lb: &mut Value,
    pool: &str,
    addresses: &[(String, String)],
    vnet_id: &str,
) -> Option<Vec<(String, String)>> {
    let want: Vec<Value> = addresses
        .iter()
        .map(|(node, ip)| {
            json!({
                "name": node,
                "properties": { "ipAddress": ip, "virtualNetwork": { "id": vnet_id } },
            })
        })
        .collect();
    let current = pool_addresses(lb, pool);
    let pools = children(lb, "backendAddressPools");
    let Some(p) = pools.iter_mut().find(|p| name_of(p).eq_ignore_ascii_case(pool)) else {
        pools.push(json!({ "name": pool, "properties": { "loadBalancerBackendAddresses": want } }));
        return Some(current);
    };
    let mut wanted: Vec<(String, String)> = addresses.iter().map(|(n, ip)| (lower(n), ip.clone())).collect();
    wanted.sort();
    if current == wanted {
        return None;
    }
    if !p.get("properties").is_some_and(Value::is_object) {
        p["properties"] = json!({});
    }
    p["properties"]["loadBalancerBackendAddresses"] = Value::Array(want);
    Some(current)
}

/// The `(lower-case name, IP)` entries of a `nodeIP` pool, sorted; empty when the pool is absent.
pub fn pool_addresses(lb: &Value, pool: &str) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = children_ref(lb, "backendAddressPools")
        .iter()
        .find(|p| name_of(p).eq_ignore_ascii_case(pool))
        .and_then(|p| p.pointer("/properties/loadBalancerBackendAddresses"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        lower(name_of(a)),
                        a.pointer("/properties/ipAddress")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    k.sort();
    k
}

/// The frontend of another Service that `f` shares (as upstream): one backed by the same public IP, or by the
/// same static private address in the same subnet.
fn shared_frontend(lb: &Value, f: &FrontendWish, owns: &dyn Fn(&str) -> bool) -> Option<String> {
    let same = |v: Option<&str>, want: &str| v.is_some_and(|v| v.eq_ignore_ascii_case(want));
    children_ref(lb, "frontendIPConfigurations")
        .iter()
        .filter(|c| !owns(name_of(c)))
        .find(|c| match (&f.public_ip_id, &f.private_ip, &f.subnet_id) {
            (Some(pip), _, _) => same(c.pointer("/properties/publicIPAddress/id").and_then(Value::as_str), pip),
            (None, Some(ip), Some(subnet)) => {
                same(c.pointer("/properties/privateIPAddress").and_then(Value::as_str), ip)
                    && same(c.pointer("/properties/subnet/id").and_then(Value::as_str), subnet)
            }
            _ => false,
        })
        .map(|c| name_of(c).to_string())
}

/// Frontend ids the load-balancing rules of Services other than `owns`' reference (lower-case).
fn frontends_used_by_others(lb: &Value, owns: &dyn Fn(&str) -> bool) -> std::collections::HashSet<String> {
    children_ref(lb, "loadBalancingRules")
        .iter()
        .filter(|r| !owns(name_of(r)))
        .map(|r| id_at(r, "/properties/frontendIPConfiguration/id"))
        .collect()
}

/// Frontend ids the rules of `owns`' Service reference (lower-case).
fn frontends_used_by(lb: &Value, owns: &dyn Fn(&str) -> bool) -> std::collections::HashSet<String> {
    children_ref(lb, "loadBalancingRules")
        .iter()
        .filter(|r| owns(name_of(r)))
        .map(|r| id_at(r, "/properties/frontendIPConfiguration/id"))
        .collect()
}

/// Ids of the other Services' frontends that the rules of `owns`' Service use (shared frontends).
fn shared_frontends_used_by(lb: &Value, lb_id: &str, owns: &dyn Fn(&str) -> bool) -> std::collections::HashSet<String> {
    let mut used = frontends_used_by(lb, owns);
    if !used.is_empty() {
        for f in children_ref(lb, "frontendIPConfigurations")
            .iter()
            .filter(|f| owns(name_of(f)))
        {
            used.remove(&lower(&child_id(lb_id, "frontendIPConfigurations", name_of(f))));
        }
    }
    used
}

/// After a Service stopped using other Services' frontends (`used_before`, from
/// [`shared_frontends_used_by`]): each one no rule uses any more and whose own Service is gone from the LB
/// (no rule or probe of it left) goes, as upstream deletes a shared frontend with its last user. The
/// Service's own frontends are left to its wish. Returns true when one was removed.
fn drop_orphaned_frontends(lb: &mut Value, lb_id: &str, used_before: &std::collections::HashSet<String>) -> bool {
    if used_before.is_empty() {
        return false;
    }
    let still_used = frontends_used_by_others(lb, &|_| false);
    let orphans: Vec<String> = children_ref(lb, "frontendIPConfigurations")
        .iter()
        .map(|f| name_of(f).to_string())
        .filter(|n| {
            let id = lower(&child_id(lb_id, "frontendIPConfigurations", n));
            let owner = n.strip_suffix("-IPv6").unwrap_or(n);
            used_before.contains(&id)
                && !still_used.contains(&id)
                && !["loadBalancingRules", "probes"]
                    .iter()
                    .any(|p| children_ref(lb, p).iter().any(|c| service_owns(owner, name_of(c))))
        })
        .collect();
    if orphans.is_empty() {
        return false;
    }
    children(lb, "frontendIPConfigurations").retain(|f| !orphans.iter().any(|o| o.eq_ignore_ascii_case(name_of(f))));
    true
}

/// The Service's own frontends that other Services' rules still use: they stay (a shared frontend goes
/// with the last Service that uses it, as upstream).
fn owned_frontends_in_use(lb: &Value, lb_id: &str, owns: &dyn Fn(&str) -> bool, except: &[String]) -> Vec<Value> {
    let used = frontends_used_by_others(lb, owns);
    children_ref(lb, "frontendIPConfigurations")
        .iter()
        .filter(|f| owns(name_of(f)) && !except.iter().any(|e| e.eq_ignore_ascii_case(name_of(f))))
        .filter(|f| used.contains(&lower(&child_id(lb_id, "frontendIPConfigurations", name_of(f)))))
        .cloned()
        .collect()
}

/// Applies a service's wish: its frontends, probes and rules become exactly the wished ones; nothing it
/// does not own is touched. A wished rule on a frontend port another service's rule already uses is an
/// error and the LB is left unchanged. A frontend backed by the same IP as another Service's is shared
/// (the rules use it; none of ours is made), and a frontend of ours that others use stays.
pub fn apply_service(lb: &mut Value, lb_id: &str, lb_name: &str, wish: &ServiceWish) -> Result<bool, PortConflict> {
    let owns = |n: &str| service_owns(&wish.base, n);
    // Each family's frontend: another Service's that is backed by the same IP (shared), else our own.
    let effective: Vec<(Family, String, bool)> = wish
        .frontends
        .iter()
        .map(|f| match shared_frontend(lb, f, &owns) {
            Some(name) => (f.family, name, true),
            None => (f.family, f.name.clone(), false),
        })
        .collect();
    let frontend_of = |f: Family| effective.iter().find(|x| x.0 == f).map(|x| x.1.clone());
    let pool_of = |f: Family| wish.pools.iter().find(|(x, _)| *x == f).map(|(_, n)| n.clone());
    let mut rules = Vec::new();
    for r in &wish.rules {
        let (Some(fe), Some(pool)) = (frontend_of(r.family), pool_of(r.family)) else {
            continue;
        };
        rules.push(rule_value(r, lb_id, &fe, &pool));
    }
    // Conflicts: another service's rule on one of our frontends with the same protocol and port.
    for r in &rules {
        let fe = id_at(r, "/properties/frontendIPConfiguration/id");
        for other in children_ref(lb, "loadBalancingRules") {
            if owns(name_of(other)) || id_at(other, "/properties/frontendIPConfiguration/id") != fe {
                continue;
            }
            let same_proto =
                rule_key(other)["protocol"] == rule_key(r)["protocol"] || rule_key(other)["protocol"] == "all";
            if same_proto && other.pointer("/properties/frontendPort") == r.pointer("/properties/frontendPort") {
                return Err(PortConflict {
                    rule: name_of(r).to_string(),
                    lb: lb_name.to_string(),
                    other: name_of(other).to_string(),
                    port: r
                        .pointer("/properties/frontendPort")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                });
            }
        }
    }
    let mut changed = false;
    let current_fes: Vec<Value> = children_ref(lb, "frontendIPConfigurations").to_vec();
    let mut fes: Vec<Value> = wish
        .frontends
        .iter()
        .filter(|f| !effective.iter().any(|e| e.2 && e.0 == f.family))
        .map(|f| {
            let cur = current_fes.iter().find(|c| name_of(c).eq_ignore_ascii_case(&f.name));
            frontend_value(f, cur)
        })
        .collect();
    let wanted: Vec<String> = fes.iter().map(|f| name_of(f).to_string()).collect();
    fes.extend(owned_frontends_in_use(lb, lb_id, &owns, &wanted));
    let pools: Vec<String> = wish.pools.iter().map(|(_, n)| n.clone()).collect();
    changed |= ensure_pools(lb, &pools);
    changed |= sync_owned(lb, "frontendIPConfigurations", &owns, fes, frontend_key);
    changed |= sync_owned(
        lb,
        "probes",
        &owns,
        wish.probes.iter().map(probe_value).collect(),
        probe_key,
    );
    let used_before = shared_frontends_used_by(lb, lb_id, &owns);
    changed |= sync_owned(lb, "loadBalancingRules", &owns, rules, rule_key);
    changed |= drop_orphaned_frontends(lb, lb_id, &used_before);
    Ok(changed)
}

/// Removes everything the service owns, except a frontend other Services' rules still use (it goes with the
/// last of them). Returns true when something was removed.
pub fn remove_service(lb: &mut Value, lb_id: &str, base: &str) -> bool {
    let owns = |n: &str| service_owns(base, n);
    let mut changed = false;
    let used_before = shared_frontends_used_by(lb, lb_id, &owns);
    for prop in ["loadBalancingRules", "probes"] {
        changed |= sync_owned(lb, prop, &owns, Vec::new(), |_| Value::Null);
    }
    let keep = owned_frontends_in_use(lb, lb_id, &owns, &[]);
    changed |= sync_owned(lb, "frontendIPConfigurations", &owns, keep, |v| v.clone());
    changed |= drop_orphaned_frontends(lb, lb_id, &used_before);
    changed
}

/// For each frontend the Service's rules use that other Services' rules use too (a shared frontend): its
/// name and the frontend ports those other Services serve on it.
pub fn ports_of_others_on_shared_frontends(lb: &Value, base: &str) -> Vec<(String, BTreeSet<String>)> {
    let owns = |n: &str| service_owns(base, n);
    let mine = frontends_used_by(lb, &owns);
    let mut out: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for r in children_ref(lb, "loadBalancingRules")
        .iter()
        .filter(|r| !owns(name_of(r)))
    {
        let fe = id_at(r, "/properties/frontendIPConfiguration/id");
        if !mine.contains(&fe) {
            continue;
        }
        let name = fe.rsplit('/').next().unwrap_or_default().to_string();
        let port = r
            .pointer("/properties/frontendPort")
            .and_then(Value::as_i64)
            .map(|p| p.to_string())
            .unwrap_or_default();
        out.entry(name).or_default().insert(port);
    }
    out.into_iter().collect()
}

/// The name of the frontend a Service's IPv4 rules use (its own or a shared one), else its own IPv4 frontend.
pub fn service_frontend_v4(lb: &Value, base: &str) -> Option<String> {
    let owns = |n: &str| service_owns(base, n);
    children_ref(lb, "loadBalancingRules")
        .iter()
        .filter(|r| owns(name_of(r)) && !name_of(r).ends_with("-IPv6"))
        .map(|r| id_at(r, "/properties/frontendIPConfiguration/id"))
        .find_map(|id| {
            children_ref(lb, "frontendIPConfigurations")
                .iter()
                .map(name_of)
                .find(|n| id.ends_with(&format!("/frontendipconfigurations/{}", n.to_ascii_lowercase())))
                .map(str::to_string)
        })
        .or_else(|| {
            children_ref(lb, "frontendIPConfigurations")
                .iter()
                .map(name_of)
                .find(|n| n.eq_ignore_ascii_case(base))
                .map(str::to_string)
        })
}

/// Frontends the service owns that other Services still use (kept when it goes), by name.
pub fn frontends_kept_for_others(lb: &Value, lb_id: &str, base: &str) -> Vec<String> {
    let owns = |n: &str| service_owns(base, n);
    owned_frontends_in_use(lb, lb_id, &owns, &[])
        .iter()
        .map(|f| name_of(f).to_string())
        .collect()
}

/// The private address (internal) or PIP id (public) of a frontend, by name.
pub fn frontend_backing(lb: &Value, name: &str) -> Option<(Option<String>, Option<String>)> {
    let fe = children_ref(lb, "frontendIPConfigurations")
        .iter()
        .find(|f| name_of(f).eq_ignore_ascii_case(name))?;
    let s = |p: &str| fe.pointer(p).and_then(Value::as_str).map(str::to_string);
    Some((s("/properties/privateIPAddress"), s("/properties/publicIPAddress/id")))
}

/// True when the service has a frontend or a rule on this LB (a Service sharing another's frontend owns only
/// rules).
/// Whether anything on the LB belongs to the Service: frontends, rules or probes (what `remove_service`
/// would take away).
pub fn holds_any_of(lb: &Value, base: &str) -> bool {
    ["frontendIPConfigurations", "loadBalancingRules", "probes"]
        .iter()
        .any(|prop| children_ref(lb, prop).iter().any(|f| service_owns(base, name_of(f))))
}

/// Whether the Service has frontends or rules on the LB (it is placed there).
pub fn has_service(lb: &Value, base: &str) -> bool {
    ["frontendIPConfigurations", "loadBalancingRules"]
        .iter()
        .any(|prop| children_ref(lb, prop).iter().any(|f| service_owns(base, name_of(f))))
}

/// Number of load-balancing rules (basic-SKU LB selection).
pub fn rule_count(lb: &Value) -> usize {
    children_ref(lb, "loadBalancingRules").len()
}

/// True when the LB has no frontend left (it is then deleted, after its pools are detached).
pub fn is_empty(lb: &Value) -> bool {
    children_ref(lb, "frontendIPConfigurations").is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/kubernetes";

    fn rule(name: &str, port: i32, family: Family) -> PlannedRule {
        PlannedRule {
            name: name.into(),
            protocol: "Tcp",
            frontend_port: port,
            backend_port: port,
            floating_ip: true,
            load_distribution: "Default",
            idle_timeout_minutes: 4,
            tcp_reset: true,
            disable_outbound_snat: false,
            standard_sku: true,
            probe: Some(name.into()),
            family,
        }
    }

    fn probe(name: &str, port: i32) -> PlannedProbe {
        PlannedProbe {
            name: name.into(),
            protocol: "Tcp",
            port,
            path: None,
            interval: 5,
            num: 2,
        }
    }

    fn wish(base: &str, ports: &[i32]) -> ServiceWish {
        ServiceWish {
            base: base.into(),
            frontends: vec![FrontendWish {
                name: base.into(),
                family: Family::V4,
                public_ip_id: Some(format!("/pip/kubernetes-{base}")),
                subnet_id: None,
                private_ip: None,
                zones: vec![],
            }],
            rules: ports
                .iter()
                .map(|p| rule(&format!("{base}-TCP-{p}"), *p, Family::V4))
                .collect(),
            probes: ports
                .iter()
                .map(|p| probe(&format!("{base}-TCP-{p}"), 30000 + p))
                .collect(),
            pools: vec![(Family::V4, "kubernetes".into())],
        }
    }

    fn count(lb: &Value, prop: &str) -> usize {
        children_ref(lb, prop).len()
    }

    #[test]
    fn apply_then_reapply_is_a_no_op() {
        let mut lb = json!({"name": "kubernetes", "location": "eastus"});
        assert_eq!(
            apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80, 443])),
            Ok(true)
        );
        assert_eq!(count(&lb, "frontendIPConfigurations"), 1);
        assert_eq!(count(&lb, "loadBalancingRules"), 2);
        assert_eq!(count(&lb, "probes"), 2);
        assert_eq!(count(&lb, "backendAddressPools"), 1);
        // ARM echoes ids in other casing and adds read-only fields: still no change.
        let mut echoed: Value = serde_json::from_str(&lb.to_string().replace(
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourcegroups/RG",
        ))
        .unwrap();
        echoed["properties"]["loadBalancingRules"][0]["properties"]["provisioningState"] = json!("Succeeded");
        assert_eq!(
            apply_service(&mut echoed, LB, "kubernetes", &wish("aaa", &[80, 443])),
            Ok(false)
        );
    }

    /// Taking over upstream's load balancer sends no write: upstream's probes carry only `probeThreshold`,
    /// its internal frontends the region's zones (immutable in Azure), its rules `disableOutboundSnat: false`.
    #[test]
    fn upstreams_load_balancer_needs_no_write_and_zones_are_never_changed() {
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80])).unwrap();
        // What upstream would have written for the same Service.
        let mut upstream: Value = lb.clone();
        upstream["properties"]["frontendIPConfigurations"][0]["zones"] = json!(["1", "2", "3"]);
        let probe = &mut upstream["properties"]["probes"][0]["properties"];
        probe.as_object_mut().unwrap().remove("numberOfProbes");
        probe["probeThreshold"] = json!(2);
        assert_eq!(
            apply_service(&mut upstream, LB, "kubernetes", &wish("aaa", &[80])),
            Ok(false),
            "{upstream:#}"
        );
        // A real change keeps the frontend's zones as they are.
        assert_eq!(
            apply_service(&mut upstream, LB, "kubernetes", &wish("aaa", &[81])),
            Ok(true)
        );
        assert_eq!(
            upstream["properties"]["frontendIPConfigurations"][0]["zones"],
            json!(["1", "2", "3"])
        );
        // A frontend we created without zones never gets any added (that PUT would fail too).
        let mut zonal_wish = wish("aaa", &[80]);
        zonal_wish.frontends[0].zones = vec!["1".into(), "2".into(), "3".into()];
        let mut ours = lb.clone();
        assert_eq!(apply_service(&mut ours, LB, "kubernetes", &zonal_wish), Ok(false));
        assert!(ours["properties"]["frontendIPConfigurations"][0].get("zones").is_none());
        // A new frontend gets the planned zones.
        let mut fresh = json!({});
        apply_service(&mut fresh, LB, "kubernetes", &zonal_wish).unwrap();
        assert_eq!(
            fresh["properties"]["frontendIPConfigurations"][0]["zones"],
            json!(["1", "2", "3"])
        );
        // Older probes with only numberOfProbes are equal too.
        let mut old = lb.clone();
        let probe = &mut old["properties"]["probes"][0]["properties"];
        probe.as_object_mut().unwrap().remove("probeThreshold");
        probe["numberOfProbes"] = json!(2);
        assert_eq!(
            apply_service(&mut old, LB, "kubernetes", &wish("aaa", &[80])),
            Ok(false)
        );
        // Our writes are property-identical to upstream's.
        let rule = &lb["properties"]["loadBalancingRules"][0]["properties"];
        assert_eq!(rule["disableOutboundSnat"], json!(false));
        assert!(lb["properties"]["probes"][0]["properties"]
            .get("numberOfProbes")
            .is_none());
    }

    /// Upstream's shared frontends: Services asking for the same public IP (or static private address) use
    /// one frontend; a port both want is a conflict for the later one; the frontend goes with the last.
    #[test]
    fn services_with_the_same_ip_share_one_frontend() {
        let same_ip = |base: &str, ports: &[i32]| {
            let mut w = wish(base, ports);
            w.frontends[0].public_ip_id = Some("/pip/shared".into());
            w
        };
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &same_ip("aaa", &[80])).unwrap();
        assert_eq!(
            apply_service(&mut lb, LB, "kubernetes", &same_ip("bbb", &[443])),
            Ok(true)
        );
        assert_eq!(count(&lb, "frontendIPConfigurations"), 1, "{lb:#}");
        let fe_of = |rule: &str| {
            children_ref(&lb, "loadBalancingRules")
                .iter()
                .find(|r| name_of(r) == rule)
                .map(|r| id_at(r, "/properties/frontendIPConfiguration/id"))
        };
        assert_eq!(fe_of("bbb-TCP-443"), fe_of("aaa-TCP-80"));
        assert!(has_service(&lb, "bbb"), "a sharing Service is found by its rules");
        // The same again: nothing to write.
        assert_eq!(
            apply_service(&mut lb, LB, "kubernetes", &same_ip("bbb", &[443])),
            Ok(false)
        );
        // A port the first already has: the later Service fails, the earlier is untouched.
        let before = lb.clone();
        let e = apply_service(&mut lb, LB, "kubernetes", &same_ip("ccc", &[80])).unwrap_err();
        assert_eq!(
            (e.rule.as_str(), e.other.as_str(), e.port),
            ("ccc-TCP-80", "aaa-TCP-80", 80)
        );
        assert_eq!(lb, before);
        // The owner goes first: its rules go, its frontend stays for bbb.
        assert_eq!(frontends_kept_for_others(&lb, LB, "aaa"), vec!["aaa".to_string()]);
        assert!(remove_service(&mut lb, LB, "aaa"));
        assert_eq!(count(&lb, "frontendIPConfigurations"), 1);
        assert_eq!(count(&lb, "loadBalancingRules"), 1);
        // The owner re-applies while bbb still uses its frontend: nothing is duplicated.
        apply_service(&mut lb, LB, "kubernetes", &same_ip("aaa", &[80])).unwrap();
        assert_eq!(count(&lb, "frontendIPConfigurations"), 1);
        remove_service(&mut lb, LB, "aaa");
        // The last user goes: so does the frontend.
        assert!(remove_service(&mut lb, LB, "bbb"));
        assert!(is_empty(&lb));
    }

    /// A Service that keeps its frontend but no longer has rules or probes (every port `no_lb_rule` and
    /// `no_probe_rule`) keeps the frontend: only other Services' frontends can be orphaned.
    #[test]
    fn a_frontend_without_rules_stays_while_wished() {
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80])).unwrap();
        assert_eq!(apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[])), Ok(true));
        assert_eq!(count(&lb, "frontendIPConfigurations"), 1, "{lb:#}");
        assert_eq!(count(&lb, "loadBalancingRules"), 0);
        assert_eq!(apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[])), Ok(false));
    }

    #[test]
    fn services_share_the_lb_and_only_touch_their_own() {
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80])).unwrap();
        apply_service(&mut lb, LB, "kubernetes", &wish("bbb", &[80, 8080])).unwrap();
        assert_eq!(count(&lb, "loadBalancingRules"), 3);
        // Port change of aaa: 80 → 81; bbb untouched.
        assert_eq!(apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[81])), Ok(true));
        let names: Vec<&str> = children_ref(&lb, "loadBalancingRules").iter().map(name_of).collect();
        assert_eq!(names, ["bbb-TCP-80", "bbb-TCP-8080", "aaa-TCP-81"]);
        assert!(remove_service(&mut lb, LB, "aaa"));
        assert!(!remove_service(&mut lb, LB, "aaa"));
        assert!(!has_service(&lb, "aaa"));
        assert!(has_service(&lb, "bbb"));
        assert!(remove_service(&mut lb, LB, "BBB"), "ownership is case-insensitive");
        assert!(is_empty(&lb));
        assert_eq!(
            count(&lb, "backendAddressPools"),
            1,
            "pools stay until the LB is deleted"
        );
    }

    #[test]
    fn a_changed_property_rewrites_the_rule() {
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80])).unwrap();
        let mut w = wish("aaa", &[80]);
        w.rules[0].idle_timeout_minutes = 30;
        assert_eq!(apply_service(&mut lb, LB, "kubernetes", &w), Ok(true));
        assert_eq!(
            lb["properties"]["loadBalancingRules"][0]["properties"]["idleTimeoutInMinutes"],
            30
        );
        w.probes[0].protocol = "Http";
        w.probes[0].path = Some("/".into());
        assert_eq!(apply_service(&mut lb, LB, "kubernetes", &w), Ok(true));
        assert_eq!(lb["properties"]["probes"][0]["properties"]["requestPath"], "/");
    }

    #[test]
    fn a_port_taken_on_a_shared_frontend_is_a_conflict_and_changes_nothing() {
        let mut lb = json!({});
        apply_service(&mut lb, LB, "kubernetes", &wish("aaa", &[80])).unwrap();
        // bbb wants aaa's frontend (a secondary service sharing the IP) and port 80.
        let mut w = wish("bbb", &[80]);
        w.rules[0].name = "bbb-TCP-80".into();
        let mut shared = w.clone();
        shared.frontends[0].name = "aaa".into();
        let before = lb.clone();
        let err = apply_service(&mut lb, LB, "kubernetes", &shared).unwrap_err();
        assert_eq!(err.other, "aaa-TCP-80");
        assert_eq!(lb, before);
    }

    #[test]
    fn internal_frontends_keep_their_dynamic_address_and_honour_static_ones() {
        let mut lb = json!({});
        let mut w = wish("aaa", &[80]);
        w.frontends[0].public_ip_id = None;
        w.frontends[0].subnet_id = Some("/subnets/s".into());
        apply_service(&mut lb, LB, "kubernetes-internal", &w).unwrap();
        assert_eq!(
            lb["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAllocationMethod"],
            "Dynamic"
        );
        lb["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAddress"] = json!("10.0.0.9");
        assert_eq!(apply_service(&mut lb, LB, "kubernetes-internal", &w), Ok(false));
        assert_eq!(frontend_backing(&lb, "aaa"), Some((Some("10.0.0.9".into()), None)));
        w.frontends[0].private_ip = Some("10.0.0.20".into());
        assert_eq!(apply_service(&mut lb, LB, "kubernetes-internal", &w), Ok(true));
        assert_eq!(
            lb["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAddress"],
            "10.0.0.20"
        );
    }

    #[test]
    fn node_ip_pool_addresses_are_compared_as_sets() {
        let mut lb = json!({});
        let a = vec![
            ("n1".to_string(), "10.0.0.4".to_string()),
            ("n2".into(), "10.0.0.5".into()),
        ];
        assert_eq!(set_pool_addresses(&mut lb, "kubernetes", &a, "/vnet"), Some(vec![]));
        assert!(set_pool_addresses(&mut lb, "kubernetes", &a, "/vnet").is_none());
        let b = vec![("n2".to_string(), "10.0.0.5".to_string())];
        assert_eq!(set_pool_addresses(&mut lb, "kubernetes", &b, "/vnet"), Some(a.clone()));
        assert_eq!(count(&lb, "backendAddressPools"), 1);
        assert!(!ensure_pools(&mut lb, &["kubernetes".into()]));
        assert!(ensure_pools(&mut lb, &["kubernetes-IPv6".into()]));
    }
}
