//! The request pipeline every ARM call goes through:
//! token bucket (optional, waits) → throttle gate (waits, bounded, else `Throttled`) → subscription-bucket
//! pacer (waits for ARM's refill, bounded, else `Throttled`) → bearer token →
//! send → learn from `x-ms-ratelimit-remaining-*` / 429 → retry 408/500/502/503/504 and connection
//! errors with exponential backoff and jitter → map 404/412/other errors → follow long-running
//! operations to the end → metrics.

use super::error::ArmError;
use super::metrics::{ArmLabels, ArmMetrics, ArmOutcome, RequestLabels};
use super::throttle::{retry_after, Access, Charge, GateSettings, RateLimiters, ThrottleGates};
use crate::auth::{AuthError, Credential};
use crate::secret::Secret;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Where bearer tokens come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token for the scope.
    async fn token(&self, scope: &str) -> Result<Secret, AuthError>;
    /// Forget cached tokens (after a 401).
    async fn invalidate(&self);
}

#[async_trait::async_trait]
impl TokenSource for Credential {
    async fn token(&self, scope: &str) -> Result<Secret, AuthError> {
        Ok(self.get_token(scope).await?.token)
    }
    async fn invalidate(&self) {
        self.clear_cache().await
    }
}

/// Network resources in another tenant (`networkResourceTenantID`), as upstream: requests to the network
/// subscription carry that tenant's token; every other request carries the cluster tenant's token and the
/// network tenant's in `x-ms-authorization-auxiliary` (ARM needs it when a body links a resource of the
/// other tenant: a NIC or scale set joining a backend pool there).
#[derive(Debug, Clone)]
pub struct CrossTenant {
    /// `networkResourceSubscriptionID`.
    pub network_subscription: String,
    /// Tokens of `networkResourceTenantID` (the same service principal).
    pub network_tokens: Arc<dyn TokenSource>,
}

/// The `{sub}` of a `/subscriptions/{sub}/...` path ("" when there is none).
fn subscription_of(path: &str) -> &str {
    let mut segs = path.split('/');
    while let Some(s) = segs.next() {
        if s.eq_ignore_ascii_case("subscriptions") {
            return segs.next().unwrap_or_default();
        }
    }
    ""
}

/// A token obtained elsewhere (an embedding program's own credential flow).
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self, _: &str) -> Result<Secret, AuthError> {
        Ok(self.0.clone())
    }
    async fn invalidate(&self) {}
}

/// Retries of transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First delay.
    pub base: Duration,
    /// Growth factor per retry.
    pub exponent: f64,
    /// Jitter factor: delay × (1 + rand × jitter).
    pub jitter: f64,
    /// Cap of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_secs(5),
            exponent: 1.5,
            jitter: 1.0,
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// From `cloudProviderBackoff*` (upstream's values when enabled; M's SDK defaults otherwise).
    pub fn from_config(cfg: &crate::config::CloudConfig) -> Self {
        Self {
            max_retries: u32::try_from(cfg.cloud_provider_backoff_retries).unwrap_or(3),
            base: Duration::from_secs(u64::try_from(cfg.cloud_provider_backoff_duration).unwrap_or(5)),
            exponent: cfg.cloud_provider_backoff_exponent,
            jitter: cfg.cloud_provider_backoff_jitter,
            max_delay: Duration::from_secs(60),
        }
    }

    /// The delay before retry number `retry` (0-based), with jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let d = self.base.as_secs_f64() * self.exponent.powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let d = d * (1.0 + rand::random::<f64>() * self.jitter);
        Duration::from_secs_f64(d.min(self.max_delay.as_secs_f64()))
    }
}

/// Status codes retried in-call (upstream's list). 429 is handled by the gate, never here.
pub fn is_retriable_status(status: u16) -> bool {
    matches!(status, 408 | 500 | 502 | 503 | 504)
}

/// Settings of an [`ArmClient`].
#[derive(Debug, Clone)]
pub struct ArmSettings {
    /// ARM endpoint, e.g. `https://management.azure.com/`.
    pub endpoint: Url,
    /// Token scope, e.g. `https://management.core.windows.net//.default`.
    pub scope: String,
    /// Transient-failure retries.
    pub retry: RetryPolicy,
    /// Throttle-gate behaviour.
    pub gates: GateSettings,
    /// Retries of a 429 after waiting for its `Retry-After` (when within the gate's wait bound).
    pub max_throttle_retries: u32,
    /// Poll interval of long-running operations when ARM gives no `Retry-After`.
    pub lro_poll_interval: Duration,
    /// Give up following an operation after this long.
    pub lro_timeout: Duration,
    /// `source` label of the metrics.
    pub source: String,
}

