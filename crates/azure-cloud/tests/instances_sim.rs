//! Instances, InstancesV2 and Zones for both VM types against azure-sim, with runtime changes and call counts.

mod common;
use common::{cloud_for, no_env};

use azure_cloud::provider::{Instances, InstancesV2, Zones};
use azure_cloud::AzureCloud;
use azure_sim::faults::{FaultKind, FaultRule};
use azure_sim::scenario::{AvailabilitySetSpec, ScaleSetSpec, Scenario};

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use std::time::Duration;

fn node(name: &str, provider_id: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: provider_id.map(str::to_string),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn addrs(m: &[k8s_openapi::api::core::v1::NodeAddress]) -> Vec<(String, String)> {
    m.iter().map(|a| (a.type_.clone(), a.address.clone())).collect()
}

#[tokio::test]
async fn vmss_mixed_cluster_metadata_zones_and_provider_ids() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let c = sim.cluster().clone();
    let md = cloud
        .instance_metadata(&node("k8s-pool1-vmss000001", None))
        .await
        .unwrap();
    assert_eq!(
        md.provider_id,
        format!(
            "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/1",
            c.subscription,
            c.resource_group.to_lowercase()
        )
    );
    assert_eq!(md.instance_type, "Standard_D2s_v3");
    assert_eq!(md.zone, "eastus-2");
    assert_eq!(md.region, "eastus");
    assert_eq!(
        addrs(&md.node_addresses),
        vec![
            ("InternalIP".to_string(), "10.240.0.5".to_string()),
            ("Hostname".into(), "k8s-pool1-vmss000001".into())
        ]
    );
    // Availability-set VM in the same (vmss) cluster: non-zonal → fault domain.
    let md2 = cloud.instance_metadata(&node("k8s-pool2-1", None)).await.unwrap();
    assert!(
        md2.provider_id
            .ends_with("/providers/Microsoft.Compute/virtualMachines/k8s-pool2-1"),
        "{}",
        md2.provider_id
    );
    assert_eq!(md2.zone, "1");
    assert_eq!(
        addrs(&md2.node_addresses)[0],
        ("InternalIP".to_string(), "10.240.0.8".to_string())
    );
    // By provider id, including upstream's other accepted forms.
    let pid = md.provider_id.clone();
    assert_eq!(
        cloud.get_zone_by_provider_id(&pid).await.unwrap().failure_domain,
        "eastus-2"
    );
    assert_eq!(
        cloud.instance_type_by_provider_id(&md2.provider_id).await.unwrap(),
        "Standard_D2s_v3"
    );
    assert!(cloud.instance_exists_by_provider_id(&pid).await.unwrap());
    assert!(cloud
        .instance_exists_by_provider_id("kind://unmanaged-node")
        .await
        .unwrap());
    assert!(!cloud.instance_shutdown_by_provider_id(&pid).await.unwrap());
    assert_eq!(
        cloud
            .get_zone_by_node_name("k8s-pool1-vmss000002")
            .await
            .unwrap()
            .failure_domain,
        "eastus-3"
    );
    assert!(cloud
        .instance_id("k8s-pool1-vmss000000")
        .await
        .unwrap()
        .ends_with("/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0"));
    // Unknown names and ids.
    assert!(matches!(
        cloud.instance_metadata(&node("k8s-pool1-vmss00zzzz", None)).await,
        Err(azure_cloud::provider::CloudError::InstanceNotFound(_))
    ));
    let gone = pid.replace("/virtualMachines/1", "/virtualMachines/77");
    assert!(!cloud.instance_exists_by_provider_id(&gone).await.unwrap());
}

