//! The controller runtime through the binary: leadership bounds every write, and `--controllers` starts
//! exactly the controllers it names.

mod common;
use common::{eventually, free_port, Ccm};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const NODES: [&str; 5] = [
    "k8s-pool1-vmss000000",
    "k8s-pool1-vmss000001",
    "k8s-pool1-vmss000002",
    "k8s-pool2-0",
    "k8s-pool2-1",
];

fn spawn(env: &common::Env, extra: &[&str], log: &str) -> Ccm {
    let port = free_port();
    env.spawn_logged(
        common::ccm(&env.config, &env.kubeconfig)
            .args(["--secure-port=0", "--port", &port.to_string()])
            .args([
                "--leader-elect-lease-duration=2s",
                "--leader-elect-renew-deadline=1s",
                "--leader-elect-retry-period=200ms",
                "--node-monitor-period=300ms",
            ])
            .args(extra),
        log,
    )
}

async fn add_node(nodes: &Api<Node>, name: &str, provider_id: Option<&str>, ready: &str) {
    let mut spec = json!({"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]});
    if let Some(p) = provider_id {
        spec = json!({"providerID": p});
    }
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": [{"type": "Ready", "status": ready}]}})),
        )
        .await
        .unwrap();
}

fn initialised(n: &Node) -> bool {
    !n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| {
        t.iter()
            .any(|t| t.key == "node.cloudprovider.kubernetes.io/uninitialized")
    })
}

fn is_write(c: &azure_sim::accounting::CallRecord) -> bool {
    c.is_arm() && c.access == "write"
}

#[tokio::test]
async fn losing_the_lease_mid_burst_stops_every_write_and_the_next_leader_converges() {
    let env = common::env(json!({})).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in NODES {
        add_node(&nodes, n, None, "True").await;
    }
    let a = spawn(&env, &[], "a.log");
    eventually("nodes initialised by the leader", Duration::from_secs(30), || async {
        let l = nodes.list(&Default::default()).await.ok()?;
        l.items.iter().all(initialised).then_some(())
    })
    .await;
    // A burst of 50 Services.
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let before = env.sim.calls().len();
    futures::future::join_all((0..50).map(|i| {
        let services = services.clone();
        async move {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30000 + i, "protocol": "TCP"}]},
            }))
            .unwrap();
            services.create(&PostParams::default(), &svc).await.unwrap();
        }
    }))
    .await;
    // Mid-burst (the first write seen), the lease is taken by another holder.
    eventually("the burst's first ARM write", Duration::from_secs(30), || async {
        env.sim.calls()[before..].iter().any(is_write).then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let now = k8s_openapi::jiff::Timestamp::now();
    leases
        .patch(
            "cloud-controller-manager",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"holderIdentity": "intruder", "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now), "leaseDurationSeconds": 600}})),
        )
        .await
        .unwrap();
    let stolen_at = env.sim.clock().now_ms();
    let log_a = env.dir.path().join("a.log");
    eventually(
        "the old leader stopping its controllers",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&log_a)
                .ok()?
                .contains("not leading: controllers stopped")
                .then_some(())
        },
    )
    .await;
    // The old leader notices within a retry period (200 ms) and stops everything it started: nothing it
    // sends may arrive after that (1 s allows for the 2-core CI machine).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = env.sim.calls();
    let late: Vec<String> = calls
        .iter()
        .filter(|c| is_write(c) && c.arrived_ms > stolen_at + 1000)
        .map(|c| format!("{} {} at +{} ms", c.method, c.resource_type, c.arrived_ms - stolen_at))
        .collect();
    assert!(late.is_empty(), "writes after the lease was lost: {late:?}");
    let unfinished = {
        let l = services.list(&Default::default()).await.unwrap();
        l.items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_none_or(|i| i.is_empty())
            })
            .count()
    };
    eprintln!("{unfinished} of 50 Services were unfinished when the lease was lost");
    // A new leader (the lease released) finishes the burst with nothing leaked.
    drop(a);
    leases
        .delete("cloud-controller-manager", &DeleteParams::default())
        .await
        .unwrap();
    let _b = spawn(&env, &[], "b.log");
    eventually("every Service's external IP", Duration::from_secs(120), || async {
        let l = services.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .all(|s| {
                s.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty())
            })
            .then_some(())
    })
    .await;
    let c = env.sim.cluster().clone();
    let (pips, frontends) = env.sim.with_store(|s, _| {
        let pips = s
            .all()
            .filter(|r| r.id.to_ascii_lowercase().contains("/publicipaddresses/"))
            .count();
        let lb = s.get(&format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/kubernetes",
            c.subscription, c.resource_group
        ));
        let fes = lb
            .and_then(|l| {
                l.body
                    .pointer("/properties/frontendIPConfigurations")
                    .and_then(|v| v.as_array())
                    .map(Vec::len)
            })
            .unwrap_or(0);
        (pips, fes)
    });
    assert_eq!(
        (pips, frontends),
        (50, 50),
        "one public IP and one frontend per Service, nothing leaked"
    );
}

