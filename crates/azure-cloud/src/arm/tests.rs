//! Exact-request tests of the pipeline and clients against mockito.

use super::*;
use crate::secret::Secret;
use mockito::{Matcher, Server};
use std::time::Duration;
use tokio::time::Instant;

const LB_PATH: &str = "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/kubernetes";

fn client(server: &Server, tweak: impl FnOnce(&mut ArmSettings)) -> AzureClients {
    // No client timeouts: tests run on tokio's paused clock, which would fire them while waiting on I/O.
    let http = reqwest::Client::builder().pool_idle_timeout(None).build().unwrap();
    let mut settings = ArmSettings::new(
        url::Url::parse(&server.url()).unwrap(),
        "https://management.core.windows.net//.default",
    );
    settings.retry = RetryPolicy {
        max_retries: 3,
        base: Duration::from_secs(1),
        exponent: 2.0,
        jitter: 0.0,
        max_delay: Duration::from_secs(60),
    };
    settings.lro_poll_interval = Duration::from_secs(1);
    tweak(&mut settings);
    let arm = ArmClient::new(
        http,
        settings,
        std::sync::Arc::new(StaticToken(Secret::new("tok"))),
        RateLimiters::default(),
    );
    AzureClients::new(std::sync::Arc::new(arm), "sub1")
}

fn lb_with_etag(etag: &str) -> serde_json::Value {
    serde_json::json!({"name": "kubernetes", "location": "eastus", "etag": etag})
}

