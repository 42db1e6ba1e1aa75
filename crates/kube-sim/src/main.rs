//! `kube-sim --listen 127.0.0.1:PORT --write-kubeconfig FILE`

use clap::Parser;

/// A small in-memory Kubernetes API server for tests and demos.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to serve on (loopback).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Write a kubeconfig for this server.
    #[arg(long)]
    write_kubeconfig: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("kube-sim: --listen {} is not a loopback address", args.listen);
        std::process::exit(1);
    }
    let sim = match kube_sim::KubeSim::start(args.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sim: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    if let Some(p) = &args.write_kubeconfig {
        if let Err(e) = sim.write_kubeconfig(p) {
            eprintln!("kube-sim: cannot write {}: {e}", p.display());
            std::process::exit(1);
        }
        eprintln!("kube-sim: wrote {}", p.display());
    }
    eprintln!("kube-sim: serving {}", sim.url());
    let _ = tokio::signal::ctrl_c().await;
}
