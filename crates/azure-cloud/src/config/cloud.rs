//! Azure cloud environments: the ARM, AAD and token-audience endpoints of each cloud, Azure Stack from a
//! JSON file, and discovery from `resourceManagerEndpoint` (`<endpoint>/metadata/endpoints`).

use super::CloudConfig;
use serde_json::Value;
use std::path::Path;

/// Environment variable naming the Azure Stack environment JSON file.
pub const ENVIRONMENT_FILEPATH_ENV: &str = "AZURE_ENVIRONMENT_FILEPATH";

/// The api-version upstream uses for endpoint discovery.
pub const METADATA_API_VERSION: &str = "2019-05-01";

/// Errors resolving the cloud environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// AzureStackCloud without an environment file.
    #[error("cloud AzureStackCloud needs {ENVIRONMENT_FILEPATH_ENV} naming the environment JSON file, or resourceManagerEndpoint")]
    StackWithoutFile,
    /// The environment file could not be read or parsed.
    #[error("cannot load Azure environment file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Discovery failed.
    #[error(
        "cannot discover Azure endpoints from {url}: {reason} (check resourceManagerEndpoint and trustedCACertPath)"
    )]
    Discovery {
        /// The metadata URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The clouds known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownCloud {
    /// AzurePublicCloud / AzureCloud.
    Public,
    /// AzureChinaCloud.
    China,
    /// AzureUSGovernmentCloud / AzureUSGovernment.
    UsGovernment,
    /// AzureGermanCloud (retired; kept for old configs).
    German,
    /// AzureStackCloud: endpoints from a file or discovery.
    Stack,
}

impl KnownCloud {
    /// Recognises a `cloud` value (case-insensitive); empty means public.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "azurepubliccloud" | "azurecloud" => Some(Self::Public),
            "azurechinacloud" => Some(Self::China),
            "azureusgovernmentcloud" | "azureusgovernment" => Some(Self::UsGovernment),
            "azuregermancloud" => Some(Self::German),
            "azurestackcloud" => Some(Self::Stack),
            _ => None,
        }
    }
}

/// The endpoints of one cloud. URLs end with `/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CloudEnvironment {
    /// Environment name.
    pub name: String,
    /// ARM endpoint, e.g. `https://management.azure.com/`.
    pub resource_manager_endpoint: String,
    /// AAD authority host, e.g. `https://login.microsoftonline.com/`.
    pub active_directory_endpoint: String,
    /// Token audience (service management endpoint), e.g. `https://management.core.windows.net/`.
    pub token_audience: String,
}

/// The endpoint fields of an environment file (go-autorest / azclient `Environment` JSON; keys matched
/// case-insensitively; `tokenAudience`, else `serviceManagementEndpoint`, is the audience).
struct EnvFile {
    path: String,
    name: Option<String>,
    arm: Option<String>,
    aad: Option<String>,
    audience: Option<String>,
}

impl EnvFile {
    fn read(path: &Path) -> Result<Self, EnvironmentError> {
        let fail = |reason: String| EnvironmentError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let get = |k: &str| -> Option<String> {
            v.as_object()?
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.as_str())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Ok(Self {
            path: path.display().to_string(),
            name: get("name"),
            arm: get("resourceManagerEndpoint"),
            aad: get("activeDirectoryEndpoint"),
            audience: get("tokenAudience").or_else(|| get("serviceManagementEndpoint")),
        })
    }

    fn fail(&self, reason: String) -> EnvironmentError {
        EnvironmentError::File {
            path: self.path.clone(),
            reason,
        }
    }
}

fn slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

impl CloudEnvironment {
    /// The built-in environment of a named cloud (`None` for Azure Stack, which needs a file).
    pub fn builtin(cloud: KnownCloud) -> Option<Self> {
        let (name, arm, aad, aud) = match cloud {
            KnownCloud::Public => (
                "AzurePublicCloud",
                "https://management.azure.com/",
                "https://login.microsoftonline.com/",
                "https://management.core.windows.net/",
            ),
            KnownCloud::China => (
                "AzureChinaCloud",
                "https://management.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
                "https://management.core.chinacloudapi.cn/",
            ),
            KnownCloud::UsGovernment => (
                "AzureUSGovernmentCloud",
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us/",
                "https://management.core.usgovcloudapi.net/",
            ),
            KnownCloud::German => (
                "AzureGermanCloud",
                "https://management.microsoftazure.de/",
                "https://login.microsoftonline.de/",
                "https://management.core.cloudapi.de/",
            ),
            KnownCloud::Stack => return None,
        };
        Some(Self {
            name: name.into(),
            resource_manager_endpoint: arm.into(),
            active_directory_endpoint: aad.into(),
            token_audience: aud.into(),
        })
    }

