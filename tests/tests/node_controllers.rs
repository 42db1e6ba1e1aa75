//! The cloud-node and cloud-node-lifecycle controllers against kube-sim (nodes) and azure-sim (VMs):
//! node initialisation, deletion of nodes whose instance is gone, shutdown taints.

use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::SimOptions;
use ccm::controllers::{self, Timing, SHUTDOWN_TAINT, UNINITIALIZED_TAINT};

/// Every Node, as the shared cache hands them to the passes.
async fn all(nodes: &Api<Node>) -> Vec<Arc<Node>> {
    nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(Arc::new)
        .collect()
}
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_sim::KubeSim;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn set_ready(api: &Api<Node>, name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let p = json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&p))
        .await
        .unwrap();
}

/// The default cluster's VMs, as node names.
const DEFAULT_NODES: [&str; 5] = [
    "k8s-pool1-vmss000000",
    "k8s-pool1-vmss000001",
    "k8s-pool1-vmss000002",
    "k8s-pool2-0",
    "k8s-pool2-1",
];

/// Registers nodes as kubelets with `--cloud-provider=external` do (tainted uninitialised), Ready or not.
async fn register_uninitialised(api: &Api<Node>, names: &[&str], ready: bool) {
    for n in names {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n},
            "spec": {"taints": [{"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}]}}))
        .unwrap();
        api.create(&PostParams::default(), &node).await.unwrap();
        set_ready(api, n, ready).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_initialised_deleted_and_tainted() {
    let (sim, cfg, _dir) = e2e_tests::sim_with_config(
        SimOptions::default(),
        &Scenario::default_cluster(),
        json!({"useInstanceMetadata": false, "vmssVirtualMachinesCacheTTLInSeconds": 1, "nonVmssUniformNodesCacheTTLInSeconds": 1}),
    )
    .await;
    let cloud = Arc::new(AzureCloud::new(cfg, &|_| None).await.unwrap());
    let kube = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = e2e_tests::kube_client(&kube).await;
    let nodes: Api<Node> = Api::all(client.clone());
    register_uninitialised(&nodes, &DEFAULT_NODES, true).await;
    let timing = Timing {
        node_status_update_frequency: Duration::from_secs(60),
        node_monitor_period: Duration::from_millis(200),
        ..Default::default()
    };
    let (informer, drive) = ccm::informer::NodeInformer::new(client.clone());
    let driver = tokio::spawn(drive);
    let task = tokio::spawn(controllers::run(client.clone(), cloud.clone(), timing, informer));

    // Initialisation: provider id, labels (current and beta), addresses, taint removed.
    eventually("every node initialised", || async {
        let list = nodes.list(&Default::default()).await.unwrap();
        list.items.len() == 5
            && list.items.iter().all(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| t.is_empty())
            })
    })
    .await;
    let n1 = nodes.get("k8s-pool1-vmss000001").await.unwrap();
    let labels = n1.metadata.labels.clone().unwrap();
    assert_eq!(labels["topology.kubernetes.io/zone"], "eastus-2");
    assert_eq!(labels["failure-domain.beta.kubernetes.io/zone"], "eastus-2");
    assert_eq!(labels["node.kubernetes.io/instance-type"], "Standard_D2s_v3");
    assert_eq!(labels["topology.kubernetes.io/region"], "eastus");
    assert!(n1
        .spec
        .unwrap()
        .provider_id
        .unwrap()
        .ends_with("/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/1"));
    assert_eq!(n1.status.unwrap().addresses.unwrap()[0].address, "10.240.0.5");
    assert!(kube.list("events").iter().any(|e| e["reason"] == "Synced") || !kube_events_v1(&kube).await.is_empty());

    // A NotReady node whose instance was deleted is deleted; a NotReady node whose instance is deallocated
    // gets the shutdown taint, removed when it is Ready again.
    let ss = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
        sim.cluster().subscription,
        sim.cluster().resource_group
    );
    sim.with_store(|s, _| azure_sim::scenario::remove_vm(s, &format!("{ss}/virtualMachines/2")))
        .unwrap();
    sim.with_store(|s, _| azure_sim::scenario::set_power_state(s, &format!("{ss}/virtualMachines/0"), "deallocated"))
        .unwrap();
    set_ready(&nodes, "k8s-pool1-vmss000002", false).await;
    set_ready(&nodes, "k8s-pool1-vmss000000", false).await;
    eventually("the node of the deleted instance is deleted", || async {
        nodes.get_opt("k8s-pool1-vmss000002").await.unwrap().is_none()
    })
    .await;
    let has_shutdown = |n: Node| {
        let t = n.spec.and_then(|s| s.taints).unwrap_or_default();
        let shut = t.iter().any(|t| t.key == SHUTDOWN_TAINT);
        let oos = t
            .iter()
            .any(|t| t.key == controllers::OUT_OF_SERVICE_TAINT && t.effect == "NoExecute");
        assert_eq!(shut, oos, "the shutdown and out-of-service taints go together");
        shut
    };
    eventually("shutdown taint", || async {
        has_shutdown(nodes.get("k8s-pool1-vmss000000").await.unwrap())
    })
    .await;
    // A NotReady node whose instance is fine is kept.
    set_ready(&nodes, "k8s-pool2-0", false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(nodes.get_opt("k8s-pool2-0").await.unwrap().is_some());
    set_ready(&nodes, "k8s-pool1-vmss000000", true).await;
    eventually("shutdown taint removed", || async {
        !has_shutdown(nodes.get("k8s-pool1-vmss000000").await.unwrap())
    })
    .await;
    // Throttling never deletes: every ARM read is refused while a node's instance looks gone.
    sim.set_faults(vec![azure_sim::faults::FaultRule {
        method: Some("GET".into()),
        resource_type: None,
        fault: azure_sim::faults::FaultKind::Throttle { retry_after_secs: 600 },
        rate: 1.0,
        count: None,
    }]);
    sim.with_store(|s, _| azure_sim::scenario::remove_vm(s, &format!("{ss}/virtualMachines/1")))
        .unwrap();
    set_ready(&nodes, "k8s-pool1-vmss000001", false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        nodes.get_opt("k8s-pool1-vmss000001").await.unwrap().is_some(),
        "a throttled lookup must not delete a node"
    );
    task.abort();
    driver.abort();
}

async fn kube_events_v1(kube: &KubeSim) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(format!("{}/apis/events.k8s.io/v1/events", kube.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_controller_creates_and_removes_pod_cidr_routes() {
    let (sim, cfg, _dir) = e2e_tests::sim_with_config(
        SimOptions::default(),
        &Scenario::default_cluster(),
        json!({"useInstanceMetadata": false}),
    )
    .await;
    let cloud = AzureCloud::new(cfg, &|_| None).await.unwrap();
    let kube = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = e2e_tests::kube_client(&kube).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (i, n) in ["k8s-pool1-vmss000000", "k8s-pool1-vmss000001", "k8s-pool2-0"]
        .iter()
        .enumerate()
    {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}, "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")]}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    // An unmanaged (on-premises) node: its route stays in memory.
    let onprem: Node = serde_json::from_value(json!({"metadata": {"name": "onprem-1", "labels": {"kubernetes.azure.com/managed": "false"}}, "spec": {"podCIDRs": ["10.244.9.0/24"]}})).unwrap();
    nodes.create(&PostParams::default(), &onprem).await.unwrap();
    let settings = controllers::RouteSettings {
        cluster_name: "kubernetes".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        period: Duration::from_millis(100),
        metrics: Default::default(),
    };
    sim.reset_calls();
    let (created, deleted) = controllers::route_pass(&nodes, &cloud, &settings, &all(&nodes).await)
        .await
        .unwrap();
    assert_eq!((created, deleted), (4, 0));
    let puts = sim.calls().iter().filter(|c| c.method == "PUT").count();
    // Cold caches spread the three creates over the node lookups: at most two batches (S7 bound).
    assert!((1..=2).contains(&puts), "{puts} route-table writes for three routes");
    let rt = sim
        .resource(&format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/routeTables/{}",
            sim.cluster().subscription,
            sim.cluster().resource_group,
            sim.cluster().route_table
        ))
        .unwrap();
    assert_eq!(
        rt["properties"]["routes"].as_array().unwrap().len(),
        3,
        "the unmanaged node's route is not in Azure"
    );
    let n = nodes.get("k8s-pool2-0").await.unwrap();
    let cond = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("False", Some("RouteCreated"))
    );
    // Steady state: nothing to do, no write.
    sim.reset_calls();
    assert_eq!(
        controllers::route_pass(&nodes, &cloud, &settings, &all(&nodes).await)
            .await
            .unwrap(),
        (0, 0)
    );
    assert_eq!(sim.arm_calls("PUT"), 0);
    // A node leaves: its route goes; a route outside the cluster CIDR is left alone.
    nodes.delete("k8s-pool1-vmss000001", &Default::default()).await.unwrap();
    azure_cloud::provider::Routes::create_route(
        &cloud,
        "kubernetes",
        "",
        &azure_cloud::provider::Route {
            name: String::new(),
            target_node: "k8s-pool2-0".into(),
            destination_cidrs: vec!["192.168.0.0/24".into()],
            blackhole: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        controllers::route_pass(&nodes, &cloud, &settings, &all(&nodes).await)
            .await
            .unwrap(),
        (0, 1)
    );
    let left: Vec<String> = azure_cloud::provider::Routes::list_routes(&cloud, "kubernetes")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.destination_cidrs[0].clone())
        .collect();
    assert_eq!(left.len(), 4, "{left:?} (incl. the unmanaged node's in-memory route)");
    assert!(left.contains(&"192.168.0.0/24".to_string()) && !left.contains(&"10.244.1.0/24".to_string()));
}

