//! Delegated authentication and authorization of `--secure-port`, as upstream's controller managers do:
//! a bearer token is checked with a `TokenReview`, the user's right to the path with a
//! `SubjectAccessReview` (non-resource `get <path>`); both answers are cached for their TTLs. Paths in
//! `--authorization-always-allow-paths` (by default `/healthz`, `/readyz`, `/livez`) need neither.
//! A request without a token is `system:anonymous` and is authorized like any other user (so normally
//! refused). The plain-HTTP `--port` is for local use and is not protected (as upstream's insecure port).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Entries kept per cache; beyond this, expired entries are dropped (and all of them if none expired).
const CACHE_LIMIT: usize = 4096;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name (`system:anonymous` without a token).
    pub name: String,
    /// UID.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl User {
    fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// Settings from the `--authentication-*` / `--authorization-*` flags.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Paths that need no authentication or authorization (`*` at the end: a prefix).
    pub always_allow_paths: Vec<String>,
    /// TokenReview answers reused this long.
    pub token_ttl: Duration,
    /// Allowed SubjectAccessReview answers reused this long.
    pub allowed_ttl: Duration,
    /// Denied SubjectAccessReview answers reused this long.
    pub denied_ttl: Duration,
}

/// A TTL cache: key → (valid until, answer).
type Cache<K, V> = Arc<Mutex<HashMap<K, (Instant, V)>>>;

/// The delegated authenticator and authorizer of the secure port.
#[derive(Clone)]
pub struct DelegatedAuth {
    authn: kube::Client,
    authz: kube::Client,
    settings: Arc<AuthSettings>,
    /// SHA-256 of the token → its user (`None`: not authenticated).
    tokens: Cache<[u8; 32], Option<User>>,
    /// (user, path, verb) → allowed.
    decisions: Cache<(String, String, String), bool>,
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (Instant, V)>>, key: K, ttl: Duration, v: V) {
    if ttl.is_zero() {
        return;
    }
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= CACHE_LIMIT {
        let now = Instant::now();
        m.retain(|_, (until, _)| *until > now);
        if m.len() >= CACHE_LIMIT {
            m.clear();
        }
    }
    m.insert(key, (azure_cloud::clock::instant_after(Instant::now(), ttl), v));
}

fn recall<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, (Instant, V)>>, key: &K) -> Option<V> {
    let m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.get(key)
        .filter(|(until, _)| *until > Instant::now())
        .map(|(_, v)| v.clone())
}

/// Whether `path` is one of the always-allowed paths.
pub fn always_allowed(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => p == path,
    })
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the token was not accepted.
    Unauthenticated,
    /// 403: the user may not use the path.
    Forbidden(User),
    /// 500: a review could not be made.
    ReviewFailed(String),
}

impl DelegatedAuth {
    /// An authenticator using `authn` for TokenReviews and `authz` for SubjectAccessReviews.
    pub fn new(authn: kube::Client, authz: kube::Client, settings: AuthSettings) -> Self {
        Self {
            authn,
            authz,
            settings: Arc::new(settings),
            tokens: Arc::default(),
            decisions: Arc::default(),
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Option<User>, String> {
        let key = digest(token);
        if let Some(u) = recall(&self.tokens, &key) {
            return Ok(u);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.authn.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
            });
        remember(&self.tokens, key, self.settings.token_ttl, user.clone());
        Ok(user)
    }

    async fn authorize(&self, user: &User, path: &str, verb: &str) -> Result<bool, String> {
        let key = (user.name.clone(), path.to_string(), verb.to_string());
        if let Some(allowed) = recall(&self.decisions, &key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.authz.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        let allowed = answer.status.is_some_and(|s| s.allowed && s.denied != Some(true));
        let ttl = if allowed {
            self.settings.allowed_ttl
        } else {
            self.settings.denied_ttl
        };
        remember(&self.decisions, key, ttl, allowed);
        Ok(allowed)
    }

    /// Decides one request: `Ok` to serve it.
    pub async fn check(&self, path: &str, method: &str, authorization: Option<&str>) -> Result<(), Refusal> {
        if always_allowed(&self.settings.always_allow_paths, path) {
            return Ok(());
        }
        let user = match authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) {
            Some(token) if !token.trim().is_empty() => self
                .authenticate(token.trim())
                .await
                .map_err(Refusal::ReviewFailed)?
                .ok_or(Refusal::Unauthenticated)?,
            Some(_) => return Err(Refusal::Unauthenticated),
            None if authorization.is_some() => return Err(Refusal::Unauthenticated),
            None => User::anonymous(),
        };
        let verb = match method {
            "GET" | "HEAD" => "get",
            "POST" => "post",
            "PUT" => "put",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "get",
        };
        if self.authorize(&user, path, verb).await.map_err(Refusal::ReviewFailed)? {
            Ok(())
        } else {
            Err(Refusal::Forbidden(user))
        }
    }
}

/// The axum middleware.
pub async fn guard(State(auth): State<DelegatedAuth>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match auth.check(&path, req.method().as_str(), header.as_deref()).await {
        Ok(()) => next.run(req).await,
        Err(Refusal::Unauthenticated) => (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response(),
        Err(Refusal::Forbidden(user)) => (
            StatusCode::FORBIDDEN,
            format!("forbidden: User {:?} cannot get path {path:?}\n", user.name),
        )
            .into_response(),
        Err(Refusal::ReviewFailed(e)) => {
            tracing::warn!(path = %path, error = %e, "delegated authentication or authorization failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error: authorization could not be checked\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_allowed_paths_exact_and_prefix() {
        let p: Vec<String> = ["/healthz", "/debug/*"].iter().map(|s| s.to_string()).collect();
        assert!(always_allowed(&p, "/healthz"));
        assert!(!always_allowed(&p, "/healthz/extra"));
        assert!(always_allowed(&p, "/debug/pprof"));
        assert!(!always_allowed(&p, "/metrics"));
    }

    #[tokio::test(start_paused = true)]
    async fn caches_expire() {
        let m: Mutex<HashMap<u8, (Instant, bool)>> = Mutex::default();
        remember(&m, 1, Duration::from_secs(10), true);
        assert_eq!(recall(&m, &1), Some(true));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(recall(&m, &1), None);
        remember(&m, 2, Duration::ZERO, true);
        assert_eq!(recall(&m, &2), None);
    }
}
