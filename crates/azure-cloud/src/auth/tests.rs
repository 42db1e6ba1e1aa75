use super::*;
use mockito::Matcher;

fn env_none(_: &str) -> Option<String> {
    None
}

fn cfg(extra: &str) -> CloudConfig {
    let text =
        format!(r#"{{"tenantId":"tenant1","subscriptionId":"s","resourceGroup":"rg","location":"eastus"{extra}}}"#);
    CloudConfig::parse(&text, &env_none).unwrap().0
}

fn cloud(aad: &str) -> CloudEnvironment {
    CloudEnvironment {
        name: "test".into(),
        resource_manager_endpoint: "https://arm.invalid/".into(),
        active_directory_endpoint: format!("{aad}/"),
        token_audience: "https://management.core.windows.net/".into(),
    }
}

const SCOPE: &str = "https://management.core.windows.net//.default";
const OK_BODY: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"tok-1"}"#;

#[tokio::test]
async fn client_secret_request_and_cache() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/tenant1/oauth2/v2.0/token")
        .match_header("content-type", "application/x-www-form-urlencoded")
        .match_body(Matcher::AllOf(vec![
            Matcher::UrlEncoded("grant_type".into(), "client_credentials".into()),
            Matcher::UrlEncoded("client_id".into(), "cid".into()),
            Matcher::UrlEncoded("client_secret".into(), "s3cret".into()),
            Matcher::UrlEncoded("scope".into(), SCOPE.into()),
        ]))
        .with_body(OK_BODY)
        .expect(1)
        .create_async()
        .await;
    let c = Credential::from_config(
        &cfg(r#","aadClientId":"cid","aadClientSecret":"s3cret""#),
        &cloud(&server.url()),
        reqwest::Client::new(),
        &env_none,
    )
    .unwrap();
    assert_eq!(c.kind(), "client secret");
    assert!(!format!("{c:?}").contains("s3cret"));
    let t = c.get_token(SCOPE).await.unwrap();
    assert_eq!(t.token.expose(), "tok-1");
    c.get_token(SCOPE).await.unwrap(); // cached
    m.assert_async().await;
}

#[tokio::test]
async fn rejected_names_code_and_hides_secret() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", "/tenant1/oauth2/v2.0/token")
        .with_status(401)
        .with_body(r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#)
        .create_async()
        .await;
    let c = Credential::from_config(
        &cfg(r#","aadClientId":"cid","aadClientSecret":"s3cret""#),
        &cloud(&server.url()),
        reqwest::Client::new(),
        &env_none,
    )
    .unwrap();
    let err = c.get_token(SCOPE).await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("invalid_client") && !err.contains("s3cret"),
        "{err}"
    );
}

#[tokio::test]
async fn managed_identity_system_user_and_resource_id() {
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("", None),
        (
            "11111111-2222-3333-4444-555555555555",
            Some(("client_id", "11111111-2222-3333-4444-555555555555")),
        ),
        (
            "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
            Some((
                "msi_res_id",
                "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
            )),
        ),
    ];
    for (id, param) in cases {
        let mut server = mockito::Server::new_async().await;
        let mut q = vec![
            Matcher::UrlEncoded("api-version".into(), "2018-02-01".into()),
            Matcher::UrlEncoded("resource".into(), "https://management.core.windows.net/".into()),
        ];
        if let Some((k, v)) = param {
            q.push(Matcher::UrlEncoded(k.to_string(), v.to_string()));
        }
        let m = server
            .mock("GET", "/metadata/identity/oauth2/token")
            .match_query(Matcher::AllOf(q))
            .match_header("Metadata", "true")
            .with_body(r#"{"access_token":"mi","expires_in":"3599","expires_on":"4102444800","resource":"x","token_type":"Bearer"}"#)
            .expect(1)
            .create_async()
            .await;
        let c = cfg(&format!(
            r#","useManagedIdentityExtension":true,"userAssignedIdentityID":"{id}","imdsEndpoint":"{}""#,
            server.url()
        ));
        let cred =
            Credential::from_config(&c, &cloud("https://login.invalid"), reqwest::Client::new(), &env_none).unwrap();
        let t = cred.get_token(SCOPE).await.unwrap();
        assert_eq!(t.token.expose(), "mi");
        // expires_on in 2100: reused for at most a day, never trusted beyond that.
        let day = crate::clock::MAX_TOKEN_LIFETIME;
        assert!(
            t.expires_on <= SystemTime::now() + day && t.expires_on > SystemTime::now() + day - Duration::from_secs(60)
        );
        m.assert_async().await;
    }
}