impl ArmSettings {
    /// Settings for an endpoint and scope with defaults.
    pub fn new(endpoint: Url, scope: impl Into<String>) -> Self {
        Self {
            endpoint,
            scope: scope.into(),
            retry: RetryPolicy::default(),
            gates: GateSettings::default(),
            max_throttle_retries: 2,
            lro_poll_interval: Duration::from_secs(2),
            lro_timeout: Duration::from_secs(600),
            source: "azure-cloud".into(),
        }
    }
}

/// What a request is, for gates, limits, metrics and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// Provider namespace, e.g. `Microsoft.Network` (the gate key).
    pub provider: &'static str,
    /// Resource type path under the provider, e.g. `loadBalancers`.
    pub resource_type: &'static str,
    /// Metric name prefix, e.g. `load_balancer`.
    pub metric: &'static str,
    /// Operation, e.g. `create_or_update`.
    pub name: &'static str,
    /// Rate-limit client key, e.g. `loadBalancerRateLimit`.
    pub client_key: &'static str,
}

/// One ARM request.
#[derive(Debug, Clone)]
pub struct ArmRequest {
    /// HTTP method.
    pub method: Method,
    /// Resource path (starting with `/subscriptions/`) or an absolute URL on the ARM host (`nextLink`).
    pub target: String,
    /// api-version (ignored for absolute URLs, which carry their own).
    pub api_version: &'static str,
    /// Extra query parameters.
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Bytes>,
    /// `If-Match` value.
    pub if_match: Option<String>,
    /// Send `If-None-Match: *` (create only if absent).
    pub if_none_match_any: bool,
    /// What it is.
    pub op: Operation,
}

impl ArmRequest {
    /// A request without body or conditions.
    pub fn new(method: Method, target: impl Into<String>, api_version: &'static str, op: Operation) -> Self {
        Self {
            method,
            target: target.into(),
            api_version,
            query: Vec::new(),
            body: None,
            if_match: None,
            if_none_match_any: false,
            op,
        }
    }

    fn access(&self) -> Access {
        if self.method == Method::GET || self.method == Method::HEAD {
            Access::Read
        } else {
            Access::Write
        }
    }

