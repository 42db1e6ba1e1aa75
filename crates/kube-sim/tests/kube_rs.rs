//! kube-rs (kube 5) against kube-sim, unchanged: CRUD, conflicts, patches, watch, reflector, finalizers,
//! server-side apply, leases, events.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use kube_sim::KubeSim;
use serde_json::json;
use std::time::Duration;

async fn client() -> (KubeSim, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    (sim, Client::try_from(cfg).unwrap())
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"pool": "a"}},
        "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_patches() {
    let (_sim, client) = client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let created = nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert!(nodes.create(&PostParams::default(), &node("n1")).await.is_err());
    nodes.create(&PostParams::default(), &node("n2")).await.unwrap();
    let mut other = node("n3");
    other.metadata.labels = Some([("pool".to_string(), "b".to_string())].into());
    nodes.create(&PostParams::default(), &other).await.unwrap();
    let a = nodes.list(&ListParams::default().labels("pool=a")).await.unwrap();
    assert_eq!(a.items.len(), 2);
    let by_name = nodes
        .list(&ListParams::default().fields("metadata.name=n3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // Replace with a stale resourceVersion → 409.
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    let err = nodes.replace("n1", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err:?}");
    // Strategic merge: providerID + remove the uninitialized taint; merge: labels; JSON patch: annotation.
    let p = json!({"spec": {"providerID": "azure:///x", "taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "effect": "NoSchedule", "$patch": "delete"}]}});
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Strategic(&p))
        .await
        .unwrap();
    assert_eq!(n.spec.as_ref().unwrap().provider_id.as_deref(), Some("azure:///x"));
    assert!(n.spec.as_ref().unwrap().taints.as_ref().is_none_or(|t| t.is_empty()));
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "eastus-1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        n.metadata.labels.as_ref().unwrap()["topology.kubernetes.io/zone"],
        "eastus-1"
    );
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}])).unwrap();
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(n.metadata.annotations.unwrap()["a"], "b");
    // Status subresource: addresses and conditions.
    let st = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.4"}], "conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}});
    let n = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(n.status.unwrap().addresses.unwrap()[0].address, "10.0.0.4");
    nodes.delete("n2", &DeleteParams::default()).await.unwrap();
    assert!(nodes.get_opt("n2").await.unwrap().is_none());
}

#[tokio::test]
async fn watch_reflector_and_finalizers() {
    let (sim, client) = client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store::<Service>();
    let stream = reflector(writer, watcher(svcs.clone(), watcher::Config::default())).applied_objects();
    let events = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut s = std::pin::pin!(stream);
        while let Ok(Some(svc)) = s.try_next().await {
            seen.push(svc.metadata.name.clone().unwrap_or_default());
            if seen.len() >= 4 {
                break;
            }
        }
        seen
    });
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "finalizers": ["service.kubernetes.io/load-balancer-cleanup"]}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let svc2: Service =
        serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}})).unwrap();
    svcs.create(&PostParams::default(), &svc2).await.unwrap();
    // Status update the service controller does.
    svcs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "20.0.0.1"}]}}})),
    )
    .await
    .unwrap();
    // Delete with the finalizer: stays with a deletionTimestamp until the finalizer is removed.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    let web = svcs.get("web").await.unwrap();
    assert!(web.metadata.deletion_timestamp.is_some());
    let seen = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen.contains(&"web".to_string()) && seen.contains(&"db".to_string()),
        "{seen:?}"
    );
    // The reflector's store is in sync.
    tokio::time::timeout(Duration::from_secs(5), async {
        while reader.state().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let fin = json!({"metadata": {"finalizers": null}});
    svcs.patch("web", &PatchParams::default(), &Patch::Merge(&fin))
        .await
        .unwrap();
    assert!(svcs.get_opt("web").await.unwrap().is_none());
    assert!(sim.get("services", "default", "web").is_err());
    // A watch from an old resourceVersion replays, BOOKMARKs when asked.
    let lp = watcher::Config::default();
    let first = tokio::time::timeout(Duration::from_secs(5), watcher(svcs.clone(), lp).boxed().next())
        .await
        .unwrap();
    assert!(first.is_some());
}

#[tokio::test]
async fn server_side_apply_leases_and_events() {
    let (sim, client) = client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let applied: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ssa"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}})).unwrap();
    let s = svcs
        .patch(
            "ssa",
            &PatchParams::apply("test-manager").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().ports.unwrap()[0].port, 443);
    let again = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ssa", "labels": {"x": "y"}}});
    let s = svcs
        .patch("ssa", &PatchParams::apply("test-manager"), &Patch::Apply(&again))
        .await
        .unwrap();
    assert_eq!(s.metadata.labels.unwrap()["x"], "y");

    // Leader election as client-go does it: create, renew with the read resourceVersion, a stale renew → 409.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "cloud-controller-manager"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renew = l1.clone();
    renew.spec.as_mut().unwrap().lease_transitions = Some(1);
    let l2 = leases
        .replace("cloud-controller-manager", &PostParams::default(), &renew)
        .await
        .unwrap();
    assert_ne!(l1.metadata.resource_version, l2.metadata.resource_version);
    let mut steal = l1.clone();
    steal.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let err = leases
        .replace("cloud-controller-manager", &PostParams::default(), &steal)
        .await
        .unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err:?}");

    // Events through kube's recorder.
    let recorder = kube::runtime::events::Recorder::new(client.clone(), "azure-cloud-controller-manager".into());
    let svc = svcs.get("ssa").await.unwrap();
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "EnsuringLoadBalancer".into(),
                note: Some("Ensuring load balancer".into()),
                action: "Ensure".into(),
                secondary: None,
            },
            &kube::Resource::object_ref(&svc, &()),
        )
        .await
        .unwrap();
    let evs = sim
        .list("events")
        .into_iter()
        .chain(kube_sim_events_v1(&sim).await)
        .collect::<Vec<_>>();
    assert!(evs.iter().any(|e| e["reason"] == "EnsuringLoadBalancer"), "{evs:?}");
}

async fn kube_sim_events_v1(sim: &KubeSim) -> Vec<serde_json::Value> {
    // events.k8s.io/v1 events, read over HTTP (the direct API lists core events).
    let url = format!("{}/apis/events.k8s.io/v1/events", sim.url());
    let v: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// A BOOKMARK carries the newest resourceVersion the stream has passed on, never the one it started from:
/// a client resuming from an old bookmark would replay stale objects over newer ones.
#[tokio::test]
async fn bookmarks_advance_with_the_stream() {
    use kube::api::{WatchEvent, WatchParams};
    let (_sim, client) = client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let start = svcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = svcs
        .watch(&WatchParams::default().timeout(30), &start)
        .await
        .unwrap()
        .boxed();
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})).unwrap();
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let created_rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let bookmark = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let WatchEvent::Bookmark(b) = ev {
                return b.metadata.resource_version.parse::<u64>().unwrap();
            }
        }
        panic!("the watch ended without a bookmark");
    })
    .await
    .unwrap();
    assert!(
        bookmark >= created_rv,
        "bookmark {bookmark} is older than the event already sent ({created_rv})"
    );
}
