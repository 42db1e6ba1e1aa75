//! The ARM endpoints: `/subscriptions/...` at the real URL shapes, with bearer-token checks, ETags,
//! long-running operations, integrity rules, paging, throttling, faults and accounting.

use crate::accounting::CallRecord;
use crate::faults::FaultKind;
use crate::store::{embedded_property, props_mut, Store};
use crate::throttle::Kind;
use crate::{admin, identity, lock, rules, BusyAnswer, Operation, Shared};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metadata/endpoints", get(identity::endpoints))
        .route("/metadata/instance", get(identity::imds_instance))
        .route("/metadata/loadbalancer", get(identity::imds_loadbalancer))
        .route("/metadata/identity/oauth2/token", get(identity::imds_token))
        .route("/{tenant}/oauth2/v2.0/token", post(identity::aad_token))
        .route("/{tenant}/oauth2/token", post(identity::aad_token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(identity::openid_configuration),
        )
        .route(
            "/adfs/.well-known/openid-configuration",
            get(identity::openid_configuration),
        )
        .route(
            "/subscriptions/{sub}/providers/Microsoft.Compute",
            get(identity::compute_provider),
        )
        .route("/_sim/calls", get(admin::calls))
        .route("/_sim/reset", post(admin::reset))
        .route(
            "/_sim/faults",
            get(admin::get_faults)
                .put(admin::put_faults)
                .delete(admin::delete_faults),
        )
        .route("/_sim/state", get(admin::state))
        .route("/_sim/instances", post(admin::change_instances))
        .fallback(handle)
        // axum's default (2 MiB) refused a 5,000-address nodeIP pool with 500 frontends (≈ 2.3 MB). ARM's own
        // request limit is not in our references; 4 MiB is the common Azure front-end limit (an assumption).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// The largest request body azure-sim accepts (413 beyond).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// An ARM error answer.
pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// A parsed ARM path.
#[derive(Debug, Clone)]
struct Target {
    sub: String,
    rg: String,
    ns: String,
    pairs: Vec<(String, String)>,
    collection: Option<String>,
}

impl Target {
    fn rg_id(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.sub, self.rg)
    }

    fn id_of(&self, pairs: &[(String, String)]) -> String {
        let mut s = format!("{}/providers/{}", self.rg_id(), self.ns);
        for (t, n) in pairs {
            s.push('/');
            s.push_str(t);
            s.push('/');
            s.push_str(n);
        }
        s
    }

    fn id(&self) -> String {
        self.id_of(&self.pairs)
    }

    fn collection_path(&self) -> String {
        format!("{}/{}", self.id(), self.collection.as_deref().unwrap_or_default())
    }

    /// `Microsoft.Network/loadBalancers/backendAddressPools`, including a listed collection.
    fn resource_type(&self) -> String {
        let mut s = self.ns.clone();
        for (t, _) in &self.pairs {
            s.push('/');
            s.push_str(t);
        }
        if let Some(c) = &self.collection {
            if !c.eq_ignore_ascii_case("instanceView") {
                s.push('/');
                s.push_str(c);
            }
        }
        s
    }

    /// The ARM `type` of the stored resource.
    fn arm_type(&self) -> String {
        let types: Vec<&str> = self.pairs.iter().map(|(t, _)| t.as_str()).collect();
        if types
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case("networkInterfaces"))
        {
            return "Microsoft.Network/networkInterfaces".into();
        }
        if types
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case("publicIPAddresses"))
        {
            return "Microsoft.Network/publicIPAddresses".into();
        }
        format!("{}/{}", self.ns, types.join("/"))
    }

    fn last_type(&self) -> &str {
        self.pairs.last().map(|(t, _)| t.as_str()).unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.pairs.last().map(|(_, n)| n.as_str()).unwrap_or_default()
    }

    fn is_vm_like(&self) -> bool {
        let t = self.resource_type().to_ascii_lowercase();
        t.ends_with("/virtualmachines")
    }
}

