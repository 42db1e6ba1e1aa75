//! The simulator over HTTPS, as a client sees it: auth, URL shapes, LROs, ETags, integrity rules, limits,
//! throttling, faults, runtime changes and accounting.

use azure_sim::faults::{FaultKind, FaultRule};
use azure_sim::scenario::Scenario;
use azure_sim::{AzureSim, BusyAnswer, SimOptions};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

struct T {
    sim: AzureSim,
    http: Client,
    token: String,
}

const NET: &str = "2024-03-01";
const CMP: &str = "2024-07-01";

async fn start(opts: SimOptions) -> T {
    let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), opts, &Scenario::default_cluster())
        .await
        .unwrap();
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().unwrap().as_bytes()).unwrap();
    let http = Client::builder()
        .add_root_certificate(ca)
        .use_rustls_tls()
        .build()
        .unwrap();
    let tenant = sim.options().tenant_id.clone();
    let (status, token) = client_credentials(&sim, &http, &tenant).await;
    assert_eq!(status, 200);
    T { sim, http, token }
}

/// A client-credentials token of `tenant` (status, access token).
async fn sign_in(t: &T, tenant: &str) -> (StatusCode, String) {
    client_credentials(&t.sim, &t.http, tenant).await
}

async fn client_credentials(sim: &AzureSim, http: &Client, tenant: &str) -> (StatusCode, String) {
    let o = sim.options().clone();
    let resp = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", sim.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
            ("scope", "https://management.core.windows.net//.default"),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v["access_token"].as_str().unwrap_or_default().to_string())
}

impl T {
    fn rg(&self) -> String {
        let c = self.sim.cluster();
        format!("/subscriptions/{}/resourceGroups/{}", c.subscription, c.resource_group)
    }

    fn net(&self, path: &str) -> String {
        format!("{}/providers/Microsoft.Network/{path}", self.rg())
    }

    fn cmp(&self, path: &str) -> String {
        format!("{}/providers/Microsoft.Compute/{path}", self.rg())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        api: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}{sep}api-version={api}", self.sim.url())
        };
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        (s, h, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, api: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, api, None, &[]).await;
        (s, v)
    }

    /// GET of a full URL (discovery documents, not ARM), decoded as JSON.
    async fn get_url(&self, url: &str) -> Value {
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call(Method::PUT, path, NET, Some(body), &[]).await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn auth_is_required_and_both_token_paths_work() {
    let t = start(SimOptions::default()).await;
    let url = format!("{}{}?api-version={NET}", t.sim.url(), t.net("loadBalancers"));
    let r = t.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = t.http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let o = t.sim.options().clone();
    let bad = t
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", t.sim.url(), o.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", "wrong"),
            ("scope", "https://management.core.windows.net//.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_client");
    // IMDS: Metadata header required, as real IMDS.
    let imds = format!("{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.core.windows.net/&client_id=abc", t.sim.url());
    assert_eq!(t.http.get(&imds).send().await.unwrap().status(), 400);
    let mi: Value = t
        .http
        .get(&imds)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mi["client_id"], "abc");
    let r = t
        .http
        .get(&url)
        .bearer_auth(mi["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Discovery points at the sim.
    let ep = t
        .get_url(&format!("{}/metadata/endpoints?api-version=2019-05-01", t.sim.url()))
        .await;
    assert_eq!(ep[0]["authentication"]["loginEndpoint"], format!("{}/", t.sim.url()));
    // Instance metadata of the first instance.
    let inst: Value = t
        .http
        .get(format!("{}/metadata/instance?api-version=2021-10-01", t.sim.url()))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inst["compute"]["vmScaleSetName"], "k8s-pool1-vmss");
    assert_eq!(
        inst["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"],
        "10.240.0.4"
    );
}

#[tokio::test]
async fn url_shapes_lists_and_not_found() {
    let t = start(SimOptions {
        page_size: 2,
        ..Default::default()
    })
    .await;
    let (s, v) = t.get(&t.cmp("virtualMachineScaleSets"), CMP).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["value"][0]["properties"]["virtualMachineProfile"]["osProfile"]["computerNamePrefix"],
        "k8s-pool1-vmss"
    );
    // Paged list of instances with and without instance view.
    let vms = t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines");
    let (_, p1) = t.get(&format!("{vms}?$expand=instanceView"), CMP).await;
    assert_eq!(p1["value"].as_array().unwrap().len(), 2);
    assert!(p1["value"][0]["properties"]["instanceView"]["statuses"].is_array());
    let next = p1["nextLink"].as_str().unwrap().to_string();
    let (s, _, p2) = t.call(Method::GET, &next, CMP, None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(p2["value"].as_array().unwrap().len(), 1);
    assert!(p2["value"][0]["properties"]["instanceView"].is_object());
    assert!(p2.get("nextLink").is_none());
    let (_, plain) = t.get(&vms, CMP).await;
    assert!(plain["value"][0]["properties"].get("instanceView").is_none());
    let (s, vm) = t.get(&format!("{vms}/1"), CMP).await;
    assert_eq!(s, 200);
    assert_eq!(vm["properties"]["osProfile"]["computerName"], "k8s-pool1-vmss000001");
    let (_, iv) = t.get(&format!("{vms}/1/instanceView"), CMP).await;
    assert_eq!(iv["statuses"][1]["code"], "PowerState/running");
    // Scale-set NICs (old api-version of those paths).
    let (s, nics) = t
        .get(
            &t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/networkInterfaces"),
            "2018-10-01",
        )
        .await;
    assert_eq!(s, 200);
    let all: Vec<Value> = nics["value"].as_array().unwrap().clone();
    assert_eq!(all.len() + usize::from(nics.get("nextLink").is_some()), 3);
    let (s, nic) = t
        .get(
            &t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0/networkInterfaces/k8s-pool1-vmss-nic"),
            "2018-10-01",
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.240.0.4"
    );
    // Plain VMs, availability sets, embedded subnet.
    let (_, list) = t.get(&t.cmp("virtualMachines"), CMP).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 2);
    let (s, subnet) = t.get(&t.net("virtualNetworks/sim-vnet/subnets/nodes"), NET).await;
    assert_eq!(s, 200);
    assert_eq!(subnet["properties"]["addressPrefix"], "10.240.0.0/16");
    // Not found, ARM-shaped.
    let (s, v) = t.get(&t.net("loadBalancers/nope"), NET).await;
    assert_eq!((s.as_u16(), code(&v)), (404, "ResourceNotFound"));
    let (s, v) = t.get(&format!("{vms}/99"), CMP).await;
    assert_eq!((s.as_u16(), code(&v)), (404, "NotFound"));
    let (s, v) = t
        .get(
            "/subscriptions/other/resourceGroups/x/providers/Microsoft.Network/loadBalancers",
            NET,
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (404, "SubscriptionNotFound"));
    let r = t
        .http
        .get(format!("{}{}", t.sim.url(), t.net("loadBalancers")))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

