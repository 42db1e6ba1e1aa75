//! azure-sim: a stateful local Azure — ARM compute and network, AAD token endpoint, IMDS and endpoint
//! discovery — with ETags, long-running operations, integrity rules, a throttling model, fault injection
//! and call accounting. The Azure we test, demo and benchmark against.
//!
//! It shares no code with the provider (`azure_cloud`): bodies are plain JSON, rules are ARM's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), azure_sim::SimError> {
//! let sim = azure_sim::AzureSim::start("127.0.0.1:0".parse().unwrap(), azure_sim::SimOptions::default(),
//!     &azure_sim::scenario::Scenario::default_cluster()).await?;
//! sim.write_config(std::path::Path::new("/tmp/azure.json"))?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod accounting;
mod admin;
mod arm;
mod backrefs;
pub mod faults;
mod identity;
mod rules;
pub mod scenario;
pub mod store;
pub mod throttle;
pub mod tls;

use accounting::{Accounting, CallRecord};
use faults::{FaultRule, Faults};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::Store;
use throttle::ThrottleModel;

/// How a write to a resource that has an operation in progress is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyAnswer {
    /// 429 `RetryableErrorDueToAnotherOperation` (network RP behaviour).
    Retryable429,
    /// 409 `AnotherOperationInProgress`.
    Conflict409,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Tenant the AAD endpoint serves.
    pub tenant_id: String,
    /// The service principal it accepts.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Serve HTTPS with a generated CA (default); plain HTTP for tools when false.
    pub https: bool,
    /// Added to every call.
    pub latency: Duration,
    /// How long a long-running operation stays InProgress.
    pub lro_delay: Duration,
    /// Refusal of writes to a busy resource.
    pub busy_answer: BusyAnswer,
    /// Enable the ARM/NRP/CRP throttling model.
    pub throttling: bool,
    /// Items per page of list calls.
    pub page_size: usize,
    /// Seed of fault injection.
    pub seed: u64,
    /// Simulated seconds per real second (throttle buckets, operation delays).
    pub clock_speed: f64,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// How long a `timeout` fault holds the request before answering nothing useful.
    pub hang: Duration,
    /// The region's availability zones (`zoneMappings` of the Microsoft.Compute provider); empty for a
    /// region without zones.
    pub region_zones: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            tenant_id: "00000000-0000-0000-0000-0000000000a1".into(),
            client_id: "00000000-0000-0000-0000-0000000000c1".into(),
            client_secret: "azure-sim-secret".into(),
            https: true,
            latency: Duration::ZERO,
            lro_delay: Duration::ZERO,
            busy_answer: BusyAnswer::Retryable429,
            throttling: false,
            page_size: 1000,
            seed: 1,
            clock_speed: 1.0,
            token_ttl: Duration::from_secs(3600),
            hang: Duration::from_secs(120),
            region_zones: vec!["1".into(), "2".into(), "3".into()],
        }
    }
}

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding or I/O.
    #[error("azure-sim: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A scenario that cannot be built.
    #[error("azure-sim scenario: {0}")]
    Scenario(String),
}

/// The simulated clock: simulated milliseconds since start, `clock_speed` times real time, plus manual advances.
#[derive(Debug)]
pub struct Clock {
    start: tokio::time::Instant,
    speed: f64,
    offset_ms: Mutex<u64>,
}

impl Clock {
    fn new(speed: f64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            speed: if speed > 0.0 { speed } else { 1.0 },
            offset_ms: Mutex::new(0),
        }
    }

    /// Simulated milliseconds since start.
    pub fn now_ms(&self) -> u64 {
        let real = self.start.elapsed().as_secs_f64() * 1000.0 * self.speed;
        real as u64 + *lock(&self.offset_ms)
    }

    /// Simulated seconds per real second.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Moves simulated time forward.
    pub fn advance(&self, d: Duration) {
        *lock(&self.offset_ms) += d.as_millis() as u64;
    }

    /// Converts a simulated duration into the real time a client must wait.
    pub fn to_real(&self, sim: Duration) -> Duration {
        Duration::from_secs_f64(sim.as_secs_f64() / self.speed)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A long-running operation.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub done_at_ms: u64,
}

/// Cluster facts the scenario established (for the azure.json the sim writes).
#[derive(Debug, Clone, Default)]
pub struct ClusterInfo {
    /// Subscription.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Location.
    pub location: String,
    /// VNet name.
    pub vnet: String,
    /// Subnet name.
    pub subnet: String,
    /// NSG name.
    pub nsg: String,
    /// Route table name.
    pub route_table: String,
    /// `vmss` or `standard`.
    pub vm_type: String,
    /// Primary scale set or availability set.
    pub primary_vm_set: String,
}

