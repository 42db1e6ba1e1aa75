//! The controller manager: loads the cloud config (file, Secret or both, per `cloudConfigType`), builds
//! the provider, serves `/healthz`, `/readyz` and `/metrics`, elects a leader, and runs the enabled
//! controllers while leading. Stops on SIGTERM or Ctrl-C.

use crate::cli::Options;
use crate::{controllers, leader};
use axum::routing::get;
use azure_cloud::config::{merge_secret_config, process_env};
use azure_cloud::AzureCloud;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Parses a Go duration (`10s`, `5m`, `1h30m`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        total += v * match unit.as_str() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("invalid duration {s:?}: expected e.g. 10s, 5m, 1h30m"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Which controllers run (`--controllers`: `*`, names, `-name`; aliases as upstream).
pub fn enabled_controllers(spec: &str) -> Result<Vec<&'static str>, String> {
    const ALL: [(&str, &str); 5] = [
        ("cloud-node-controller", "cloud-node"),
        ("cloud-node-lifecycle-controller", "cloud-node-lifecycle"),
        ("service-lb-controller", "service"),
        ("node-route-controller", "route"),
        ("node-ipam-controller", "node-ipam"),
    ];
    let canonical = |n: &str| ALL.iter().find(|(c, a)| *c == n || *a == n).map(|(c, _)| *c);
    let mut on: Vec<&'static str> = Vec::new();
    let items: Vec<&str> = spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.contains(&"*") {
        on = ALL.iter().map(|(c, _)| *c).collect();
    }
    for item in items.iter().filter(|i| **i != "*") {
        let (neg, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, *item),
        };
        let c = canonical(name).ok_or_else(|| {
            format!(
                "--controllers: unknown controller {name:?} (known: cloud-node, cloud-node-lifecycle, service, route, node-ipam)"
            )
        })?;
        if neg {
            on.retain(|x| *x != c);
        } else if !on.contains(&c) {
            on.push(c);
        }
    }
    Ok(on)
}

async fn kube_client(opts: &Options) -> Result<kube::Client, String> {
    kube_client_from(opts, opts.kubeconfig.as_deref(), "--kubeconfig").await
}

/// A client of the API server from a kubeconfig (`flag` names it in errors), else in-cluster.
async fn kube_client_from(opts: &Options, path: Option<&std::path::Path>, flag: &str) -> Result<kube::Client, String> {
    let master = opts.master.as_deref().filter(|_| flag == "--kubeconfig");
    kube_client_at(path, master, opts.kube_api_concurrency as usize, flag).await
}

/// A client of the API server from a kubeconfig (`flag` names it in errors; `master` overrides its server),
/// else in-cluster, with at most `concurrency` requests in flight.
pub(crate) async fn kube_client_at(
    path: Option<&std::path::Path>,
    master: Option<&str>,
    concurrency: usize,
    flag: &str,
) -> Result<kube::Client, String> {
    let mut cfg = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| format!("{flag} {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{flag} {}: {e}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig: {e} (pass --kubeconfig)"))?,
    };
    if let Some(m) = master {
        cfg.cluster_url = m.parse().map_err(|e| format!("--master {m:?}: {e}"))?;
    }
    let builder = kube::client::ClientBuilder::try_from(cfg).map_err(|e| e.to_string())?;
    Ok(builder.with_layer(&InFlightLimit::new(concurrency)).build())
}

/// A tower layer that lets at most `n` Kubernetes API requests wait for their response headers at once.
/// HTTP/1.1 needs one connection per request in flight, and the client keeps every connection it opened:
/// 200 service workers patching at once opened 200 TLS connections (≈ 20 MiB of buffers) and kept them.
/// A watch holds its permit only until its response starts, so watches never starve other requests.
#[derive(Clone)]
pub struct InFlightLimit(Arc<tokio::sync::Semaphore>);

impl InFlightLimit {
    /// At most `n` (≥ 1) requests in flight.
    pub fn new(n: usize) -> Self {
        InFlightLimit(Arc::new(tokio::sync::Semaphore::new(n.max(1))))
    }
}

impl<S> tower_layer::Layer<S> for InFlightLimit {
    type Service = Limited<S>;
    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            permits: self.0.clone(),
        }
    }
}

