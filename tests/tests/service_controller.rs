//! The service controller in-process against kube-sim, with a provider that misbehaves on purpose: a
//! reconcile that panics is contained (the Service is retried and converges, a Warning event says so, the
//! panic is counted), and invalid input is not retried until the Service changes.

use async_trait::async_trait;
use azure_cloud::provider::{CloudError, LoadBalancer};
use ccm::informer::NodeInformer;
use ccm::service::{run, ServiceSettings};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_sim::KubeSim;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Panics on the first ensure of `crashy`; `invalid` is always invalid input.
#[derive(Default)]
struct Misbehaving {
    calls: Mutex<HashMap<String, usize>>,
}

impl Misbehaving {
    fn calls(&self, name: &str) -> usize {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[async_trait]
impl LoadBalancer for Misbehaving {
    async fn get_load_balancer(&self, _: &str, _: &Service) -> Result<Option<LoadBalancerStatus>, CloudError> {
        Ok(None)
    }
    fn get_load_balancer_name(&self, cluster: &str, _: &Service) -> String {
        cluster.to_string()
    }
    async fn ensure_load_balancer(&self, _: &str, svc: &Service, _: &[Node]) -> Result<LoadBalancerStatus, CloudError> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let n = {
            let mut c = self.calls.lock().unwrap();
            let n = c.entry(name.clone()).or_insert(0);
            *n += 1;
            *n
        };
        match name.as_str() {
            "crashy" if n == 1 => panic!("injected panic in a reconcile"),
            "invalid" => Err(CloudError::InvalidInput(
                "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout \"500\" must be an integer in 4..=100"
                    .into(),
            )),
            _ => Ok(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("20.0.0.1".into()),
                    ..Default::default()
                }]),
            }),
        }
    }
    async fn update_load_balancer(&self, _: &str, _: &Service, _: &[Node]) -> Result<(), CloudError> {
        Ok(())
    }
    async fn ensure_load_balancer_deleted(&self, _: &str, _: &Service) -> Result<(), CloudError> {
        Ok(())
    }
}

fn svc(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn ingress(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test]
async fn panics_are_contained_and_invalid_input_waits_for_a_change() {
    let kube = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let lb = Arc::new(Misbehaving::default());
    let metrics = ccm::metrics::ControllerMetrics::default();
    let (nodes, drive) = NodeInformer::new(client.clone());
    let informer = tokio::spawn(drive);
    let controller = tokio::spawn(run(
        client.clone(),
        lb.clone(),
        ServiceSettings {
            cluster_name: "kubernetes".into(),
            workers: 1,
            metrics: metrics.clone(),
            node_sync_period: Duration::from_secs(100),
            labels_matter: false,
        },
        ccm::events::Recorder::new(client.clone(), "service-controller"),
        nodes,
        None,
    ));
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services.create(&PostParams::default(), &svc("crashy")).await.unwrap();
    services.create(&PostParams::default(), &svc("invalid")).await.unwrap();
    // One worker only: after the panic the same worker must go on (and retry crashy after its backoff).
    let mut ip = None;
    for _ in 0..200 {
        ip = services.get("crashy").await.ok().as_ref().and_then(ingress);
        if ip.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ip.as_deref(),
        Some("20.0.0.1"),
        "the Service whose reconcile panicked never converged"
    );
    assert_eq!(lb.calls("crashy"), 2);
    let mut text = String::new();
    let mut reg = prometheus_client::registry::Registry::default();
    metrics.register(&mut reg);
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("controller_reconcile_panics_total{controller=\"service\"} 1"),
        "{text}"
    );
    // Events: the panic and the invalid input, each a Warning naming what happened.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let mut notes = Vec::new();
    for _ in 0..50 {
        notes = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
            .filter_map(|e| e.note)
            .collect::<Vec<_>>();
        if notes.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(notes.iter().any(|n| n.contains("panic")), "{notes:?}");
    // No node at all: upstream's UnAvailableLoadBalancer Warning, and every ensure counted as a sync.
    let unavailable = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("UnAvailableLoadBalancer"))
        .filter_map(|e| e.note)
        .collect::<Vec<_>>();
    assert!(
        unavailable
            .iter()
            .any(|n| n == "There are no available nodes for LoadBalancer"),
        "{unavailable:?}"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    let syncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("service_controller_loadbalancer_sync_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(syncs >= 3, "two ensures of crashy and one of invalid: {syncs}\n{text}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("not retried until the Service changes")),
        "{notes:?}"
    );
    // Invalid input: a change that does not touch what is ensured (a label) retries nothing; 6 s is past
    // the first backoff (5 s), so a retry would have shown.
    assert_eq!(lb.calls("invalid"), 1);
    services
        .patch(
            "invalid",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(lb.calls("invalid"), 1, "invalid input was retried without a change");
    // The user fixes the annotation: tried again at once.
    services
        .patch(
            "invalid",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": "30"}}})),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        if lb.calls("invalid") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lb.calls("invalid"), 2);
    controller.abort();
    informer.abort();
}
