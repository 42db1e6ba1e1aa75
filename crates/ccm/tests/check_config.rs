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

/// What this session implemented is accepted now: flexible scale sets, multiple standard load balancers,
/// network resources in another tenant (with a service principal).
#[test]
fn flex_multiple_load_balancers_and_another_network_tenant_are_accepted() {
    for doc in [
        r#"{"useInstanceMetadata": true, "vmType": "vmssflex"}"#,
        r#"{"useInstanceMetadata": true, "vmType": "vmss", "enableVmssFlexNodes": true}"#,
        r#"{"useInstanceMetadata": true, "loadBalancerBackendPoolConfigurationType": "nodeIP", "multipleStandardLoadBalancerConfigurations": [{"name": "kubernetes"}, {"name": "lb2", "serviceNamespaceSelector": {"matchLabels": {"team": "a"}}}]}"#,
        r#"{"tenantId": "t", "subscriptionId": "s", "aadClientId": "c", "aadClientSecret": "x", "resourceGroup": "rg", "location": "eastus", "networkResourceTenantID": "t2", "networkResourceSubscriptionID": "s2"}"#,
    ] {
        let (code, _, err) = run(doc);
        assert_eq!(code, 0, "{doc}: {err}");
    }
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

/// Upstream's flags (as its chart and real manifests set them) are accepted: the binary never exits 2 on
/// one of them.
#[test]
fn upstream_flags_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    std::fs::write(&path, r#"{"useInstanceMetadata": true}"#).unwrap();
    let flags = [
        "--allocate-node-cidrs=false",
        "--authentication-kubeconfig=/etc/kubernetes/kubeconfig",
        "--authentication-skip-lookup",
        "--authentication-token-webhook-cache-ttl=10s",
        "--authentication-tolerate-lookup-failure=false",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--authorization-always-allow-groups=system:masters",
        "--authorization-kubeconfig=/etc/kubernetes/kubeconfig",
        "--authorization-webhook-cache-authorized-ttl=10s",
        "--authorization-webhook-cache-unauthorized-ttl=10s",
        "--bind-address=0.0.0.0",
        "--cert-dir=/var/run/ccm",
        "--cidr-allocator-type=RangeAllocator",
        "--client-ca-file=/etc/kubernetes/ca.crt",
        "--cloud-config-secret-name=azure-cloud-provider",
        "--cloud-provider=azure",
        "--cluster-cidr=10.244.0.0/16",
        "--cluster-name=prod-1",
        "--concurrent-node-syncs=1",
        "--concurrent-service-syncs=10",
        "--configure-cloud-routes=true",
        "--contention-profiling=false",
        "--controller-start-interval=0s",
        "--controllers=*,-cloud-node",
        "--enable-dynamic-reloading=false",
        "--feature-gates=",
        "--http2-max-streams-per-connection=0",
        "--kube-api-burst=30",
        "--kube-api-content-type=application/vnd.kubernetes.protobuf",
        "--kube-api-qps=20",
        "--leader-elect=true",
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-resource-lock=leases",
        "--leader-elect-resource-name=cloud-controller-manager",
        "--leader-elect-resource-namespace=kube-system",
        "--leader-elect-retry-period=2s",
        "--log-flush-frequency=5s",
        "--logging-format=text",
        "--min-resync-period=12h",
        "--node-cidr-mask-size=24",
        "--node-cidr-mask-size-ipv4=24",
        "--node-cidr-mask-size-ipv6=64",
        "--node-monitor-period=5s",
        "--node-status-update-frequency=5m",
        "--node-sync-period=100s",
        "--permit-address-sharing=false",
        "--permit-port-sharing=false",
        "--profiling=false",
        "--requestheader-client-ca-file=/etc/kubernetes/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        "--route-reconciliation-period=10s",
        "--secure-port=10268",
        "--tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "--tls-min-version=VersionTLS12",
        "--use-service-account-credentials=true",
        "--v=2",
        "--vmodule=",
        "--port=0",
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .args(flags)
        .arg("--cloud-config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
