//! End-to-end tests: the CCM and library against azure-sim and kube-sim (see `tests/tests/`).
//! Shared set-up helpers live here.

use azure_cloud::config::CloudConfig;
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};

/// Starts azure-sim with a scenario and returns it with the provider config it wrote (as production reads
/// it: discovery endpoint, trusted CA, service principal), after applying `overrides` (azure.json keys).
/// The temporary directory holds the CA file and must outlive the config's use.
pub async fn sim_with_config(
    opts: SimOptions,
    scenario: &Scenario,
    overrides: serde_json::Value,
) -> (AzureSim, CloudConfig, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = AzureSim::start("127.0.0.1:0".parse().expect("loopback address"), opts, scenario)
        .await
        .expect("azure-sim starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("azure.json");
    sim.write_config(&path).expect("azure.json written");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("azure.json readable"))
        .expect("azure.json is JSON");
    if let (Some(target), Some(o)) = (v.as_object_mut(), overrides.as_object()) {
        for (k, val) in o {
            target.insert(k.clone(), val.clone());
        }
    }
    let (cfg, _) = CloudConfig::parse(&v.to_string(), &|_| None).expect("the sim's config is valid");
    (sim, cfg, dir)
}

/// A kube-rs client for a kube-sim.
pub async fn kube_client(kube: &kube_sim::KubeSim) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig()).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(cfg).expect("client builds")
}
