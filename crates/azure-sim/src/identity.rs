//! AAD token endpoint, IMDS (instance metadata, load balancer metadata, managed-identity tokens) and the
//! `/metadata/endpoints` discovery document.

use crate::arm::{call, record};
use crate::store::{prop_array, str_at};
use crate::throttle::Kind;
use crate::{lock, Shared};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The token audience the sim advertises and accepts.
pub const AUDIENCE: &str = "https://management.core.windows.net/";

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
}

fn issue_token(s: &Shared, tenant: &str) -> (String, u64) {
    let token = format!("sim-{:032x}", rand::random::<u128>());
    let ttl = s.opts.token_ttl.as_millis() as u64;
    // Tokens expire on the simulated clock; report the lifetime in seconds.
    lock(&s.tokens).insert(token.clone(), (s.clock.now_ms() + ttl, tenant.to_string()));
    (token, s.opts.token_ttl.as_secs())
}

/// `GET /metadata/endpoints`: an array of environments (clients pick theirs by `name` or `resourceManager`),
/// the form upstream's client parses for every api-version.
pub(crate) async fn endpoints(State(s): State<Arc<Shared>>) -> Response {
    record(
        &s,
        call(&s, "GET", "Metadata", "metadata/endpoints", "metadata", Kind::Read, 200),
    );
    let base = format!("{}/", s.base_url);
    let env = json!({
        "name": "AzureSim",
        "resourceManager": base,
        "portal": base,
        "galleryEndpoint": base,
        "graphEndpoint": base,
        "authentication": {"loginEndpoint": base, "audiences": [AUDIENCE], "tenant": "common", "identityProvider": "AAD"},
        "suffixes": {"storage": "core.windows.net", "keyVaultDns": "vault.azure.net"},
    });
    json_ok(json!([env]))
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration` and `GET /adfs/.well-known/openid-configuration`:
/// the discovery documents MSAL reads before its first token request.
pub(crate) async fn openid_configuration(State(s): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let (issuer, token, authorize) = if path.starts_with("/adfs/") {
        let base = format!("{}/adfs", s.base_url);
        (
            base.clone(),
            format!("{base}/oauth2/token"),
            format!("{base}/oauth2/authorize"),
        )
    } else {
        let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("common");
        let base = format!("{}/{tenant}", s.base_url);
        (
            format!("{base}/v2.0"),
            format!("{base}/oauth2/v2.0/token"),
            format!("{base}/oauth2/v2.0/authorize"),
        )
    };
    json_ok(json!({
        "issuer": issuer,
        "token_endpoint": token,
        "authorization_endpoint": authorize,
        "jwks_uri": format!("{}/discovery/v2.0/keys", s.base_url),
        "response_types_supported": ["code", "id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": "NA",
    }))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Compute`: the provider's resource types with the region's
/// availability zones (`zoneMappings`), which clients read to give new resources the region's zones.
pub(crate) async fn compute_provider(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(sub): axum::extract::Path<String>,
) -> Response {
    record(
        &s,
        call(&s, "GET", "Microsoft.Compute", "providers", "get", Kind::Read, 200),
    );
    let location = s.cluster.location.clone();
    let zones = s.opts.region_zones.clone();
    let types: Vec<Value> = [
        "virtualMachines",
        "virtualMachineScaleSets",
        "disks",
        "availabilitySets",
    ]
    .iter()
    .map(|t| {
        json!({
            "resourceType": t,
            "locations": [location],
            "zoneMappings": [{"location": location, "zones": zones}],
            "apiVersions": ["2024-07-01"],
        })
    })
    .collect();
    json_ok(json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.Compute"),
        "namespace": "Microsoft.Compute",
        "registrationState": "Registered",
        "resourceTypes": types,
    }))
}

/// `POST /{tenant}/oauth2/v2.0/token` (and the v1 path): client secret or client assertion.
pub(crate) async fn aad_token(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let resp = aad_answer(&s, &tenant, &form);
    record(
        &s,
        call(
            &s,
            "POST",
            "AAD",
            "oauth2/token",
            "token",
            Kind::Write,
            resp.status().as_u16(),
        ),
    );
    resp
}