fn lb(t: &T, sku: &str, pip: Option<&str>) -> Value {
    let id = t.net("loadBalancers/kubernetes");
    let fe = match pip {
        Some(p) => {
            json!({"name": "fe1", "properties": {"publicIPAddress": {"id": t.net(&format!("publicIPAddresses/{p}"))}}})
        }
        None => {
            json!({"name": "fe1", "properties": {"subnet": {"id": t.net("virtualNetworks/sim-vnet/subnets/nodes")}}})
        }
    };
    json!({
        "location": "eastus", "sku": {"name": sku},
        "properties": {
            "frontendIPConfigurations": [fe],
            "backendAddressPools": [{"name": "kubernetes"}],
            "probes": [{"name": "p80", "properties": {"protocol": "Tcp", "port": 30080}}],
            "loadBalancingRules": [{"name": "r80", "properties": {
                "frontendIPConfiguration": {"id": format!("{id}/frontendIPConfigurations/fe1")},
                "backendAddressPool": {"id": format!("{id}/backendAddressPools/kubernetes")},
                "probe": {"id": format!("{id}/probes/p80")},
                "protocol": "Tcp", "frontendPort": 80, "backendPort": 80}}],
        }
    })
}

#[tokio::test]
async fn long_running_operations_etags_and_busy_resources() {
    let t = start(SimOptions {
        lro_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let path = t.net("loadBalancers/kubernetes");
    let (s, h, body) = t.put(&path, lb(&t, "Standard", None)).await;
    assert_eq!(s, 201);
    assert_eq!(body["properties"]["provisioningState"], "Creating");
    // The internal frontend got an address from the subnet.
    assert!(
        body["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAddress"]
            .as_str()
            .unwrap()
            .starts_with("10.240.")
    );
    let etag1 = body["etag"].as_str().unwrap().to_string();
    let op = h.get("azure-asyncoperation").unwrap().to_str().unwrap().to_string();
    assert!(h.get("retry-after").is_some());
    let (_, _, st) = t.call(Method::GET, &op, NET, None, &[]).await;
    assert_eq!(st["status"], "InProgress");
    // A write while the operation runs is refused as NRP does.
    let (s, h2, v) = t.put(&path, lb(&t, "Standard", None)).await;
    assert_eq!((s.as_u16(), code(&v)), (429, "RetryableErrorDueToAnotherOperation"));
    assert!(h2.get("retry-after").is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, _, st) = t.call(Method::GET, &op, NET, None, &[]).await;
    assert_eq!(st["status"], "Succeeded");
    let (_, got) = t.get(&path, NET).await;
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");
    // Stale If-Match → 412; the current one → 200 and a new ETag.
    let (s, _, v) = t
        .call(
            Method::PUT,
            &path,
            NET,
            Some(lb(&t, "Standard", None)),
            &[("if-match", "W/\"stale\"")],
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (412, "PreconditionFailed"));
    let (s, _, v) = t
        .call(
            Method::PUT,
            &path,
            NET,
            Some(lb(&t, "Standard", None)),
            &[("if-match", &etag1)],
        )
        .await;
    assert_eq!(s, 200);
    assert_ne!(v["etag"].as_str().unwrap(), etag1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // DELETE → 202 + Location, then done; a second DELETE → 204.
    let (s, h, _) = t.call(Method::DELETE, &path, NET, None, &[]).await;
    assert_eq!(s, 202);
    let loc = h.get("location").unwrap().to_str().unwrap().to_string();
    let (s, _, _) = t.call(Method::GET, &loc, NET, None, &[]).await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (s, _, _) = t.call(Method::GET, &loc, NET, None, &[]).await;
    assert_eq!(s, 200);
    let (s, _, _) = t.call(Method::DELETE, &path, NET, None, &[]).await;
    assert_eq!(s, 204);

    // 409 mode.
    let t = start(SimOptions {
        lro_delay: Duration::from_millis(300),
        busy_answer: BusyAnswer::Conflict409,
        ..Default::default()
    })
    .await;
    t.put(&path, lb(&t, "Standard", None)).await;
    let (s, _, v) = t.put(&path, lb(&t, "Standard", None)).await;
    assert_eq!((s.as_u16(), code(&v)), (409, "AnotherOperationInProgress"));
}

#[tokio::test]
async fn ranges_names_and_dns_labels_validated_as_arm_does() {
    let t = start(SimOptions::default()).await;
    let lb_path = t.net("loadBalancers/kubernetes");
    // A probe on port 0 (a Service without node ports) and rule ports out of range.
    for (ptr, value, want) in [
        ("/properties/probes/0/properties/port", json!(0), "Probe.Port"),
        ("/properties/probes/0/properties/port", json!(65536), "Probe.Port"),
        (
            "/properties/loadBalancingRules/0/properties/frontendPort",
            json!(65535),
            "FrontendPort",
        ),
        (
            "/properties/loadBalancingRules/0/properties/backendPort",
            json!(70000),
            "BackendPort",
        ),
    ] {
        let mut body = lb(&t, "Standard", None);
        *body.pointer_mut(ptr).unwrap() = value;
        let (s, _, v) = t.put(&lb_path, body).await;
        assert_eq!((s.as_u16(), code(&v)), (400, "InvalidParameter"), "{ptr}");
        assert!(v["error"]["message"].as_str().unwrap().contains(want), "{v}");
    }
    // HA ports (0/0) are fine.
    let mut body = lb(&t, "Standard", None);
    body["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"] = json!(0);
    body["properties"]["loadBalancingRules"][0]["properties"]["backendPort"] = json!(0);
    assert_eq!(t.put(&lb_path, body).await.0, 201);
    // NSG rules: ports 0–65535, `*`, ranges; 70000 or a reversed range is refused.
    let nsg = |ports: Value| {
        json!({"location": "eastus", "properties": {"securityRules": [{"name": "r1", "properties": {
            "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 500,
            "sourcePortRange": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "destinationPortRanges": ports}}]}})
    };
    let nsg_path = t.net("networkSecurityGroups/test-nsg");
    assert_eq!(t.put(&nsg_path, nsg(json!(["80", "1000-2000", "65535"]))).await.0, 201);
    for bad in [json!(["70000"]), json!(["90-80"]), json!(["http"])] {
        let (s, _, v) = t.put(&nsg_path, nsg(bad.clone())).await;
        assert_eq!((s.as_u16(), code(&v)), (400, "SecurityRuleInvalidPortRange"), "{bad}");
    }
    // Public IP DNS labels: ^[a-z][a-z0-9-]{1,61}[a-z0-9]$.
    let pip = |label: &str| {
        json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {
            "publicIPAllocationMethod": "Static", "dnsSettings": {"domainNameLabel": label}}})
    };
    assert_eq!(t.put(&t.net("publicIPAddresses/pip-dns"), pip("my-app-1")).await.0, 201);
    for bad in [
        "x".repeat(100_000),
        "Upper".into(),
        "-lead".into(),
        "trail-".into(),
        "ab".into(),
    ] {
        let (s, _, v) = t.put(&t.net("publicIPAddresses/pip-dns2"), pip(&bad)).await;
        assert_eq!(
            (s.as_u16(), code(&v)),
            (400, "InvalidDomainNameLabel"),
            "{}",
            &bad[..bad.len().min(10)]
        );
    }
    // Resource names: 1–80 characters, ARM's pattern.
    for bad in ["a".repeat(81), "bad name".into(), "-x".into(), "x.".into()] {
        let (s, _, v) = t
            .put(
                &t.net(&format!("publicIPAddresses/{}", urlencoding(&bad))),
                pip("ok-label"),
            )
            .await;
        assert_eq!((s.as_u16(), code(&v)), (400, "InvalidResourceName"), "{bad}");
    }
}

#[tokio::test]
async fn zones_of_frontends_and_public_ips_cannot_change() {
    let t = start(SimOptions::default()).await;
    let lb_path = t.net("loadBalancers/kubernetes");
    let mut body = lb(&t, "Standard", None);
    body["properties"]["frontendIPConfigurations"][0]["zones"] = json!(["1", "2", "3"]);
    assert_eq!(t.put(&lb_path, body.clone()).await.0, 201);
    // The same frontend without its zones (what a client that plans none would send): refused.
    let mut without = body.clone();
    without["properties"]["frontendIPConfigurations"][0]
        .as_object_mut()
        .unwrap()
        .remove("zones");
    let (s, _, v) = t.put(&lb_path, without).await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "ResourceAvailabilityZonesCannotBeModified")
    );
    // Unchanged zones in another order are fine.
    body["properties"]["frontendIPConfigurations"][0]["zones"] = json!(["3", "1", "2"]);
    assert_eq!(t.put(&lb_path, body).await.0, 200);
    let pip = |zones: Value| {
        json!({"location": "eastus", "sku": {"name": "Standard"}, "zones": zones,
               "properties": {"publicIPAllocationMethod": "Static"}})
    };
    let pip_path = t.net("publicIPAddresses/zonal");
    assert_eq!(t.put(&pip_path, pip(json!(["1", "2", "3"]))).await.0, 201);
    let (s, _, v) = t.put(&pip_path, pip(json!([]))).await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "ResourceAvailabilityZonesCannotBeModified")
    );
}

