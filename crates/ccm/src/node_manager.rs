//! `cloud-node-manager`: upstream's per-node agent, run as a DaemonSet beside a controller manager started
//! with `--controllers=*,-cloud-node`. It manages exactly one Node, its own (`--node-name`):
//!
//! - initialisation of the Node registered with `node.cloudprovider.kubernetes.io/uninitialized`: provider
//!   id (when kubelet did not set one), instance type, zone and region labels (current and beta keys) and
//!   `topology.kubernetes.azure.com/sub-fault-domain`, addresses, then the taint removed (event `Synced`);
//!   with `--wait-routes`, `NetworkUnavailable=True` (reason `NodeInitialization`) is set first so pods wait
//!   for the route controller;
//! - its addresses kept up to date every `--node-status-update-frequency`.
//!
//! With `--use-instance-metadata` (the default) everything comes from the instance metadata service and no ARM
//! call is made, so a thousand agents cost the subscription nothing; with `--use-instance-metadata=false` the
//! ARM-backed provider of `--cloud-config` answers instead. Failures are retried with backoff and reported as
//! `FailedToInitializeNode` events; the process never exits on them.
//!
//! The same binary as the controller manager: run as `cloud-node-manager` (the image links that name) or as
//! `azure-cloud-controller-manager node-manager`.

use crate::compat::CompatFlags;
use crate::controllers::{apply_initialisation, UNINITIALIZED_TAINT};
use crate::events::{EventType, Recorder};
use azure_cloud::imds::{local_extra_labels, local_instance_metadata, Imds};
use azure_cloud::provider::{CloudError, InstanceMetadata, InstancesV2};
use azure_cloud::AzureCloud;
use clap::{ArgAction, Parser};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// The component name on events.
pub const COMPONENT: &str = "cloud-node-manager";

/// Flags of `cloud-node-manager`, named and behaving like upstream's.
#[derive(Debug, Parser)]
#[command(
    name = "cloud-node-manager",
    version,
    about = "Per-node agent: initialises and updates its own Node from the instance metadata service"
)]
pub struct NodeManagerOptions {
    /// Name of the Node this agent manages (upstream's chart passes `$(NODE_NAME)` from the downward API).
    #[arg(long = "node-name")]
    pub node_name: String,
    /// Describe the node from the instance metadata service (no ARM calls); `false` uses `--cloud-config`.
    #[arg(long = "use-instance-metadata", action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub use_instance_metadata: bool,
    /// Set `NetworkUnavailable=True` at initialisation so pods wait for the route controller (kubenet).
    #[arg(long = "wait-routes", action = ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub wait_routes: bool,
    /// azure.json: required with `--use-instance-metadata=false`; otherwise only its `imdsEndpoint` and
    /// `trustedCACertPath` are used.
    #[arg(long = "cloud-config", value_name = "FILE")]
    pub cloud_config: Option<PathBuf>,
    /// Path to a kubeconfig (default: in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's address (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,
    /// How often the node's addresses are refreshed.
    #[arg(long = "node-status-update-frequency", default_value = "5m")]
    pub node_status_update_frequency: String,
    /// The instance metadata service (ours; upstream's is fixed). An `imdsEndpoint` in `--cloud-config` wins.
    #[arg(long = "imds-endpoint", default_value = "http://169.254.169.254")]
    pub imds_endpoint: String,
    /// Kubernetes API requests in flight at most.
    #[arg(long = "kube-api-concurrency", default_value_t = 4)]
    pub kube_api_concurrency: u32,
    /// Upstream's switch for the deprecated beta topology labels; they are always set here, as by the
    /// controller manager's cloud-node controller.
    #[arg(long = "enable-deprecated-beta-topology-labels", hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub enable_deprecated_beta_topology_labels: Option<String>,
    /// Upstream's Windows-service switch.
    #[arg(long = "windows-service", hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub windows_service: Option<String>,
    /// Log verbosity (klog levels).
    #[arg(long = "v", short = 'v', default_value_t = 2)]
    pub verbosity: u8,
    /// `text` or `json`.
    #[arg(long = "logging-format", default_value = "text")]
    pub logging_format: String,
    /// Upstream flags accepted for compatibility.
    #[command(flatten)]
    pub compat: CompatFlags,
}

impl NodeManagerOptions {
    /// One warning per flag that is accepted but has no effect.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.compat.warnings();
        if let Some(v) = &self.enable_deprecated_beta_topology_labels {
            w.push(format!("--enable-deprecated-beta-topology-labels={v} is accepted but has no effect: the beta zone, region and instance-type labels are always set"));
        }
        if let Some(v) = &self.windows_service {
            w.push(format!(
                "--windows-service={v} is accepted but has no effect: this build runs on Linux only"
            ));
        }
        w
    }
}

/// Where the node's description comes from.
enum Source {
    /// The instance metadata service (upstream's default).
    Imds(Imds),
    /// The ARM-backed provider (`--use-instance-metadata=false`).
    Arm(Arc<AzureCloud>),
}

impl Source {
    /// The node's metadata and the extra labels upstream's node manager sets.
    async fn describe(&self, node: &Node) -> Result<(InstanceMetadata, Vec<(String, String)>), CloudError> {
        match self {
            Source::Imds(imds) => {
                let doc = imds.instance().await?;
                let lb = imds.load_balancer().await.ok();
                let md = local_instance_metadata(&node.name_any(), &doc, lb.as_deref())?;
                Ok((md, local_extra_labels(&doc)))
            }
            Source::Arm(cloud) => Ok((cloud.instance_metadata(node).await?, Vec::new())),
        }
    }
}