fn aad_answer(s: &Shared, tenant: &str, form: &HashMap<String, String>) -> Response {
    let other_tenant = lock(&s.subscription_tenants).values().any(|t| t == tenant);
    if tenant != s.opts.tenant_id && tenant != "adfs" && !other_tenant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: only client_credentials is supported.",
        );
    }
    if form.get("client_id") != Some(&s.opts.client_id) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application with the given identifier was not found in the directory.",
        );
    }
    let scope_ok = form.get("scope").is_some_and(|sc| sc.starts_with(AUDIENCE))
        || form.get("resource").is_some_and(|r| r.starts_with(AUDIENCE));
    if !scope_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided scope is not valid.",
        );
    }
    let authenticated = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), _) => *secret == s.opts.client_secret,
        (None, Some(assertion)) => {
            form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && assertion.split('.').count() >= 3
        }
        _ => false,
    };
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let tenant = if tenant == "adfs" {
        s.opts.tenant_id.as_str()
    } else {
        tenant
    };
    let (token, secs) = issue_token(s, tenant);
    json_ok(json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token}))
}

fn metadata_header_ok(headers: &HeaderMap) -> bool {
    headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn imds_reject() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Required metadata header not specified",
    )
}

/// `GET /metadata/identity/oauth2/token` (IMDS managed identity).
pub(crate) async fn imds_token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let resp = if !metadata_header_ok(&headers) {
        imds_reject()
    } else if !q
        .get("resource")
        .is_some_and(|r| r.starts_with(AUDIENCE.trim_end_matches('/')))
    {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            "AADSTS500011: The resource principal was not found.",
        )
    } else {
        let (token, secs) = issue_token(&s, &s.opts.tenant_id);
        let expires_on = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + secs;
        let identity = q
            .get("client_id")
            .or_else(|| q.get("msi_res_id"))
            .or_else(|| q.get("object_id"))
            .cloned()
            .unwrap_or_else(|| "system-assigned".into());
        json_ok(json!({
            "access_token": token, "expires_in": secs.to_string(), "expires_on": expires_on.to_string(),
            "resource": q.get("resource"), "token_type": "Bearer", "client_id": identity,
        }))
    };
    record(
        &s,
        call(
            &s,
            "GET",
            "IMDS",
            "identity/oauth2/token",
            "token",
            Kind::Read,
            resp.status().as_u16(),
        ),
    );
    resp
}

/// `GET /metadata/instance` for the simulator's "local" VM.
pub(crate) async fn imds_instance(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let resp = if !metadata_header_ok(&headers) {
        imds_reject()
    } else {
        match instance_document(&s) {
            Some(v) => json_ok(v),
            None => oauth_error(StatusCode::NOT_FOUND, "not_found", "azure-sim has no VM to describe"),
        }
    };
    record(
        &s,
        call(
            &s,
            "GET",
            "IMDS",
            "metadata/instance",
            "metadata",
            Kind::Read,
            resp.status().as_u16(),
        ),
    );
    resp
}