impl ClusterInfo {
    /// The id of a resource in the cluster's resource group, e.g. `id("Microsoft.Network", "loadBalancers/kubernetes")`.
    pub fn id(&self, provider: &str, path: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{provider}/{path}",
            self.subscription, self.resource_group
        )
    }
}

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub opts: SimOptions,
    pub clock: Clock,
    pub store: Mutex<Store>,
    pub ops: Mutex<HashMap<String, Operation>>,
    /// Issued tokens: expiry (simulated ms) and tenant.
    pub tokens: Mutex<HashMap<String, (u64, String)>>,
    /// Subscriptions of tenants other than `opts.tenant_id` (lower-cased subscription → tenant).
    pub subscription_tenants: Mutex<HashMap<String, String>>,
    pub calls: Mutex<Accounting>,
    pub faults: Mutex<Faults>,
    pub throttle: Mutex<ThrottleModel>,
    pub base_url: String,
    pub cluster: ClusterInfo,
    /// The VM IMDS answers for (`/metadata/instance`).
    pub imds_vm: Mutex<Option<String>>,
    pub op_counter: Mutex<u64>,
    /// Requests being handled: the next arrival number and the numbers not finished (recorded) yet.
    pub in_flight: Mutex<(u64, std::collections::BTreeSet<u64>)>,
}

/// Marks a request as being handled until dropped (after its call is recorded, or when it is cancelled).
pub(crate) struct InFlight<'a>(&'a Shared, u64);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(s: &'a Shared) -> Self {
        let mut g = lock(&s.in_flight);
        let n = g.0;
        g.0 += 1;
        g.1.insert(n);
        Self(s, n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.in_flight).1.remove(&self.1);
    }
}

