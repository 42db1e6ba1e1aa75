//! Service annotations (prefix `service.beta.kubernetes.io/`) parsed into a typed, validated spec.
//! Bad input is an [`AnnotationError`] naming the annotation (or field), its value and the rule; invalid
//! source ranges are warnings (upstream emits an event and adds a deny-all rule) rather than errors.

use super::names::Family;
use crate::config::parse_tags;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The annotation prefix.
pub const PREFIX: &str = "service.beta.kubernetes.io/";

/// Whether an annotation does what upstream's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed, validated and honoured.
    Implemented,
    /// Accepted but not honoured yet: a Service that sets it gets an `UnsupportedAnnotation` Warning event
    /// saying so (never silently ignored). The text says what happens instead.
    NotImplemented(&'static str),
}

/// One Service annotation of upstream's (without [`PREFIX`]; `port_{N}_...` stands for every port).
#[derive(Debug, Clone, Copy)]
pub struct AnnotationDoc {
    /// The name after the prefix.
    pub name: &'static str,
    /// Accepted values.
    pub values: &'static str,
    /// What applies when it is absent.
    pub default: &'static str,
    /// Implemented or not.
    pub support: Support,
}

const fn doc(name: &'static str, values: &'static str, default: &'static str, support: Support) -> AnnotationDoc {
    AnnotationDoc {
        name,
        values,
        default,
        support,
    }
}

use Support::{Implemented as YES, NotImplemented as NO};

const PLS: Support = YES;

