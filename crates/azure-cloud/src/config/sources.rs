//! `cloudConfigType`: where azure.json comes from (file, the Secret `kube-system/azure-cloud-provider`,
//! or the file overridden key by key by the Secret).

use super::{normalise_keys, parse_document, CloudConfig, ConfigError, EnvLookup, ParseReport};
use serde_json::Value;

/// The config source mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudConfigType {
    /// Only the file.
    File,
    /// Only the Secret.
    Secret,
    /// The file, overridden key by key by the Secret (upstream default).
    Merge,
}

impl CloudConfigType {
    /// Parses `file`, `secret` or `merge` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "file" => Some(Self::File),
            "secret" => Some(Self::Secret),
            "merge" | "" => Some(Self::Merge),
            _ => None,
        }
    }
}

/// Combines the file text and the Secret's `cloud-config` text according to the file's
/// `cloudConfigType` (default `merge`), then defaults and validates the result.
/// `secret_text` is `None` when the Secret or its key does not exist.
pub fn merge_secret_config(
    file_text: Option<&str>,
    secret_text: Option<&str>,
    env: EnvLookup<'_>,
) -> Result<(CloudConfig, ParseReport), ConfigError> {
    let mut report = ParseReport::default();
    let file = match file_text {
        Some(t) => normalise_keys(parse_document(t)?, &mut report)?,
        None => Value::Object(Default::default()),
    };
    let mode = file
        .get("cloudConfigType")
        .and_then(Value::as_str)
        .map(|s| {
            CloudConfigType::parse(s).ok_or_else(|| {
                ConfigError::Invalid(vec![super::ValidationError {
                    key: "cloudConfigType",
                    value: s.to_string(),
                    rule: "is not one of: file, secret, merge".into(),
                }])
            })
        })
        .transpose()?
        .unwrap_or(CloudConfigType::Merge);
    let secret = match secret_text {
        Some(t) => Some(normalise_keys(parse_document(t)?, &mut report)?),
        None => None,
    };
    let doc = match (mode, secret) {
        (CloudConfigType::Secret, None) => return Err(ConfigError::MissingSecret),
        (CloudConfigType::File, _) | (_, None) => file,
        (CloudConfigType::Secret, Some(s)) => s,
        (CloudConfigType::Merge, Some(Value::Object(s))) => {
            let mut merged = match file {
                Value::Object(m) => m,
                _ => Default::default(),
            };
            merged.extend(s);
            Value::Object(merged)
        }
        (CloudConfigType::Merge, Some(s)) => s,
    };
    let (cfg, more) = CloudConfig::from_document(doc, env)?;
    report.warnings.extend(more.warnings);
    Ok((cfg, report))
}
