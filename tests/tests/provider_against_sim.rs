//! The production `azure_cloud` pipeline against azure-sim, reached only through configuration:
//! endpoint discovery from `resourceManagerEndpoint`, the sim's CA from `trustedCACertPath`, real tokens.

use azure_cloud::arm::{self, LoadBalancers, PublicIpAddresses, VirtualMachineScaleSetVms, VirtualMachineScaleSets};
use azure_cloud::config::CloudConfig;
use azure_mgmt_network::models as network;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use std::time::Duration;

fn no_env(_: &str) -> Option<String> {
    None
}

async fn sim_and_config(
    opts: SimOptions,
    tweak: impl FnOnce(&mut serde_json::Value),
) -> (AzureSim, CloudConfig, tempfile::TempDir) {
    let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), opts, &Scenario::default_cluster())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    sim.write_config(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tweak(&mut v);
    let (cfg, report) = CloudConfig::parse(&v.to_string(), &no_env).unwrap();
    assert!(report.unknown_keys.is_empty(), "{:?}", report.unknown_keys);
    (sim, cfg, dir)
}

#[tokio::test]
async fn discovery_secret_auth_and_scale_set_instance_list() {
    let (sim, cfg, _dir) = sim_and_config(
        SimOptions {
            page_size: 2,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let conn = arm::connect(&cfg, &no_env).await.unwrap();
    assert_eq!(conn.environment.resource_manager_endpoint, format!("{}/", sim.url()));
    let rg = &cfg.resource_group;
    let sets = VirtualMachineScaleSets::list(&conn.clients, rg).await.unwrap();
    assert_eq!(sets.len(), 1);
    let vms = VirtualMachineScaleSetVms::list(&conn.clients, rg, "k8s-pool1-vmss", true)
        .await
        .unwrap();
    let names: Vec<String> = vms
        .iter()
        .filter_map(|v| v.properties.as_ref()?.os_profile.as_ref()?.computer_name.clone())
        .collect();
    assert_eq!(
        names,
        vec!["k8s-pool1-vmss000000", "k8s-pool1-vmss000001", "k8s-pool1-vmss000002"]
    );
    assert!(vms[0].properties.as_ref().unwrap().instance_view.is_some());
    // Paged: two pages for three instances; one token for all of it.
    assert_eq!(sim.arm_calls("GET"), 3);
    let token_calls = sim.calls().iter().filter(|c| c.operation == "token").count();
    assert_eq!(token_calls, 1);
    // A missing instance is a typed NotFound, not an empty answer.
    let err = VirtualMachineScaleSetVms::get(&conn.clients, rg, "k8s-pool1-vmss", "42", false)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn load_balancer_put_followed_through_its_operation_and_if_match() {
    let (sim, cfg, _dir) = sim_and_config(
        SimOptions {
            lro_delay: Duration::from_millis(200),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut conn_cfg = cfg.clone();
    conn_cfg.cloud_provider_backoff_duration = 1;
    let conn = arm::connect(&conn_cfg, &no_env).await.unwrap();
    let c = &conn.clients;
    let rg = &cfg.resource_group;
    let sub = &cfg.subscription_id;
    let mut pip = network::PublicIpAddress::default();
    pip.resource.location = Some("eastus".into());
    pip.sku = Some(network::PublicIpAddressSku {
        name: Some(network::public_ip_address_sku::Name::Standard),
        tier: None,
    });
    pip.properties = Some(Box::new(network::PublicIpAddressPropertiesFormat {
        public_ip_allocation_method: Some(network::IpAllocationMethod::Static),
        ..Default::default()
    }));
    let pip = PublicIpAddresses::create_or_update(c, rg, "kubernetes-a1", &pip)
        .await
        .unwrap();
    let pip_id = pip.resource.id.clone().unwrap();
    let lb_id =
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/kubernetes");
    let body = serde_json::json!({
        "location": "eastus", "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "a1", "properties": {"publicIPAddress": {"id": pip_id}}}],
            "backendAddressPools": [{"name": "kubernetes"}],
            "probes": [{"name": "a1-TCP-80", "properties": {"protocol": "Tcp", "port": 30080, "intervalInSeconds": 5, "numberOfProbes": 2}}],
            "loadBalancingRules": [{"name": "a1-TCP-80", "properties": {
                "frontendIPConfiguration": {"id": format!("{lb_id}/frontendIPConfigurations/a1")},
                "backendAddressPool": {"id": format!("{lb_id}/backendAddressPools/kubernetes")},
                "probe": {"id": format!("{lb_id}/probes/a1-TCP-80")},
                "protocol": "Tcp", "frontendPort": 80, "backendPort": 80}}],
        }
    });
    let created = LoadBalancers::create_or_update(c, rg, "kubernetes", body)
        .await
        .unwrap();
    // The pipeline followed the operation: it is done now.
    let read = LoadBalancers::get(c, rg, "kubernetes").await.unwrap();
    let state = read.properties.as_ref().unwrap().provisioning_state.clone();
    assert_eq!(format!("{state:?}"), "Some(Succeeded)");
    let polls = sim.calls().iter().filter(|c| c.operation == "poll").count();
    assert!(polls >= 1, "the operation was polled");
    // A write with the ETag read before the first write is refused; the current one succeeds.
    let mut stale = serde_json::to_value(&read).unwrap();
    stale["etag"] = serde_json::json!("W/\"stale\"");
    let err = LoadBalancers::create_or_update(c, rg, "kubernetes", stale)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(created["etag"].is_string());
    LoadBalancers::create_or_update(c, rg, "kubernetes", serde_json::to_value(&read).unwrap())
        .await
        .unwrap();
    // Deleting the PIP while the LB uses it is an ARM error naming the code; deleting the LB works.
    let err = PublicIpAddresses::delete(c, rg, "kubernetes-a1").await.unwrap_err();
    assert!(err.to_string().contains("PublicIPAddressInUse"), "{err}");
    LoadBalancers::delete(c, rg, "kubernetes").await.unwrap();
    PublicIpAddresses::delete(c, rg, "kubernetes-a1").await.unwrap();
    assert!(LoadBalancers::get(c, rg, "kubernetes")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn managed_identity_through_the_sims_imds() {
    let (sim, cfg, _dir) = sim_and_config(SimOptions::default(), |v| {
        let o = v.as_object_mut().unwrap();
        o.remove("aadClientSecret");
        o.insert("useManagedIdentityExtension".into(), true.into());
        o.insert(
            "userAssignedIdentityID".into(),
            "11111111-2222-3333-4444-555555555555".into(),
        );
    })
    .await;
    let conn = arm::connect(&cfg, &no_env).await.unwrap();
    VirtualMachineScaleSets::list(&conn.clients, &cfg.resource_group)
        .await
        .unwrap();
    let token = sim.calls().into_iter().find(|c| c.operation == "token").unwrap();
    assert_eq!(token.provider, "IMDS");
}

#[tokio::test]
async fn transient_faults_are_retried_and_throttling_is_respected() {
    let (sim, mut cfg, _dir) = sim_and_config(SimOptions::default(), |_| {}).await;
    cfg.cloud_provider_backoff_duration = 1;
    cfg.cloud_provider_backoff_jitter = 0.01;
    let conn = arm::connect(&cfg, &no_env).await.unwrap();
    sim.set_faults(vec![azure_sim::faults::FaultRule {
        method: Some("GET".into()),
        resource_type: Some("virtualMachineScaleSets".into()),
        fault: azure_sim::faults::FaultKind::Status { status: 503 },
        rate: 1.0,
        count: Some(1),
    }]);
    let sets = VirtualMachineScaleSets::list(&conn.clients, &cfg.resource_group)
        .await
        .unwrap();
    assert_eq!(sets.len(), 1);
    let statuses: Vec<u16> = sim.calls().iter().filter(|c| c.is_arm()).map(|c| c.status).collect();
    assert_eq!(statuses, vec![503, 200]);
    // A 429 with a long Retry-After: one request, then the bucket is closed to every caller.
    sim.set_faults(vec![azure_sim::faults::FaultRule {
        method: Some("GET".into()),
        resource_type: None,
        fault: azure_sim::faults::FaultKind::Throttle { retry_after_secs: 120 },
        rate: 1.0,
        count: None,
    }]);
    sim.reset_calls();
    let err = VirtualMachineScaleSets::list(&conn.clients, &cfg.resource_group)
        .await
        .unwrap_err();
    assert!(err.is_throttled(), "{err}");
    let err = VirtualMachineScaleSetVms::list(&conn.clients, &cfg.resource_group, "k8s-pool1-vmss", false)
        .await
        .unwrap_err();
    assert!(err.is_throttled(), "{err}");
    assert_eq!(sim.arm_calls("GET"), 1, "nothing is sent to a closed bucket");
}
