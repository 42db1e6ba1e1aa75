//! `azure-cloud-controller-manager`.

use clap::Parser;

/// glibc gives every thread that allocates its own arena (up to 8 per core), and memory freed in one arena is
/// not reused by another: with tokio moving tasks between threads, bursts leave several half-empty arenas.
/// Two arenas keep the resident set close to the live heap; `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The tokio runtime; exits with a message when it cannot start.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap_or_else(|e| {
        eprintln!("cannot start the runtime: {e}");
        std::process::exit(1)
    })
}

/// True when this process runs as the per-node agent: invoked as `cloud-node-manager` (the image links that
/// name to this binary, as upstream's chart runs it) or as `azure-cloud-controller-manager node-manager`.
fn node_manager_args() -> Option<Vec<std::ffi::OsString>> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if invoked_as == "cloud-node-manager" {
        return Some(args);
    }
    if args.get(1).is_some_and(|a| a == "node-manager") {
        args.remove(1);
        args[0] = "cloud-node-manager".into();
        return Some(args);
    }
    None
}

fn main() {
    limit_malloc_arenas();
    // One TLS provider for the whole process, installed before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(args) = node_manager_args() {
        std::process::exit(ccm::node_manager::main_with(args));
    }
    let opts = ccm::cli::Options::parse();
    ccm::cli::init_logging(&opts);
    #[cfg(feature = "simulators")]
    if let Some(ccm::cli::Command::Demo(args)) = &opts.command {
        let rt = runtime();
        if let Err(e) = rt.block_on(ccm::demo::run(args, &mut std::io::stdout())) {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    #[cfg(feature = "simulators")]
    if let Some(ccm::cli::Command::Bench(args)) = &opts.command {
        let rt = runtime();
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
    let rt = runtime();
    if let Err(e) = rt.block_on(ccm::manager::run(&opts)) {
        tracing::error!("{e}");
        eprintln!("azure-cloud-controller-manager: {e}");
        std::process::exit(1);
    }
}
