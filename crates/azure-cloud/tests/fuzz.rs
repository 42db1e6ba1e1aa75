//! Property tests over everything that parses input from a config file, a Service, a Node or the network:
//! config documents (JSON and YAML), Service annotations and ports (through rule planning), resource and
//! provider ids, tags, route names, and the pipeline's header parsing.
//!
//! Properties: never panic; errors name the key; secrets never appear in errors or warnings; durations
//! read from headers stay within their bounds. Case counts are small so CI stays fast
//! (`FUZZ_CASES`, default 64 per property); a longer run is documented in docs/testing.md:
//! `FUZZ_CASES=20000 cargo test --release -p azure-cloud --test fuzz`.

use azure_cloud::arm::throttle::{lowest_remaining, retry_after, Access};
use azure_cloud::arm::{provider_id_for, resource_id_from_provider_id, ResourceId};
use azure_cloud::config::{parse_tags, CloudConfig, ConfigError};
use azure_cloud::loadbalancer::{annotations, names, rules};
use azure_cloud::routes::{node_of_route_name, route_name};
use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const SECRET: &str = "S3CRET-never-shown";

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!(SECRET)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A key of the config in random case (or a random key), with any value.
fn config_doc() -> impl Strategy<Value = Map<String, Value>> {
    let keys = CloudConfig::keys();
    let key = (prop::sample::select(keys), any::<u64>(), any::<bool>()).prop_map(|(k, mask, random)| {
        if random {
            return format!("x{mask}");
        }
        k.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    });
    prop::collection::vec((key, any_json()), 0..12).prop_map(|kv| kv.into_iter().collect())
}

fn secret_free(text: &str) -> bool {
    !text.contains(SECRET)
}

/// An error shows no secret: a validation error echoes the offending value of an ordinary key by design (the
/// generated documents may put the marker string under any key), never the value of a secret key; every other
/// error (type errors included) echoes no value at all.
fn error_secret_free(e: &ConfigError) -> bool {
    match e {
        ConfigError::Invalid(list) => list.iter().all(|v| {
            !(azure_cloud::config::SECRET_KEYS.contains(&v.key) && v.value.contains(SECRET)) && secret_free(&v.rule)
        }),
        other => secret_free(&other.to_string()),
    }
}

/// A parsed config shows no secret: the secret fields redacted in Debug and in the redacted JSON (ordinary
/// keys may legitimately hold the marker string).
fn config_secret_free(cfg: &CloudConfig) -> bool {
    let json = cfg.to_redacted_json();
    azure_cloud::config::SECRET_KEYS
        .iter()
        .all(|k| secret_free(&json[*k].to_string()))
        && secret_free(&format!(
            "{:?} {:?}",
            cfg.aad_client_secret, cfg.aad_client_cert_password
        ))
}

