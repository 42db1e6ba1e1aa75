//! `azure-cloud-controller-manager`.

use clap::Parser;

fn main() {
    // One TLS provider for the whole process, installed before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = ccm::cli::Options::parse();
    ccm::cli::init_logging(&opts);
    if let Some(ccm::cli::Command::Demo(args)) = &opts.command {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
        if let Err(e) = rt.block_on(ccm::demo::run(args, &mut std::io::stdout())) {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(ccm::cli::Command::Bench(args)) = &opts.command {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
        match rt.block_on(ccm::bench::run(args, &mut std::io::stdout())) {
            Ok(true) => return,
            Ok(false) => {
                eprintln!("bench: a target was missed (✗ above)");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
    }
    if opts.check_config {
        let code = ccm::cli::run(&opts, &mut std::io::stdout(), &mut std::io::stderr());
        std::process::exit(code);
    }
    if !opts.cloud_provider.eq_ignore_ascii_case("azure") {
        eprintln!(
            "--cloud-provider={:?} is not supported: only \"azure\"",
            opts.cloud_provider
        );
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(ccm::manager::run(&opts)) {
        tracing::error!("{e}");
        eprintln!("azure-cloud-controller-manager: {e}");
        std::process::exit(1);
    }
}
