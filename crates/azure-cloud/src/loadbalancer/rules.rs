//! The load-balancing rules and health probes a Service needs (upstream `getExpectedLBRules`), as plain
//! values: pure, table-tested. The applier turns them into ARM models.

use super::annotations::{AnnotationError, ProbeProtocol, ServiceLbSpec, PREFIX};
use super::names::{rule_name, Family, SHARED_PROBE_NAME};
use k8s_openapi::api::core::v1::ServicePort;

/// Default rule idle timeout (minutes).
pub const DEFAULT_IDLE_TIMEOUT: i32 = 4;

/// A planned load-balancing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRule {
    /// Rule name.
    pub name: String,
    /// ARM transport protocol: `Tcp`, `Udp` or `All`.
    pub protocol: &'static str,
    /// Frontend port (0 for HA ports).
    pub frontend_port: i32,
    /// Backend port (0 for HA ports; the node port when floating IP is off).
    pub backend_port: i32,
    /// Floating IP (direct server return).
    pub floating_ip: bool,
    /// `SourceIP` for ClientIP session affinity, else `Default`.
    pub load_distribution: &'static str,
    /// Idle timeout in minutes.
    pub idle_timeout_minutes: i32,
    /// TCP reset on idle (standard SKU, TCP).
    pub tcp_reset: bool,
    /// `disableOutboundSnat` (standard SKU).
    pub disable_outbound_snat: bool,
    /// The load balancer is of the standard SKU (`disableOutboundSnat` is then written explicitly).
    pub standard_sku: bool,
    /// The probe the rule uses, by name.
    pub probe: Option<String>,
    /// Address family of the frontend and pool.
    pub family: Family,
}

/// A planned health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Probe name.
    pub name: String,
    /// `Tcp`, `Http` or `Https`.
    pub protocol: &'static str,
    /// Port.
    pub port: i32,
    /// Request path (HTTP/HTTPS).
    pub path: Option<String>,
    /// Interval in seconds.
    pub interval: i32,
    /// Number of probes.
    pub num: i32,
}

/// Cluster facts the plan needs.
#[derive(Debug, Clone)]
pub struct RuleContext<'a> {
    /// Service base name.
    pub base: &'a str,
    /// Standard SKU.
    pub standard_sku: bool,
    /// `disableOutboundSNAT`.
    pub disable_outbound_snat: bool,
    /// `externalTrafficPolicy: Local` with its health-check node port.
    pub local_health_check_port: Option<i32>,
    /// Session affinity ClientIP.
    pub client_ip_affinity: bool,
    /// `clusterServiceLoadBalancerHealthProbeMode: shared` (port, path) — Cluster-policy services only.
    pub shared_probe: Option<(i32, &'a str)>,
}

fn proto_name(p: ProbeProtocol) -> &'static str {
    match p {
        ProbeProtocol::Tcp => "Tcp",
        ProbeProtocol::Http => "Http",
        ProbeProtocol::Https => "Https",
    }
}

fn app_protocol(port: &ServicePort) -> Option<ProbeProtocol> {
    match port.app_protocol.as_deref()?.to_ascii_lowercase().as_str() {
        "http" => Some(ProbeProtocol::Http),
        "https" => Some(ProbeProtocol::Https),
        "tcp" => Some(ProbeProtocol::Tcp),
        _ => None,
    }
}