#[tokio::test(start_paused = true)]
async fn put_sends_if_match_and_follows_async_operation() {
    let mut server = Server::new_async().await;
    let op_url = format!(
        "{}/subscriptions/sub1/providers/Microsoft.Network/locations/eastus/operations/op1?api-version=2024-03-01",
        server.url()
    );
    let put = server
        .mock("PUT", LB_PATH)
        .match_query(Matcher::UrlEncoded("api-version".into(), "2024-03-01".into()))
        .match_header("authorization", "Bearer tok")
        .match_header("if-match", "W/\"etag-1\"")
        .match_header("content-type", "application/json")
        .match_header("x-ms-client-request-id", Matcher::Regex("^[0-9a-f-]{36}$".into()))
        .match_body(Matcher::PartialJsonString(
            r#"{"name":"kubernetes","location":"eastus"}"#.into(),
        ))
        .with_status(201)
        .with_header("azure-asyncoperation", &op_url)
        .with_header("retry-after", "3")
        .with_body(r#"{"name":"kubernetes","etag":"W/\"etag-2\"","properties":{"provisioningState":"Updating"}}"#)
        .expect(1)
        .create_async()
        .await;
    let in_progress = server
        .mock(
            "GET",
            "/subscriptions/sub1/providers/Microsoft.Network/locations/eastus/operations/op1",
        )
        .match_query(Matcher::Any)
        .match_header("authorization", "Bearer tok")
        .with_body(r#"{"status":"InProgress"}"#)
        .expect(1)
        .create_async()
        .await;
    let done = server
        .mock(
            "GET",
            "/subscriptions/sub1/providers/Microsoft.Network/locations/eastus/operations/op1",
        )
        .match_query(Matcher::Any)
        .with_body(r#"{"status":"Succeeded"}"#)
        .expect(1)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let t0 = Instant::now();
    let lb = LoadBalancers::create_or_update(&c, "rg", "kubernetes", lb_with_etag("W/\"etag-1\""))
        .await
        .unwrap();
    assert_eq!(lb["etag"].as_str(), Some("W/\"etag-2\""));
    // First poll after the PUT's Retry-After (3 s), the second after the default interval (1 s).
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
    put.assert_async().await;
    in_progress.assert_async().await;
    done.assert_async().await;
    let sent = c.arm().metrics().sent();
    assert_eq!(sent.get("PUT Microsoft.Network/loadBalancers"), Some(&1));
    assert_eq!(sent.get("GET Microsoft.Network/operations"), Some(&2));
}

#[tokio::test(start_paused = true)]
async fn a_first_answer_already_terminal_is_not_polled() {
    let mut server = Server::new_async().await;
    let op_url = format!("{}/ops/op9", server.url());
    let put = server
        .mock("PUT", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(200)
        .with_header("azure-asyncoperation", &op_url)
        .with_body(r#"{"name":"kubernetes","etag":"W/\"e2\"","properties":{"provisioningState":"Succeeded"}}"#)
        .expect(1)
        .create_async()
        .await;
    let poll = server
        .mock("GET", "/ops/op9")
        .match_query(Matcher::Any)
        .with_body(r#"{"status":"Succeeded"}"#)
        .expect(0)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    LoadBalancers::create_or_update(&c, "rg", "kubernetes", lb_with_etag("W/\"e1\""))
        .await
        .unwrap();
    put.assert_async().await;
    poll.assert_async().await;
    assert_eq!(c.arm().metrics().sent().get("GET Microsoft.Network/operations"), None);
}

#[tokio::test(start_paused = true)]
async fn failed_operation_carries_arm_code_and_message() {
    let mut server = Server::new_async().await;
    let op_url = format!("{}/ops/op2", server.url());
    server
        .mock("PUT", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(201)
        .with_header("azure-asyncoperation", &op_url)
        .with_body("{}")
        .create_async()
        .await;
    server
        .mock("GET", "/ops/op2")
        .with_body(r#"{"status":"Failed","error":{"code":"PublicIPAndLBSkuDoNotMatch","message":"Standard sku load balancer cannot reference Basic sku publicIP."}}"#)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let err = LoadBalancers::create_or_update(&c, "rg", "kubernetes", lb_with_etag("e"))
        .await
        .unwrap_err();
    match &err {
        ArmError::OperationFailed { status, code, .. } => {
            assert_eq!(status, "Failed");
            assert_eq!(code, "PublicIPAndLBSkuDoNotMatch");
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("cannot reference Basic sku"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn delete_follows_location_and_absent_is_ok() {
    let mut server = Server::new_async().await;
    let loc = format!("{}/locations/eastus/operationResults/d1", server.url());
    server
        .mock(
            "DELETE",
            "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/pip1",
        )
        .match_query(Matcher::Any)
        .with_status(202)
        .with_header("location", &loc)
        .create_async()
        .await;
    let pending = server
        .mock("GET", "/locations/eastus/operationResults/d1")
        .with_status(202)
        .expect(2)
        .create_async()
        .await;
    let finished = server
        .mock("GET", "/locations/eastus/operationResults/d1")
        .with_status(204)
        .expect(1)
        .create_async()
        .await;
    server
        .mock(
            "DELETE",
            "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/gone",
        )
        .match_query(Matcher::Any)
        .with_status(404)
        .with_body(r#"{"error":{"code":"ResourceNotFound","message":"not found"}}"#)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    PublicIpAddresses::delete(&c, "rg", "pip1").await.unwrap();
    pending.assert_async().await;
    finished.assert_async().await;
    PublicIpAddresses::delete(&c, "rg", "gone").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff() {
    let mut server = Server::new_async().await;
    let failing = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(503)
        .expect(2)
        .create_async()
        .await;
    let ok = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_body(r#"{"name":"kubernetes","etag":"e1"}"#)
        .expect(1)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let t0 = Instant::now();
    let lb = LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap();
    assert_eq!(lb.etag.as_deref(), Some("e1"));
    assert_eq!(t0.elapsed(), Duration::from_secs(1 + 2)); // base 1 s, exponent 2, no jitter
    failing.assert_async().await;
    ok.assert_async().await;

    // Retries are bounded: 1 + max_retries attempts, then the ARM error.
    let mut server = Server::new_async().await;
    let m = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(500)
        .with_body(r#"{"error":{"code":"InternalServerError","message":"boom"}}"#)
        .expect(4)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let err = LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap_err();
    assert!(
        matches!(&err, ArmError::Http { status: 500, code, .. } if code == "InternalServerError"),
        "{err}"
    );
    m.assert_async().await;
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_never_retried() {
    for (status, check) in [
        (400, "Http"),
        (403, "Http"),
        (404, "NotFound"),
        (409, "Http"),
        (412, "Conflict"),
    ] {
        let mut server = Server::new_async().await;
        let m = server
            .mock("PUT", LB_PATH)
            .match_query(Matcher::Any)
            .with_status(status)
            .with_body(r#"{"error":{"code":"SomeCode","message":"msg"}}"#)
            .expect(1)
            .create_async()
            .await;
        let c = client(&server, |_| {});
        let err = LoadBalancers::create_or_update(&c, "rg", "kubernetes", lb_with_etag("e"))
            .await
            .unwrap_err();
        let kind = match err {
            ArmError::Http { status: s, .. } if usize::from(s) == status => "Http",
            ArmError::NotFound { .. } => "NotFound",
            ArmError::Conflict { .. } => "Conflict",
            e => panic!("{status}: {e}"),
        };
        assert_eq!(kind, check, "{status}");
        m.assert_async().await;
    }
}

/// A 429 closes the gate for Retry-After: nothing is sent inside the window, by this caller or another.
#[tokio::test(start_paused = true)]
async fn throttled_bucket_sends_nothing_inside_retry_after() {
    let mut server = Server::new_async().await;
    let throttled = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(429)
        .with_header("retry-after", "30")
        .with_body(r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#)
        .expect(1)
        .create_async()
        .await;
    let ok = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_body(r#"{"name":"kubernetes"}"#)
        .expect(2)
        .create_async()
        .await;
    // Callers wait up to 60 s for a closed gate.
    let c = client(&server, |s| s.gates.max_wait = Duration::from_secs(60));
    let t0 = Instant::now();
    let c2 = c.clone();
    let first = tokio::spawn(async move { LoadBalancers::get(&c2, "rg", "kubernetes").await });
    // A second caller arrives once the 429 has closed the gate (real I/O: yield, never advance the clock).
    let mut spins = 0u32;
    while c
        .arm()
        .gates()
        .closed_until("Microsoft.Network", Access::Read)
        .is_none()
    {
        spins += 1;
        assert!(spins < 10_000_000, "the 429 never closed the gate");
        tokio::task::yield_now().await;
    }
    LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap();
    first.await.unwrap().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(30), "{:?}", t0.elapsed());
    throttled.assert_async().await;
    ok.assert_async().await;
    // Writes were never gated.
    assert!(c
        .arm()
        .gates()
        .closed_until("Microsoft.Network", Access::Write)
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn closed_gate_beyond_the_bound_fails_without_sending() {
    let mut server = Server::new_async().await;
    let throttled = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(429)
        .with_header("retry-after", "300")
        .expect(1)
        .create_async()
        .await;
    let c = client(&server, |s| s.gates.max_wait = Duration::from_secs(10));
    for _ in 0..3 {
        let err = LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap_err();
        let wait = err.retry_after().unwrap();
        assert!(wait > Duration::from_secs(250), "{wait:?}");
    }
    throttled.assert_async().await; // one request, not three
}

#[tokio::test(start_paused = true)]
async fn reauthenticates_once_on_401() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_status(401)
        .expect(2)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let err = LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap_err();
    assert!(matches!(err, ArmError::Http { status: 401, .. }), "{err}");
    m.assert_async().await;
}

#[tokio::test]
async fn lists_follow_next_link_and_tokens_stay_on_the_arm_host() {
    let mut server = Server::new_async().await;
    let base =
        "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines";
    let next = format!(
        "{}{base}?api-version=2024-07-01&%24expand=instanceView&%24skiptoken=p2",
        server.url()
    );
    let p1 = server
        .mock("GET", base)
        .match_query(Matcher::AllOf(vec![
            Matcher::UrlEncoded("api-version".into(), "2024-07-01".into()),
            Matcher::UrlEncoded("$expand".into(), "instanceView".into()),
        ]))
        .with_body(format!(
            r#"{{"value":[{{"instanceId":"0","name":"ss_0","location":"eastus"}}],"nextLink":"{next}"}}"#
        ))
        .expect(1)
        .create_async()
        .await;
    let p2 = server
        .mock("GET", base)
        .match_query(Matcher::UrlEncoded("$skiptoken".into(), "p2".into()))
        .with_body(r#"{"value":[{"instanceId":"1","name":"ss_1","location":"eastus"}]}"#)
        .expect(1)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let vms = VirtualMachineScaleSetVms::list(&c, "rg", "ss", true).await.unwrap();
    let ids: Vec<_> = vms.iter().map(|v| v.instance_id.clone().unwrap()).collect();
    assert_eq!(ids, vec!["0", "1"]);
    p1.assert_async().await;
    p2.assert_async().await;

    // A nextLink on another host is refused rather than sent our token.
    let mut server = Server::new_async().await;
    server
        .mock(
            "GET",
            "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Network/loadBalancers",
        )
        .match_query(Matcher::Any)
        .with_body(r#"{"value":[],"nextLink":"https://evil.example.com/steal"}"#)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let err = LoadBalancers::list(&c, "rg").await.unwrap_err();
    assert!(err.to_string().contains("refusing to send a token"), "{err}");
}

#[tokio::test]
async fn undecodable_body_names_the_resource() {
    let mut server = Server::new_async().await;
    server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_body(r#"{"name": 42}"#)
        .create_async()
        .await;
    let c = client(&server, |_| {});
    let err = LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap_err();
    assert!(matches!(err, ArmError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("loadBalancers/kubernetes"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_retried_then_reported() {
    // A port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let http = reqwest::Client::builder().pool_idle_timeout(None).build().unwrap();
    let mut settings = ArmSettings::new(url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(), "scope");
    settings.retry.max_retries = 2;
    let arm = std::sync::Arc::new(ArmClient::new(
        http,
        settings,
        std::sync::Arc::new(StaticToken(Secret::new("t"))),
        RateLimiters::default(),
    ));
    let c = AzureClients::new(arm, "sub1");
    let err = LoadBalancers::get(&c, "rg", "lb").await.unwrap_err();
    assert!(matches!(err, ArmError::Transport { .. }), "{err}");
    assert_eq!(c.arm().metrics().sent_with_method("GET"), 3);
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_makes_callers_wait_not_fail() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("GET", LB_PATH)
        .match_query(Matcher::Any)
        .with_body("{}")
        .expect(4)
        .create_async()
        .await;
    let text = r#"{"useInstanceMetadata":true,"cloudProviderRateLimit":true,"cloudProviderRateLimitQPS":1,"cloudProviderRateLimitBucket":2}"#;
    let (cfg, _) = crate::config::CloudConfig::parse(text, &|_| None).unwrap();
    let http = reqwest::Client::builder().pool_idle_timeout(None).build().unwrap();
    let settings = ArmSettings::new(url::Url::parse(&server.url()).unwrap(), "scope");
    let arm = ArmClient::new(
        http,
        settings,
        std::sync::Arc::new(StaticToken(Secret::new("t"))),
        RateLimiters::from_config(&cfg),
    );
    let c = AzureClients::new(std::sync::Arc::new(arm), "sub1");
    let t0 = Instant::now();
    for _ in 0..4 {
        LoadBalancers::get(&c, "rg", "kubernetes").await.unwrap();
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(2)); // burst 2, then 1 per second
    m.assert_async().await;
    let mut reg = prometheus_client::registry::Registry::default();
    c.arm().metrics().register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("cloudprovider_azure_api_request_ratelimited_count{request=\"load_balancers_get\""),
        "{text}"
    );
    assert!(
        text.contains("cloudprovider_azure_api_request_duration_seconds_bucket"),
        "{text}"
    );
}
