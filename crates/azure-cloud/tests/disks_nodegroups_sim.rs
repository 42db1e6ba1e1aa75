//! Data disks and node groups against azure-sim: attach/detach on both VM types (concurrent calls on one
//! node, LUN allocation, idempotence, errors), resize up and down with instances appearing and
//! disappearing and the LB backend pool surviving, deleting given instances.

mod common;
use azure_cloud::disks::{AttachOptions, DiskError};
use azure_cloud::nodegroups::{InstanceState, NodeGroupError, NodeGroupSpec};
use azure_cloud::provider::LoadBalancer;
use azure_sim::scenario::Scenario;
use azure_sim::AzureSim;
use common::cloud_for;
use serde_json::json;

fn writes(sim: &AzureSim) -> Vec<String> {
    sim.calls()
        .into_iter()
        .filter(|c| c.is_arm() && !matches!(c.method.as_str(), "GET" | "HEAD"))
        .map(|c| format!("{} {}", c.method, c.resource_type))
        .collect()
}

fn rg_id(sim: &AzureSim) -> String {
    let c = sim.cluster();
    format!("/subscriptions/{}/resourceGroups/{}", c.subscription, c.resource_group)
}

fn new_disk(sim: &AzureSim, name: &str) -> String {
    let id = format!("{}/providers/Microsoft.Compute/disks/{name}", rg_id(sim));
    sim.with_store(|s, c| {
        s.put(
            &id,
            "Microsoft.Compute/disks",
            json!({"location": c.location, "sku": {"name": "Premium_LRS"}, "properties": {"diskSizeGB": 32, "diskState": "Unattached"}}),
            0,
        );
    });
    id
}

fn managed_by(sim: &AzureSim, disk: &str) -> Option<String> {
    sim.resource(disk)
        .and_then(|d| d.get("managedBy").and_then(|m| m.as_str()).map(str::to_string))
}

#[tokio::test]
async fn disks_attach_and_detach_on_both_vm_types() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let disks = cloud.disks();
    let (a, b, c) = (new_disk(&sim, "a"), new_disk(&sim, "b"), new_disk(&sim, "c"));
    for node in ["k8s-pool1-vmss000001", "k8s-pool2-0"] {
        sim.reset_calls();
        // Two concurrent attaches on one node: one VM write, LUNs 0 and 1.
        let (la, lb) = tokio::join!(
            disks.attach_disk(node, &a, AttachOptions::default()),
            disks.attach_disk(node, &b, AttachOptions::default())
        );
        let mut luns = vec![la.unwrap(), lb.unwrap()];
        luns.sort();
        assert_eq!(luns, [0, 1], "{node}");
        let w = writes(&sim);
        assert_eq!(w.len(), 1, "{node}: {w:?}");
        let expected = if node.contains("vmss") {
            "PUT Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
        } else {
            "PATCH Microsoft.Compute/virtualMachines"
        };
        assert_eq!(w[0], expected);
        let listed = disks.data_disks(node).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|d| d.caching == "ReadOnly"));
        assert!(managed_by(&sim, &a).is_some());
        assert_eq!(disks.node_of_disk(&a).await.unwrap().as_deref(), Some(node));
        // Idempotent: the same attach again returns its LUN and writes nothing; a caller's LUN is honoured.
        let lun_a = listed.iter().find(|d| d.disk_id.eq_ignore_ascii_case(&a)).unwrap().lun;
        sim.reset_calls();
        assert_eq!(
            disks.attach_disk(node, &a, AttachOptions::default()).await.unwrap(),
            lun_a
        );
        assert!(writes(&sim).is_empty(), "{:?}", writes(&sim));
        let lun = disks
            .attach_disk(
                node,
                &c,
                AttachOptions {
                    lun: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(lun, 7);
        // Detach everything (the last detach empties the list); detaching again is fine and free.
        for d in [&a, &b, &c] {
            disks.detach_disk(node, d).await.unwrap();
        }
        assert!(disks.data_disks(node).await.unwrap().is_empty());
        assert_eq!(managed_by(&sim, &a), None);
        sim.reset_calls();
        disks.detach_disk(node, &a).await.unwrap();
        assert!(writes(&sim).is_empty());
    }
    // A disk held by another VM: a clear error naming it, nothing written.
    disks
        .attach_disk("k8s-pool2-1", &a, AttachOptions::default())
        .await
        .unwrap();
    sim.reset_calls();
    let e = disks
        .attach_disk("k8s-pool1-vmss000000", &a, AttachOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DiskError::AttachedElsewhere { vm, .. } if vm.ends_with("/virtualMachines/k8s-pool2-1")),
        "{e}"
    );
    assert!(writes(&sim).is_empty());
    // Unknown disk, bad id, unknown node.
    let missing = format!("{}/providers/Microsoft.Compute/disks/nope", rg_id(&sim));
    assert!(matches!(
        disks
            .attach_disk("k8s-pool2-0", &missing, AttachOptions::default())
            .await,
        Err(DiskError::DiskNotFound(_))
    ));
    assert!(matches!(
        disks
            .attach_disk("k8s-pool2-0", "disk-a", AttachOptions::default())
            .await,
        Err(DiskError::InvalidDiskId(_))
    ));
    assert!(matches!(
        disks.attach_disk("nosuchnode", &b, AttachOptions::default()).await,
        Err(DiskError::NodeNotFound(_))
    ));
}

