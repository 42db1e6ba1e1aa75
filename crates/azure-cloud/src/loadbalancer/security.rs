//! Pure planning of the cluster's network security group (upstream ≥ 1.29 scheme): allow rules aggregated by
//! (family, protocol, sources, ports) and named `k8s-azure-lb_allow_<family>_<md5>`, whose destinations are
//! the frontend addresses of every service that wants exactly that access; one `k8s-azure-lb_deny-all_<family>`
//! rule whose destinations are the services that asked for it. A service is reconciled by removing its
//! addresses from every managed rule and adding them where its wish says; rules left without destinations
//! are deleted. Rules of older versions named after the service (`<base>-TCP-80-Internet`) are removed,
//! `shared-…` rules lose the service's addresses like the aggregated ones: that is the migration.

use super::names::{allow_security_rule_name, deny_all_security_rule_name, service_owns, Family, SECURITY_RULE_PREFIX};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What one Service wants from the NSG, purely from its ports, its annotations (`spec`), the addresses of its
/// frontends, the nodes' addresses (used when floating IP is off: traffic then reaches the nodes' own
/// addresses on the node ports) and the addresses its status still shows (their old rules are removed).
pub fn service_wish(
    ports: &[k8s_openapi::api::core::v1::ServicePort],
    spec: &super::annotations::ServiceLbSpec,
    base: &str,
    addresses: &[(Family, String)],
    node_ips: &[(Family, String)],
    previous: Vec<String>,
) -> NsgWish {
    let ports: Vec<(&'static str, i32)> = ports
        .iter()
        .map(|p| {
            let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                "UDP" => "Udp",
                "SCTP" => "*",
                _ => "Tcp",
            };
            if spec.ha_ports {
                ("*", 0)
            } else if spec.floating_ip_disabled {
                (proto, p.node_port.unwrap_or(p.port))
            } else {
                (proto, p.port)
            }
        })
        .collect();
    let mut destinations: Vec<(Family, String)> = addresses.to_vec();
    for ip in &spec.additional_public_ips {
        destinations.push((if ip.is_ipv6() { Family::V6 } else { Family::V4 }, ip.to_string()));
    }
    if spec.floating_ip_disabled {
        destinations.extend(node_ips.iter().cloned());
    }
    let mut allow = Vec::new();
    let mut deny_all = Vec::new();
    for &family in &spec.families {
        let ranges: Vec<String> = spec
            .source_ranges
            .iter()
            .filter(|r| r.addr().is_ipv6() == (family == Family::V6))
            .map(|r| r.to_string())
            .collect();
        let mut sources = ranges.clone();
        sources.extend(spec.allowed_service_tags.iter().cloned());
        if sources.is_empty() && spec.source_ranges.is_empty() && !spec.internal && !spec.invalid_ranges {
            sources.push("Internet".into());
        }
        if !spec.nsg_rules_disabled {
            allow.extend(allow_specs(family, &sources, &ports));
        }
        if spec.invalid_ranges || (spec.deny_all_except_source_ranges && !spec.source_ranges.is_empty()) {
            deny_all.push(family);
        }
    }
    let mut remove = previous;
    remove.extend(destinations.iter().map(|(_, a)| a.clone()));
    NsgWish {
        remove,
        destinations,
        allow,
        deny_all,
        base: base.to_string(),
        shared: BTreeMap::new(),
    }
}

/// Lowest priority the provider uses.
pub const PRIORITY_MIN: i64 = 500;
/// Highest priority the provider uses (exclusive).
pub const PRIORITY_MAX: i64 = 4096;

/// One aggregated allow rule a service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowSpec {
    /// Family of sources and destinations.
    pub family: Family,
    /// `Tcp`, `Udp` or `*`.
    pub protocol: &'static str,
    /// Source prefixes and service tags.
    pub sources: Vec<String>,
    /// Destination ports (empty: all ports).
    pub ports: Vec<i32>,
}

/// What one service wants from the NSG.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsgWish {
    /// Addresses to take out of every managed rule first (what the service had, and has).
    pub remove: Vec<String>,
    /// Destinations per family (frontend addresses, additional public IPs, or node IPs without floating IP).
    pub destinations: Vec<(Family, String)>,
    /// Allow rules.
    pub allow: Vec<AllowSpec>,
    /// Families that get the deny-all rule.
    pub deny_all: Vec<Family>,
    /// Service base name: rules of older versions named after it are removed.
    pub base: String,
    /// Addresses other Services share (a shared frontend) with the ports those Services serve on them: such
    /// an address stays in a rule that allows one of those ports.
    pub shared: BTreeMap<String, BTreeSet<String>>,
}

