//! A hostile ARM endpoint (https, its own CA) in front of the pipeline and the credential: it redirects to
//! plain HTTP, answers long-running-operation and paging URLs on another scheme or host, streams an
//! endless body and sends absurd `Retry-After` values and token expiries. The tests assert what a plain
//! HTTP listener and the hostile server received (no token over http, none to another host), that
//! nothing panics, and that an endless body is refused at the cap instead of buffered.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use azure_cloud::arm::{ArmClient, ArmError, ArmRequest, ArmSettings, Operation, RateLimiters, StaticToken};
use azure_cloud::secret::Secret;
use reqwest::Method;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OP: Operation = Operation {
    provider: "Microsoft.Network",
    resource_type: "loadBalancers",
    metric: "load_balancer",
    name: "get",
    client_key: "loadBalancerRateLimit",
};
const LB: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers";

/// What one listener saw: (method, path, had an Authorization header).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, bool)>>>);

impl Seen {
    fn record(&self, req: &Request) {
        self.0.lock().unwrap().push((
            req.method().to_string(),
            req.uri().path().to_string(),
            req.headers().contains_key("authorization"),
        ));
    }
    fn with_token(&self) -> Vec<(String, String, bool)> {
        self.0.lock().unwrap().iter().filter(|r| r.2).cloned().collect()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Hostile {
    https: String,
    plain: String,
    https_seen: Seen,
    plain_seen: Seen,
    ca_path: tempfile::NamedTempFile,
}

#[derive(Clone)]
struct Ctx {
    seen: Seen,
    https_port: u16,
    plain: String,
}

fn with_headers(status: StatusCode, headers: &[(&str, String)], body: impl Into<Body>) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (status, h, body.into()).into_response()
}

async fn hostile(State(ctx): State<Ctx>, req: Request) -> Response {
    ctx.seen.record(&req);
    let path = req.uri().path().to_string();
    let name = path.rsplit('/').next().unwrap_or_default().to_string();
    let port = ctx.https_port;
    match name.as_str() {
        // A redirect to plain HTTP (reqwest would keep the Authorization header).
        "redirect-http" => with_headers(
            StatusCode::TEMPORARY_REDIRECT,
            &[("location", format!("{}{path}", ctx.plain))],
            "",
        ),
        // An operation URL on the same host and port but plain http.
        "lro-http" => with_headers(
            StatusCode::CREATED,
            &[
                ("azure-asyncoperation", format!("http://127.0.0.1:{port}/op")),
                ("retry-after", "0".into()),
            ],
            "{}",
        ),
        // An operation URL on another host name (the same server, reached as `localhost`).
        "lro-other-host" => with_headers(
            StatusCode::CREATED,
            &[
                ("azure-asyncoperation", format!("https://localhost:{port}/op")),
                ("retry-after", "0".into()),
            ],
            "{}",
        ),
        // A list whose nextLink points at plain http.
        "list-http" => with_headers(
            StatusCode::OK,
            &[],
            format!(r#"{{"value":[{{"name":"a"}}],"nextLink":"{}/next"}}"#, ctx.plain),
        ),
        // An endless body: 1 MiB chunks forever.
        "endless" => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
        // An answer that claims to be huge.
        "huge-length" => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 16]);
            let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            with_headers(
                StatusCode::OK,
                &[("content-length", (1u64 << 40).to_string())],
                Body::from_stream(stream),
            )
        }
        // Absurd Retry-After.
        "throttle-absurd" => with_headers(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "18446744073709551615".into())],
            r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
        ),
        "throttle-absurd-ms" => with_headers(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after-ms", "18446744073709551615".into())],
            "{}",
        ),
        // Token endpoints: a redirect to plain http (tenant "redirect"), else an absurd expiry.
        "token" if path.starts_with("/redirect/") => with_headers(
            StatusCode::TEMPORARY_REDIRECT,
            &[("location", format!("{}/token", ctx.plain))],
            "",
        ),
        "token" => with_headers(
            StatusCode::OK,
            &[],
            r#"{"access_token":"tok","token_type":"Bearer","expires_in":18446744073709551615}"#,
        ),
        _ => with_headers(StatusCode::NOT_FOUND, &[], r#"{"error":{"code":"NotFound"}}"#),
    }
}

