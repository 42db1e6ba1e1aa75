//! The HTTP API: discovery, and for every kind GET / LIST / WATCH / POST / PUT / PATCH / DELETE on the
//! namespaced and cluster-scoped paths, with `/status` subresources. Errors are `Status` objects.

use crate::kinds::{self, Kind};
use crate::store::{fields_match, labels_match, ApiError, PatchType, Store, WatchEvent};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) type Shared = Arc<Mutex<Store>>;

pub(crate) fn router(store: Shared) -> Router {
    Router::new()
        .route("/version", get(|| async { axum::Json(crate::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/api", get(|| async { axum::Json(kinds::core_versions()) }))
        .route("/apis", get(|| async { axum::Json(kinds::groups()) }))
        .route("/openapi/v3", get(|| async { axum::Json(kinds::openapi_v3_root()) }))
        .route(
            "/openapi/v3/{*gv}",
            get(|axum::extract::Path(gv): axum::extract::Path<String>| async move {
                match kinds::openapi_v3_document(gv.trim_matches('/')) {
                    Some(doc) => json_response(200, &doc),
                    None => error(ApiError::new(404, "NotFound", format!("no OpenAPI document for {gv}"))),
                }
            }),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(|State(s): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                review(&s, &headers, &body, "TokenReview", |r, v| r.token_review(v))
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(|State(s): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                review(&s, &headers, &body, "SubjectAccessReview", |r, v| r.access_review(v))
            }),
        )
        .fallback(handle)
        .with_state(store)
}

/// A review: created, answered, not stored (as the real API server does).
fn review(
    s: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
    kind: &str,
    answer: impl FnOnce(&mut crate::reviews::Reviews, Value) -> Value,
) -> Response {
    match body_json(headers, body) {
        Ok(v) if v.get("kind").and_then(Value::as_str) == Some(kind) => {
            let answered = answer(&mut lock(s).reviews, v);
            json_response(201, &answered)
        }
        Ok(_) => error(ApiError::new(400, "BadRequest", format!("the body is not a {kind}"))),
        Err(e) => error(e),
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A parsed resource path.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Parsed {
    Discovery(Value),
    Resource(Target),
}

fn parse(path: &str) -> Result<Parsed, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    if rest.is_empty() {
        return kinds::resources(group, version)
            .map(Parsed::Discovery)
            .ok_or_else(not_found);
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] if kinds::find(group, version, plural).is_some() => {
            (Some(ns.to_string()), [&[*plural][..], more].concat())
        }
        other => (None, other.to_vec()),
    };
    let kind = kinds::find(group, version, rest[0]).ok_or_else(not_found)?;
    let (name, status) = match rest.as_slice() {
        [_] => (None, false),
        [_, name] => (Some(name.to_string()), false),
        [_, name, "status"] if kind.status => (Some(name.to_string()), true),
        _ => return Err(not_found()),
    };
    Ok(Parsed::Resource(Target {
        kind,
        namespace,
        name,
        status,
    }))
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn body_json(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parsed = if ct.contains("yaml") {
        serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::new(400, "BadRequest", format!("cannot decode the body: {e}")))
}

async fn handle(State(store): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let target = match parse(uri.path()) {
        Ok(Parsed::Discovery(v)) => return json_response(200, &v),
        Ok(Parsed::Resource(t)) => t,
        Err(e) => return error(e),
    };
    let q = query(&uri);
    let ns = target.namespace.clone().unwrap_or_default();
    if target.kind.namespaced && target.name.is_some() && target.namespace.is_none() {
        return error(ApiError::new(
            404,
            "NotFound",
            format!(
                "{} is namespaced: use /namespaces/<ns>/{}",
                target.kind.plural, target.kind.plural
            ),
        ));
    }
    let result = match (&method, &target.name) {
        (&Method::GET, None) if matches!(q.get("watch").map(String::as_str), Some("true") | Some("1")) => {
            return watch(&store, &target, &q)
        }
        (&Method::GET, None) => Ok((
            200,
            lock(&store).list(
                target.kind,
                target.namespace.as_deref(),
                q.get("labelSelector").map(String::as_str),
                q.get("fieldSelector").map(String::as_str),
            ),
        )),
        (&Method::GET, Some(name)) => lock(&store).get(target.kind, &ns, name).map(|v| (200, v)),
        (&Method::POST, None) => body_json(&headers, &body).and_then(|obj| {
            if target.kind.namespaced && target.namespace.is_none() {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "a namespaced object must be created under /namespaces/<ns>/",
                ));
            }
            lock(&store).create(target.kind, &ns, obj).map(|v| (201, v))
        }),
        (&Method::PUT, Some(name)) => body_json(&headers, &body).and_then(|obj| {
            lock(&store)
                .update(target.kind, &ns, name, obj, target.status)
                .map(|v| (200, v))
        }),
        (&Method::PATCH, Some(name)) => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let ty = if ct.starts_with("application/merge-patch+json") {
                Some(PatchType::Merge)
            } else if ct.starts_with("application/strategic-merge-patch+json") {
                Some(PatchType::Strategic)
            } else if ct.starts_with("application/json-patch+json") {
                Some(PatchType::Json)
            } else if ct.starts_with("application/apply-patch+yaml") {
                Some(PatchType::Apply)
            } else {
                None
            };
            match ty {
                None => Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {ct}"),
                )),
                Some(PatchType::Apply) if !q.contains_key("fieldManager") => Err(ApiError::new(
                    400,
                    "BadRequest",
                    "PATCH with apply-patch+yaml requires fieldManager",
                )),
                Some(ty) => body_json(&headers, &body).and_then(|p| {
                    lock(&store)
                        .patch(target.kind, &ns, name, ty, &p, target.status)
                        .map(|v| (200, v))
                }),
            }
        }
        (&Method::DELETE, Some(name)) => lock(&store).delete(target.kind, &ns, name).map(|v| (200, v)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", uri.path()),
        )),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error(e),
    }
}

