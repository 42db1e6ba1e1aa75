//! Embedding the provider in a Rust program (what a CSI driver or cluster autoscaler does), run against
//! the built-in simulated Azure: build `AzureCloud` from an azure.json, use the cloud-provider traits
//! (InstancesV2, LoadBalancer), attach and detach a data disk, list and resize a node group.
//!
//! `cargo run -p azure-cloud --example embedding`

use azure_cloud::config::CloudConfig;
use azure_cloud::disks::AttachOptions;
use azure_cloud::provider::{InstancesV2, LoadBalancer};
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // 1. A simulated Azure and the azure.json pointing at it (in production: your cluster's azure.json).
    let sim = AzureSim::start(
        "127.0.0.1:0".parse()?,
        SimOptions::default(),
        &Scenario::default_cluster(),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("azure-cloud-embedding-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("azure.json");
    sim.write_config(&path)?;

    // 2. The provider: load the config exactly as the CCM does, then connect.
    let (mut cfg, report) = CloudConfig::load(&path, &azure_cloud::config::process_env)?;
    for key in report.unknown_keys {
        eprintln!("ignored unknown key {key}");
    }
    cfg.use_instance_metadata = false; // this program does not run on an Azure VM
    let cloud = AzureCloud::new(cfg, &azure_cloud::config::process_env).await?;

    // 3. Instances: what Azure knows about a node.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "k8s-pool1-vmss000001"}}))?;
    let md = cloud.instance_metadata(&node).await?;
    println!(
        "node k8s-pool1-vmss000001: {} in {} ({})",
        md.instance_type, md.zone, md.provider_id
    );

    // 4. LoadBalancer: a Service's public IP, rules and security rule.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "0b9a6c2e-6a55-4c3e-9a51-2f1d3c4b5a69"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }))?;
    let status = cloud
        .ensure_load_balancer("kubernetes", &svc, std::slice::from_ref(&node))
        .await?;
    let ip = status
        .ingress
        .unwrap_or_default()
        .first()
        .and_then(|i| i.ip.clone())
        .unwrap_or_default();
    println!("service default/web: external IP {ip}");

    // 5. Data disks (a CSI driver's attach/detach).
    let disk_id = sim.with_store(|s, c| {
        let id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/pvc-1",
            c.subscription, c.resource_group
        );
        s.put(
            &id,
            "Microsoft.Compute/disks",
            json!({"location": c.location, "properties": {"diskSizeGB": 16}}),
            0,
        );
        id
    });
    let disks = cloud.disks();
    let lun = disks
        .attach_disk("k8s-pool1-vmss000001", &disk_id, AttachOptions::default())
        .await?;
    println!(
        "disk pvc-1 attached at LUN {lun}; node has {:?}",
        disks
            .data_disks("k8s-pool1-vmss000001")
            .await?
            .iter()
            .map(|d| (&d.name, d.lun))
            .collect::<Vec<_>>()
    );
    disks.detach_disk("k8s-pool1-vmss000001", &disk_id).await?;
    println!("disk pvc-1 detached");

    // 6. Node groups (a cluster autoscaler's view): bounds from explicit specs (or min/max tags).
    let groups = cloud.node_groups(vec![azure_cloud::nodegroups::NodeGroupSpec {
        name: "k8s-pool1-vmss".into(),
        min_size: 1,
        max_size: 10,
    }]);
    for g in groups.list().await? {
        println!(
            "node group {}: {} instances ({}..={})",
            g.name, g.target_size, g.min_size, g.max_size
        );
    }
    groups.set_target_size("k8s-pool1-vmss", 4).await?;
    let names: Vec<String> = groups
        .instances("k8s-pool1-vmss")
        .await?
        .into_iter()
        .map(|i| i.node_name)
        .collect();
    println!("resized to 4: {names:?}");

    cloud.ensure_load_balancer_deleted("kubernetes", &svc).await?;
    println!(
        "service default/web deleted; ARM calls made: {}",
        sim.calls().iter().filter(|c| c.is_arm()).count()
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
