//! The binary's `--check-config`, as an operator runs it.

mod common;

use std::process::Command;

fn run(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .arg("--cloud-config")
        .arg(&path)
        .arg("--check-config")
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_vm_type_exits_1_and_names_the_key() {
    let (code, _, err) = run(r#"{"useInstanceMetadata": true, "vmType": "vmsss"}"#);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("vmType"), "{err}");
}

#[test]
fn values_the_runtime_cannot_honour_are_refused_with_the_key() {
    for (doc, key) in [
        (
            r#"{"useInstanceMetadata": true, "cloudProviderRateLimit": true, "cloudProviderRateLimitQPS": 1e-300}"#,
            "cloudProviderRateLimit",
        ),
        (r#"{"useInstanceMetadata": true, "vmType": "vmssflex"}"#, "vmType"),
        (
            r#"{"useInstanceMetadata": true, "loadBalancerSku": "service"}"#,
            "loadBalancerSku",
        ),
        (
            r#"{"useInstanceMetadata": true, "loadBalancerBackendPoolConfigurationType": "podIP"}"#,
            "loadBalancerBackendPoolConfigurationType",
        ),
        (
            r#"{"useInstanceMetadata": true, "cloudProviderRateLimitQPS": "fast"}"#,
            "cloudProviderRateLimitQPS",
        ),
    ] {
        let (code, _, err) = run(doc);
        assert_eq!(code, 1, "{doc}: {err}");
        assert!(err.contains(key), "{doc}: {err}");
        assert!(!err.contains("fast"), "{err}");
    }
    let (code, _, err) = run(r#"{"useInstanceMetadata": true, "disableAPICallCache": true}"#);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: disableAPICallCache is accepted but has no effect"),
        "{err}"
    );
}

#[test]
fn valid_file_exits_0_and_prints_redacted_config() {
    let (code, out, err) = run(
        r#"{"tenantId":"t","subscriptionId":"s","aadClientId":"c","aadClientSecret":"hunter2","resourceGroup":"RG","location":"eastus"}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"resourceGroup\": \"rg\""), "{out}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
}

#[test]
fn the_shipped_example_is_valid() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../azure.json.example")).unwrap();
    let (code, _, err) = run(&example);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn demo_initialises_every_simulated_node() {
    let stdout = common::run_ok(&["demo", "--exit"]);
    for (node, zone) in [
        ("k8s-pool1-vmss000001", "eastus-2"),
        ("k8s-pool1-vmss000002", "eastus-3"),
        ("k8s-pool2-1", " 1 "),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} missing:\n{stdout}"));
        assert!(
            line.contains(zone) && line.contains("Standard_D2s_v3") && line.contains("azure:///subscriptions/"),
            "{line}"
        );
    }
    assert!(stdout.contains("ARM calls for 5 nodes: 5 (writes: 0)"), "{stdout}");
    // The Service: an external IP, its LB rules and security rule, routes; then a clean deletion.
    assert!(stdout.contains("Service default/hello: EXTERNAL-IP "), "{stdout}");
    assert!(stdout.contains("-TCP-443  Tcp 443 -> 443"), "{stdout}");
    assert!(stdout.contains("security rule k8s-azure-lb_allow_IPv4_"), "{stdout}");
    assert!(stdout.contains("route k8s-pool2-1____10244"), "{stdout}");
    assert!(
        stdout.contains("Service deleted: its load-balancer frontend"),
        "{stdout}"
    );
}
