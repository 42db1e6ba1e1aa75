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

/// The group-version path of an OpenAPI v3 document: `api/v1` or `apis/<group>/<version>`.
fn openapi_gv_path(k: &Kind) -> String {
    if k.group.is_empty() {
        format!("api/{}", k.version)
    } else {
        format!("apis/{}/{}", k.group, k.version)
    }
}

/// `GET /openapi/v3`: the group-versions with a document each.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for k in KINDS {
        let gv = openapi_gv_path(k);
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=kube-sim")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<group-version>`: the operations of its kinds, each `post`/`put`/`patch` naming its kind
/// (`x-kubernetes-group-version-kind`) and accepting `fieldValidation`, which is how kubectl decides to validate
/// on the server (kube-sim accepts the parameter and does no schema validation). Schemas are open objects.
pub fn openapi_v3_document(gv_path: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| openapi_gv_path(k) == gv_path).collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for k in kinds {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        ]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", k.kind), "x-kubernetes-action": verb,
                   "x-kubernetes-group-version-kind": gvk, "parameters": params,
                   "responses": {"200": {"description": "OK"}}})
        };
        let base = if k.namespaced {
            format!("/{gv_path}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("/{gv_path}/{}", k.plural)
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        schemas.insert(
            format!("io.k8s.kube-sim.{}.{}", k.api_version().replace('/', "."), k.kind),
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk], "additionalProperties": true}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "kube-sim", "version": crate::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
