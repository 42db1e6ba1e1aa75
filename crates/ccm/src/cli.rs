//! Command-line flags, named and behaving like upstream's (`--flag`, `--flag=true|false`, `--flag value`).

use azure_cloud::config::{CloudConfig, ConfigError};
use clap::{ArgAction, Parser};
use std::io::Write;
use std::path::PathBuf;

/// Flags of `azure-cloud-controller-manager`.
#[derive(Debug, Parser)]
#[command(
    name = "azure-cloud-controller-manager",
    version,
    about = "Kubernetes cloud-controller-manager for Azure"
)]
pub struct Options {
    /// A subcommand (`demo`); without one, the controller manager runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Path to the cloud provider configuration file (azure.json).
    #[arg(long = "cloud-config", value_name = "FILE")]
    pub cloud_config: Option<PathBuf>,
    /// Cloud provider name; only `azure` is supported.
    #[arg(long = "cloud-provider", default_value = "azure")]
    pub cloud_provider: String,
    /// Load and validate the cloud config, print the effective configuration (secrets redacted), and exit.
    #[arg(long = "check-config", action = ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub check_config: bool,
    /// Log verbosity (0–10, as klog's `--v`).
    #[arg(long = "v", short = 'v', default_value_t = 2)]
    pub verbosity: u8,
    /// Log format: `text` or `json`.
    #[arg(long = "logging-format", default_value = "text")]
    pub logging_format: String,
    /// Path to a kubeconfig (default: in-cluster or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server address (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,
    /// Cluster name: LB, backend-pool and public-IP name prefix.
    #[arg(long = "cluster-name", default_value = "kubernetes")]
    pub cluster_name: String,
    /// Controllers to run: `*`, names, `-name` (cloud-node, cloud-node-lifecycle, service, route).
    #[arg(long, default_value = "*")]
    pub controllers: String,
    /// Create routes for node pod CIDRs.
    #[arg(long = "configure-cloud-routes", action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub configure_cloud_routes: bool,
    /// Whether pod CIDRs are allocated to nodes (the route controller needs it).
    #[arg(long = "allocate-node-cidrs", action = ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// The cluster's pod CIDR(s), comma-separated.
    #[arg(long = "cluster-cidr", default_value = "")]
    pub cluster_cidr: String,
    /// node-ipam allocator: `RangeAllocator` (upstream's `CloudAllocator` is not implemented).
    #[arg(long = "cidr-allocator-type", default_value = "RangeAllocator")]
    pub cidr_allocator_type: String,
    /// Node pod-CIDR mask size of a single-stack cluster (node-ipam).
    #[arg(long = "node-cidr-mask-size")]
    pub node_cidr_mask_size: Option<String>,
    /// IPv4 node pod-CIDR mask size (node-ipam; default 24).
    #[arg(long = "node-cidr-mask-size-ipv4")]
    pub node_cidr_mask_size_ipv4: Option<String>,
    /// IPv6 node pod-CIDR mask size (node-ipam; default 64).
    #[arg(long = "node-cidr-mask-size-ipv6")]
    pub node_cidr_mask_size_ipv6: Option<String>,
    /// Service CIDRs: never allocated to a Node when they overlap `--cluster-cidr` (node-ipam).
    #[arg(long = "service-cluster-ip-range")]
    pub service_cluster_ip_range: Option<String>,
    /// Route reconciliation period.
    #[arg(long = "route-reconciliation-period", default_value = "10s")]
    pub route_reconciliation_period: String,
    /// Period of the service controller's full node-set re-sync (UpdateLoadBalancer for every Service).
    #[arg(long = "node-sync-period", default_value = "100s")]
    pub node_sync_period: String,
    /// Node lifecycle period.
    #[arg(long = "node-monitor-period", default_value = "5s")]
    pub node_monitor_period: String,
    /// Node address refresh period.
    #[arg(long = "node-status-update-frequency", default_value = "5m")]
    pub node_status_update_frequency: String,
    /// Services reconciled concurrently. Upstream defaults to 1; the provider group-commits concurrent
    /// writes to the same load balancer and security group, so the more Services are in flight together,
    /// the fewer ARM writes they cost (a burst of 200 with 10 workers: 360 writes; with 200: ≈ 203). A
    /// worker waiting on a batch costs a few KiB, so the default lets a burst of 1,000 Services meet in the
    /// same batches (5,000 nodes, 1,000 Services: 571 writes and 207 s to the last IP with 200 workers; 520
    /// and 69 s with 1,000).
    #[arg(long = "concurrent-service-syncs", default_value_t = 1000)]
    pub concurrent_service_syncs: u32,
    /// Kubernetes API requests waiting for their response at once (watches count only until their stream
    /// starts). HTTP/1.1 costs a connection per request in flight, kept open afterwards; this bounds them.
    #[arg(long = "kube-api-concurrency", default_value_t = 30)]
    pub kube_api_concurrency: u32,
    /// Run only while holding the lease.
    #[arg(long = "leader-elect", action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub leader_elect: bool,
    /// Lease duration.
    #[arg(long = "leader-elect-lease-duration", default_value = "15s")]
    pub leader_elect_lease_duration: String,
    /// Renew deadline.
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s")]
    pub leader_elect_renew_deadline: String,
    /// Retry period.
    #[arg(long = "leader-elect-retry-period", default_value = "2s")]
    pub leader_elect_retry_period: String,
    /// Lease name.
    #[arg(long = "leader-elect-resource-name", default_value = "cloud-controller-manager")]
    pub leader_elect_resource_name: String,
    /// Lease namespace.
    #[arg(long = "leader-elect-resource-namespace", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Address of the health and metrics endpoints.
    #[arg(long = "bind-address", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// HTTPS port of `/healthz`, `/readyz` and `/metrics` (0: no HTTPS).
    #[arg(long = "secure-port", default_value_t = 10258)]
    pub secure_port: u16,
    /// Plain-HTTP port of the same endpoints (0, the default: none).
    #[arg(long = "port", default_value_t = 0)]
    pub port: u16,
    /// Certificate chain (PEM) for HTTPS; without it a self-signed certificate is generated at start.
    #[arg(long = "tls-cert-file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// Private key (PEM) of `--tls-cert-file`.
    #[arg(long = "tls-private-key-file")]
    pub tls_private_key_file: Option<std::path::PathBuf>,
    /// kubeconfig of the API server that answers TokenReviews for requests to `--secure-port`
    /// (default: the `--kubeconfig` / in-cluster connection).
    #[arg(long = "authentication-kubeconfig")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig of the API server that answers SubjectAccessReviews (default: the `--kubeconfig` /
    /// in-cluster connection).
    #[arg(long = "authorization-kubeconfig")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Upstream: skip looking up the client CA in the cluster. Accepted: client-certificate
    /// authentication is not implemented, so nothing is looked up.
    #[arg(long = "authentication-skip-lookup", action = ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub authentication_skip_lookup: bool,
    /// Upstream: start even when the client-CA lookup fails. Accepted (no lookup is made).
    #[arg(long = "authentication-tolerate-lookup-failure", action = ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub authentication_tolerate_lookup_failure: bool,
    /// How long a TokenReview answer is reused for the same token.
    #[arg(long = "authentication-token-webhook-cache-ttl", default_value = "10s")]
    pub authentication_token_webhook_cache_ttl: String,
    /// How long an "allowed" SubjectAccessReview answer is reused.
    #[arg(long = "authorization-webhook-cache-authorized-ttl", default_value = "10s")]
    pub authorization_webhook_cache_authorized_ttl: String,
    /// How long a "denied" SubjectAccessReview answer is reused.
    #[arg(long = "authorization-webhook-cache-unauthorized-ttl", default_value = "10s")]
    pub authorization_webhook_cache_unauthorized_ttl: String,
    /// Paths served on `--secure-port` without authentication or authorization (`*` at the end: a prefix).
    #[arg(long = "authorization-always-allow-paths", default_value = "/healthz,/readyz,/livez")]
    pub authorization_always_allow_paths: String,
    /// Client-certificate authentication for `--secure-port`: not implemented; when set, a warning says so
    /// and requests are authenticated by bearer token only.
    #[arg(long = "client-ca-file")]
    pub client_ca_file: Option<PathBuf>,
    /// Name of the Secret (in kube-system) that holds the cloud config (`cloudConfigType` secret or merge).
    #[arg(long = "cloud-config-secret-name", default_value = "azure-cloud-provider")]
    pub cloud_config_secret_name: String,
    /// Key of the cloud config in that Secret.
    #[arg(long = "cloud-config-key", default_value = "cloud-config")]
    pub cloud_config_key: String,
    /// Lock type of leader election: `leases` (upstream's default). Other values are accepted with a warning
    /// and a Lease is used.
    #[arg(long = "leader-elect-resource-lock", default_value = "leases")]
    pub leader_elect_resource_lock: String,
    /// Upstream flags accepted for compatibility (see `compat`): honoured or warned about by name.
    #[command(flatten)]
    pub compat: crate::compat::CompatFlags,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the provider against the built-in simulated Azure (no account needed) and show what it does.
    #[cfg(feature = "simulators")]
    Demo(crate::demo::DemoArgs),
    /// Run the benchmark scenarios through the whole CCM against the simulators (`--quick` checks targets).
    #[cfg(feature = "simulators")]
    Bench(crate::bench::BenchArgs),
}

