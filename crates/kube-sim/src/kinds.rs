//! The kinds kube-sim serves and their discovery documents.

use serde_json::{json, Value};

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Short names for kubectl.
    pub short: &'static [&'static str],
}

impl Kind {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every kind served.
pub const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        status: true,
        short: &["no"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        status: true,
        short: &["svc"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        status: false,
        short: &["ep"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status: false,
        short: &["ev"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        status: false,
        short: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        status: false,
        short: &["cm"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        status: true,
        short: &["ns"],
    },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        status: false,
        short: &[],
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status: false,
        short: &["ev"],
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status: false,
        short: &[],
    },
];

/// The kind of `(group, version, plural)`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in KINDS.iter().filter(|k| k.group == group && k.version == version) {
        resources.push(
            json!({"name": k.plural, "singularName": k.kind.to_ascii_lowercase(), "namespaced": k.namespaced,
            "kind": k.kind, "verbs": VERBS, "shortNames": k.short}),
        );
        if k.status {
            resources.push(
                json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

/// `/api/v1` or `/apis/{group}/{version}`; `None` for an unknown group version.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    KINDS
        .iter()
        .any(|k| k.group == group && k.version == version)
        .then(|| resource_list(group, version))
}

/// `/apis`.
pub fn groups() -> Value {
    let mut seen = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !seen.contains(&k.group) {
            seen.push(k.group);
        }
    }
    let groups: Vec<Value> = seen
        .iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