/// Every Service annotation upstream reads, with its values, default and whether it is implemented here.
/// `docs/annotations.md` is generated from this table (a test keeps the two equal).
pub const ANNOTATIONS: &[AnnotationDoc] = &[
    doc(
        "azure-load-balancer-internal",
        "`true` (exactly; anything else is public)",
        "public",
        YES,
    ),
    doc(
        "azure-load-balancer-internal-subnet",
        "subnet name in the cluster's virtual network (internal only)",
        "azure.json `subnetName`",
        YES,
    ),
    doc(
        "azure-load-balancer-mode",
        "`__auto__` or comma-separated VM set names (basic SKU)",
        "the primary VM set",
        YES,
    ),
    doc(
        "azure-load-balancer-resource-group",
        "resource group of the Service's public IPs",
        "azure.json `resourceGroup`",
        YES,
    ),
    doc(
        "azure-load-balancer-ipv4",
        "an IPv4 address (replaces `spec.loadBalancerIP`)",
        "allocated",
        YES,
    ),
    doc("azure-load-balancer-ipv6", "an IPv6 address", "allocated", YES),
    doc(
        "azure-pip-name",
        "name of an existing or to-be-created public IP (IPv4)",
        "`<cluster>-a<uid without dashes>`",
        YES,
    ),
    doc(
        "azure-pip-name-ipv6",
        "name of the IPv6 public IP",
        "`<cluster>-a<uid without dashes>-IPv6`",
        YES,
    ),
    doc(
        "azure-pip-prefix-id",
        "resource id of a public IP prefix (IPv4)",
        "none",
        YES,
    ),
    doc(
        "azure-pip-prefix-id-ipv6",
        "resource id of a public IP prefix (IPv6)",
        "none",
        YES,
    ),
    doc(
        "azure-pip-tags",
        "`k=v,k2=v2` (merged into the public IP's tags)",
        "none",
        YES,
    ),
    doc(
        "azure-pip-ip-tags",
        "`type=tag,...` IP tags of the Service's public IP (an existing one: see `enableIPTagMutationForExistingPublicIP`)",
        "none",
        YES,
    ),
    doc(
        "azure-dns-label-name",
        "DNS label of the public IP (`\"\"` removes it)",
        "none",
        YES,
    ),
    doc(
        "azure-load-balancer-tcp-idle-timeout",
        "minutes, 4..=100",
        "Azure's 4",
        YES,
    ),
    doc(
        "azure-load-balancer-disable-tcp-reset",
        "`true`",
        "TCP reset on (standard SKU)",
        YES,
    ),
    doc(
        "azure-disable-load-balancer-floating-ip",
        "`true`",
        "floating IP on",
        YES,
    ),
    doc(
        "azure-load-balancer-enable-high-availability-ports",
        "`true` (internal standard LB)",
        "per-port rules",
        YES,
    ),
    doc(
        "azure-load-balancer-health-probe-protocol",
        "`Tcp`, `Http`, `Https` (anything else: TCP and a Warning event)",
        "TCP (HTTP for `externalTrafficPolicy: Local`)",
        YES,
    ),
    doc(
        "azure-load-balancer-health-probe-request-path",
        "path for HTTP(S) probes",
        "`/`",
        YES,
    ),
    doc(
        "azure-load-balancer-health-probe-interval",
        "seconds, ≥ 5 (interval × num-of-probe < 120)",
        "5",
        YES,
    ),
    doc("azure-load-balancer-health-probe-num-of-probe", "≥ 2", "2", YES),
    doc("port_{N}_no_lb_rule", "`true`: no rule for port N", "a rule", YES),
    doc("port_{N}_no_probe_rule", "`true`: no probe for port N", "a probe", YES),
    doc(
        "port_{N}_health-probe_protocol",
        "`Tcp`, `Http`, `Https`",
        "the Service-wide protocol",
        YES,
    ),
    doc(
        "port_{N}_health-probe_port",
        "a port number or a port name of the Service",
        "the node port",
        YES,
    ),
    doc(
        "port_{N}_health-probe_interval",
        "seconds, ≥ 5",
        "the Service-wide interval",
        YES,
    ),
    doc(
        "port_{N}_health-probe_num-of-probe",
        "≥ 2",
        "the Service-wide count",
        YES,
    ),
    doc(
        "port_{N}_health-probe_request-path",
        "path for HTTP(S) probes of port N",
        "the Service-wide path",
        YES,
    ),
    doc(
        "azure-allowed-service-tags",
        "comma-separated service tags",
        "none",
        YES,
    ),
    doc(
        "azure-allowed-ip-ranges",
        "comma-separated CIDRs (not with `spec.loadBalancerSourceRanges`)",
        "everyone",
        YES,
    ),
    doc(
        "load-balancer-source-ranges",
        "comma-separated CIDRs (legacy form of `spec.loadBalancerSourceRanges`)",
        "everyone",
        YES,
    ),
    doc(
        "azure-deny-all-except-load-balancer-source-ranges",
        "`true`",
        "no deny rule",
        YES,
    ),
    doc(
        "azure-disable-load-balancer-nsg-rule",
        "`true`: no security rules for the Service",
        "rules managed",
        YES,
    ),
    doc(
        "azure-additional-public-ips",
        "comma-separated IPs added to the Service's status",
        "none",
        YES,
    ),
    doc(
        "azure-shared-securityrule",
        "`true`",
        "-",
        NO("security rules are always shared: one aggregated rule per destination, as current upstream"),
    ),
    doc(
        "azure-load-balancer-configurations",
        "comma-separated names of `multipleStandardLoadBalancerConfigurations` entries (not with a requested IP)",
        "every eligible entry (fewest rules wins)",
        YES,
    ),
    doc("azure-pls-create", "`true`", "no PLS", PLS),
    doc("azure-pls-name", "PLS name", "`pls-<frontend>`", PLS),
    doc(
        "azure-pls-resource-group",
        "resource group of the PLS",
        "the cluster's",
        PLS,
    ),
    doc(
        "azure-pls-ip-configuration-subnet",
        "subnet of the PLS IP configurations",
        "the Service's subnet",
        PLS,
    ),
    doc("azure-pls-ip-configuration-ip-address-count", "1..=8", "1", PLS),
    doc(
        "azure-pls-ip-configuration-ip-address",
        "space-separated static IPs",
        "dynamic",
        PLS,
    ),
    doc("azure-pls-fqdns", "space-separated FQDNs", "none", PLS),
    doc("azure-pls-proxy-protocol", "`true`", "off", PLS),
    doc(
        "azure-pls-visibility",
        "space-separated subscription ids or `*`",
        "none",
        PLS,
    ),
    doc(
        "azure-pls-auto-approval",
        "space-separated subscription ids",
        "none",
        PLS,
    ),
];

/// The catalogue entry of an annotation key (full key; `port_<N>_<what>` matched by its suffix).
pub fn annotation_doc(key: &str) -> Option<&'static AnnotationDoc> {
    let name = key.strip_prefix(PREFIX)?;
    let name = match name.strip_prefix("port_").and_then(|r| r.split_once('_')) {
        Some((_, what)) => format!("port_{{N}}_{what}"),
        None => name.to_string(),
    };
    ANNOTATIONS.iter().find(|d| d.name == name)
}

/// Warnings for the annotations a Service sets that are not implemented, and for `azure-` annotations that
/// are not upstream's at all (a typo would otherwise be ignored without a word).
pub fn unsupported(annotations: &BTreeMap<String, String>) -> Vec<Warning> {
    let mut out = Vec::new();
    for k in annotations.keys() {
        let Some(name) = k.strip_prefix(PREFIX) else { continue };
        match annotation_doc(k) {
            Some(AnnotationDoc {
                support: Support::NotImplemented(why),
                ..
            }) => out.push(Warning {
                reason: "UnsupportedAnnotation",
                message: format!("{k} is not implemented by this cloud provider and has no effect: {why}"),
            }),
            Some(_) => {}
            None if name.starts_with("azure-") => out.push(Warning {
                reason: "UnsupportedAnnotation",
                message: format!(
                    "{k} is not an annotation of the Azure cloud provider and has no effect (see docs/annotations.md)"
                ),
            }),
            None => {}
        }
    }
    out
}

