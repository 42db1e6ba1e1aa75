//! Set-up shared by the tests that run the CCM as a process against azure-sim and kube-sim.
#![allow(dead_code)] // each test binary uses a part

use serde_json::Value;

/// azure-sim (default cluster), kube-sim, the files the CCM reads, and a client of kube-sim.
pub struct Env {
    /// The simulated Azure.
    pub sim: azure_sim::AzureSim,
    /// The simulated cluster.
    pub kube: kube_sim::KubeSim,
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// azure.json (ARM only, no IMDS).
    pub config: std::path::PathBuf,
    /// kubeconfig of kube-sim.
    pub kubeconfig: std::path::PathBuf,
    /// A client of kube-sim.
    pub client: kube::Client,
}

/// Starts both simulators and writes azure.json (with `tweak` applied) and the kubeconfig.
pub async fn env(tweak: Value) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = azure_sim::AzureSim::start(
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
        &azure_sim::scenario::Scenario::default_cluster(),
    )
    .await
    .unwrap();
    let kube = kube_sim::KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("azure.json");
    sim.write_config(&config).unwrap();
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["useInstanceMetadata"] = false.into();
    for (k, val) in tweak.as_object().into_iter().flatten() {
        v[k] = val.clone();
    }
    std::fs::write(&config, v.to_string()).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    Env {
        sim,
        kube,
        dir,
        config,
        kubeconfig,
        client,
    }
}

impl Env {
    /// Starts a process (the CCM or the node agent) with its stderr in `log` under the test's directory.
    pub fn spawn_logged(&self, cmd: &mut std::process::Command, log: &str) -> Ccm {
        let file = std::fs::File::create(self.dir.path().join(log)).unwrap();
        Ccm(cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .unwrap())
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CCM binary with the files of `env` and endpoints on loopback; the test adds its own flags.
pub fn ccm(config: &std::path::Path, kubeconfig: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"));
    c.args([
        "--cloud-config",
        config.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .args(["--bind-address", "127.0.0.1"]);
    c
}

/// Runs the CCM binary with `args`, asserts it exits 0 (showing both outputs otherwise), returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-cloud-controller-manager"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A CCM process, killed when dropped.
pub struct Ccm(pub std::process::Child);

impl Drop for Ccm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it gives a value; on timeout prints the tail of the CCM log named by `CCM_LOG` and fails.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if t0.elapsed() >= within {
            if let Ok(log) = std::env::var("CCM_LOG")
                .and_then(|p| std::fs::read_to_string(p).map_err(|_| std::env::VarError::NotPresent))
            {
                eprintln!(
                    "--- CCM log ---\n{}",
                    log.lines()
                        .rev()
                        .take(60)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The first event with `reason` about the object named `name`, once kube-sim has it.
pub async fn event_about(
    client: &kube::Client,
    reason: &str,
    name: &str,
    within: std::time::Duration,
) -> k8s_openapi::api::events::v1::Event {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::all(client.clone());
    eventually(&format!("a {reason} event about {name}"), within, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
    })
    .await
}