/// The service [`InFlightLimit`] wraps.
pub struct Limited<S> {
    inner: S,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<S, Req> tower_service::Service<Req> for Limited<S>
where
    S: tower_service::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The inner future (hyper's) sends nothing until polled, so waiting for the permit first holds it back.
        let fut = self.inner.call(req);
        let permits = self.permits.clone();
        Box::pin(async move {
            let _permit = permits.acquire_owned().await;
            fut.await
        })
    }
}

/// node-ipam's settings when it runs (`--allocate-node-cidrs=true` and the controller enabled), checked at
/// start so a wrong flag stops the manager with its name instead of a controller failing later.
pub fn ipam_settings(opts: &Options, enabled: &[&str]) -> Result<Option<crate::node_ipam::IpamSettings>, String> {
    if !opts.allocate_node_cidrs || !enabled.contains(&"node-ipam-controller") {
        return Ok(None);
    }
    if !opts.cidr_allocator_type.eq_ignore_ascii_case("RangeAllocator") {
        return Err(format!(
            "--cidr-allocator-type={}: only RangeAllocator is implemented (upstream's CloudAllocator is not); use RangeAllocator or --allocate-node-cidrs=false",
            opts.cidr_allocator_type
        ));
    }
    crate::node_ipam::IpamSettings::from_flags(
        &opts.cluster_cidr,
        opts.node_cidr_mask_size.as_deref(),
        opts.node_cidr_mask_size_ipv4.as_deref(),
        opts.node_cidr_mask_size_ipv6.as_deref(),
        opts.service_cluster_ip_range.as_deref(),
    )
    .map(Some)
    .map_err(|e| e.to_string())
}