async fn plain_recorder(State(seen): State<Seen>, req: Request) -> Response {
    seen.record(&req);
    with_headers(
        StatusCode::NOT_FOUND,
        &[],
        r#"{"error":{"code":"NotFound","message":"plain http"}}"#,
    )
}

async fn start() -> Hostile {
    let tls = azure_sim::tls::SimTls::generate().unwrap();
    let ca_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_path.path(), &tls.ca_pem).unwrap();
    // Plain HTTP recorder.
    let plain_seen = Seen::default();
    let plain_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = format!("http://{}", plain_listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(plain_recorder)
        .with_state(plain_seen.clone());
    tokio::spawn(async move { axum::serve(plain_listener, app).await });
    // The hostile https server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_port = listener.local_addr().unwrap().port();
    let https_seen = Seen::default();
    let ctx = Ctx {
        seen: https_seen.clone(),
        https_port,
        plain: plain.clone(),
    };
    let app = axum::Router::new().fallback(hostile).with_state(ctx);
    let tls_listener = azure_sim::tls::TlsListener::new(listener, tls.server_config.clone()).unwrap();
    tokio::spawn(async move { axum::serve(tls_listener, app).await });
    Hostile {
        https: format!("https://127.0.0.1:{https_port}/"),
        plain,
        https_seen,
        plain_seen,
        ca_path,
    }
}

fn http_client(h: &Hostile) -> reqwest::Client {
    let ca = h.ca_path.path().to_str().unwrap().to_string();
    azure_cloud::http::build_client(
        &azure_cloud::http::HttpSettings::default(),
        &[(ca.as_str(), "trustedCACertPath")],
    )
    .unwrap()
}

fn arm(h: &Hostile) -> ArmClient {
    let mut settings = ArmSettings::new(url::Url::parse(&h.https).unwrap(), "scope");
    settings.retry.max_retries = 0;
    settings.lro_poll_interval = Duration::from_millis(10);
    settings.gates.max_wait = Duration::from_millis(50);
    ArmClient::new(
        http_client(h),
        settings,
        Arc::new(StaticToken(Secret::new("the-bearer-token"))),
        RateLimiters::default(),
    )
}

fn req(method: Method, name: &str) -> ArmRequest {
    let mut r = ArmRequest::new(method, format!("{LB}/{name}"), "2024-03-01", OP);
    if r.method == Method::PUT {
        r.body = Some(bytes::Bytes::from_static(b"{}"));
    }
    r
}

#[tokio::test]
async fn redirect_to_plain_http_is_refused_and_never_followed() {
    let h = start().await;
    let a = arm(&h);
    for m in [Method::GET, Method::PUT] {
        let err = a.execute(req(m.clone(), "redirect-http")).await.unwrap_err();
        assert!(matches!(err, ArmError::Redirected { status: 307, .. }), "{m}: {err}");
        assert!(!err.is_not_found(), "a redirect must never read as NotFound: {err}");
        assert!(err.to_string().contains("redirect"), "{err}");
    }
    assert_eq!(h.plain_seen.count(), 0, "the plain-HTTP listener was contacted");
}