#[tokio::test]
async fn node_groups_resize_and_delete_instances_keeping_backend_pools() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let ss_id = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
        rg_id(&sim)
    );
    sim.with_store(|s, _| {
        let mut body = s.get(&ss_id).unwrap().body.clone();
        body["tags"] = json!({"min": "1", "max": "6"});
        s.put(&ss_id, "Microsoft.Compute/virtualMachineScaleSets", body, 0);
    });
    // A LoadBalancer Service first: the scale-set model and instances join the backend pool.
    let nodes: Vec<k8s_openapi::api::core::v1::Node> =
        ["k8s-pool1-vmss000000", "k8s-pool1-vmss000001", "k8s-pool1-vmss000002"]
            .iter()
            .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap())
            .collect();
    let svc = serde_json::from_value(
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "11111111-2222-3333-4444-555555555555"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
    )
    .unwrap();
    cloud.ensure_load_balancer("kubernetes", &svc, &nodes).await.unwrap();

    let groups = cloud.node_groups(vec![]);
    let list = groups.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].name.as_str(),
            list[0].min_size,
            list[0].max_size,
            list[0].target_size
        ),
        ("k8s-pool1-vmss", 1, 6, 3)
    );
    assert_eq!(
        groups.node_group_of("k8s-pool1-vmss000002").await.unwrap().as_deref(),
        Some("k8s-pool1-vmss")
    );
    assert_eq!(
        groups.node_group_of("k8s-pool2-0").await.unwrap(),
        None,
        "availability-set VMs are in no group"
    );

    // Up: a capacity-only PATCH; new instances follow the prefix + base-36 rule and join the pool.
    sim.reset_calls();
    groups.set_target_size("k8s-pool1-vmss", 5).await.unwrap();
    assert_eq!(writes(&sim), ["PATCH Microsoft.Compute/virtualMachineScaleSets"]);
    let instances = groups.instances("k8s-pool1-vmss").await.unwrap();
    let names: Vec<&str> = instances.iter().map(|i| i.node_name.as_str()).collect();
    assert_eq!(names.len(), 5);
    assert!(names.contains(&"k8s-pool1-vmss000004"), "{names:?}");
    assert!(instances
        .iter()
        .all(|i| i.state == InstanceState::Running && i.provider_id.starts_with("azure:///subscriptions/")));
    let model = sim.resource(&ss_id).unwrap();
    let pools = model["properties"]["virtualMachineProfile"]["networkProfile"].to_string();
    assert!(
        pools.contains("/backendAddressPools/kubernetes"),
        "the model keeps its pool: {pools}"
    );
    let new_nic = sim
        .with_store(|s, _| {
            s.all()
                .find(|r| r.id.contains("/virtualMachines/4/networkInterfaces/"))
                .map(|r| r.body.clone())
        })
        .unwrap();
    assert!(
        new_nic.to_string().contains("/backendAddressPools/kubernetes"),
        "a new instance joins the pool"
    );

    // Down by one: the highest instance goes.
    groups.set_target_size("k8s-pool1-vmss", 4).await.unwrap();
    let ids: Vec<String> = groups
        .instances("k8s-pool1-vmss")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&"4".to_string()), "{ids:?}");
    // Bounds.
    assert!(matches!(
        groups.set_target_size("k8s-pool1-vmss", 7).await,
        Err(NodeGroupError::OutOfBounds { max: 6, .. })
    ));
    // Delete two given nodes in one call.
    sim.reset_calls();
    groups
        .delete_nodes("k8s-pool1-vmss", &["k8s-pool1-vmss000000", "k8s-pool1-vmss000002"])
        .await
        .unwrap();
    assert_eq!(writes(&sim), ["POST Microsoft.Compute/virtualMachineScaleSets/delete"]);
    let left: Vec<String> = groups
        .instances("k8s-pool1-vmss")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.node_name)
        .collect();
    assert_eq!(left, ["k8s-pool1-vmss000001", "k8s-pool1-vmss000003"]);
    assert_eq!(groups.get("k8s-pool1-vmss").await.unwrap().target_size, 2);
    // Not below the minimum, not a node of another group.
    assert!(matches!(
        groups
            .delete_nodes("k8s-pool1-vmss", &["k8s-pool1-vmss000001", "k8s-pool1-vmss000003"])
            .await,
        Err(NodeGroupError::OutOfBounds { size: 0, min: 1, .. })
    ));
    assert!(matches!(
        groups.delete_nodes("k8s-pool1-vmss", &["k8s-pool2-0"]).await,
        Err(NodeGroupError::NotInGroup { .. })
    ));
    // Explicit bounds win over tags.
    let pinned = cloud.node_groups(vec![NodeGroupSpec {
        name: "k8s-pool1-vmss".into(),
        min_size: 2,
        max_size: 2,
    }]);
    assert!(matches!(
        pinned.set_target_size("k8s-pool1-vmss", 3).await,
        Err(NodeGroupError::OutOfBounds { .. })
    ));
}

