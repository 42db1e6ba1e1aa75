//! Two CCM processes against kube-sim + azure-sim: only the leader acts; when it is killed the other takes
//! over within the lease duration and initialises new nodes.

mod common;
use common::free_port;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn spawn_ccm(config: &std::path::Path, kubeconfig: &std::path::Path, port: u16) -> Child {
    common::ccm(config, kubeconfig)
        .args(["--secure-port=0", "--port", &port.to_string()])
        .args([
            "--leader-elect-lease-duration=2s",
            "--leader-elect-renew-deadline=1s",
            "--leader-elect-retry-period=200ms",
        ])
        .args(["--node-monitor-period=200ms", "--controllers=*,-service"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn uninitialised(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": name},
        "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

async fn wait_initialised(nodes: &Api<Node>, name: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let n = nodes.get(name).await.unwrap();
        if n.spec.and_then(|s| s.provider_id).is_some() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{name} not initialised within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lease_holder(leases: &Api<Lease>) -> String {
    leases
        .get("cloud-controller-manager")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap()
}

async fn metric(port: u16) -> String {
    // The process may still be starting: retry the connection for a while.
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            return r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no metrics endpoint on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_the_other_takes_over() {
    let common::Env {
        sim: _sim,
        kube: _kube,
        dir: _dir,
        config,
        kubeconfig,
        client,
    } = common::env(serde_json::json!({})).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");

    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn_ccm(&config, &kubeconfig, pa);
    let mut b = spawn_ccm(&config, &kubeconfig, pb);
    uninitialised(&nodes, "k8s-pool1-vmss000000").await;
    wait_initialised(&nodes, "k8s-pool1-vmss000000", Duration::from_secs(20)).await;
    let holder = lease_holder(&leases).await;
    // Both are up (a follower serves its endpoints too) before leadership is compared.
    let (_, _) = (metric(pa).await, metric(pb).await);
    let (ma, mb) = (metric(pa).await, metric(pb).await);
    let leads = |m: &str| {
        m.lines()
            .any(|l| l.trim() == "leader_election_master_status{name=\"cloud-controller-manager\"} 1")
    };
    assert!(leads(&ma) ^ leads(&mb), "exactly one leader:\nA: {ma}\nB: {mb}");
    let (leader, follower_port) = if leads(&ma) { (&mut a, pb) } else { (&mut b, pa) };
    assert!(holder.ends_with(&format!("_{}", leader.id())), "{holder}");
    // Kill the leader: the other takes over within the lease duration and initialises a new node.
    leader.kill().unwrap();
    leader.wait().unwrap();
    let t0 = Instant::now();
    uninitialised(&nodes, "k8s-pool2-0").await;
    wait_initialised(&nodes, "k8s-pool2-0", Duration::from_secs(15)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "takeover took {:?}",
        t0.elapsed()
    );
    assert!(leads(&metric(follower_port).await));
    let new_holder = lease_holder(&leases).await;
    assert_ne!(new_holder, holder);
    // Health endpoints.
    let h = reqwest::get(format!("http://127.0.0.1:{follower_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}
