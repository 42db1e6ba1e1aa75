//! `azure-cloud-controller-manager demo`: the provider against the built-in simulated Azure, with no
//! account. Starts azure-sim (a scale set of 3 instances across zones plus 2 availability-set VMs), writes a
//! real azure.json pointing at it (endpoint discovery, its CA, a service principal it accepts), loads that
//! file exactly as `--cloud-config` does, starts kube-sim with one uninitialised Node per VM (as kubelets
//! with `--cloud-provider=external` register), runs the cloud-node and cloud-node-lifecycle controllers over
//! HTTP, and shows the initialised nodes (provider id, instance type, zone, region, addresses) and the ARM
//! calls made; then the route and service controllers: pod-CIDR routes, and a LoadBalancer Service whose
//! external IP, load-balancer frontends, rules and probes, public IP and security rules are shown with the
//! ARM calls they took. It keeps running until Ctrl-C (or `--exit`), then deletes the Service and shows that
//! nothing is left in Azure.

use azure_cloud::config::CloudConfig;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use std::io::Write;
use std::time::Instant;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Exit after the scenario instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
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
    for (i, n) in names.iter().enumerate() {
        let node = serde_json::json!({"metadata": {"name": n},
            "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")],
                "taints": [{"key": crate::controllers::UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}]}});
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
    let cloud = std::sync::Arc::new(cloud);
    let cloud_v2: std::sync::Arc<dyn azure_cloud::provider::InstancesV2> = cloud.clone();
    let (nodes, drive_nodes) = crate::informer::NodeInformer::new(client.clone());
    let mut controllers = vec![
        tokio::spawn(drive_nodes),
        tokio::spawn(crate::controllers::run(
            client.clone(),
            cloud_v2,
            crate::controllers::Timing::default(),
            nodes.clone(),
        )),
    ];
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

    // Routes and a LoadBalancer Service, through the route and service controllers.
    sim.reset_calls();
    let t1 = Instant::now();
    let routes: std::sync::Arc<dyn azure_cloud::provider::Routes> = cloud.clone();
    controllers.push(tokio::spawn(crate::controllers::route_controller(
        client.clone(),
        routes,
        crate::controllers::RouteSettings {
            cluster_name: CLUSTER.into(),
            cluster_cidrs: vec!["10.244.0.0/16".parse().map_err(|e| format!("{e}"))?],
            period: std::time::Duration::from_secs(10),
            metrics: Default::default(),
        },
        nodes.clone(),
    )));
    let lb: std::sync::Arc<dyn azure_cloud::provider::LoadBalancer> = cloud.clone();
    controllers.push(tokio::spawn(crate::service::run(
        client.clone(),
        lb,
        crate::service::ServiceSettings {
            cluster_name: CLUSTER.into(),
            workers: 10,
            metrics: Default::default(),
            node_sync_period: crate::service::NODE_SYNC_PERIOD,
            labels_matter: false,
        },
        crate::events::Recorder::new(client.clone(), crate::service::COMPONENT),
        nodes.clone(),
        None,
    )));
    let service = serde_json::json!({
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "hello"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "nodePort": 30443, "protocol": "TCP"}]},
    });
    kube.create("services", "default", service).map_err(|e| e.message)?;
    w(out, String::new());
    w(
        out,
        "created Service default/hello (type LoadBalancer, ports 80 and 443)".into(),
    );
    let ip = wait_for(30, || {
        kube.get("services", "default", "hello").ok().and_then(|s| {
            s.pointer("/status/loadBalancer/ingress/0/ip")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    })
    .await
    .ok_or("the Service got no external IP within 30 s")?;
    wait_for(30, || {
        let routes = route_table(&sim);
        (routes.len() == names.len()).then_some(())
    })
    .await
    .ok_or("routes were not created within 30 s")?;
    w(
        out,
        format!(
            "Service default/hello: EXTERNAL-IP {ip} ({:?} after creation)",
            t1.elapsed()
        ),
    );
    show_azure(&sim, out);
    w(out, String::new());
    let calls = sim.calls();
    w(
        out,
        format!(
            "ARM calls for the routes and the Service: {} (writes: {})",
            calls.iter().filter(|c| c.is_arm()).count(),
            calls.iter().filter(|c| c.is_arm() && c.method != "GET").count()
        ),
    );
    for (k, v) in sim.call_counts() {
        w(out, format!("  {v:>4}  {k}"));
    }
    w(out, format!("ready in {:?}", t0.elapsed()));
    if !args.exit {
        w(
            out,
            format!(
                "serving until Ctrl-C — azure-sim {} (azure.json: {}), kube-sim {} (kubeconfig: {})",
                sim.url(),
                config_path.display(),
                kube.url(),
                kubeconfig.display()
            ),
        );
        let _ = out.flush();
        let _ = tokio::signal::ctrl_c().await;
    }
    // Clean-up: delete the Service; the controller removes its Azure resources, then its finalizer.
    kube.delete("services", "default", "hello").map_err(|e| e.message)?;
    wait_for(30, || kube.get("services", "default", "hello").is_err().then_some(()))
        .await
        .ok_or("the Service was not cleaned up within 30 s")?;
    for c in controllers {
        c.abort();
    }
    let left = leftovers(&sim);
    w(
        out,
        if left.is_empty() {
            "Service deleted: its load-balancer frontend, rules, probes, public IP and security rule are gone (the LB with it)".into()
        } else {
            format!("Service deleted, but Azure still holds: {left:?}")
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err("resources left behind".into())
    }
}

/// The cluster name the demo uses (`--cluster-name` default).
const CLUSTER: &str = "kubernetes";

async fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn of_type(sim: &AzureSim, ty: &str) -> Vec<serde_json::Value> {
    sim.state()
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(ty)))
        .cloned()
        .collect()
}

