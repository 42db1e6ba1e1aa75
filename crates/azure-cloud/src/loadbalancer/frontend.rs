//! The frontend IP configurations a Service needs, and the public IPs behind external ones (upstream
//! `getFrontendIPConfigNames`, `ensurePublicIPExists`): pure, table-tested. Existing Azure state (which PIP
//! has a requested address, previous ingress IPs) is resolved by the applier.

use super::annotations::ServiceLbSpec;
use super::names::{frontend_ip_config_name, public_ip_name, Family};
use std::collections::BTreeMap;

/// Tag naming the services bound to a public IP (`<ns>/<name>[,<ns>/<name>...]`).
pub const SERVICE_TAG: &str = "k8s-azure-service";
/// Tag naming the cluster that owns a public IP.
pub const CLUSTER_TAG: &str = "k8s-azure-cluster-name";
/// Tag naming the service that owns a PIP's DNS label.
pub const DNS_LABEL_TAG: &str = "k8s-azure-dns-label-service";

/// A public IP the provider creates or keeps (owned: tagged with the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPublicIp {
    /// Name.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// `Standard` or `Basic`.
    pub sku: &'static str,
    /// `IPv4` or `IPv6`.
    pub version: &'static str,
    /// Availability zones (standard SKU: the region's zones).
    pub zones: Vec<String>,
    /// DNS label: `None` leaves it, `Some("")` removes it.
    pub dns_label: Option<String>,
    /// Tags (service, cluster, DNS-label owner, `azure-pip-tags`, config tags).
    pub tags: BTreeMap<String, String>,
    /// Public IP prefix to allocate from.
    pub prefix_id: Option<String>,
    /// `azure-pip-ip-tags` as (type, tag) pairs (`None`: not asked for).
    pub ip_tags: Option<Vec<(String, String)>>,
}

/// Where an external frontend's public IP comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicIpSource {
    /// `azure-pip-name`: an existing PIP the user named (never created or deleted by us).
    Named {
        /// Name.
        name: String,
        /// Resource group.
        resource_group: String,
    },
    /// `azure-load-balancer-ipv4|ipv6` / `spec.loadBalancerIP`: the existing PIP with this address.
    ByAddress {
        /// Address.
        address: String,
        /// Resource group searched.
        resource_group: String,
    },
    /// A PIP the provider manages.
    Managed(PlannedPublicIp),
}

/// What backs a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendKind {
    /// External: a public IP.
    Public(PublicIpSource),
    /// Internal: a subnet address (static when requested).
    Private {
        /// Subnet id.
        subnet_id: String,
        /// Requested address (static allocation), else dynamic.
        address: Option<String>,
    },
}

/// A planned frontend IP configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFrontend {
    /// Name.
    pub name: String,
    /// Family.
    pub family: Family,
    /// Backing.
    pub kind: FrontendKind,
    /// Zones (internal frontends on the standard SKU).
    pub zones: Vec<String>,
}

/// Cluster facts the frontend plan needs.
#[derive(Debug, Clone)]
pub struct FrontendContext<'a> {
    /// `--cluster-name`.
    pub cluster: &'a str,
    /// Service base name.
    pub base: &'a str,
    /// `<namespace>/<name>`.
    pub service_key: &'a str,
    /// Subscription of network resources.
    pub subscription: &'a str,
    /// Cluster resource group.
    pub resource_group: &'a str,
    /// VNet resource group.
    pub vnet_resource_group: &'a str,
    /// VNet name.
    pub vnet: &'a str,
    /// Default internal subnet (`subnetName`).
    pub subnet: &'a str,
    /// Standard SKU.
    pub standard_sku: bool,
    /// The region's availability zones.
    pub region_zones: &'a [String],
    /// Config tags (`tags` + `tagsMap`).
    pub config_tags: &'a BTreeMap<String, String>,
}

