//! Which nodes join the load balancers' backend pools (upstream `ShouldNodeExcludedFromLoadBalancer`,
//! `isControlPlaneNode`), and the address list of a `nodeIP` backend pool. Pure, table-tested.

use crate::config::CloudConfig;
use k8s_openapi::api::core::v1::Node;

/// Node label excluding a node from external load balancers (key presence).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Node label marking unmanaged (e.g. on-premises) nodes when `false`.
pub const MANAGED_LABEL: &str = "kubernetes.azure.com/managed";
/// Node label naming the node's resource group.
pub const RESOURCE_GROUP_LABEL: &str = "kubernetes.azure.com/resource-group";

/// Why a node is not a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    Labelled,
    /// `kubernetes.azure.com/managed=false`.
    Unmanaged,
    /// In another resource group than the cluster's.
    OtherResourceGroup,
    /// A control-plane node with `excludeMasterFromStandardLB`.
    ControlPlane,
    /// Being deleted.
    Deleting,
}

/// True for control-plane nodes (upstream labels).
pub fn is_control_plane(node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let has = |k: &str| labels.is_some_and(|l| l.contains_key(k));
    has("node-role.kubernetes.io/control-plane")
        || has("node-role.kubernetes.io/master")
        || labels
            .and_then(|l| l.get("kubernetes.io/role"))
            .is_some_and(|v| v == "master")
}

/// Why `node` must stay out of backend pools, or `None` when it is a backend.
pub fn exclusion(node: &Node, cfg: &CloudConfig) -> Option<Exclusion> {
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if node.metadata.deletion_timestamp.is_some() {
        return Some(Exclusion::Deleting);
    }
    if labels.is_some_and(|l| l.contains_key(EXCLUDE_LABEL)) {
        return Some(Exclusion::Labelled);
    }
    if label(MANAGED_LABEL) == Some("false") {
        return Some(Exclusion::Unmanaged);
    }
    if label(RESOURCE_GROUP_LABEL).is_some_and(|rg| !rg.eq_ignore_ascii_case(&cfg.resource_group)) {
        return Some(Exclusion::OtherResourceGroup);
    }
    if cfg.is_standard_sku() && cfg.exclude_master_from_standard_lb.unwrap_or(true) && is_control_plane(node) {
        return Some(Exclusion::ControlPlane);
    }
    None
}

/// The backends among `nodes`.
pub fn eligible<'a>(nodes: &'a [Node], cfg: &CloudConfig) -> Vec<&'a Node> {
    nodes.iter().filter(|n| exclusion(n, cfg).is_none()).collect()
}

/// The `loadBalancerBackendAddresses` of a `nodeIP` pool: one `(node name, IP)` per node, sorted by node, so
/// an unchanged node set plans an identical pool (and no write).
pub fn node_ip_pool_addresses(nodes: &[(String, Option<String>)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = nodes
        .iter()
        .filter_map(|(n, ip)| Some((n.clone(), ip.clone()?)))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(extra: &str) -> CloudConfig {
        CloudConfig::parse(
            &format!(r#"{{"useInstanceMetadata":true,"resourceGroup":"RG"{extra}}}"#),
            &|_| None,
        )
        .unwrap()
        .0
    }

    fn node(labels: serde_json::Value, deleting: bool) -> Node {
        let mut m = json!({"name": "n", "labels": labels});
        if deleting {
            m["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({"metadata": m})).unwrap()
    }

    #[test]
    fn exclusions_table() {
        let std = cfg("");
        let cases = [
            (json!({}), false, None),
            (json!({EXCLUDE_LABEL: ""}), false, Some(Exclusion::Labelled)),
            (json!({MANAGED_LABEL: "false"}), false, Some(Exclusion::Unmanaged)),
            (json!({MANAGED_LABEL: "true"}), false, None),
            (
                json!({RESOURCE_GROUP_LABEL: "other"}),
                false,
                Some(Exclusion::OtherResourceGroup),
            ),
            (json!({RESOURCE_GROUP_LABEL: "rg"}), false, None),
            (
                json!({"node-role.kubernetes.io/control-plane": ""}),
                false,
                Some(Exclusion::ControlPlane),
            ),
            (
                json!({"node-role.kubernetes.io/master": ""}),
                false,
                Some(Exclusion::ControlPlane),
            ),
            (
                json!({"kubernetes.io/role": "master"}),
                false,
                Some(Exclusion::ControlPlane),
            ),
            (json!({"kubernetes.io/role": "agent"}), false, None),
            (json!({}), true, Some(Exclusion::Deleting)),
        ];
        for (labels, deleting, want) in cases {
            assert_eq!(exclusion(&node(labels.clone(), deleting), &std), want, "{labels}");
        }
        // Control-plane nodes are backends on basic SKU, or when excludeMasterFromStandardLB is false.
        let cp = node(json!({"node-role.kubernetes.io/control-plane": ""}), false);
        assert_eq!(exclusion(&cp, &cfg(r#","loadBalancerSku":"basic""#)), None);
        assert_eq!(exclusion(&cp, &cfg(r#","excludeMasterFromStandardLB":false"#)), None);
        let nodes = vec![node(json!({}), false), cp];
        assert_eq!(eligible(&nodes, &std).len(), 1);
    }

    #[test]
    fn pool_addresses_are_stable() {
        let a = node_ip_pool_addresses(&[
            ("b".into(), Some("10.0.0.5".into())),
            ("a".into(), Some("10.0.0.4".into())),
            ("c".into(), None),
        ]);
        assert_eq!(
            a,
            vec![
                ("a".to_string(), "10.0.0.4".to_string()),
                ("b".to_string(), "10.0.0.5".to_string())
            ]
        );
    }
}