/// The annotation reference (`docs/annotations.md`'s table), from [`ANNOTATIONS`].
pub fn reference_table() -> String {
    let mut t = String::from(
        "| annotation (`service.beta.kubernetes.io/...`) | values | default | implemented |\n|---|---|---|---|\n",
    );
    for d in ANNOTATIONS {
        let status = match d.support {
            Support::Implemented => "yes".to_string(),
            Support::NotImplemented(why) => format!("no: {why} (Warning event `UnsupportedAnnotation`)"),
        };
        t.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name, d.values, d.default, status
        ));
    }
    t
}

/// An invalid annotation or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}={value:?}: {rule}")]
pub struct AnnotationError {
    /// The full annotation key, or the field (`spec.loadBalancerIP`).
    pub key: String,
    /// The value.
    pub value: String,
    /// What is wrong.
    pub rule: String,
}

/// A problem worth a Warning event that does not stop reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Event reason (`InvalidSourceRanges`, `InvalidAllowedIPRanges`, `ConflictConfiguration`).
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// Health-probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProtocol {
    /// TCP.
    Tcp,
    /// HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// Per-port overrides (`port_<port>_...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortOverrides {
    /// `port_<p>_no_lb_rule`.
    pub no_lb_rule: bool,
    /// `port_<p>_no_probe_rule`.
    pub no_probe_rule: bool,
    /// `port_<p>_health-probe_protocol`.
    pub probe_protocol: Option<ProbeProtocol>,
    /// `port_<p>_health-probe_port` (a port number or a port name of the service).
    pub probe_port: Option<String>,
    /// `port_<p>_health-probe_interval`.
    pub probe_interval: Option<i32>,
    /// `port_<p>_health-probe_num-of-probe`.
    pub probe_num: Option<i32>,
    /// `port_<p>_health-probe_request-path`.
    pub probe_path: Option<String>,
}

/// Everything the annotations and LB-relevant fields of a Service ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceLbSpec {
    /// `azure-load-balancer-internal` is exactly `"true"`.
    pub internal: bool,
    /// `azure-load-balancer-internal-subnet` (internal services only).
    pub internal_subnet: Option<String>,
    /// `azure-load-balancer-resource-group`: resource group of the service's public IPs.
    pub pip_resource_group: Option<String>,
    /// `azure-pip-name` (IPv4).
    pub pip_name_v4: Option<String>,
    /// `azure-pip-name-ipv6`.
    pub pip_name_v6: Option<String>,
    /// Requested IPv4 address (`azure-load-balancer-ipv4`, else `spec.loadBalancerIP`).
    pub ip_v4: Option<IpAddr>,
    /// Requested IPv6 address (`azure-load-balancer-ipv6`, else an IPv6 `spec.loadBalancerIP`).
    pub ip_v6: Option<IpAddr>,
    /// `azure-dns-label-name`: `Some("")` removes the label.
    pub dns_label: Option<String>,
    /// `azure-load-balancer-tcp-idle-timeout` in minutes (4..=100).
    pub idle_timeout_minutes: Option<i32>,
    /// `azure-load-balancer-health-probe-protocol`.
    pub probe_protocol: Option<ProbeProtocol>,
    /// `azure-load-balancer-health-probe-request-path`.
    pub probe_path: Option<String>,
    /// `azure-load-balancer-health-probe-interval` (default 5).
    pub probe_interval: i32,
    /// `azure-load-balancer-health-probe-num-of-probe` (default 2).
    pub probe_num: i32,
    /// `azure-allowed-service-tags`.
    pub allowed_service_tags: Vec<String>,
    /// Valid source ranges (`spec.loadBalancerSourceRanges`, or `azure-allowed-ip-ranges` /
    /// `load-balancer-source-ranges`).
    pub source_ranges: Vec<IpNet>,
    /// True when some range was invalid: a deny-all rule protects the service.
    pub invalid_ranges: bool,
    /// `azure-deny-all-except-load-balancer-source-ranges`.
    pub deny_all_except_source_ranges: bool,
    /// `azure-load-balancer-mode` (basic SKU).
    pub mode: Option<String>,
    /// `azure-load-balancer-configurations` (multiple standard load balancers), when set.
    pub load_balancer_configurations: Option<Vec<String>>,
    /// `azure-load-balancer-enable-high-availability-ports`.
    pub ha_ports: bool,
    /// `azure-disable-load-balancer-floating-ip`.
    pub floating_ip_disabled: bool,
    /// `azure-pip-tags`.
    pub pip_tags: BTreeMap<String, String>,
    /// `azure-pip-ip-tags` as (type, tag) pairs; `Some(empty)` when set but blank.
    pub ip_tags: Option<Vec<(String, String)>>,
    /// `azure-pls-create: "true"` and the other `azure-pls-*` annotations.
    pub pls: Option<PlsSpec>,
    /// `azure-additional-public-ips`.
    pub additional_public_ips: Vec<IpAddr>,
    /// `azure-load-balancer-disable-tcp-reset`.
    pub tcp_reset_disabled: bool,
    /// `azure-disable-load-balancer-nsg-rule`.
    pub nsg_rules_disabled: bool,
    /// `azure-pip-prefix-id` / `-ipv6`.
    pub pip_prefix_v4: Option<String>,
    /// IPv6 PIP prefix.
    pub pip_prefix_v6: Option<String>,
    /// Per-port overrides by port number.
    pub ports: BTreeMap<i32, PortOverrides>,
    /// IP families (from `spec.ipFamilies`; IPv4 when empty).
    pub families: Vec<Family>,
}