enum Parsed {
    Resource(Target),
    Operation {
        sub: String,
        ns: String,
        kind: String,
        id: String,
    },
    ResourceGroup {
        sub: String,
        rg: String,
    },
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() < 2 || !segs[0].eq_ignore_ascii_case("subscriptions") {
        return None;
    }
    let sub = segs[1].to_string();
    if segs.len() == 8 && segs[2].eq_ignore_ascii_case("providers") && segs[4].eq_ignore_ascii_case("locations") {
        return Some(Parsed::Operation {
            sub: sub.clone(),
            ns: segs[3].to_string(),
            kind: segs[6].to_ascii_lowercase(),
            id: segs[7].to_string(),
        });
    }
    if segs.len() < 4 || !segs[2].eq_ignore_ascii_case("resourceGroups") {
        return None;
    }
    let rg = segs[3].to_string();
    if segs.len() == 4 {
        return Some(Parsed::ResourceGroup { sub, rg });
    }
    if segs.len() < 7 || !segs[4].eq_ignore_ascii_case("providers") {
        return None;
    }
    let ns = segs[5].to_string();
    let rest = &segs[6..];
    let mut pairs = Vec::new();
    let mut i = 0;
    while i + 1 < rest.len() {
        pairs.push((rest[i].to_string(), rest[i + 1].to_string()));
        i += 2;
    }
    let collection = (i < rest.len()).then(|| rest[i].to_string());
    Some(Parsed::Resource(Target {
        sub,
        rg,
        ns,
        pairs,
        collection,
    }))
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect()
}

/// The tenant of a valid (known, unexpired) bearer token.
fn token_tenant(s: &Shared, value: &str) -> Option<String> {
    let token = value
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| value.trim().strip_prefix("bearer "))?;
    let now = s.clock.now_ms();
    lock(&s.tokens)
        .get(token.trim())
        .filter(|(exp, _)| *exp > now)
        .map(|(_, t)| t.clone())
}

/// The tenant a subscription belongs to.
fn tenant_of(s: &Shared, subscription: &str) -> String {
    lock(&s.subscription_tenants)
        .get(&subscription.to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| s.opts.tenant_id.clone())
}

/// ARM's authentication: a valid token from the tenant of the URL's subscription; on writes, a valid token
/// of every other tenant whose subscriptions the body links, in `x-ms-authorization-auxiliary` (up to three
/// `Bearer` tokens separated by `;`).
pub(crate) fn authenticate(
    s: &Shared,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    write: bool,
) -> Result<(), Box<Response>> {
    let tenant = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| token_tenant(s, v))
        .ok_or_else(|| {
            Box::new(arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is missing, invalid or expired: get one from the AAD token endpoint or IMDS.",
            ))
        })?;
    let segs: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
    if segs.first().is_some_and(|x| x.eq_ignore_ascii_case("subscriptions")) {
        let sub = segs.get(1).copied().unwrap_or_default();
        let owner = tenant_of(s, sub);
        if owner != tenant {
            return Err(Box::new(arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenTenant",
                &format!("The access token is from the wrong issuer '{tenant}'. It must match the tenant '{owner}' associated with this subscription '{sub}'."),
            )));
        }
    }
    if !write || lock(&s.subscription_tenants).is_empty() {
        return Ok(());
    }
    let auxiliary: Vec<String> = headers
        .get("x-ms-authorization-auxiliary")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').filter_map(|t| token_tenant(s, t)).collect())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    for linked in text.split("/subscriptions/").skip(1) {
        let sub = linked.split(['/', '"']).next().unwrap_or_default();
        let owner = tenant_of(s, sub);
        if owner != tenant && !auxiliary.contains(&owner) {
            return Err(Box::new(arm_error(
                StatusCode::FORBIDDEN,
                "LinkedAuthorizationFailed",
                &format!("The client has permission to perform this action, however the current tenant '{tenant}' is not authorized to access linked subscription '{sub}' (send a token of tenant '{owner}' in x-ms-authorization-auxiliary)."),
            )));
        }
    }
    Ok(())
}

/// Adds a call to the log.
pub(crate) fn record(s: &Shared, c: CallRecord) {
    lock(&s.calls).record(c);
}

/// A call answered now (arrived now, no Retry-After).
pub(crate) fn call(
    s: &Shared,
    method: &str,
    provider: &str,
    resource_type: &str,
    operation: &str,
    kind: Kind,
    status: u16,
) -> CallRecord {
    let now = s.clock.now_ms();
    CallRecord {
        t_ms: now,
        arrived_ms: now,
        retry_after_ms: None,
        method: method.to_string(),
        provider: provider.to_string(),
        resource_type: resource_type.to_string(),
        operation: operation.to_string(),
        access: if kind == Kind::Read { "read" } else { "write" }.to_string(),
        status,
        path: String::new(),
    }
}

fn retry_after_secs(s: &Shared, sim_ms: u64) -> u64 {
    s.clock.to_real(Duration::from_millis(sim_ms)).as_secs_f64().ceil() as u64
}

