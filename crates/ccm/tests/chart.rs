//! The Helm chart as an operator switching from upstream uses it: upstream's values file unchanged, rendered
//! by a real `helm` (`helm lint`, `helm template`), and the rendered flags accepted by our binaries.
//!
//! Needs `helm` on PATH or in `$HELM`; `.ci/run` installs one when the machine has none.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/helm/azure-cloud-controller-manager"
);

fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return PathBuf::from(h);
    }
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("helm")).find(|c| c.is_file()));
    found.flatten().unwrap_or_else(|| {
        panic!("helm not found (PATH or $HELM): `bash .ci/run` installs it, or see .ci/install-helm")
    })
}

fn helm_run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm()).args(args).output().expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` with a values file; the rendered documents.
fn render(values: &str, dir: &Path) -> Vec<Value> {
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let f = file.display().to_string();
    let (ok, out, err) = helm_run(&["template", "ccm", CHART, "--namespace", "kube-system", "-f", &f]);
    assert!(ok, "helm template failed: {err}");
    serde_saphyr::from_multiple::<Value>(&out)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn args(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// A values file as an operator running upstream's chart has it: upstream's keys, with values a production
/// cluster sets (a cluster name other than the default, dual-stack pod CIDRs, an explicit image).
const UPSTREAM_VALUES: &str = r#"
infra:
  clusterName: "prod-1"
cloudControllerManager:
  allocateNodeCidrs: "true"
  cloudConfig: "/etc/kubernetes/azure.json"
  clusterCIDR: "10.244.0.0/16,fd00:10:244::/56"
  configureCloudRoutes: "true"
  controllers: "*,-cloud-node"
  imageRepository: "registry.example/oss/kubernetes"
  imageName: "azure-cloud-controller-manager"
  imageTag: "v9.9.9"
  imagePullPolicy: "IfNotPresent"
  kubeAPIQPS: "50.0"
  kubeAPIBurst: "100"
  leaderElect: "true"
  leaderElectResourceLock: "leases"
  logVerbosity: "4"
  replicas: 1
  routeReconciliationPeriod: "10s"
  securePort: 10268
  containerResourceManagement:
    requestsCPU: "100m"
    requestsMem: "128Mi"
    limitsCPU: "4"
    limitsMem: "2Gi"
  federatedTokenPath: "/var/run/secrets/azure/tokens"
cloudNodeManager:
  enabled: true
  imageRepository: "registry.example/oss/kubernetes"
  imageName: "azure-cloud-node-manager"
  imageTag: "v9.9.9"
  useInstanceMetadata: "true"
  waitRoutes: "false"
  logVerbosity: "2"
"#;

#[test]
fn helm_lint_passes() {
    let (ok, out, err) = helm_run(&["lint", "--strict", CHART]);
    assert!(ok, "helm lint: {out}{err}");
}

#[test]
fn upstream_values_render_the_same_flags_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let docs = render(UPSTREAM_VALUES, dir.path());
    let ccm = find(&docs, "Deployment", "cloud-controller-manager");
    let a = args(ccm);
    for want in [
        "--cluster-name=prod-1",
        "--controllers=*,-cloud-node",
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--allocate-node-cidrs=true",
        "--configure-cloud-routes=true",
        "--cloud-config=/etc/kubernetes/azure.json",
        "--cloud-provider=azure",
        "--kube-api-qps=50.0",
        "--kube-api-burst=100",
        "--leader-elect=true",
        "--leader-elect-resource-lock=leases",
        "--route-reconciliation-period=10s",
        "--secure-port=10268",
        "--v=4",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    let c = container(ccm);
    assert_eq!(
        c["image"],
        "registry.example/oss/kubernetes/azure-cloud-controller-manager:v9.9.9"
    );
    assert_eq!(c["command"], serde_json::json!(["cloud-controller-manager"]));
    let pod = &ccm["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "upstream runs the CCM on the host network");
    assert_eq!(ccm["spec"]["replicas"], 1);
    // azure.json from the host, as upstream; the workload-identity token projected where azure.json expects it.
    let vols = pod["volumes"].as_array().unwrap();
    assert!(
        vols.iter().any(|v| v["hostPath"]["path"] == "/etc/kubernetes"),
        "{vols:?}"
    );
    let token = vols.iter().find(|v| v["name"] == "azure-identity-token").unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "api://AzureADTokenExchange"
    );
    let cnm = find(&docs, "DaemonSet", "cloud-node-manager");
    let n = args(cnm);
    for want in [
        "--node-name=$(NODE_NAME)",
        "--use-instance-metadata=true",
        "--wait-routes=false",
    ] {
        assert!(n.iter().any(|x| x == want), "{want} missing from {n:?}");
    }
    assert_eq!(container(cnm)["command"], serde_json::json!(["cloud-node-manager"]));
    assert_eq!(
        container(cnm)["image"],
        "registry.example/oss/kubernetes/azure-cloud-node-manager:v9.9.9"
    );
    find(&docs, "ClusterRole", "cloud-node-manager");
    find(&docs, "ClusterRole", "system:cloud-controller-manager");
}

/// Every flag the chart renders is one the binary accepts (it never exits 2 on the chart's own output).
#[test]
fn rendered_flags_are_accepted_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let docs = render(UPSTREAM_VALUES, dir.path());
    let config = dir.path().join("azure.json");
    std::fs::write(&config, r#"{"useInstanceMetadata": true}"#).unwrap();
    let a: Vec<String> = args(find(&docs, "Deployment", "cloud-controller-manager"))
        .into_iter()
        .map(|x| {
            if x.starts_with("--cloud-config=") {
                format!("--cloud-config={}", config.display())
            } else {
                x
            }
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .args(&a)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{a:?}: {err}");
    // The node agent's flags: parsed (an unknown one exits 2), then it stops at the missing API server (1).
    let n: Vec<String> = args(find(&docs, "DaemonSet", "cloud-node-manager"))
        .into_iter()
        .map(|x| x.replace("$(NODE_NAME)", "node-0"))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .arg("node-manager")
        .args(&n)
        .arg("--kubeconfig=/nonexistent/kubeconfig")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{n:?}: {err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

#[test]
fn unknown_or_misspelt_values_fail_instead_of_being_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for (values, key) in [
        ("infra:\n  clusterNme: prod-1\n", "clusterNme"),
        (
            "cloudControllerManager:\n  concurrentServiceSync: 5\n",
            "concurrentServiceSync",
        ),
        ("clusterName: prod-1\n", "clusterName"),
        (
            "cloudNodeManager:\n  enableHealthProbeProxy: true\n",
            "enableHealthProbeProxy",
        ),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, values).unwrap();
        let f = file.display().to_string();
        let (ok, _, err) = helm_run(&["template", "ccm", CHART, "-f", &f]);
        assert!(!ok, "{values} was accepted");
        assert!(err.contains(key), "{key} not named: {err}");
    }
}

#[test]
fn defaults_are_upstreams_where_a_switch_depends_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let docs = render("{}\n", dir.path());
    let a = args(find(&docs, "Deployment", "cloud-controller-manager"));
    for want in [
        "--cluster-name=kubernetes",
        "--controllers=*,-cloud-node",
        "--cluster-cidr=10.244.0.0/16",
        "--cloud-config=/etc/kubernetes/azure.json",
        "--secure-port=10268",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    // Disabling the node manager renders no DaemonSet (and no RBAC for it).
    let docs = render("cloudNodeManager:\n  enabled: false\n", dir.path());
    assert!(!docs.iter().any(|d| d["kind"] == "DaemonSet"));
    assert!(!docs.iter().any(|d| d["metadata"]["name"] == "cloud-node-manager"));
}