/// An autoscaler polling every group and its instances again and again: one scale-set list and one
/// instance list per group per cache TTL, not per poll; our own writes are seen at once (the copies they
/// touch are refreshed), so a poll right after a resize shows the new size and instances.
#[tokio::test]
async fn node_group_polls_are_served_from_the_cache_and_writes_refresh_it() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let groups = cloud.node_groups(vec![]);
    sim.reset_calls();
    for _ in 0..10 {
        for g in groups.list().await.unwrap() {
            assert_eq!(groups.instances(&g.name).await.unwrap().len() as i64, g.target_size);
        }
    }
    let gets = sim.arm_calls("GET");
    assert_eq!(
        gets,
        2,
        "one scale-set list and one instance list for 10 polls: {:?}",
        sim.call_counts()
    );
    // Our resize: the next poll reads again and sees it; the poll after that is cached again.
    groups.set_target_size("k8s-pool1-vmss", 2).await.unwrap();
    sim.reset_calls();
    let g = groups.get("k8s-pool1-vmss").await.unwrap();
    assert_eq!(g.target_size, 2);
    assert_eq!(groups.instances("k8s-pool1-vmss").await.unwrap().len(), 2);
    assert_eq!(sim.arm_calls("GET"), 2, "{:?}", sim.call_counts());
    groups.list().await.unwrap();
    groups.instances("k8s-pool1-vmss").await.unwrap();
    assert_eq!(sim.arm_calls("GET"), 2, "{:?}", sim.call_counts());
}

/// A CSI driver asking a node's data disks again and again: answered from the per-node copy
/// (`vmCacheTTLInSeconds`), which the controller's own attach refreshes.
#[tokio::test]
async fn data_disk_lists_are_cached_and_refreshed_by_our_writes() {
    let (sim, cloud, _d) = cloud_for(&Scenario::default_cluster(), json!({})).await;
    let disks = cloud.disks();
    let node = "k8s-pool2-0";
    assert!(disks.data_disks(node).await.unwrap().is_empty());
    sim.reset_calls();
    for _ in 0..10 {
        assert!(disks.data_disks(node).await.unwrap().is_empty());
    }
    assert_eq!(sim.arm_calls("GET"), 0, "{:?}", sim.call_counts());
    // Our attach: the next list shows it.
    let rg = sim.cluster().resource_group.clone();
    let disk_id = format!(
        "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/pv-cache",
        sim.cluster().subscription
    );
    sim.with_store(|s, _| {
        s.put(
            &disk_id,
            "Microsoft.Compute/disks",
            json!({"location": "eastus", "properties": {"diskSizeGB": 10, "diskState": "Unattached"}}),
            0,
        );
    });
    let lun = disks.attach_disk(node, &disk_id, Default::default()).await.unwrap();
    let listed = disks.data_disks(node).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.lun).collect::<Vec<_>>(), vec![lun]);
}