/// `Retry-After` (whole seconds) and `retry-after-ms` (Azure SDKs read it first) for a wait of at least
/// `min_secs` simulated seconds (ARM's throttling answers whole seconds). With a sped-up clock, whole real
/// seconds alone would stretch every short wait to one real second: ten simulated seconds at 10×.
fn set_retry_after(s: &Shared, r: &mut Response, sim_ms: u64, min_secs: u64) {
    let sim_ms = sim_ms.max(min_secs.saturating_mul(1000));
    let secs = retry_after_secs(s, sim_ms);
    let ms = s.clock.to_real(Duration::from_millis(sim_ms)).as_millis();
    for (name, v) in [("retry-after", secs.to_string()), ("retry-after-ms", ms.to_string())] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(name, v);
        }
    }
}

async fn handle(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let _in_flight = crate::InFlight::enter(&s);
    let arrived_ms = s.clock.now_ms();
    if !s.opts.latency.is_zero() {
        tokio::time::sleep(s.opts.latency).await;
    }
    let path = uri.path().to_string();
    let q = query_map(&uri);
    let kind = match method {
        Method::GET | Method::HEAD => Kind::Read,
        Method::DELETE => Kind::Delete,
        _ => Kind::Write,
    };
    let parsed = parse_path(&path);
    let (provider, rtype, op) = match &parsed {
        Some(Parsed::Resource(t)) => {
            let op = match (&method, &t.collection) {
                (&Method::GET, Some(c)) if !c.eq_ignore_ascii_case("instanceView") => "list",
                (&Method::GET, _) => "get",
                (&Method::PUT, _) => "put",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, _) => "delete",
                _ => "action",
            };
            (t.ns.clone(), t.resource_type(), op)
        }
        Some(Parsed::Operation { ns, .. }) => (ns.clone(), format!("{ns}/operations"), "poll"),
        Some(Parsed::ResourceGroup { .. }) => ("Microsoft.Resources".into(), "resourceGroups".into(), "get"),
        None => ("ARM".into(), path.clone(), "unknown"),
    };
    let finish = |resp: Response| {
        let mut c = call(&s, method.as_str(), &provider, &rtype, op, kind, resp.status().as_u16());
        c.arrived_ms = arrived_ms;
        c.path = path.clone();
        // Retry-After is in real time; the log is in simulated time.
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()?.parse::<f64>().ok());
        c.retry_after_ms = header("retry-after-ms")
            .or_else(|| header("retry-after").map(|secs| secs * 1000.0))
            .map(|real_ms| (real_ms * s.clock.speed()) as u64);
        record(&s, c);
        resp
    };
    if let Err(refused) = authenticate(&s, &headers, &path, &body, kind != Kind::Read) {
        return finish(*refused);
    }
    let Some(parsed) = parsed else {
        return finish(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidRequestUri",
            &format!("No route for {path}"),
        ));
    };
    if !q.contains_key("api-version") {
        return finish(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    }
    let fault = lock(&s.faults).check(method.as_str(), &rtype);
    if let Some(f) = fault {
        return finish(inject(&s, f).await);
    }
    let resource_id = match &parsed {
        Parsed::Resource(t) => t.id(),
        _ => String::new(),
    };
    let throttled = lock(&s.throttle).charge(s.clock.now_ms(), &provider, &rtype, op, kind, &resource_id);
    let rl_headers = match throttled {
        Ok(h) => h,
        Err(t) => {
            let mut r = arm_error(StatusCode::TOO_MANY_REQUESTS, t.code, &t.message);
            set_retry_after(&s, &mut r, t.wait_ms, 1);
            insert_headers(&mut r, &t.headers);
            return finish(r);
        }
    };
    let mut resp = match parsed {
        Parsed::Operation { sub, ns, kind, id } => poll(&s, &sub, &ns, &kind, &id),
        Parsed::ResourceGroup { sub, rg } => {
            let id = format!("/subscriptions/{sub}/resourceGroups/{rg}");
            match lock(&s.store).get(&id) {
                Some(r) => json_response(StatusCode::OK, &r.body),
                None => arm_error(
                    StatusCode::NOT_FOUND,
                    "ResourceGroupNotFound",
                    &format!("Resource group '{rg}' could not be found."),
                ),
            }
        }
        Parsed::Resource(t) => {
            let body = body.to_vec();
            dispatch(&s, &method, &t, &q, &headers, &body)
        }
    };
    insert_headers(&mut resp, &rl_headers);
    finish(resp)
}

fn insert_headers(r: &mut Response, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
}

