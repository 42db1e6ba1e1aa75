//! Private Link Services on internal load-balancer frontends (upstream's `azure_privatelinkservice.go`),
//! planned purely: the name, the IP configurations (names `<subnet>-<pls>-static-<ip>` /
//! `<subnet>-<pls>-dynamic-<i>`, at most 80 characters), proxy protocol, FQDNs, visibility, auto-approval and
//! tags upstream would write, and whether the existing service differs (only then is it written).

use super::annotations::PlsSpec;
use super::frontend::CLUSTER_TAG;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The tag naming the Service that owns a Private Link Service (upstream's `k8s-azure-owner-service`).
pub const OWNER_SERVICE_TAG: &str = "k8s-azure-owner-service";
/// Longest IP-configuration name Azure accepts.
const IP_CONFIG_NAME_MAX: usize = 80;

/// What a Private Link Service is planned from besides its annotations.
#[derive(Debug, Clone)]
pub struct PlsContext<'a> {
    /// Region.
    pub location: &'a str,
    /// `--cluster-name`.
    pub cluster: &'a str,
    /// The owning Service, `namespace/name`.
    pub service_key: &'a str,
    /// The load-balancer frontend it serves.
    pub frontend_id: &'a str,
    /// That frontend's name (the default PLS name is `pls-<frontend>`).
    pub frontend_name: &'a str,
    /// Subnet of its IP configurations.
    pub subnet_id: &'a str,
    /// That subnet's name (IP-configuration names start with it).
    pub subnet_name: &'a str,
    /// `tags` + `tagsMap`.
    pub config_tags: &'a BTreeMap<String, String>,
    /// `systemTags`.
    pub system_tags: &'a [String],
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// The service's name: `azure-pls-name`, else the existing one's, else `pls-<frontend>`. Renaming an
/// existing Private Link Service is refused, as upstream.
pub fn pls_name(existing: Option<&Value>, spec: &PlsSpec, frontend_name: &str) -> Result<String, String> {
    let current = existing.and_then(|p| s(p, "/name"));
    match (&spec.name, current) {
        (Some(want), Some(cur)) if !want.eq_ignore_ascii_case(cur) => Err(format!(
            "cannot rename the existing private link service {cur} to {want} (azure-pls-name)"
        )),
        (Some(want), _) => Ok(want.clone()),
        (None, Some(cur)) => Ok(cur.to_string()),
        (None, None) => Ok(format!("pls-{frontend_name}")),
    }
}

/// The IP configurations upstream writes: the static addresses first (the first one listed is primary),
/// then dynamic ones up to the count (the first primary when there is no static one).
fn ip_configurations(spec: &PlsSpec, name: &str, ctx: &PlsContext<'_>) -> Vec<Value> {
    let config_name = |suffix: String| {
        let max_prefix = IP_CONFIG_NAME_MAX.saturating_sub(suffix.len());
        let prefix: String = format!("{}-{name}", ctx.subnet_name).chars().take(max_prefix).collect();
        format!("{prefix}{suffix}")
    };
    let primary = spec.static_ips.first();
    let mut out: Vec<Value> = spec
        .static_ips
        .iter()
        .map(|ip| {
            json!({
                "name": config_name(format!("-static-{ip}")),
                "properties": {
                    "privateIPAddress": ip,
                    "privateIPAllocationMethod": "Static",
                    "subnet": {"id": ctx.subnet_id},
                    "primary": Some(ip) == primary,
                    "privateIPAddressVersion": "IPv4",
                },
            })
        })
        .collect();
    for i in 0..usize::from(spec.ip_count).saturating_sub(spec.static_ips.len()) {
        out.push(json!({
            "name": config_name(format!("-dynamic-{i}")),
            "properties": {
                "privateIPAllocationMethod": "Dynamic",
                "subnet": {"id": ctx.subnet_id},
                "primary": primary.is_none() && i == 0,
                "privateIPAddressVersion": "IPv4",
            },
        }));
    }
    out
}

/// True when the existing IP configurations are not what `spec` asks for (count, subnet, static addresses,
/// primary), upstream's `reconcilePLSIpConfigs` test.
fn ip_configurations_differ(existing: &[Value], spec: &PlsSpec, subnet_id: &str) -> bool {
    if existing.len() != usize::from(spec.ip_count) {
        return true;
    }
    let mut statics = Vec::new();
    for c in existing {
        if !s(c, "/properties/subnet/id").is_some_and(|id| id.eq_ignore_ascii_case(subnet_id)) {
            return true;
        }
        let is_static = s(c, "/properties/privateIPAllocationMethod").is_some_and(|m| m.eq_ignore_ascii_case("Static"));
        let ip = s(c, "/properties/privateIPAddress").unwrap_or_default().to_string();
        if is_static {
            if !spec.static_ips.contains(&ip) {
                return true;
            }
            statics.push(ip.clone());
        }
        if c.pointer("/properties/primary").and_then(Value::as_bool) == Some(true) {
            let want_primary = spec.static_ips.first();
            match (is_static, want_primary) {
                (true, Some(p)) if *p != ip => return true,
                (false, Some(_)) => return true,
                _ => {}
            }
        }
    }
    statics.len() != spec.static_ips.len()
}

/// The Private Link Service to write and whether it differs from `existing` (a new one always does).
pub fn expected_pls(existing: Option<&Value>, name: &str, spec: &PlsSpec, ctx: &PlsContext<'_>) -> (Value, bool) {
    let mut pls = existing.cloned().unwrap_or_else(|| {
        json!({
            "location": ctx.location,
            "properties": {"loadBalancerFrontendIpConfigurations": [{"id": ctx.frontend_id}]},
        })
    });
    let mut dirty = existing.is_none();
    if s(&pls, "/name") != Some(name) {
        pls["name"] = json!(name);
        dirty = true;
    }
    if s(&pls, "/properties/provisioningState").is_some_and(|p| p.eq_ignore_ascii_case("Failed")) {
        dirty = true; // retried, as upstream
    }
    let props = &mut pls["properties"];
    let current_ipcs = props
        .get("ipConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ip_configurations_differ(&current_ipcs, spec, ctx.subnet_id) {
        props["ipConfigurations"] = json!(ip_configurations(spec, name, ctx));
        dirty = true;
    }
    let proxy = props
        .get("enableProxyProtocol")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if proxy != spec.proxy_protocol {
        props["enableProxyProtocol"] = json!(spec.proxy_protocol);
        dirty = true;
    }
    if !same_set(&strings(props.get("fqdns")), &spec.fqdns) {
        props["fqdns"] = json!(spec.fqdns);
        dirty = true;
    }
    let visibility = strings(props.pointer("/visibility/subscriptions"));
    let approval = strings(props.pointer("/autoApproval/subscriptions"));
    if !same_set(&visibility, &spec.visibility) || !same_set(&approval, &spec.auto_approval) {
        props["visibility"] = json!({"subscriptions": spec.visibility});
        props["autoApproval"] = json!({"subscriptions": spec.auto_approval});
        dirty = true;
    }
    // Tags: the config's, plus the cluster and owner tags (an existing value of those is kept).
    let current: BTreeMap<String, String> = pls
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let mut wanted = ctx.config_tags.clone();
    for (k, v) in [(CLUSTER_TAG, ctx.cluster), (OWNER_SERVICE_TAG, ctx.service_key)] {
        let kept = current
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone());
        wanted.insert(k.to_string(), kept.unwrap_or_else(|| v.to_string()));
    }
    if let Some(t) = crate::config::reconcile_tags(&current, &wanted, ctx.system_tags, |_| false) {
        pls["tags"] = json!(t);
        dirty = true;
    }
    (pls, dirty)
}

