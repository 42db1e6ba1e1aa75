//! kube-sim: a small in-memory Kubernetes API server for end-to-end tests and the demo.
//!
//! This version serves discovery of the server version and a health endpoint; the object store
//! (nodes, services, events, leases, ...) with list/watch/patch semantics is the kube-sim issue.
#![warn(missing_docs)]

use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;

/// The Kubernetes version kube-sim reports.
pub const GIT_VERSION: &str = "v1.31.0-kube-sim";

/// A running server.
#[derive(Debug)]
pub struct KubeSim {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl KubeSim {
    /// Starts serving on `addr` (use `127.0.0.1:0` for an ephemeral port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/version", get(version))
            .route("/healthz", get(|| async { "ok" }));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "kube-sim server stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "major": "1", "minor": "31", "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64"
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_version_on_loopback() {
        let sim = KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert!(sim.addr().ip().is_loopback());
        let v: serde_json::Value = reqwest::get(format!("{}/version", sim.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["gitVersion"], GIT_VERSION);
    }
}