/// ARM faults (5xx, resets, 429 with a short Retry-After) while nodes initialise: everything converges and
/// no node is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_initialisation_converges_through_arm_faults() {
    use azure_sim::faults::{FaultKind, FaultRule};
    let (sim, cfg, _dir) = e2e_tests::sim_with_config(
        SimOptions::default(),
        &Scenario::default_cluster(),
        json!({"useInstanceMetadata": false, "cloudProviderBackoffDuration": 1, "cloudProviderBackoffJitter": 0.1}),
    )
    .await;
    sim.set_faults(vec![
        FaultRule {
            method: Some("GET".into()),
            resource_type: Some("virtualMachines".into()),
            fault: FaultKind::Status { status: 503 },
            rate: 0.5,
            count: Some(3),
        },
        FaultRule {
            method: Some("GET".into()),
            resource_type: Some("networkInterfaces".into()),
            fault: FaultKind::Reset,
            rate: 0.5,
            count: Some(2),
        },
        FaultRule {
            method: Some("GET".into()),
            resource_type: Some("virtualMachineScaleSets".into()),
            fault: FaultKind::Throttle { retry_after_secs: 1 },
            rate: 1.0,
            count: Some(1),
        },
    ]);
    let cloud = Arc::new(AzureCloud::new(cfg, &|_| None).await.unwrap());
    let kube = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = e2e_tests::kube_client(&kube).await;
    let nodes: Api<Node> = Api::all(client.clone());
    register_uninitialised(&nodes, &DEFAULT_NODES, false).await;
    let timing = Timing {
        node_status_update_frequency: Duration::from_secs(60),
        node_monitor_period: Duration::from_millis(200),
        ..Default::default()
    };
    let (informer, drive) = ccm::informer::NodeInformer::new(client.clone());
    let driver = tokio::spawn(drive);
    let task = tokio::spawn(controllers::run(client.clone(), cloud.clone(), timing, informer));
    for _ in 0..300 {
        let list = nodes.list(&Default::default()).await.unwrap();
        if list
            .items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_ref()).is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = nodes.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 5, "no node deleted");
    assert!(
        list.items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_ref()).is_some()),
        "all initialised"
    );
    let faulted = sim
        .calls()
        .iter()
        .filter(|c| c.status == 503 || c.status == 429)
        .count();
    assert!(faulted >= 1, "faults were injected");
    task.abort();
    driver.abort();
}
