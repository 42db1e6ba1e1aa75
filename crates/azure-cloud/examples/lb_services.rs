//! S2 / S3 / S8: many LoadBalancer Services created at once on a large scale-set cluster, a second pass
//! with nothing changed, then all deleted at once — ARM writes and reads by operation, time to IP, and
//! leftovers, against azure-sim with its throttling model on.
//!
//! `cargo run --release -p azure-cloud --example lb_services [-- NODES SERVICES LATENCY_MS LRO_MS MODE]`
//! MODE: `nodeIP` (default, S2/S8) or `nodeIPConfiguration` (S3).

use azure_cloud::config::CloudConfig;
use azure_cloud::provider::LoadBalancer;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn summary(sim: &AzureSim) -> (usize, usize, usize, BTreeMap<String, usize>) {
    let mut by = BTreeMap::new();
    let (mut reads, mut writes, mut polls) = (0, 0, 0);
    for c in sim.calls().into_iter().filter(|c| c.is_arm()) {
        if c.operation == "poll" {
            polls += 1;
            continue;
        }
        if c.status == 429 {
            *by.entry(format!("429 {} {}", c.method, c.resource_type)).or_insert(0) += 1;
            continue;
        }
        if c.method == "GET" {
            reads += 1;
        } else {
            writes += 1;
        }
        *by.entry(format!("{} {}", c.method, c.resource_type)).or_insert(0) += 1;
    }
    (reads, writes, polls, by)
}

fn report(phase: &str, sim: &AzureSim, took: Duration) {
    let (reads, writes, polls, by) = summary(sim);
    println!("{phase}: {writes} writes, {reads} reads (429 answers listed apart), {polls} LRO polls, wall {took:.2?}");
    for (k, v) in by {
        println!("    {v:>5}  {k}");
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "uid": format!("{i:08x}-1111-2222-3333-444444444444")},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .expect("service")
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // RUST_LOG=info shows the provider's decisions.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (nodes_n, services, latency, lro) = (num(0, 1000), num(1, 200) as usize, num(2, 50), num(3, 2000));
    let mode = args.get(4).cloned().unwrap_or_else(|| "nodeIP".into());
    let sets = nodes_n.div_ceil(1000).max(1);
    let per = nodes_n / sets;
    let scenario = Scenario::scale_sets(sets as u32, per as u32);
    let opts = SimOptions {
        latency: Duration::from_millis(latency),
        lro_delay: Duration::from_millis(lro),
        throttling: std::env::var("SIM_THROTTLING").map_or(true, |v| v != "0"),
        ..Default::default()
    };
    let sim = AzureSim::start("127.0.0.1:0".parse().expect("addr"), opts, &scenario)
        .await
        .expect("sim");
    let dir = std::env::temp_dir().join(format!("lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("azure.json");
    sim.write_config(&path).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    v["useInstanceMetadata"] = false.into();
    v["loadBalancerBackendPoolConfigurationType"] = json!(mode);
    let (cfg, _) = CloudConfig::parse(&v.to_string(), &|_| None).expect("config");
    let cloud = Arc::new(AzureCloud::new(cfg, &|_| None).await.expect("cloud"));
    // Nodes as the node controller leaves them (addresses from the provider).
    let mut nodes = Vec::new();
    for s in 0..sets {
        for i in 0..per {
            let name = azure_cloud::vmset::names::computer_name(&format!("pool{s}"), i);
            let mut node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
            let md = azure_cloud::provider::InstancesV2::instance_metadata(&*cloud, &node)
                .await
                .expect("metadata");
            node.status = Some(serde_json::from_value(json!({"addresses": md.node_addresses})).expect("status"));
            nodes.push(node);
        }
    }
    let nodes = Arc::new(nodes);
    println!(
        "cluster: {} nodes in {sets} scale set(s); {services} services; sim latency {latency} ms/call, LRO {lro} ms; pools: {mode}; throttling model {}",
        nodes.len(),
        if sim.options().throttling { "on" } else { "off" }
    );

    // S2 / S3: all services at once.
    sim.reset_calls();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..services)
        .map(|i| {
            let (cloud, nodes) = (cloud.clone(), nodes.clone());
            tokio::spawn(async move {
                let r = cloud.ensure_load_balancer("kubernetes", &service(i), &nodes).await;
                (r, t0.elapsed())
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (r, at) = t.await.expect("task");
        match r {
            Ok(_) => times.push(at),
            Err(e) => {
                failed += 1;
                eprintln!("ensure failed: {e}");
            }
        }
    }
    let took = t0.elapsed();
    times.sort();
    report("create", &sim, took);
    println!(
        "    time to IP: p50 {:.2?}, p99 {:.2?}, max {:.2?}; failed {failed}",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );

    // Second pass: nothing changed.
    sim.reset_calls();
    let t0 = Instant::now();
    let again = futures::future::join_all((0..services).map(|i| {
        let (cloud, nodes) = (cloud.clone(), nodes.clone());
        async move { cloud.ensure_load_balancer("kubernetes", &service(i), &nodes).await }
    }))
    .await;
    assert!(again.iter().all(|r| r.is_ok()));
    report("second pass", &sim, t0.elapsed());

    // S8: delete all at once.
    sim.reset_calls();
    let t0 = Instant::now();
    let deleted = futures::future::join_all((0..services).map(|i| {
        let cloud = cloud.clone();
        async move { cloud.ensure_load_balancer_deleted("kubernetes", &service(i)).await }
    }))
    .await;
    let errors = deleted.iter().filter(|r| r.is_err()).count();
    report("delete", &sim, t0.elapsed());
    let leftovers = sim.with_store(|s, _| {
        s.all()
            .filter(|r| {
                let id = r.id.to_ascii_lowercase();
                id.contains("/publicipaddresses/")
                    || id.contains("/loadbalancers/")
                    || (id.contains("/networkinterfaces/") && r.body.to_string().contains("backendAddressPools/"))
            })
            .count()
    });
    let rules = sim.with_store(|s, c| {
        let nsg = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/{}",
            c.subscription, c.resource_group, c.nsg
        );
        s.get(&nsg)
            .and_then(|r| r.body["properties"]["securityRules"].as_array().map(Vec::len))
            .unwrap_or(0)
    });
    println!("    delete errors {errors}; leftovers: {leftovers} LB/PIP/pool references, {rules} security rules");
    std::fs::remove_dir_all(&dir).ok();
}