#[tokio::test]
async fn runtime_changes_added_stopped_deallocated_deleted() {
    let (sim, cloud, _d) = cloud_for(
        &Scenario::default_cluster(),
        json!({"vmssVirtualMachinesCacheTTLInSeconds": 1}),
    )
    .await;
    let md = cloud
        .instance_metadata(&node("k8s-pool1-vmss000000", None))
        .await
        .unwrap();
    // A new instance is found by name (unknown name → one refresh of that scale set's list).
    let ss_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
        sim.cluster().subscription,
        sim.cluster().resource_group
    );
    sim.with_store(|s, _| azure_sim::scenario::add_scale_set_instance(s, &ss_id, 3, "running", false))
        .unwrap();
    let new = cloud
        .instance_metadata(&node("k8s-pool1-vmss000003", None))
        .await
        .unwrap();
    assert_eq!(new.zone, "eastus-1");
    // Stopped and deallocated instances are shut down; deleted ones do not exist.
    sim.with_store(|s, _| {
        azure_sim::scenario::set_power_state(s, &format!("{ss_id}/virtualMachines/0"), "deallocated")
    })
    .unwrap();
    sim.with_store(|s, _| azure_sim::scenario::set_power_state(s, &format!("{ss_id}/virtualMachines/1"), "stopped"))
        .unwrap();
    sim.with_store(|s, _| azure_sim::scenario::remove_vm(s, &format!("{ss_id}/virtualMachines/2")))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the instance-list TTL
    assert!(cloud.instance_shutdown_by_provider_id(&md.provider_id).await.unwrap());
    let n1 = node(
        "k8s-pool1-vmss000001",
        Some(&md.provider_id.replace("/virtualMachines/0", "/virtualMachines/1")),
    );
    assert!(cloud.instance_shutdown(&n1).await.unwrap());
    let n2 = node(
        "k8s-pool1-vmss000002",
        Some(&md.provider_id.replace("/virtualMachines/0", "/virtualMachines/2")),
    );
    assert!(!cloud.instance_exists(&n2).await.unwrap());
    assert!(!cloud.instance_shutdown(&n2).await.unwrap());
    // The same gone VM on a node labelled kubernetes.azure.com/managed=false: it exists (never deleted by
    // the lifecycle controller), as upstream.
    let mut unmanaged = n2.clone();
    unmanaged.metadata.labels = Some([("kubernetes.azure.com/managed".to_string(), "false".to_string())].into());
    assert!(cloud.instance_exists(&unmanaged).await.unwrap());
    assert!(!cloud.instance_shutdown(&unmanaged).await.unwrap());
    // A provider id that looks like an Azure VM's but cannot be parsed is an error; another provider's is
    // "not shut down".
    let bad = md.provider_id.replace(
        "/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0",
        "/virtualMachineScaleSets",
    );
    assert!(cloud.instance_shutdown_by_provider_id(&bad).await.is_err(), "{bad}");
    assert!(!cloud
        .instance_shutdown_by_provider_id("aws:///us-east-1a/i-0123")
        .await
        .unwrap());
}

#[tokio::test]
async fn standard_vm_type_with_availability_sets() {
    let scenario = Scenario {
        vm_type: "standard".into(),
        availability_sets: vec![AvailabilitySetSpec {
            name: "as1".into(),
            vm_name_prefix: "node-".into(),
            vms: 3,
            fault_domains: 3,
            public_ips: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let (sim, cloud, _d) = cloud_for(&scenario, json!({})).await;
    let md = cloud.instance_metadata(&node("node-2", None)).await.unwrap();
    assert_eq!(md.zone, "2");
    let a = addrs(&md.node_addresses);
    assert_eq!(a[0].0, "InternalIP");
    assert_eq!(a[1], ("Hostname".to_string(), "node-2".to_string()));
    assert_eq!(a[2].0, "ExternalIP");
    assert!(a[2].1.starts_with("20."));
    let sets = cloud.vm_set().vm_sets().await.unwrap();
    assert_eq!(sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["as1"]);
    // Deallocated VM.
    let vm_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/node-0",
        sim.cluster().subscription,
        sim.cluster().resource_group
    );
    sim.with_store(|s, _| azure_sim::scenario::set_power_state(s, &vm_id, "deallocated"))
        .unwrap();
    sim.with_store(|s, _| azure_sim::scenario::remove_vm(s, &vm_id.replace("node-0", "node-1")))
        .unwrap();
    // A fresh provider sees the changes (the first one still caches within vmCacheTTL).
    let fresh = AzureCloud::new(cloud.config().clone(), &no_env).await.unwrap();
    let pid = format!(
        "azure://{}",
        vm_id.replace(
            &sim.cluster().resource_group,
            &sim.cluster().resource_group.to_lowercase()
        )
    );
    assert!(fresh.instance_shutdown_by_provider_id(&pid).await.unwrap());
    assert!(!fresh
        .instance_exists_by_provider_id(&pid.replace("node-0", "node-1"))
        .await
        .unwrap());
}

#[tokio::test]
async fn throttled_lookups_are_errors_never_not_found() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    sim.set_faults(vec![FaultRule {
        method: Some("GET".into()),
        resource_type: Some("virtualMachineScaleSets".into()),
        fault: FaultKind::Throttle { retry_after_secs: 300 },
        rate: 1.0,
        count: None,
    }]);
    let pid = format!(
        "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0",
        sim.cluster().subscription,
        sim.cluster().resource_group.to_lowercase()
    );
    let err = cloud.instance_exists_by_provider_id(&pid).await.unwrap_err();
    assert!(
        matches!(
            err,
            azure_cloud::provider::CloudError::Azure(_) | azure_cloud::provider::CloudError::Arm(_)
        ),
        "{err:?}"
    );
    let n = node("k8s-pool1-vmss000000", Some(&pid));
    assert!(cloud.instance_exists(&n).await.is_err());
}

/// The call-count acceptance: a full InstanceMetadata pass over 100 scale-set nodes in 2 scale sets
/// plus 10 availability-set VMs.
#[tokio::test]
async fn instance_metadata_pass_costs_seven_list_calls() {
    let scenario = Scenario {
        scale_sets: (1..=2)
            .map(|i| ScaleSetSpec {
                name: format!("pool{i}"),
                instances: 50,
                zones: vec!["1".into(), "2".into(), "3".into()],
                ..Default::default()
            })
            .collect(),
        availability_sets: vec![AvailabilitySetSpec {
            name: "as".into(),
            vm_name_prefix: "as-vm-".into(),
            vms: 10,
            ..Default::default()
        }],
        ..Default::default()
    };
    let (sim, cloud, _d) = cloud_for(&scenario, json!({})).await;
    let mut names: Vec<String> = (1..=2)
        .flat_map(|p| (0..50).map(move |i| azure_cloud::vmset::names::computer_name(&format!("pool{p}"), i)))
        .collect();
    names.extend((0..10).map(|i| format!("as-vm-{i}")));
    let nodes: Vec<Node> = names.iter().map(|n| node(n, None)).collect();
    let tasks: Vec<_> = nodes.iter().map(|n| cloud.instance_metadata(n)).collect();
    let results = futures::future::join_all(tasks).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let counts = sim.call_counts();
    let arm: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("Microsoft."))
        .map(|(_, v)| v)
        .sum();
    // 1 scale-set list + 2 instance lists + 2 scale-set NIC lists + 1 VM list + 1 NIC list = 7.
    assert_eq!(arm, 7, "{counts:#?}");
    assert_eq!(sim.arm_calls("PUT"), 0);
    // A second pass is served from the caches.
    sim.reset_calls();
    for n in &names {
        cloud.instance_metadata(&node(n, None)).await.unwrap();
    }
    assert_eq!(sim.arm_calls("GET"), 0);
    // A wave of unknown nodes in one scale set refreshes its list once.
    let unknown: Vec<String> = (100..120)
        .map(|i| azure_cloud::vmset::names::computer_name("pool1", i))
        .collect();
    let wave: Vec<_> = unknown.iter().map(|n| cloud.vm_set().node(n)).collect();
    let _ = futures::future::join_all(wave).await;
    assert_eq!(sim.arm_calls("GET"), 1, "{:#?}", sim.call_counts());
}

