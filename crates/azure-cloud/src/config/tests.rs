use super::*;
use std::collections::HashMap;

fn no_env(_: &str) -> Option<String> {
    None
}

const SP: &str = r#"{"tenantId":"t","subscriptionId":"s","aadClientId":"c","aadClientSecret":"hunter2",
 "resourceGroup":"RG-Mixed","location":"eastus""#;

fn with(extra: &str) -> String {
    format!("{SP}{extra}}}")
}

fn parse(text: &str) -> Result<(CloudConfig, ParseReport), ConfigError> {
    CloudConfig::parse(text, &no_env)
}

#[test]
fn defaults_as_upstream() {
    let (c, r) = parse(&with("")).unwrap();
    assert!(r.unknown_keys.is_empty() && r.warnings.is_empty(), "{r:?}");
    assert_eq!(c.resource_group, "rg-mixed");
    assert_eq!(c.route_table_resource_group, "rg-mixed");
    assert_eq!(c.security_group_resource_group, "rg-mixed");
    assert_eq!(c.vnet_resource_group, "rg-mixed");
    assert_eq!(c.vm_type, "vmss");
    assert_eq!(c.load_balancer_sku, "standard");
    assert_eq!(c.exclude_master_from_standard_lb, Some(true));
    assert_eq!(c.disable_outbound_snat, Some(false));
    assert_eq!(c.maximum_load_balancer_rule_count, 250);
    assert_eq!(c.vm_cache_ttl_in_seconds, 60);
    assert_eq!(c.load_balancer_cache_ttl_in_seconds, 120);
    assert_eq!(c.vmss_virtual_machines_cache_ttl_in_seconds, 600);
    assert_eq!(c.non_vmss_uniform_nodes_cache_ttl_in_seconds, 900);
    assert_eq!(c.cloud_provider_backoff_retries, 3);
    assert_eq!(c.cloud_provider_backoff_duration, 5);
    assert_eq!(c.load_balancer_backend_pool_configuration_type, "nodeIPConfiguration");
    assert_eq!(c.cluster_service_shared_load_balancer_health_probe_port, 10256);
    assert_eq!(c.cloud_config_type, "merge");
    assert_eq!(c.credential_kind(), CredentialKind::ClientSecret);
    let rl = c.rate_limit_for("loadBalancerRateLimit");
    assert!(!rl.enabled);
    let (c, _) = parse(&with(r#","cloudProviderBackoff":true,"loadBalancerSku":"Basic""#)).unwrap();
    assert_eq!(c.cloud_provider_backoff_retries, 6);
    assert_eq!(c.load_balancer_sku, "basic");
    assert_eq!(c.exclude_master_from_standard_lb, None);
}

#[test]
fn keys_case_insensitive_values_trimmed_unknown_reported() {
    let text = r#"{"TENANTID":"t","SubscriptionID":" s ","aadclientid":"c","AADCLIENTSECRET":"x",
      "resourcegroup":"RG","LOCATION":"westeurope","VMTYPE":"Standard","bogusKey":1,
      "loadBalancerRateLimit":{"CLOUDPROVIDERRATELIMIT":true,"cloudProviderRateLimitQPS":7,"weird":1}}"#;
    let (c, r) = parse(text).unwrap();
    assert_eq!(c.subscription_id, "s");
    assert_eq!(c.vm_type, "standard");
    assert_eq!(
        r.unknown_keys,
        vec!["bogusKey".to_string(), "loadBalancerRateLimit.weird".to_string()]
    );
    let lb = c.rate_limit_for("loadBalancerRateLimit");
    assert!(lb.enabled);
    assert_eq!(lb.qps, 7.0);
    assert_eq!(lb.qps_write, 7.0);
    assert_eq!(lb.bucket, 5);
    assert!(!c.rate_limit_for("routeRateLimit").enabled);
}

#[test]
fn rate_limit_inheritance() {
    let (c, _) = parse(&with(
        r#","cloudProviderRateLimit":true,"cloudProviderRateLimitQPS":3,"cloudProviderRateLimitBucket":10,
        "cloudProviderRateLimitQPSWrite":1,"routeRateLimit":{"cloudProviderRateLimit":false},
        "virtualMachineScaleSetRateLimit":{"cloudProviderRateLimitBucketWrite":100}"#,
    ))
    .unwrap();
    let top = c.rate_limit_for("loadBalancerRateLimit");
    assert_eq!(
        (top.enabled, top.qps, top.bucket, top.qps_write, top.bucket_write),
        (true, 3.0, 10, 1.0, 10)
    );
    assert!(!c.rate_limit_for("routeRateLimit").enabled);
    let vmss = c.rate_limit_for("virtualMachineScaleSetRateLimit");
    assert_eq!((vmss.enabled, vmss.bucket_write, vmss.qps), (true, 100, 3.0));
}

#[test]
fn yaml_accepted() {
    let text = "tenantId: t\nsubscriptionId: s\naadClientId: c\naadClientSecret: x\nresourceGroup: RG\nlocation: eastus\nvmType: standard\ntagsMap:\n  team: a\n";
    let (c, _) = parse(text).unwrap();
    assert_eq!(c.vm_type, "standard");
    assert_eq!(c.merged_tags().get("team").map(String::as_str), Some("a"));
}

#[test]
fn syntax_errors_report_line_and_column() {
    let err = parse("{\n  \"vmType\": \"vmss\",\n  oops\n}").unwrap_err();
    match err {
        ConfigError::Syntax {
            format, line, column, ..
        } => {
            assert_eq!((format, line, column), ("JSON", 3, 3));
        }
        e => panic!("unexpected {e}"),
    }
    let err = parse("vmType: vmss\n  bad: [\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { format: "YAML", line, .. } if line >= 2),
        "{err}"
    );
    assert!(matches!(parse("[1,2]"), Err(ConfigError::NotAnObject)));
}

#[test]
fn type_errors_name_the_key_and_never_the_secret() {
    let err = parse(r#"{"useInstanceMetadata":"yes"}"#).unwrap_err().to_string();
    assert!(err.starts_with("useInstanceMetadata:"), "{err}");
    let err = parse(r#"{"aadClientSecret":12345678}"#).unwrap_err().to_string();
    assert!(err.contains("aadClientSecret") && !err.contains("12345678"), "{err}");
}

/// Every validation rule: (extra keys, key named, text expected in the message).
#[test]
fn validation_errors_table() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#","vmType":"vmsss""#,
            "vmType",
            r#"vmType "vmsss" is not one of: standard, vmss, vmssflex"#,
        ),
        (
            r#","loadBalancerSku":"premium""#,
            "loadBalancerSku",
            "is not one of: basic, standard, service",
        ),
        (
            r#","loadBalancerSku":"basic","disableOutboundSNAT":true"#,
            "disableOutboundSNAT",
            "only supported with loadBalancerSku standard",
        ),
        (
            r#","vmType":"standard","disableAvailabilitySetNodes":true"#,
            "disableAvailabilitySetNodes",
            "only supported with vmType vmss",
        ),
        (
            r#","loadBalancerBackendPoolConfigurationType":"pods""#,
            "loadBalancerBackendPoolConfigurationType",
            "is not one of",
        ),
        (
            r#","preConfiguredBackendPoolLoadBalancerTypes":"some""#,
            "preConfiguredBackendPoolLoadBalancerTypes",
            "is not one of",
        ),
        (
            r#","clusterServiceLoadBalancerHealthProbeMode":"x""#,
            "clusterServiceLoadBalancerHealthProbeMode",
            "is not one of",
        ),
        (
            r#","clusterServiceSharedLoadBalancerHealthProbePort":70000"#,
            "clusterServiceSharedLoadBalancerHealthProbePort",
            "1..65535",
        ),
        (
            r#","clusterServiceSharedLoadBalancerHealthProbePath":"healthz""#,
            "clusterServiceSharedLoadBalancerHealthProbePath",
            "must start with /",
        ),
        (r#","identitySystem":"ldap""#, "identitySystem", "is not one of"),
        (
            r#","cloudConfigType":"configmap""#,
            "cloudConfigType",
            "is not one of: file, secret, merge",
        ),
        (
            r#","useFederatedWorkloadIdentityExtension":true"#,
            "aadFederatedTokenFile",
            "is required",
        ),
        (
            r#","aadClientCertPassword":"pw""#,
            "aadClientCertPath",
            "is required when aadClientCertPassword",
        ),
        (
            r#","resourceManagerEndpoint":"not a url""#,
            "resourceManagerEndpoint",
            "absolute http(s) URL",
        ),
        (
            r#","resourceManagerEndpoint":"http://arm.local/""#,
            "resourceManagerEndpoint",
            "must use https",
        ),
        (r#","imdsEndpoint":"ftp://x""#, "imdsEndpoint", "absolute http(s) URL"),
        (
            r#","vmCacheTTLInSeconds":-1"#,
            "vmCacheTTLInSeconds",
            "must not be negative",
        ),
        (
            r#","putVMSSVMBatchSize":-2"#,
            "putVMSSVMBatchSize",
            "must not be negative",
        ),
        (
            r#","cloudProviderBackoffExponent":-1.5"#,
            "cloudProviderBackoffExponent",
            "positive number",
        ),
        (
            r#","cloudProviderRateLimit":true,"cloudProviderRateLimitQPS":-1"#,
            "cloudProviderRateLimit",
            "cloudProviderRateLimitQPS must be a positive number",
        ),
        (
            r#","routeRateLimit":{"cloudProviderRateLimitBucket":0}"#,
            "routeRateLimit",
            "cloudProviderRateLimitBucket must be a positive integer",
        ),
    ];
    for (extra, key, msg) in cases {
        let err = parse(&with(extra)).unwrap_err();
        let ConfigError::Invalid(errs) = &err else {
            panic!("{extra}: {err}")
        };
        assert!(errs.iter().any(|e| e.key == *key), "{extra}: {errs:?}");
        let text = err.to_string();
        assert!(text.contains(msg), "{extra}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn credential_rules() {
    let cases: &[(&str, Result<CredentialKind, &str>)] = &[
        (
            r#"{"useInstanceMetadata":true,"vmType":"vmss"}"#,
            Ok(CredentialKind::None),
        ),
        (
            r#"{"vmType":"vmss"}"#,
            Err("useInstanceMetadata must be enabled without Azure credentials"),
        ),
        (
            r#"{"useManagedIdentityExtension":true,"subscriptionId":"s","resourceGroup":"r","location":"l"}"#,
            Ok(CredentialKind::ManagedIdentity),
        ),
        (
            r#"{"useManagedIdentityExtension":true}"#,
            Err("subscriptionId is required"),
        ),
        (
            r#"{"aadClientId":"c","aadClientCertPath":"/x.pfx","tenantId":"t","subscriptionId":"s","resourceGroup":"r","location":"l"}"#,
            Ok(CredentialKind::ClientCertificate),
        ),
        (
            r#"{"aadClientId":"c","aadClientSecret":"x","subscriptionId":"s","resourceGroup":"r","location":"l"}"#,
            Err("tenantId is required"),
        ),
        (
            r#"{"aadFederatedTokenFile":"/t","tenantId":"t","subscriptionId":"s","resourceGroup":"r","location":"l","useManagedIdentityExtension":true}"#,
            Err("aadClientId is required for workload identity"),
        ),
    ];
    for (text, want) in cases {
        match (parse(text), want) {
            (Ok((c, _)), Ok(k)) => assert_eq!(&c.credential_kind(), k, "{text}"),
            (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn env_overrides() {
    let env: HashMap<&str, &str> = [
        ("AZURE_TENANT_ID", "env-tenant"),
        ("AZURE_CLIENT_ID", "env-client"),
        ("AZURE_CLIENT_SECRET", "env-secret"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
    ]
    .into();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let (c, _) = CloudConfig::parse(&with(""), &lookup).unwrap();
    assert_eq!(c.tenant_id, "env-tenant");
    assert_eq!(c.aad_client_id, "env-client");
    assert_eq!(c.aad_client_secret.expose(), "env-secret");
    assert_eq!(c.aad_federated_token_file, "/var/run/token");
    assert!(c.use_federated_workload_identity_extension);
    assert_eq!(c.credential_kind(), CredentialKind::WorkloadIdentity);
    // Each variable alone overrides only its key.
    for (var, key) in ENV_OVERRIDES {
        let one = |k: &str| (k == *var).then(|| "v".to_string());
        let (c, _) = CloudConfig::parse(
            &with(r#","aadClientId":"c2""#).replace(r#""aadClientId":"c","#, ""),
            &one,
        )
        .unwrap();
        let json = serde_json::to_value(&c).unwrap();
        if *key != "aadClientSecret" {
            assert_eq!(json[key], "v", "{var}");
        } else {
            assert_eq!(c.aad_client_secret.expose(), "v");
        }
    }
}

#[test]
fn secrets_never_printed() {
    let (c, _) = parse(&with(
        r#","aadClientCertPassword":"pfxpass","aadClientCertPath":"/c.pfx""#,
    ))
    .unwrap();
    for text in [format!("{c:?}"), c.to_redacted_json().to_string()] {
        assert!(!text.contains("hunter2") && !text.contains("pfxpass"), "{text}");
    }
    assert_eq!(c.to_redacted_json()["aadClientSecret"], crate::secret::REDACTED);
}

#[test]
fn secret_merge_modes() {
    let file = with(r#","vmType":"standard""#);
    let secret = r#"{"vmType":"vmss","location":"westus"}"#;
    let (c, _) = merge_secret_config(Some(&file), Some(secret), &no_env).unwrap();
    assert_eq!(
        (c.vm_type.as_str(), c.location.as_str(), c.tenant_id.as_str()),
        ("vmss", "westus", "t")
    );
    let file_only = with(r#","vmType":"standard","cloudConfigType":"file""#);
    let (c, _) = merge_secret_config(Some(&file_only), Some(secret), &no_env).unwrap();
    assert_eq!(c.vm_type, "standard");
    let secret_mode = r#"{"cloudConfigType":"secret"}"#;
    let full_secret = with(r#","vmType":"standard""#);
    let (c, _) = merge_secret_config(Some(secret_mode), Some(&full_secret), &no_env).unwrap();
    assert_eq!(c.vm_type, "standard");
    assert!(matches!(
        merge_secret_config(Some(secret_mode), None, &no_env),
        Err(ConfigError::MissingSecret)
    ));
    let (c, _) = merge_secret_config(Some(&file), None, &no_env).unwrap();
    assert_eq!(c.vm_type, "standard");
}

/// docs/configuration.md lists exactly the keys the config type accepts, and azure.json.example parses
/// with no unknown key.
#[test]
fn docs_and_example_match_the_type() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let doc = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    let mut documented: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    documented.sort();
    let mut keys: Vec<String> = CloudConfig::keys()
        .into_iter()
        .chain(ClientRateLimits::KEYS.iter().map(|s| s.to_string()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(documented, keys, "docs/configuration.md and CloudConfig disagree");
    let example = std::fs::read_to_string(format!("{root}/azure.json.example")).unwrap();
    let (_, report) = parse(&example).unwrap();
    assert!(report.unknown_keys.is_empty(), "{:?}", report.unknown_keys);
}
