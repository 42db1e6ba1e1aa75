//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch for the
//! fields controllers patch (lists merged by key: `conditions`/`addresses` by `type`, `taints` by `key`+
//! `effect`, `ports` by `port`, `ingress` replaced; `finalizers` and other primitive lists replaced, with
//! `$deleteFromPrimitiveList/<field>` and `$patch: delete|replace` honoured).

use serde_json::{Map, Value};

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn merge_key(field: &str) -> Option<&'static [&'static str]> {
    match field {
        "conditions" | "addresses" => Some(&["type"]),
        "taints" => Some(&["key", "effect"]),
        "ports" => Some(&["port"]),
        "containers" | "volumes" | "env" => Some(&["name"]),
        _ => None,
    }
}

fn same_key(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| a.get(*k) == b.get(*k))
}

/// Strategic merge patch (the subset above).
pub fn strategic(target: &mut Value, patch: &Value) {
    let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean: Map<String, Value> = p.clone();
        clean.remove("$patch");
        *t = clean;
        return;
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (t.get_mut(field), v) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v, merge_key(k)) {
            (Some(Value::Array(cur)), Value::Array(items), Some(keys)) => {
                for item in items {
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match cur.iter().position(|c| same_key(c, item, keys)) {
                        Some(i) if delete => {
                            cur.remove(i);
                        }
                        Some(i) => strategic(&mut cur[i], item),
                        None if delete => {}
                        None => cur.push(item.clone()),
                    }
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_), _) => strategic(cur, v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Result<(String, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((path[..i].to_string(), unescape(&path[i + 1..])))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("index {i} out of bounds at {path}"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("path {parent:?} does not exist")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| format!("path {path:?} does not exist")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of bounds at {path}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {parent:?} does not exist")),
    }
}

/// RFC 6902.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} at {path} needs a value"))
        };
        match kind {
            "add" => add(doc, path, value()?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value()?)?;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("move/copy needs \"from\"")?;
                let v = if kind == "move" {
                    remove(doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("path {from:?} does not exist"))?
                };
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_lists_by_key() {
        let mut node = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x", "y"]},
            "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "effect": "NoSchedule", "value": "true"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "NetworkUnavailable", "status": "True"}]}});
        strategic(
            &mut node,
            &json!({"metadata": {"labels": {"b": "2"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
                "spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "effect": "NoSchedule", "$patch": "delete"}]},
                "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}}),
        );
        assert_eq!(node["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(node["metadata"]["finalizers"], json!(["y"]));
        assert_eq!(node["spec"]["taints"], json!([]));
        assert_eq!(
            node["status"]["conditions"][1],
            json!({"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"})
        );
        assert_eq!(node["status"]["conditions"][0]["status"], "False");
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"finalizers": ["a", "b"]}, "x": 1});
        json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/x", "value": 1}, {"op": "remove", "path": "/metadata/finalizers/0"},
                {"op": "add", "path": "/metadata/labels", "value": {"k/v": "1"}}, {"op": "replace", "path": "/metadata/labels/k~1v", "value": "2"},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "c"}]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["b", "c"], "labels": {"k/v": "2"}}, "x": 1})
        );
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/x", "value": 2}])).is_err());
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut d, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn merge_patch() {
        let mut d = json!({"a": {"b": 1, "c": 2}});
        merge(&mut d, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}}));
    }
}
