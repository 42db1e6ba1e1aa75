//! The CCM as a process against kube-sim + azure-sim: a LoadBalancer Service's life (create → IP in status,
//! change ports, internal ↔ external, delete → finalizer removed, no Azure leftovers), with ARM faults
//! (5xx, 429, 412) injected throughout.

mod common;
use common::{eventually, free_port, ingress, lb, Ccm};

use azure_sim::faults::{FaultKind, FaultRule};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

fn leftovers(sim: &azure_sim::AzureSim) -> Vec<String> {
    let c = sim.cluster().clone();
    sim.with_store(|s, _| {
        let mut out: Vec<String> = s
            .all()
            .filter(|r| {
                let id = r.id.to_ascii_lowercase();
                id.contains("/publicipaddresses/")
                    || id.contains("/loadbalancers/")
                    || r.body
                        .to_string()
                        .to_ascii_lowercase()
                        .contains("/backendaddresspools/")
            })
            .map(|r| r.id.clone())
            .collect();
        let nsg = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/{}",
            c.subscription, c.resource_group, c.nsg
        );
        if let Some(rules) = s
            .get(&nsg)
            .and_then(|r| r.body["properties"]["securityRules"].as_array().cloned())
        {
            out.extend(rules.iter().filter_map(|r| r["name"].as_str().map(str::to_string)));
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_service_lifecycle_through_arm_faults() {
    // Retries after injected 5xx wait 1 s instead of 5 s.
    let common::Env {
        sim,
        kube,
        dir,
        config,
        kubeconfig,
        client,
    } = common::env(json!({"cloudProviderBackoff": true, "cloudProviderBackoffDuration": 1})).await;
    let nodes: Api<Node> = Api::all(client.clone());
    common::add_ready_nodes(&client, &common::DEFAULT_NODES).await;
    // Faults on every ARM write path the service controller uses.
    sim.set_faults(vec![
        FaultRule {
            method: Some("PUT".into()),
            resource_type: Some("Microsoft.Network".into()),
            fault: FaultKind::Status { status: 503 },
            rate: 0.2,
            count: Some(6),
        },
        FaultRule {
            method: Some("PUT".into()),
            resource_type: Some("publicIPAddresses".into()),
            fault: FaultKind::Throttle { retry_after_secs: 1 },
            rate: 1.0,
            count: Some(1),
        },
        FaultRule {
            method: Some("PUT".into()),
            resource_type: Some("loadBalancers".into()),
            fault: FaultKind::Status { status: 412 },
            rate: 1.0,
            count: Some(1),
        },
        FaultRule {
            method: Some("DELETE".into()),
            resource_type: None,
            fault: FaultKind::Status { status: 500 },
            rate: 0.3,
            count: Some(4),
        },
    ]);
    // On a timeout, the CCM's log tail is printed.
    std::env::set_var("CCM_LOG", dir.path().join("ccm.log"));
    let (port, secure) = (free_port(), free_port());
    let _ccm = Ccm(common::ccm(&config, &kubeconfig)
        .args(["--port", &port.to_string(), "--secure-port", &secure.to_string()])
        .args(["--leader-elect=false", "--node-monitor-period=1s"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.path().join("ccm.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap());
    eventually("nodes initialised", Duration::from_secs(30), || async {
        let l = nodes.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_ref()).is_some())
            .then_some(())
    })
    .await;

    // Create.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let ip = eventually("external IP in status", Duration::from_secs(60), || async {
        let s = services.get("web").await.ok()?;
        ingress(&s).first().cloned()
    })
    .await;
    let s = services.get("web").await.unwrap();
    assert!(s
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&"service.kubernetes.io/load-balancer-cleanup".to_string()));
    let ext = lb(&sim, "kubernetes").expect("external LB");
    assert_eq!(
        ext["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"],
        80
    );

    // Change ports: the rules follow, the IP stays.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"ports": [{"name": "http", "port": 8443, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}})),
        )
        .await
        .unwrap();
    eventually("rule on port 8443", Duration::from_secs(60), || async {
        let l = lb(&sim, "kubernetes")?;
        (l["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"] == 8443).then_some(())
    })
    .await;
    assert_eq!(ingress(&services.get("web").await.unwrap()), vec![ip]);

    // External → internal: a private IP, the external LB (its last frontend gone) deleted.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}}})),
        )
        .await
        .unwrap();
    let private = eventually("private IP in status", Duration::from_secs(60), || async {
        let s = services.get("web").await.ok()?;
        ingress(&s).first().filter(|i| i.starts_with("10.")).cloned()
    })
    .await;
    assert!(lb(&sim, "kubernetes-internal").is_some());
    eventually("external LB deleted", Duration::from_secs(60), || async {
        lb(&sim, "kubernetes").is_none().then_some(())
    })
    .await;
    assert!(private.starts_with("10.240."));

    // Delete: the finalizer goes last, nothing is left in Azure.
    services.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("service gone", Duration::from_secs(60), || async {
        services.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("no leftovers", Duration::from_secs(30), || async {
        leftovers(&sim).is_empty().then_some(())
    })
    .await;
    assert!(leftovers(&sim).is_empty(), "{:?}", leftovers(&sim));
    // Events with upstream's reasons.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in [
        "EnsuringLoadBalancer",
        "EnsuredLoadBalancer",
        "DeletingLoadBalancer",
        "DeletedLoadBalancer",
    ] {
        assert!(reasons.iter().any(|x| x == r), "no {r} event in {reasons:?}");
    }
    // HTTPS on --secure-port (a self-signed certificate generated at start).
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let health = https
        .get(format!("https://127.0.0.1:{secure}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // /metrics on the secure port: delegated authentication (TokenReview) and authorization
    // (SubjectAccessReview) through kube-sim, as upstream.
    kube.set_token("scraper-token", "prometheus", &["monitoring"]);
    kube.set_token("other-token", "someone", &["system:authenticated"]);
    kube.grant_path("monitoring", "/metrics", "get");
    let secure_metrics = |token: Option<&'static str>| {
        let mut rb = https.get(format!("https://127.0.0.1:{secure}/metrics"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(secure_metrics(None).await, 403, "anonymous");
    assert_eq!(secure_metrics(Some("wrong-token")).await, 401, "unknown token");
    assert_eq!(
        secure_metrics(Some("other-token")).await,
        403,
        "authenticated, not allowed"
    );
    assert_eq!(secure_metrics(Some("scraper-token")).await, 200, "allowed by its group");
    let (token_reviews, _) = kube.review_counts();
    assert_eq!(secure_metrics(Some("scraper-token")).await, 200);
    assert_eq!(
        kube.review_counts().0,
        token_reviews,
        "the TokenReview answer is cached"
    );
    // Controller metrics on /metrics (the plain --port is for local use: no authentication).
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "controller_reconcile_duration_seconds_count{controller=\"service\"}",
        "controller_reconcile_duration_seconds_count{controller=\"cloud-node\"}",
        "workqueue_depth{name=\"service-controller\"}",
        "cloudprovider_azure_api_request_duration_seconds",
        // Upstream's request names (old clients: plural resource names).
        "request=\"load_balancers_create_or_update\"",
        "request=\"public_ip_addresses_create_or_update\"",
        // Upstream's azclient series (≥ v1.32): names, types and label sets dashboards use.
        "# TYPE arm_request_duration_seconds histogram",
        "resource=\"LoadBalancer\",method=\"create_or_update\"} ",
        "resource=\"PublicIPAddress\",method=\"create_or_update\"",
        "# TYPE arm_request_errors_counter_total counter",
        "# TYPE arm_request_rate_limit_counter_total counter",
        "# TYPE arm_request_throttle_counter_total counter",
        "leader_election_master_status{name=\"cloud-controller-manager\"}",
        // Upstream's operation series and the legacy counters declared counters, with exact names.
        "cloudprovider_azure_op_duration_seconds_count{request=\"services_ensure_loadbalancer\"",
        "# TYPE cloudprovider_azure_api_request_errors counter",
        "# TYPE cloudprovider_azure_op_failure_count counter",
        // k8s.io/cloud-provider's controller series.
        "# TYPE service_controller_loadbalancer_sync_total counter",
        "service_controller_loadbalancer_sync_total ",
        "# TYPE service_controller_nodesync_latency_seconds histogram",
        "node_controller_cloud_provider_taint_removal_delay_seconds_count ",
        "node_controller_initial_node_sync_delay_seconds_count ",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }
    // The ARM latency histogram has upstream's buckets, and every sample carries exactly upstream's labels.
    let sample = metrics
        .lines()
        .find(|l| l.starts_with("arm_request_duration_seconds_count{"))
        .expect("an ARM duration sample");
    let labels: Vec<&str> = sample[sample.find('{').unwrap() + 1..sample.find('}').unwrap()]
        .split(',')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["subscription_id", "resource_group", "resource", "method"],
        "{sample}"
    );
    for le in [
        "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "60.0", "300.0", "600.0",
    ] {
        assert!(metrics.contains(&format!("le=\"{le}\"")), "bucket {le} missing");
    }
    // The nodes were never deleted by the lifecycle controller through the faults.
    assert_eq!(nodes.list(&Default::default()).await.unwrap().items.len(), 5);
}