async fn inject(s: &Shared, f: FaultKind) -> Response {
    match f {
        FaultKind::Status { status } => arm_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "InternalServerError",
            "azure-sim injected fault",
        ),
        FaultKind::Throttle { retry_after_secs } => {
            let mut r = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "azure-sim injected throttling",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        FaultKind::Timeout => {
            tokio::time::sleep(s.opts.hang).await;
            arm_error(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "azure-sim injected timeout",
            )
        }
        FaultKind::Reset => {
            // Promise more body than is sent: the connection breaks mid-answer.
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", "1048576")
                .body(Body::from("{"))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

fn poll(s: &Shared, sub: &str, ns: &str, kind: &str, id: &str) -> Response {
    let Some(op) = lock(&s.ops).get(id).cloned() else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            &format!("Operation {id} not found."),
        );
    };
    let now = s.clock.now_ms();
    let done = now >= op.done_at_ms;
    let remaining = op.done_at_ms.saturating_sub(now);
    if kind == "operationresults" {
        if done {
            return StatusCode::OK.into_response();
        }
        let mut r = StatusCode::ACCEPTED.into_response();
        let url = format!(
            "{}/subscriptions/{sub}/providers/{ns}/locations/{}/operationResults/{id}",
            s.base_url, s.cluster.location
        );
        if let Ok(v) = HeaderValue::from_str(&url) {
            r.headers_mut().insert("location", v);
        }
        set_retry_after(s, &mut r, remaining, 0);
        return r;
    }
    let status = if done { "Succeeded" } else { "InProgress" };
    let mut r = json_response(StatusCode::OK, &json!({"name": id, "status": status}));
    if !done {
        set_retry_after(s, &mut r, remaining, 0);
    }
    r
}

fn not_found(t: &Target) -> Response {
    let types: Vec<&str> = t.pairs.iter().map(|(ty, _)| ty.as_str()).collect();
    let names: Vec<&str> = t.pairs.iter().map(|(_, n)| n.as_str()).collect();
    let code = if t.pairs.len() > 1 {
        "NotFound"
    } else {
        "ResourceNotFound"
    };
    arm_error(
        StatusCode::NOT_FOUND,
        code,
        &format!(
            "The Resource '{}/{}/{}' under resource group '{}' was not found.",
            t.ns,
            types.join("/"),
            names.join("/"),
            t.rg
        ),
    )
}

fn dispatch(
    s: &Shared,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut store = lock(&s.store);
    // The cluster's subscription, and any other that holds a resource group (a network subscription set up
    // by a scenario or a test), exists.
    let known = t.sub.eq_ignore_ascii_case(&s.cluster.subscription)
        || !store
            .under(&format!("/subscriptions/{}/resourceGroups/", t.sub))
            .is_empty();
    if !known {
        return arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{}' could not be found.", t.sub),
        );
    }
    if store.get(&t.rg_id()).is_none() {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{}' could not be found.", t.rg),
        );
    }
    let now = s.clock.now_ms();
    match *method {
        Method::GET => get_or_list(s, &mut store, t, q, now),
        Method::PUT | Method::PATCH => {
            let parsed: Value = match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        "The request content is not a JSON object.",
                    )
                }
            };
            write(s, &mut store, t, headers, parsed, *method == Method::PATCH, now)
        }
        Method::DELETE => delete(s, &mut store, t, now),
        Method::POST => action(s, &mut store, t, body, now),
        _ => arm_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedOperation",
            &format!("azure-sim does not implement {} on {}", method, t.resource_type()),
        ),
    }
}

fn settle(store: &mut Store, id: &str, now: u64) {
    if let Some(r) = store.get_mut(id) {
        if r.busy_until_ms <= now {
            if let Some(p) = props_mut(&mut r.body) {
                let st = p.get("provisioningState").and_then(Value::as_str).unwrap_or_default();
                if st == "Updating" || st == "Creating" {
                    p.insert("provisioningState".into(), json!("Succeeded"));
                }
            }
        }
    }
}

/// A stored body as ARM serves it: with its read-only back-references filled in.
fn served(store: &Store, mut body: Value) -> Value {
    crate::backrefs::fill(store, &mut body);
    body
}

fn shape(mut body: Value, vm_like: bool, expand: bool) -> Value {
    if vm_like && !expand {
        if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("instanceView");
        }
    }
    body
}