/// Rules and probes for every port and family of a Service.
pub fn expected_rules(
    spec: &ServiceLbSpec,
    ports: &[ServicePort],
    ctx: &RuleContext<'_>,
) -> Result<(Vec<PlannedRule>, Vec<PlannedProbe>), AnnotationError> {
    let dual = spec.dual_stack();
    let subnet = spec.internal_subnet.as_deref();
    let mut rules = Vec::new();
    let mut probes: Vec<PlannedProbe> = Vec::new();
    for &family in &spec.families {
        // The probe shared by every port of Local services (HTTP /healthz on the health-check node port).
        let local_probe = ctx.local_health_check_port.map(|p| PlannedProbe {
            name: rule_name(ctx.base, "TCP", p, subnet, dual, family),
            protocol: "Http",
            port: p,
            path: Some("/healthz".into()),
            interval: 5,
            num: 2,
        });
        let shared = match (ctx.local_health_check_port, ctx.shared_probe) {
            (None, Some((port, path))) => Some(PlannedProbe {
                name: SHARED_PROBE_NAME.into(),
                protocol: "Http",
                port,
                path: Some(path.to_string()),
                interval: spec.probe_interval,
                num: spec.probe_num,
            }),
            _ => None,
        };
        let add_probe = |probes: &mut Vec<PlannedProbe>, p: PlannedProbe| {
            if !probes.iter().any(|x| x.name == p.name) {
                probes.push(p);
            }
        };
        let ha = spec.ha_ports;
        if ha && !(ctx.standard_sku && spec.internal) {
            return Err(AnnotationError {
                key: format!("{PREFIX}azure-load-balancer-enable-high-availability-ports"),
                value: "true".into(),
                rule: "HA ports need an internal load balancer of the standard SKU".into(),
            });
        }
        for (i, port) in ports.iter().enumerate() {
            if ha && i > 0 {
                break;
            }
            let over = spec.ports.get(&port.port).cloned().unwrap_or_default();
            if over.no_lb_rule {
                continue;
            }
            let proto_k8s = port.protocol.as_deref().unwrap_or("TCP");
            let protocol = match (proto_k8s, ha) {
                (_, true) => "All",
                ("TCP", _) => "Tcp",
                ("UDP", _) => "Udp",
                ("SCTP", _) if ctx.standard_sku && spec.internal => "All",
                (other, _) => {
                    return Err(AnnotationError {
                        key: "spec.ports.protocol".into(),
                        value: other.into(),
                        rule: "only TCP and UDP are supported (SCTP on internal standard load balancers)".into(),
                    })
                }
            };
            let name = rule_name(ctx.base, proto_k8s, port.port, subnet, dual, family);
            let node_port = port.node_port.unwrap_or(0);
            // Floating IP is off when asked, and for internal IPv6 backends (Azure cannot do DSR there).
            let floating = !(spec.floating_ip_disabled || (spec.internal && family == Family::V6));
            // Probe: Local shared probe, the cluster-wide shared probe, or one per TCP port.
            let probe = if let Some(p) = &local_probe {
                add_probe(&mut probes, p.clone());
                Some(p.name.clone())
            } else if let Some(p) = &shared {
                add_probe(&mut probes, p.clone());
                Some(p.name.clone())
            } else if over.no_probe_rule || (proto_k8s != "TCP" && over.probe_protocol.is_none()) {
                None
            } else {
                let mut protocol = over
                    .probe_protocol
                    .or_else(|| app_protocol(port))
                    .or(spec.probe_protocol)
                    .unwrap_or(ProbeProtocol::Tcp);
                if protocol == ProbeProtocol::Https && !ctx.standard_sku {
                    protocol = ProbeProtocol::Tcp;
                }
                let probe_port = match over.probe_port.as_deref() {
                    None => node_port,
                    Some(p) => match p.parse::<i32>() {
                        Ok(n) => n,
                        Err(_) => ports
                            .iter()
                            .find(|x| x.name.as_deref() == Some(p))
                            .and_then(|x| x.node_port)
                            .ok_or_else(|| AnnotationError {
                                key: format!("{PREFIX}port_{}_health-probe_port", port.port),
                                value: p.into(),
                                rule: "names neither a port number nor a port of this service".into(),
                            })?,
                    },
                };
                let path = (protocol != ProbeProtocol::Tcp).then(|| {
                    over.probe_path
                        .clone()
                        .or_else(|| spec.probe_path.clone())
                        .unwrap_or_else(|| "/".into())
                });
                let p = PlannedProbe {
                    name: name.clone(),
                    protocol: proto_name(protocol),
                    port: probe_port,
                    path,
                    interval: over.probe_interval.unwrap_or(spec.probe_interval),
                    num: over.probe_num.unwrap_or(spec.probe_num),
                };
                if p.interval * p.num >= 120 {
                    return Err(AnnotationError {
                        key: format!("{PREFIX}port_{}_health-probe_interval", port.port),
                        value: p.interval.to_string(),
                        rule: "interval × num-of-probe must be less than 120 seconds".into(),
                    });
                }
                add_probe(&mut probes, p);
                Some(name.clone())
            };
            if !ha && !floating && !(1..=65535).contains(&node_port) {
                return Err(AnnotationError {
                    key: "spec.ports.nodePort".into(),
                    value: node_port.to_string(),
                    rule: format!(
                        "port {} has no node port, which a rule without floating IP needs (is allocateLoadBalancerNodePorts false?)",
                        port.port
                    ),
                });
            }
            rules.push(PlannedRule {
                name,
                protocol,
                frontend_port: if ha { 0 } else { port.port },
                backend_port: if ha {
                    0
                } else if floating {
                    port.port
                } else {
                    node_port
                },
                floating_ip: floating,
                load_distribution: if ctx.client_ip_affinity { "SourceIP" } else { "Default" },
                idle_timeout_minutes: spec.idle_timeout_minutes.unwrap_or(DEFAULT_IDLE_TIMEOUT),
                tcp_reset: ctx.standard_sku && protocol != "Udp" && !spec.tcp_reset_disabled,
                disable_outbound_snat: ctx.standard_sku && ctx.disable_outbound_snat,
                standard_sku: ctx.standard_sku,
                probe,
                family,
            });
        }
    }
    // ARM refuses probes outside 1..65535: a Service without node ports must say how it is probed.
    if let Some(p) = probes.iter().find(|p| !(1..=65535).contains(&p.port)) {
        return Err(AnnotationError {
            key: "spec.ports.nodePort".into(),
            value: p.port.to_string(),
            rule: format!(
                "health probe {} would use port {}: ARM needs 1..65535 (the port has no node port; set \
                 {PREFIX}port_<port>_health-probe_port, or {PREFIX}port_<port>_no_probe_rule)",
                p.name, p.port
            ),
        });
    }
    Ok((rules, probes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadbalancer::annotations::parse;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    fn svc(ann: serde_json::Value, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s", "annotations": ann}, "spec": spec})).unwrap()
    }

    fn ctx(base: &str) -> RuleContext<'_> {
        RuleContext {
            base,
            standard_sku: true,
            disable_outbound_snat: false,
            local_health_check_port: None,
            client_ip_affinity: false,
            shared_probe: None,
        }
    }

    fn plan(s: &Service, c: &RuleContext<'_>) -> Result<(Vec<PlannedRule>, Vec<PlannedProbe>), AnnotationError> {
        let (spec, _) = parse(s).unwrap();
        let ports = s.spec.as_ref().unwrap().ports.clone().unwrap_or_default();
        expected_rules(&spec, &ports, c)
    }

    #[test]
    fn cluster_policy_tcp_and_udp() {
        let s = svc(
            json!({}),
            json!({"ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
        );
        let (rules, probes) = plan(&s, &ctx("abase")).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].name, "abase-TCP-80");
        assert_eq!(
            (
                rules[0].protocol,
                rules[0].frontend_port,
                rules[0].backend_port,
                rules[0].floating_ip
            ),
            ("Tcp", 80, 80, true)
        );
        assert!(rules[0].tcp_reset && rules[0].idle_timeout_minutes == 4);
        assert_eq!(rules[0].probe.as_deref(), Some("abase-TCP-80"));
        assert_eq!(rules[1].protocol, "Udp");
        assert!(rules[1].probe.is_none() && !rules[1].tcp_reset);
        assert_eq!(
            probes,
            vec![PlannedProbe {
                name: "abase-TCP-80".into(),
                protocol: "Tcp",
                port: 30080,
                path: None,
                interval: 5,
                num: 2
            }]
        );
    }

    #[test]
    fn local_policy_shares_one_http_probe() {
        let s = svc(
            json!({}),
            json!({"ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]}),
        );
        let mut c = ctx("abase");
        c.local_health_check_port = Some(34567);
        let (rules, probes) = plan(&s, &c).unwrap();
        assert_eq!(
            probes,
            vec![PlannedProbe {
                name: "abase-TCP-34567".into(),
                protocol: "Http",
                port: 34567,
                path: Some("/healthz".into()),
                interval: 5,
                num: 2
            }]
        );
        assert!(rules.iter().all(|r| r.probe.as_deref() == Some("abase-TCP-34567")));
    }

    #[test]
    fn annotations_shape_rules_and_probes() {
        let s = svc(
            json!({
                format!("{PREFIX}azure-load-balancer-health-probe-protocol"): "Http",
                format!("{PREFIX}azure-load-balancer-health-probe-request-path"): "/ready",
                format!("{PREFIX}port_443_health-probe_protocol"): "Https",
                format!("{PREFIX}port_443_health-probe_port"): "metrics",
                format!("{PREFIX}port_8080_no_lb_rule"): "true",
                format!("{PREFIX}azure-disable-load-balancer-floating-ip"): "true",
                format!("{PREFIX}azure-load-balancer-tcp-idle-timeout"): "15",
            }),
            json!({"sessionAffinity": "ClientIP", "ports": [
                {"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}, {"name": "metrics", "port": 9090, "nodePort": 30909}, {"port": 8080, "nodePort": 30808}]}),
        );
        let mut c = ctx("abase");
        c.client_ip_affinity = true;
        let (rules, probes) = plan(&s, &c).unwrap();
        assert_eq!(rules.len(), 3, "port 8080 has no rule");
        assert_eq!(
            (
                rules[0].backend_port,
                rules[0].floating_ip,
                rules[0].idle_timeout_minutes,
                rules[0].load_distribution
            ),
            (30080, false, 15, "SourceIP")
        );
        assert_eq!(
            probes[0],
            PlannedProbe {
                name: "abase-TCP-80".into(),
                protocol: "Http",
                port: 30080,
                path: Some("/ready".into()),
                interval: 5,
                num: 2
            }
        );
        assert_eq!((probes[1].protocol, probes[1].port), ("Https", 30909));
        // Basic SKU: Https falls back to Tcp.
        let mut basic = ctx("abase");
        basic.standard_sku = false;
        let (rules, probes) = plan(&s, &basic).unwrap();
        assert_eq!(probes[1].protocol, "Tcp");
        assert!(rules.iter().all(|r| !r.tcp_reset && !r.disable_outbound_snat));
    }

    #[test]
    fn dual_stack_internal_ha_ports_and_errors() {
        let ann = json!({format!("{PREFIX}azure-load-balancer-internal"): "true", format!("{PREFIX}azure-load-balancer-enable-high-availability-ports"): "true"});
        let s = svc(
            ann.clone(),
            json!({"ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]}),
        );
        let (rules, _) = plan(&s, &ctx("abase")).unwrap();
        assert_eq!(rules.len(), 2, "one HA rule per family");
        assert_eq!(
            (rules[0].name.as_str(), rules[0].protocol, rules[0].frontend_port),
            ("abase-TCP-80", "All", 0)
        );
        assert_eq!(rules[1].name, "abase-TCP-80-IPv6");
        assert!(!rules[1].floating_ip, "internal IPv6 backends cannot use floating IP");
        let mut basic = ctx("abase");
        basic.standard_sku = false;
        assert!(plan(&s, &basic)
            .unwrap_err()
            .key
            .ends_with("enable-high-availability-ports"));
        let sctp = svc(json!({}), json!({"ports": [{"port": 9, "protocol": "SCTP"}]}));
        assert_eq!(plan(&sctp, &ctx("abase")).unwrap_err().key, "spec.ports.protocol");
        let bad_port = svc(
            json!({format!("{PREFIX}port_80_health-probe_port"): "nope"}),
            json!({"ports": [{"port": 80, "nodePort": 30080}]}),
        );
        assert!(plan(&bad_port, &ctx("abase"))
            .unwrap_err()
            .rule
            .contains("neither a port number"));
    }

    #[test]
    fn no_probe_on_port_zero() {
        // A Service without node ports (allocateLoadBalancerNodePorts: false, or an API server that did not
        // allocate them): no probe on port 0 is ever planned.
        let s = svc(json!({}), json!({"ports": [{"port": 80, "protocol": "TCP"}]}));
        let err = plan(&s, &ctx("a1")).unwrap_err();
        assert_eq!(err.key, "spec.ports.nodePort");
        assert!(err.rule.contains("1..65535"), "{}", err.rule);
        // With an explicit probe port it works.
        let s = svc(
            json!({"service.beta.kubernetes.io/port_80_health-probe_port": "8080"}),
            json!({"ports": [{"port": 80, "protocol": "TCP"}]}),
        );
        let (_, probes) = plan(&s, &ctx("a1")).unwrap();
        assert_eq!(probes[0].port, 8080);
        // Without floating IP the backend port is the node port: refused when there is none.
        let s = svc(
            json!({"service.beta.kubernetes.io/azure-disable-load-balancer-floating-ip": "true", "service.beta.kubernetes.io/port_80_no_probe_rule": "true"}),
            json!({"ports": [{"port": 80, "protocol": "TCP"}]}),
        );
        assert_eq!(plan(&s, &ctx("a1")).unwrap_err().key, "spec.ports.nodePort");
    }

    #[test]
    fn shared_probe_mode() {
        let s = svc(
            json!({}),
            json!({"ports": [{"port": 80, "nodePort": 30080}, {"port": 81, "nodePort": 30081}]}),
        );
        let mut c = ctx("abase");
        c.shared_probe = Some((10256, "/healthz"));
        let (rules, probes) = plan(&s, &c).unwrap();
        assert_eq!(probes.len(), 1);
        assert_eq!((probes[0].name.as_str(), probes[0].port), (SHARED_PROBE_NAME, 10256));
        assert!(rules.iter().all(|r| r.probe.as_deref() == Some(SHARED_PROBE_NAME)));
    }
}
