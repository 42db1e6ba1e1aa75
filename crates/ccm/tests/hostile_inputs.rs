//! The CCM process against azure-sim answering with an absurd `Retry-After` (u64::MAX seconds): no panic, the
//! endpoints keep serving, the throttled bucket is left alone (clamped to one hour), and the controllers
//! that do not need it keep working.

mod common;
use common::free_port;

use azure_sim::faults::{FaultKind, FaultRule};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test]
async fn absurd_retry_after_never_panics_and_the_ccm_keeps_serving() {
    let env = common::env(json!({})).await;
    env.sim.set_faults(vec![FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("loadBalancers".into()),
        fault: FaultKind::Throttle {
            retry_after_secs: u64::MAX,
        },
        rate: 1.0,
        count: None,
    }]);
    let log = env.dir.path().join("ccm.log");
    let port = free_port();
    let mut ccm = common::ccm(&env.config, &env.kubeconfig)
        .args(["--secure-port=0", "--port", &port.to_string(), "--leader-elect=false"])
        .args(["--node-monitor-period=200ms", "--v=4"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map(Stdio::from).unwrap())
        .spawn()
        .unwrap();
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in ["k8s-pool1-vmss000000", "k8s-pool1-vmss000001", "k8s-pool2-0"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n},
            "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    // Wait for the 429 to be answered.
    let t0 = Instant::now();
    let throttled_at = loop {
        let calls = env.sim.calls();
        if let Some(c) = calls.iter().find(|c| c.status == 429) {
            break c.t_ms;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no LB PUT was throttled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // For a while after: the process lives, /healthz answers 200, no further LB PUT is sent (the clamped
    // window is one hour), and the node controller still initialises nodes.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        assert!(
            ccm.try_wait().unwrap().is_none(),
            "the CCM exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let h = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let later_puts = env
        .sim
        .calls()
        .iter()
        .filter(|c| c.method == "PUT" && c.resource_type.ends_with("loadBalancers") && c.arrived_ms > throttled_at)
        .count();
    assert_eq!(later_puts, 0, "LB PUTs sent inside the Retry-After window");
    let l = nodes.list(&Default::default()).await.unwrap();
    assert!(
        l.items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_ref()).is_some()),
        "nodes not initialised"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("remote wait longer than the maximum"),
        "the clamp is logged"
    );
    let _ = ccm.kill();
}
