//! `TokenReview` (authentication.k8s.io/v1) and `SubjectAccessReview` (authorization.k8s.io/v1), the two
//! APIs a component uses for delegated authentication and authorization of its own endpoints (e.g. a
//! controller manager's `/metrics`). Answers are configured by the test: which bearer tokens are which
//! users, and which users or groups may use which non-resource paths. Every review is counted, so a test
//! can check a client's caching.

use serde_json::{json, Value};
use std::collections::HashMap;

/// A user a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `status.user.username`.
    pub username: String,
    /// `status.user.groups`.
    pub groups: Vec<String>,
}

/// One grant: `subject` (a user name or a group) may use `verb` on a non-resource `path` (`*` at the end
/// matches a prefix, as RBAC's nonResourceURLs do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// User or group name.
    pub subject: String,
    /// Path, e.g. `/metrics`, or a prefix ending in `*`.
    pub path: String,
    /// Verb, e.g. `get`, or `*`.
    pub verb: String,
}

/// The configured answers and the review counts.
#[derive(Debug, Clone, Default)]
pub struct Reviews {
    tokens: HashMap<String, UserInfo>,
    grants: Vec<Grant>,
    /// TokenReviews answered.
    pub token_reviews: u64,
    /// SubjectAccessReviews answered.
    pub access_reviews: u64,
}

impl Reviews {
    /// `token` authenticates as `user`.
    pub fn set_token(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    /// Adds a grant.
    pub fn grant(&mut self, g: Grant) {
        self.grants.push(g);
    }

    /// Answers a TokenReview (the request object, with `status` filled).
    pub fn token_review(&mut self, mut review: Value) -> Value {
        self.token_reviews += 1;
        let token = review
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let status = match self.tokens.get(token) {
            Some(u) => json!({
                "authenticated": true,
                "user": {"username": u.username, "uid": format!("uid-{}", u.username), "groups": u.groups},
            }),
            None => json!({"authenticated": false, "error": "token not recognised"}),
        };
        review["status"] = status;
        review
    }

    /// Answers a SubjectAccessReview for a non-resource path (resource requests are denied: no RBAC here).
    pub fn access_review(&mut self, mut review: Value) -> Value {
        self.access_reviews += 1;
        let spec = review.get("spec").cloned().unwrap_or(Value::Null);
        let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups: Vec<&str> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let path = spec.pointer("/nonResourceAttributes/path").and_then(Value::as_str);
        let verb = spec
            .pointer("/nonResourceAttributes/verb")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let allowed = path.is_some_and(|path| {
            self.grants.iter().any(|g| {
                (g.subject == user || groups.contains(&g.subject.as_str()))
                    && (g.verb == "*" || g.verb == verb)
                    && match g.path.strip_suffix('*') {
                        Some(prefix) => path.starts_with(prefix),
                        None => g.path == path,
                    }
            })
        });
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "granted by kube-sim"})
        } else {
            json!({"allowed": false, "reason": "no grant in kube-sim"})
        };
        review
    }
}
