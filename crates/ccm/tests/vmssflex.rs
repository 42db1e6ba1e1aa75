//! The CCM on a cluster of flexible scale sets (`vmType: vmssflex`): nodes initialised from the VM list,
//! a LoadBalancer Service served by the flex VMs' NICs, and the Node of a deleted VM removed.

mod common;
use common::{eventually, ingress, lb};

use azure_sim::scenario::{ScaleSetSpec, Scenario};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccm_on_flexible_scale_sets() {
    let scenario = Scenario {
        scale_sets: vec![ScaleSetSpec {
            name: "flexpool".into(),
            computer_name_prefix: Some("flexpool-".into()),
            instances: 3,
            zones: vec!["1".into(), "2".into(), "3".into()],
            orchestration_mode: "Flexible".into(),
            ..Default::default()
        }],
        ..Scenario::default()
    };
    // VM lists cached for 2 s: a deleted VM is noticed within the test (the default is 600 s, as upstream).
    let env = common::env_with(
        &scenario,
        json!({"vmType": "vmssflex", "vmssFlexVMCacheTTLInSeconds": 2}),
    )
    .await;
    let names = ["flexpool-000000", "flexpool-000001", "flexpool-000002"];
    common::add_ready_nodes(&env.client, &names).await;
    let _ccm = common::start_ccm(&env);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let initialised = common::nodes_initialised(&env.client).await;
    assert_eq!(initialised.len(), 3);
    for n in &initialised {
        let pid = n.spec.as_ref().unwrap().provider_id.clone().unwrap();
        assert!(
            pid.contains("/providers/Microsoft.Compute/virtualMachines/flexpool_"),
            "{pid}"
        );
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert!(
            labels
                .get("topology.kubernetes.io/zone")
                .is_some_and(|z| z.starts_with("eastus-")),
            "{labels:?}"
        );
        assert_eq!(
            labels.get("node.kubernetes.io/instance-type").map(String::as_str),
            Some("Standard_D2s_v3")
        );
    }
    // Initialising the three nodes read the VM list (and NICs) once or twice, never once per node.
    let vm_lists = env
        .sim
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.resource_type == "Microsoft.Compute/virtualMachines")
        .count();
    assert!(vm_lists <= 2, "VM lists: {vm_lists}");

    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    services
        .create(&PostParams::default(), &common::web_service("web"))
        .await
        .unwrap();
    eventually("external IP", Duration::from_secs(60), || async {
        ingress(&services.get("web").await.ok()?).first().cloned()
    })
    .await;
    assert!(lb(&env.sim, "kubernetes").is_some());
    let rg = format!(
        "/subscriptions/{}/resourceGroups/{}",
        env.sim.cluster().subscription,
        env.sim.cluster().resource_group
    );
    for i in 0..3 {
        let nic = env
            .sim
            .resource(&format!(
                "{rg}/providers/Microsoft.Network/networkInterfaces/flexpool_{i:08x}-nic"
            ))
            .unwrap();
        assert!(
            nic.to_string().contains("backendAddressPools/kubernetes"),
            "NIC {i} in the pool"
        );
    }

    // A VM deleted in Azure: its Node goes (confirmed absence), the others stay.
    env.sim
        .with_store(|s, _| {
            azure_sim::scenario::remove_vm(
                s,
                &format!("{rg}/providers/Microsoft.Compute/virtualMachines/flexpool_00000001"),
            )
        })
        .unwrap();
    // The kubelet stops reporting: the Node goes NotReady, and the lifecycle controller asks the provider.
    nodes
        .patch_status(
            "flexpool-000001",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})),
        )
        .await
        .unwrap();
    eventually("the deleted VM's Node removed", Duration::from_secs(60), || async {
        let l = nodes.list(&Default::default()).await.ok()?;
        let names: Vec<String> = l.items.iter().filter_map(|n| n.metadata.name.clone()).collect();
        (names.len() == 2 && !names.contains(&"flexpool-000001".to_string())).then_some(())
    })
    .await;
    services.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("service gone", Duration::from_secs(60), || async {
        services.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(lb(&env.sim, "kubernetes").is_none());
}
