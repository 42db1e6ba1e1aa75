//! What a real API server fills in on a Service (the registry's defaulting and allocation): `type`,
//! `sessionAffinity`, `ipFamilies`/`ipFamilyPolicy`, a cluster IP from 10.0.0.0/16, ports' `protocol` and
//! `targetPort`, traffic policies, and for NodePort/LoadBalancer Services a node port per port (30000–32767,
//! unique in the cluster) and, for `externalTrafficPolicy: Local` LoadBalancers, a `healthCheckNodePort`.
//! On update, allocated values the request omits are kept, as the API server does.

use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The node-port range.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Node ports and cluster IPs already taken by other Services.
#[derive(Default)]
pub struct Taken {
    /// Node ports (including health-check node ports).
    pub node_ports: BTreeSet<i64>,
    /// Cluster IPs.
    pub cluster_ips: BTreeSet<String>,
}

impl Taken {
    /// What `services` hold.
    pub fn of<'a>(services: impl Iterator<Item = &'a Value>) -> Self {
        let mut t = Taken::default();
        for s in services {
            for p in s.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                    t.node_ports.insert(n);
                }
            }
            if let Some(n) = s.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64) {
                t.node_ports.insert(n);
            }
            if let Some(ip) = s.pointer("/spec/clusterIP").and_then(Value::as_str) {
                t.cluster_ips.insert(ip.to_string());
            }
        }
        t
    }

    fn node_port(&mut self) -> Option<i64> {
        let p = NODE_PORTS.clone().find(|p| !self.node_ports.contains(p))?;
        self.node_ports.insert(p);
        Some(p)
    }

    fn cluster_ip(&mut self) -> Option<String> {
        for i in 10u32..65535 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            if self.cluster_ips.insert(ip.clone()) {
                return Some(ip);
            }
        }
        None
    }
}

fn set_default(obj: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), v);
    }
}

/// Defaults and allocates `svc` (a create, or an update of `old`). Errors are the API server's messages.
pub fn service(svc: &mut Value, old: Option<&Value>, taken: &mut Taken) -> Result<(), String> {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err("spec: Required value".into());
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let external = ty == "NodePort" || ty == "LoadBalancer";
    // Kept from the old object when the request omits them.
    let keep = |k: &str| old.and_then(|o| o.pointer(&format!("/spec/{k}"))).cloned();
    for k in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "healthCheckNodePort",
    ] {
        if spec.get(k).is_none_or(Value::is_null) {
            if let Some(v) = keep(k) {
                spec.insert(k.to_string(), v);
            }
        }
    }
    if ty != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        let families = spec.get("ipFamilies").and_then(Value::as_array).map_or(1, Vec::len);
        set_default(
            spec,
            "ipFamilyPolicy",
            json!(if families > 1 {
                "RequireDualStack"
            } else {
                "SingleStack"
            }),
        );
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        if spec
            .get("clusterIP")
            .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
        {
            let ip = taken.cluster_ip().ok_or("no cluster IP left in 10.0.0.0/16")?;
            spec.insert("clusterIP".into(), json!(ip));
        }
        if spec.get("clusterIPs").is_none_or(Value::is_null) {
            let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if external {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let allocate = ty == "NodePort"
        || (ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false));
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            let Some(p) = p.as_object_mut() else { continue };
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
            if !allocate {
                continue;
            }
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(n) if !NODE_PORTS.contains(&n) => {
                    return Err(format!(
                        "spec.ports.nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                    ))
                }
                Some(_) => {}
                None => {
                    // The same port and protocol as before keeps its node port.
                    let same = old_ports.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
                    let n = match same.and_then(|o| o.get("nodePort")).and_then(Value::as_i64) {
                        Some(n) => n,
                        None => taken.node_port().ok_or("no node port left in 30000-32767")?,
                    };
                    p.insert("nodePort".into(), json!(n));
                }
            }
        }
    }
    let local = spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
    if ty == "LoadBalancer" && local && spec.get("healthCheckNodePort").is_none_or(Value::is_null) {
        let n = taken.node_port().ok_or("no node port left in 30000-32767")?;
        spec.insert("healthCheckNodePort".into(), json!(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancer_gets_what_an_api_server_gives() {
        let mut taken = Taken::default();
        taken.node_ports.insert(30000);
        let mut svc = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80}, {"port": 443, "nodePort": 31443}]}});
        service(&mut svc, None, &mut taken).unwrap();
        let spec = &svc["spec"];
        assert_eq!(spec["ports"][0]["nodePort"], 30001);
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["nodePort"], 31443);
        assert_eq!(spec["healthCheckNodePort"], 30002);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert!(spec["clusterIP"].as_str().unwrap().starts_with("10.0."));
        // An update that omits the allocations keeps them.
        let mut update = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "protocol": "TCP"}]}});
        service(&mut update, Some(&svc), &mut taken).unwrap();
        assert_eq!(update["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(update["spec"]["healthCheckNodePort"], 30002);
        assert_eq!(update["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
        // No node ports when the LoadBalancer asks for none; out-of-range ones are refused.
        let mut none =
            json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}});
        service(&mut none, None, &mut taken).unwrap();
        assert!(none["spec"]["ports"][0].get("nodePort").is_none());
        let mut bad = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(service(&mut bad, None, &mut taken).unwrap_err().contains("valid range"));
    }
}
