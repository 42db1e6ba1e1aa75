//! Credentials for ARM, chosen from the config in upstream order: workload identity (federated token
//! file) > managed identity (IMDS; system-assigned, or user-assigned by client id or resource id) >
//! client secret > client certificate (PFX or PEM).
//!
//! The token protocols are implemented here over our one HTTP client rather than through
//! `azure_identity` 1.x, which hard-codes the IMDS address (so its managed-identity path cannot be
//! pointed at a local endpoint) and needs OpenSSL for certificates. [`LegacyCredential`] bridges a
//! [`Credential`] to the `azure_core` 0.21 `TokenCredential` trait that the `azure_mgmt_*` clients take.

mod cert;

pub use cert::{CertificateError, ClientCertificate};

use crate::config::{CloudConfig, CloudEnvironment, CredentialKind, EnvLookup};
use crate::secret::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The IMDS managed-identity api-version upstream uses.
pub const IMDS_TOKEN_API_VERSION: &str = "2018-02-01";
/// Environment variable that overrides the IMDS host for tokens (as in the Azure SDKs).
pub const POD_IDENTITY_HOST_ENV: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// Tokens are refreshed this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Errors getting a token. Never carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached.
    #[error("{credential}: cannot reach token endpoint {endpoint}: {reason}")]
    Transport {
        /// Credential kind.
        credential: &'static str,
        /// Endpoint URL (no secrets in it).
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The endpoint refused.
    #[error("{credential}: token request to {endpoint} failed with HTTP {status}: {code}: {description}")]
    Rejected {
        /// Credential kind.
        credential: &'static str,
        /// Endpoint URL.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// AAD error code (e.g. `invalid_client`).
        code: String,
        /// AAD error description.
        description: String,
    },
    /// The answer could not be understood.
    #[error("{credential}: invalid token response from {endpoint}: {reason}")]
    InvalidResponse {
        /// Credential kind.
        credential: &'static str,
        /// Endpoint URL.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Local material (token file, certificate) could not be used.
    #[error("{credential}: {reason}")]
    Local {
        /// Credential kind.
        credential: &'static str,
        /// Why, naming the file.
        reason: String,
    },
    /// No credential is configured.
    #[error("no Azure credentials are configured (set aadClientId with aadClientSecret or aadClientCertPath, useManagedIdentityExtension, or a federated token file)")]
    NotConfigured,
    /// The authority is not https (and not loopback).
    #[error("authority {0} must use https: client secrets and assertions are never sent in clear")]
    InsecureAuthority(String),
}

/// A bearer token.
#[derive(Clone)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// When it expires.
    pub expires_on: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// How a token is obtained.
#[derive(Clone)]
enum Method {
    ClientSecret {
        secret: Secret,
    },
    Certificate {
        cert: Arc<ClientCertificate>,
    },
    WorkloadIdentity {
        token_file: String,
    },
    ManagedIdentity {
        endpoint: String,
        id_param: Option<(&'static str, String)>,
    },
}

/// A credential with a token cache (one fetch at a time per credential; tokens reused until five
/// minutes before expiry).
pub struct Credential {
    method: Method,
    client_id: String,
    /// `<authority>/<tenant>/oauth2/v2.0/token` (or the ADFS v1 endpoint).
    token_endpoint: String,
    adfs: bool,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, AccessToken>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind())
            .field("client_id", &self.client_id)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

/// The token endpoint for an authority and tenant.
pub fn token_endpoint(authority: &str, tenant: &str, adfs: bool) -> Result<String, AuthError> {
    let base = authority.trim_end_matches('/');
    let u = url::Url::parse(base).map_err(|_| AuthError::InsecureAuthority(authority.to_string()))?;
    // Client secrets and assertions go only over https (unit tests may use a plain loopback server).
    let plain_test_server = cfg!(test) && u.scheme() == "http" && crate::http::is_loopback(&u);
    if u.scheme() != "https" && !plain_test_server {
        return Err(AuthError::InsecureAuthority(authority.to_string()));
    }
    Ok(if adfs {
        // Azure Stack ADFS: the authority is usually `https://adfs.<domain>/adfs/`; v1 endpoint.
        format!("{}/adfs/oauth2/token", base.trim_end_matches("/adfs"))
    } else {
        format!("{base}/{tenant}/oauth2/v2.0/token")
    })
}

impl Credential {
    /// Builds the credential the config selects. `env.token_audience` is the resource for IMDS.
    pub fn from_config(
        cfg: &CloudConfig,
        cloud: &CloudEnvironment,
        http: reqwest::Client,
        env: EnvLookup<'_>,
    ) -> Result<Arc<Self>, AuthError> {
        let adfs = cfg.is_adfs();
        let tenant = if adfs { "adfs" } else { cfg.tenant_id.as_str() };
        let aad = || token_endpoint(&cloud.active_directory_endpoint, tenant, adfs);
        let (method, token_endpoint) = match cfg.credential_kind() {
            CredentialKind::WorkloadIdentity => (
                Method::WorkloadIdentity {
                    token_file: cfg.aad_federated_token_file.clone(),
                },
                aad()?,
            ),
            CredentialKind::ManagedIdentity => {
                let host = env(POD_IDENTITY_HOST_ENV).unwrap_or_else(|| cfg.imds_endpoint.clone());
                let id = cfg.user_assigned_identity_id.trim();
                let id_param = if id.is_empty() {
                    None
                } else if id.to_ascii_lowercase().contains("/subscriptions/") {
                    Some(("msi_res_id", id.to_string()))
                } else {
                    Some(("client_id", id.to_string()))
                };
                let endpoint = format!("{}/metadata/identity/oauth2/token", host.trim_end_matches('/'));
                (
                    Method::ManagedIdentity {
                        endpoint: endpoint.clone(),
                        id_param,
                    },
                    endpoint,
                )
            }
            CredentialKind::ClientSecret => (
                Method::ClientSecret {
                    secret: cfg.aad_client_secret.clone(),
                },
                aad()?,
            ),
            CredentialKind::ClientCertificate => {
                let cert = ClientCertificate::load(
                    std::path::Path::new(&cfg.aad_client_cert_path),
                    cfg.aad_client_cert_password.expose(),
                )
                .map_err(|e| AuthError::Local {
                    credential: "client certificate",
                    reason: e.to_string(),
                })?;
                (Method::Certificate { cert: Arc::new(cert) }, aad()?)
            }
            CredentialKind::None => return Err(AuthError::NotConfigured),
        };
        Ok(Arc::new(Self {
            method,
            client_id: cfg.aad_client_id.clone(),
            token_endpoint,
            adfs,
            http,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// A short name of the credential kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self.method {
            Method::ClientSecret { .. } => "client secret",
            Method::Certificate { .. } => "client certificate",
            Method::WorkloadIdentity { .. } => "workload identity",
            Method::ManagedIdentity { .. } => "managed identity",
        }
    }

    /// A token for `scope` (e.g. `https://management.core.windows.net//.default`), from the cache
    /// while it has more than five minutes left.
    pub async fn get_token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.get(scope) {
            if t.expires_on > SystemTime::now() + REFRESH_MARGIN {
                return Ok(t.clone());
            }
        }
        let token = self.fetch(scope).await?;
        tracing::debug!(credential = self.kind(), scope, "acquired ARM token");
        cache.insert(scope.to_string(), token.clone());
        Ok(token)
    }

    /// Forgets cached tokens (after a 401).
    pub async fn clear_cache(&self) {
        self.cache.lock().await.clear();
    }

    async fn fetch(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let kind = self.kind();
        let req = match &self.method {
            Method::ManagedIdentity { endpoint, id_param } => {
                let resource = scope.strip_suffix("/.default").unwrap_or(scope);
                let mut q = vec![
                    ("api-version", IMDS_TOKEN_API_VERSION.to_string()),
                    ("resource", resource.to_string()),
                ];
                if let Some((k, v)) = id_param {
                    q.push((k, v.clone()));
                }
                self.http.get(endpoint).query(&q).header("Metadata", "true")
            }
            other => {
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", self.client_id.clone()),
                ];
                if self.adfs {
                    form.push(("resource", scope.strip_suffix("/.default").unwrap_or(scope).to_string()));
                } else {
                    form.push(("scope", scope.to_string()));
                }
                match other {
                    Method::ClientSecret { secret } => form.push(("client_secret", secret.expose().to_string())),
                    Method::Certificate { cert } => {
                        let jwt =
                            cert.assertion(&self.client_id, &self.token_endpoint)
                                .map_err(|e| AuthError::Local {
                                    credential: kind,
                                    reason: e.to_string(),
                                })?;
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push(("client_assertion", jwt));
                    }
                    Method::WorkloadIdentity { token_file } => {
                        // Re-read every time: the kubelet rotates the projected token.
                        let assertion = tokio::fs::read_to_string(token_file)
                            .await
                            .map_err(|e| AuthError::Local {
                                credential: kind,
                                reason: format!("cannot read federated token file {token_file}: {e}"),
                            })?;
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push(("client_assertion", assertion.trim().to_string()));
                    }
                    Method::ManagedIdentity { .. } => {}
                }
                self.http.post(&self.token_endpoint).form(&form)
            }
        };
        let endpoint = self.token_endpoint.clone();
        let resp = req.send().await.map_err(|e| AuthError::Transport {
            credential: kind,
            endpoint: endpoint.clone(),
            reason: crate::http::describe_error(&e),
        })?;
        let status = resp.status();
        let body = crate::http::read_body(resp, crate::http::limits::TOKEN_BODY, "a token answer")
            .await
            .map_err(|e| AuthError::Transport {
                credential: kind,
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            return Err(AuthError::Rejected {
                credential: kind,
                endpoint,
                status: status.as_u16(),
                code: field("error"),
                description: field("error_description"),
            });
        }
        parse_token_response(&v).map_err(|reason| AuthError::InvalidResponse {
            credential: kind,
            endpoint,
            reason,
        })
    }
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `access_token` and the expiry (`expires_on` epoch seconds, else `expires_in`) of an AAD or
/// IMDS answer.
pub fn parse_token_response(v: &Value) -> Result<AccessToken, String> {
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no access_token")?;
    let now = SystemTime::now();
    // Whatever the answer claims, a token is reused for at most a day (Azure AD's longest lifetime);
    // values that overflow the clock are treated the same way, never a panic.
    let latest = crate::clock::system_after(now, crate::clock::MAX_TOKEN_LIFETIME).unwrap_or(now);
    let claimed = if let Some(on) = num(v.get("expires_on")) {
        crate::clock::system_after(UNIX_EPOCH, Duration::from_secs(on))
    } else if let Some(secs) = num(v.get("expires_in")) {
        crate::clock::system_after(now, Duration::from_secs(secs))
    } else {
        return Err("no expires_on or expires_in".into());
    };
    let expires_on = claimed.map_or(latest, |t| t.min(latest));
    Ok(AccessToken {
        token: Secret::new(token),
        expires_on,
    })
}

/// Bridges a [`Credential`] to `azure_core` 0.21's `TokenCredential`, for the `azure_mgmt_*` clients.
#[derive(Debug, Clone)]
pub struct LegacyCredential(pub Arc<Credential>);

#[async_trait::async_trait]
impl azure_core_legacy::auth::TokenCredential for LegacyCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core_legacy::Result<azure_core_legacy::auth::AccessToken> {
        let scope = scopes.first().copied().unwrap_or_default();
        let t = self.0.get_token(scope).await.map_err(|e| {
            azure_core_legacy::Error::message(azure_core_legacy::error::ErrorKind::Credential, e.to_string())
        })?;
        let secs = t
            .expires_on
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires_on = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Ok(azure_core_legacy::auth::AccessToken::new(
            t.token.expose().to_string(),
            expires_on,
        ))
    }

    async fn clear_cache(&self) -> azure_core_legacy::Result<()> {
        self.0.clear_cache().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
