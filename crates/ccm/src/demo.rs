//! `azure-cloud-controller-manager demo`: the provider against the built-in simulated Azure, with no
//! account. Starts azure-sim (a scale set of 3 instances across zones plus 2 availability-set VMs), writes a
//! real azure.json pointing at it (endpoint discovery, its CA, a service principal it accepts), loads that
//! file exactly as `--cloud-config` does, and initialises every node as the cloud-node controller would
//! (InstanceMetadata: provider id, instance type, zone, region, addresses), then reports the ARM calls made.
//!
//! The controllers and the in-memory Kubernetes API server are later work; this version shows the
//! provider side of node initialisation.

use azure_cloud::config::CloudConfig;
use azure_cloud::provider::InstancesV2;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::io::Write;
use std::time::Instant;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep azure-sim serving after the demo until Ctrl-C (its azure.json path is printed).
    #[arg(long)]
    pub keep_running: bool,
    /// Scenario file for azure-sim (JSON or YAML); default: the small built-in cluster.
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,
}

/// Runs the demo; returns the exit code.
pub async fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<(), String> {
    let t0 = Instant::now();
    let scenario = match &args.scenario {
        Some(p) => {
            Scenario::from_text(&std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?)?
        }
        None => Scenario::default_cluster(),
    };
    let sim = AzureSim::start(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        SimOptions::default(),
        &scenario,
    )
    .await
    .map_err(|e| e.to_string())?;
    let dir = tempdir()?;
    let config_path = dir.join("azure.json");
    sim.write_config(&config_path)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(
        out,
        format!(
            "azure-sim serving {} ({} resources); config written to {}",
            sim.url(),
            sim.state().as_array().map_or(0, Vec::len),
            config_path.display()
        ),
    );

    // Exactly what --cloud-config does.
    let (cfg, _) = CloudConfig::load(&config_path, &|_| None).map_err(|e| e.to_string())?;
    let cloud = AzureCloud::new(cfg, &|_| None).await.map_err(|e| e.to_string())?;
    w(
        out,
        format!(
            "connected: vmType {}, resource group {}, location {}",
            cloud.config().vm_type,
            cloud.config().resource_group,
            cloud.config().location
        ),
    );

    // The nodes a kubelet would register: each VM's computer name.
    let mut names: Vec<String> = sim
        .state()
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            let t = r["type"].as_str().unwrap_or_default();
            t.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines")
                || t.eq_ignore_ascii_case("Microsoft.Compute/virtualMachineScaleSets/virtualMachines")
        })
        .filter_map(|r| {
            r.pointer("/properties/osProfile/computerName")
                .and_then(|v| v.as_str())
                .map(str::to_ascii_lowercase)
        })
        .collect();
    names.sort();
    sim.reset_calls();
    w(out, String::new());
    w(
        out,
        format!(
            "{:<24} {:<16} {:<10} {:<8} {:<34} PROVIDER ID",
            "NODE", "INSTANCE TYPE", "ZONE", "REGION", "ADDRESSES"
        ),
    );
    for name in &names {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match cloud.instance_metadata(&node).await {
            Ok(md) => {
                let addrs: Vec<String> = md
                    .node_addresses
                    .iter()
                    .map(|a| format!("{}={}", a.type_, a.address))
                    .collect();
                w(
                    out,
                    format!(
                        "{:<24} {:<16} {:<10} {:<8} {:<34} {}",
                        name,
                        md.instance_type,
                        md.zone,
                        md.region,
                        addrs.join(","),
                        md.provider_id
                    ),
                );
            }
            Err(e) => w(out, format!("{name:<24} error: {e}")),
        }
    }
    w(out, String::new());
    let calls = sim.calls();
    let arm = calls.iter().filter(|c| c.is_arm()).count();
    w(
        out,
        format!(
            "ARM calls for {} nodes: {arm} (writes: {})",
            names.len(),
            calls.iter().filter(|c| c.is_arm() && c.method != "GET").count()
        ),
    );
    for (k, v) in sim.call_counts() {
        w(out, format!("  {v:>4}  {k}"));
    }
    w(out, format!("done in {:?}", t0.elapsed()));
    if args.keep_running {
        w(
            out,
            format!(
                "azure-sim keeps serving at {}; azure.json: {} (Ctrl-C to stop)",
                sim.url(),
                config_path.display()
            ),
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("azure-ccm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}
