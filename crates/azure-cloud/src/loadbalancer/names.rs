//! Load-balancer resource names exactly as upstream (cloud-provider-azure, "M"), plus the older names a
//! cluster migrated from the in-tree provider may still carry. Pure functions, table-tested.

/// Azure's name limit for LB child resources and public IPs, less the `-IPv6` suffix (80 − 5).
pub const NAME_MAX_WITHOUT_FAMILY_SUFFIX: usize = 75;
/// The IPv6 suffix of dual-stack resources.
pub const IPV6_SUFFIX: &str = "-IPv6";
/// The suffix of internal load balancers.
pub const INTERNAL_SUFFIX: &str = "-internal";
/// The shared health probe of `clusterServiceLoadBalancerHealthProbeMode: shared`.
pub const SHARED_PROBE_NAME: &str = "cluster-service-shared-health-probe";
/// Prefix of the aggregated NSG rules (upstream ≥ 1.29).
pub const SECURITY_RULE_PREFIX: &str = "k8s-azure-lb";

/// IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// `IPv4` / `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Adds `-IPv6` for the IPv6 resources of a dual-stack service only (upstream `getResourceByIPFamily`).
pub fn by_family(name: &str, dual_stack: bool, family: Family) -> String {
    if dual_stack && family == Family::V6 {
        format!("{name}{IPV6_SUFFIX}")
    } else {
        name.to_string()
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary (upstream cuts bytes; names from Kubernetes
/// objects may hold any UTF-8, and a cut inside a character must not panic).
pub fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The service's base name ("rule prefix"): `a` + UID without dashes, at most 32 characters
/// (k8s.io/cloud-provider `DefaultLoadBalancerName`).
pub fn service_base_name(uid: &str) -> String {
    let mut s: String = format!("a{uid}").chars().filter(|c| *c != '-').collect();
    truncate_bytes(&mut s, 32);
    s
}

/// The LB name: `loadBalancerName` (or the cluster name) when the VM set is the primary one or the cluster
/// uses the single standard LB, else the VM set's name (basic SKU); `-internal` for internal LBs.
pub fn load_balancer_name(
    cluster: &str,
    configured: &str,
    vm_set: Option<&str>,
    primary_vm_set: &str,
    internal: bool,
) -> String {
    let base = match vm_set {
        Some(v) if !v.eq_ignore_ascii_case(primary_vm_set) => v.to_string(),
        _ if !configured.is_empty() => configured.to_string(),
        _ => cluster.to_string(),
    };
    if internal {
        format!("{base}{INTERNAL_SUFFIX}")
    } else {
        base
    }
}

/// The VM set an LB name belongs to (upstream `mapLoadBalancerNameToVMSet`): the name without `-internal`
/// (lower-cased); the cluster's own LB maps to the primary VM set.
pub fn vm_set_of_load_balancer(lb_name: &str, cluster: &str, primary_vm_set: &str) -> String {
    let lower = lb_name.to_ascii_lowercase();
    let trimmed = lower.strip_suffix(INTERNAL_SUFFIX).unwrap_or(&lower);
    if trimmed.eq_ignore_ascii_case(cluster) {
        primary_vm_set.to_string()
    } else {
        trimmed.to_string()
    }
}

/// True for internal LB names.
pub fn is_internal_load_balancer(lb_name: &str) -> bool {
    lb_name.to_ascii_lowercase().ends_with(INTERNAL_SUFFIX)
}

/// Backend pool: the cluster name (`--cluster-name`, not `loadBalancerName`), `-IPv6` for IPv6.
pub fn backend_pool_name(cluster: &str, family: Family) -> String {
    match family {
        Family::V4 => cluster.to_string(),
        Family::V6 => format!("{cluster}{IPV6_SUFFIX}"),
    }
}

/// Frontend IP configuration: the base name; for internal services with a subnet annotation
/// `base-<subnet>` cut to 75 characters (a cut ending in anything but a letter or `_` gets `_`);
/// `-IPv6` for the IPv6 frontend of a dual-stack service.
pub fn frontend_ip_config_name(base: &str, internal_subnet: Option<&str>, dual_stack: bool, family: Family) -> String {
    let name = match internal_subnet {
        Some(subnet) => {
            let mut n = format!("{base}-{subnet}");
            if n.len() > NAME_MAX_WITHOUT_FAMILY_SUFFIX {
                truncate_bytes(&mut n, NAME_MAX_WITHOUT_FAMILY_SUFFIX);
                if !n.ends_with(|c: char| c.is_alphabetic() || c == '_') {
                    n.pop();
                    n.push('_');
                }
            }
            n
        }
        None => base.to_string(),
    };
    by_family(&name, dual_stack, family)
}

/// LB rule (and probe): `base-<PROTO>-<port>`; internal services with a subnet annotation
/// `base-<subnet>-<PROTO>-<port>` with the subnet cut so the name stays within 75 characters.
pub fn rule_name(
    base: &str,
    protocol: &str,
    port: i32,
    internal_subnet: Option<&str>,
    dual_stack: bool,
    family: Family,
) -> String {
    let plain = format!("{base}-{protocol}-{port}");
    let name = match internal_subnet {
        None => plain,
        Some(subnet) => {
            let mut seg = subnet.to_string();
            if plain.len() + seg.len() + 1 > NAME_MAX_WITHOUT_FAMILY_SUFFIX {
                truncate_bytes(&mut seg, NAME_MAX_WITHOUT_FAMILY_SUFFIX.saturating_sub(plain.len() + 1));
            }
            format!("{base}-{seg}-{protocol}-{port}")
        }
    };
    by_family(&name, dual_stack, family)
}

/// The public IP of a service: `<cluster>-<base>` [+ `-<last segment of the PIP prefix id>`], cut to 75,
/// `-IPv6` for the IPv6 address of a dual-stack service.
pub fn public_ip_name(cluster: &str, base: &str, prefix_id: Option<&str>, dual_stack: bool, family: Family) -> String {
    let mut name = format!("{cluster}-{base}");
    if let Some(last) = prefix_id
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
    {
        name.push('-');
        name.push_str(last);
    }
    truncate_bytes(&mut name, NAME_MAX_WITHOUT_FAMILY_SUFFIX);
    by_family(&name, dual_stack, family)
}

/// Aggregated allow rule (upstream ≥ 1.29): `k8s-azure-lb_allow_<IPv4|IPv6>_<md5(proto_sources_ports)>`,
/// sources and ports sorted as strings, protocol `Tcp`, `Udp` or `*`.
pub fn allow_security_rule_name(family: Family, protocol: &str, sources: &[String], ports: &[i32]) -> String {
    let mut src = sources.to_vec();
    src.sort();
    let mut p: Vec<String> = ports.iter().map(i32::to_string).collect();
    p.sort();
    let digest = md5::compute(format!("{protocol}_{}_{}", src.join(","), p.join(",")));
    format!("{SECURITY_RULE_PREFIX}_allow_{}_{digest:x}", family.as_str())
}

/// Deny-all rule (upstream ≥ 1.29).
pub fn deny_all_security_rule_name(family: Family) -> String {
    format!("{SECURITY_RULE_PREFIX}_deny-all_{}", family.as_str())
}

/// The per-port NSG rule name of older versions (in-tree and upstream ≤ 1.28): `<base>-<PROTO>-<port>-<src>`
/// with `/` → `_` and `:` → `.` in the source (`deny_all` for deny rules; `shared` replaces the base for
/// shared rules), `-IPv6` for dual-stack IPv6. Recognised when migrating.
pub fn legacy_security_rule_name(
    base: &str,
    protocol: &str,
    port: i32,
    source: &str,
    dual_stack: bool,
    family: Family,
) -> String {
    let src = source.replace('/', "_").replace(':', ".");
    by_family(&format!("{base}-{protocol}-{port}-{src}"), dual_stack, family)
}

/// Upstream `serviceOwnsRule`: a rule or probe belongs to the service when its name starts with the base
/// name (case-insensitive).
pub fn service_owns(base: &str, name: &str) -> bool {
    name.get(..base.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "e8f4b6a2-1c3d-4e5f-9a8b-7c6d5e4f3a2b";

    #[test]
    fn base_name() {
        assert_eq!(service_base_name(UID), "ae8f4b6a21c3d4e5f9a8b7c6d5e4f3a2");
        assert_eq!(service_base_name(UID).len(), 32);
        assert_eq!(service_base_name("abc"), "aabc");
    }

    #[test]
    fn load_balancers_and_pools() {
        let cases = [
            (("kubernetes", "", None, "pool1", false), "kubernetes"),
            (("kubernetes", "", None, "pool1", true), "kubernetes-internal"),
            (("kubernetes", "mylb", None, "pool1", false), "mylb"),
            (("kubernetes", "", Some("pool1"), "pool1", false), "kubernetes"),
            (("kubernetes", "", Some("POOL1"), "pool1", true), "kubernetes-internal"),
            (("kubernetes", "", Some("pool2"), "pool1", false), "pool2"),
            (("kubernetes", "", Some("pool2"), "pool1", true), "pool2-internal"),
        ];
        for ((c, cfg, vs, primary, internal), want) in cases {
            assert_eq!(load_balancer_name(c, cfg, vs, primary, internal), want);
        }
        assert_eq!(
            vm_set_of_load_balancer("kubernetes-internal", "kubernetes", "pool1"),
            "pool1"
        );
        assert_eq!(
            vm_set_of_load_balancer("Pool2-Internal", "kubernetes", "pool1"),
            "pool2"
        );
        assert!(is_internal_load_balancer("x-INTERNAL"));
        assert_eq!(backend_pool_name("kubernetes", Family::V4), "kubernetes");
        assert_eq!(backend_pool_name("kubernetes", Family::V6), "kubernetes-IPv6");
    }

    #[test]
    fn frontends_rules_and_truncation() {
        let base = service_base_name(UID);
        assert_eq!(frontend_ip_config_name(&base, None, false, Family::V4), base);
        assert_eq!(
            frontend_ip_config_name(&base, None, true, Family::V6),
            format!("{base}-IPv6")
        );
        assert_eq!(
            frontend_ip_config_name(&base, Some("subnet1"), false, Family::V4),
            format!("{base}-subnet1")
        );
        // 32 + 1 + 50 = 83 > 75: cut to 75; the cut ends in a digit → '_'.
        let long = "s".repeat(30) + "-" + &"1".repeat(19);
        let fe = frontend_ip_config_name(&base, Some(&long), false, Family::V4);
        assert_eq!(fe.len(), 75);
        assert!(fe.ends_with('_'), "{fe}");
        let letters = "x".repeat(60);
        let fe = frontend_ip_config_name(&base, Some(&letters), true, Family::V6);
        assert_eq!(fe.len(), 80);
        assert!(fe.ends_with("x-IPv6"));

        assert_eq!(
            rule_name(&base, "TCP", 80, None, false, Family::V4),
            format!("{base}-TCP-80")
        );
        assert_eq!(
            rule_name(&base, "UDP", 53, None, true, Family::V6),
            format!("{base}-UDP-53-IPv6")
        );
        assert_eq!(
            rule_name(&base, "TCP", 443, Some("snet"), false, Family::V4),
            format!("{base}-snet-TCP-443")
        );
        let r = rule_name(&base, "TCP", 443, Some(&"y".repeat(60)), false, Family::V4);
        assert_eq!(r.len(), 75, "{r}");
        assert!(r.ends_with("-TCP-443"));
        assert!(service_owns(&base, &r.to_uppercase()));
        assert!(!service_owns(&base, "other-TCP-80"));
    }

    #[test]
    fn public_ips() {
        let base = service_base_name(UID);
        assert_eq!(
            public_ip_name("kubernetes", &base, None, false, Family::V4),
            format!("kubernetes-{base}")
        );
        assert_eq!(
            public_ip_name(
                "kubernetes",
                &base,
                Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/publicIPPrefixes/pfx1"),
                true,
                Family::V6
            ),
            format!("kubernetes-{base}-pfx1-IPv6")
        );
        let long_cluster = "c".repeat(60);
        let n = public_ip_name(&long_cluster, &base, None, true, Family::V6);
        assert_eq!(n.len(), 80);
        assert!(n.ends_with("-IPv6"));
    }

    #[test]
    fn security_rules() {
        let a = allow_security_rule_name(Family::V4, "Tcp", &["Internet".into()], &[443, 80]);
        let b = allow_security_rule_name(Family::V4, "Tcp", &["Internet".into()], &[80, 443]);
        assert_eq!(a, b, "ports are sorted");
        // md5("Tcp_Internet_443,80") — ports sorted as strings.
        assert_eq!(
            a,
            format!("k8s-azure-lb_allow_IPv4_{:x}", md5::compute("Tcp_Internet_443,80"))
        );
        assert_eq!(deny_all_security_rule_name(Family::V6), "k8s-azure-lb_deny-all_IPv6");
        assert_eq!(
            legacy_security_rule_name("abase", "TCP", 80, "10.0.0.0/8", false, Family::V4),
            "abase-TCP-80-10.0.0.0_8"
        );
        assert_eq!(
            legacy_security_rule_name("abase", "TCP", 80, "fd00::/8", true, Family::V6),
            "abase-TCP-80-fd00.._8-IPv6"
        );
        assert_eq!(
            legacy_security_rule_name("shared", "TCP", 80, "Internet", false, Family::V4),
            "shared-TCP-80-Internet"
        );
    }

    #[test]
    fn cuts_never_split_a_character() {
        // Found by the fuzz suite: a subnet annotation with non-ASCII text panicked the service worker.
        let subnet = "é".repeat(60);
        let n = rule_name(
            "a0123456789abcdef0123456789abcde",
            "TCP",
            80,
            Some(&subnet),
            false,
            Family::V4,
        );
        assert!(n.len() <= NAME_MAX_WITHOUT_FAMILY_SUFFIX + 10, "{n}");
        let f = frontend_ip_config_name("a0123456789abcdef0123456789abcde", Some(&subnet), false, Family::V4);
        assert!(f.len() <= NAME_MAX_WITHOUT_FAMILY_SUFFIX);
        assert!(!service_owns("é", "a"));
        let mut s = "aé".to_string();
        truncate_bytes(&mut s, 2);
        assert_eq!(s, "a");
    }
}
