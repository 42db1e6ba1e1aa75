//! The per-node agent (`cloud-node-manager`) as a DaemonSet runs it: the binary invoked under that name,
//! upstream's flags, its own Node in kube-sim, azure-sim's instance metadata service.

mod common;

use common::{eventually, Ccm};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

async fn add_tainted_node(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"taints": [{"key": TAINT, "value": "true", "effect": "NoSchedule"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

fn tainted(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

/// The binary linked as `cloud-node-manager` (as the image ships it) with upstream's DaemonSet flags.
fn node_manager(env: &common::Env, node: &str, extra: &[&str]) -> Ccm {
    let link = env.dir.path().join("cloud-node-manager");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"), &link).unwrap();
    }
    env.spawn_logged(
        std::process::Command::new(&link)
            .arg(format!("--node-name={node}"))
            .arg(format!("--kubeconfig={}", env.kubeconfig.display()))
            .arg(format!("--imds-endpoint={}", env.sim.url()))
            .args(["--kube-api-qps=50", "--node-status-update-frequency=1s", "--v=4"])
            .args(extra)
            // The simulator's CA, as a Go agent would trust it.
            .env("SSL_CERT_FILE", env.config.with_extension("ca.pem")),
        &format!("{node}.log"),
    )
}

#[tokio::test]
async fn initialises_its_own_node_from_instance_metadata_without_arm_calls() {
    let env = common::env(json!({})).await;
    let ss = env
        .sim
        .cluster()
        .id("Microsoft.Compute", "virtualMachineScaleSets/k8s-pool1-vmss");
    env.sim.set_imds_vm(&format!("{ss}/virtualMachines/1"));
    let nodes: Api<Node> = Api::all(env.client.clone());
    add_tainted_node(&nodes, "k8s-pool1-vmss000001").await;
    add_tainted_node(&nodes, "k8s-pool1-vmss000002").await;
    env.sim.reset_calls();
    let _agent = node_manager(&env, "k8s-pool1-vmss000001", &["--wait-routes=true"]);

    let node = eventually("the agent's node initialised", Duration::from_secs(30), || async {
        nodes.get("k8s-pool1-vmss000001").await.ok().filter(|n| !tainted(n))
    })
    .await;
    let spec = node.spec.clone().unwrap();
    let c = env.sim.cluster();
    assert_eq!(
        spec.provider_id.as_deref(),
        Some(
            format!(
                "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/1",
                c.subscription,
                c.resource_group.to_ascii_lowercase()
            )
            .as_str()
        )
    );
    let labels = node.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("node.kubernetes.io/instance-type", "Standard_D2s_v3"),
        ("topology.kubernetes.io/zone", "eastus-2"),
        ("topology.kubernetes.io/region", "eastus"),
        ("failure-domain.beta.kubernetes.io/zone", "eastus-2"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}: {labels:?}");
    }
    let status = node.status.clone().unwrap();
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses.iter().any(|a| a.type_ == "InternalIP") && addresses.iter().any(|a| a.type_ == "Hostname"),
        "{addresses:?}"
    );
    // --wait-routes: pods wait for the route controller.
    let cond = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable")
        .expect("NetworkUnavailable set");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("True", Some("NodeInitialization"))
    );
    // Only its own Node: the other one is left to its own agent.
    assert!(tainted(&nodes.get("k8s-pool1-vmss000002").await.unwrap()));
    // From IMDS only: not one ARM call.
    let calls = env.sim.calls();
    assert!(calls.iter().any(|c| !c.is_arm()), "IMDS was read: {calls:?}");
    assert_eq!(calls.iter().filter(|c| c.is_arm()).count(), 0, "{calls:?}");
    // The event upstream's agent sends.
    common::event_about(&env.client, "Synced", "k8s-pool1-vmss000001", Duration::from_secs(10)).await;

    // Addresses are kept up to date: a wrong one written by someone else is corrected.
    nodes
        .patch_status(
            "k8s-pool1-vmss000001",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}})),
        )
        .await
        .unwrap();
    eventually("addresses restored", Duration::from_secs(20), || async {
        let n = nodes.get("k8s-pool1-vmss000001").await.ok()?;
        let a = n.status?.addresses?;
        (a.len() > 1 && !a.iter().any(|x| x.address == "192.0.2.1")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn waits_for_its_node_and_retries_until_metadata_answers() {
    let env = common::env(json!({})).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    // IMDS failing (the simulator describing a VM that does not exist answers 404): the agent retries, never
    // exits, and leaves the node tainted.
    let vm = env.sim.cluster().id("Microsoft.Compute", "virtualMachines/k8s-pool2-0");
    env.sim.set_imds_vm(&format!("{vm}-gone"));
    let mut agent = node_manager(&env, "k8s-pool2-0", &[]);
    add_tainted_node(&nodes, "k8s-pool2-0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited");
    assert!(tainted(&nodes.get("k8s-pool2-0").await.unwrap()));
    env.sim.set_imds_vm(&vm);
    let node = eventually("initialised once IMDS answers", Duration::from_secs(40), || async {
        nodes.get("k8s-pool2-0").await.ok().filter(|n| !tainted(n))
    })
    .await;
    let pid = node.spec.unwrap().provider_id.unwrap();
    assert!(
        pid.ends_with("/providers/Microsoft.Compute/virtualMachines/k8s-pool2-0"),
        "{pid}"
    );
}

#[test]
fn upstream_daemonset_flags_are_accepted() {
    // Flags upstream's chart and manifests pass to cloud-node-manager: unknown flags would exit 2 before
    // anything else; a missing API server exits 1 after parsing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .args([
            "node-manager",
            "--node-name=n0",
            "--cloud-config=/etc/kubernetes/azure.json",
            "--kube-api-burst=100",
            "--kube-api-content-type=application/vnd.kubernetes.protobuf",
            "--kube-api-qps=50.0",
            "--kubeconfig=/nonexistent/kubeconfig",
            "--master=https://127.0.0.1:1",
            "--min-resync-period=100m",
            "--node-status-update-frequency=10m",
            "--use-instance-metadata=true",
            "--wait-routes=false",
            "--enable-deprecated-beta-topology-labels=true",
            "--v=2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("kubeconfig"), "{err}");
}