async fn source(opts: &NodeManagerOptions) -> Result<Source, String> {
    let env = azure_cloud::config::process_env;
    let cfg = match &opts.cloud_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("--cloud-config {}: {e}", p.display()))?;
            let (cfg, report) = azure_cloud::config::CloudConfig::parse(&text, &env)
                .map_err(|e| format!("--cloud-config {}: {e}", p.display()))?;
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
            Some(cfg)
        }
        None => None,
    };
    if !opts.use_instance_metadata {
        let cfg =
            cfg.ok_or("--use-instance-metadata=false needs --cloud-config (the node is then described by ARM)")?;
        let cloud = AzureCloud::new(cfg, &env).await.map_err(|e| e.to_string())?;
        return Ok(Source::Arm(Arc::new(cloud)));
    }
    let (http, endpoint) = match &cfg {
        Some(c) => (
            azure_cloud::http::client_for_config(c, &env).map_err(|e| e.to_string())?,
            c.imds_endpoint.clone(),
        ),
        None => {
            let ssl = env("SSL_CERT_FILE").unwrap_or_default();
            let http = azure_cloud::http::build_client(&Default::default(), &[(&ssl, "SSL_CERT_FILE")])
                .map_err(|e| e.to_string())?;
            (http, opts.imds_endpoint.clone())
        }
    };
    Ok(Source::Imds(Imds::new(http, &endpoint)))
}

fn tainted(node: &Node) -> bool {
    crate::controllers::has_taint(node, UNINITIALIZED_TAINT)
}

fn network_unavailable(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"))
        .is_some_and(|c| c.status == "True")
}

/// One pass over the node: initialise it when tainted, else refresh its addresses. Returns whether it did
/// what it had to (an error is to be retried).
async fn reconcile(
    api: &Api<Node>,
    source: &Source,
    opts: &NodeManagerOptions,
    node: &Node,
) -> Result<bool, CloudError> {
    let name = node.name_any();
    let (md, extra) = source.describe(node).await?;
    if !tainted(node) {
        crate::controllers::update_addresses(api, node, &md.node_addresses)
            .await
            .map_err(|e| CloudError::Azure(format!("patching node {name} status: {e}")))?;
        return Ok(false);
    }
    if opts.wait_routes && !network_unavailable(node) {
        let p = json!({"status": {"conditions": [{
            "type": "NetworkUnavailable", "status": "True", "reason": "NodeInitialization",
            "message": "Waiting for cloud routes",
        }]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&p))
            .await
            .map_err(|e| CloudError::Azure(format!("setting NetworkUnavailable on node {name}: {e}")))?;
    }
    apply_initialisation(api, node, &md, &extra).await?;
    Ok(true)
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(opts: &NodeManagerOptions) -> Result<(), String> {
    for w in opts.warnings() {
        tracing::warn!("{w}");
    }
    if opts.node_name.trim().is_empty() {
        return Err("--node-name is empty: pass the Node's name (the chart sets $(NODE_NAME))".into());
    }
    let period = crate::manager::parse_duration(&opts.node_status_update_frequency)
        .map_err(|e| format!("--node-status-update-frequency: {e}"))?;
    let client = crate::manager::kube_client_at(
        opts.kubeconfig.as_deref(),
        opts.master.as_deref(),
        opts.kube_api_concurrency as usize,
        "--kubeconfig",
    )
    .await?;
    let source = source(opts).await?;
    let api: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::new(client, COMPONENT);
    let name = opts.node_name.clone();
    tracing::info!(node = %name, imds = opts.use_instance_metadata, wait_routes = opts.wait_routes, "cloud-node-manager starting");
    // Our own Node only: a watch with a field selector, so a fleet of agents does not each receive every Node.
    let mut changes = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut failures = 0u32;
    loop {
        let wait = match api.get_opt(&name).await {
            Ok(Some(node)) => match reconcile(&api, &source, opts, &node).await {
                Ok(initialised) => {
                    failures = 0;
                    if initialised {
                        tracing::info!(node = %name, "node initialised from instance metadata");
                        crate::controllers::publish(
                            &recorder,
                            &node,
                            EventType::Normal,
                            "Synced",
                            "Node synced successfully".into(),
                        );
                    }
                    period
                }
                Err(e) => {
                    failures += 1;
                    let wait = crate::runtime::retry_delay(crate::runtime::Backoff::NODE, failures, &e)
                        .unwrap_or(crate::runtime::Backoff::NODE.max);
                    tracing::warn!(node = %name, error = %e, retry_in = ?wait, "failed to initialise or update the node");
                    if tainted(&node) {
                        crate::controllers::publish(
                            &recorder,
                            &node,
                            EventType::Warning,
                            "FailedToInitializeNode",
                            e.to_string(),
                        );
                    }
                    wait
                }
            },
            Ok(None) => {
                tracing::info!(node = %name, "the Node is not registered yet; waiting for kubelet");
                period
            }
            Err(e) => {
                failures += 1;
                let wait = crate::runtime::Backoff::NODE.delay(failures);
                tracing::warn!(node = %name, error = %e, retry_in = ?wait, "cannot read the Node");
                wait
            }
        };
        let timer = tokio::time::sleep(wait);
        tokio::pin!(timer);
        // Wake early only for what needs action: the Node appearing or (re)gaining the uninitialised taint.
        loop {
            tokio::select! {
                _ = &mut timer => break,
                change = changes.next() => match change {
                    Some(Ok(n)) if tainted(&n) && failures == 0 => break,
                    Some(_) => {}
                    None => return Err("the Node watch ended".into()),
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
            }
        }
    }
}

/// Parses argv as `cloud-node-manager` flags and runs the agent; returns the process exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let opts = NodeManagerOptions::parse_from(args);
    crate::cli::init_logging_with(opts.verbosity, &opts.logging_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(&opts)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("cloud-node-manager: {e}");
            1
        }
    }
}
