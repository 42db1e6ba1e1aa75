//! Instance metadata service client: `/metadata/instance` and `/metadata/loadbalancer` (cached one minute,
//! as upstream), the local node's addresses in upstream's order, and everything the per-node agent
//! (`cloud-node-manager --use-instance-metadata`) sets on its own Node, without one ARM call.

use crate::arm::{ReadMode, TtlCache};
use crate::provider::{address, CloudError, InstanceMetadata};
use k8s_openapi::api::core::v1::NodeAddress;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// api-version of `/metadata/instance`.
pub const INSTANCE_API_VERSION: &str = "2021-10-01";
/// api-version of `/metadata/loadbalancer`.
pub const LOADBALANCER_API_VERSION: &str = "2020-10-01";
/// Cache lifetime of metadata.
pub const METADATA_TTL: Duration = Duration::from_secs(60);

/// The IMDS client.
pub struct Imds {
    http: reqwest::Client,
    endpoint: String,
    cache: TtlCache<&'static str, Value, String>,
}

impl Imds {
    /// A client for an endpoint (`imdsEndpoint`, default `http://169.254.169.254`).
    pub fn new(http: reqwest::Client, endpoint: &str) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache: TtlCache::new(METADATA_TTL),
        }
    }

    async fn fetch(&self, path: &'static str, api: &str) -> Result<Arc<Value>, CloudError> {
        self.cache
            .get(&path, ReadMode::Default, || async {
                let url = format!("{}{path}?format=json&api-version={api}", self.endpoint);
                let resp = self
                    .http
                    .get(&url)
                    .header("Metadata", "True")
                    .header("User-Agent", "golang/kubernetes-cloud-provider")
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {}", crate::http::describe_error(&e)))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("GET {url}: HTTP {status}"));
                }
                let body = crate::http::read_body(resp, crate::http::limits::METADATA_BODY, "instance metadata")
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                serde_json::from_slice::<Value>(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))
            })
            .await
            .map_err(CloudError::Imds)
    }

    /// The instance document.
    pub async fn instance(&self) -> Result<Arc<Value>, CloudError> {
        self.fetch("/metadata/instance", INSTANCE_API_VERSION).await
    }

    /// The load-balancer document.
    pub async fn load_balancer(&self) -> Result<Arc<Value>, CloudError> {
        self.fetch("/metadata/loadbalancer", LOADBALANCER_API_VERSION).await
    }
}

fn s(v: &Value, path: &str) -> Option<String> {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
}

/// The local node's addresses: `[Hostname, InternalIP v4, ExternalIP v4?, InternalIP v6?, ExternalIP v6?]`
/// from the first interface; a missing v4 public IP is taken from the load-balancer document.
pub fn local_addresses(
    node_name: &str,
    instance: &Value,
    load_balancer: Option<&Value>,
) -> Result<Vec<NodeAddress>, CloudError> {
    let mut out = vec![address("Hostname", node_name)];
    let iface = instance.pointer("/network/interface/0").cloned().unwrap_or(Value::Null);
    if let Some(private) = s(&iface, "/ipv4/ipAddress/0/privateIpAddress") {
        out.push(address("InternalIP", &private));
        let public = s(&iface, "/ipv4/ipAddress/0/publicIpAddress").or_else(|| {
            load_balancer?
                .pointer("/loadbalancer/publicIpAddresses")?
                .as_array()?
                .iter()
                .find(|p| p.get("privateIpAddress").and_then(Value::as_str) == Some(private.as_str()))
                .and_then(|p| p.get("frontendIpAddress").and_then(Value::as_str))
                .map(str::to_string)
        });
        if let Some(p) = public {
            out.push(address("ExternalIP", &p));
        }
    }
    if let Some(private) = s(&iface, "/ipv6/ipAddress/0/privateIpAddress") {
        out.push(address("InternalIP", &private));
        if let Some(p) = s(&iface, "/ipv6/ipAddress/0/publicIpAddress") {
            out.push(address("ExternalIP", &p));
        }
    }
    if out.len() == 1 {
        return Err(CloudError::Imds(
            "get empty IP addresses from instance metadata service".into(),
        ));
    }
    Ok(out)
}

/// The label upstream's node manager sets from IMDS `compute.platformSubFaultDomain` (when not empty).
pub const SUB_FAULT_DOMAIN_LABEL: &str = "topology.kubernetes.azure.com/sub-fault-domain";

