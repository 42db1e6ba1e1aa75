//! kubectl against kube-sim: get, apply (with kubectl's default validation: it reads the OpenAPI v3 documents
//! and validates on the server), patch and delete a Node and a Service.
//! Needs `kubectl` on PATH (`.ci/run` installs Debian's `kubernetes-client` when it is missing).

use std::process::Command;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl is required for this test: install it (Debian: apt-get install kubernetes-client)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_patch_delete() {
    let sim = kube_sim::KubeSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kube-sim-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    sim.write_kubeconfig(&kc).unwrap();
    let node = dir.join("node.yaml");
    std::fs::write(
        &node,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {pool: a}\n",
    )
    .unwrap();
    let svc = dir.join("svc.yaml");
    std::fs::write(&svc, "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  type: LoadBalancer\n  ports: [{port: 80, protocol: TCP}]\n").unwrap();
    let run = |args: &[&str]| {
        let (ok, out) = kubectl(&kc, args);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    };
    assert!(run(&["apply", "-f", node.to_str().unwrap()]).contains("node/n1 created"));
    assert!(run(&["apply", "-f", svc.to_str().unwrap()]).contains("service/web created"));
    // Applying again is a no-op; changing a field patches.
    run(&["apply", "-f", svc.to_str().unwrap()]);
    assert!(run(&["get", "nodes"]).contains("n1"));
    assert!(run(&["get", "svc", "web", "-o", "jsonpath={.spec.type}"]).contains("LoadBalancer"));
    run(&["patch", "node", "n1", "-p", r#"{"metadata":{"labels":{"x":"y"}}}"#]);
    run(&[
        "patch",
        "svc",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]"#,
    ]);
    assert!(run(&["get", "node", "n1", "-o", "jsonpath={.metadata.labels.x}"]).contains('y'));
    assert_eq!(
        sim.get("services", "default", "web").unwrap()["metadata"]["annotations"]["a"],
        "b"
    );
    run(&["delete", "svc", "web"]);
    run(&["delete", "node", "n1"]);
    assert!(sim.list("nodes").is_empty());
    let (ok, out) = kubectl(&kc, &["get", "node", "n1"]);
    assert!(!ok && out.contains("not found"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}
