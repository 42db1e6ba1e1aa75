//! Parsing a config document: size and depth bounds, JSON or YAML, canonical key names, type errors that
//! name the key and never echo the value.

use super::*;

/// The largest config accepted (a Kubernetes Secret holds at most 1 MiB; real azure.json files are a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The deepest nesting accepted in a config document (azure.json nests at most three levels).
pub const MAX_CONFIG_DEPTH: usize = 32;

/// Parses JSON (text starting with `{`) or YAML into a document. Size and depth are bounded before and
/// while parsing, so a hostile document (from a file or a Secret) is refused quickly.
pub(super) fn parse_document(text: &str) -> Result<Value, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            bytes: text.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    if text.trim_start().starts_with('{') {
        // serde_json refuses nesting beyond 128 levels itself, in linear time.
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "JSON",
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    } else {
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = MAX_CONFIG_DEPTH;
        budget.flow_nesting_limit = MAX_CONFIG_DEPTH;
        budget.max_nodes = 100_000;
        budget.max_aliases = 1_000;
        budget.max_anchors = 1_000;
        budget.max_documents = 1;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| {
                    (
                        usize::try_from(l.line()).unwrap_or(0),
                        usize::try_from(l.column()).unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                format: "YAML",
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })
    }
}

/// The first line of a (possibly multi-line, snippet-decorated) parser message.
pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// Renames keys to their canonical spelling (case-insensitive), trims string values, drops and
/// reports unknown keys.
pub(super) fn normalise_keys(doc: Value, report: &mut ParseReport) -> Result<Value, ConfigError> {
    let Value::Object(map) = doc else {
        return match doc {
            Value::Null => Ok(Value::Object(Map::new())),
            _ => Err(ConfigError::NotAnObject),
        };
    };
    let canonical = CloudConfig::keys();
    let nested: Vec<String> = match serde_json::to_value(RateLimitConfig::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut out = Map::new();
    for (k, v) in map {
        let Some(name) = canonical.iter().find(|c| c.eq_ignore_ascii_case(k.trim())) else {
            report.unknown_keys.push(k);
            continue;
        };
        let v = match v {
            Value::String(s) => Value::String(s.trim().to_string()),
            Value::Object(inner) if ClientRateLimits::KEYS.contains(&name.as_str()) => {
                let mut m = Map::new();
                for (ik, iv) in inner {
                    match nested.iter().find(|c| c.eq_ignore_ascii_case(ik.trim())) {
                        Some(n) => {
                            m.insert(n.clone(), iv);
                        }
                        None => report.unknown_keys.push(format!("{name}.{ik}")),
                    }
                }
                Value::Object(m)
            }
            other => other,
        };
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

/// Deserialises, naming the key on a type error.
pub(super) fn deserialize_named<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Type {
            message: redact_value_in_message(&key, e.into_inner().to_string()),
            key,
        }
    })
}

/// The kind of a JSON value, for type errors that never echo the value.
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The rate-limit keys are flattened into the config (and nested per client), where serde loses the key
/// name: check their types first so an error names the key (and never echoes the value).
pub(super) fn check_rate_limit_types(doc: &Map<String, Value>) -> Result<(), ConfigError> {
    let check = |prefix: Option<&str>, m: &Map<String, Value>| -> Result<(), ConfigError> {
        for (key, v) in m {
            let expected = match key.as_str() {
                "cloudProviderRateLimit" => v.is_boolean().then_some(()).ok_or("a boolean"),
                "cloudProviderRateLimitQPS" | "cloudProviderRateLimitQPSWrite" => {
                    v.is_number().then_some(()).ok_or("a number")
                }
                "cloudProviderRateLimitBucket" | "cloudProviderRateLimitBucketWrite" => {
                    (v.is_i64() || v.is_u64()).then_some(()).ok_or("an integer")
                }
                _ => continue,
            };
            if let Err(want) = expected {
                if v.is_null() {
                    continue;
                }
                return Err(ConfigError::Type {
                    key: prefix.map_or_else(|| key.clone(), |p| format!("{p}.{key}")),
                    message: format!("expected {want}, found {}", kind_of(v)),
                });
            }
        }
        Ok(())
    };
    check(None, doc)?;
    for client in ClientRateLimits::KEYS {
        match doc.get(*client) {
            Some(Value::Object(inner)) => check(Some(client), inner)?,
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(ConfigError::Type {
                    key: client.to_string(),
                    message: format!(
                        "expected a mapping of cloudProviderRateLimit* keys, found {}",
                        kind_of(other)
                    ),
                })
            }
        }
    }
    Ok(())
}

/// serde's messages quote the offending value (`invalid type: string "abc", expected i64`): keep the kind,
/// drop the value, so a misplaced secret is never printed.
pub(super) fn redact_value_in_message(key: &str, msg: String) -> String {
    if SECRET_KEYS.iter().any(|s| key.starts_with(s)) {
        return "has a value of the wrong type (expected a string)".into();
    }
    static QUOTED: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = QUOTED.get_or_init(|| {
        regex::Regex::new(
            r#"(string|integer|floating point|boolean|character|unit variant|variant) ("(?:[^"\\]|\\.)*"|`[^`]*`)"#,
        )
        .ok()
    });
    match re {
        Some(re) => re.replace_all(&msg, "$1").into_owned(),
        None => msg,
    }
}
