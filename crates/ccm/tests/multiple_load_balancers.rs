//! Multiple standard load balancers through the CCM (kube-sim + azure-sim): a Service lands on the load
//! balancer its namespace selects, moves (keeping its IP) when the namespace's labels change, and nothing is
//! left after it is deleted.

mod common;
use common::{eventually, ingress, lb};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

fn has_rules(sim: &azure_sim::AzureSim, name: &str) -> bool {
    lb(sim, name).is_some_and(|l| {
        l["properties"]["loadBalancingRules"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_follow_their_namespace_to_its_load_balancer() {
    let env = common::env(json!({
        "loadBalancerBackendPoolConfigurationType": "nodeIP",
        "multipleStandardLoadBalancerConfigurations": [
            {"name": "kubernetes", "serviceNamespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}},
            {"name": "team-a", "serviceNamespaceSelector": {"matchLabels": {"team": "a"}}},
        ],
    }))
    .await;
    let client = env.client.clone();
    common::add_ready_nodes(&client, &common::DEFAULT_NODES).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .unwrap();
    let _ccm = common::start_ccm(&env);
    common::nodes_initialised(&client).await;

    let services: Api<Service> = Api::namespaced(client.clone(), "apps");
    services
        .create(&PostParams::default(), &common::web_service("web"))
        .await
        .unwrap();
    let ip = eventually("external IP in status", Duration::from_secs(60), || async {
        ingress(&services.get("web").await.ok()?).first().cloned()
    })
    .await;
    assert!(has_rules(&env.sim, "kubernetes"));
    assert!(lb(&env.sim, "team-a").is_none());

    // The namespace joins team a: its Service moves to team-a's load balancer with the same IP, and the
    // default one (left without frontends) is deleted.
    namespaces
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    eventually("service on team-a", Duration::from_secs(60), || async {
        (has_rules(&env.sim, "team-a") && lb(&env.sim, "kubernetes").is_none()).then_some(())
    })
    .await;
    assert_eq!(ingress(&services.get("web").await.unwrap()), vec![ip]);
    let pool_size = lb(&env.sim, "team-a").unwrap()["properties"]["backendAddressPools"][0]["properties"]
        ["loadBalancerBackendAddresses"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(pool_size > 0, "team-a's pool has its nodes");

    services.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("service gone", Duration::from_secs(60), || async {
        services.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(lb(&env.sim, "team-a").is_none() && lb(&env.sim, "kubernetes").is_none());
}