fn route_table(sim: &AzureSim) -> Vec<serde_json::Value> {
    of_type(sim, "Microsoft.Network/routeTables")
        .first()
        .and_then(|t| t.pointer("/properties/routes").and_then(|r| r.as_array()).cloned())
        .unwrap_or_default()
}

fn leftovers(sim: &AzureSim) -> Vec<String> {
    let mut out: Vec<String> = ["Microsoft.Network/loadBalancers", "Microsoft.Network/publicIPAddresses"]
        .iter()
        .flat_map(|t| of_type(sim, t))
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    for nsg in of_type(sim, "Microsoft.Network/networkSecurityGroups") {
        for r in nsg
            .pointer("/properties/securityRules")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            out.extend(r["name"].as_str().map(str::to_string));
        }
    }
    out
}

fn show_azure(sim: &AzureSim, out: &mut dyn Write) {
    let s = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .map(|x| x.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let last = |id: String| id.rsplit('/').next().unwrap_or_default().to_string();
    let mut lines = Vec::new();
    for lb in of_type(sim, "Microsoft.Network/loadBalancers") {
        lines.push(format!(
            "load balancer {} (SKU {})",
            s(&lb, "/name"),
            s(&lb, "/sku/name")
        ));
        for f in lb
            .pointer("/properties/frontendIPConfigurations")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "  frontend {}  public IP {}",
                s(f, "/name"),
                last(s(f, "/properties/publicIPAddress/id"))
            ));
        }
        for r in lb
            .pointer("/properties/loadBalancingRules")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "  rule     {}  {} {} -> {}  probe {}",
                s(r, "/name"),
                s(r, "/properties/protocol"),
                s(r, "/properties/frontendPort"),
                s(r, "/properties/backendPort"),
                last(s(r, "/properties/probe/id"))
            ));
        }
        for p in lb
            .pointer("/properties/probes")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "  probe    {}  {} port {}",
                s(p, "/name"),
                s(p, "/properties/protocol"),
                s(p, "/properties/port")
            ));
        }
        for p in lb
            .pointer("/properties/backendAddressPools")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            lines.push(format!("  pool     {}", s(p, "/name")));
        }
    }
    for pip in of_type(sim, "Microsoft.Network/publicIPAddresses") {
        lines.push(format!(
            "public IP {}  {}  tags k8s-azure-service={}",
            s(&pip, "/name"),
            s(&pip, "/properties/ipAddress"),
            s(&pip, "/tags/k8s-azure-service")
        ));
    }
    for nsg in of_type(sim, "Microsoft.Network/networkSecurityGroups") {
        for r in nsg
            .pointer("/properties/securityRules")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let or = |a: &str, b: &str| {
                let x = s(r, a);
                if x.is_empty() {
                    s(r, b)
                } else {
                    x
                }
            };
            lines.push(format!(
                "security rule {} (priority {}): {} {} from {} to {} ports {}",
                s(r, "/name"),
                s(r, "/properties/priority"),
                s(r, "/properties/access"),
                s(r, "/properties/protocol"),
                or("/properties/sourceAddressPrefix", "/properties/sourceAddressPrefixes"),
                or(
                    "/properties/destinationAddressPrefix",
                    "/properties/destinationAddressPrefixes"
                ),
                or("/properties/destinationPortRange", "/properties/destinationPortRanges"),
            ));
        }
    }
    for r in route_table(sim) {
        lines.push(format!(
            "route {}  {} -> {}",
            s(&r, "/name"),
            s(&r, "/properties/addressPrefix"),
            s(&r, "/properties/nextHopIpAddress")
        ));
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

fn tempdir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("azure-ccm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}