fn yaml_of(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&format!("{}{:?}:", " ".repeat(indent), k));
                if v.is_object() || v.is_array() {
                    out.push('\n');
                    yaml_of(v, indent + 2, out);
                } else {
                    out.push(' ');
                    out.push_str(&v.to_string());
                    out.push('\n');
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                out.push_str(&format!("{}- {}\n", " ".repeat(indent), v));
            }
        }
        other => out.push_str(&format!("{}{other}\n", " ".repeat(indent))),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON document: no panic; a type error names a key of the document; the secret never shows.
    #[test]
    fn config_json_never_panics_or_leaks(doc in config_doc(), secret_key in prop::sample::select(vec!["aadClientSecret", "aadClientCertPassword"])) {
        let mut doc = doc;
        doc.insert(secret_key.to_string(), json!(SECRET));
        let text = Value::Object(doc.clone()).to_string();
        match CloudConfig::parse(&text, &|_| None) {
            Ok((cfg, _report)) => {
                prop_assert!(config_secret_free(&cfg), "{}", cfg.to_redacted_json());
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(error_secret_free(&e), "{shown}");
                if let ConfigError::Type { key, .. } = &e {
                    let top = key.split(['.', '[']).next().unwrap_or_default();
                    prop_assert!(
                        doc.keys().any(|k| k.eq_ignore_ascii_case(top)),
                        "type error names {key}, not a key of the document"
                    );
                }
            }
        }
    }

    /// The same documents as YAML, plus arbitrary text: no panic, no leak.
    #[test]
    fn config_yaml_never_panics_or_leaks(doc in config_doc(), noise in ".{0,200}") {
        let mut doc = doc;
        doc.insert("aadClientSecret".into(), json!(SECRET));
        let mut text = String::new();
        yaml_of(&Value::Object(doc), 0, &mut text);
        for t in [text.clone(), format!("{text}{noise}"), noise.clone()] {
            match CloudConfig::parse(&t, &|_| None) {
                Ok((cfg, _)) => prop_assert!(config_secret_free(&cfg), "{}", cfg.to_redacted_json()),
                Err(e) => prop_assert!(error_secret_free(&e), "{e}"),
            }
        }
    }

    /// Any annotations and ports: parsing and rule planning never panic; every probe planned is on a
    /// port ARM accepts.
    #[test]
    fn annotations_and_rules_never_panic(
        ann in prop::collection::btree_map(
            prop_oneof![
                prop::sample::select(vec![
                    "azure-load-balancer-internal", "azure-load-balancer-internal-subnet", "azure-dns-label-name",
                    "azure-load-balancer-tcp-idle-timeout", "azure-load-balancer-health-probe-protocol",
                    "azure-load-balancer-health-probe-interval", "azure-load-balancer-health-probe-num-of-probe",
                    "azure-load-balancer-health-probe-request-path", "azure-allowed-service-tags",
                    "azure-allowed-ip-ranges", "azure-pip-tags", "azure-additional-public-ips",
                    "azure-load-balancer-enable-high-availability-ports", "azure-disable-load-balancer-floating-ip",
                    "azure-load-balancer-ipv4", "azure-load-balancer-ipv6", "azure-pip-name", "azure-pip-prefix-id",
                    "azure-load-balancer-resource-group", "azure-shared-securityrule",
                    "port_80_health-probe_port", "port_80_no_probe_rule", "port_80_health-probe_protocol",
                    "port_80_health-probe_interval", "port_80_no_lb_rule", "port_x_health-probe_port",
                ]).prop_map(|k| format!("service.beta.kubernetes.io/{k}")),
                ".{0,40}",
            ],
            prop_oneof![Just("true".to_string()), Just("80".to_string()), "[-0-9a-zA-Z.,/=: ]{0,30}", ".{0,30}"],
            0..8,
        ),
        ports in prop::collection::vec((any::<i32>(), prop::option::of(any::<i32>()), prop::sample::select(vec!["TCP", "UDP", "SCTP", "x"])), 0..4),
        families in prop::sample::select(vec![vec![], vec!["IPv4"], vec!["IPv6"], vec!["IPv4", "IPv6"], vec!["x"]]),
        local in prop::option::of(any::<i32>()),
    ) {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(p, np, proto)| json!({"port": p, "nodePort": np, "protocol": proto}))
            .collect();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "default", "uid": "6f5b0f3e-1c1a-4a57-9d7d-0a8f3b7c2e11", "annotations": ann},
            "spec": {"type": "LoadBalancer", "ports": ports, "ipFamilies": families},
        })).unwrap();
        if let Ok((spec, _warnings)) = annotations::parse(&svc) {
            let ctx = rules::RuleContext {
                base: "a6f5b0f3e1c1a4a579d7d0a8f3b7c2e1",
                standard_sku: true,
                disable_outbound_snat: false,
                local_health_check_port: local,
                client_ip_affinity: false,
                shared_probe: None,
            };
            let service_ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
            if let Ok((_, probes)) = rules::expected_rules(&spec, &service_ports, &ctx) {
                prop_assert!(probes.iter().all(|p| (1..=65535).contains(&p.port)), "{probes:?}");
            }
        }
    }

    /// Resource ids: parsing arbitrary text never panics; ids we build parse back to themselves; provider
    /// ids round-trip.
    #[test]
    fn resource_and_provider_ids(
        text in ".{0,120}",
        sub in "[a-z0-9-]{1,36}", rg in "[A-Za-z0-9_.-]{1,20}", name in "[A-Za-z0-9_.-]{1,30}",
    ) {
        let _ = ResourceId::parse(&text);
        let _ = resource_id_from_provider_id(&text);
        let _ = azure_cloud::arm::id::is_managed_provider_id(&text);
        let id = ResourceId::new(&sub, &rg, "Microsoft.Compute", &[("virtualMachines", &name)]);
        let parsed = ResourceId::parse(&id.to_string()).unwrap();
        prop_assert_eq!(parsed.name(), name.as_str());
        let pid = provider_id_for(&id);
        prop_assert!(pid.starts_with("azure://"));
        prop_assert!(ResourceId::parse(resource_id_from_provider_id(&pid)).is_ok());
    }

    /// Tags: no panic; keys come out trimmed and non-empty.
    #[test]
    fn tags_never_panic(tags in ".{0,80}", map in prop::collection::btree_map(".{0,10}", ".{0,10}", 0..4)) {
        let (parsed, _warnings) = parse_tags(&tags, &map);
        for k in parsed.keys() {
            prop_assert!(!k.is_empty() && k.trim() == k, "{k:?}");
        }
    }

    /// Route and rule names: no panic; a route name gives its node back.
    #[test]
    fn names_never_panic(node in "[a-z0-9.-]{1,40}", cidr in ".{0,40}", sources in prop::collection::vec(".{0,20}", 0..3), ports in prop::collection::vec(any::<i32>(), 0..4)) {
        let route = route_name(&node, &cidr);
        prop_assert_eq!(node_of_route_name(&route), node.as_str());
        let _ = names::allow_security_rule_name(names::Family::V4, "Tcp", &sources, &ports);
        let _ = names::rule_name("abc", "TCP", ports.first().copied().unwrap_or(80), Some(&cidr), true, names::Family::V6);
        let _ = names::load_balancer_name(&cidr, &node, Some(&cidr), "", true);
    }

    /// Header parsing: any values for the headers the pipeline reads; waits never exceed the clamp.
    #[test]
    fn headers_never_panic(values in prop::collection::vec(("[ -~]{0,40}", prop::sample::select(vec![
        "retry-after", "retry-after-ms", "x-ms-retry-after-ms",
        "x-ms-ratelimit-remaining-subscription-reads", "x-ms-ratelimit-remaining-subscription-writes",
        "x-ms-ratelimit-remaining-resource",
    ])), 0..6), secs in any::<u64>()) {
        let mut h = reqwest::header::HeaderMap::new();
        for (v, name) in &values {
            if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
                h.append(*name, v);
            }
        }
        if let Some(d) = retry_after(&h) {
            prop_assert!(d <= azure_cloud::clock::MAX_REMOTE_WAIT);
        }
        let _ = lowest_remaining(&h, Access::Read);
        let _ = lowest_remaining(&h, Access::Write);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", secs.to_string().parse().unwrap());
        prop_assert!(retry_after(&h).unwrap() <= azure_cloud::clock::MAX_REMOTE_WAIT);
    }
}

#[test]
fn fuzz_case_count_is_configurable() {
    // A guard that the suite runs at least a few cases (a misconfigured count would make it pass vacuously).
    assert!(config().cases >= 1);
    let _ = BTreeMap::<String, String>::new();
}
