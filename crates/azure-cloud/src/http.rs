//! The one HTTP client of the provider: rustls (ring), keep-alive, connect and request timeouts, and the
//! extra trusted CA certificates of `trustedCACertPath` and `SSL_CERT_FILE` (Azure Stack, azure-sim).
//! TLS verification is never switched off.

use std::path::Path;
use std::time::Duration;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// A CA bundle could not be read.
    #[error("cannot read trusted CA bundle {path} ({origin}): {reason}")]
    CaBundle {
        /// The file.
        path: String,
        /// `trustedCACertPath` or `SSL_CERT_FILE`.
        origin: &'static str,
        /// Why.
        reason: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (upstream: 60 s).
    pub request_timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// User agent.
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 16,
            user_agent: format!("azure-cloud-rs/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Reads every certificate of a PEM bundle.
pub fn read_pem_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Builds the client, trusting the webpki roots plus the given bundles.
/// `bundles` are (path, origin) pairs; an empty path is skipped.
pub fn build_client(
    settings: &HttpSettings,
    bundles: &[(&str, &'static str)],
) -> Result<reqwest::Client, HttpClientError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(settings.user_agent.clone());
    for (path, origin) in bundles.iter().filter(|(p, _)| !p.is_empty()) {
        let certs = read_pem_bundle(Path::new(path)).map_err(|reason| HttpClientError::CaBundle {
            path: path.to_string(),
            origin,
            reason,
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| HttpClientError::Build(e.to_string()))
}

/// Builds the client for a config: `trustedCACertPath` and the `SSL_CERT_FILE` environment variable.
pub fn client_for_config(
    cfg: &crate::config::CloudConfig,
    env: crate::config::EnvLookup<'_>,
) -> Result<reqwest::Client, HttpClientError> {
    let ssl = env("SSL_CERT_FILE").unwrap_or_default();
    let mut settings = HttpSettings::default();
    if !cfg.user_agent.is_empty() {
        settings.user_agent = cfg.user_agent.clone();
    }
    build_client(
        &settings,
        &[
            (&cfg.trusted_ca_cert_path, "trustedCACertPath"),
            (&ssl, "SSL_CERT_FILE"),
        ],
    )
}

/// A reqwest error with its causes, for messages that help (reqwest's own Display hides the cause).
pub fn describe_error(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