#[tokio::test]
async fn instance_id_of_the_local_node_falls_back_to_imds() {
    // The local node is new: the cached instance list (refreshed at most once per 5 s for unknown names)
    // does not know it yet; upstream reads the id from IMDS (`compute.resourceId`), so do we.
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({"useInstanceMetadata": true})).await;
    let ss_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
        sim.cluster().subscription,
        sim.cluster().resource_group
    );
    // A first unknown node forces the list refresh.
    let first = sim
        .with_store(|s, _| azure_sim::scenario::add_scale_set_instance(s, &ss_id, 3, "running", false))
        .unwrap();
    assert_eq!(cloud.instance_id("k8s-pool1-vmss000003").await.unwrap(), first);
    // This process runs on instance 4 (not created yet: IMDS answers 404, which is not cached). An unknown
    // name uses up the forced refresh (at most one per 5 s).
    sim.set_imds_vm(&format!("{ss_id}/virtualMachines/4"));
    assert!(cloud.instance_id("k8s-pool1-vmss0000zz").await.is_err());
    // Two more within 5 s are not in the list yet: one that is not the local node stays "not found" (so no
    // list was read again), the local one is answered from IMDS.
    let second = sim
        .with_store(|s, _| azure_sim::scenario::add_scale_set_instance(s, &ss_id, 4, "running", false))
        .unwrap();
    sim.with_store(|s, _| azure_sim::scenario::add_scale_set_instance(s, &ss_id, 5, "running", false))
        .unwrap();
    assert!(second.ends_with("/virtualMachines/4"), "{second}");
    assert!(cloud.instance_id("k8s-pool1-vmss000005").await.is_err());
    assert_eq!(cloud.instance_id("k8s-pool1-vmss000004").await.unwrap(), second);
}

#[tokio::test]
async fn a_public_cloud_config_with_an_environment_file_reaches_the_simulator() {
    // As upstream reads it: no resourceManagerEndpoint, cloud AzurePublicCloud, AZURE_ENVIRONMENT_FILEPATH
    // overriding the endpoints (activeDirectoryEndpoint; resourceManagerEndpoint with tokenAudience) and the
    // CA from SSL_CERT_FILE — only the files azure-sim writes, and none of our own keys.
    let (_sim, _cloud, dir) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let config = dir.path().join("azure.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    for ours in ["resourceManagerEndpoint", "trustedCACertPath", "imdsEndpoint"] {
        o.remove(ours);
    }
    assert_eq!(o["cloud"], "AzurePublicCloud");
    o.insert("useInstanceMetadata".into(), json!(false));
    let env_file = config.with_extension("environment.json").display().to_string();
    let ca_file = config.with_extension("ca.pem").display().to_string();
    let env = move |k: &str| match k {
        "AZURE_ENVIRONMENT_FILEPATH" => Some(env_file.clone()),
        "SSL_CERT_FILE" => Some(ca_file.clone()),
        _ => None,
    };
    let (cfg, _) = azure_cloud::config::CloudConfig::parse(&v.to_string(), &env).unwrap();
    let cloud = AzureCloud::new(cfg, &env).await.unwrap();
    let md = cloud
        .instance_metadata(&node("k8s-pool1-vmss000000", None))
        .await
        .unwrap();
    assert!(md.provider_id.contains("k8s-pool1-vmss"), "{md:?}");
}