/// One frontend per family of the service.
pub fn plan_frontends(spec: &ServiceLbSpec, ctx: &FrontendContext<'_>) -> Vec<PlannedFrontend> {
    let dual = spec.dual_stack();
    spec.families
        .iter()
        .map(|&family| {
            let name = frontend_ip_config_name(ctx.base, spec.internal_subnet.as_deref(), dual, family);
            let requested = match family {
                Family::V4 => spec.ip_v4,
                Family::V6 => spec.ip_v6,
            }
            .map(|ip| ip.to_string());
            if spec.internal {
                let subnet = spec.internal_subnet.as_deref().unwrap_or(ctx.subnet);
                return PlannedFrontend {
                    name,
                    family,
                    kind: FrontendKind::Private {
                        subnet_id: format!(
                            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}/subnets/{subnet}",
                            ctx.subscription, ctx.vnet_resource_group, ctx.vnet
                        ),
                        address: requested,
                    },
                    zones: if ctx.standard_sku { ctx.region_zones.to_vec() } else { Vec::new() },
                };
            }
            let rg = spec.pip_resource_group.clone().unwrap_or_else(|| ctx.resource_group.to_string());
            let named = match family {
                Family::V4 => spec.pip_name_v4.clone(),
                Family::V6 => spec.pip_name_v6.clone(),
            };
            let source = match (named, requested) {
                (Some(name), _) => PublicIpSource::Named { name, resource_group: rg },
                (None, Some(address)) => PublicIpSource::ByAddress { address, resource_group: rg },
                (None, None) => {
                    let prefix = match family {
                        Family::V4 => spec.pip_prefix_v4.clone(),
                        Family::V6 => spec.pip_prefix_v6.clone(),
                    };
                    let mut tags = ctx.config_tags.clone();
                    tags.extend(spec.pip_tags.clone());
                    tags.insert(SERVICE_TAG.into(), ctx.service_key.into());
                    tags.insert(CLUSTER_TAG.into(), ctx.cluster.into());
                    if spec.dns_label.as_deref().is_some_and(|l| !l.is_empty()) {
                        tags.insert(DNS_LABEL_TAG.into(), ctx.service_key.into());
                    }
                    PublicIpSource::Managed(PlannedPublicIp {
                        name: public_ip_name(ctx.cluster, ctx.base, prefix.as_deref(), dual, family),
                        resource_group: rg,
                        sku: if ctx.standard_sku { "Standard" } else { "Basic" },
                        version: family.as_str(),
                        zones: if ctx.standard_sku { ctx.region_zones.to_vec() } else { Vec::new() },
                        dns_label: spec.dns_label.clone(),
                        tags,
                        prefix_id: prefix,
                        ip_tags: spec.ip_tags.clone(),
                    })
                }
            };
            PlannedFrontend {
                name,
                family,
                kind: FrontendKind::Public(source),
                zones: Vec::new(),
            }
        })
        .collect()
}