/// The frontend a Private Link Service serves.
pub fn frontend_of(pls: &Value) -> Option<&str> {
    s(pls, "/properties/loadBalancerFrontendIpConfigurations/0/id")
}

/// True when the Private Link Service carries this cluster's tag (others are never touched).
pub fn managed_by(pls: &Value, cluster: &str) -> bool {
    tag(pls, CLUSTER_TAG).is_some_and(|c| c.trim().eq_ignore_ascii_case(cluster))
}

/// The owning Service (`namespace/name`) from the tags.
pub fn owner(pls: &Value) -> Option<&str> {
    tag(pls, OWNER_SERVICE_TAG)
}

fn tag<'a>(pls: &'a Value, key: &str) -> Option<&'a str> {
    pls.get("tags")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(tags: &'a BTreeMap<String, String>) -> PlsContext<'a> {
        PlsContext {
            location: "eastus",
            cluster: "kubernetes",
            service_key: "default/db",
            frontend_id: "/lb/kubernetes-internal/frontendIPConfigurations/abc",
            frontend_name: "abc",
            subnet_id: "/vnet/subnets/nodes",
            subnet_name: "nodes",
            config_tags: tags,
            system_tags: &[],
        }
    }

    #[test]
    fn names_as_upstream() {
        let spec = PlsSpec::default();
        assert_eq!(pls_name(None, &spec, "abc").unwrap(), "pls-abc");
        let named = PlsSpec {
            name: Some("mine".into()),
            ..Default::default()
        };
        assert_eq!(pls_name(None, &named, "abc").unwrap(), "mine");
        let existing = json!({"name": "pls-abc"});
        assert_eq!(pls_name(Some(&existing), &spec, "zzz").unwrap(), "pls-abc");
        assert!(pls_name(Some(&existing), &named, "abc")
            .unwrap_err()
            .contains("cannot rename"));
    }

    #[test]
    fn a_new_service_then_no_change_then_changes() {
        let tags = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let spec = PlsSpec {
            ip_count: 3,
            static_ips: vec!["10.240.0.50".into()],
            fqdns: vec!["db.example".into()],
            visibility: vec!["*".into()],
            ..Default::default()
        };
        let (pls, dirty) = expected_pls(None, "pls-abc", &spec, &ctx(&tags));
        assert!(dirty);
        let names: Vec<&str> = pls["properties"]["ipConfigurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "nodes-pls-abc-static-10.240.0.50",
                "nodes-pls-abc-dynamic-0",
                "nodes-pls-abc-dynamic-1"
            ]
        );
        assert_eq!(pls["properties"]["ipConfigurations"][0]["properties"]["primary"], true);
        assert_eq!(pls["properties"]["ipConfigurations"][1]["properties"]["primary"], false);
        assert_eq!(
            pls["tags"],
            json!({"k8s-azure-cluster-name": "kubernetes", "k8s-azure-owner-service": "default/db", "team": "a"})
        );
        assert_eq!(
            pls["properties"]["loadBalancerFrontendIpConfigurations"][0]["id"],
            ctx(&tags).frontend_id
        );
        // As ARM answers it (addresses filled in): nothing to write.
        let mut written = pls.clone();
        written["properties"]["ipConfigurations"][1]["properties"]["privateIPAddress"] = json!("10.240.0.9");
        written["properties"]["provisioningState"] = json!("Succeeded");
        assert!(!expected_pls(Some(&written), "pls-abc", &spec, &ctx(&tags)).1);
        // A new FQDN, proxy protocol, another count: each is a change.
        for changed in [
            PlsSpec {
                fqdns: vec!["other.example".into()],
                ..spec.clone()
            },
            PlsSpec {
                proxy_protocol: true,
                ..spec.clone()
            },
            PlsSpec {
                ip_count: 2,
                ..spec.clone()
            },
            PlsSpec {
                static_ips: vec!["10.240.0.51".into()],
                ..spec.clone()
            },
        ] {
            assert!(
                expected_pls(Some(&written), "pls-abc", &changed, &ctx(&tags)).1,
                "{changed:?}"
            );
        }
        // A long subnet + name is cut so the configuration name fits 80 characters.
        let long = PlsContext {
            subnet_name: &"s".repeat(70),
            ..ctx(&tags)
        };
        let (pls, _) = expected_pls(
            None,
            "pls-abc",
            &PlsSpec {
                ip_count: 1,
                ..Default::default()
            },
            &long,
        );
        let n = pls["properties"]["ipConfigurations"][0]["name"].as_str().unwrap();
        assert_eq!(n.len(), 80);
        assert!(n.ends_with("-dynamic-0"), "{n}");
    }
}