fn get_or_list(s: &Shared, store: &mut Store, t: &Target, q: &HashMap<String, String>, now: u64) -> Response {
    let expand = q.get("$expand").is_some_and(|v| v.eq_ignore_ascii_case("instanceView"));
    match &t.collection {
        Some(c) if c.eq_ignore_ascii_case("instanceView") => match store.get(&t.id()) {
            Some(r) => json_response(
                StatusCode::OK,
                r.body
                    .get("properties")
                    .and_then(|p| p.get("instanceView"))
                    .unwrap_or(&json!({})),
            ),
            None => not_found(t),
        },
        Some(c)
            if t.last_type().eq_ignore_ascii_case("virtualMachineScaleSets")
                && (c.eq_ignore_ascii_case("virtualMachines") || c.eq_ignore_ascii_case("networkInterfaces"))
                && crate::scenario::is_flexible(store, &t.id()) =>
        {
            // A flexible scale set's instances are ordinary VMs: ARM refuses the uniform instance APIs.
            arm_error(
                StatusCode::CONFLICT,
                "OperationNotAllowed",
                &format!(
                    "The operation is not allowed on virtual machine scale set {} with orchestration mode 'Flexible': list its virtual machines under Microsoft.Compute/virtualMachines.",
                    t.name()
                ),
            )
        }
        Some(c) => {
            let items: Vec<Value> = if t.last_type().eq_ignore_ascii_case("virtualMachineScaleSets")
                && c.eq_ignore_ascii_case("networkInterfaces")
            {
                store
                    .under(&format!("{}/virtualMachines/", t.id()))
                    .into_iter()
                    .filter(|r| {
                        r.id.to_ascii_lowercase().split("/networkinterfaces/").count() == 2
                            && !r.id.to_ascii_lowercase().contains("/ipconfigurations/")
                    })
                    .map(|r| r.body.clone())
                    .collect()
            } else if !t.pairs.is_empty() && embedded_property(c).is_some() && store.get(&t.id()).is_some() {
                let prop = embedded_property(c).unwrap_or_default();
                store
                    .get(&t.id())
                    .map(|r| crate::store::prop_array(&served(store, r.body.clone()), prop).to_vec())
                    .unwrap_or_default()
            } else {
                if !t.pairs.is_empty() && store.get(&t.id()).is_none() {
                    return not_found(t);
                }
                let ids: Vec<String> = store.list(&t.collection_path()).iter().map(|r| r.id.clone()).collect();
                for id in &ids {
                    settle(store, id, now);
                }
                let vm_like = t.resource_type().to_ascii_lowercase().ends_with("/virtualmachines");
                ids.iter()
                    .filter_map(|id| store.get(id))
                    .map(|r| shape(served(store, r.body.clone()), vm_like, expand))
                    .collect()
            };
            page(s, t, q, items)
        }
        None => {
            let id = t.id();
            if store.get(&id).is_some() {
                settle(store, &id, now);
                let body = store.get(&id).map(|r| r.body.clone()).unwrap_or_default();
                return json_response(StatusCode::OK, &shape(served(store, body), t.is_vm_like(), expand));
            }
            if t.pairs.len() >= 2 {
                if let Some(prop) = embedded_property(t.last_type()) {
                    let parent = t.id_of(&t.pairs[..t.pairs.len() - 1]);
                    if let Some(p) = store.get(&parent) {
                        let parent_body = served(store, p.body.clone());
                        if let Some(child) = crate::store::prop_array(&parent_body, prop).iter().find(|c| {
                            c.get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| n.eq_ignore_ascii_case(t.name()))
                        }) {
                            return json_response(StatusCode::OK, child);
                        }
                    }
                }
            }
            not_found(t)
        }
    }
}

fn page(s: &Shared, t: &Target, q: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let skip: usize = q.get("$skiptoken").and_then(|v| v.parse().ok()).unwrap_or(0);
    let size = s.opts.page_size.max(1);
    let chunk: Vec<Value> = items.iter().skip(skip).take(size).cloned().collect();
    let mut body = json!({ "value": chunk });
    if skip + size < items.len() {
        let mut link = format!(
            "{}{}?api-version={}",
            s.base_url,
            t.collection_path(),
            q.get("api-version").cloned().unwrap_or_default()
        );
        if let Some(e) = q.get("$expand") {
            link.push_str(&format!("&%24expand={e}"));
        }
        link.push_str(&format!("&%24skiptoken={}", skip + size));
        body["nextLink"] = json!(link);
    }
    json_response(StatusCode::OK, &body)
}

