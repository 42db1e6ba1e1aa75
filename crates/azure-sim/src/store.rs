//! The resource store: every resource by lower-cased id, with its body and ETag; embedded children
//! (LB pools, rules, probes, frontends; routes; subnets; security rules) live inside their parent's body
//! as in ARM. Address pools for subnets and public IPs.

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// One stored resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The id as created.
    pub id: String,
    /// The full body (id, name, type, etag, properties, ...).
    pub body: Value,
    /// Writes are refused (busy) until this simulated time (ms).
    pub busy_until_ms: u64,
    /// The ARM ids the body mentions (lower-cased), for [`Store::referrers`] without re-reading bodies.
    refs: Vec<String>,
}

/// Every string value of a body that is an ARM id (`/subscriptions/...`), lower-cased.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() > 15 && s[..15].eq_ignore_ascii_case("/subscriptions/") => {
            out.push(s.to_ascii_lowercase())
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Properties that hold embedded child resources, by the child type segment (lower-case).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("frontendipconfigurations", "frontendIPConfigurations"),
    ("backendaddresspools", "backendAddressPools"),
    ("loadbalancingrules", "loadBalancingRules"),
    ("probes", "probes"),
    ("inboundnatrules", "inboundNatRules"),
    ("outboundrules", "outboundRules"),
    ("routes", "routes"),
    ("subnets", "subnets"),
    ("securityrules", "securityRules"),
    ("ipconfigurations", "ipConfigurations"),
];

/// The property name of an embedded child type segment.
pub fn embedded_property(child_type: &str) -> Option<&'static str> {
    let lower = child_type.to_ascii_lowercase();
    EMBEDDED.iter().find(|(k, _)| *k == lower).map(|(_, v)| *v)
}

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    resources: BTreeMap<String, Resource>,
    etag_counter: u64,
    /// Used addresses per subnet id (lower-case).
    subnet_used: HashMap<String, BTreeSet<Ipv4Addr>>,
    public_next: u32,
    v6_next: HashMap<String, u128>,
    /// Reverse index of `Resource::refs`: a referenced id (lower-case) → the keys of the resources naming it
    /// (so "who refers to this" is a range read, not a scan of every resource: 10,000 NICs and instances
    /// made each public-IP write scan them all).
    referenced_by: BTreeMap<String, BTreeSet<String>>,
}

impl Store {
    /// A new ETag.
    pub fn next_etag(&mut self) -> String {
        self.etag_counter += 1;
        format!(
            "W/\"{:08x}-sim-{}\"",
            self.etag_counter.wrapping_mul(2654435761),
            self.etag_counter
        )
    }