/// Runs the manager until SIGTERM/Ctrl-C.
pub async fn run(opts: &Options) -> Result<(), String> {
    for w in opts.compat.warnings() {
        tracing::warn!("{w}");
    }
    if !opts.leader_elect_resource_lock.eq_ignore_ascii_case("leases") {
        tracing::warn!(lock = %opts.leader_elect_resource_lock, "--leader-elect-resource-lock: only Leases are implemented; a Lease is used");
    }
    let client = kube_client(opts).await?;
    let file_text = match &opts.cloud_config {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("--cloud-config {}: {e}", p.display()))?),
        None => None,
    };
    let secret_text = {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
        match secrets.get_opt(&opts.cloud_config_secret_name).await {
            Ok(Some(s)) => s.data.and_then(|d| {
                d.get(&opts.cloud_config_key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(secret = %opts.cloud_config_secret_name, error = %e, "cannot read the cloud-config Secret in kube-system; using the file only");
                None
            }
        }
    };
    if file_text.is_none() && secret_text.is_none() {
        return Err(format!(
            "no cloud config: pass --cloud-config or create the Secret kube-system/{} (key {})",
            opts.cloud_config_secret_name, opts.cloud_config_key
        ));
    }
    let (cfg, report) =
        merge_secret_config(file_text.as_deref(), secret_text.as_deref(), &process_env).map_err(|e| e.to_string())?;
    for k in &report.unknown_keys {
        tracing::warn!(key = %k, "unknown cloud config key ignored");
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let cloud = Arc::new(AzureCloud::new(cfg, &process_env).await.map_err(|e| e.to_string())?);
    let enabled = enabled_controllers(&opts.controllers)?;
    tracing::info!(controllers = ?enabled, cluster = %opts.cluster_name, "starting");

    // Metrics and health.
    let mut registry = Registry::default();
    if let Some(arm) = cloud.arm() {
        arm.metrics().register(&mut registry);
    }
    let controller_metrics = crate::metrics::ControllerMetrics::default();
    controller_metrics.register(&mut registry);
    // As client-go's leader election: labelled with the lease name.
    let leader_family: prometheus_client::metrics::family::Family<Vec<(String, String)>, Gauge> = Default::default();
    registry.register(
        "leader_election_master_status",
        "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.",
        leader_family.clone(),
    );
    let leader_gauge: Gauge = leader_family
        .get_or_create(&vec![("name".to_string(), opts.leader_elect_resource_name.clone())])
        .clone();
    let registry = Arc::new(registry);
    let health = crate::runtime::Health::default();
    let ready = Arc::new(AtomicBool::new(false));
    let app = endpoints(health.clone(), ready.clone(), registry.clone());
    let auth = delegated_auth(opts, &client).await?;
    serve_endpoints(opts, app, auth).await?;

    let timing = controllers::Timing {
        node_status_update_frequency: parse_duration(&opts.node_status_update_frequency)?,
        node_monitor_period: parse_duration(&opts.node_monitor_period)?,
        metrics: controller_metrics.clone(),
    };
    let route_settings = if opts.configure_cloud_routes
        && opts.allocate_node_cidrs
        && !opts.cluster_cidr.is_empty()
        && enabled.contains(&"node-route-controller")
    {
        let cidrs = opts
            .cluster_cidr
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<ipnet::IpNet>()
                    .map_err(|e| format!("--cluster-cidr {c:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some(controllers::RouteSettings {
            cluster_name: opts.cluster_name.clone(),
            cluster_cidrs: cidrs,
            period: parse_duration(&opts.route_reconciliation_period)?,
            metrics: controller_metrics.clone(),
        })
    } else {
        None
    };
    let ipam_settings = ipam_settings(opts, &enabled)?;
    let node_sync_period = parse_duration(&opts.node_sync_period)?;
    let service_settings = enabled
        .contains(&"service-lb-controller")
        .then(|| crate::service::ServiceSettings {
            cluster_name: opts.cluster_name.clone(),
            workers: usize::try_from(opts.concurrent_service_syncs).unwrap_or(1).max(1),
            metrics: controller_metrics.clone(),
            node_sync_period,
            labels_matter: cloud.load_balancers().needs_service_labels(),
        });
    // Without leader election the sender lives as long as the manager: `changed()` then never fires.
    let (_always_leading, not_elected) = tokio::sync::watch::channel(true);
    let mut leading = if opts.leader_elect {
        let identity = format!("{}_{}", hostname(), std::process::id());
        leader::run(
            client.clone(),
            leader::ElectionConfig {
                namespace: opts.leader_elect_resource_namespace.clone(),
                name: opts.leader_elect_resource_name.clone(),
                identity,
                lease_duration: parse_duration(&opts.leader_elect_lease_duration)?,
                renew_deadline: parse_duration(&opts.leader_elect_renew_deadline)?,
                retry_period: parse_duration(&opts.leader_elect_retry_period)?,
            },
        )
    } else {
        not_elected
    };
    // A standby is ready (it serves and waits for the lease); a leader once its caches have synced.
    ready.store(!*leading.borrow(), Ordering::Relaxed);
    let mut tasks = crate::runtime::Supervisor::default();
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        let is_leader = *leading.borrow();
        leader_gauge.set(i64::from(is_leader));
        if is_leader && tasks.is_empty() {
            ready.store(false, Ordering::Relaxed);
            let cloud_v2: Arc<dyn azure_cloud::provider::InstancesV2> = cloud.clone();
            // One Node watch and cache for every controller, for as long as they run.
            let (nodes, drive_nodes) = crate::informer::NodeInformer::new(client.clone());
            tasks.spawn("node-informer", drive_nodes);
            {
                let (nodes, ready) = (nodes.clone(), ready.clone());
                tasks.spawn("readiness", async move {
                    nodes.ready().await;
                    ready.store(true, Ordering::Relaxed);
                    tracing::info!("caches synced: ready");
                    std::future::pending::<()>().await
                });
            }
            if enabled.contains(&"cloud-node-controller") {
                tasks.spawn(
                    "cloud-node",
                    controllers::run_node_controller(client.clone(), cloud_v2.clone(), timing.clone(), nodes.clone()),
                );
            }
            if enabled.contains(&"cloud-node-lifecycle-controller") {
                tasks.spawn(
                    "cloud-node-lifecycle",
                    controllers::run_lifecycle_controller(client.clone(), cloud_v2, timing.clone(), nodes.clone()),
                );
            }
            if let Some(settings) = ipam_settings.clone() {
                tasks.spawn(
                    "node-ipam",
                    crate::node_ipam::run(client.clone(), settings, nodes.clone()),
                );
            }
            if let Some(rs) = route_settings.clone() {
                let routes: Arc<dyn azure_cloud::provider::Routes> = cloud.clone();
                tasks.spawn(
                    "route",
                    controllers::route_controller(client.clone(), routes, rs, nodes.clone()),
                );
            }
            if let Some(ss) = service_settings.clone() {
                let recorder = crate::events::Recorder::new(client.clone(), crate::service::COMPONENT);
                cloud
                    .load_balancers()
                    .set_event_sink(Arc::new(crate::service::RecorderSink(crate::events::Recorder::new(
                        client.clone(),
                        "azure-cloud-provider",
                    ))));
                // serviceNamespaceSelector (multiple standard LBs): the provider reads namespace labels from a
                // Namespace cache the service controller keeps.
                let namespaces = cloud.load_balancers().needs_namespace_labels().then(|| {
                    let (store, writer) = kube::runtime::reflector::store::<k8s_openapi::api::core::v1::Namespace>();
                    cloud
                        .load_balancers()
                        .set_namespace_labels(Arc::new(crate::service::NamespaceStore(store.clone())));
                    (store, writer)
                });
                let lb: Arc<dyn azure_cloud::provider::LoadBalancer> = cloud.clone();
                tasks.spawn(
                    "service",
                    crate::service::run(client.clone(), lb, ss, recorder, nodes.clone(), namespaces),
                );
            }
            tracing::info!(count = tasks.len(), "controllers started");
        } else if !is_leader && !tasks.is_empty() {
            // Everything the controllers own (workers, retry timers) stops before we go on: a non-leader
            // must not write.
            tasks.stop().await;
            ready.store(true, Ordering::Relaxed);
            tracing::warn!("not leading: controllers stopped");
        }
        tokio::select! {
            r = leading.changed() => if r.is_err() { health.fail("leader election stopped"); return Err("leader election stopped".into()); },
            reason = tasks.exited() => {
                // No controller may die quietly: fail /healthz so the kubelet restarts the pod (and the lease
                // moves to a healthy instance).
                health.fail(reason.clone());
                tasks.stop().await;
                return Err(reason);
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tasks.stop().await;
    tracing::info!("shutting down");
    Ok(())
}

/// The endpoints: `/healthz` (500 with the reason once a controller has died or leader election stopped),
/// `/readyz` (503 until the caches have synced), `/metrics`.
pub fn endpoints(health: crate::runtime::Health, ready: Arc<AtomicBool>, registry: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route(
            "/healthz",
            get({
                let h = health.clone();
                move || async move {
                    match h.status() {
                        Ok(()) => (axum::http::StatusCode::OK, "ok".to_string()),
                        Err(reason) => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            format!("unhealthy: {reason}"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get({
                let r = ready.clone();
                move || async move {
                    if r.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "starting: caches not synced",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let reg = registry.clone();
                move || async move {
                    let mut s = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut s, &reg);
                    let text = crate::metrics::to_text_format(&s, azure_cloud::arm::metrics::LEGACY_COUNTERS);
                    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text)
                }
            }),
        )
}

/// The HTTPS configuration: `--tls-cert-file`/`--tls-private-key-file`, else a self-signed certificate for
/// `localhost` and the host name, generated in memory at start (upstream writes one to `--cert-dir`).
pub fn tls_config(opts: &Options) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (chain, key) = match (&opts.tls_cert_file, &opts.tls_private_key_file) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--tls-cert-file {}: {e}", c.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(k).map_err(|e| format!("--tls-private-key-file {}: {e}", k.display()))?;
            (chain, key)
        }
        (None, None) => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), hostname()])
                .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| format!("cannot use the generated key: {e}"))?;
            (vec![ck.cert.der().clone()], key)
        }
        _ => return Err("--tls-cert-file and --tls-private-key-file go together".into()),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not fit: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The delegated authenticator of `--secure-port` from the `--authentication-*` / `--authorization-*` flags.
async fn delegated_auth(opts: &Options, client: &kube::Client) -> Result<crate::authz::DelegatedAuth, String> {
    if opts.client_ca_file.is_some() {
        tracing::warn!("--client-ca-file: client-certificate authentication is not implemented; requests to --secure-port are authenticated by bearer token only");
    }
    let authn = match &opts.authentication_kubeconfig {
        Some(p) => kube_client_from(opts, Some(p), "--authentication-kubeconfig").await?,
        None => client.clone(),
    };
    let authz = match &opts.authorization_kubeconfig {
        Some(p) => kube_client_from(opts, Some(p), "--authorization-kubeconfig").await?,
        None => client.clone(),
    };
    let settings = crate::authz::AuthSettings {
        always_allow_paths: opts
            .authorization_always_allow_paths
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        token_ttl: parse_duration(&opts.authentication_token_webhook_cache_ttl)
            .map_err(|e| format!("--authentication-token-webhook-cache-ttl: {e}"))?,
        allowed_ttl: parse_duration(&opts.authorization_webhook_cache_authorized_ttl)
            .map_err(|e| format!("--authorization-webhook-cache-authorized-ttl: {e}"))?,
        denied_ttl: parse_duration(&opts.authorization_webhook_cache_unauthorized_ttl)
            .map_err(|e| format!("--authorization-webhook-cache-unauthorized-ttl: {e}"))?,
    };
    Ok(crate::authz::DelegatedAuth::new(authn, authz, settings))
}

/// Serves the endpoints: HTTPS on `--secure-port` behind delegated authentication and authorization,
/// plain HTTP on `--port` for local use (each when non-zero).
async fn serve_endpoints(opts: &Options, app: axum::Router, auth: crate::authz::DelegatedAuth) -> Result<(), String> {
    if opts.secure_port == 0 && opts.port == 0 {
        tracing::warn!("--secure-port=0 and --port=0: no health or metrics endpoints");
    }
    if opts.secure_port != 0 {
        let tls = tls_config(opts)?;
        let addr = format!("{}:{}", opts.bind_address, opts.secure_port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = https_listener::TlsListener::new(listener, tls).map_err(|e| format!("{addr}: {e}"))?;
        tracing::info!(address = %addr, always_allowed = %opts.authorization_always_allow_paths, "serving /healthz, /readyz, /metrics over HTTPS (other paths need a token allowed by a SubjectAccessReview)");
        let app = app
            .clone()
            .layer(axum::middleware::from_fn_with_state(auth, crate::authz::guard));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    if opts.port != 0 {
        let addr = format!("{}:{}", opts.bind_address, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(address = %addr, "serving /healthz, /readyz, /metrics over plain HTTP");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "ccm".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn healthz_fails_with_the_reason_once_a_controller_dies() {
        let health = crate::runtime::Health::default();
        let ready = Arc::new(AtomicBool::new(false));
        let app = endpoints(health.clone(), ready.clone(), Arc::new(Registry::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &'static str| {
            let url = format!("{url}{path}");
            async move {
                let r = reqwest::get(url).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503, "not ready before the caches sync");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.0, 200);
        // A controller task ends: the supervisor reports it, /healthz fails with the reason.
        let mut tasks = crate::runtime::Supervisor::default();
        tasks.spawn("service", async {});
        health.fail(tasks.exited().await);
        let (code, body) = get("/healthz").await;
        assert_eq!(code, 500);
        assert!(body.contains("controller service exited"), "{body}");
        server.abort();
    }

    /// A service whose calls take 20 ms and record how many ran at once.
    struct Probe {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
    }

    impl tower_service::Service<()> for Probe {
        type Response = ();
        type Error = ();
        type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ()>> + Send>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            let (now, max) = (self.now.clone(), self.max.clone());
            Box::pin(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn in_flight_limit_holds_requests_back() {
        use tower_layer::Layer;
        use tower_service::Service;
        let max = Arc::new(AtomicUsize::new(0));
        let mut svc = InFlightLimit::new(3).layer(Probe {
            now: Arc::new(AtomicUsize::new(0)),
            max: max.clone(),
        });
        let calls: Vec<_> = (0..12).map(|_| svc.call(())).collect();
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            max.load(Ordering::SeqCst),
            3,
            "never more than 3 at once, and 3 were used"
        );
    }

    #[test]
    fn durations() {
        for (s, want) in [
            ("10s", 10.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("1.5s", 1.5),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs_f64(want), "{s}");
        }
        for bad in ["", "10", "5x", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controller_sets() {
        assert_eq!(enabled_controllers("*").unwrap().len(), 5);
        assert_eq!(
            enabled_controllers("*,-cloud-node").unwrap(),
            vec![
                "cloud-node-lifecycle-controller",
                "service-lb-controller",
                "node-route-controller",
                "node-ipam-controller"
            ]
        );
        assert_eq!(
            enabled_controllers("route,cloud-node-controller").unwrap(),
            vec!["node-route-controller", "cloud-node-controller"]
        );
        assert!(enabled_controllers("bogus").unwrap_err().contains("unknown controller"));
    }
}
