//! Flexible scale sets against azure-sim (`vmType: vmssflex`, and `vmss` with `enableVmssFlexNodes` in a
//! cluster that also has a uniform scale set and availability-set VMs): instances, zones, call counts, load
//! balancer membership with both pool types, routes, disks, node groups and a deleted VM.

mod common;
use common::cloud_for;

use azure_cloud::disks::AttachOptions;
use azure_cloud::provider::{Instances, InstancesV2, LoadBalancer, Route, Routes, Zones};
use azure_sim::scenario::{ScaleSetSpec, Scenario};
use azure_sim::AzureSim;
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;

const CLUSTER: &str = "kubernetes";

fn flex(name: &str, instances: u32) -> ScaleSetSpec {
    ScaleSetSpec {
        name: name.into(),
        computer_name_prefix: Some(format!("{name}-")),
        instances,
        zones: vec!["1".into(), "2".into(), "3".into()],
        orchestration_mode: "Flexible".into(),
        ..Default::default()
    }
}

fn flex_only() -> Scenario {
    Scenario {
        scale_sets: vec![flex("flexpool", 4)],
        route_table_name: Some("sim-routes".into()),
        ..Scenario::default()
    }
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// Nodes as the node controller leaves them (provider id and addresses from the provider).
async fn nodes(cloud: &azure_cloud::AzureCloud, names: &[&str]) -> Vec<Node> {
    let mut out = Vec::new();
    for n in names {
        let md = cloud.instance_metadata(&node(n)).await.unwrap();
        let mut node = node(n);
        node.spec = Some(serde_json::from_value(json!({"providerID": md.provider_id})).unwrap());
        node.status = Some(serde_json::from_value(json!({"addresses": md.node_addresses})).unwrap());
        out.push(node);
    }
    out
}

fn rg_id(sim: &AzureSim) -> String {
    let c = sim.cluster();
    format!("/subscriptions/{}/resourceGroups/{}", c.subscription, c.resource_group)
}

fn vm_id(sim: &AzureSim, name: &str) -> String {
    format!("{}/providers/Microsoft.Compute/virtualMachines/{name}", rg_id(sim))
}

/// The flexible scale set as stored.
fn flexpool(sim: &AzureSim) -> serde_json::Value {
    sim.resource(
        &sim.cluster()
            .id("Microsoft.Compute", "virtualMachineScaleSets/flexpool"),
    )
    .unwrap()
}

fn arm_reads(sim: &AzureSim) -> Vec<String> {
    sim.calls()
        .into_iter()
        .filter(|c| c.is_arm() && c.method == "GET")
        .map(|c| c.resource_type)
        .collect()
}

fn service(name: &str, uid: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .unwrap()
}

/// The backend pools the NIC of a VM is in.
fn nic_pools(sim: &AzureSim, vm: &str) -> Vec<String> {
    let nic = format!("{}/providers/Microsoft.Network/networkInterfaces/{vm}-nic", rg_id(sim));
    sim.resource(&nic).unwrap()["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

const FLEX_NODES: [&str; 4] = [
    "flexpool-000000",
    "flexpool-000001",
    "flexpool-000002",
    "flexpool-000003",
];

#[tokio::test]
async fn flex_nodes_instances_zones_and_constant_reads() {
    let (sim, cloud, _d) = cloud_for(&flex_only(), json!({"vmType": "vmssflex"})).await;
    let c = sim.cluster().clone();
    sim.reset_calls();
    // Initialising every node at once: one VM list and one NIC list, whatever the number of nodes.
    let all = futures::future::join_all(FLEX_NODES.iter().map(|n| {
        let cloud = &cloud;
        async move { cloud.instance_metadata(&node(n)).await }
    }))
    .await;
    let reads = arm_reads(&sim);
    assert!(reads.len() <= 3, "reads: {reads:?}");
    let md: Vec<_> = all.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        md[1].provider_id,
        format!(
            "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/flexpool_00000001",
            c.subscription,
            c.resource_group.to_lowercase()
        )
    );
    assert_eq!(md[1].instance_type, "Standard_D2s_v3");
    assert_eq!((md[0].zone.as_str(), md[1].zone.as_str()), ("eastus-1", "eastus-2"));
    assert_eq!(md[1].region, "eastus");
    assert!(md[1]
        .node_addresses
        .iter()
        .any(|a| a.type_ == "InternalIP" && a.address.starts_with("10.")));
    // By provider id and by name, as the node controllers ask.
    let pid = md[2].provider_id.clone();
    assert_eq!(
        cloud.get_zone_by_provider_id(&pid).await.unwrap().failure_domain,
        "eastus-3"
    );
    assert_eq!(
        cloud
            .get_zone_by_node_name("flexpool-000000")
            .await
            .unwrap()
            .failure_domain,
        "eastus-1"
    );
    assert!(cloud.instance_exists_by_provider_id(&pid).await.unwrap());
    assert!(!cloud.instance_shutdown_by_provider_id(&pid).await.unwrap());
    // Stopped, then deleted: shut down, then gone (only on confirmed absence).
    sim.with_store(|s, _| azure_sim::scenario::set_power_state(s, &vm_id(&sim, "flexpool_00000002"), "deallocated"))
        .unwrap();
    let fresh = azure_cloud::AzureCloud::new(cloud.config().clone(), &common::no_env)
        .await
        .unwrap();
    assert!(fresh.instance_shutdown_by_provider_id(&pid).await.unwrap());
    sim.with_store(|s, _| azure_sim::scenario::remove_vm(s, &vm_id(&sim, "flexpool_00000002")))
        .unwrap();
    let fresh = azure_cloud::AzureCloud::new(cloud.config().clone(), &common::no_env)
        .await
        .unwrap();
    assert!(!fresh.instance_exists_by_provider_id(&pid).await.unwrap());
    // The scale set's capacity followed the deletion.
    let ss = flexpool(&sim);
    assert_eq!(ss["sku"]["capacity"], 3);
}

#[tokio::test]
async fn flex_load_balancer_membership_with_both_pool_types() {
    for pool_type in ["nodeIPConfiguration", "nodeIP"] {
        let (sim, cloud, _d) = cloud_for(
            &flex_only(),
            json!({"vmType": "vmssflex", "loadBalancerBackendPoolConfigurationType": pool_type}),
        )
        .await;
        let nodes = nodes(&cloud, &FLEX_NODES).await;
        let svc = service("web", "00000001-0000-0000-0000-000000000000");
        cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
        let lb = sim
            .resource(&format!(
                "{}/providers/Microsoft.Network/loadBalancers/{CLUSTER}",
                rg_id(&sim)
            ))
            .unwrap();
        if pool_type == "nodeIP" {
            let addrs = lb["properties"]["backendAddressPools"][0]["properties"]["loadBalancerBackendAddresses"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            assert_eq!(addrs, 4, "{pool_type}");
        } else {
            // Each flex VM joined through its own NIC (no scale-set model write).
            for i in 0..4 {
                let pools = nic_pools(&sim, &format!("flexpool_{i:08x}"));
                assert_eq!(pools.len(), 1, "{pool_type} VM {i}: {pools:?}");
            }
            assert!(
                !sim.calls()
                    .iter()
                    .any(|c| c.method != "GET" && c.resource_type.contains("virtualMachineScaleSets")),
                "no scale-set write"
            );
        }
        // Deleted: nothing left referencing the pool.
        cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await.unwrap();
        for i in 0..4 {
            assert!(nic_pools(&sim, &format!("flexpool_{i:08x}")).is_empty(), "{pool_type}");
        }
    }
}

#[tokio::test]
async fn flex_routes_disks_and_node_groups() {
    let (sim, cloud, _d) = cloud_for(&flex_only(), json!({"vmType": "vmssflex"})).await;
    // Routes: the next hop is the VM's NIC address.
    let md = cloud.instance_metadata(&node("flexpool-000001")).await.unwrap();
    let ip = md
        .node_addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .unwrap()
        .address
        .clone();
    cloud
        .create_route(
            CLUSTER,
            "",
            &Route {
                name: String::new(),
                target_node: "flexpool-000001".into(),
                destination_cidrs: vec!["10.244.1.0/24".into()],
                blackhole: false,
            },
        )
        .await
        .unwrap();
    let rt = sim
        .resource(&sim.cluster().id("Microsoft.Network", "routeTables/sim-routes"))
        .unwrap();
    assert_eq!(
        rt["properties"]["routes"][0]["properties"]["nextHopIpAddress"],
        json!(ip)
    );
    // Disks: attached at the VM, as for availability-set VMs.
    let disk = format!("{}/providers/Microsoft.Compute/disks/d1", rg_id(&sim));
    sim.with_store(|s, c| {
        s.put(
            &disk,
            "Microsoft.Compute/disks",
            json!({"location": c.location, "sku": {"name": "Premium_LRS"}, "properties": {"diskSizeGB": 32, "diskState": "Unattached"}}),
            0,
        );
    });
    let lun = cloud
        .disks()
        .attach_disk("flexpool-000001", &disk, AttachOptions::default())
        .await
        .unwrap();
    assert_eq!(lun, 0);
    let vm = sim.resource(&vm_id(&sim, "flexpool_00000001")).unwrap();
    assert_eq!(
        vm["properties"]["storageProfile"]["dataDisks"][0]["managedDisk"]["id"]
            .as_str()
            .map(str::to_ascii_lowercase),
        Some(disk.to_ascii_lowercase())
    );
    cloud.disks().detach_disk("flexpool-000001", &disk).await.unwrap();
    // Node groups: the flexible scale set, resized up and down, an instance deleted by node name.
    sim.with_store(|s, c| {
        let id = c.id("Microsoft.Compute", "virtualMachineScaleSets/flexpool");
        if let Some(r) = s.get_mut(&id) {
            r.body["tags"] = json!({"min": "1", "max": "10"});
        }
    });
    let groups = cloud.node_groups(vec![]);
    let g = groups.get("flexpool").await.unwrap();
    assert!(g.flexible && g.target_size == 4, "{g:?}");
    assert_eq!(
        groups.node_group_of("flexpool-000003").await.unwrap().as_deref(),
        Some("flexpool")
    );
    groups.set_target_size("flexpool", 6).await.unwrap();
    let inst = groups.instances("flexpool").await.unwrap();
    assert_eq!(inst.len(), 6);
    assert!(inst
        .iter()
        .any(|i| i.node_name == "flexpool-000005" && i.instance_id == "flexpool_00000005"));
    groups.delete_nodes("flexpool", &["flexpool-000000"]).await.unwrap();
    assert!(sim.resource(&vm_id(&sim, "flexpool_00000000")).is_none());
    let ss = flexpool(&sim);
    assert_eq!(ss["sku"]["capacity"], 5);
    assert_eq!(groups.instances("flexpool").await.unwrap().len(), 5);
    // A uniform instance list is never asked of a flexible scale set (ARM refuses it).
    assert!(!sim
        .calls()
        .iter()
        .any(|c| c.status == 409 && c.resource_type.contains("virtualMachineScaleSets/virtualMachines")));
}

#[tokio::test]
async fn mixed_cluster_of_uniform_flexible_and_availability_set_nodes() {
    let mut scenario = Scenario::default_cluster();
    scenario.scale_sets.push(flex("flexpool", 2));
    let (sim, cloud, _d) = cloud_for(
        &scenario,
        json!({"vmType": "vmss", "enableVmssFlexNodes": true, "loadBalancerBackendPoolConfigurationType": "nodeIPConfiguration"}),
    )
    .await;
    let names = [
        "k8s-pool1-vmss000000",
        "k8s-pool2-0",
        "flexpool-000000",
        "flexpool-000001",
    ];
    let nodes = nodes(&cloud, &names).await;
    let pids: Vec<String> = nodes
        .iter()
        .map(|n| n.spec.as_ref().unwrap().provider_id.clone().unwrap())
        .collect();
    assert!(pids[0].contains("/virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0"));
    assert!(pids[1].ends_with("/virtualMachines/k8s-pool2-0"));
    assert!(pids[2].ends_with("/virtualMachines/flexpool_00000000"));
    // One Service: the uniform scale set joins through its model, the others through their NICs.
    let svc = service("web", "00000002-0000-0000-0000-000000000000");
    cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    assert_eq!(nic_pools(&sim, "flexpool_00000000").len(), 1);
    assert_eq!(nic_pools(&sim, "k8s-pool2-0").len(), 1);
    let model = sim
        .resource(
            &sim.cluster()
                .id("Microsoft.Compute", "virtualMachineScaleSets/k8s-pool1-vmss"),
        )
        .unwrap();
    assert!(model.to_string().contains("backendAddressPools/kubernetes"));
    cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await.unwrap();
    assert!(nic_pools(&sim, "flexpool_00000000").is_empty());
    // Without enableVmssFlexNodes the flex VMs are not nodes of a vmss cluster.
    let (_s2, plain, _d2) = cloud_for(&scenario, json!({"vmType": "vmss"})).await;
    assert!(plain.instance_metadata(&node("flexpool-000000")).await.is_err());
    // With disableAvailabilitySetNodes only the availability-set VMs are left out.
    let (_s3, no_avset, _d3) = cloud_for(
        &scenario,
        json!({"vmType": "vmss", "enableVmssFlexNodes": true, "disableAvailabilitySetNodes": true}),
    )
    .await;
    assert!(no_avset.instance_metadata(&node("flexpool-000000")).await.is_ok());
    assert!(no_avset.instance_metadata(&node("k8s-pool2-0")).await.is_err());
    assert!(no_avset.instance_metadata(&node("k8s-pool1-vmss000000")).await.is_ok());
}
