//! The one HTTP client of the provider: rustls (ring), keep-alive, connect and request timeouts, and the
//! extra trusted CA certificates of `trustedCACertPath` and `SSL_CERT_FILE` (Azure Stack, azure-sim).
//! TLS verification is never switched off, redirects are never followed (a bearer token must not follow
//! a `Location` to another scheme or host), and every answer is read through [`read_body`] with a cap.

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
        // reqwest keeps `Authorization` across a redirect that changes only the scheme: never follow one.
        .redirect(reqwest::redirect::Policy::none())
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

/// True for `localhost` and loopback addresses.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
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

/// Caps on what one answer may hold. Each is well above the largest legitimate answer: a load balancer
/// with 5,000 backend addresses is about 2.5 MB, a page of an ARM list a few MB.
pub mod limits {
    /// One ARM answer (a resource or one page of a list).
    pub const ARM_BODY: usize = 64 << 20;
    /// A token answer (AAD, AD FS, IMDS identity endpoint).
    pub const TOKEN_BODY: usize = 1 << 20;
    /// `/metadata/endpoints` (cloud discovery) and other instance metadata answers.
    pub const METADATA_BODY: usize = 4 << 20;
}

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the cap (by `Content-Length` or once that much was received).
    #[error("the answer is larger than {limit} bytes (cap for {what}); refusing to read it")]
    TooLarge {
        /// What was being read, e.g. `an ARM answer`.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error("reading the answer: {0}")]
    Read(String),
}

/// Reads a whole body, refusing (without buffering more) once it passes `limit` bytes. An endless or
/// huge answer costs at most `limit` bytes of memory.
pub async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
    what: &'static str,
) -> Result<bytes::Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { what, limit });
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Read(describe_error(&e)))? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { what, limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
