//! The object store: every object by (group, plural, namespace, name), one monotonic resourceVersion
//! across kinds, a bounded event history for watches resumed from a resourceVersion, finalizer semantics.

use crate::kinds::Kind;
use crate::patch;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for watches that resume from an older resourceVersion.
pub const HISTORY: usize = 10_000;

/// A Kubernetes API error, rendered as a `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `BadRequest`, `Gone`, `Invalid`, `MethodNotAllowed`.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// A change.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Group and plural of the object's kind.
    pub group: &'static str,
    /// Plural.
    pub plural: &'static str,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub kind: &'static str,
    /// The object after the change.
    pub object: Arc<Value>,
}

type Key = (&'static str, &'static str, String, String);

/// How a patch body is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

/// The store.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<WatchEvent>,
    /// resourceVersion of the newest event dropped from the history (0: none dropped).
    dropped_up_to: u64,
    tx: broadcast::Sender<WatchEvent>,
    /// TokenReview / SubjectAccessReview answers.
    pub reviews: crate::reviews::Reviews,
}

impl Default for Store {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            dropped_up_to: 0,
            tx,
            reviews: Default::default(),
        }
    }
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    // RFC 3339 in UTC from epoch seconds (civil-from-days).
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn uid() -> String {
    let b: u128 = rand::random();
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn meta(v: &Value, key: &str) -> Option<String> {
    v.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn set_meta(v: &mut Value, key: &str, val: Value) {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"][key] = val;
}

/// Label-selector match (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`).
pub fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).all(|p| {
        let set = |s: &str| -> Vec<String> {
            s.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|x| x.trim().to_string())
                .collect()
        };
        if let Some((k, v)) = p.split_once(" notin ") {
            !get(k.trim()).is_some_and(|x| set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = p.split_once(" in ") {
            get(k.trim()).is_some_and(|x| set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = p.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = p.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(p).is_some()
        }
    })
}

/// Field-selector match (`a.b.c=v`, `==`, `!=` on string fields).
pub fn fields_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').map(str::trim).filter(|p| !p.is_empty()).all(|p| {
        let (path, val, neg) = if let Some((k, v)) = p.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            (k, v, false)
        } else {
            return false;
        };
        let pointer = format!("/{}", path.trim().replace('.', "/"));
        let actual = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or_default();
        (actual == val.trim()) != neg
    })
}