fn busy(s: &Shared, until: u64, now: u64, id: &str) -> Response {
    let retry = retry_after_secs(s, until.saturating_sub(now)).max(1);
    let mut r = match s.opts.busy_answer {
        BusyAnswer::Retryable429 => arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RetryableErrorDueToAnotherOperation",
            &format!("Operation on {id} cannot be performed because another operation is in progress. It can be retried in {retry} seconds."),
        ),
        BusyAnswer::Conflict409 => arm_error(
            StatusCode::CONFLICT,
            "AnotherOperationInProgress",
            &format!("Another operation on {id} is in progress."),
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A PUT body over the stored resource: objects merged key by key, everything else (arrays, scalars, null)
/// replaced as sent.
fn overlay(target: &mut Value, body: Value) {
    match (target, body) {
        (Value::Object(t), Value::Object(b)) => {
            for (k, v) in b {
                match t.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => overlay(existing, v),
                    _ => {
                        t.insert(k, v);
                    }
                }
            }
        }
        (t, b) => *t = b,
    }
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

fn new_operation(s: &Shared, now: u64) -> (String, u64) {
    let mut c = lock(&s.op_counter);
    *c += 1;
    let id = format!("sim-op-{:08}", *c);
    let done = now + s.opts.lro_delay.as_millis() as u64;
    lock(&s.ops).insert(id.clone(), Operation { done_at_ms: done });
    (id, done)
}

/// The operation URL is under the resource's subscription, as ARM's (so it is polled with that subscription's
/// token).
#[allow(clippy::too_many_arguments)]
fn lro_headers(s: &Shared, r: &mut Response, sub: &str, ns: &str, op: &str, done: u64, now: u64, location_style: bool) {
    let kind = if location_style {
        "operationResults"
    } else {
        "operations"
    };
    let url = format!(
        "{}/subscriptions/{sub}/providers/{ns}/locations/{}/{kind}/{op}?api-version=2024-03-01",
        s.base_url, s.cluster.location
    );
    let name = if location_style {
        "location"
    } else {
        "azure-asyncoperation"
    };
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(name, v);
    }
    set_retry_after(s, r, done.saturating_sub(now), 0);
}

fn check_conditions(headers: &HeaderMap, current_etag: Option<&str>, id: &str) -> Option<Response> {
    if let Some(want) = header(headers, "if-match") {
        let ok = want == "*" && current_etag.is_some() || current_etag == Some(want.as_str());
        if !ok {
            return Some(arm_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                &format!(
                    "The condition If-Match: {want} was not met for {id} (current ETag: {}).",
                    current_etag.unwrap_or("none")
                ),
            ));
        }
    }
    if header(headers, "if-none-match").as_deref() == Some("*") && current_etag.is_some() {
        return Some(arm_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &format!("{id} already exists (If-None-Match: *)."),
        ));
    }
    None
}