/// Maps klog verbosity to a tracing level: 0–1 warn/info, 2–3 info, 4 debug, 5+ trace.
pub fn level_for(v: u8) -> tracing::Level {
    match v {
        0 => tracing::Level::WARN,
        1..=3 => tracing::Level::INFO,
        4 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

/// Installs the log subscriber.
pub fn init_logging(opts: &Options) {
    init_logging_with(opts.verbosity, &opts.logging_format);
}

/// Installs the log subscriber for a klog verbosity and `--logging-format` (`text` or `json`). `RUST_LOG`
/// (tracing's directives, e.g. `info,azure_cloud::arm=debug`) adds per-module levels over the verbosity's;
/// an invalid value is reported on stderr and ignored.
pub fn init_logging_with(verbosity: u8, format: &str) {
    let builder = tracing_subscriber::EnvFilter::builder().with_default_directive(level_for(verbosity).into());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => builder.parse(&directives).unwrap_or_else(|e| {
            eprintln!("RUST_LOG={directives:?} is not a valid log filter ({e}); using the verbosity's level");
            tracing_subscriber::EnvFilter::default().add_directive(level_for(verbosity).into())
        }),
        _ => tracing_subscriber::EnvFilter::default().add_directive(level_for(verbosity).into()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format.eq_ignore_ascii_case("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Runs `--check-config` (the manager itself is [`crate::manager::run`]); returns the process exit code. Output goes to `out`, diagnostics to `err`.
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if !opts.cloud_provider.eq_ignore_ascii_case("azure") {
        let _ = writeln!(
            err,
            "--cloud-provider={:?} is not supported: only \"azure\"",
            opts.cloud_provider
        );
        return 1;
    }
    let Some(path) = &opts.cloud_config else {
        let _ = writeln!(
            err,
            "--cloud-config is required with --check-config: the path to azure.json"
        );
        return 1;
    };
    // The flags the manager checks at start, checked here too.
    let flags = crate::manager::enabled_controllers(&opts.controllers)
        .and_then(|enabled| crate::manager::ipam_settings(opts, &enabled));
    if let Err(e) = flags {
        let _ = writeln!(err, "{e}");
        return 1;
    }
    check_config(path, out, err)
}

/// `--check-config`: load, default and validate; print the effective configuration or the errors.
pub fn check_config(path: &std::path::Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match CloudConfig::load(path, &azure_cloud::config::process_env) {
        Ok((cfg, report)) => {
            for k in &report.unknown_keys {
                let _ = writeln!(err, "warning: unknown key {k:?} ignored");
            }
            for w in &report.warnings {
                let _ = writeln!(err, "warning: {w}");
            }
            let effective = serde_json::json!({
                "credential": format!("{:?}", cfg.credential_kind()),
                "config": cfg.to_redacted_json(),
            });
            let text = serde_json::to_string_pretty(&effective).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            let _ = writeln!(err, "{}: valid", path.display());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{}: {}", path.display(), e);
            if matches!(e, ConfigError::Invalid(_)) {
                let _ = writeln!(err, "see docs/configuration.md for every key, its type and default");
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(args: &[&str]) -> (i32, String, String) {
        let opts = Options::try_parse_from(std::iter::once("ccm").chain(args.iter().copied())).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&opts, &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn check_config_valid_and_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"useInstanceMetadata": true, "vmType": "standard", "extraKey": 1}"#,
        )
        .unwrap();
        let (code, out, err) = run_with(&["--cloud-config", good.to_str().unwrap(), "--check-config"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("\"vmType\": \"standard\""), "{out}");
        assert!(err.contains("unknown key \"extraKey\""), "{err}");

        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"{"useInstanceMetadata": true, "vmType": "vmsss", "aadClientSecret": "hunter2"}"#,
        )
        .unwrap();
        let arg = format!("--cloud-config={}", bad.display());
        let (code, out, err) = run_with(&[&arg, "--check-config=true"]);
        assert_eq!(code, 1);
        assert!(out.is_empty());
        assert!(err.contains(r#"vmType "vmsss" is not one of: standard, vmss"#), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn flags() {
        let (code, _, err) = run_with(&["--check-config"]);
        assert_eq!(code, 1);
        assert!(err.contains("--cloud-config is required"));
        let (code, _, err) = run_with(&["--cloud-provider=aws", "--cloud-config=x"]);
        assert_eq!(code, 1);
        assert!(err.contains("only \"azure\""));
        let o = Options::try_parse_from(["ccm", "--check-config=false", "--v=4"]).unwrap();
        assert!(!o.check_config);
        assert_eq!(level_for(o.verbosity), tracing::Level::DEBUG);
    }
}