impl Store {
    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A receiver of future events.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.tx.subscribe()
    }

    /// Events after `rv`, or `Gone` when the history no longer reaches back that far.
    pub fn since(&self, rv: u64) -> Result<Vec<WatchEvent>, ApiError> {
        if rv < self.dropped_up_to {
            return Err(ApiError::new(
                410,
                "Gone",
                format!("too old resource version: {rv} ({})", self.dropped_up_to),
            ));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn emit(&mut self, kind: &Kind, namespace: &str, event: &'static str, object: &Value) {
        let e = WatchEvent {
            rv: self.rv,
            group: kind.group,
            plural: kind.plural,
            namespace: namespace.to_string(),
            kind: event,
            object: Arc::new(object.clone()),
        };
        if self.history.len() >= HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.dropped_up_to = old.rv;
            }
        }
        self.history.push_back(e.clone());
        let _ = self.tx.send(e);
    }

    fn key(kind: &Kind, ns: &str, name: &str) -> Key {
        (
            kind.group,
            kind.plural,
            if kind.namespaced { ns.to_string() } else { String::new() },
            name.to_string(),
        )
    }

    /// The objects of one kind (a range of the ordered map, not a scan of every object: at 5,000 Nodes a scan
    /// per Service creation was most of the simulator's CPU).
    fn of_kind(&self, group: &'static str, plural: &'static str) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .range((group, plural, String::new(), String::new())..)
            .take_while(move |((g, p, _, _), _)| *g == group && *p == plural)
    }

    fn stamp(&mut self, obj: &mut Value) {
        self.rv += 1;
        set_meta(obj, "resourceVersion", json!(self.rv.to_string()));
    }

    /// GET.
    pub fn get(&self, kind: &Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(kind, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", kind.plural)))
    }

    /// LIST (all namespaces when `ns` is `None`).
    /// Applies `f` to every object of a kind (no copies).
    pub fn each<T>(&self, kind: &Kind, mut f: impl FnMut(&Value) -> Option<T>) -> Vec<T> {
        self.of_kind(kind.group, kind.plural)
            .filter_map(|(_, v)| f(v))
            .collect()
    }

    /// A list of a kind (namespace, label and field selectors applied), as the API server serves it.
    pub fn list(&self, kind: &Kind, ns: Option<&str>, labels: Option<&str>, fields: Option<&str>) -> Value {
        let items: Vec<Value> = self
            .of_kind(kind.group, kind.plural)
            .filter(|((_, _, n, _), _)| ns.is_none_or(|x| !kind.namespaced || n == x))
            .map(|(_, v)| v)
            .filter(|v| labels.is_none_or(|s| labels_match(v, s)) && fields.is_none_or(|s| fields_match(v, s)))
            .cloned()
            .collect();
        json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()}, "items": items})
    }

    /// Defaults and allocates a Service as the API server does (`crate::defaults`).
    fn default_service(&self, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        // An update that leaves the spec alone (status, finalizers, labels) has nothing to default or
        // allocate: without this, every such write scanned every Service (O(n²) over a burst of them).
        if old.is_some_and(|o| o.get("spec") == obj.get("spec")) {
            return Ok(());
        }
        let own_uid = old.and_then(|o| meta(o, "uid"));
        let mut taken = crate::defaults::Taken::of(
            self.of_kind("", "services")
                .map(|(_, v)| v)
                .filter(|v| own_uid.is_none() || meta(v, "uid") != own_uid),
        );
        crate::defaults::service(obj, old, &mut taken)
            .map_err(|m| ApiError::new(422, "Invalid", format!("Service: {m}")))
    }

    /// POST.
    pub fn create(&mut self, kind: &Kind, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body must be a JSON object"));
        }
        let mut name = meta(&obj, "name").unwrap_or_default();
        if name.is_empty() {
            match meta(&obj, "generateName") {
                Some(g) => name = format!("{g}{:05x}", rand::random::<u32>() & 0xfffff),
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("{}: metadata.name: Required value", kind.kind),
                    ))
                }
            }
        }
        let key = Self::key(kind, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
            ));
        }
        if kind.kind == "Service" {
            self.default_service(&mut obj, None)?;
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        set_meta(&mut obj, "name", json!(name));
        if kind.namespaced {
            set_meta(&mut obj, "namespace", json!(ns));
        }
        set_meta(&mut obj, "uid", json!(uid()));
        set_meta(&mut obj, "creationTimestamp", json!(now()));
        set_meta(&mut obj, "generation", json!(1));
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("deletionTimestamp");
        }
        self.stamp(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit(kind, ns, "ADDED", &obj);
        Ok(obj)
    }

    /// Stores a changed object (update, patch): keeps identity, checks resourceVersion, status-subresource
    /// rules, generation, and completes deletion when the last finalizer goes.
    fn store_changed(
        &mut self,
        kind: &Kind,
        ns: &str,
        name: &str,
        mut new: Value,
        status_only: bool,
        check_rv: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(kind, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", kind.plural)))?;
        if check_rv {
            if let Some(rv) = meta(&new, "resourceVersion").filter(|r| !r.is_empty()) {
                if Some(&rv) != meta(&old, "resourceVersion").as_ref() {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.plural),
                    ));
                }
            }
        }
        if kind.status {
            if status_only {
                // As the API server's status strategies: the spec stays as it was; status and metadata
                // (labels, annotations, finalizers) are taken from the request.
                match old.get("spec") {
                    Some(s) => new["spec"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("spec");
                        }
                    }
                }
            } else if let Some(s) = old.get("status") {
                new["status"] = s.clone();
            } else if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
        // Identity and server-set fields are the server's.
        for k in ["uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"] {
            match old.pointer(&format!("/metadata/{k}")) {
                Some(v) => set_meta(&mut new, k, v.clone()),
                None => {
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(k);
                    }
                }
            }
        }
        if kind.kind == "Service" && !status_only {
            self.default_service(&mut new, Some(&old))?;
        }
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        let gen = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let spec_changed = old.get("spec") != new.get("spec");
        set_meta(&mut new, "generation", json!(if spec_changed { gen + 1 } else { gen }));
        let mut probe = new.clone();
        let mut old_probe = old.clone();
        for v in [&mut probe, &mut old_probe] {
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
        }
        if probe == old_probe {
            return Ok(old);
        }
        self.stamp(&mut new);
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_empty = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if deleting && finalizers_empty {
            self.objects.remove(&key);
            self.emit(kind, ns, "DELETED", &new);
            return Ok(new);
        }
        self.objects.insert(key, new.clone());
        self.emit(kind, ns, "MODIFIED", &new);
        Ok(new)
    }

    /// PUT (optionally of `/status`). A resourceVersion in the body must match (409 otherwise).
    pub fn update(
        &mut self,
        kind: &Kind,
        ns: &str,
        name: &str,
        obj: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        if meta(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the name in the body does not match the URL",
            ));
        }
        self.store_changed(kind, ns, name, obj, status_only, true)
    }

    /// PATCH (optionally of `/status`). Server-side apply creates the object when absent.
    pub fn patch(
        &mut self,
        kind: &Kind,
        ns: &str,
        name: &str,
        ty: PatchType,
        body: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(kind, ns, name);
        let Some(mut cur) = self.objects.get(&key).cloned() else {
            if ty == PatchType::Apply {
                let mut obj = body.clone();
                set_meta(&mut obj, "name", json!(name));
                return self.create(kind, ns, obj);
            }
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", kind.plural),
            ));
        };
        match ty {
            PatchType::Merge => patch::merge(&mut cur, body),
            PatchType::Strategic | PatchType::Apply => patch::strategic(&mut cur, body),
            PatchType::Json => patch::json_patch(&mut cur, body).map_err(|m| ApiError::new(422, "Invalid", m))?,
        }
        let check = ty != PatchType::Apply && meta(body, "resourceVersion").is_some();
        self.store_changed(kind, ns, name, cur, status_only, check)
    }

    /// DELETE: with finalizers the object gets a deletionTimestamp and stays until they are gone.
    pub fn delete(&mut self, kind: &Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = Self::key(kind, ns, name);
        let mut obj = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", kind.plural)))?;
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                set_meta(&mut obj, "deletionTimestamp", json!(now()));
                set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
                self.stamp(&mut obj);
                self.objects.insert(key, obj.clone());
                self.emit(kind, ns, "MODIFIED", &obj);
            }
            return Ok(obj);
        }
        self.objects.remove(&key);
        self.stamp(&mut obj);
        self.emit(kind, ns, "DELETED", &obj);
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::find;

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "n1", "labels": {"a": "1", "b": "x"}}, "spec": {"nodeName": "w"}});
        for (sel, want) in [
            ("a=1", true),
            ("a==1,b=x", true),
            ("a!=1", false),
            ("a", true),
            ("!c", true),
            ("!a", false),
            ("b in (x,y)", true),
            ("b notin (x)", false),
            ("", true),
        ] {
            assert_eq!(labels_match(&o, sel), want, "{sel}");
        }
        assert!(fields_match(&o, "metadata.name=n1,spec.nodeName=w"));
        assert!(!fields_match(&o, "metadata.name!=n1"));
    }

    #[test]
    fn lifecycle_and_finalizers() {
        let mut s = Store::default();
        let svc = find("", "v1", "services").unwrap();
        let created = s
            .create(
                svc,
                "default",
                json!({"metadata": {"name": "a", "finalizers": ["f"]}, "spec": {"type": "LoadBalancer"}}),
            )
            .unwrap();
        assert!(s.create(svc, "default", json!({"metadata": {"name": "a"}})).is_err());
        let rv = meta(&created, "resourceVersion").unwrap();
        // Stale resourceVersion → 409.
        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(s.update(svc, "default", "a", stale, false).unwrap_err().code, 409);
        // Status through /status only.
        let mut with_status = created.clone();
        with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
        let u = s.update(svc, "default", "a", with_status.clone(), false).unwrap();
        assert!(u.get("status").is_none());
        let u = s.update(svc, "default", "a", with_status, true).unwrap();
        assert_eq!(u["status"]["loadBalancer"]["ingress"][0]["ip"], "1.2.3.4");
        assert_ne!(meta(&u, "resourceVersion").unwrap(), rv);
        // Delete with a finalizer: stays, then goes when the finalizer is removed.
        let d = s.delete(svc, "default", "a").unwrap();
        assert!(d.pointer("/metadata/deletionTimestamp").is_some());
        assert!(s.get(svc, "default", "a").is_ok());
        s.patch(
            svc,
            "default",
            "a",
            PatchType::Json,
            &json!([{"op": "remove", "path": "/metadata/finalizers"}]),
            false,
        )
        .unwrap();
        assert_eq!(s.get(svc, "default", "a").unwrap_err().code, 404);
        let kinds: Vec<&str> = s.since(0).unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    }
}
