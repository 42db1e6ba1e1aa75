//! HTTPS for the simulator: a CA generated at start, a leaf certificate for `localhost` / `127.0.0.1`
//! signed by it, and an axum listener that completes TLS handshakes off the accept loop.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::sync::Arc;

/// Certificate material of one simulator run.
#[derive(Debug, Clone)]
pub struct SimTls {
    /// The CA certificate (PEM): what clients must trust.
    pub ca_pem: String,
    /// The server configuration.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Errors creating certificates.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the simulator's TLS certificates: {0}")]
pub struct TlsError(String);

impl SimTls {
    /// Generates a CA and a server certificate for loopback names.
    pub fn generate() -> Result<Self, TlsError> {
        let e = |x: &dyn std::fmt::Display| TlsError(x.to_string());
        let ca_key = KeyPair::generate().map_err(|x| e(&x))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|x| e(&x))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "azure-sim local CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|x| e(&x))?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().map_err(|x| e(&x))?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(|x| e(&x))?;
        leaf_params.distinguished_name.push(DnType::CommonName, "azure-sim");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(|x| e(&x))?;
        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|x| e(&x))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|x| e(&x))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|x| e(&x))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(cfg),
        })
    }
}

/// The HTTPS listener (shared with the CCM's secure port).
pub use https_listener::TlsListener;