/// A running simulator. Dropping it stops the server.
pub struct AzureSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AzureSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSim")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Drop for AzureSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AzureSim {
    /// Builds the scenario and serves on `addr` (loopback; port 0 for an ephemeral one).
    pub async fn start(addr: SocketAddr, opts: SimOptions, scenario: &scenario::Scenario) -> Result<Self, SimError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let scheme = if opts.https { "https" } else { "http" };
        let host = if addr.ip().is_loopback() && addr.is_ipv4() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("{scheme}://{host}:{}", addr.port());
        let mut store = Store::default();
        let cluster = scenario.build(&mut store).map_err(SimError::Scenario)?;
        let imds_vm = scenario::first_vm(&store);
        let shared = Arc::new(Shared {
            clock: Clock::new(opts.clock_speed),
            throttle: Mutex::new(ThrottleModel::new(opts.throttling)),
            faults: Mutex::new(Faults::new(opts.seed)),
            opts,
            store: Mutex::new(store),
            ops: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            subscription_tenants: Mutex::new(HashMap::new()),
            calls: Mutex::new(Accounting::default()),
            base_url,
            cluster,
            imds_vm: Mutex::new(imds_vm),
            op_counter: Mutex::new(0),
            in_flight: Mutex::new((0, Default::default())),
        });
        let app = arm::router(shared.clone());
        let (ca_pem, task) = if shared.opts.https {
            let tls = tls::SimTls::generate()?;
            let l = tls::TlsListener::new(listener, tls.server_config.clone())?;
            (Some(tls.ca_pem), tokio::spawn(async move { serve(l, app).await }))
        } else {
            (None, tokio::spawn(async move { serve(listener, app).await }))
        };
        tracing::info!(url = %shared.base_url, resources = lock(&shared.store).len(), "azure-sim serving");
        Ok(Self {
            shared,
            addr,
            ca_pem,
            task,
        })
    }

    /// The base URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate clients must trust (HTTPS mode).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The cluster the scenario created.
    pub fn cluster(&self) -> &ClusterInfo {
        &self.shared.cluster
    }

    /// The options.
    pub fn options(&self) -> &SimOptions {
        &self.shared.opts
    }

    /// The simulated clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// An azure.json (as JSON) for this simulator: service-principal credentials it accepts, the cluster's
    /// resources and `resourceManagerEndpoint` pointing at itself. `ca_path` is the written CA PEM.
    ///
    /// The form upstream's cloud-controller-manager accepts unmodified too: `cloud: AzurePublicCloud` (public
    /// api-versions) with `resourceManagerEndpoint`, which both read as "discover the endpoints at
    /// `{endpoint}/metadata/endpoints`". Two keys are ours — `trustedCACertPath` (the simulator's CA) and
    /// `imdsEndpoint` — and upstream ignores unknown keys; a Go client trusts the CA through `SSL_CERT_FILE`
    /// instead (which we read too). [`AzureSim::write_config`] also writes an environment file for clients
    /// that take endpoints only from `AZURE_ENVIRONMENT_FILEPATH`.
    pub fn azure_json(&self, ca_path: Option<&Path>) -> Value {
        let c = &self.shared.cluster;
        let o = &self.shared.opts;
        let mut v = json!({
            "cloud": "AzurePublicCloud",
            "tenantId": o.tenant_id,
            "subscriptionId": c.subscription,
            "aadClientId": o.client_id,
            "aadClientSecret": o.client_secret,
            "resourceGroup": c.resource_group,
            "location": c.location,
            "vnetName": c.vnet,
            "vnetResourceGroup": c.resource_group,
            "subnetName": c.subnet,
            "securityGroupName": c.nsg,
            "routeTableName": c.route_table,
            "vmType": c.vm_type,
            "loadBalancerSku": "standard",
            "resourceManagerEndpoint": format!("{}/", self.shared.base_url),
            "imdsEndpoint": self.shared.base_url,
            "useInstanceMetadata": true,
        });
        if c.vm_type == "vmss" {
            v["primaryScaleSetName"] = json!(c.primary_vm_set);
        } else {
            v["primaryAvailabilitySetName"] = json!(c.primary_vm_set);
        }
        if let Some(p) = ca_path {
            v["trustedCACertPath"] = json!(p.display().to_string());
        }
        v
    }

    /// Writes the azure.json, the environment file beside it (`<file>.environment.json`, for
    /// `AZURE_ENVIRONMENT_FILEPATH`) and, in HTTPS mode, the CA PEM (`<file>.ca.pem`, for `SSL_CERT_FILE` or
    /// `trustedCACertPath`).
    pub fn write_config(&self, path: &Path) -> std::io::Result<()> {
        let env_text = serde_json::to_string_pretty(&self.environment_file()).unwrap_or_default();
        std::fs::write(path.with_extension("environment.json"), env_text)?;
        let ca_path = match &self.ca_pem {
            Some(pem) => {
                let p = path.with_extension("ca.pem");
                std::fs::write(&p, pem)?;
                Some(std::fs::canonicalize(&p).unwrap_or(p))
            }
            None => None,
        };
        let text = serde_json::to_string_pretty(&self.azure_json(ca_path.as_deref())).unwrap_or_default();
        std::fs::write(path, text)
    }

    /// Waits (at most `max`, real time) until every request that arrived before this call is answered and
    /// recorded. A request's change is visible in the store a moment before its call is in the log; a
    /// benchmark that sees the change and then counts calls must wait for this first.
    pub async fn settled(&self, max: std::time::Duration) {
        let before = lock(&self.shared.in_flight).0;
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let oldest = lock(&self.shared.in_flight).1.first().copied();
            if oldest.is_none_or(|o| o >= before) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Every call recorded so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).records().to_vec()
    }

    /// Call counts by `(provider, resource type, operation)`.
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.shared.calls).counts()
    }

    /// Number of recorded ARM calls with a method (`GET`, `PUT`, ...), excluding token and IMDS calls.
    pub fn arm_calls(&self, method: &str) -> usize {
        lock(&self.shared.calls)
            .records()
            .iter()
            .filter(|r| r.is_arm() && r.method == method)
            .count()
    }

    /// Forgets recorded calls.
    pub fn reset_calls(&self) {
        lock(&self.shared.calls).reset();
    }

    /// An environment file (`AZURE_ENVIRONMENT_FILEPATH`) for the simulator, in the form upstream's client and
    /// ours read: a config naming the public cloud and this file reaches the simulator.
    pub fn environment_file(&self) -> Value {
        let base = format!("{}/", self.shared.base_url);
        serde_json::json!({
            "name": "AzureSim",
            "resourceManagerEndpoint": base,
            "activeDirectoryEndpoint": base,
            "tokenAudience": crate::identity::AUDIENCE,
            "serviceManagementEndpoint": crate::identity::AUDIENCE,
        })
    }

    /// Makes IMDS (`/metadata/instance`, `/metadata/loadbalancer`) describe the VM or scale-set instance `id`.
    pub fn set_imds_vm(&self, id: &str) {
        *lock(&self.shared.imds_vm) = Some(id.to_string());
    }

    /// Puts a subscription in another tenant (as ARM does for `networkResourceTenantID` set-ups): the AAD
    /// endpoint then also signs in to that tenant, requests to the subscription need a token of it, and a
    /// write elsewhere whose body links a resource of it needs one in `x-ms-authorization-auxiliary`.
    pub fn set_subscription_tenant(&self, subscription: &str, tenant: &str) {
        lock(&self.shared.subscription_tenants).insert(subscription.to_ascii_lowercase(), tenant.to_string());
    }

    /// Replaces the fault rules.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.shared.faults).set(rules);
    }

    /// A dump of every resource.
    pub fn state(&self) -> Value {
        lock(&self.shared.store).dump()
    }

    /// The body of a resource as stored (without ARM's read-only back-references).
    pub fn resource(&self, id: &str) -> Option<Value> {
        lock(&self.shared.store).get(id).map(|r| r.body.clone())
    }

    /// The body of a resource as a GET serves it: with ARM's read-only back-references (a pool's
    /// `backendIPConfigurations`, a public IP's `ipConfiguration`, ...).
    pub fn resource_as_served(&self, id: &str) -> Option<Value> {
        let store = lock(&self.shared.store);
        let mut body = store.get(id)?.body.clone();
        backrefs::fill(&store, &mut body);
        Some(body)
    }

    /// Runs a change on the store (runtime changes: add, remove, stop, deallocate instances).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store, &ClusterInfo) -> R) -> R {
        let mut s = lock(&self.shared.store);
        f(&mut s, &self.shared.cluster)
    }
}

async fn serve<L>(listener: L, app: axum::Router)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "azure-sim server stopped");
    }
}
