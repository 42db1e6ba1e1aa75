//! node-ipam through the CCM process against kube-sim and azure-sim: allocation, routing of the allocated
//! CIDRs, exhaustion (event, no crash), release on deletion, and a restart that hands out nothing twice.

mod common;

use common::{eventually, Ccm};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

fn start(env: &common::Env, log: &str) -> Ccm {
    env.spawn_logged(
        common::ccm(&env.config, &env.kubeconfig).args([
            "--controllers=node-ipam,route",
            "--allocate-node-cidrs=true",
            "--configure-cloud-routes=true",
            // Two /24s only, so the third node finds the range exhausted.
            "--cluster-cidr=10.244.0.0/23",
            "--node-cidr-mask-size=24",
            "--route-reconciliation-period=300ms",
            "--leader-elect=false",
            "--secure-port=0",
        ]),
        log,
    )
}

async fn add_node(nodes: &Api<Node>, name: &str, pod_cidr: Option<&str>) {
    let mut node = json!({"metadata": {"name": name}, "spec": {}});
    if let Some(c) = pod_cidr {
        node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    nodes
        .create(&PostParams::default(), &serde_json::from_value(node).unwrap())
        .await
        .unwrap();
}

async fn cidr_of(nodes: &Api<Node>, name: &str) -> Option<String> {
    nodes
        .get(name)
        .await
        .ok()?
        .spec?
        .pod_cidrs
        .and_then(|c| c.first().cloned())
}

/// No two Nodes hold the same CIDR.
async fn assert_unique(nodes: &Api<Node>) {
    let all = nodes.list(&ListParams::default()).await.unwrap();
    let mut seen = HashSet::new();
    for n in all.items {
        for c in n.spec.and_then(|s| s.pod_cidrs).unwrap_or_default() {
            assert!(seen.insert(c.clone()), "{c} handed out twice");
        }
    }
}

#[tokio::test]
async fn allocates_routes_exhausts_releases_and_survives_a_restart() {
    let env = common::env(json!({})).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    // A Node that already holds a CIDR (from before a restart, or set by hand): never handed out again.
    add_node(&nodes, "k8s-pool2-0", Some("10.244.0.0/24")).await;
    let mut ccm = start(&env, "ccm1.log");
    add_node(&nodes, "k8s-pool2-1", None).await;
    let got = eventually("a CIDR for k8s-pool2-1", Duration::from_secs(20), || {
        cidr_of(&nodes, "k8s-pool2-1")
    })
    .await;
    assert_eq!(got, "10.244.1.0/24");
    let n = nodes.get("k8s-pool2-1").await.unwrap();
    assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.244.1.0/24"));
    // The route controller routes what node-ipam allocated.
    let rt = env.sim.cluster().id(
        "Microsoft.Network",
        &format!("routeTables/{}", env.sim.cluster().route_table),
    );
    eventually("a route for k8s-pool2-1", Duration::from_secs(20), || async {
        let table = env.sim.resource(&rt)?;
        table["properties"]["routes"]
            .as_array()?
            .iter()
            .any(|r| r["properties"]["addressPrefix"] == "10.244.1.0/24")
            .then_some(())
    })
    .await;

    // Exhausted: a Warning event on the Node, no CIDR, and the CCM keeps running.
    add_node(&nodes, "k8s-pool1-vmss000000", None).await;
    common::event_about(
        &env.client,
        "CIDRNotAvailable",
        "k8s-pool1-vmss000000",
        Duration::from_secs(20),
    )
    .await;
    assert!(ccm.0.try_wait().unwrap().is_none(), "the CCM exited on exhaustion");
    assert_eq!(cidr_of(&nodes, "k8s-pool1-vmss000000").await, None);

    // Deleting a Node releases its CIDR, and the waiting Node gets it.
    nodes.delete("k8s-pool2-1", &DeleteParams::default()).await.unwrap();
    let got = eventually("the released CIDR reused", Duration::from_secs(20), || {
        cidr_of(&nodes, "k8s-pool1-vmss000000")
    })
    .await;
    assert_eq!(got, "10.244.1.0/24");
    assert_unique(&nodes).await;

    // A restart rebuilds from the Nodes: the range is still full, so a new Node waits (nothing twice).
    drop(ccm);
    let ccm2 = start(&env, "ccm2.log");
    add_node(&nodes, "k8s-pool1-vmss000001", None).await;
    common::event_about(
        &env.client,
        "CIDRNotAvailable",
        "k8s-pool1-vmss000001",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(cidr_of(&nodes, "k8s-pool1-vmss000001").await, None);
    assert_unique(&nodes).await;
    drop(ccm2);
}

#[test]
fn wrong_ipam_flags_stop_the_manager_with_the_flag_named() {
    for (flags, want) in [
        (
            vec!["--cluster-cidr=10.244.0.0/16", "--cidr-allocator-type=CloudAllocator"],
            "--cidr-allocator-type",
        ),
        (
            vec!["--cluster-cidr=10.244.0.0/16,fd00::/56", "--node-cidr-mask-size=24"],
            "--node-cidr-mask-size",
        ),
        (vec!["--cluster-cidr=", "--node-cidr-mask-size=24"], "--cluster-cidr"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("azure.json");
        std::fs::write(&config, r#"{"useInstanceMetadata": true}"#).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
            .arg(format!("--cloud-config={}", config.display()))
            .args(["--allocate-node-cidrs=true", "--check-config"])
            .args(&flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}

/// A route ARM refuses: upstream's `FailedToCreateRoute` Warning on the node, `NetworkUnavailable` stays True.
#[tokio::test]
async fn a_route_that_cannot_be_created_is_reported_on_the_node() {
    use azure_sim::faults::{FaultKind, FaultRule};
    let env = common::env(json!({})).await;
    env.sim.set_faults(vec![FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("routeTables".into()),
        fault: FaultKind::Status { status: 400 },
        rate: 1.0,
        count: None,
    }]);
    let nodes: Api<Node> = Api::all(env.client.clone());
    add_node(&nodes, "k8s-pool2-0", Some("10.244.0.0/24")).await;
    let _ccm = env.spawn_logged(
        common::ccm(&env.config, &env.kubeconfig).args([
            "--controllers=route",
            "--allocate-node-cidrs=true",
            "--configure-cloud-routes=true",
            "--cluster-cidr=10.244.0.0/16",
            "--route-reconciliation-period=300ms",
            "--leader-elect=false",
            "--secure-port=0",
        ]),
        "route.log",
    );
    let e = common::event_about(
        &env.client,
        "FailedToCreateRoute",
        "k8s-pool2-0",
        Duration::from_secs(30),
    )
    .await;
    let note = e.note.unwrap_or_default();
    assert!(
        note.contains("10.244.0.0/24") && note.starts_with("Could not create route"),
        "{note}"
    );
    let n = nodes.get("k8s-pool2-0").await.unwrap();
    let cond = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable")
        .expect("NetworkUnavailable");
    assert_eq!(cond.status, "True");
}
