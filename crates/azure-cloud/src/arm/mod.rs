//! ARM access: typed resource ids, one trait per resource client with the production implementation,
//! the request pipeline (throttle gates, rate limits, retries, `If-Match`, long-running operations,
//! metrics) and TTL caches.
//!
//! The `azure_mgmt_*` 0.21 crates provide the typed models and api-versions; requests go through our own
//! pipeline because the generated request builders cannot send `If-Match`, drop ARM's error code and
//! message when a long-running operation fails, and send an extra GET after every successful one.

pub mod cache;
pub mod clients;
pub mod error;
pub mod fake;
pub mod id;
pub mod metrics;
pub mod pipeline;
pub mod shared;
pub mod throttle;

pub use cache::{ReadMode, TtlCache};
pub use clients::*;
pub use error::ArmError;
pub use id::{provider_id_for, resource_id_from_provider_id, ResourceId};
pub use pipeline::{ArmClient, ArmRequest, ArmResponse, ArmSettings, Operation, RetryPolicy, StaticToken, TokenSource};
pub use throttle::{Access, GateSettings, RateLimiters};

use crate::auth::{AuthError, Credential};
use crate::config::{CloudConfig, CloudEnvironment, EnvLookup, EnvironmentError};
use crate::http::HttpClientError;
use std::sync::Arc;

/// Errors connecting to ARM at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// The cloud environment could not be resolved.
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    /// The credential could not be built.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The ARM endpoint is not an https URL.
    #[error("invalid ARM endpoint {0:?}: must be an absolute https URL (bearer tokens are never sent in clear)")]
    Endpoint(String),
}

/// Everything needed to call ARM, built from a config.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The resolved environment.
    pub environment: CloudEnvironment,
    /// The pipeline.
    pub arm: Arc<ArmClient>,
    /// The resource clients for the config's subscription.
    pub clients: AzureClients,
    /// The shared HTTP client (IMDS and others use it too).
    pub http: reqwest::Client,
}

/// Builds the HTTP client, resolves the environment (discovery when `resourceManagerEndpoint` is set),
/// builds the credential and the pipeline. Makes at most one network call (endpoint discovery).
pub async fn connect(cfg: &CloudConfig, env: EnvLookup<'_>) -> Result<Connection, ConnectError> {
    let http = crate::http::client_for_config(cfg, env)?;
    let environment = CloudEnvironment::resolve(cfg, &http, env).await?;
    let credential = Credential::from_config(cfg, &environment, http.clone(), env)?;
    let endpoint = url::Url::parse(&environment.resource_manager_endpoint)
        .ok()
        .filter(|u| u.scheme() == "https")
        .ok_or_else(|| ConnectError::Endpoint(environment.resource_manager_endpoint.clone()))?;
    let mut settings = ArmSettings::new(endpoint, environment.arm_scope());
    settings.retry = RetryPolicy::from_config(cfg);
    let mut client = ArmClient::new(http.clone(), settings, credential, RateLimiters::from_config(cfg));
    if cfg.uses_network_tenant() {
        // The same service principal, authenticated in the network tenant.
        let mut network_cfg = cfg.clone();
        network_cfg.tenant_id = cfg.network_resource_tenant_id.clone();
        let network_tokens = Credential::from_config(&network_cfg, &environment, http.clone(), env)?;
        client = client.with_cross_tenant(pipeline::CrossTenant {
            network_subscription: cfg.network_resource_subscription_id.clone(),
            network_tokens,
        });
        tracing::info!(
            network_tenant = %cfg.network_resource_tenant_id,
            network_subscription = %cfg.network_resource_subscription_id,
            "network resources in another tenant: its tokens for the network subscription, auxiliary tokens for the rest"
        );
    }
    let arm = Arc::new(client);
    let clients = AzureClients::new(arm.clone(), cfg.subscription_id.clone());
    tracing::info!(
        cloud = %environment.name,
        arm = %environment.resource_manager_endpoint,
        credential = ?cfg.credential_kind(),
        "connected to Azure Resource Manager"
    );
    Ok(Connection {
        environment,
        arm,
        clients,
        http,
    })
}

#[cfg(test)]
mod tests;

/// A model as JSON (the form the planners and JSON-bodied writes work on); `Null` if it cannot serialise.
pub(crate) fn to_json<T: serde::Serialize>(t: &T) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}