#[tokio::test]
async fn controllers_flag_starts_exactly_the_named_controllers() {
    let env = common::env(json!({})).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let c = env.sim.cluster().clone();
    let ghost_id = |n: &str| {
        format!(
            "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{n}",
            c.subscription, c.resource_group
        )
    };
    add_node(&nodes, NODES[0], None, "True").await;
    add_node(&nodes, "ghost-1", Some(&ghost_id("ghost-1")), "False").await;
    // Upstream's chart: `*,-cloud-node` (a per-node agent initialises nodes). The lifecycle controller runs
    // (the ghost, whose VM does not exist, is deleted); the uninitialised node is left alone.
    {
        let _ccm = spawn(
            &env,
            &["--controllers=*,-cloud-node", "--leader-elect=false"],
            "one.log",
        );
        eventually(
            "the ghost deleted by cloud-node-lifecycle",
            Duration::from_secs(30),
            || async { nodes.get_opt("ghost-1").await.ok()?.is_none().then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !initialised(&nodes.get(NODES[0]).await.unwrap()),
            "cloud-node ran although disabled"
        );
    }
    // `*,-cloud-node-lifecycle`: nodes are initialised, a ghost is never deleted.
    add_node(&nodes, "ghost-2", Some(&ghost_id("ghost-2")), "False").await;
    let _ccm = spawn(
        &env,
        &["--controllers=*,-cloud-node-lifecycle", "--leader-elect=false"],
        "two.log",
    );
    eventually(
        "the node initialised by cloud-node",
        Duration::from_secs(30),
        || async { initialised(&nodes.get(NODES[0]).await.ok()?).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        nodes.get_opt("ghost-2").await.unwrap().is_some(),
        "cloud-node-lifecycle ran although disabled"
    );
}

/// The bounded recorder against an API server: a repeat is counted on the first event (`series`), a
/// different note or object is an event of its own, and an event the API server dropped is created anew.
#[tokio::test]
async fn events_are_aggregated_as_series() {
    use ccm::events::{EventType, Recorder};
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    let env = common::env(json!({})).await;
    let rec = Recorder::new(env.client.clone(), "service-controller");
    let about = |name: &str| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some("default".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let publish = |type_, reason: &'static str, note: &'static str, name: &'static str| {
        let rec = rec.clone();
        async move { rec.publish(type_, reason, note, &about(name)).await.unwrap() }
    };
    for _ in 0..3 {
        publish(EventType::Normal, "EnsuredLoadBalancer", "Ensured load balancer", "web").await;
    }
    publish(EventType::Warning, "SyncLoadBalancerFailed", "throttled", "web").await;
    publish(EventType::Normal, "EnsuredLoadBalancer", "Ensured load balancer", "api").await;
    let list = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(list.len(), 3, "{list:?}");
    let web = list
        .iter()
        .find(|e| {
            e.reason.as_deref() == Some("EnsuredLoadBalancer")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
        })
        .expect("the web event");
    assert_eq!(web.series.as_ref().map(|s| s.count), Some(3), "{web:?}");
    assert_eq!(web.reporting_controller.as_deref(), Some("service-controller"));
    assert_eq!(web.type_.as_deref(), Some("Normal"));
    assert_eq!(rec.cached(), 3);
    // The API server dropped the event (its TTL): the next repeat creates it again.
    events
        .delete(web.metadata.name.as_deref().unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    publish(EventType::Normal, "EnsuredLoadBalancer", "Ensured load balancer", "web").await;
    let again = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(again.len(), 3, "{again:?}");
    assert!(again
        .iter()
        .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
            && e.reason.as_deref() == Some("EnsuredLoadBalancer")
            && e.series.is_none()));
}
