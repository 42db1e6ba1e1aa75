//! `azure-cloud-controller-manager demo`: the provider against the built-in simulated Azure, with no
//! account. Starts azure-sim (a scale set of 3 instances across zones plus 2 availability-set VMs), writes a
//! real azure.json pointing at it (endpoint discovery, its CA, a service principal it accepts), loads that
//! file exactly as `--cloud-config` does, starts kube-sim with one uninitialised Node per VM (as kubelets
//! with `--cloud-provider=external` register), runs the cloud-node and cloud-node-lifecycle controllers over
//! HTTP, and shows the initialised nodes (provider id, instance type, zone, region, addresses) and the ARM
//! calls made. Load balancers and routes are not in this version of the demo.

use azure_cloud::config::CloudConfig;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
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

    // kube-sim: the cluster. Nodes register as kubelets with --cloud-provider=external do: tainted
    // uninitialised, Ready; the CCM's node controller (over HTTP, through kube-rs) initialises them.
    let kube = kube_sim::KubeSim::start("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .await
        .map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).map_err(|e| e.to_string())?;
    w(
        out,
        format!(
            "kube-sim serving {}; kubeconfig written to {}",
            kube.url(),
            kubeconfig.display()
        ),
    );
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
    for n in &names {
        let node = serde_json::json!({"metadata": {"name": n},
            "spec": {"taints": [{"key": crate::controllers::UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}]}});
        kube.create("nodes", "", node).map_err(|e| e.message)?;
        kube.merge_patch(
            "nodes",
            "",
            n,
            &serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            true,
        )
        .map_err(|e| e.message)?;
    }
    w(out, format!("registered {} uninitialised nodes", names.len()));
    sim.reset_calls();
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig()).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let cloud: std::sync::Arc<dyn azure_cloud::provider::InstancesV2> = std::sync::Arc::new(cloud);
    let controllers = tokio::spawn(crate::controllers::run(
        client,
        cloud,
        crate::controllers::Timing::default(),
    ));
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let initialised = |n: &serde_json::Value| {
        n.pointer("/spec/taints")
            .and_then(|t| t.as_array())
            .is_none_or(|t| t.is_empty())
    };
    while !kube.list("nodes").iter().all(initialised) {
        if Instant::now() > deadline {
            return Err("nodes were not initialised within 30 s".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w(out, format!("all nodes initialised {:?} after start", t0.elapsed()));
    w(out, String::new());
    w(
        out,
        format!(
            "{:<24} {:<16} {:<10} {:<8} {:<22} PROVIDER ID",
            "NODE", "INSTANCE TYPE", "ZONE", "REGION", "INTERNAL IP"
        ),
    );
    for node in kube.list("nodes") {
        let l = |k: &str| {
            node.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let ip = node
            .pointer("/status/addresses")
            .and_then(|a| a.as_array())
            .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("")
            .to_string();
        w(
            out,
            format!(
                "{:<24} {:<16} {:<10} {:<8} {:<22} {}",
                node.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or(""),
                l("node.kubernetes.io/instance-type"),
                l("topology.kubernetes.io/zone"),
                l("topology.kubernetes.io/region"),
                ip,
                node.pointer("/spec/providerID").and_then(|v| v.as_str()).unwrap_or("")
            ),
        );
    }
    controllers.abort();
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