/// What the `azure-pls-*` annotations ask for (upstream's Private Link Service).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlsSpec {
    /// `azure-pls-name` (default `pls-<frontend name>`).
    pub name: Option<String>,
    /// `azure-pls-resource-group` (default `privateLinkServiceResourceGroup`, else the cluster's).
    pub resource_group: Option<String>,
    /// `azure-pls-ip-configuration-subnet`, else (internal) `azure-load-balancer-internal-subnet`.
    pub subnet: Option<String>,
    /// `azure-pls-ip-configuration-ip-address-count`: 1..=8, default 1.
    pub ip_count: u8,
    /// `azure-pls-ip-configuration-ip-address`: static IPv4 addresses, the first one primary.
    pub static_ips: Vec<String>,
    /// `azure-pls-fqdns`.
    pub fqdns: Vec<String>,
    /// `azure-pls-proxy-protocol`.
    pub proxy_protocol: bool,
    /// `azure-pls-visibility` (`["*"]` for everyone).
    pub visibility: Vec<String>,
    /// `azure-pls-auto-approval`.
    pub auto_approval: Vec<String>,
    /// Any PLS setting besides `azure-pls-create` (a Service that only asks for a PLS may share another
    /// Service's on the same frontend; one with settings may not).
    pub has_settings: bool,
}

impl ServiceLbSpec {
    /// Two families.
    pub fn dual_stack(&self) -> bool {
        self.families.len() == 2
    }
}

fn err(key: &str, value: &str, rule: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

/// Validates a CIDR as upstream's `ParsePrefix`: host bits must be zero (`10.10.10.1/24` is invalid).
pub fn parse_prefix(s: &str) -> Option<IpNet> {
    let net: IpNet = s.trim().parse().ok()?;
    (net.addr() == net.network()).then_some(net)
}

fn int_in(key: &str, v: &str, min: i32, max: i32) -> Result<i32, AnnotationError> {
    match v.trim().parse::<i32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(key, v, format!("must be an integer in {min}..={max}"))),
    }
}

fn probe_protocol(key: &str, v: &str) -> Result<ProbeProtocol, AnnotationError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(ProbeProtocol::Tcp),
        "http" => Ok(ProbeProtocol::Http),
        "https" => Ok(ProbeProtocol::Https),
        _ => Err(err(key, v, "is not one of: Tcp, Http, Https")),
    }
}