    fn resource(&self) -> String {
        self.target.split('?').next().unwrap_or_default().to_string()
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// The ARM client: one per (endpoint, credential); cheap to share behind `Arc`.
#[derive(Debug)]
pub struct ArmClient {
    http: reqwest::Client,
    settings: ArmSettings,
    tokens: Arc<dyn TokenSource>,
    gates: ThrottleGates,
    limiters: RateLimiters,
    metrics: Arc<ArmMetrics>,
    cross_tenant: Option<CrossTenant>,
}

fn err_fields(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&v);
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    (s("code"), s("message"))
}

fn labels_for(req: &ArmRequest, source: &str) -> (RequestLabels, ArmLabels) {
    // Collections and absolute URLs are not resource ids: read the two segments directly.
    let path = req.resource();
    let segs: Vec<&str> = path.split('/').collect();
    let after = |key: &str| {
        segs.iter()
            .position(|s| s.eq_ignore_ascii_case(key))
            .and_then(|i| segs.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let legacy = RequestLabels {
        request: format!("{}_{}", req.op.metric, req.op.name),
        resource_group: after("resourceGroups").to_lowercase(),
        subscription_id: after("subscriptions"),
        source: source.to_string(),
    };
    let arm = ArmLabels {
        subscription_id: legacy.subscription_id.clone(),
        resource_group: legacy.resource_group.clone(),
        resource: crate::arm::metrics::upstream_resource(req.op.resource_type).to_string(),
        method: req.op.name.to_string(),
    };
    (legacy, arm)
}

/// The outcome of one attempt.
enum Attempt {
    /// A final answer.
    Done(Result<ArmResponse, ArmError>),
    /// Try again at once, not counted as a retry (re-authentication; a 429 whose gate wait is bounded).
    Again,
    /// A transient failure: retry after backoff (at least `after`), or give up with `error`.
    Transient { after: Duration, error: ArmError },
}

impl ArmClient {
    /// A client.
    pub fn new(
        http: reqwest::Client,
        settings: ArmSettings,
        tokens: Arc<dyn TokenSource>,
        limiters: RateLimiters,
    ) -> Self {
        Self {
            gates: ThrottleGates::new(settings.gates.clone()),
            http,
            settings,
            tokens,
            limiters,
            metrics: Arc::new(ArmMetrics::default()),
            cross_tenant: None,
        }
    }

    /// Network resources in another tenant: see [`CrossTenant`].
    pub fn with_cross_tenant(mut self, cross_tenant: CrossTenant) -> Self {
        self.cross_tenant = Some(cross_tenant);
        self
    }

    /// The token source of a request's URL, and the auxiliary one (see [`CrossTenant`]).
    fn token_sources(&self, url: &Url) -> (&dyn TokenSource, Option<&dyn TokenSource>) {
        match &self.cross_tenant {
            Some(ct) if subscription_of(url.path()).eq_ignore_ascii_case(&ct.network_subscription) => {
                (ct.network_tokens.as_ref(), None)
            }
            Some(ct) => (self.tokens.as_ref(), Some(ct.network_tokens.as_ref())),
            None => (self.tokens.as_ref(), None),
        }
    }

    /// The metrics (register them once in the process registry).
    pub fn metrics(&self) -> &Arc<ArmMetrics> {
        &self.metrics
    }

    /// The throttle gates.
    pub fn gates(&self) -> &ThrottleGates {
        &self.gates
    }

    /// The settings.
    pub fn settings(&self) -> &ArmSettings {
        &self.settings
    }

    fn url(&self, req: &ArmRequest) -> Result<Url, ArmError> {
        let invalid = |reason: String| ArmError::InvalidRequest {
            operation: format!("{}_{}", req.op.metric, req.op.name),
            reason,
        };
        let u = if req.target.contains("://") {
            // `nextLink`, `Azure-AsyncOperation`, `Location`: absolute URLs from an answer.
            Url::parse(&req.target).map_err(|e| invalid(e.to_string()))?
        } else {
            let mut u = self
                .settings
                .endpoint
                .join(req.target.trim_start_matches('/'))
                .map_err(|e| invalid(e.to_string()))?;
            {
                let mut q = u.query_pairs_mut();
                q.append_pair("api-version", req.api_version);
                for (k, v) in &req.query {
                    q.append_pair(k, v);
                }
            }
            u
        };
        token_destination_allowed(&u, &self.settings.endpoint).map_err(invalid)?;
        Ok(u)
    }

    /// The one place a bearer token is attached to a request: only for the ARM endpoint's own scheme,
    /// host and port, and only over https.
    fn authorized(
        &self,
        method: Method,
        url: &Url,
        token: &Secret,
        operation: &str,
    ) -> Result<reqwest::RequestBuilder, ArmError> {
        token_destination_allowed(url, &self.settings.endpoint).map_err(|reason| ArmError::InvalidRequest {
            operation: operation.to_string(),
            reason,
        })?;
        Ok(self.http.request(method, url.clone()).bearer_auth(token.expose()))
    }

    /// Sends a request through the whole pipeline. Writes answered with `Azure-AsyncOperation` or
    /// `Location` are followed until the operation ends; the initial answer (for a PUT: the resource as
    /// accepted) is returned.
    pub async fn execute(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let (labels, arm_labels) = labels_for(&req, &self.settings.source);
        let started = Instant::now();
        if self.limiters.acquire(req.op.client_key, req.access()).await {
            self.metrics.rate_limited(&labels);
            self.metrics.rate_limited_arm(&arm_labels);
        }
        let mut result = self.send_with_retries(&req).await;
        if let Ok(resp) = &result {
            if req.access() == Access::Write {
                if let Err(e) = self.follow_operation(&req, resp).await {
                    result = Err(e);
                }
            }
        }
        let (failed, throttled) = match &result {
            Ok(_) => (None, false),
            Err(e) if e.is_not_found() => (None, false),
            Err(e) => (Some(e.arm_code()), e.is_throttled()),
        };
        self.metrics.observe(&labels, started.elapsed(), failed, throttled);
        let outcome = match &result {
            Err(e) if e.is_throttled() => ArmOutcome::Throttled,
            Err(e) if !e.is_not_found() => ArmOutcome::Failed {
                status: e.status(),
                error_code: e.arm_code(),
            },
            _ => ArmOutcome::Ok,
        };
        self.metrics.observe_arm(&arm_labels, started.elapsed(), outcome);
        if let Err(e) = &result {
            if !e.is_not_found() {
                tracing::warn!(operation = %labels.request, resource = %req.resource(), error = %e, "ARM call failed");
            }
        }
        result
    }

    /// GET and decode JSON. The raw body is logged when it does not decode.
    pub async fn get_json<T: DeserializeOwned>(&self, req: ArmRequest) -> Result<T, ArmError> {
        let resource = req.resource();
        let op = req.op;
        let resp = self.execute(req).await?;
        decode(&resp.body, op, &resource)
    }

    /// Follows `nextLink` and collects every `value` of a list.
    pub async fn list_all<T: DeserializeOwned>(&self, req: ArmRequest) -> Result<Vec<T>, ArmError> {
        #[derive(serde::Deserialize)]
        struct Page<T> {
            #[serde(default = "Vec::new")]
            value: Vec<T>,
            #[serde(rename = "nextLink", default)]
            next_link: Option<String>,
        }
        let mut out = Vec::new();
        let mut next = Some(req.clone());
        while let Some(r) = next.take() {
            let page: Page<T> = self.get_json(r).await?;
            out.extend(page.value);
            if let Some(link) = page.next_link.filter(|l| !l.is_empty()) {
                let mut r = ArmRequest::new(Method::GET, link, req.api_version, req.op);
                r.query.clear();
                next = Some(r);
            }
        }
        Ok(out)
    }

    async fn send_with_retries(&self, req: &ArmRequest) -> Result<ArmResponse, ArmError> {
        let url = self.url(req)?;
        let mut retries = 0u32;
        let mut throttle_retries = 0u32;
        let mut reauthenticated = false;
        loop {
            match self
                .attempt(req, &url, &mut throttle_retries, &mut reauthenticated)
                .await
            {
                Attempt::Done(r) => return r,
                Attempt::Again => continue,
                Attempt::Transient { after, error } => {
                    if retries >= self.settings.retry.max_retries {
                        return Err(error);
                    }
                    let delay = self.settings.retry.delay(retries).max(after);
                    retries += 1;
                    tracing::debug!(resource = %req.resource(), retry = retries, ?delay, error = %error, "retrying ARM call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        req: &ArmRequest,
        url: &Url,
        throttle_retries: &mut u32,
        reauthenticated: &mut bool,
    ) -> Attempt {
        let operation = format!("{}_{}", req.op.metric, req.op.name);
        let resource = req.resource();
        let access = req.access();
        if let Err(wait) = self.gates.pass(req.op.provider, access).await {
            return Attempt::Done(Err(ArmError::Throttled {
                operation,
                resource,
                bucket: format!("{}/{}", req.op.provider, access.as_str()),
                retry_after: wait,
            }));
        }
        let charge = Charge::of(&req.method);
        let ticket = match self.gates.pace(subscription_of(url.path()), charge).await {
            Ok(t) => {
                if t.waited() {
                    // Held back client-side, as by a token bucket: upstream's `..._ratelimited_count`.
                    let (labels, arm_labels) = labels_for(req, &self.settings.source);
                    self.metrics.rate_limited(&labels);
                    self.metrics.rate_limited_arm(&arm_labels);
                }
                t
            }
            Err(wait) => {
                return Attempt::Done(Err(ArmError::Throttled {
                    operation,
                    resource,
                    bucket: format!("subscription/{charge:?}").to_lowercase(),
                    retry_after: wait,
                }))
            }
        };
        let (primary, auxiliary) = self.token_sources(url);
        let auth_failed = |e: AuthError| {
            Attempt::Done(Err(ArmError::Auth {
                operation: operation.clone(),
                resource: resource.clone(),
                reason: e.to_string(),
            }))
        };
        let token = match primary.token(&self.settings.scope).await {
            Ok(t) => t,
            Err(e) => return auth_failed(e),
        };
        let mut rb = match self.authorized(req.method.clone(), url, &token, &operation) {
            Ok(rb) => rb.header("x-ms-client-request-id", uuid_v4()),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if let Some(aux) = auxiliary {
            let t = match aux.token(&self.settings.scope).await {
                Ok(t) => t,
                Err(e) => return auth_failed(e),
            };
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
                v.set_sensitive(true);
                rb = rb.header("x-ms-authorization-auxiliary", v);
            }
        }
        if let Some(body) = &req.body {
            rb = rb.header("content-type", "application/json").body(body.clone());
        }
        if let Some(etag) = &req.if_match {
            if let Ok(v) = HeaderValue::from_str(etag) {
                rb = rb.header("if-match", v);
            }
        }
        if req.if_none_match_any {
            rb = rb.header("if-none-match", "*");
        }
        self.metrics
            .count_sent(&format!("{} {}/{}", req.method, req.op.provider, req.op.resource_type));
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                let error = ArmError::Transport {
                    operation,
                    resource,
                    reason: crate::http::describe_error(&e),
                };
                return if e.is_builder() || e.is_redirect() {
                    Attempt::Done(Err(error))
                } else {
                    Attempt::Transient {
                        after: Duration::ZERO,
                        error,
                    }
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.gates.observe(req.op.provider, access, status, &headers);
        self.gates.learn(&ticket, status, &headers);
        if (300..400).contains(&status) {
            // Redirects are never followed: a token must not follow a `Location` elsewhere.
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .to_string();
            return Attempt::Done(Err(ArmError::Redirected {
                operation,
                resource,
                status,
                location,
            }));
        }
        let body = match crate::http::read_body(resp, crate::http::limits::ARM_BODY, "an ARM answer").await {
            Ok(b) => b,
            Err(e @ crate::http::BodyError::TooLarge { .. }) => {
                return Attempt::Done(Err(ArmError::Transport {
                    operation,
                    resource,
                    reason: e.to_string(),
                }))
            }
            Err(e) => {
                return Attempt::Transient {
                    after: Duration::ZERO,
                    error: ArmError::Transport {
                        operation,
                        resource,
                        reason: e.to_string(),
                    },
                }
            }
        };
        if (200..300).contains(&status) {
            return Attempt::Done(Ok(ArmResponse { status, headers, body }));
        }
        let (code, message) = err_fields(&body);
        match status {
            401 if !*reauthenticated => {
                *reauthenticated = true;
                let (primary, auxiliary) = self.token_sources(url);
                primary.invalidate().await;
                if let Some(aux) = auxiliary {
                    aux.invalidate().await;
                }
                Attempt::Again
            }
            404 => Attempt::Done(Err(ArmError::NotFound {
                operation,
                resource,
                code,
            })),
            412 => Attempt::Done(Err(ArmError::Conflict { operation, resource })),
            429 => {
                let wait = retry_after(&headers).unwrap_or(self.settings.gates.default_retry_after);
                tracing::info!(resource = %resource, code = %code, retry_after = ?wait, "ARM throttled the call");
                if *throttle_retries < self.settings.max_throttle_retries && wait <= self.settings.gates.max_wait {
                    *throttle_retries += 1;
                    // The gate is closed until Retry-After: the next attempt waits in `pass`.
                    Attempt::Again
                } else {
                    Attempt::Done(Err(ArmError::Throttled {
                        operation,
                        resource,
                        bucket: format!("{}/{}", req.op.provider, access.as_str()),
                        retry_after: wait,
                    }))
                }
            }
            s if is_retriable_status(s) => Attempt::Transient {
                after: retry_after(&headers).unwrap_or(Duration::ZERO),
                error: ArmError::Http {
                    operation,
                    resource,
                    status,
                    code,
                    message,
                },
            },
            _ => Attempt::Done(Err(ArmError::Http {
                operation,
                resource,
                status,
                code,
                message,
            })),
        }
    }

    /// Follows `Azure-AsyncOperation` (status body) or `Location` (202 until done) to the end.
    async fn follow_operation(&self, req: &ArmRequest, resp: &ArmResponse) -> Result<(), ArmError> {
        let header = |n: &str| resp.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (url, async_op) = match (header("azure-asyncoperation"), header("location")) {
            (Some(u), _) => (u, true),
            (None, Some(u)) if resp.status == 202 => (u, false),
            _ => return Ok(()),
        };
        let operation = format!("{}_{}", req.op.metric, req.op.name);
        let resource = req.resource();
        // A first answer that is already terminal needs no poll (as Azure's SDKs do): a 200/201 whose body
        // says `provisioningState: Succeeded` is done; Failed/Canceled is the operation's error.
        if resp.status != 202 {
            if let Some(done) =
                provisioning_state(&resp.body).and_then(|state| terminal(&state, &resp.body, &operation, &resource))
            {
                return done;
            }
        }
        let poll_op = Operation {
            name: "poll",
            resource_type: "operations",
            ..req.op
        };
        let deadline = crate::clock::instant_after(Instant::now(), self.settings.lro_timeout);
        let mut wait = retry_after(&resp.headers).unwrap_or(self.settings.lro_poll_interval);
        loop {
            if crate::clock::instant_after(Instant::now(), wait) > deadline {
                return Err(ArmError::Transport {
                    operation,
                    resource,
                    reason: format!(
                        "long-running operation did not finish within {:?}",
                        self.settings.lro_timeout
                    ),
                });
            }
            tokio::time::sleep(wait).await;
            let poll = ArmRequest::new(Method::GET, url.clone(), req.api_version, poll_op);
            let r = self.send_with_retries(&poll).await?;
            wait = retry_after(&r.headers).unwrap_or(self.settings.lro_poll_interval);
            if !async_op {
                if r.status == 202 {
                    continue;
                }
                return Ok(());
            }
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let status = v.get("status").and_then(Value::as_str).unwrap_or("InProgress");
            match terminal(status, &r.body, &operation, &resource) {
                Some(done) => return done,
                None => continue,
            }
        }
    }
}

/// The outcome of an operation in `status` (`Succeeded`, `Failed`, `Canceled`), `None` while it runs.
fn terminal(status: &str, body: &[u8], operation: &str, resource: &str) -> Option<Result<(), ArmError>> {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Some(Ok(())),
        "failed" | "canceled" | "cancelled" => {
            let (code, message) = err_fields(body);
            Some(Err(ArmError::OperationFailed {
                operation: operation.to_string(),
                resource: resource.to_string(),
                status: status.to_string(),
                code,
                message,
            }))
        }
        _ => None,
    }
}

/// `properties.provisioningState` of a resource body, if it has one.
fn provisioning_state(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Props {
        #[serde(rename = "provisioningState")]
        provisioning_state: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Resource {
        properties: Option<Props>,
    }
    serde_json::from_slice::<Resource>(body)
        .ok()?
        .properties?
        .provisioning_state
}

/// Whether a bearer token may be sent to `url`: https only, and the ARM endpoint's own scheme, host and
/// port (a `nextLink` or operation URL elsewhere is refused). Unit tests may use plain HTTP on loopback
/// (mockito); the production build never does, whatever the configuration says.
pub fn token_destination_allowed(url: &Url, endpoint: &Url) -> Result<(), String> {
    let plain_test_server = cfg!(test) && url.scheme() == "http" && crate::http::is_loopback(url);
    if url.scheme() != "https" && !plain_test_server {
        return Err(format!(
            "refusing to send a token to {} (ARM is only called over https)",
            url.origin().ascii_serialization()
        ));
    }
    if url.scheme() != endpoint.scheme()
        || url.host_str() != endpoint.host_str()
        || url.port_or_known_default() != endpoint.port_or_known_default()
    {
        return Err(format!(
            "refusing to send a token to {} (not the ARM endpoint {})",
            url.origin().ascii_serialization(),
            endpoint.origin().ascii_serialization()
        ));
    }
    Ok(())
}

/// Decodes a JSON body; on failure logs the raw body (truncated) and names the resource.
pub fn decode<T: DeserializeOwned>(body: &[u8], op: Operation, resource: &str) -> Result<T, ArmError> {
    serde_json::from_slice(body).map_err(|e| {
        let raw = String::from_utf8_lossy(&body[..body.len().min(4096)]);
        tracing::warn!(resource, error = %e, body = %raw, "cannot decode ARM response");
        ArmError::Decode {
            operation: format!("{}_{}", op.metric, op.name),
            resource: resource.to_string(),
            reason: e.to_string(),
        }
    })
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}
