//! Client-certificate credential material: a PFX (PKCS#12) or PEM file with an RSA key, and the signed
//! JWT client assertion AAD expects (RS256, `x5t` = SHA-1 thumbprint of the certificate).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors loading a certificate or signing an assertion. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read aadClientCertPath {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not a usable PFX or PEM.
    #[error("aadClientCertPath {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Signing failed.
    #[error("cannot sign the client assertion: {0}")]
    Sign(String),
}

/// A certificate and its RSA private key.
pub struct ClientCertificate {
    key: RsaKeyPair,
    thumbprint_sha1: [u8; 20],
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t", &B64.encode(self.thumbprint_sha1))
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Loads a PFX (binary, optional password) or a PEM file (certificate + PKCS#8 or PKCS#1 key).
    pub fn load(path: &Path, password: &str) -> Result<Self, CertificateError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CertificateError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let invalid = |reason: String| CertificateError::Invalid {
            path: p.clone(),
            reason,
        };
        let (cert_der, key) = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            let cert = CertificateDer::pem_slice_iter(&bytes)
                .next()
                .ok_or_else(|| invalid("no CERTIFICATE block in the PEM file".into()))?
                .map_err(|e| invalid(format!("bad PEM certificate: {e:?}")))?;
            let key =
                PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| invalid(format!("no usable private key: {e:?}")))?;
            let key = match &key {
                PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
                _ => return Err(invalid("only RSA keys are supported".into())),
            }
            .map_err(|e| invalid(format!("not an RSA key: {e}")))?;
            (cert.to_vec(), key)
        } else {
            let store =
                p12_keystore::KeyStore::from_pkcs12(&bytes, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
                    .map_err(|e| invalid(format!("cannot open PFX (wrong aadClientCertPassword?): {e}")))?;
            let (_, chain) = store
                .private_key_chain()
                .ok_or_else(|| invalid("the PFX holds no private key with a certificate".into()))?;
            let cert = chain
                .certs()
                .first()
                .ok_or_else(|| invalid("the PFX key has no certificate".into()))?;
            let key =
                RsaKeyPair::from_pkcs8(chain.key().as_der()).map_err(|e| invalid(format!("not an RSA key: {e}")))?;
            (cert.as_der().to_vec(), key)
        };
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
        let mut thumbprint_sha1 = [0u8; 20];
        thumbprint_sha1.copy_from_slice(digest.as_ref());
        Ok(Self { key, thumbprint_sha1 })
    }

    /// The `x5t` header value.
    pub fn x5t(&self) -> String {
        B64.encode(self.thumbprint_sha1)
    }

    /// A signed client assertion for `client_id` at `audience` (the token endpoint), valid ten minutes.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, CertificateError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t()});
        let jti: [u8; 16] = rand::random();
        let claims = serde_json::json!({
            "aud": audience, "iss": client_id, "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| CertificateError::Sign(e.to_string()))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The public key (DER `RSAPublicKey`), to verify assertions in tests.
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }
}