fn csv(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses and validates a Service's load-balancer configuration.
pub fn parse(service: &Service) -> Result<(ServiceLbSpec, Vec<Warning>), AnnotationError> {
    let empty = BTreeMap::new();
    let ann = service.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |name: &str| ann.get(&format!("{PREFIX}{name}")).map(String::as_str);
    let key = |name: &str| format!("{PREFIX}{name}");
    let is_true = |name: &str| get(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let spec = service.spec.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    let mut s = ServiceLbSpec {
        internal: get("azure-load-balancer-internal") == Some("true"),
        probe_interval: 5,
        probe_num: 2,
        ..Default::default()
    };
    if s.internal {
        s.internal_subnet = get("azure-load-balancer-internal-subnet")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
    }
    let opt = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    s.pip_resource_group = opt("azure-load-balancer-resource-group");
    s.pip_name_v4 = opt("azure-pip-name");
    s.pip_name_v6 = opt("azure-pip-name-ipv6");
    s.pip_prefix_v4 = opt("azure-pip-prefix-id");
    s.pip_prefix_v6 = opt("azure-pip-prefix-id-ipv6");
    s.mode = opt("azure-load-balancer-mode");
    s.load_balancer_configurations = opt("azure-load-balancer-configurations").map(|v| csv(&v));
    s.dns_label = get("azure-dns-label-name").map(|v| v.trim().to_string());
    s.families = match spec.ip_families.as_deref() {
        None | Some([]) => vec![Family::V4],
        Some(fams) => fams
            .iter()
            .map(|f| match f.as_str() {
                "IPv4" => Ok(Family::V4),
                "IPv6" => Ok(Family::V6),
                other => Err(err("spec.ipFamilies", other, "is not one of: IPv4, IPv6")),
            })
            .collect::<Result<_, _>>()?,
    };
    for (name, family) in [
        ("azure-load-balancer-ipv4", Family::V4),
        ("azure-load-balancer-ipv6", Family::V6),
    ] {
        if let Some(v) = opt(name) {
            let ip: IpAddr = v.parse().map_err(|_| err(&key(name), &v, "is not an IP address"))?;
            if ip.is_ipv6() != (family == Family::V6) {
                return Err(err(&key(name), &v, format!("is not an {} address", family.as_str())));
            }
            match family {
                Family::V4 => s.ip_v4 = Some(ip),
                Family::V6 => s.ip_v6 = Some(ip),
            }
        }
    }
    if let Some(v) = spec
        .load_balancer_ip
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        let ip: IpAddr = v
            .parse()
            .map_err(|_| err("spec.loadBalancerIP", v, "is not an IP address"))?;
        if ip.is_ipv6() {
            s.ip_v6.get_or_insert(ip);
        } else {
            s.ip_v4.get_or_insert(ip);
        }
    }
    if let Some(v) = get("azure-load-balancer-tcp-idle-timeout") {
        s.idle_timeout_minutes = Some(int_in(&key("azure-load-balancer-tcp-idle-timeout"), v, 4, 100)?);
    }
    if let Some(v) = get("azure-load-balancer-health-probe-protocol") {
        // As upstream: an unknown protocol is not fatal; the probe falls back to TCP.
        match probe_protocol(&key("azure-load-balancer-health-probe-protocol"), v) {
            Ok(p) => s.probe_protocol = Some(p),
            Err(e) => {
                s.probe_protocol = Some(ProbeProtocol::Tcp);
                warnings.push(Warning {
                    reason: "InvalidAnnotation",
                    message: format!("{e}; the health probe uses TCP"),
                });
            }
        }
    }
    s.probe_path = opt("azure-load-balancer-health-probe-request-path");
    if let Some(v) = get("azure-load-balancer-health-probe-interval") {
        s.probe_interval = int_in(&key("azure-load-balancer-health-probe-interval"), v, 5, i32::MAX)?;
    }
    if let Some(v) = get("azure-load-balancer-health-probe-num-of-probe") {
        s.probe_num = int_in(&key("azure-load-balancer-health-probe-num-of-probe"), v, 2, i32::MAX)?;
    }
    if s.probe_interval.saturating_mul(s.probe_num) >= 120 {
        return Err(err(
            &key("azure-load-balancer-health-probe-interval"),
            &s.probe_interval.to_string(),
            format!(
                "interval × num-of-probe ({} × {}) must be less than 120 seconds",
                s.probe_interval, s.probe_num
            ),
        ));
    }
    s.allowed_service_tags = get("azure-allowed-service-tags").map(csv).unwrap_or_default();
    // Source ranges: the spec field or one of the annotations, never both.
    let spec_ranges = spec.load_balancer_source_ranges.clone().unwrap_or_default();
    let ann_ranges = get("azure-allowed-ip-ranges").or_else(|| {
        ann.get(&format!("{PREFIX}load-balancer-source-ranges"))
            .map(String::as_str)
    });
    let (ranges, reason) = match (spec_ranges.is_empty(), ann_ranges) {
        (false, Some(v)) => {
            return Err(err(
                &key("azure-allowed-ip-ranges"),
                v,
                "cannot be used together with spec.loadBalancerSourceRanges: keep one of them",
            ))
        }
        (false, None) => (spec_ranges, "InvalidSourceRanges"),
        (true, Some(v)) => (csv(v), "InvalidAllowedIPRanges"),
        (true, None) => (Vec::new(), "InvalidSourceRanges"),
    };
    for r in ranges {
        match parse_prefix(&r) {
            Some(n) => s.source_ranges.push(n),
            None => {
                s.invalid_ranges = true;
                warnings.push(Warning {
                    reason,
                    message: format!(
                        "source range {r:?} is not a valid CIDR (host bits must be zero); traffic is denied"
                    ),
                });
            }
        }
    }
    if !s.source_ranges.is_empty() && !s.allowed_service_tags.is_empty() {
        warnings.push(Warning {
            reason: "ConflictConfiguration",
            message: "both source ranges and azure-allowed-service-tags are set: traffic from either is allowed".into(),
        });
    }
    s.deny_all_except_source_ranges = is_true("azure-deny-all-except-load-balancer-source-ranges");
    s.ha_ports = is_true("azure-load-balancer-enable-high-availability-ports");
    s.floating_ip_disabled = is_true("azure-disable-load-balancer-floating-ip");
    s.tcp_reset_disabled = is_true("azure-load-balancer-disable-tcp-reset");
    s.nsg_rules_disabled = is_true("azure-disable-load-balancer-nsg-rule");
    if is_true("azure-pls-create") {
        let words = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let ip_count = match get("azure-pls-ip-configuration-ip-address-count") {
            Some(v) => int_in(&key("azure-pls-ip-configuration-ip-address-count"), v, 1, 8)? as u8,
            None => 1,
        };
        let static_ips = words("azure-pls-ip-configuration-ip-address");
        for ip in &static_ips {
            if ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(err(
                    &key("azure-pls-ip-configuration-ip-address"),
                    ip,
                    "is not an IPv4 address (Private Link Service IP configurations are IPv4 only)",
                ));
            }
        }
        if static_ips.len() > usize::from(ip_count) {
            return Err(err(
                &key("azure-pls-ip-configuration-ip-address"),
                &static_ips.join(" "),
                format!(
                    "lists {} addresses but the IP configuration count is {ip_count}",
                    static_ips.len()
                ),
            ));
        }
        let mut visibility = words("azure-pls-visibility");
        if visibility.iter().any(|v| v == "*") {
            visibility = vec!["*".into()];
        }
        let subnet = opt("azure-pls-ip-configuration-subnet").or_else(|| s.internal_subnet.clone());
        s.pls = Some(PlsSpec {
            name: opt("azure-pls-name"),
            resource_group: opt("azure-pls-resource-group"),
            subnet,
            ip_count,
            static_ips,
            fqdns: words("azure-pls-fqdns"),
            proxy_protocol: is_true("azure-pls-proxy-protocol"),
            visibility,
            auto_approval: words("azure-pls-auto-approval"),
            // Upstream's serviceHasAdditionalConfigs.
            has_settings: [
                "azure-pls-name",
                "azure-pls-ip-configuration-subnet",
                "azure-pls-ip-configuration-ip-address-count",
                "azure-pls-ip-configuration-ip-address",
                "azure-pls-fqdns",
                "azure-pls-proxy-protocol",
                "azure-pls-visibility",
                "azure-pls-auto-approval",
            ]
            .iter()
            .any(|n| get(n).is_some()),
        });
    }
    if let Some(v) = get("azure-pip-ip-tags") {
        let mut tags = Vec::new();
        for pair in csv(v) {
            match pair.split_once('=') {
                Some((t, tag)) if !t.trim().is_empty() && !tag.trim().is_empty() => {
                    tags.push((t.trim().to_string(), tag.trim().to_string()))
                }
                _ => warnings.push(Warning {
                    reason: "InvalidAnnotation",
                    message: format!(
                        "{}: {pair:?} is not type=tag; the pair is ignored",
                        key("azure-pip-ip-tags")
                    ),
                }),
            }
        }
        s.ip_tags = Some(tags);
    }
    if let Some(v) = get("azure-pip-tags") {
        s.pip_tags = parse_tags(v, &BTreeMap::new()).0;
    }
    if let Some(v) = get("azure-additional-public-ips") {
        for ip in csv(v) {
            s.additional_public_ips.push(ip.parse().map_err(|_| {
                err(
                    &key("azure-additional-public-ips"),
                    v,
                    format!("{ip:?} is not an IP address"),
                )
            })?);
        }
    }
    // Per-port annotations.
    for (k, v) in ann {
        let Some(rest) = k.strip_prefix(PREFIX).and_then(|r| r.strip_prefix("port_")) else {
            continue;
        };
        // As upstream, a per-port key it does not understand is ignored (here with a Warning event), not
        // fatal for the whole Service; a bad value of a known one still is.
        let ignored = |why: &str| Warning {
            reason: "InvalidAnnotation",
            message: format!("{k}: {why}; the annotation is ignored"),
        };
        let Some((port, what)) = rest.split_once('_') else {
            warnings.push(ignored("expected port_<port>_<setting>"));
            continue;
        };
        let Ok(port) = port.parse::<i32>() else {
            warnings.push(ignored("the port in the key is not a number"));
            continue;
        };
        const KNOWN: [&str; 7] = [
            "no_lb_rule",
            "no_probe_rule",
            "health-probe_protocol",
            "health-probe_port",
            "health-probe_interval",
            "health-probe_num-of-probe",
            "health-probe_request-path",
        ];
        if !KNOWN.contains(&what) {
            warnings.push(ignored(&format!(
                "unknown per-port setting {what:?} (known: {})",
                KNOWN.join(", ")
            )));
            continue;
        }
        let o = s.ports.entry(port).or_default();
        match what {
            "no_lb_rule" => o.no_lb_rule = v.trim().eq_ignore_ascii_case("true"),
            "no_probe_rule" => o.no_probe_rule = v.trim().eq_ignore_ascii_case("true"),
            "health-probe_protocol" => match probe_protocol(k, v) {
                Ok(p) => o.probe_protocol = Some(p),
                Err(e) => {
                    o.probe_protocol = Some(ProbeProtocol::Tcp);
                    warnings.push(Warning {
                        reason: "InvalidAnnotation",
                        message: format!("{e}; the port's health probe uses TCP"),
                    });
                }
            },
            "health-probe_port" => o.probe_port = Some(v.trim().to_string()),
            "health-probe_interval" => o.probe_interval = Some(int_in(k, v, 5, i32::MAX)?),
            "health-probe_num-of-probe" => o.probe_num = Some(int_in(k, v, 2, i32::MAX)?),
            _ => o.probe_path = Some(v.trim().to_string()),
        }
    }
    warnings.extend(unsupported(ann));
    Ok((s, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(annotations: serde_json::Value, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "default", "uid": "u", "annotations": annotations}, "spec": spec})).unwrap()
    }

    fn a(name: &str) -> String {
        format!("{PREFIX}{name}")
    }

    #[test]
    fn defaults_and_values() {
        let (s, w) = parse(&svc(json!({}), json!({"type": "LoadBalancer"}))).unwrap();
        assert!(!s.internal && w.is_empty());
        assert_eq!((s.probe_interval, s.probe_num), (5, 2));
        assert_eq!(s.families, vec![Family::V4]);
        let ann = json!({
            a("azure-load-balancer-internal"): "true",
            a("azure-load-balancer-internal-subnet"): "apps",
            a("azure-load-balancer-tcp-idle-timeout"): "30",
            a("azure-load-balancer-health-probe-protocol"): "http",
            a("azure-load-balancer-ipv4"): "10.240.0.50",
            a("azure-allowed-service-tags"): "AzureFrontDoor.Backend, AzureCloud",
            a("azure-pip-tags"): "team=a, cost=b",
            a("port_80_no_probe_rule"): "TRUE",
            a("port_443_health-probe_request-path"): "/ready",
            a("azure-dns-label-name"): "",
        });
        let (s, _) = parse(&svc(
            ann,
            json!({"ipFamilies": ["IPv4", "IPv6"], "loadBalancerIP": "fd00::5"}),
        ))
        .unwrap();
        assert!(s.internal && s.dual_stack());
        assert_eq!(s.internal_subnet.as_deref(), Some("apps"));
        assert_eq!(s.idle_timeout_minutes, Some(30));
        assert_eq!(s.probe_protocol, Some(ProbeProtocol::Http));
        assert_eq!(s.ip_v4, Some("10.240.0.50".parse().unwrap()));
        assert_eq!(s.ip_v6, Some("fd00::5".parse().unwrap()));
        assert_eq!(s.allowed_service_tags, vec!["AzureFrontDoor.Backend", "AzureCloud"]);
        assert_eq!(s.pip_tags.get("cost").map(String::as_str), Some("b"));
        assert!(s.ports[&80].no_probe_rule);
        assert_eq!(s.ports[&443].probe_path.as_deref(), Some("/ready"));
        assert_eq!(s.dns_label.as_deref(), Some(""));
        // Internal needs the exact string "true"; the subnet is ignored otherwise.
        let (s, _) = parse(&svc(
            json!({a("azure-load-balancer-internal"): "True", a("azure-load-balancer-internal-subnet"): "x"}),
            json!({}),
        ))
        .unwrap();
        assert!(!s.internal && s.internal_subnet.is_none());
    }

    /// Every error names the annotation (or field) and the rule.
    #[test]
    fn errors_table() {
        let cases: Vec<(serde_json::Value, serde_json::Value, &str, &str)> = vec![
            (
                json!({a("azure-load-balancer-tcp-idle-timeout"): "3"}),
                json!({}),
                "azure-load-balancer-tcp-idle-timeout",
                "4..=100",
            ),
            (
                json!({a("azure-load-balancer-tcp-idle-timeout"): "x"}),
                json!({}),
                "azure-load-balancer-tcp-idle-timeout",
                "4..=100",
            ),
            (
                json!({a("azure-load-balancer-health-probe-interval"): "4"}),
                json!({}),
                "health-probe-interval",
                "5..=",
            ),
            (
                json!({a("azure-load-balancer-health-probe-num-of-probe"): "1"}),
                json!({}),
                "num-of-probe",
                "2..=",
            ),
            (
                json!({a("azure-load-balancer-health-probe-interval"): "60"}),
                json!({}),
                "health-probe-interval",
                "less than 120",
            ),
            (
                json!({a("azure-load-balancer-ipv4"): "fd00::1"}),
                json!({}),
                "azure-load-balancer-ipv4",
                "not an IPv4 address",
            ),
            (
                json!({a("azure-load-balancer-ipv6"): "nope"}),
                json!({}),
                "azure-load-balancer-ipv6",
                "not an IP address",
            ),
            (
                json!({}),
                json!({"loadBalancerIP": "1.2.3"}),
                "spec.loadBalancerIP",
                "not an IP address",
            ),
            (
                json!({a("azure-allowed-ip-ranges"): "10.0.0.0/8"}),
                json!({"loadBalancerSourceRanges": ["1.0.0.0/8"]}),
                "azure-allowed-ip-ranges",
                "together with spec.loadBalancerSourceRanges",
            ),
            (
                json!({a("azure-additional-public-ips"): "1.2.3.4,x"}),
                json!({}),
                "azure-additional-public-ips",
                "\"x\" is not an IP address",
            ),
            (
                json!({}),
                json!({"ipFamilies": ["IPv5"]}),
                "spec.ipFamilies",
                "IPv4, IPv6",
            ),
        ];
        for (ann, spec, key, rule) in cases {
            let e = parse(&svc(ann.clone(), spec)).unwrap_err();
            assert!(e.key.contains(key), "{ann}: {e}");
            assert!(e.to_string().contains(rule), "{ann}: {e}");
        }
    }

    #[test]
    fn invalid_ranges_warn_and_deny() {
        let (s, w) = parse(&svc(
            json!({}),
            json!({"loadBalancerSourceRanges": ["10.0.0.0/8", "10.10.10.1/24", "bogus"]}),
        ))
        .unwrap();
        assert_eq!(s.source_ranges, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(s.invalid_ranges);
        assert_eq!(w.len(), 2);
        assert!(w.iter().all(|w| w.reason == "InvalidSourceRanges"));
        let (_, w) = parse(&svc(json!({a("azure-allowed-ip-ranges"): "1.2.3.4/32, 5.6.7.8/33", a("azure-allowed-service-tags"): "AzureCloud"}), json!({}))).unwrap();
        let reasons: Vec<_> = w.iter().map(|w| w.reason).collect();
        assert_eq!(reasons, vec!["InvalidAllowedIPRanges", "ConflictConfiguration"]);
    }

    #[test]
    fn lenient_where_upstream_is_lenient() {
        let (s, w) = parse(&svc(
            json!({
                a("azure-load-balancer-health-probe-protocol"): "udp",
                a("port_80_health-probe_protocol"): "icmp",
                a("port_http_no_lb_rule"): "true",
                a("port_80_bogus"): "true",
                a("port_443_no_lb_rule"): "true",
            }),
            json!({}),
        ))
        .unwrap();
        assert_eq!(s.probe_protocol, Some(ProbeProtocol::Tcp));
        assert_eq!(s.ports[&80].probe_protocol, Some(ProbeProtocol::Tcp));
        assert!(s.ports[&443].no_lb_rule, "the valid per-port setting still applies");
        let msgs: Vec<&str> = w.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(w.len(), 4, "{msgs:?}");
        assert!(w.iter().all(|w| w.reason == "InvalidAnnotation"), "{w:?}");
        for part in [
            "\"udp\"",
            "\"icmp\"",
            "port_http_no_lb_rule",
            "unknown per-port setting \"bogus\"",
        ] {
            assert!(msgs.iter().any(|m| m.contains(part)), "{part}: {msgs:?}");
        }
    }

    #[test]
    fn unimplemented_and_unknown_annotations_are_warned_by_name() {
        let (_, w) = parse(&svc(
            json!({
                a("azure-shared-securityrule"): "true",
                a("azure-load-balancer-internl"): "true",
                a("aws-load-balancer-type"): "nlb",
                a("azure-dns-label-name"): "x",
            }),
            json!({}),
        ))
        .unwrap();
        let msgs: Vec<&str> = w.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(w.len(), 2, "{msgs:?}");
        assert!(w.iter().all(|w| w.reason == "UnsupportedAnnotation"));
        for part in [
            "azure-shared-securityrule is not implemented",
            "azure-load-balancer-internl is not an annotation",
        ] {
            assert!(msgs.iter().any(|m| m.contains(part)), "{part}: {msgs:?}");
        }
    }

    #[test]
    fn every_parsed_annotation_is_in_the_catalogue() {
        // Each key the parser reads has a row (so docs/annotations.md covers it).
        let src = include_str!("annotations.rs");
        let parse_fn = &src[src.find("pub fn parse(").unwrap()..src.find("#[cfg(test)]").unwrap()];
        let mut read = 0;
        for piece in parse_fn.split('"').skip(1).step_by(2) {
            if piece.starts_with("azure-") || piece == "load-balancer-source-ranges" {
                assert!(
                    annotation_doc(&format!("{PREFIX}{piece}")).is_some(),
                    "{piece} has no catalogue row"
                );
                read += 1;
            }
        }
        assert!(read > 20, "the parser reads {read} annotations");
        for d in ANNOTATIONS {
            assert!(
                annotation_doc(&format!("{PREFIX}{}", d.name.replace("{N}", "80"))).is_some(),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn docs_annotations_md_matches_the_catalogue() {
        let doc = include_str!("../../../../docs/annotations.md");
        let table = reference_table();
        assert!(
            doc.contains(&table),
            "docs/annotations.md is out of date; its table must be exactly:\n{table}"
        );
    }
}
