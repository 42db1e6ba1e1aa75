//! kube-sim: a small in-memory Kubernetes API server for end-to-end tests and the demo.
//!
//! Real HTTP on loopback that kube-rs clients and kubectl use unchanged: discovery; Nodes, Services,
//! Endpoints, EndpointSlices, Events (core and events.k8s.io), Leases, Secrets, ConfigMaps, Namespaces;
//! GET, LIST (label and field selectors), WATCH from a resourceVersion (410 Gone when too old, BOOKMARKs on
//! request), POST, PUT (409 on a stale resourceVersion), PATCH (merge, strategic merge, JSON patch,
//! server-side apply), DELETE with finalizers, `/status` subresources; TokenReview and SubjectAccessReview
//! with answers configured by the test ([`KubeSim::set_token`], [`KubeSim::grant_path`]); OpenAPI v3 documents
//! (operations and open schemas) so kubectl's default validation works.
//!
//! Scope guard: a test and demo server, not a Kubernetes. No admission, no RBAC, no persistence, no
//! managed-fields tracking (server-side apply merges the applied object; `force` is accepted, conflicts
//! between field managers are not detected).
#![warn(missing_docs)]

mod api;
pub mod defaults;
pub mod kinds;
pub mod patch;
pub mod reviews;
pub mod store;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use store::{ApiError, Store};

/// The Kubernetes version kube-sim reports.
pub const GIT_VERSION: &str = "v1.33.0-kube-sim";

pub(crate) fn version() -> Value {
    serde_json::json!({
        "major": "1", "minor": "33", "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
    })
}

/// A running server. Dropping it stops serving.
pub struct KubeSim {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for KubeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl KubeSim {
    /// Starts serving on `addr` (use `127.0.0.1:0` for an ephemeral port), with the `default` and
    /// `kube-system` namespaces.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store::default()));
        let sim = Self {
            addr,
            store: store.clone(),
            task: tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, api::router(store)).await {
                    tracing::error!(error = %e, "kube-sim server stopped");
                }
            }),
        };
        for ns in ["default", "kube-system"] {
            let _ = sim.create("namespaces", "", serde_json::json!({"metadata": {"name": ns}}));
        }
        Ok(sim)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user:\n    token: kube-sim\n",
            self.url()
        )
    }

    /// Writes the kubeconfig.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    fn kind(plural: &str) -> Result<&'static kinds::Kind, ApiError> {
        kinds::KINDS
            .iter()
            .find(|k| k.plural == plural && (k.group.is_empty() || plural != "events"))
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("unknown resource {plural}")))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `token` authenticate (TokenReview) as `username` in `groups`.
    pub fn set_token(&self, token: &str, username: &str, groups: &[&str]) {
        self.store().reviews.set_token(
            token,
            reviews::UserInfo {
                username: username.to_string(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        );
    }

    /// Lets `subject` (a user or group) use `verb` on the non-resource `path` (SubjectAccessReview).
    pub fn grant_path(&self, subject: &str, path: &str, verb: &str) {
        self.store().reviews.grant(reviews::Grant {
            subject: subject.to_string(),
            path: path.to_string(),
            verb: verb.to_string(),
        });
    }

    /// (TokenReviews, SubjectAccessReviews) answered so far.
    pub fn review_counts(&self) -> (u64, u64) {
        let s = self.store();
        (s.reviews.token_reviews, s.reviews.access_reviews)
    }

    /// Creates an object of a core or group resource (by plural) directly.
    pub fn create(&self, plural: &str, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        let k = Self::kind(plural)?;
        self.store().create(k, namespace, obj)
    }

    /// Reads an object directly.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let k = Self::kind(plural)?;
        self.store().get(k, namespace, name)
    }

    /// Lists objects (all namespaces).
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let Ok(k) = Self::kind(plural) else { return Vec::new() };
        self.store().list(k, None, None, None)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// What `f` picks from every object of a kind, without copying the objects (for pollers: a 5,000-Node
    /// `list` per look took a third of a 2-core machine).
    pub fn list_map<T>(&self, plural: &str, f: impl FnMut(&Value) -> Option<T>) -> Vec<T> {
        let Ok(k) = Self::kind(plural) else { return Vec::new() };
        self.store().each(k, f)
    }

    /// Applies a merge patch directly (`status` selects the status subresource).
    pub fn merge_patch(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let k = Self::kind(plural)?;
        self.store()
            .patch(k, namespace, name, store::PatchType::Merge, patch, status)
    }

    /// Deletes an object directly (finalizer semantics apply).
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let k = Self::kind(plural)?;
        self.store().delete(k, namespace, name)
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
