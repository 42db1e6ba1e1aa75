//! Simulator throughput and footprint: a 5,000-instance cluster (5 scale sets × 1,000) served by a
//! single-threaded runtime (one core), hammered with authenticated GETs of single instances over HTTPS
//! keep-alive connections from another thread.
//!
//! `cargo run --release -p azure-sim --example throughput [-- SECONDS CONCURRENCY]`

use azure_sim::scenario::{ScaleSetSpec, Scenario};
use azure_sim::{AzureSim, SimOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let scenario = Scenario {
        scale_sets: (0..5)
            .map(|i| ScaleSetSpec {
                name: format!("pool{i}-vmss"),
                instances: 1000,
                zones: vec!["1".into(), "2".into(), "3".into()],
                ..Default::default()
            })
            .collect(),
        subnet_cidr: "10.128.0.0/12".into(),
        ..Default::default()
    };
    let rss_before = rss_kib();
    let (tx, rx) = std::sync::mpsc::channel();
    // The simulator: one thread, one core.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let t0 = Instant::now();
            let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), SimOptions::default(), &scenario)
                .await
                .unwrap();
            tx.send((
                sim.url().to_string(),
                sim.ca_pem().unwrap().to_string(),
                sim.options().clone(),
                sim.cluster().clone(),
                t0.elapsed(),
            ))
            .unwrap();
            std::future::pending::<()>().await;
            drop(sim);
        });
    });
    let (url, ca, opts, cluster, build) = rx.recv().unwrap();
    let rss_loaded = rss_kib();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .use_rustls_tls()
            .build()
            .unwrap();
        let token: serde_json::Value = http
            .post(format!("{url}/{}/oauth2/v2.0/token", opts.tenant_id))
            .form(&[("grant_type", "client_credentials"), ("client_id", &opts.client_id), ("client_secret", &opts.client_secret), ("scope", "https://management.core.windows.net//.default")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for w in 0..conc {
            let (http, token, url, done, c) = (http.clone(), token.clone(), url.clone(), done.clone(), cluster.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = w as u64;
                while Instant::now() < deadline {
                    let path = format!(
                        "{url}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/pool{}-vmss/virtualMachines/{}?api-version=2024-07-01",
                        c.subscription, c.resource_group, i % 5, i % 1000
                    );
                    let r = http.get(&path).bearer_auth(&token).send().await.unwrap();
                    assert!(r.status().is_success());
                    let _ = r.bytes().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed);
        println!("instances: 5000 (5 scale sets x 1000), build {:?}", build);
        println!("GETs: {n} in {secs} s = {:.0}/s ({conc} concurrent keep-alive HTTPS connections; server on one thread)", n as f64 / secs as f64);
        println!("process RSS: {} MiB before, {} MiB with the cluster loaded, {} MiB after the run", rss_before / 1024, rss_loaded / 1024, rss_kib() / 1024);
    });
}