fn instance_document(s: &Shared) -> Option<Value> {
    let vm_id = lock(&s.imds_vm).clone()?;
    let store = lock(&s.store);
    let vm = store.get(&vm_id)?.body.clone();
    let lower = vm_id.to_ascii_lowercase();
    let (name, vmss) = match lower.find("/virtualmachinescalesets/") {
        Some(i) => {
            let rest = &vm_id[i + "/virtualMachineScaleSets/".len()..];
            let ss = rest.split('/').next().unwrap_or_default().to_string();
            let inst = vm.get("instanceId").and_then(Value::as_str).unwrap_or_default();
            (format!("{ss}_{inst}"), ss)
        }
        None => (
            vm.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            String::new(),
        ),
    };
    let mut interfaces = Vec::new();
    for nic_id in crate::store::nic_ids(&vm) {
        let Some(nic) = store.get(&nic_id) else { continue };
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut subnets = Vec::new();
        for ipc in prop_array(&nic.body, "ipConfigurations") {
            if str_at(ipc, &["properties", "privateIPAddressVersion"]) == Some("IPv6") {
                let private = str_at(ipc, &["properties", "privateIPAddress"]).unwrap_or_default();
                v6.push(json!({"privateIpAddress": private, "publicIpAddress": ""}));
                continue;
            }
            let private = str_at(ipc, &["properties", "privateIPAddress"]).unwrap_or_default();
            let public = str_at(ipc, &["properties", "publicIPAddress", "id"])
                .and_then(|pid| store.get(pid))
                .and_then(|p| str_at(&p.body, &["properties", "ipAddress"]))
                .unwrap_or_default();
            v4.push(json!({"privateIpAddress": private, "publicIpAddress": public}));
            if let Some(prefix) =
                str_at(ipc, &["properties", "subnet", "id"]).and_then(|sid| crate::rules::subnet_prefix(&store, sid))
            {
                let (addr, len) = prefix.split_once('/').unwrap_or((&prefix, "24"));
                subnets.push(json!({"address": addr, "prefix": len}));
            }
        }
        interfaces.push(json!({"ipv4": {"ipAddress": v4, "subnet": subnets}, "ipv6": {"ipAddress": v6}, "macAddress": "000D3A000000"}));
    }
    let rg = vm_id.split('/').nth(4).unwrap_or_default().to_string();
    let size = str_at(&vm, &["sku", "name"])
        .or_else(|| str_at(&vm, &["properties", "hardwareProfile", "vmSize"]))
        .unwrap_or_default();
    let fd = vm
        .get("properties")
        .and_then(|p| p.get("instanceView"))
        .and_then(|i| i.get("platformFaultDomain"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let zone = vm
        .get("zones")
        .and_then(Value::as_array)
        .and_then(|z| z.first())
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some(json!({
        "compute": {
            "name": name, "resourceId": vm_id, "location": s.cluster.location, "vmSize": size, "zone": zone,
            "platformFaultDomain": fd.to_string(), "subscriptionId": s.cluster.subscription,
            "resourceGroupName": rg, "vmScaleSetName": vmss, "osType": "Linux",
            "osProfile": {"computerName": str_at(&vm, &["properties", "osProfile", "computerName"]).unwrap_or_default()},
        },
        "network": {"interface": interfaces},
    }))
}

/// `GET /metadata/loadbalancer`: for each public frontend of a load balancer whose backend pool holds the
/// local VM's NIC IP configuration, the frontend address and the VM's private address.
pub(crate) async fn imds_loadbalancer(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let resp = if !metadata_header_ok(&headers) {
        imds_reject()
    } else {
        json_ok(
            json!({"loadbalancer": {"publicIpAddresses": public_frontends(&s), "inboundRules": [], "outboundRules": []}}),
        )
    };
    record(
        &s,
        call(
            &s,
            "GET",
            "IMDS",
            "metadata/loadbalancer",
            "metadata",
            Kind::Read,
            resp.status().as_u16(),
        ),
    );
    resp
}

fn public_frontends(s: &Shared) -> Vec<Value> {
    let Some(vm_id) = lock(&s.imds_vm).clone() else {
        return Vec::new();
    };
    let store = lock(&s.store);
    let Some(vm) = store.get(&vm_id).map(|r| r.body.clone()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for nic_id in crate::store::nic_ids(&vm) {
        let Some(nic) = store.get(&nic_id) else { continue };
        for ipc in prop_array(&nic.body, "ipConfigurations") {
            let private = str_at(ipc, &["properties", "privateIPAddress"])
                .unwrap_or_default()
                .to_string();
            let pools = ipc
                .pointer("/properties/loadBalancerBackendAddressPools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for pool in pools {
                let Some(pool_id) = pool.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let lower = pool_id.to_ascii_lowercase();
                let Some(i) = lower.find("/backendaddresspools/") else {
                    continue;
                };
                let Some(lb) = store.get(&pool_id[..i]) else { continue };
                for fe in prop_array(&lb.body, "frontendIPConfigurations") {
                    let addr = str_at(fe, &["properties", "publicIPAddress", "id"])
                        .and_then(|pid| store.get(pid))
                        .and_then(|p| str_at(&p.body, &["properties", "ipAddress"]).map(str::to_string));
                    if let Some(addr) = addr {
                        out.push(json!({"frontendIpAddress": addr, "privateIpAddress": private}));
                    }
                }
            }
        }
    }
    out
}
