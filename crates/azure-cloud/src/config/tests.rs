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
fn hostile_documents_are_refused_quickly() {
    let started = std::time::Instant::now();
    // 40,000 levels of nesting, block and flow; a 200 KB document of nested sequences; an oversized file.
    let block: String = (0..40_000).map(|i| format!("{}a:\n", " ".repeat(i % 200))).collect();
    let flow = format!("a: {}{}", "[".repeat(40_000), "]".repeat(40_000));
    let seqs = "- ".repeat(100_000);
    let json = format!("{{\"a\":{}{}}}", "[".repeat(40_000), "]".repeat(40_000));
    let huge = format!("tags: \"{}\"", "x".repeat(MAX_CONFIG_BYTES));
    for doc in [&block, &flow, &seqs, &json, &huge] {
        assert!(parse(doc).is_err(), "accepted {} bytes", doc.len());
    }
    assert!(matches!(parse(&huge), Err(ConfigError::TooLarge { .. })));
    // Wall time is not asserted (CI machines vary); the rejections above are what must hold. The
    // property tests (tests/fuzz.rs) bound parse time per input.
    eprintln!("rejected 5 hostile documents in {:?}", started.elapsed());
    // Anchors and aliases stay bounded (a billion-laughs document).
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        laughs.push_str(&format!(
            "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    assert!(parse(&laughs).is_err());
}

#[test]
fn yaml_errors_never_echo_secrets() {
    let err = parse("aadClientSecret: hunter2-secret\nvmType: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("YAML"), "{err}");
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

#[test]
fn flattened_rate_limit_type_errors_name_the_key_not_the_value() {
    for (doc, key, want) in [
        (
            r#"{"cloudProviderRateLimitQPS":"fast-value"}"#,
            "cloudProviderRateLimitQPS",
            "expected a number, found a string",
        ),
        (
            r#"{"cloudProviderRateLimit":"yes-value"}"#,
            "cloudProviderRateLimit",
            "expected a boolean",
        ),
        (
            r#"{"cloudProviderRateLimitBucketWrite":1.5}"#,
            "cloudProviderRateLimitBucketWrite",
            "expected an integer",
        ),
        (
            r#"{"loadBalancerRateLimit":{"cloudProviderRateLimitQPS":"x-value"}}"#,
            "loadBalancerRateLimit.cloudProviderRateLimitQPS",
            "expected a number",
        ),
        (
            r#"{"routeRateLimit":"some-value"}"#,
            "routeRateLimit",
            "expected a mapping",
        ),
        (
            r#"{"vmCacheTTLInSeconds":"ten-value"}"#,
            "vmCacheTTLInSeconds",
            "invalid type: string, expected",
        ),
    ] {
        let err = parse(doc).unwrap_err();
        let ConfigError::Type { key: k, .. } = &err else {
            panic!("{doc}: {err}")
        };
        assert_eq!(k, key, "{doc}");
        let text = err.to_string();
        assert!(text.contains(want) && !text.contains("-value"), "{doc}: {text}");
    }
}

#[test]
fn keys_without_effect_are_warned_by_name() {
    let (_, report) = parse(&with(r#","disableAPICallCache":true,"vmssFlexCacheTTLInSeconds":30"#)).unwrap();
    for key in ["disableAPICallCache", "vmssFlexCacheTTLInSeconds"] {
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.starts_with(key) && w.contains("no effect")),
            "{key}: {:?}",
            report.warnings
        );
    }
    let (_, report) = parse(&with("")).unwrap();
    assert!(
        !report.warnings.iter().any(|w| w.contains("no effect")),
        "{:?}",
        report.warnings
    );
    // Every listed key is a real key, and documented as accepted without effect.
    let keys = CloudConfig::keys();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    let section = docs.split("## Accepted without effect").nth(1).expect("docs section");
    for (key, _) in NO_EFFECT_KEYS {
        assert!(keys.iter().any(|k| k == key), "{key} is not a config key");
        assert!(
            section.contains(&format!("`{key}`")),
            "{key} missing from docs/configuration.md"
        );
    }
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
            "is not one of: basic, standard",
        ),
        // Values upstream accepts that we do not implement: refused, never run as something else.
        (
            r#","loadBalancerSku":"service""#,
            "loadBalancerSku",
            "is not implemented",
        ),
        (
            r#","loadBalancerBackendPoolConfigurationType":"podIP""#,
            "loadBalancerBackendPoolConfigurationType",
            "is not implemented: pod-IP backend pools",
        ),
        (
            r#","extendedLocationName":"losangeles""#,
            "extendedLocationName",
            "edge zones",
        ),
        (
            r#","multipleStandardLoadBalancerConfigurations":[{"name":"lb2"}]"#,
            "multipleStandardLoadBalancerConfigurations",
            "needs loadBalancerBackendPoolConfigurationType nodeIP",
        ),
        (
            r#","loadBalancerBackendPoolConfigurationType":"nodeIP","multipleStandardLoadBalancerConfigurations":[{"name":"lb2","nodeSelector":{"matchExpressions":[{"key":"a","operator":"Has"}]}}]"#,
            "multipleStandardLoadBalancerConfigurations",
            "entry \"lb2\": nodeSelector",
        ),
        (
            r#","networkResourceTenantID":"other""#,
            "networkResourceTenantID",
            "needs networkResourceSubscriptionID",
        ),
        (
            r#","networkResourceTenantID":"other","networkResourceSubscriptionID":"net","useManagedIdentityExtension":true"#,
            "networkResourceTenantID",
            "needs a service principal",
        ),
        (
            r#","cloudProviderRateLimit":true,"cloudProviderRateLimitQPS":1e-300"#,
            "cloudProviderRateLimit",
            "cloudProviderRateLimitQPS must be a number of at least 0.001",
        ),
        (
            r#","loadBalancerRateLimit":{"cloudProviderRateLimitQPSWrite":0.0001}"#,
            "loadBalancerRateLimit",
            "cloudProviderRateLimitQPSWrite must be a number of at least 0.001",
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
            "cloudProviderRateLimitQPS must be a number of at least",
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
    // The reference tables (the "Accepted without effect" section repeats keys on purpose).
    let reference = doc.split("## Accepted without effect").next().unwrap_or_default();
    let mut documented: Vec<String> = reference
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
