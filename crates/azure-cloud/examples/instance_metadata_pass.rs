//! ARM calls and time of a full InstanceMetadata pass (what the node controller does at start-up) over
//! a simulated cluster of N scale-set nodes, against azure-sim.
//!
//! `cargo run --release -p azure-cloud --example instance_metadata_pass [-- NODES SCALE_SETS LATENCY_MS]`

use azure_cloud::config::CloudConfig;
use azure_cloud::provider::InstancesV2;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use k8s_openapi::api::core::v1::Node;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a: Vec<u64> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (nodes, sets, latency) = (
        a.first().copied().unwrap_or(1000),
        a.get(1).copied().unwrap_or(4),
        a.get(2).copied().unwrap_or(0),
    );
    let per = nodes / sets;
    let scenario = Scenario::scale_sets(sets as u32, per as u32);
    let opts = SimOptions {
        latency: Duration::from_millis(latency),
        ..Default::default()
    };
    let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), opts, &scenario)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("imd-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("azure.json");
    sim.write_config(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["useInstanceMetadata"] = false.into();
    let (cfg, _) = CloudConfig::parse(&v.to_string(), &|_| None).unwrap();
    let cloud = AzureCloud::new(cfg, &|_| None).await.unwrap();
    sim.reset_calls();
    let names: Vec<Node> = (0..sets)
        .flat_map(|s| (0..per).map(move |i| azure_cloud::vmset::names::computer_name(&format!("pool{s}"), i)))
        .map(|n| Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(n),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let t0 = Instant::now();
    let results = futures::future::join_all(names.iter().map(|n| cloud.instance_metadata(n))).await;
    let took = t0.elapsed();
    assert!(results.iter().all(|r| r.is_ok()));
    let arm: Vec<_> = sim.calls().into_iter().filter(|c| c.is_arm()).collect();
    println!(
        "nodes: {} in {sets} scale sets; sim latency {latency} ms/call",
        names.len()
    );
    println!(
        "ARM calls: {} ({} GET, {} writes); wall time {took:?}",
        arm.len(),
        arm.iter().filter(|c| c.method == "GET").count(),
        arm.iter().filter(|c| c.method != "GET").count()
    );
    for (k, v) in sim.call_counts() {
        println!("  {v:>5}  {k}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