/// MSAL's flow: the OpenID discovery document first, then the token endpoint it names; the Compute
/// provider's zone mappings; the environments array of `/metadata/endpoints` (api-version 2022-09-01).
#[tokio::test]
async fn discovery_documents_as_real_clients_read_them() {
    let t = start(SimOptions::default()).await;
    let o = t.sim.options().clone();
    let doc: Value = t
        .http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            t.sim.url(),
            o.tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_endpoint = doc["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(
        token_endpoint,
        format!("{}/{}/oauth2/v2.0/token", t.sim.url(), o.tenant_id)
    );
    let tok: Value = t
        .http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
            ("scope", "https://management.core.windows.net//.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}{}?api-version={NET}", t.sim.url(), t.net("loadBalancers"));
    let r = t
        .http
        .get(&url)
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let adfs = t
        .get_url(&format!("{}/adfs/.well-known/openid-configuration", t.sim.url()))
        .await;
    assert_eq!(adfs["token_endpoint"], format!("{}/adfs/oauth2/token", t.sim.url()));
    // The region's zones, as upstream reads them at start.
    let c = t.sim.cluster().clone();
    let (s, _, provider) = t
        .call(
            Method::GET,
            &format!("/subscriptions/{}/providers/Microsoft.Compute", c.subscription),
            "2021-04-01",
            None,
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let vms = provider["resourceTypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resourceType"] == "virtualMachines")
        .unwrap();
    assert_eq!(vms["zoneMappings"][0]["location"], c.location.as_str());
    assert_eq!(vms["zoneMappings"][0]["zones"], json!(["1", "2", "3"]));
    // Environments: an array, picked by name.
    let envs = t
        .get_url(&format!("{}/metadata/endpoints?api-version=2022-09-01", t.sim.url()))
        .await;
    let env = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AzureSim")
        .unwrap();
    assert_eq!(env["resourceManager"], format!("{}/", t.sim.url()));
}

