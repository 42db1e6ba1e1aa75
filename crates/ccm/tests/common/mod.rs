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

/// Starts both simulators (azure-sim's default cluster) and writes azure.json (with `tweak` applied) and the
/// kubeconfig.
pub async fn env(tweak: Value) -> Env {
    env_with(&azure_sim::scenario::Scenario::default_cluster(), tweak).await
}

/// [`env`] with another simulated Azure.
pub async fn env_with(scenario: &azure_sim::scenario::Scenario, tweak: Value) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = azure_sim::AzureSim::start("127.0.0.1:0".parse().unwrap(), Default::default(), scenario)
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

/// The ingress IPs of a Service's status.
pub fn ingress(s: &k8s_openapi::api::core::v1::Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

/// A load balancer of the simulated cluster's resource group, as azure-sim stores it.
pub fn lb(sim: &azure_sim::AzureSim, name: &str) -> Option<Value> {
    let c = sim.cluster();
    sim.resource(&format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/{name}",
        c.subscription, c.resource_group
    ))
}

/// The nodes of azure-sim's default cluster.
pub const DEFAULT_NODES: [&str; 5] = [
    "k8s-pool1-vmss000000",
    "k8s-pool1-vmss000001",
    "k8s-pool1-vmss000002",
    "k8s-pool2-0",
    "k8s-pool2-1",
];

/// Creates Ready Nodes with the uninitialised taint, as kubelets with `--cloud-provider=external` register.
pub async fn add_ready_nodes(client: &kube::Client, names: &[&str]) {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for n in names {
        let node = serde_json::from_value(serde_json::json!({"metadata": {"name": n},
            "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]}}))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        nodes
            .patch_status(
                n,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
            )
            .await
            .unwrap();
    }
}

/// Starts the CCM with every controller, no leader election, a 1 s node monitor period and no secure port;
/// its log is `ccm.log` in the test's directory (printed when an `eventually` times out).
pub fn start_ccm(env: &Env) -> Ccm {
    std::env::set_var("CCM_LOG", env.dir.path().join("ccm.log"));
    env.spawn_logged(
        ccm(&env.config, &env.kubeconfig)
            .args(["--port", &free_port().to_string(), "--secure-port=0"])
            .args(["--leader-elect=false", "--node-monitor-period=1s"]),
        "ccm.log",
    )
}

/// Waits until every Node has a provider id; returns them.
pub async fn nodes_initialised(client: &kube::Client) -> Vec<k8s_openapi::api::core::v1::Node> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    eventually("nodes initialised", std::time::Duration::from_secs(30), || async {
        let l = nodes.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_ref()).is_some())
            .then_some(l.items)
    })
    .await
}

/// A LoadBalancer Service `name` with one TCP port 80.
pub fn web_service(name: &str) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
    }))
    .unwrap()
}