fn matches(t: &Target, e: &WatchEvent, labels: Option<&str>, fields: Option<&str>) -> bool {
    e.group == t.kind.group
        && e.plural == t.kind.plural
        && t.namespace
            .as_ref()
            .is_none_or(|ns| !t.kind.namespaced || *ns == e.namespace)
        && labels.is_none_or(|s| labels_match(&e.object, s))
        && fields.is_none_or(|s| fields_match(&e.object, s))
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(store: &Shared, t: &Target, q: &HashMap<String, String>) -> Response {
    let labels = q.get("labelSelector").cloned();
    let fields = q.get("fieldSelector").cloned();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1800);
    let rv: Option<u64> = q.get("resourceVersion").and_then(|v| v.parse().ok()).filter(|v| *v > 0);
    // Subscribe and read the backlog under one lock: no event is missed or duplicated.
    let (rx, backlog, current) = {
        let s = lock(store);
        let rx = s.subscribe();
        let backlog: Vec<Bytes> = match rv {
            Some(rv) => match s.since(rv) {
                Ok(events) => events
                    .iter()
                    .filter(|e| matches(t, e, labels.as_deref(), fields.as_deref()))
                    .map(|e| line(e.kind, &e.object))
                    .collect(),
                Err(e) => return error(e),
            },
            // No resourceVersion: start with the current state, as ADDED events.
            None => s.list(t.kind, t.namespace.as_deref(), labels.as_deref(), fields.as_deref())["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|o| line("ADDED", o))
                .collect(),
        };
        (rx, backlog, s.resource_version())
    };
    let target = Target {
        kind: t.kind,
        namespace: t.namespace.clone(),
        name: None,
        status: false,
    };
    let kind = t.kind;
    // The newest resourceVersion this stream has passed on (or filtered out): a BOOKMARK may promise no more
    // than that, or a client resuming from it would skip events still queued for it — and one carrying an old
    // version would make it resume from there and replay stale objects over newer ones.
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(current));
    let seen_live = seen.clone();
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .take_while(|r| futures::future::ready(r.is_ok())) // a lagging watcher ends; the client re-lists
        .filter_map(move |r| {
            let out = match r {
                Ok(e) => {
                    seen_live.fetch_max(e.rv, std::sync::atomic::Ordering::AcqRel);
                    matches(&target, &e, labels.as_deref(), fields.as_deref()).then(|| line(e.kind, &e.object))
                }
                Err(_) => None,
            };
            futures::future::ready(out)
        });
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Some(((), ()))
    })
    .filter_map(move |()| {
        let rv = seen.load(std::sync::atomic::Ordering::Acquire);
        let b = bookmarks.then(|| {
            let obj = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
            line("BOOKMARK", &obj)
        });
        futures::future::ready(b)
    });
    let merged = futures::stream::select(live, ticks);
    let stream = futures::stream::iter(backlog)
        .chain(merged)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)))
        .map(Ok::<Bytes, std::convert::Infallible>);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let Ok(Parsed::Resource(t)) = parse("/api/v1/namespaces/kube-system/services/a/status") else {
            panic!()
        };
        assert_eq!(
            (t.kind.plural, t.namespace.as_deref(), t.name.as_deref(), t.status),
            ("services", Some("kube-system"), Some("a"), true)
        );
        let Ok(Parsed::Resource(t)) = parse("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!((t.kind.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let Ok(Parsed::Resource(t)) = parse("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases") else {
            panic!()
        };
        assert_eq!(t.kind.plural, "leases");
        let Ok(Parsed::Resource(t)) = parse("/api/v1/nodes/n1/status") else {
            panic!()
        };
        assert!(t.status);
        assert!(matches!(parse("/api/v1"), Ok(Parsed::Discovery(_))));
        assert!(parse("/api/v1/pods").is_err());
        assert!(parse("/apis/apps/v1/deployments").is_err());
    }
}