    /// The resource of an id.
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.get(&id.to_ascii_lowercase())
    }

    /// Mutable access.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Resource> {
        self.resources.get_mut(&id.to_ascii_lowercase())
    }

    /// Inserts or replaces a resource: sets `id`, `name`, `type`, a new `etag`, and ids of embedded children.
    pub fn put(&mut self, id: &str, arm_type: &str, mut body: Value, busy_until_ms: u64) -> Value {
        let etag = self.next_etag();
        let canonical = self.get(id).map(|r| r.id.clone()).unwrap_or_else(|| id.to_string());
        let name = canonical.rsplit('/').next().unwrap_or_default().to_string();
        if let Value::Object(m) = &mut body {
            m.insert("id".into(), json!(canonical));
            m.insert("name".into(), json!(name));
            m.insert("type".into(), json!(arm_type));
            m.insert("etag".into(), json!(etag));
            let props = m.entry("properties").or_insert_with(|| json!({}));
            if let Value::Object(p) = props {
                for (_, prop) in EMBEDDED {
                    if let Some(Value::Array(children)) = p.get_mut(*prop) {
                        for c in children.iter_mut() {
                            if let Value::Object(cm) = c {
                                if let Some(n) = cm.get("name").and_then(Value::as_str).map(str::to_string) {
                                    cm.insert("id".into(), json!(format!("{canonical}/{prop}/{n}")));
                                    cm.insert("etag".into(), json!(etag));
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut refs = Vec::new();
        collect_refs(&body, &mut refs);
        refs.sort();
        refs.dedup();
        let key = canonical.to_ascii_lowercase();
        for r in &refs {
            self.referenced_by.entry(r.clone()).or_default().insert(key.clone());
        }
        let old = self.resources.insert(
            key.clone(),
            Resource {
                id: canonical,
                body: body.clone(),
                busy_until_ms,
                refs,
            },
        );
        if let Some(old) = old {
            let kept = &self.resources[&key].refs;
            let gone: Vec<String> = old
                .refs
                .into_iter()
                .filter(|r| kept.binary_search(r).is_err())
                .collect();
            self.unindex(&key, &gone);
        }
        body
    }

    fn unindex(&mut self, key: &str, refs: &[String]) {
        for r in refs {
            if let Some(users) = self.referenced_by.get_mut(r) {
                users.remove(key);
                if users.is_empty() {
                    self.referenced_by.remove(r);
                }
            }
        }
    }

    fn remove_one(&mut self, key: &str) -> Option<Resource> {
        let r = self.resources.remove(key)?;
        self.unindex(key, &r.refs);
        Some(r)
    }

    /// Removes a resource (and every resource stored under its id).
    pub fn remove(&mut self, id: &str) -> Option<Resource> {
        let key = id.to_ascii_lowercase();
        let prefix = format!("{key}/");
        let nested: Vec<String> = self
            .resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in nested {
            self.remove_one(&k);
        }
        self.remove_one(&key)
    }

    /// The direct children of a collection path (e.g. `.../resourceGroups/rg/providers/Microsoft.Network/loadBalancers`).
    pub fn list(&self, collection: &str) -> Vec<&Resource> {
        let prefix = format!("{}/", collection.to_ascii_lowercase().trim_end_matches('/'));
        self.resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(_, r)| r)
            .collect()
    }

    /// Every resource whose id starts with a prefix (lower-case compare).
    pub fn under(&self, prefix: &str) -> Vec<&Resource> {
        let p = prefix.to_ascii_lowercase();
        self.resources
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(_, r)| r)
            .collect()
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Ids of other resources that reference `id` (or something under it) in their bodies.
    pub fn referrers(&self, id: &str) -> Vec<String> {
        self.referring(id).into_iter().map(|r| r.id.clone()).collect()
    }

    /// Other resources that reference `id` (or something under it) in their bodies.
    pub fn referring(&self, id: &str) -> Vec<&Resource> {
        let id = id.to_ascii_lowercase();
        let own_prefix = format!("{id}/");
        let mut keys: BTreeSet<&String> = BTreeSet::new();
        if let Some(users) = self.referenced_by.get(&id) {
            keys.extend(users.iter());
        }
        // `id/...` (children): a range of its own (`id-x` sorts between `id` and `id/`).
        for (_, users) in self
            .referenced_by
            .range(own_prefix.clone()..)
            .take_while(|(t, _)| t.starts_with(&own_prefix))
        {
            keys.extend(users.iter());
        }
        keys.into_iter()
            .filter(|k| k.as_str() != id && !k.starts_with(&own_prefix))
            .filter_map(|k| self.resources.get(k))
            .collect()
    }

    /// Allocates the next free address of a subnet (skipping Azure's reserved first four).
    pub fn allocate_private_ip(&mut self, subnet_id: &str, prefix: &str) -> Option<Ipv4Addr> {
        let net: Ipv4Net = prefix.parse().ok()?;
        let used = self.subnet_used.entry(subnet_id.to_ascii_lowercase()).or_default();
        // The first host after Azure's reserved ones that is not used: one walk along the ordered set (a
        // lookup per candidate host was 4% of the simulator's CPU with 5,000 nodes in the subnet).
        let first = u32::from(net.hosts().nth(3)?);
        let last = u32::from(net.hosts().next_back()?);
        let mut candidate = first;
        for u in used.range(Ipv4Addr::from(first)..).map(|u| u32::from(*u)) {
            if u != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        if candidate > last {
            return None;
        }
        let ip = Ipv4Addr::from(candidate);
        used.insert(ip);
        Some(ip)
    }

    /// Allocates the next IPv6 address of a subnet prefix (skipping the first four, as for IPv4).
    pub fn allocate_private_ipv6(&mut self, subnet_id: &str, prefix: &str) -> Option<std::net::Ipv6Addr> {
        let net: ipnet::Ipv6Net = prefix.parse().ok()?;
        let key = format!("{}#v6", subnet_id.to_ascii_lowercase());
        let n = self.v6_next.entry(key).or_insert(3);
        *n += 1;
        let base = u128::from(net.network());
        Some(std::net::Ipv6Addr::from(base + *n))
    }

    /// Marks an address as used (scenario set-up).
    pub fn reserve_private_ip(&mut self, subnet_id: &str, ip: Ipv4Addr) {
        self.subnet_used
            .entry(subnet_id.to_ascii_lowercase())
            .or_default()
            .insert(ip);
    }

    /// Releases an address.
    pub fn release_private_ip(&mut self, subnet_id: &str, ip: Ipv4Addr) {
        if let Some(s) = self.subnet_used.get_mut(&subnet_id.to_ascii_lowercase()) {
            s.remove(&ip);
        }
    }

    /// The next public address from the simulator's pool (20.0.0.0/8).
    pub fn allocate_public_ip(&mut self) -> Ipv4Addr {
        self.public_next += 1;
        let n = self.public_next;
        Ipv4Addr::new(20, ((n >> 16) & 0xff) as u8, ((n >> 8) & 0xff) as u8, (n & 0xff) as u8)
    }

    /// Allocates the next IPv6 public address (from the documentation range `2001:db8:20::/48`).
    pub fn allocate_public_ipv6(&mut self) -> std::net::Ipv6Addr {
        self.public_next += 1;
        let base = u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, 0, 0));
        std::net::Ipv6Addr::from(base + u128::from(self.public_next))
    }

    /// A dump of every resource.
    pub fn dump(&self) -> Value {
        Value::Array(self.resources.values().map(|r| r.body.clone()).collect())
    }
}

/// `properties` of a body, created when absent (`None` when the body is not an object).
pub fn props_mut(body: &mut Value) -> Option<&mut Map<String, Value>> {
    let m = body.as_object_mut()?;
    let p = m.entry("properties").or_insert_with(|| json!({}));
    if !p.is_object() {
        *p = json!({});
    }
    p.as_object_mut()
}

/// Case-insensitive lookup of a string at a JSON pointer-like path of keys.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur
            .as_object()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)?;
    }
    cur.as_str()
}

/// The array at `properties.<name>` (empty when absent).
pub fn prop_array<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v.get("properties")
        .and_then(|p| p.get(name))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The NIC ids of a VM or scale-set instance body (`properties.networkProfile.networkInterfaces[].id`).
pub fn nic_ids(vm: &Value) -> Vec<String> {
    vm.pointer("/properties/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.get("id").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ips_skip_the_reserved_fill_gaps_and_run_out() {
        let mut st = Store::default();
        let sub = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // 10.0.0.0/29: hosts .1–.6; Azure keeps .1–.3: .4, .5, .6 are free.
        assert_eq!(st.allocate_private_ip(sub, "10.0.0.0/29"), Some(ip("10.0.0.4")));
        st.reserve_private_ip(sub, ip("10.0.0.6"));
        assert_eq!(st.allocate_private_ip(sub, "10.0.0.0/29"), Some(ip("10.0.0.5")));
        assert_eq!(st.allocate_private_ip(sub, "10.0.0.0/29"), None, "full");
        st.release_private_ip(sub, ip("10.0.0.4"));
        assert_eq!(
            st.allocate_private_ip(sub, "10.0.0.0/29"),
            Some(ip("10.0.0.4")),
            "a released address is reused"
        );
        // Subnets are independent; a prefix too small for the reserved addresses has none.
        assert_eq!(st.allocate_private_ip("other", "10.0.0.0/29"), Some(ip("10.0.0.4")));
        assert_eq!(st.allocate_private_ip("tiny", "10.0.0.0/30"), None);
    }

    fn ids(v: Vec<&Resource>) -> Vec<String> {
        v.into_iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn referring_follows_puts_replacements_and_removals() {
        let mut s = Store::default();
        let lb = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb1";
        let pool = format!("{lb}/backendAddressPools/p");
        let nic =
            |n: &str| format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/{n}");
        s.put(lb, "Microsoft.Network/loadBalancers", json!({"properties": {}}), 0);
        s.put(
            &nic("a"),
            "Microsoft.Network/networkInterfaces",
            json!({"properties": {"pool": {"id": pool}}}),
            0,
        );
        s.put(
            &nic("b"),
            "Microsoft.Network/networkInterfaces",
            json!({"properties": {"lb": {"id": lb.to_uppercase()}}}),
            0,
        );
        // A sibling whose name extends the id is not "under" it.
        s.put(
            &nic("c"),
            "Microsoft.Network/networkInterfaces",
            json!({"properties": {"x": {"id": format!("{lb}0")}}}),
            0,
        );
        assert_eq!(ids(s.referring(lb)), [nic("a"), nic("b")]);
        assert_eq!(ids(s.referring(&pool)), [nic("a")]);
        // Replaced without the reference: gone from the index; removed: gone too.
        s.put(
            &nic("a"),
            "Microsoft.Network/networkInterfaces",
            json!({"properties": {}}),
            0,
        );
        assert_eq!(ids(s.referring(lb)), [nic("b")]);
        s.remove(&nic("b"));
        assert!(s.referring(lb).is_empty());
        // Only the LB's own body (its `id`) still names it; no empty entries are kept.
        assert_eq!(s.referenced_by[&lb.to_ascii_lowercase()].len(), 1);
        assert!(s.referenced_by.values().all(|u| !u.is_empty()));
    }
}
