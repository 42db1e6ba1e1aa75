//! `azure-cloud-controller-manager`.

use clap::Parser;

fn main() {
    // One TLS provider for the whole process, installed before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = ccm::cli::Options::parse();
    ccm::cli::init_logging(&opts);
    let code = ccm::cli::run(&opts, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