#[tokio::test]
async fn pod_identity_env_overrides_imds_host() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("GET", "/metadata/identity/oauth2/token")
        .match_query(Matcher::Any)
        .with_body(r#"{"access_token":"mi","expires_in":3599}"#)
        .create_async()
        .await;
    let url = server.url();
    let env = |k: &str| (k == POD_IDENTITY_HOST_ENV).then(|| url.clone());
    let c = cfg(r#","useManagedIdentityExtension":true"#);
    let cred = Credential::from_config(&c, &cloud("https://login.invalid"), reqwest::Client::new(), &env).unwrap();
    cred.get_token(SCOPE).await.unwrap();
    m.assert_async().await;
}

#[tokio::test]
async fn workload_identity_sends_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "projected-sa-token\n").unwrap();
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/tenant1/oauth2/v2.0/token")
        .match_body(Matcher::AllOf(vec![
            Matcher::UrlEncoded("client_id".into(), "wi-client".into()),
            Matcher::UrlEncoded("client_assertion".into(), "projected-sa-token".into()),
            Matcher::UrlEncoded("client_assertion_type".into(), JWT_BEARER.into()),
            Matcher::UrlEncoded("grant_type".into(), "client_credentials".into()),
            Matcher::UrlEncoded("scope".into(), SCOPE.into()),
        ]))
        .with_body(OK_BODY)
        .create_async()
        .await;
    let path = file.display().to_string();
    let env = |k: &str| match k {
        "AZURE_FEDERATED_TOKEN_FILE" => Some(path.clone()),
        "AZURE_CLIENT_ID" => Some("wi-client".to_string()),
        _ => None,
    };
    let text = r#"{"tenantId":"tenant1","subscriptionId":"s","resourceGroup":"rg","location":"eastus","useManagedIdentityExtension":true}"#;
    let (c, _) = CloudConfig::parse(text, &env).unwrap();
    let cred = Credential::from_config(&c, &cloud(&server.url()), reqwest::Client::new(), &env).unwrap();
    assert_eq!(cred.kind(), "workload identity");
    cred.get_token(SCOPE).await.unwrap();
    m.assert_async().await;
}

fn testdata(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn certificate_pfx_and_pem_sign_verifiable_assertions() {
    for (file, password) in [("test-client.pfx", "test-only"), ("test-client.pem", "")] {
        let cert = ClientCertificate::load(std::path::Path::new(&testdata(file)), password).unwrap();
        // x5t = base64url(SHA-1 of the DER certificate) = openssl's fingerprint.
        assert_eq!(
            B64.decode(cert.x5t()).unwrap(),
            hex("29F9ABCAB58CF62BE8C49A4608ACA174B8977A13"),
            "{file}"
        );
        let mut server = mockito::Server::new_async().await;
        let m = server
            .mock("POST", "/tenant1/oauth2/v2.0/token")
            .match_body(Matcher::AllOf(vec![
                Matcher::UrlEncoded("client_id".into(), "cert-client".into()),
                Matcher::UrlEncoded("client_assertion_type".into(), JWT_BEARER.into()),
                Matcher::Regex("client_assertion=[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+".into()),
            ]))
            .with_body(OK_BODY)
            .create_async()
            .await;
        let c = cfg(&format!(
            r#","aadClientId":"cert-client","aadClientCertPath":"{}","aadClientCertPassword":"{password}""#,
            testdata(file)
        ));
        let cred = Credential::from_config(&c, &cloud(&server.url()), reqwest::Client::new(), &env_none).unwrap();
        cred.get_token(SCOPE).await.unwrap();
        m.assert_async().await;
        // The assertion verifies with the certificate's key and names the audience.
        let aud = format!("{}/tenant1/oauth2/v2.0/token", server.url());
        let jwt = cert.assertion("cert-client", &aud).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let pk = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            cert.public_key_der(),
        );
        pk.verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &B64.decode(parts[2]).unwrap(),
        )
        .unwrap();
        let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "cert-client");
    }
    let err = ClientCertificate::load(std::path::Path::new(&testdata("test-client.pfx")), "wrong").unwrap_err();
    assert!(err.to_string().contains("wrong aadClientCertPassword"), "{err}");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

#[test]
fn authority_must_be_https_unless_loopback() {
    assert!(token_endpoint("https://login.microsoftonline.com/", "t", false).is_ok());
    assert!(token_endpoint("http://127.0.0.1:8080/", "t", false).is_ok());
    assert!(matches!(
        token_endpoint("http://login.example.com/", "t", false),
        Err(AuthError::InsecureAuthority(_))
    ));
    assert_eq!(
        token_endpoint("https://adfs.local/adfs/", "adfs", true).unwrap(),
        "https://adfs.local/adfs/oauth2/token"
    );
}

#[test]
fn token_response_forms() {
    assert!(parse_token_response(&serde_json::json!({"access_token":"a","expires_in":"60"})).is_ok());
    assert!(parse_token_response(&serde_json::json!({"access_token":"a"})).is_err());
    assert!(parse_token_response(&serde_json::json!({"expires_in":60})).is_err());
}

#[test]
fn absurd_expiries_are_clamped_never_panic() {
    let now = SystemTime::now();
    for body in [
        r#"{"access_token":"t","expires_in":18446744073709551615}"#,
        r#"{"access_token":"t","expires_on":"18446744073709551615"}"#,
        r#"{"access_token":"t","expires_on":18446744073709551615}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let t = parse_token_response(&v).unwrap();
        assert!(
            t.expires_on <= SystemTime::now() + crate::clock::MAX_TOKEN_LIFETIME,
            "{body}"
        );
        assert!(t.expires_on >= now, "{body}");
    }
    let v: serde_json::Value = serde_json::from_str(r#"{"access_token":"t","expires_in":"3599"}"#).unwrap();
    let t = parse_token_response(&v).unwrap();
    assert!(t.expires_on <= SystemTime::now() + Duration::from_secs(3599));
}
