//! `azure-sim --listen 127.0.0.1:PORT --write-config FILE [--scenario FILE]`

use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, SimOptions};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// A stateful local Azure for the cloud provider: ARM, AAD, IMDS.
#[derive(Debug, Parser)]
#[command(name = "azure-sim", version)]
struct Args {
    /// Address to serve on (loopback).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Write an azure.json for this simulator (its CA beside it as `<file>.ca.pem`, an environment file as
    /// `<file>.environment.json`).
    #[arg(long)]
    write_config: Option<PathBuf>,
    /// Scenario file (JSON or YAML); default: one scale set of 3 instances and 2 availability-set VMs.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (for tools; the provider's credentials need HTTPS).
    #[arg(long)]
    http: bool,
    /// Enable the ARM throttling model.
    #[arg(long)]
    throttling: bool,
    /// Latency added to every call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Duration of long-running operations, in milliseconds.
    #[arg(long, default_value_t = 0)]
    lro_delay_ms: u64,
    /// Seed of fault injection.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds per real second (throttle-bucket refill, operation delays).
    #[arg(long, default_value_t = 1.0)]
    clock_speed: f64,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("azure-sim: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {} is not a loopback address: azure-sim serves this machine only",
            args.listen
        ));
    }
    let scenario = match &args.scenario {
        Some(p) => {
            Scenario::from_text(&std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?)?
        }
        None => Scenario::default_cluster(),
    };
    let opts = SimOptions {
        https: !args.http,
        throttling: args.throttling,
        latency: Duration::from_millis(args.latency_ms),
        lro_delay: Duration::from_millis(args.lro_delay_ms),
        seed: args.seed,
        clock_speed: args.clock_speed,
        ..SimOptions::default()
    };
    let sim = AzureSim::start(args.listen, opts, &scenario)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(path) = &args.write_config {
        sim.write_config(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!(
            "azure-sim: wrote {} (for a Go client such as upstream's: SSL_CERT_FILE={} AZURE_ENVIRONMENT_FILEPATH={})",
            path.display(),
            path.with_extension("ca.pem").display(),
            path.with_extension("environment.json").display()
        );
    }
    eprintln!(
        "azure-sim: serving {} (admin: {}/_sim/calls, /_sim/state, /_sim/faults, /_sim/instances)",
        sim.url(),
        sim.url()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}