/// The services bound to a PIP by its tag (upstream also reads the legacy `service` tag).
pub fn bound_services(tags: &BTreeMap<String, String>) -> Vec<String> {
    tags.get(SERVICE_TAG)
        .or_else(|| tags.get("service"))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Tags after binding (`bind = true`) or unbinding a service; `None` when unchanged.
pub fn rebind(tags: &BTreeMap<String, String>, service_key: &str, bind: bool) -> Option<BTreeMap<String, String>> {
    let mut services = bound_services(tags);
    let present = services.iter().any(|s| s == service_key);
    if present == bind {
        return None;
    }
    if bind {
        services.push(service_key.to_string());
    } else {
        services.retain(|s| s != service_key);
    }
    let mut out = tags.clone();
    out.remove("service");
    out.insert(SERVICE_TAG.into(), services.join(","));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadbalancer::annotations::{parse, PREFIX};
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    fn svc(ann: serde_json::Value, spec: serde_json::Value) -> ServiceLbSpec {
        let s: Service =
            serde_json::from_value(json!({"metadata": {"name": "web", "annotations": ann}, "spec": spec})).unwrap();
        parse(&s).unwrap().0
    }

    fn ctx<'a>(zones: &'a [String], tags: &'a BTreeMap<String, String>) -> FrontendContext<'a> {
        FrontendContext {
            cluster: "kubernetes",
            base: "abase",
            service_key: "default/web",
            subscription: "sub",
            resource_group: "rg",
            vnet_resource_group: "netrg",
            vnet: "vnet",
            subnet: "nodes",
            standard_sku: true,
            region_zones: zones,
            config_tags: tags,
        }
    }

    #[test]
    fn external_managed_pip() {
        let zones = vec!["1".to_string(), "2".to_string(), "3".to_string()];
        let cfg_tags: BTreeMap<String, String> = [("owner".to_string(), "platform".to_string())].into();
        let spec = svc(
            json!({format!("{PREFIX}azure-dns-label-name"): "myapp", format!("{PREFIX}azure-pip-tags"): "team=a"}),
            json!({}),
        );
        let fes = plan_frontends(&spec, &ctx(&zones, &cfg_tags));
        assert_eq!(fes.len(), 1);
        assert_eq!(fes[0].name, "abase");
        let FrontendKind::Public(PublicIpSource::Managed(pip)) = &fes[0].kind else {
            panic!("{:?}", fes[0])
        };
        assert_eq!(
            (pip.name.as_str(), pip.resource_group.as_str(), pip.sku, pip.version),
            ("kubernetes-abase", "rg", "Standard", "IPv4")
        );
        assert_eq!(pip.zones, zones);
        assert_eq!(pip.dns_label.as_deref(), Some("myapp"));
        for (k, v) in [
            (SERVICE_TAG, "default/web"),
            (CLUSTER_TAG, "kubernetes"),
            (DNS_LABEL_TAG, "default/web"),
            ("team", "a"),
            ("owner", "platform"),
        ] {
            assert_eq!(pip.tags.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn named_and_addressed_pips_and_dual_stack() {
        let (zones, tags) = (Vec::new(), BTreeMap::new());
        let spec = svc(
            json!({format!("{PREFIX}azure-pip-name"): "mine", format!("{PREFIX}azure-load-balancer-resource-group"): "piprg"}),
            json!({}),
        );
        assert_eq!(
            plan_frontends(&spec, &ctx(&zones, &tags))[0].kind,
            FrontendKind::Public(PublicIpSource::Named {
                name: "mine".into(),
                resource_group: "piprg".into()
            })
        );
        let spec = svc(json!({}), json!({"loadBalancerIP": "20.1.2.3"}));
        assert_eq!(
            plan_frontends(&spec, &ctx(&zones, &tags))[0].kind,
            FrontendKind::Public(PublicIpSource::ByAddress {
                address: "20.1.2.3".into(),
                resource_group: "rg".into()
            })
        );
        let spec = svc(json!({}), json!({"ipFamilies": ["IPv4", "IPv6"]}));
        let fes = plan_frontends(&spec, &ctx(&zones, &tags));
        assert_eq!(
            fes.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["abase", "abase-IPv6"]
        );
        let FrontendKind::Public(PublicIpSource::Managed(v6)) = &fes[1].kind else {
            panic!()
        };
        assert_eq!((v6.name.as_str(), v6.version), ("kubernetes-abase-IPv6", "IPv6"));
    }

    #[test]
    fn internal_frontends() {
        let zones = vec!["1".to_string()];
        let tags = BTreeMap::new();
        let spec = svc(
            json!({format!("{PREFIX}azure-load-balancer-internal"): "true", format!("{PREFIX}azure-load-balancer-internal-subnet"): "apps"}),
            json!({"loadBalancerIP": "10.1.0.9"}),
        );
        let fes = plan_frontends(&spec, &ctx(&zones, &tags));
        assert_eq!(fes[0].name, "abase-apps");
        assert_eq!(
            fes[0].kind,
            FrontendKind::Private {
                subnet_id: "/subscriptions/sub/resourceGroups/netrg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/apps".into(),
                address: Some("10.1.0.9".into())
            }
        );
        assert_eq!(fes[0].zones, zones);
        let spec = svc(
            json!({format!("{PREFIX}azure-load-balancer-internal"): "true"}),
            json!({}),
        );
        let FrontendKind::Private { subnet_id, address } = &plan_frontends(&spec, &ctx(&zones, &tags))[0].kind else {
            panic!()
        };
        assert!(subnet_id.ends_with("/subnets/nodes") && address.is_none());
    }

    #[test]
    fn binding_services_to_a_shared_pip() {
        let tags: BTreeMap<String, String> = [(SERVICE_TAG.to_string(), "default/a".to_string())].into();
        let bound = rebind(&tags, "default/b", true).unwrap();
        assert_eq!(bound_services(&bound), vec!["default/a", "default/b"]);
        assert!(rebind(&bound, "default/b", true).is_none());
        let unbound = rebind(&bound, "default/a", false).unwrap();
        assert_eq!(bound_services(&unbound), vec!["default/b"]);
        let legacy: BTreeMap<String, String> = [("service".to_string(), "ns/x".to_string())].into();
        assert_eq!(bound_services(&legacy), vec!["ns/x"]);
        let moved = rebind(&legacy, "ns/y", true).unwrap();
        assert!(!moved.contains_key("service"));
        assert_eq!(moved[SERVICE_TAG], "ns/x,ns/y");
    }
}