    /// The OAuth scope for ARM tokens: `<audience>/.default` (with upstream's double slash).
    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.token_audience)
    }

    /// Parses an Azure Stack environment file: all three endpoints are required.
    pub fn from_environment_file(path: &Path) -> Result<Self, EnvironmentError> {
        let f = EnvFile::read(path)?;
        let missing = |what: &str| f.fail(format!("{what} is missing"));
        Ok(Self {
            resource_manager_endpoint: slash(f.arm.as_deref().ok_or_else(|| missing("resourceManagerEndpoint"))?),
            active_directory_endpoint: slash(f.aad.as_deref().ok_or_else(|| missing("activeDirectoryEndpoint"))?),
            token_audience: slash(
                f.audience
                    .as_deref()
                    .ok_or_else(|| missing("tokenAudience and serviceManagementEndpoint"))?,
            ),
            name: f.name.clone().unwrap_or_else(|| "AzureStackCloud".into()),
        })
    }

    /// Interprets a `/metadata/endpoints` answer: either one object, or (newer api-versions) an array of
    /// clouds from which the one whose `resourceManager` matches the endpoint (or the first) is taken.
    pub fn from_metadata(endpoint: &str, body: &Value) -> Result<Self, String> {
        let entry = match body {
            Value::Array(list) => list
                .iter()
                .find(|e| {
                    e.get("resourceManager")
                        .and_then(Value::as_str)
                        .is_some_and(|r| slash(r).eq_ignore_ascii_case(&slash(endpoint)))
                })
                .or_else(|| list.first())
                .ok_or("empty list of clouds")?,
            other => other,
        };
        let auth = entry.get("authentication").ok_or("no authentication section")?;
        let login = auth
            .get("loginEndpoint")
            .and_then(Value::as_str)
            .ok_or("no authentication.loginEndpoint")?;
        let audience = auth
            .get("audiences")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or("no authentication.audiences")?;
        Ok(Self {
            name: entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("AzureStackCloud")
                .to_string(),
            resource_manager_endpoint: slash(endpoint),
            active_directory_endpoint: slash(login),
            token_audience: slash(audience),
        })
    }

    /// Resolves the environment of a config: discovery from `resourceManagerEndpoint` when set, an
    /// Azure Stack file when `cloud` is AzureStackCloud, else the named cloud (unknown names → public,
    /// as upstream).
    pub async fn resolve(
        cfg: &CloudConfig,
        http: &reqwest::Client,
        env: super::EnvLookup<'_>,
    ) -> Result<Self, EnvironmentError> {
        let known = KnownCloud::from_name(&cfg.cloud).unwrap_or(KnownCloud::Public);
        // As upstream (azclient): `resourceManagerEndpoint` means discovery; otherwise the named cloud, with
        // the environment file of AZURE_ENVIRONMENT_FILEPATH (when set) overriding its endpoints.
        if !cfg.resource_manager_endpoint.is_empty() {
            return Self::discover(&cfg.resource_manager_endpoint, http).await;
        }
        let file = env(ENVIRONMENT_FILEPATH_ENV);
        if known == KnownCloud::Stack {
            // Azure Stack has no built-in endpoints: the file must name them all (upstream would silently
            // fall back to the public cloud).
            let file = file.ok_or(EnvironmentError::StackWithoutFile)?;
            return Self::from_environment_file(Path::new(&file));
        }
        let base = Self::builtin(known).ok_or(EnvironmentError::StackWithoutFile)?;
        match file {
            Some(f) => base.overridden_by_file(Path::new(&f)),
            None => Ok(base),
        }
    }

    /// The named cloud with the endpoints an environment file sets (upstream's
    /// `AzureCloudConfigOverrideFromEnv`): `activeDirectoryEndpoint`, and `resourceManagerEndpoint` with
    /// `tokenAudience` (or `serviceManagementEndpoint`); keys case-insensitive.
    pub fn overridden_by_file(mut self, path: &Path) -> Result<Self, EnvironmentError> {
        let f = EnvFile::read(path)?;
        if let Some(aad) = &f.aad {
            self.active_directory_endpoint = slash(aad);
        }
        if let (Some(arm), Some(aud)) = (&f.arm, &f.audience) {
            self.resource_manager_endpoint = slash(arm);
            self.token_audience = slash(aud);
        }
        if let Some(name) = f.name {
            self.name = name;
        }
        Ok(self)
    }

    /// GET `<endpoint>/metadata/endpoints?api-version=2019-05-01` and interpret it.
    pub async fn discover(endpoint: &str, http: &reqwest::Client) -> Result<Self, EnvironmentError> {
        let url = format!(
            "{}metadata/endpoints?api-version={METADATA_API_VERSION}",
            slash(endpoint)
        );
        let fail = |reason: String| EnvironmentError::Discovery {
            url: url.clone(),
            reason,
        };
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(crate::http::describe_error(&e)))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(fail(format!("HTTP {status}: redirects are not followed")));
        }
        let body = crate::http::read_body(resp, crate::http::limits::METADATA_BODY, "cloud discovery")
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| fail(format!("invalid JSON: {e}")))?;
        Self::from_metadata(endpoint, &v).map_err(|r| fail(r.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        let cases = [
            ("", Some(KnownCloud::Public)),
            ("AzureCloud", Some(KnownCloud::Public)),
            ("azurepubliccloud", Some(KnownCloud::Public)),
            ("AzureChinaCloud", Some(KnownCloud::China)),
            ("AzureUSGovernment", Some(KnownCloud::UsGovernment)),
            ("AzureUSGovernmentCloud", Some(KnownCloud::UsGovernment)),
            ("AzureGermanCloud", Some(KnownCloud::German)),
            ("AZURESTACKCLOUD", Some(KnownCloud::Stack)),
            ("Mars", None),
        ];
        for (n, want) in cases {
            assert_eq!(KnownCloud::from_name(n), want, "{n}");
        }
        let china = CloudEnvironment::builtin(KnownCloud::China).unwrap();
        assert_eq!(china.resource_manager_endpoint, "https://management.chinacloudapi.cn/");
        assert_eq!(
            CloudEnvironment::builtin(KnownCloud::Public).unwrap().arm_scope(),
            "https://management.core.windows.net//.default"
        );
    }

    #[test]
    fn metadata_object_and_array() {
        let obj = json!({"name":"AzureStack","authentication":{"loginEndpoint":"https://login.local","audiences":["https://aud.local/"]}});
        let e = CloudEnvironment::from_metadata("https://arm.local", &obj).unwrap();
        assert_eq!(e.resource_manager_endpoint, "https://arm.local/");
        assert_eq!(e.active_directory_endpoint, "https://login.local/");
        assert_eq!(e.token_audience, "https://aud.local/");
        let arr = json!([
            {"name":"Other","resourceManager":"https://other/","authentication":{"loginEndpoint":"https://x/","audiences":["https://x/"]}},
            {"name":"Mine","resourceManager":"https://arm.local/","authentication":{"loginEndpoint":"https://l/","audiences":["https://a/"]}}
        ]);
        assert_eq!(
            CloudEnvironment::from_metadata("https://arm.local", &arr).unwrap().name,
            "Mine"
        );
        assert!(CloudEnvironment::from_metadata("https://arm.local", &json!({})).is_err());
    }

    #[test]
    fn environment_file_overrides_a_named_cloud_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.json");
        // Only the AD endpoint: ARM stays the named cloud's.
        std::fs::write(&p, r#"{"activeDirectoryEndpoint":"https://login.private/"}"#).unwrap();
        let public = CloudEnvironment::builtin(KnownCloud::Public).unwrap();
        let e = public.clone().overridden_by_file(&p).unwrap();
        assert_eq!(e.active_directory_endpoint, "https://login.private/");
        assert_eq!(e.resource_manager_endpoint, public.resource_manager_endpoint);
        // ARM with its audience (upstream's camelCase keys; ours match case-insensitively).
        std::fs::write(
            &p,
            r#"{"name":"Private","resourceManagerEndpoint":"https://arm.private","tokenAudience":"https://arm.private/"}"#,
        )
        .unwrap();
        let e = public.clone().overridden_by_file(&p).unwrap();
        assert_eq!(
            (
                e.name.as_str(),
                e.resource_manager_endpoint.as_str(),
                e.token_audience.as_str()
            ),
            ("Private", "https://arm.private/", "https://arm.private/")
        );
        // ARM without an audience is not applied (as upstream: both or neither).
        std::fs::write(&p, r#"{"resourceManagerEndpoint":"https://arm.private"}"#).unwrap();
        assert_eq!(
            public.clone().overridden_by_file(&p).unwrap().resource_manager_endpoint,
            public.resource_manager_endpoint
        );
    }

    #[test]
    fn stack_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.json");
        std::fs::write(
            &p,
            r#"{"name":"AzureStackCloud","ResourceManagerEndpoint":"https://management.local.azurestack.external","activeDirectoryEndpoint":"https://adfs.local/adfs/","serviceManagementEndpoint":"https://management.adfs.local/"}"#,
        )
        .unwrap();
        let e = CloudEnvironment::from_environment_file(&p).unwrap();
        assert_eq!(
            e.resource_manager_endpoint,
            "https://management.local.azurestack.external/"
        );
        assert_eq!(e.token_audience, "https://management.adfs.local/");
        std::fs::write(&p, "{}").unwrap();
        let err = CloudEnvironment::from_environment_file(&p).unwrap_err().to_string();
        assert!(err.contains("resourceManagerEndpoint is missing"), "{err}");
    }
}
