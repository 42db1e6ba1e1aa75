//! Set-up shared by the provider's azure-sim tests.
#![allow(dead_code)] // each test binary uses a part

use azure_cloud::config::CloudConfig;
use azure_cloud::AzureCloud;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use serde_json::json;

/// No environment variables.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// Starts azure-sim with `scenario` and builds the provider from the azure.json it writes (ARM only, no
/// IMDS), with `tweak` applied on top. Call accounting starts empty.
pub async fn cloud_for(scenario: &Scenario, tweak: serde_json::Value) -> (AzureSim, AzureCloud, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), SimOptions::default(), scenario)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    sim.write_config(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["useInstanceMetadata"] = json!(false);
    for (k, val) in tweak.as_object().unwrap() {
        v[k] = val.clone();
    }
    let (cfg, _) = CloudConfig::parse(&v.to_string(), &no_env).unwrap();
    let cloud = AzureCloud::new(cfg, &no_env).await.unwrap();
    sim.reset_calls();
    (sim, cloud, dir)
}