/// Deleting a load balancer a scale set still uses: ARM's error names the scale set (clients parse it).
#[tokio::test]
async fn load_balancer_in_use_names_the_scale_set() {
    let t = start(SimOptions::default()).await;
    let lb_path = t.net("loadBalancers/kubernetes");
    assert_eq!(t.put(&lb_path, lb(&t, "Standard", None)).await.0, 201);
    let pool = format!("{lb_path}/backendAddressPools/kubernetes");
    let ss_id = t
        .sim
        .cluster()
        .id("Microsoft.Compute", "virtualMachineScaleSets/k8s-pool1-vmss");
    t.sim.with_store(|s, _| {
        let r = s.get(&ss_id).unwrap().clone();
        let mut body = r.body.clone();
        body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
            ["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] =
            json!([{"id": pool}]);
        s.put(&ss_id, "Microsoft.Compute/virtualMachineScaleSets", body, 0);
    });
    let (s, _, v) = t.call(Method::DELETE, &lb_path, NET, None, &[]).await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "LoadBalancerInUseByVirtualMachineScaleSet")
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.ends_with(&format!("virtual machine scale set {ss_id}.")), "{msg}");
}

/// Ids of `{"id": ...}` references at a JSON pointer.
fn ref_ids(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// ARM computes read-only back-references and real clients depend on them: before deleting a load balancer,
/// upstream reads a pool's `backendIPConfigurations` to find the NICs and scale-set instances to detach.
/// Driven with raw requests, as such a client does: join, read, echo a served body back, detach, delete.
#[tokio::test]
async fn read_only_back_references_are_served_as_arm_does() {
    let t = start(SimOptions::default()).await;
    let pip = t.net("publicIPAddresses/pip-a");
    let pip_body = json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}});
    assert!(t.put(&pip, pip_body).await.0.is_success());
    let lb_path = t.net("loadBalancers/kubernetes");
    assert_eq!(t.put(&lb_path, lb(&t, "Standard", Some("pip-a"))).await.0, 201);
    let pool = format!("{lb_path}/backendAddressPools/kubernetes");
    // An availability-set VM's NIC joins the pool (GET, change, PUT back).
    let nic_path = t.net("networkInterfaces/k8s-pool2-0-nic");
    let (s, mut nic) = t.get(&nic_path, NET).await;
    assert_eq!(s, 200, "{nic}");
    nic["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = json!([{"id": pool}]);
    assert!(t.put(&nic_path, nic.clone()).await.0.is_success());
    let nic_ipc = nic["properties"]["ipConfigurations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A scale-set instance joins through its network profile (what a client PUTs).
    let inst = t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0");
    let (_, mut vm) = t.get(&inst, CMP).await;
    vm["properties"]["networkProfileConfiguration"]["networkInterfaceConfigurations"][0]["properties"]
        ["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = json!([{"id": pool}]);
    assert!(t.put(&inst, vm.clone()).await.0.is_success());
    let inst_ipc = format!("{inst}/networkInterfaces/k8s-pool1-vmss-nic/ipConfigurations/ipconfig1");

    let (_, served) = t.get(&lb_path, NET).await;
    let members = ref_ids(
        &served,
        "/properties/backendAddressPools/0/properties/backendIPConfigurations",
    );
    assert!(members.iter().any(|m| m.eq_ignore_ascii_case(&nic_ipc)), "{members:?}");
    assert!(members.iter().any(|m| m.eq_ignore_ascii_case(&inst_ipc)), "{members:?}");
    assert_eq!(members.len(), 2, "{members:?}");
    let rule = format!("{lb_path}/loadBalancingRules/r80");
    for p in [
        "/properties/backendAddressPools/0/properties/loadBalancingRules",
        "/properties/frontendIPConfigurations/0/properties/loadBalancingRules",
        "/properties/probes/0/properties/loadBalancingRules",
    ] {
        assert_eq!(ref_ids(&served, p), vec![rule.clone()], "{p}");
    }
    // The child resource is served the same way.
    let (_, pool_body) = t.get(&pool, NET).await;
    assert_eq!(ref_ids(&pool_body, "/properties/backendIPConfigurations").len(), 2);
    // A public IP names the frontend that uses it; a subnet its IP configurations; the security group its
    // subnets.
    let (_, p) = t.get(&pip, NET).await;
    assert_eq!(
        p["properties"]["ipConfiguration"]["id"],
        format!("{lb_path}/frontendIPConfigurations/fe1")
    );
    let subnet = t.net("virtualNetworks/sim-vnet/subnets/nodes");
    let (_, sn) = t.get(&subnet, NET).await;
    let on_subnet = ref_ids(&sn, "/properties/ipConfigurations");
    assert!(
        on_subnet.iter().any(|m| m.eq_ignore_ascii_case(&nic_ipc)),
        "{on_subnet:?}"
    );
    assert!(on_subnet.len() >= 5, "every node NIC: {on_subnet:?}");
    let (_, nsg) = t.get(&t.net("networkSecurityGroups/sim-nsg"), NET).await;
    assert_eq!(ref_ids(&nsg, "/properties/subnets"), vec![subnet.clone()]);

    // Echoing a served body back is accepted (ARM ignores read-only properties) and stores none of them.
    let (s, _, _) = t.put(&lb_path, served.clone()).await;
    assert!(s.is_success(), "{s}");
    // Detach what backendIPConfigurations named, then the delete succeeds.
    nic["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = json!([]);
    let (_, current) = t.get(&nic_path, NET).await;
    nic["etag"] = current["etag"].clone();
    assert!(t.put(&nic_path, nic).await.0.is_success());
    vm["properties"]["networkProfileConfiguration"]["networkInterfaceConfigurations"][0]["properties"]
        ["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = json!([]);
    let (_, current) = t.get(&inst, CMP).await;
    vm["etag"] = current["etag"].clone();
    assert!(t.put(&inst, vm).await.0.is_success());
    let (_, after) = t.get(&lb_path, NET).await;
    assert!(
        after
            .pointer("/properties/backendAddressPools/0/properties/backendIPConfigurations")
            .is_none(),
        "no stale copy of the echoed list: {after}"
    );
    let (s, _, v) = t.call(Method::DELETE, &lb_path, NET, None, &[]).await;
    assert!(s.is_success(), "{s} {v}");
    let (_, p) = t.get(&pip, NET).await;
    assert!(p["properties"].get("ipConfiguration").is_none(), "{p}");
}

/// What a real client sends to change a scale-set instance's pools: location, hardware and network
/// profiles and the etag only. Compute keeps the rest (computer name, OS profile, ...).
#[tokio::test]
async fn a_partial_put_of_a_scale_set_instance_keeps_what_it_omits() {
    let t = start(SimOptions::default()).await;
    let c = t.sim.cluster().clone();
    let ss = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/k8s-pool1-vmss",
        c.subscription, c.resource_group
    );
    let (s, before) = t.get(&format!("{ss}/virtualMachines/0"), "2024-07-01").await;
    assert_eq!(s, 200);
    let computer = before["properties"]["osProfile"]["computerName"].clone();
    assert!(computer.is_string());
    let partial = json!({
        "location": before["location"],
        "etag": before["etag"],
        "properties": {
            "hardwareProfile": before["properties"]["hardwareProfile"],
            "networkProfileConfiguration": before["properties"]["networkProfileConfiguration"],
        },
    });
    let (s, _, _) = t.put(&format!("{ss}/virtualMachines/0"), partial).await;
    assert!(s.is_success(), "{s}");
    let (s, list) = t.get(&format!("{ss}/virtualMachines"), "2024-07-01").await;
    assert_eq!(s, 200);
    let inst = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == "0")
        .unwrap()
        .clone();
    assert_eq!(
        inst["properties"]["osProfile"]["computerName"], computer,
        "the computer name survived"
    );
}

fn urlencoding(s: &str) -> String {
    s.replace(' ', "%20")
}

#[tokio::test]
async fn integrity_rules_and_limits() {
    let t = start(SimOptions::default()).await;
    let lb_path = t.net("loadBalancers/kubernetes");
    // A rule referencing a probe the LB does not have.
    let mut bad = lb(&t, "Standard", None);
    bad["properties"]["probes"] = json!([]);
    let (s, _, v) = t.put(&lb_path, bad).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "InvalidResourceReference"));
    // Public IPs: static standard gets an address; dynamic standard is refused; SKU must match the LB's.
    let (s, _, pip) = t.put(&t.net("publicIPAddresses/pip-std"), json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}})).await;
    assert_eq!(s, 201);
    assert!(pip["properties"]["ipAddress"].as_str().unwrap().starts_with("20."));
    let (s, _, v) = t.put(&t.net("publicIPAddresses/pip-dyn"), json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Dynamic"}})).await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "StandardSkuPublicIPAddressesMustBeStatic")
    );
    t.put(
        &t.net("publicIPAddresses/pip-basic"),
        json!({"location": "eastus", "properties": {}}),
    )
    .await;
    let (s, _, v) = t.put(&lb_path, lb(&t, "Standard", Some("pip-basic"))).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "PublicIPAndLBSkuDoNotMatch"));
    let (s, _, _) = t.put(&lb_path, lb(&t, "Standard", Some("pip-std"))).await;
    assert_eq!(s, 201);
    // In use: the PIP cannot be deleted while the LB references it.
    let (s, _, v) = t
        .call(Method::DELETE, &t.net("publicIPAddresses/pip-std"), NET, None, &[])
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "PublicIPAddressInUse"));
    // The NSG is used by the subnet.
    let (s, _, v) = t
        .call(Method::DELETE, &t.net("networkSecurityGroups/sim-nsg"), NET, None, &[])
        .await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "InUseNetworkSecurityGroupCannotBeDeleted")
    );
    // Embedded backend pool PUT changes the LB.
    let (s, _, pool) = t
        .put(
            &format!("{lb_path}/backendAddressPools/kubernetes-IPv6"),
            json!({"properties": {}}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(pool["id"], format!("{lb_path}/backendAddressPools/kubernetes-IPv6"));
    let (_, got) = t.get(&lb_path, NET).await;
    assert_eq!(got["properties"]["backendAddressPools"].as_array().unwrap().len(), 2);
    // NSG priorities.
    let nsg = t.net("networkSecurityGroups/sim-nsg");
    let rule = |name: &str, prio: i64| json!({"name": name, "properties": {"priority": prio, "direction": "Inbound", "access": "Allow", "protocol": "Tcp"}});
    let (s, _, v) = t
        .put(
            &nsg,
            json!({"location": "eastus", "properties": {"securityRules": [rule("a", 50)]}}),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "SecurityRuleInvalidPriority"));
    let (s, _, v) = t
        .put(
            &nsg,
            json!({"location": "eastus", "properties": {"securityRules": [rule("a", 500), rule("b", 500)]}}),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "SecurityRuleConflict"));
    let (s, _, _) = t
        .put(
            &nsg,
            json!({"location": "eastus", "properties": {"securityRules": [rule("a", 500), rule("b", 501)]}}),
        )
        .await;
    assert_eq!(s, 200);
    // Route limit and name length.
    let routes: Vec<Value> = (0..401).map(|i| json!({"name": format!("r{i}"), "properties": {"addressPrefix": "10.1.0.0/24", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.240.0.4"}})).collect();
    let (s, _, v) = t
        .put(
            &t.net("routeTables/sim-routes"),
            json!({"location": "eastus", "properties": {"routes": routes}}),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "RouteTableRouteLimitReached"));
    let long = "x".repeat(81);
    let (s, _, v) = t
        .put(
            &t.net(&format!("publicIPAddresses/{long}")),
            json!({"location": "eastus"}),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "InvalidResourceName"));
    let (s, _, v) = t
        .put(&t.net("publicIPAddresses/noloc"), json!({"properties": {}}))
        .await;
    assert_eq!((s.as_u16(), code(&v)), (400, "LocationRequired"));
}

#[tokio::test]
async fn throttling_headers_and_429() {
    let t = start(SimOptions {
        throttling: true,
        ..Default::default()
    })
    .await;
    let path = t.net("loadBalancers");
    let (_, h, _) = t.call(Method::GET, &path, NET, None, &[]).await;
    let first: u64 = h["x-ms-ratelimit-remaining-subscription-reads"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, h, _) = t.call(Method::GET, &path, NET, None, &[]).await;
    let second: u64 = h["x-ms-ratelimit-remaining-subscription-reads"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(second < first, "{first} {second}");
    let mut throttled = None;
    for _ in 0..400 {
        let (s, h, v) = t.call(Method::GET, &path, NET, None, &[]).await;
        if s == 429 {
            throttled = Some((h, v));
            break;
        }
    }
    let (h, v) = throttled.expect("the subscription read bucket (250, 25/s) must run out");
    assert!(h.get("retry-after").is_some());
    assert_eq!(code(&v), "TooManyRequests");
    // Compute answers name their policies.
    let (_, h, _) = t
        .call(Method::GET, &t.cmp("virtualMachineScaleSets"), CMP, None, &[])
        .await;
    let res = h
        .get("x-ms-ratelimit-remaining-resource")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        res.contains("Microsoft.Compute/HighCostGetVMScaleSet;") || h.get("retry-after").is_some(),
        "{res}"
    );
}

#[tokio::test]
async fn throttling_retry_after_is_in_simulated_seconds() {
    // ARM answers a throttled call with whole seconds; at 10× one simulated second is 100 ms real, and
    // `retry-after-ms` (read first by Azure SDKs and by us) says so. `retry-after` stays whole seconds.
    let t = start(SimOptions {
        throttling: true,
        clock_speed: 10.0,
        ..Default::default()
    })
    .await;
    let path = t.net("publicIPAddresses/p1");
    let mut throttled = None;
    for i in 0..400 {
        let (s, h, _) = t.call(Method::DELETE, &format!("{path}{i}"), NET, None, &[]).await;
        if s == 429 {
            throttled = Some(h);
            break;
        }
    }
    let h = throttled.expect("the subscription delete bucket (200, 10/s) must run out");
    let ms: u64 = h["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((100..1000).contains(&ms), "retry-after-ms {ms}");
    assert_eq!(h["retry-after"].to_str().unwrap(), "1");
    // As ARM: the 429 says which bucket is empty (the subscription's, here).
    assert_eq!(
        h["x-ms-ratelimit-remaining-subscription-deletes"].to_str().unwrap(),
        "0"
    );
}

#[tokio::test]
async fn faults_runtime_changes_and_accounting() {
    let t = start(SimOptions::default()).await;
    let pip = t.net("publicIPAddresses/p1");
    t.sim.set_faults(vec![FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("publicIPAddresses".into()),
        fault: FaultKind::Status { status: 503 },
        rate: 1.0,
        count: Some(1),
    }]);
    let body = json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}});
    let (s, _, _) = t.put(&pip, body.clone()).await;
    assert_eq!(s, 503);
    let (s, _, _) = t.put(&pip, body.clone()).await;
    assert_eq!(s, 201);
    // A throttle fault: the call log keeps when the request arrived and the Retry-After it was given.
    t.sim.set_faults(vec![FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("publicIPAddresses".into()),
        fault: FaultKind::Throttle { retry_after_secs: 3 },
        rate: 1.0,
        count: Some(1),
    }]);
    let (s, _, _) = t.put(&pip, body.clone()).await;
    assert_eq!(s, 429);
    let throttled = t.sim.calls().into_iter().rfind(|c| c.status == 429).unwrap();
    assert_eq!(throttled.retry_after_ms, Some(3000));
    assert!(throttled.arrived_ms <= throttled.t_ms);
    // Faults set over HTTP: a connection reset.
    let rules = json!([{"method": "GET", "resourceType": "publicIPAddresses", "fault": {"kind": "reset"}, "count": 1}]);
    let r = t
        .http
        .put(format!("{}/_sim/faults", t.sim.url()))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let url = format!("{}{pip}?api-version={NET}", t.sim.url());
    let broken = async { t.http.get(&url).bearer_auth(&t.token).send().await?.text().await };
    assert!(broken.await.is_err(), "a reset must fail the client");
    let (s, _) = t.get(&pip, NET).await;
    assert_eq!(s, 200);
    // Runtime changes.
    let admin = format!("{}/_sim/instances", t.sim.url());
    let added: Value = t
        .http
        .post(&admin)
        .json(&json!({"action": "add", "scaleSet": "k8s-pool1-vmss", "count": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["added"].as_array().unwrap().len(), 2);
    let vms = t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines");
    let (_, list) = t.get(&vms, CMP).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 5);
    assert_eq!(
        list["value"][4]["properties"]["osProfile"]["computerName"],
        "k8s-pool1-vmss000004"
    );
    let id = format!("{vms}/3");
    let r = t
        .http
        .post(&admin)
        .json(&json!({"action": "power", "id": id, "state": "deallocated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, iv) = t.get(&format!("{id}/instanceView"), CMP).await;
    assert_eq!(iv["statuses"][1]["code"], "PowerState/deallocated");
    let r = t
        .http
        .post(&admin)
        .json(&json!({"action": "remove", "id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = t.get(&id, CMP).await;
    assert_eq!(s, 404);
    // Accounting, from Rust and over HTTP.
    assert!(t.sim.arm_calls("PUT") >= 2);
    let calls: Value = t
        .http
        .get(format!("{}/_sim/calls", t.sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counts = calls["counts"].as_object().unwrap();
    assert_eq!(
        counts["Microsoft.Network Microsoft.Network/publicIPAddresses put (write)"], 3,
        "503, 201 and the throttled 429"
    );
    assert!(counts.keys().any(|k| k.starts_with("AAD ")));
    t.http.post(format!("{}/_sim/reset", t.sim.url())).send().await.unwrap();
    assert!(t.sim.calls().is_empty());
    let state: Value = t
        .http
        .get(format!("{}/_sim/state", t.sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state.as_array().unwrap().len() > 10);
}

#[tokio::test]
async fn config_written_for_the_provider() {
    let t = start(SimOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("azure-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("azure.json");
    t.sim.write_config(&path).unwrap();
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cfg["resourceManagerEndpoint"], format!("{}/", t.sim.url()));
    assert_eq!(cfg["vmType"], "vmss");
    // Public api-versions and discovery from resourceManagerEndpoint: the form upstream accepts unmodified
    // (AzureStackCloud would switch it to Azure Stack's api-versions and demand an environment file).
    assert_eq!(cfg["cloud"], "AzurePublicCloud");
    let ca = std::fs::read_to_string(cfg["trustedCACertPath"].as_str().unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        std::fs::read_to_string(path.with_extension("ca.pem")).unwrap(),
        ca,
        "the CA for SSL_CERT_FILE"
    );
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(path.with_extension("environment.json")).unwrap()).unwrap();
    assert_eq!(env["resourceManagerEndpoint"], format!("{}/", t.sim.url()));
    assert!(env["tokenAudience"].as_str().is_some_and(|a| !a.is_empty()), "{env}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn imds_load_balancer_lists_public_frontends_of_the_local_vms_pools() {
    let t = start(SimOptions::default()).await;
    let imds = format!("{}/metadata/loadbalancer?api-version=2020-10-01", t.sim.url());
    let empty: Value = t
        .http
        .get(&imds)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty["loadbalancer"]["publicIpAddresses"], json!([]));
    // A public LB whose pool the local instance (instance 0) joins.
    t.put(&t.net("publicIPAddresses/pip-std"), json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}})).await;
    let (s, _, lbv) = t
        .put(&t.net("loadBalancers/kubernetes"), lb(&t, "Standard", Some("pip-std")))
        .await;
    assert_eq!(s, 201);
    let pool = lbv["properties"]["backendAddressPools"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vm = t.cmp("virtualMachineScaleSets/k8s-pool1-vmss/virtualMachines/0");
    let (_, mut vm0) = t.get(&vm, CMP).await;
    vm0["properties"]["networkProfileConfiguration"]["networkInterfaceConfigurations"][0]["properties"]
        ["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = json!([{"id": pool}]);
    t.call(Method::PUT, &vm, CMP, Some(vm0), &[]).await;
    let doc: Value = t
        .http
        .get(&imds)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = doc["loadbalancer"]["publicIpAddresses"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["privateIpAddress"], "10.240.0.4");
    assert!(list[0]["frontendIpAddress"].as_str().unwrap().starts_with("20."));
}

#[tokio::test]
async fn disks_capacity_changes_and_delete_instances() {
    let t = start(SimOptions::default()).await;
    let disk = t.cmp("disks/data-1");
    let (s, _, _) = t
        .call(
            Method::PUT,
            &disk,
            "2024-03-02",
            Some(json!({"location": "eastus", "properties": {"diskSizeGB": 8}})),
            &[],
        )
        .await;
    assert!(s.is_success());
    // Attach to a VM (PATCH of its data disks): the disk's managedBy follows.
    let vm = t.cmp("virtualMachines/k8s-pool2-0");
    let attach = json!({"properties": {"storageProfile": {"dataDisks": [{"lun": 0, "createOption": "Attach", "managedDisk": {"id": disk}}]}}});
    let (s, _, _) = t.call(Method::PATCH, &vm, CMP, Some(attach.clone()), &[]).await;
    assert!(s.is_success(), "{s}");
    let (_, d) = t.get(&disk, "2024-03-02").await;
    assert!(d["managedBy"]
        .as_str()
        .unwrap()
        .ends_with("/virtualMachines/k8s-pool2-0"));
    // Another VM cannot take it; a duplicate LUN or a missing disk is refused.
    let other = t.cmp("virtualMachines/k8s-pool2-1");
    let (s, _, v) = t.call(Method::PATCH, &other, CMP, Some(attach), &[]).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "OperationNotAllowed"));
    let dup = json!({"properties": {"storageProfile": {"dataDisks": [{"lun": 1, "managedDisk": {"id": disk}}, {"lun": 1, "managedDisk": {"id": t.cmp("disks/x")}}]}}});
    let (s, _, v) = t.call(Method::PATCH, &vm, CMP, Some(dup), &[]).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "InvalidParameter"));
    // Detach (an empty list) releases it.
    let (s, _, _) = t
        .call(
            Method::PATCH,
            &vm,
            CMP,
            Some(json!({"properties": {"storageProfile": {"dataDisks": []}}})),
            &[],
        )
        .await;
    assert!(s.is_success());
    let (_, d) = t.get(&disk, "2024-03-02").await;
    assert!(d.get("managedBy").is_none());

    // Capacity 3 → 5 creates instances 3 and 4 (computer names prefix + base 36); 5 → 4 removes the highest.
    let ss = t.cmp("virtualMachineScaleSets/k8s-pool1-vmss");
    let (s, _, _) = t
        .call(Method::PATCH, &ss, CMP, Some(json!({"sku": {"capacity": 5}})), &[])
        .await;
    assert!(s.is_success());
    let (_, list) = t.get(&format!("{ss}/virtualMachines"), CMP).await;
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.pointer("/properties/osProfile/computerName").and_then(Value::as_str))
        .collect();
    assert_eq!(names.len(), 5);
    assert!(names.contains(&"k8s-pool1-vmss000004"), "{names:?}");
    let (_, model) = t.get(&ss, CMP).await;
    assert!(
        model["properties"]["virtualMachineProfile"]["networkProfile"].is_object(),
        "a capacity PATCH keeps the model"
    );
    t.call(Method::PATCH, &ss, CMP, Some(json!({"sku": {"capacity": 4}})), &[])
        .await;
    let (s, _) = t.get(&format!("{ss}/virtualMachines/4"), CMP).await;
    assert_eq!(s.as_u16(), 404);
    // deleteInstances: the given ones go, the capacity follows.
    let (s, _, _) = t
        .call(
            Method::POST,
            &format!("{ss}/delete"),
            CMP,
            Some(json!({"instanceIds": ["0", "2"]})),
            &[],
        )
        .await;
    assert_eq!(s.as_u16(), 202);
    let (_, model) = t.get(&ss, CMP).await;
    assert_eq!(model["sku"]["capacity"], 2);
    let (s, _) = t.get(&format!("{ss}/virtualMachines/0"), CMP).await;
    assert_eq!(s.as_u16(), 404);
}

/// One public IP serves one frontend of a load balancer: a second frontend on it is refused, as ARM does
/// (Services that share an IP must share the frontend).
#[tokio::test]
async fn one_public_ip_serves_one_frontend() {
    let t = start(SimOptions::default()).await;
    let pip = t.net("publicIPAddresses/pip-one");
    let pip_body = json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}});
    assert!(t.put(&pip, pip_body).await.0.is_success());
    let mut body = lb(&t, "Standard", Some("pip-one"));
    let second = json!({"name": "fe2", "properties": {"publicIPAddress": {"id": pip}}});
    body["properties"]["frontendIPConfigurations"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let (s, _, v) = t.put(&t.net("loadBalancers/kubernetes"), body).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "PublicIPAddressInUse"), "{v}");
}