/// No free priority left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network security group {nsg} has no free priority in {PRIORITY_MIN}..{PRIORITY_MAX} for rule {rule}; remove unused inbound rules")]
pub struct NoPriority {
    /// NSG name.
    pub nsg: String,
    /// The rule that needed one.
    pub rule: String,
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Both forms of a multi-valued property (`<p>` and `<p>es`/`<p>s`).
fn multi(rule: &Value, single: &str, plural: &str) -> Vec<String> {
    let p = rule.get("properties");
    let mut out = strings(p.and_then(|p| p.get(plural)));
    if let Some(s) = p.and_then(|p| p.get(single)).and_then(Value::as_str) {
        if !s.is_empty() {
            out.push(s.to_string());
        }
    }
    out
}

fn set_multi(rule: &mut Value, single: &str, plural: &str, mut values: Vec<String>) {
    values.sort();
    values.dedup();
    let p = &mut rule["properties"];
    if let Some(o) = p.as_object_mut() {
        o.remove(single);
        o.remove(plural);
    }
    if values.len() == 1 {
        p[single] = json!(values[0]);
    } else {
        p[plural] = json!(values);
    }
}

fn is_managed(name: &str) -> bool {
    name.starts_with(SECURITY_RULE_PREFIX) || name.starts_with("shared-")
}

fn priority(v: &Value) -> i64 {
    v.pointer("/properties/priority").and_then(Value::as_i64).unwrap_or(0)
}

fn inbound(v: &Value) -> bool {
    v.pointer("/properties/direction")
        .and_then(Value::as_str)
        .is_none_or(|d| d.eq_ignore_ascii_case("inbound"))
}

fn next_priority(rules: &[Value], down: bool) -> Option<i64> {
    let used: BTreeSet<i64> = rules.iter().filter(|r| inbound(r)).map(priority).collect();
    if down {
        (PRIORITY_MIN..PRIORITY_MAX).rev().find(|p| !used.contains(p))
    } else {
        (PRIORITY_MIN..PRIORITY_MAX).find(|p| !used.contains(p))
    }
}

fn new_rule(name: &str, access: &str, protocol: &str, sources: Vec<String>, ports: &[i32], prio: i64) -> Value {
    let mut r = json!({
        "name": name,
        "properties": {
            "protocol": protocol,
            "sourcePortRange": "*",
            "access": access,
            "direction": "Inbound",
            "priority": prio,
        }
    });
    set_multi(&mut r, "sourceAddressPrefix", "sourceAddressPrefixes", sources);
    let ports: Vec<String> = if ports.is_empty() {
        vec!["*".into()]
    } else {
        ports.iter().map(i32::to_string).collect()
    };
    set_multi(&mut r, "destinationPortRange", "destinationPortRanges", ports);
    r
}

/// A comparable view of the managed rules (name → sorted destinations and the rest of the properties).
fn fingerprint(rules: &[Value]) -> Vec<(String, Vec<String>, i64)> {
    let mut out: Vec<_> = rules
        .iter()
        .map(|r| {
            let mut d = multi(r, "destinationAddressPrefix", "destinationAddressPrefixes");
            d.sort();
            (name_of(r).to_ascii_lowercase(), d, priority(r))
        })
        .collect();
    out.sort();
    out
}

/// Applies one service's wish to the NSG's security rules. Returns whether anything changed.
pub fn apply(rules: &mut Vec<Value>, nsg: &str, wish: &NsgWish) -> Result<bool, NoPriority> {
    let before = fingerprint(rules);
    let before_len = rules.len();
    // Rules of older versions named after the service.
    if !wish.base.is_empty() {
        rules.retain(|r| !service_owns(&wish.base, name_of(r)));
    }
    let remove: BTreeSet<String> = wish
        .remove
        .iter()
        .chain(wish.destinations.iter().map(|(_, a)| a))
        .cloned()
        .collect();
    // Take the service's addresses out of every managed rule; drop rules left empty.
    rules.retain_mut(|r| {
        if !is_managed(name_of(r)) {
            return true;
        }
        let d = multi(r, "destinationAddressPrefix", "destinationAddressPrefixes");
        if !d.iter().any(|a| remove.contains(a)) {
            return true;
        }
        let rule_ports = multi(r, "destinationPortRange", "destinationPortRanges");
        let needed_by_others = |a: &String| {
            wish.shared
                .get(a)
                .is_some_and(|ports| rule_ports.iter().any(|p| ports.contains(p)))
        };
        let kept: Vec<String> = d
            .into_iter()
            .filter(|a| !remove.contains(a) || needed_by_others(a))
            .collect();
        if kept.is_empty() {
            return false;
        }
        set_multi(r, "destinationAddressPrefix", "destinationAddressPrefixes", kept);
        true
    });
    let dst = |f: Family| -> Vec<String> {
        wish.destinations
            .iter()
            .filter(|(x, _)| *x == f)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let add = |rules: &mut Vec<Value>, name: String, make: &dyn Fn(i64) -> Value, family: Family, down: bool| {
        let d = dst(family);
        if d.is_empty() {
            return Ok(());
        }
        if let Some(r) = rules.iter_mut().find(|r| name_of(r).eq_ignore_ascii_case(&name)) {
            let mut cur = multi(r, "destinationAddressPrefix", "destinationAddressPrefixes");
            cur.extend(d);
            set_multi(r, "destinationAddressPrefix", "destinationAddressPrefixes", cur);
            return Ok(());
        }
        let prio = next_priority(rules, down).ok_or_else(|| NoPriority {
            nsg: nsg.to_string(),
            rule: name.clone(),
        })?;
        let mut r = make(prio);
        set_multi(&mut r, "destinationAddressPrefix", "destinationAddressPrefixes", d);
        rules.push(r);
        Ok(())
    };
    for a in &wish.allow {
        let name = allow_security_rule_name(a.family, a.protocol, &a.sources, &a.ports);
        let make = |prio| new_rule(&name, "Allow", a.protocol, a.sources.clone(), &a.ports, prio);
        add(rules, name.clone(), &make, a.family, false)?;
    }
    for &f in &wish.deny_all {
        let name = deny_all_security_rule_name(f);
        let make = |prio| new_rule(&name, "Deny", "*", vec!["*".into()], &[], prio);
        add(rules, name.clone(), &make, f, true)?;
    }
    Ok(rules.len() != before_len || fingerprint(rules) != before)
}

/// The allow rules a service needs per family: its ports grouped by protocol, from `sources` (already
/// filtered to the family); none when `sources` is empty.
pub fn allow_specs(family: Family, sources: &[String], ports: &[(&'static str, i32)]) -> Vec<AllowSpec> {
    if sources.is_empty() {
        return Vec::new();
    }
    let mut by_proto: Vec<(&'static str, Vec<i32>)> = Vec::new();
    for &(proto, port) in ports {
        match by_proto.iter_mut().find(|(p, _)| *p == proto) {
            Some((_, v)) => v.push(port),
            None => by_proto.push((proto, vec![port])),
        }
    }
    by_proto
        .into_iter()
        .map(|(protocol, mut ports)| {
            ports.sort();
            ports.dedup();
            ports.retain(|p| *p != 0);
            AllowSpec {
                family,
                protocol,
                sources: sources.to_vec(),
                ports,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table of Services → their NSG wish: (annotations, spec, addresses, expected sources and ports of the
    /// allow rules, destinations, families denied).
    #[test]
    fn service_wish_table() {
        use crate::loadbalancer::annotations::parse;
        use k8s_openapi::api::core::v1::Service;
        type Case = (
            serde_json::Value,
            serde_json::Value,
            Vec<&'static str>,
            Vec<(Vec<&'static str>, &'static str, Vec<i32>)>,
            Vec<&'static str>,
            usize,
        );
        let v4 = |a: &str| (Family::V4, a.to_string());
        let cases: Vec<Case> = vec![
            // External: from the Internet to the frontend address on the service port.
            (
                json!({}),
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec!["20.0.0.1"],
                vec![(vec!["Internet"], "Tcp", vec![80])],
                vec!["20.0.0.1"],
                0,
            ),
            // Internal: no Internet rule.
            (
                json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}),
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec!["10.240.0.9"],
                vec![],
                vec!["10.240.0.9"],
                0,
            ),
            // Source ranges with deny-all: the ranges only, and a deny rule.
            (
                json!({"service.beta.kubernetes.io/azure-deny-all-except-load-balancer-source-ranges": "true"}),
                json!({"ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}], "loadBalancerSourceRanges": ["1.2.3.0/24"]}),
                vec!["20.0.0.2"],
                vec![(vec!["1.2.3.0/24"], "Tcp", vec![443])],
                vec!["20.0.0.2"],
                1,
            ),
            // Floating IP off: node ports, to the nodes' addresses as well.
            (
                json!({"service.beta.kubernetes.io/azure-disable-load-balancer-floating-ip": "true"}),
                json!({"ports": [{"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
                vec!["20.0.0.3"],
                vec![(vec!["Internet"], "Udp", vec![30053])],
                vec!["20.0.0.3", "10.240.0.4"],
                0,
            ),
            // NSG rules disabled: nothing allowed, addresses still tracked.
            (
                json!({"service.beta.kubernetes.io/azure-disable-load-balancer-nsg-rule": "true"}),
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec!["20.0.0.4"],
                vec![],
                vec!["20.0.0.4"],
                0,
            ),
        ];
        for (ann, spec, addrs, want_allow, want_dest, denied) in cases {
            let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "default", "uid": "u", "annotations": ann}, "spec": spec})).unwrap();
            let (lb, _) = parse(&svc).unwrap();
            let addresses: Vec<(Family, String)> = addrs.iter().map(|a| v4(a)).collect();
            let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
            let w = service_wish(
                &ports,
                &lb,
                "abc",
                &addresses,
                &[v4("10.240.0.4")],
                vec!["20.9.9.9".into()],
            );
            let allow: Vec<(Vec<String>, &str, Vec<i32>)> = w
                .allow
                .iter()
                .map(|a| (a.sources.clone(), a.protocol, a.ports.clone()))
                .collect();
            let want: Vec<(Vec<String>, &str, Vec<i32>)> = want_allow
                .into_iter()
                .map(|(s, proto, p)| (s.into_iter().map(String::from).collect(), proto, p))
                .collect();
            assert_eq!(allow, want, "{svc:?}");
            let dest: Vec<&str> = w.destinations.iter().map(|(_, a)| a.as_str()).collect();
            assert_eq!(dest, want_dest);
            assert_eq!(w.deny_all.len(), denied);
            assert!(
                w.remove.contains(&"20.9.9.9".to_string()),
                "the status's old addresses are removed"
            );
        }
    }

    fn internet(ports: &[i32]) -> NsgWish {
        NsgWish {
            remove: vec![],
            destinations: vec![],
            allow: vec![AllowSpec {
                family: Family::V4,
                protocol: "Tcp",
                sources: vec!["Internet".into()],
                ports: ports.to_vec(),
            }],
            deny_all: vec![],
            base: String::new(),
            shared: BTreeMap::new(),
        }
    }

    fn with_dst(mut w: NsgWish, ip: &str) -> NsgWish {
        w.destinations = vec![(Family::V4, ip.into())];
        w
    }

    fn dsts(rules: &[Value], i: usize) -> Vec<String> {
        multi(&rules[i], "destinationAddressPrefix", "destinationAddressPrefixes")
    }

    #[test]
    fn services_with_the_same_access_share_one_rule() {
        let mut rules = Vec::new();
        assert_eq!(
            apply(&mut rules, "nsg", &with_dst(internet(&[80]), "1.1.1.1")),
            Ok(true)
        );
        assert_eq!(
            apply(&mut rules, "nsg", &with_dst(internet(&[80]), "2.2.2.2")),
            Ok(true)
        );
        assert_eq!(
            apply(&mut rules, "nsg", &with_dst(internet(&[80]), "2.2.2.2")),
            Ok(false),
            "idempotent"
        );
        assert_eq!(rules.len(), 1);
        assert_eq!(dsts(&rules, 0), ["1.1.1.1", "2.2.2.2"]);
        assert_eq!(
            name_of(&rules[0]),
            allow_security_rule_name(Family::V4, "Tcp", &["Internet".into()], &[80])
        );
        assert_eq!(priority(&rules[0]), 500);
        assert_eq!(rules[0]["properties"]["destinationPortRange"], "80");
        // Another port set: a second rule at the next priority.
        apply(&mut rules, "nsg", &with_dst(internet(&[443, 80]), "3.3.3.3")).unwrap();
        assert_eq!((rules.len(), priority(&rules[1])), (2, 501));
        assert_eq!(rules[1]["properties"]["destinationPortRanges"], json!(["443", "80"]));
    }

    #[test]
    fn removal_drops_the_address_and_then_the_empty_rule() {
        let mut rules = Vec::new();
        apply(&mut rules, "nsg", &with_dst(internet(&[80]), "1.1.1.1")).unwrap();
        apply(&mut rules, "nsg", &with_dst(internet(&[80]), "2.2.2.2")).unwrap();
        let gone = |ip: &str| NsgWish {
            remove: vec![ip.into()],
            ..Default::default()
        };
        assert_eq!(apply(&mut rules, "nsg", &gone("1.1.1.1")), Ok(true));
        assert_eq!(dsts(&rules, 0), ["2.2.2.2"]);
        assert_eq!(apply(&mut rules, "nsg", &gone("2.2.2.2")), Ok(true));
        assert!(rules.is_empty());
        assert_eq!(apply(&mut rules, "nsg", &gone("2.2.2.2")), Ok(false));
    }

    #[test]
    fn changing_sources_moves_the_address_between_rules() {
        let mut rules = Vec::new();
        apply(&mut rules, "nsg", &with_dst(internet(&[80]), "1.1.1.1")).unwrap();
        let mut w = with_dst(internet(&[80]), "1.1.1.1");
        w.allow[0].sources = vec!["10.0.0.0/8".into()];
        w.deny_all = vec![Family::V4];
        apply(&mut rules, "nsg", &w).unwrap();
        assert_eq!(rules.len(), 2, "old rule gone, new allow + deny-all");
        assert_eq!(rules[0]["properties"]["sourceAddressPrefix"], "10.0.0.0/8");
        assert_eq!(name_of(&rules[1]), "k8s-azure-lb_deny-all_IPv4");
        assert_eq!(priority(&rules[1]), 4095);
        assert_eq!(rules[1]["properties"]["access"], "Deny");
    }

    #[test]
    fn foreign_rules_are_kept_and_their_priorities_avoided() {
        let mut rules = vec![
            json!({"name": "ssh", "properties": {"priority": 500, "direction": "Inbound", "destinationAddressPrefix": "1.1.1.1"}}),
        ];
        apply(&mut rules, "nsg", &with_dst(internet(&[80]), "1.1.1.1")).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(priority(&rules[1]), 501);
        assert_eq!(name_of(&rules[0]), "ssh", "never touched, even with the same address");
    }

    #[test]
    fn legacy_rules_are_migrated() {
        let mut rules = vec![
            json!({"name": "abase-TCP-80-Internet", "properties": {"priority": 500, "destinationAddressPrefix": "1.1.1.1"}}),
            json!({"name": "shared-TCP-80-Internet", "properties": {"priority": 501, "destinationAddressPrefixes": ["1.1.1.1", "9.9.9.9"]}}),
        ];
        let mut w = with_dst(internet(&[80]), "1.1.1.1");
        w.base = "abase".into();
        apply(&mut rules, "nsg", &w).unwrap();
        let names: Vec<&str> = rules.iter().map(name_of).collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0], "shared-TCP-80-Internet");
        assert_eq!(dsts(&rules, 0), ["9.9.9.9"]);
        assert!(names[1].starts_with("k8s-azure-lb_allow_IPv4_"));
        assert_eq!(priority(&rules[1]), 500, "the freed priority is reused");
    }

    #[test]
    fn no_free_priority_is_an_error() {
        let mut rules: Vec<Value> = (PRIORITY_MIN..PRIORITY_MAX)
            .map(|p| json!({"name": format!("r{p}"), "properties": {"priority": p}}))
            .collect();
        let e = apply(&mut rules, "nsg", &with_dst(internet(&[80]), "1.1.1.1")).unwrap_err();
        assert!(e.to_string().contains("no free priority"));
    }

    #[test]
    fn allow_specs_group_ports_by_protocol() {
        let s = allow_specs(
            Family::V4,
            &["Internet".into()],
            &[("Tcp", 443), ("Udp", 53), ("Tcp", 80)],
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].protocol, s[0].ports.clone()), ("Tcp", vec![80, 443]));
        assert_eq!((s[1].protocol, s[1].ports.clone()), ("Udp", vec![53]));
        assert!(allow_specs(Family::V4, &[], &[("Tcp", 80)]).is_empty());
        let ha = allow_specs(Family::V4, &["Internet".into()], &[("*", 0)]);
        assert!(ha[0].ports.is_empty(), "HA ports: all ports");
    }
}