#[tokio::test]
async fn operation_and_paging_urls_elsewhere_get_no_token() {
    let h = start().await;
    let a = arm(&h);
    for name in ["lro-http", "lro-other-host"] {
        let err = a.execute(req(Method::PUT, name)).await.unwrap_err();
        assert!(
            matches!(err, ArmError::InvalidRequest { .. }) && err.to_string().contains("refusing to send a token"),
            "{name}: {err}"
        );
    }
    let err = a
        .list_all::<serde_json::Value>(req(Method::GET, "list-http"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to send a token"), "{err}");
    assert_eq!(h.plain_seen.count(), 0);
    // Only the resource requests themselves reached the hostile server (no poll on another origin).
    let tokened: Vec<_> = h.https_seen.with_token().into_iter().map(|r| r.1).collect();
    assert!(tokened.iter().all(|p| p.starts_with(LB)), "{tokened:?}");
}

#[tokio::test]
async fn plain_http_endpoint_is_refused_before_sending() {
    let h = start().await;
    let mut settings = ArmSettings::new(url::Url::parse(&format!("{}/", h.plain)).unwrap(), "scope");
    settings.retry.max_retries = 0;
    let a = ArmClient::new(
        http_client(&h),
        settings,
        Arc::new(StaticToken(Secret::new("the-bearer-token"))),
        RateLimiters::default(),
    );
    let err = a.execute(req(Method::GET, "anything")).await.unwrap_err();
    assert!(err.to_string().contains("only called over https"), "{err}");
    assert_eq!(h.plain_seen.count(), 0);
}

#[tokio::test]
async fn endless_and_huge_bodies_are_refused_at_the_cap() {
    let h = start().await;
    let a = arm(&h);
    for name in ["endless", "huge-length"] {
        let err = a.execute(req(Method::GET, name)).await.unwrap_err();
        assert!(err.to_string().contains("larger than"), "{name}: {err}");
    }
}

#[tokio::test]
async fn absurd_retry_after_is_clamped_not_a_panic() {
    let h = start().await;
    let a = arm(&h);
    for name in ["throttle-absurd", "throttle-absurd-ms"] {
        let err = a.execute(req(Method::GET, name)).await.unwrap_err();
        let wait = err.retry_after().expect("throttled");
        assert!(wait <= azure_cloud::clock::MAX_REMOTE_WAIT, "{name}: {wait:?}");
    }
    // The client keeps working for other buckets.
    let err = a
        .execute(ArmRequest::new(
            Method::GET,
            "/subscriptions/s/providers/Microsoft.Compute/x/none",
            "2024-07-01",
            Operation {
                provider: "Microsoft.Compute",
                ..OP
            },
        ))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn token_endpoint_redirect_not_followed_and_absurd_expiry_clamped() {
    use azure_cloud::auth::Credential;
    use azure_cloud::config::{CloudConfig, CloudEnvironment};
    let h = start().await;
    let env = |_: &str| None;
    let cfg_json = r#"{"tenantId":"t","aadClientId":"c","aadClientSecret":"client-secret-value","subscriptionId":"s","resourceGroup":"rg","location":"eastus"}"#;
    let (cfg, _) = CloudConfig::parse(cfg_json, &env).unwrap();
    // The authority is the hostile server; `<authority>/<tenant>/oauth2/v2.0/token` ends in "token".
    let cloud = CloudEnvironment {
        active_directory_endpoint: h.https.clone(),
        ..CloudEnvironment::builtin(azure_cloud::config::KnownCloud::Public).unwrap()
    };
    let cred = Credential::from_config(&cfg, &cloud, http_client(&h), &env).unwrap();
    let t = cred.get_token("scope").await.unwrap();
    assert!(t.expires_on <= std::time::SystemTime::now() + azure_cloud::clock::MAX_TOKEN_LIFETIME);
    // A token endpoint that redirects to plain http: an error, and the secret never reaches http.
    let (cfg_r, _) =
        CloudConfig::parse(&cfg_json.replace(r#""tenantId":"t""#, r#""tenantId":"redirect""#), &env).unwrap();
    let cred = Credential::from_config(&cfg_r, &cloud, http_client(&h), &env).unwrap();
    let err = cred.get_token("scope").await.unwrap_err().to_string();
    assert!(err.contains("307") && !err.contains("client-secret-value"), "{err}");
    // A plain-http authority is refused outright.
    let plain_cloud = CloudEnvironment {
        active_directory_endpoint: format!("{}/", h.plain),
        ..cloud.clone()
    };
    let err = Credential::from_config(&cfg, &plain_cloud, http_client(&h), &env).unwrap_err();
    assert!(err.to_string().contains(&h.plain), "{err}");
    assert_eq!(h.plain_seen.count(), 0);
}