#[tokio::test]
async fn a_subscription_in_another_tenant_needs_its_tokens() {
    let t = start(SimOptions::default()).await;
    let (net_sub, net_tenant) = (
        "33333333-0000-0000-0000-000000000003",
        "00000000-0000-0000-0000-0000000000b2",
    );
    assert_eq!(
        sign_in(&t, net_tenant).await.0,
        StatusCode::BAD_REQUEST,
        "unknown tenant"
    );
    t.sim.set_subscription_tenant(net_sub, net_tenant);
    let (status, net_token) = sign_in(&t, net_tenant).await;
    assert_eq!(status, StatusCode::OK);
    let rg = t.sim.cluster().resource_group.clone();
    let net_rg = format!("/subscriptions/{net_sub}/resourceGroups/{rg}");
    t.sim.with_store(|s, _| {
        s.put(
            &net_rg,
            "Microsoft.Resources/resourceGroups",
            json!({"location": "eastus"}),
            0,
        );
    });
    let lb_path = format!("{net_rg}/providers/Microsoft.Network/loadBalancers/lb");
    // The cluster tenant's token does not open the other tenant's subscription.
    let (s, v) = t.get(&lb_path, NET).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationTokenTenant"),
        "{v}"
    );
    // Its own token does; the LB (with a pool) is created there, its LRO polled with the same token.
    let auth = format!("Bearer {net_token}");
    let lb = json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"backendAddressPools": [{"name": "pool"}]}});
    let r = t
        .http
        .put(format!("{}{lb_path}?api-version={NET}", t.sim.url()))
        .bearer_auth(&net_token)
        .json(&lb)
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    assert!(s.is_success(), "{s} {}", r.text().await.unwrap());
    if let Some(op) = h.get("azure-asyncoperation").and_then(|x| x.to_str().ok()) {
        assert!(
            op.contains(net_sub),
            "the operation is under the LB's subscription: {op}"
        );
    }
    // A NIC of the cluster tenant joining that pool: refused without the auxiliary token, accepted with it.
    let pool_id = format!("{lb_path}/backendAddressPools/pool");
    let nic = json!({"location": "eastus", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
        "primary": true, "subnet": {"id": t.net(&format!("virtualNetworks/{}/subnets/{}", t.sim.cluster().vnet, t.sim.cluster().subnet))}, "loadBalancerBackendAddressPools": [{"id": pool_id}]}}]}});
    let nic_path = t.net("networkInterfaces/nic-x");
    let (s, _, v) = t.call(Method::PUT, &nic_path, NET, Some(nic.clone()), &[]).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "LinkedAuthorizationFailed"),
        "{v}"
    );
    let (s, _, v) = t
        .call(
            Method::PUT,
            &nic_path,
            NET,
            Some(nic),
            &[("x-ms-authorization-auxiliary", auth.as_str())],
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
}

/// `settled` waits for the requests that arrived before it to be answered and logged, and no longer.
#[tokio::test]
async fn settled_waits_for_requests_in_flight_to_be_logged() {
    let t = start(SimOptions {
        latency: Duration::from_millis(2000),
        ..Default::default()
    })
    .await;
    let path = t.net("publicIPAddresses");
    let before = t.sim.calls().len();
    let t = std::sync::Arc::new(t);
    let req = {
        let t = t.clone();
        tokio::spawn(async move { t.get(&path, NET).await })
    };
    // The request is inside the simulator (its latency) and not logged yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.sim.calls().len(), before, "not logged while in flight");
    let started = std::time::Instant::now();
    t.sim.settled(Duration::from_secs(5)).await;
    assert_eq!(t.sim.calls().len(), before + 1, "logged once settled");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(req.await.unwrap().0, StatusCode::OK);
    // Nothing in flight: returns at once.
    let started = std::time::Instant::now();
    t.sim.settled(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_millis(100));
}