fn write(
    s: &Shared,
    store: &mut Store,
    t: &Target,
    headers: &HeaderMap,
    body: Value,
    patch: bool,
    now: u64,
) -> Response {
    if t.pairs.is_empty() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestUri",
            "A resource name is required.",
        );
    }
    if let Some((ty, n)) = t.pairs.iter().find(|(_, n)| n.len() > 80) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            &format!("Resource name {n} of type {ty} is invalid: names are at most 80 characters."),
        );
    }
    // Embedded child (pool, route, subnet, security rule, ...): a change of its parent.
    if t.pairs.len() >= 2 {
        if let Some(prop) = embedded_property(t.last_type()) {
            let parent_pairs = &t.pairs[..t.pairs.len() - 1];
            let parent_id = t.id_of(parent_pairs);
            let Some(parent) = store.get(&parent_id).cloned() else {
                return not_found(&Target {
                    pairs: parent_pairs.to_vec(),
                    ..t.clone()
                });
            };
            if parent.busy_until_ms > now {
                return busy(s, parent.busy_until_ms, now, &parent.id);
            }
            if let Some(r) = check_conditions(headers, parent.body.get("etag").and_then(Value::as_str), &t.id()) {
                return r;
            }
            let mut pbody = parent.body.clone();
            let Some(props) = props_mut(&mut pbody) else {
                return arm_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "corrupt parent");
            };
            let arr = props.entry(prop).or_insert_with(|| json!([]));
            if !arr.is_array() {
                *arr = json!([]);
            }
            let list = arr.as_array_mut().map(std::mem::take).unwrap_or_default();
            let mut created = true;
            let mut out = Vec::with_capacity(list.len() + 1);
            let mut child = body;
            if let Value::Object(m) = &mut child {
                m.insert("name".into(), json!(t.name()));
            }
            for c in list {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(t.name()))
                {
                    created = false;
                    let mut merged = c.clone();
                    if patch {
                        merge(&mut merged, child.clone());
                        out.push(merged);
                    } else {
                        out.push(child.clone());
                    }
                } else {
                    out.push(c);
                }
            }
            if created {
                if patch {
                    return not_found(t);
                }
                out.push(child);
            }
            if let Some(p) = props_mut(&mut pbody) {
                p.insert(prop.into(), Value::Array(out));
            }
            let parent_target = Target {
                pairs: parent_pairs.to_vec(),
                collection: None,
                ..t.clone()
            };
            crate::backrefs::strip(&parent_target.arm_type(), &mut pbody);
            if let Err(e) = rules::validate(store, &parent_target.arm_type(), &parent_id, &mut pbody) {
                return arm_error(StatusCode::BAD_REQUEST, &e.code, &e.message);
            }
            return finish_write(
                s,
                store,
                &parent_target,
                pbody,
                now,
                created,
                Some((prop, t.name().to_string())),
            );
        }
    }
    let id = t.id();
    let existing = store.get(&id).cloned();
    if let Some(e) = &existing {
        if e.busy_until_ms > now {
            return busy(s, e.busy_until_ms, now, &e.id);
        }
    }
    if let Some(r) = check_conditions(
        headers,
        existing
            .as_ref()
            .and_then(|e| e.body.get("etag").and_then(Value::as_str)),
        &id,
    ) {
        return r;
    }
    // Compute keeps what a PUT body omits for VMs, scale sets and their instances (a client that changes
    // pool membership sends only location, hardware and network profiles and the etag); other resources are
    // replaced by a PUT.
    let compute_keeps_omitted = matches!(
        t.arm_type().to_ascii_lowercase().as_str(),
        "microsoft.compute/virtualmachines"
            | "microsoft.compute/virtualmachinescalesets"
            | "microsoft.compute/virtualmachinescalesets/virtualmachines"
    );
    let mut new_body = match (&existing, patch) {
        (None, true) => return not_found(t),
        (Some(e), true) => {
            let mut b = e.body.clone();
            merge(&mut b, body);
            b
        }
        (Some(e), false) if compute_keeps_omitted => {
            let mut b = e.body.clone();
            overlay(&mut b, body);
            b
        }
        (_, false) => body,
    };
    if new_body.get("location").is_none() {
        match existing.as_ref().and_then(|e| e.body.get("location").cloned()) {
            Some(l) => new_body["location"] = l,
            None if t.pairs.len() == 1 => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "LocationRequired",
                    "The location property is required for this definition.",
                )
            }
            None => new_body["location"] = json!(s.cluster.location),
        }
    }
    // Read-only parts a client may send back are kept from the stored resource.
    if let (Some(e), Some(p)) = (&existing, new_body.get_mut("properties").and_then(Value::as_object_mut)) {
        if let Some(iv) = e.body.get("properties").and_then(|p| p.get("instanceView")) {
            p.entry("instanceView").or_insert_with(|| iv.clone());
        }
    }
    crate::backrefs::strip(&t.arm_type(), &mut new_body);
    if let Err(e) = rules::validate(store, &t.arm_type(), &id, &mut new_body) {
        return arm_error(StatusCode::BAD_REQUEST, &e.code, &e.message);
    }
    let capacity = new_body.pointer("/sku/capacity").and_then(Value::as_u64);
    let scale_set = t
        .arm_type()
        .eq_ignore_ascii_case("Microsoft.Compute/virtualMachineScaleSets");
    let resp = finish_write(s, store, t, new_body, now, existing.is_none(), None);
    if let (true, Some(want), true) = (scale_set, capacity, resp.status().is_success()) {
        // A capacity change creates or deletes instances (computer names: prefix + base 36).
        let have = crate::scenario::instance_ids(store, &id).len() as u64;
        let r = if want > have {
            crate::scenario::scale_out(store, &id, want - have).map(|_| ())
        } else {
            crate::scenario::scale_in(store, &id, have - want).map(|_| ())
        };
        if let Err(e) = r {
            return arm_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e);
        }
    }
    resp
}

/// POST actions: `virtualMachineScaleSets/{name}/delete` (deleteInstances).
fn action(s: &Shared, store: &mut Store, t: &Target, body: &[u8], now: u64) -> Response {
    let is_delete_instances = t.pairs.len() == 1
        && t.pairs[0].0.eq_ignore_ascii_case("virtualMachineScaleSets")
        && t.collection
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("delete"));
    if !is_delete_instances {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedOperation",
            &format!(
                "azure-sim does not implement POST {}",
                t.collection.as_deref().unwrap_or("")
            ),
        );
    }
    let ss_id = t.id();
    let Some(ss) = store.get(&ss_id).cloned() else {
        return not_found(t);
    };
    if ss.busy_until_ms > now {
        return busy(s, ss.busy_until_ms, now, &ss.id);
    }
    let ids: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("instanceIds").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "instanceIds must list at least one instance.",
        );
    }
    for id in &ids {
        let vm = format!("{}/virtualMachines/{id}", ss.id);
        if store.get(&vm).is_some() {
            if let Err(e) = crate::scenario::remove_vm(store, &vm) {
                return arm_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e);
            }
        }
    }
    let (op, done) = new_operation(s, now);
    let mut r = StatusCode::ACCEPTED.into_response();
    lro_headers(s, &mut r, &t.sub, &t.ns, &op, done, now, true);
    r
}