/// The local node as IMDS describes it (pure): provider id from `compute.resourceId` (resource group
/// lower-cased, as the ARM-backed provider writes it), instance type, zone (`<location>-<zone>`, else the fault
/// domain) and region, and addresses (see [`local_addresses`]).
pub fn local_instance_metadata(
    node_name: &str,
    instance: &Value,
    load_balancer: Option<&Value>,
) -> Result<InstanceMetadata, CloudError> {
    let resource_id = s(instance, "/compute/resourceId")
        .ok_or_else(|| CloudError::Imds("the instance metadata has no compute.resourceId".into()))?;
    let id = crate::arm::id::ResourceId::parse(&resource_id)
        .map_err(|e| CloudError::Imds(format!("compute.resourceId {resource_id:?}: {e}")))?;
    let location = s(instance, "/compute/location")
        .ok_or_else(|| CloudError::Imds("the instance metadata has no compute.location".into()))?;
    let fault_domain = s(instance, "/compute/platformFaultDomain").and_then(|f| f.parse::<i32>().ok());
    let zone =
        crate::vmset::names::zone_failure_domain(&location, s(instance, "/compute/zone").as_deref(), fault_domain)
            .map_err(CloudError::Imds)?;
    Ok(InstanceMetadata {
        provider_id: crate::arm::id::provider_id_for(&id),
        instance_type: s(instance, "/compute/vmSize").unwrap_or_default(),
        node_addresses: local_addresses(node_name, instance, load_balancer)?,
        zone,
        region: location.to_ascii_lowercase(),
    })
}

/// Labels the node manager sets beyond the common ones: the platform sub-fault domain when IMDS has one.
pub fn local_extra_labels(instance: &Value) -> Vec<(String, String)> {
    s(instance, "/compute/platformSubFaultDomain")
        .map(|v| vec![(SUB_FAULT_DOMAIN_LABEL.to_string(), v)])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(a: &[NodeAddress]) -> Vec<(String, String)> {
        a.iter().map(|x| (x.type_.clone(), x.address.clone())).collect()
    }

    #[test]
    fn address_order() {
        let doc = json!({"network": {"interface": [{
            "ipv4": {"ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}]},
            "ipv6": {"ipAddress": [{"privateIpAddress": "fd00::4", "publicIpAddress": "2001:db8::4"}]}
        }]}});
        let lb = json!({"loadbalancer": {"publicIpAddresses": [{"frontendIpAddress": "20.1.2.3", "privateIpAddress": "10.0.0.4"}]}});
        let got = kinds(&local_addresses("node-0", &doc, Some(&lb)).unwrap());
        let want: Vec<(String, String)> = [
            ("Hostname", "node-0"),
            ("InternalIP", "10.0.0.4"),
            ("ExternalIP", "20.1.2.3"),
            ("InternalIP", "fd00::4"),
            ("ExternalIP", "2001:db8::4"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        let v4only = json!({"network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": "10.0.0.5"}]}}]}});
        assert_eq!(kinds(&local_addresses("n", &v4only, None).unwrap()).len(), 2);
        let err = local_addresses("n", &json!({}), None).unwrap_err().to_string();
        assert!(
            err.contains("get empty IP addresses from instance metadata service"),
            "{err}"
        );
    }

    #[test]
    fn local_instance_metadata_table() {
        let iface = json!([{"ipv4": {"ipAddress": [{"privateIpAddress": "10.240.0.5", "publicIpAddress": ""}]}}]);
        let ss = "/subscriptions/sub/resourceGroups/MC_RG/providers/Microsoft.Compute/virtualMachineScaleSets/pool1/virtualMachines/3";
        let cases = [
            // (compute, want provider id, zone, region, instance type, sub-fault-domain label)
            (
                json!({"resourceId": ss, "location": "EastUS", "zone": "2", "platformFaultDomain": "1", "vmSize": "Standard_D2s_v3", "platformSubFaultDomain": "3"}),
                Ok(("azure:///subscriptions/sub/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool1/virtualMachines/3", "eastus-2", "eastus", "Standard_D2s_v3")),
                Some("3"),
            ),
            (
                json!({"resourceId": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-0", "location": "westeurope", "zone": "", "platformFaultDomain": "4", "vmSize": "Standard_B2s"}),
                Ok(("azure:///subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-0", "4", "westeurope", "Standard_B2s")),
                None,
            ),
            (json!({"location": "eastus"}), Err("compute.resourceId"), None),
            (json!({"resourceId": "not-an-id", "location": "eastus"}), Err("not-an-id"), None),
            (json!({"resourceId": ss, "location": "eastus", "zone": "two"}), Err("zone"), None),
        ];
        for (compute, want, sub_fd) in cases {
            let doc = json!({"compute": compute, "network": {"interface": iface}});
            match (local_instance_metadata("node-a", &doc, None), want) {
                (Ok(md), Ok((pid, zone, region, size))) => {
                    assert_eq!(
                        (
                            md.provider_id.as_str(),
                            md.zone.as_str(),
                            md.region.as_str(),
                            md.instance_type.as_str()
                        ),
                        (pid, zone, region, size)
                    );
                    assert_eq!(kinds(&md.node_addresses)[1], ("InternalIP".into(), "10.240.0.5".into()));
                }
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{e} lacks {part}"),
                (got, want) => panic!("{compute}: got {got:?}, want {want:?}"),
            }
            let labels = local_extra_labels(&doc);
            assert_eq!(labels.first().map(|(_, v)| v.as_str()), sub_fd);
        }
    }
}