fn finish_write(
    s: &Shared,
    store: &mut Store,
    t: &Target,
    mut body: Value,
    now: u64,
    created: bool,
    child: Option<(&str, String)>,
) -> Response {
    let (op, done) = new_operation(s, now);
    let state = if done > now {
        if created {
            "Creating"
        } else {
            "Updating"
        }
    } else {
        "Succeeded"
    };
    if let Some(p) = props_mut(&mut body) {
        p.insert("provisioningState".into(), json!(state));
    }
    let stored = store.put(&t.id(), &t.arm_type(), body, done);
    rules::propagate(store, &t.arm_type(), &stored);
    let stored = served(store, stored);
    let answer = match child {
        Some((prop, name)) => crate::store::prop_array(&stored, prop)
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .cloned()
            .unwrap_or(Value::Null),
        None => shape(stored, t.is_vm_like(), false),
    };
    let mut r = json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &answer);
    lro_headers(s, &mut r, &t.sub, &t.ns, &op, done, now, false);
    r
}

fn delete(s: &Shared, store: &mut Store, t: &Target, now: u64) -> Response {
    if t.pairs.len() >= 2 {
        if let Some(prop) = embedded_property(t.last_type()) {
            let parent_pairs = &t.pairs[..t.pairs.len() - 1];
            let parent_id = t.id_of(parent_pairs);
            let Some(parent) = store.get(&parent_id).cloned() else {
                return StatusCode::NO_CONTENT.into_response();
            };
            if parent.busy_until_ms > now {
                return busy(s, parent.busy_until_ms, now, &parent.id);
            }
            let mut pbody = parent.body.clone();
            let before = crate::store::prop_array(&pbody, prop).len();
            if let Some(p) = props_mut(&mut pbody) {
                if let Some(Value::Array(a)) = p.get_mut(prop) {
                    a.retain(|c| {
                        !c.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(t.name()))
                    });
                }
            }
            if crate::store::prop_array(&pbody, prop).len() == before {
                return StatusCode::NO_CONTENT.into_response();
            }
            let parent_target = Target {
                pairs: parent_pairs.to_vec(),
                collection: None,
                ..t.clone()
            };
            crate::backrefs::strip(&parent_target.arm_type(), &mut pbody);
            if let Err(e) = rules::validate(store, &parent_target.arm_type(), &parent_id, &mut pbody) {
                return arm_error(StatusCode::BAD_REQUEST, &e.code, &e.message);
            }
            let (op, done) = new_operation(s, now);
            store.put(&parent_id, &parent_target.arm_type(), pbody, done);
            let mut r = StatusCode::ACCEPTED.into_response();
            lro_headers(s, &mut r, &t.sub, &t.ns, &op, done, now, true);
            return r;
        }
    }
    let id = t.id();
    let Some(existing) = store.get(&id).cloned() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if existing.busy_until_ms > now {
        return busy(s, existing.busy_until_ms, now, &existing.id);
    }
    // A flexible scale set's VM goes with its NICs (their delete option), so they do not hold it.
    let flex_vm = t.arm_type().eq_ignore_ascii_case("Microsoft.Compute/virtualMachines")
        && existing.body.pointer("/properties/virtualMachineScaleSet/id").is_some();
    if flex_vm {
        // Its scale set's capacity follows.
        if let Err(e) = crate::scenario::remove_vm(store, &existing.id) {
            return arm_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e);
        }
    } else {
        if let Err(e) = rules::check_delete(store, &t.arm_type(), &existing.id) {
            return arm_error(StatusCode::BAD_REQUEST, &e.code, &e.message);
        }
        rules::release_addresses(store, &existing.body);
        store.remove(&id);
    }
    let (op, done) = new_operation(s, now);
    let mut r = StatusCode::ACCEPTED.into_response();
    lro_headers(s, &mut r, &t.sub, &t.ns, &op, done, now, true);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let Some(Parsed::Resource(t)) = parse_path(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines",
        ) else {
            panic!()
        };
        assert_eq!(
            t.resource_type(),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
        );
        assert_eq!(t.collection.as_deref(), Some("virtualMachines"));
        let Some(Parsed::Resource(t)) = parse_path(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/0/networkInterfaces/nic",
        ) else {
            panic!()
        };
        assert_eq!(t.arm_type(), "Microsoft.Network/networkInterfaces");
        assert!(matches!(
            parse_path("/subscriptions/s/providers/Microsoft.Network/locations/eastus/operations/x"),
            Some(Parsed::Operation { .. })
        ));
        assert!(parse_path("/foo").is_none());
    }

    #[test]
    fn merge_patch() {
        let mut a = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge(&mut a, json!({"b": {"c": null, "x": 1}, "e": [2, 3]}));
        assert_eq!(a, json!({"a": 1, "b": {"d": 3, "x": 1}, "e": [2, 3]}));
    }
}
