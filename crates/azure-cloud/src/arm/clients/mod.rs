//! One trait per ARM resource client the provider needs, and the production implementation
//! ([`AzureClients`]) over the [`ArmClient`] pipeline with the typed models of `azure_mgmt_compute` /
//! `azure_mgmt_network` 0.21 and their api-versions.
//!
//! Every PUT of a resource that carries an ETag sends `If-Match` with it (a stale ETag → `Conflict`).
//! `get` answers `Err(NotFound)` only on a confirmed 404; `delete` of an absent resource succeeds.

use super::error::ArmError;
use super::pipeline::{decode, ArmClient, ArmRequest, Operation};
use async_trait::async_trait;
use azure_mgmt_compute::models as compute;
use azure_mgmt_network::models as network;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// api-version of virtual machines, scale sets and availability sets (azure_mgmt_compute 0.21 default tag).
pub const COMPUTE_API_VERSION: &str = "2024-07-01";
/// api-version of network resources (azure_mgmt_network 0.21 default tag).
pub const NETWORK_API_VERSION: &str = "2024-03-01";
/// api-version of scale-set instance NICs and public IPs (the only one those paths accept).
pub const VMSS_NETWORK_API_VERSION: &str = "2018-10-01";

/// A model that carries an ETag.
pub trait Etagged {
    /// The ETag read with the resource.
    fn etag(&self) -> Option<&str>;
}

macro_rules! etagged {
    ($($t:ty),*) => {$(
        impl Etagged for $t {
            fn etag(&self) -> Option<&str> {
                self.etag.as_deref()
            }
        }
    )*};
}
etagged!(
    compute::VirtualMachine,
    compute::VirtualMachineScaleSet,
    compute::VirtualMachineScaleSetVm,
    network::NetworkInterface,
    network::LoadBalancer,
    network::PublicIpAddress,
    network::NetworkSecurityGroup,
    network::RouteTable,
    network::Subnet,
    network::BackendAddressPool,
    network::Route
);

/// A raw JSON body (edited from what ARM returned) carries its ETag at `etag`.
impl Etagged for serde_json::Value {
    fn etag(&self) -> Option<&str> {
        self.get("etag").and_then(serde_json::Value::as_str)
    }
}

/// api-version of managed disks (`Microsoft.Compute/disks` has its own versions; the compute package the
/// crate builds does not include disk models, so disks are read as JSON).
pub const DISK_API_VERSION: &str = "2024-03-02";

/// Managed disks (read only: the provider attaches them through VM writes).
#[async_trait]
pub trait Disks: Send + Sync {
    /// GET a disk by resource group and name, as JSON (`managedBy`, `diskState`, ...).
    async fn get(&self, rg: &str, name: &str) -> Result<serde_json::Value, ArmError>;
}

/// Virtual machines.
#[async_trait]
pub trait VirtualMachines: Send + Sync {
    /// GET, optionally with `$expand=instanceView`.
    async fn get(&self, rg: &str, name: &str, instance_view: bool) -> Result<compute::VirtualMachine, ArmError>;
    /// LIST by resource group (paged), optionally with `$expand=instanceView` (power states, fault domains).
    async fn list(&self, rg: &str, instance_view: bool) -> Result<Vec<compute::VirtualMachine>, ArmError>;
    /// PUT (If-Match with the model's ETag).
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        vm: &compute::VirtualMachine,
    ) -> Result<compute::VirtualMachine, ArmError>;
    /// PATCH with `If-Match` when an ETag is given. JSON body: an emptied list (the last data disk
    /// detached) must be sent as `[]`, which the generated models would drop.
    async fn update(
        &self,
        rg: &str,
        name: &str,
        patch: &serde_json::Value,
        if_match: Option<&str>,
    ) -> Result<compute::VirtualMachine, ArmError>;
    /// DELETE (a flexible scale set's VM leaves its scale set, whose capacity follows).
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError>;
}

/// Availability sets.
#[async_trait]
pub trait AvailabilitySets: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<compute::AvailabilitySet, ArmError>;
    /// LIST by resource group.
    async fn list(&self, rg: &str) -> Result<Vec<compute::AvailabilitySet>, ArmError>;
}

/// Virtual machine scale sets (the model).
#[async_trait]
pub trait VirtualMachineScaleSets: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<compute::VirtualMachineScaleSet, ArmError>;
    /// LIST by resource group.
    async fn list(&self, rg: &str) -> Result<Vec<compute::VirtualMachineScaleSet>, ArmError>;
    /// PUT of the model (If-Match).
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        vmss: &compute::VirtualMachineScaleSet,
    ) -> Result<compute::VirtualMachineScaleSet, ArmError>;
    /// PATCH of the model. The body is JSON so that an emptied list is sent as `[]` (the generated models
    /// drop empty lists, which ARM would read as "unchanged").
    async fn update(
        &self,
        rg: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<compute::VirtualMachineScaleSet, ArmError>;
    /// POST `.../delete` (deleteInstances): deletes these instances in one call, reducing the capacity.
    async fn delete_instances(&self, rg: &str, name: &str, instance_ids: &[String]) -> Result<(), ArmError>;
}

/// Scale-set instances.
#[async_trait]
pub trait VirtualMachineScaleSetVms: Send + Sync {
    /// GET, optionally with `$expand=instanceView`.
    async fn get(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        instance_view: bool,
    ) -> Result<compute::VirtualMachineScaleSetVm, ArmError>;
    /// LIST (paged), optionally with `$expand=instanceView`.
    async fn list(
        &self,
        rg: &str,
        vmss: &str,
        instance_view: bool,
    ) -> Result<Vec<compute::VirtualMachineScaleSetVm>, ArmError>;
    /// PUT of one instance (If-Match on the body's `etag`). JSON body: emptied lists must be sent as `[]`.
    async fn update(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        vm: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
    /// GET `.../instanceView`.
    async fn instance_view(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
    ) -> Result<compute::VirtualMachineScaleSetVmInstanceView, ArmError>;
}

/// Network interfaces, including scale-set instance NICs and their public IPs.
#[async_trait]
pub trait NetworkInterfaces: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<network::NetworkInterface, ArmError>;
    /// LIST by resource group.
    async fn list(&self, rg: &str) -> Result<Vec<network::NetworkInterface>, ArmError>;
    /// PUT (If-Match on the body's `etag`). JSON body: emptied lists must be sent as `[]`.
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        nic: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
    /// GET a scale-set instance NIC.
    async fn get_scale_set_nic(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        nic: &str,
    ) -> Result<network::NetworkInterface, ArmError>;
    /// LIST the NICs of every instance of a scale set.
    async fn list_scale_set_nics(&self, rg: &str, vmss: &str) -> Result<Vec<network::NetworkInterface>, ArmError>;
    /// GET the public IP of a scale-set instance NIC IP configuration.
    async fn get_scale_set_public_ip(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        nic: &str,
        ip_config: &str,
        public_ip: &str,
    ) -> Result<network::PublicIpAddress, ArmError>;
}

/// Load balancers and their backend pools.
#[async_trait]
pub trait LoadBalancers: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<network::LoadBalancer, ArmError>;
    /// LIST by resource group.
    async fn list(&self, rg: &str) -> Result<Vec<network::LoadBalancer>, ArmError>;
    /// PUT (If-Match from the body's `etag`), followed to the end of its operation. JSON in and out: a
    /// 5,000-address pool with 500 frontends is megabytes, and a round trip through the generated model
    /// would hold two more copies of it. The body is taken by value and let go of once encoded, before the
    /// answer is awaited (one copy fewer in memory per write in flight).
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        lb: serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
    /// DELETE (absent → Ok).
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError>;
    /// PUT of one backend pool (nodeIP mode: the pool carries the node IPs).
    async fn create_or_update_backend_pool(
        &self,
        rg: &str,
        lb: &str,
        pool: &str,
        body: &network::BackendAddressPool,
    ) -> Result<network::BackendAddressPool, ArmError>;
}

/// Public IP addresses.
#[async_trait]
pub trait PublicIpAddresses: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<network::PublicIpAddress, ArmError>;
    /// LIST by resource group.
    async fn list(&self, rg: &str) -> Result<Vec<network::PublicIpAddress>, ArmError>;
    /// PUT (If-Match).
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        pip: &network::PublicIpAddress,
    ) -> Result<network::PublicIpAddress, ArmError>;
    /// DELETE (absent → Ok).
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError>;
}

/// Network security groups.
#[async_trait]
pub trait SecurityGroups: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<network::NetworkSecurityGroup, ArmError>;
    /// PUT (If-Match from the body's `etag`); JSON in and out, as for load balancers.
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        nsg: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
}

/// Route tables.
#[async_trait]
pub trait RouteTables: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, name: &str) -> Result<network::RouteTable, ArmError>;
    /// PUT (If-Match) of the whole table with its routes.
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        table: &network::RouteTable,
    ) -> Result<network::RouteTable, ArmError>;
}

/// Resource providers: the region's availability zones (`zoneMappings` of `Microsoft.Compute`).
#[async_trait]
pub trait ResourceProviders: Send + Sync {
    /// The availability zones of `location` (sorted; empty for a region without zones), from
    /// `GET /subscriptions/<sub>/providers/Microsoft.Compute`.
    async fn region_zones(&self, location: &str) -> Result<Vec<String>, ArmError>;
}

/// Subnets.
#[async_trait]
pub trait Subnets: Send + Sync {
    /// GET.
    async fn get(&self, rg: &str, vnet: &str, name: &str) -> Result<network::Subnet, ArmError>;
    /// PUT of one subnet (JSON in and out: the fields the provider changes, e.g. the Private Link Service
    /// network policy, with everything it read kept).
    async fn create_or_update(
        &self,
        rg: &str,
        vnet: &str,
        name: &str,
        subnet: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
}

/// Private Link Services (JSON in and out).
#[async_trait]
pub trait PrivateLinkServices: Send + Sync {
    /// Every Private Link Service of a resource group (none when the group does not exist).
    async fn list(&self, rg: &str) -> Result<Vec<serde_json::Value>, ArmError>;
    /// PUT.
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        pls: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError>;
    /// DELETE.
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError>;
    /// DELETE of one private endpoint connection (before the service itself, as upstream).
    async fn delete_endpoint_connection(&self, rg: &str, pls: &str, connection: &str) -> Result<(), ArmError>;
}

const fn op(
    provider: &'static str,
    resource_type: &'static str,
    metric: &'static str,
    name: &'static str,
    client_key: &'static str,
) -> Operation {
    Operation {
        provider,
        resource_type,
        metric,
        name,
        client_key,
    }
}

const C: &str = "Microsoft.Compute";
const N: &str = "Microsoft.Network";

/// The production clients: every trait above over one [`ArmClient`] and subscription.
#[derive(Debug, Clone)]
pub struct AzureClients {
    arm: Arc<ArmClient>,
    subscription: String,
}

impl AzureClients {
    /// Clients for a subscription.
    pub fn new(arm: Arc<ArmClient>, subscription: impl Into<String>) -> Self {
        Self {
            arm,
            subscription: subscription.into(),
        }
    }

    /// The pipeline (metrics, gates).
    pub fn arm(&self) -> &Arc<ArmClient> {
        &self.arm
    }

    /// `/subscriptions/<sub>/resourceGroups/<rg>/providers/<provider>/<type>/<name>/...[/<collection>]`,
    /// each name escaped; an empty name is an error (it would address the collection instead).
    fn path(
        &self,
        op: Operation,
        rg: &str,
        segments: &[(&str, &str)],
        collection: Option<&str>,
    ) -> Result<String, ArmError> {
        let invalid = |reason: String| ArmError::InvalidRequest {
            operation: format!("{}_{}", op.metric, op.name),
            reason,
        };
        if rg.is_empty() {
            return Err(invalid("empty resource group".into()));
        }
        let mut p = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}",
            urlencoding::encode(&self.subscription),
            urlencoding::encode(rg),
            op.provider
        );
        for (t, n) in segments {
            if n.is_empty() {
                return Err(invalid(format!("empty {t} name")));
            }
            p.push('/');
            p.push_str(t);
            p.push('/');
            p.push_str(&urlencoding::encode(n));
        }
        if let Some(c) = collection {
            p.push('/');
            p.push_str(c);
        }
        Ok(p)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        op: Operation,
        path: String,
        api: &'static str,
        expand: bool,
    ) -> Result<T, ArmError> {
        let mut r = ArmRequest::new(Method::GET, path, api, op);
        if expand {
            r.query.push(("$expand".into(), "instanceView".into()));
        }
        self.arm.get_json(r).await
    }

    async fn list<T: DeserializeOwned>(
        &self,
        op: Operation,
        path: String,
        api: &'static str,
        expand: bool,
    ) -> Result<Vec<T>, ArmError> {
        let mut r = ArmRequest::new(Method::GET, path, api, op);
        if expand {
            r.query.push(("$expand".into(), "instanceView".into()));
        }
        self.arm.list_all(r).await
    }

    async fn write<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        op: Operation,
        path: String,
        api: &'static str,
        body: &B,
        etag: Option<&str>,
    ) -> Result<T, ArmError> {
        let bytes = encode(body, op)?;
        self.write_bytes(method, op, path, api, bytes, etag).await
    }

    /// [`Self::write`] of a body already encoded.
    async fn write_bytes<T: DeserializeOwned>(
        &self,
        method: Method,
        op: Operation,
        path: String,
        api: &'static str,
        bytes: Vec<u8>,
        etag: Option<&str>,
    ) -> Result<T, ArmError> {
        let mut r = ArmRequest::new(method, path.clone(), api, op);
        r.body = Some(bytes.into());
        r.if_match = etag.map(str::to_string);
        let resp = self.arm.execute(r).await?;
        decode(&resp.body, op, &path)
    }

    async fn put<T: Serialize + DeserializeOwned + Etagged + Sync>(
        &self,
        op: Operation,
        path: String,
        api: &'static str,
        body: &T,
    ) -> Result<T, ArmError> {
        self.write(Method::PUT, op, path, api, body, body.etag()).await
    }

    async fn delete(&self, op: Operation, path: String, api: &'static str) -> Result<(), ArmError> {
        match self.arm.execute(ArmRequest::new(Method::DELETE, path, api, op)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A request body as JSON bytes.
fn encode<B: Serialize>(body: &B, op: Operation) -> Result<Vec<u8>, ArmError> {
    serde_json::to_vec(body).map_err(|e| ArmError::InvalidRequest {
        operation: format!("{}_{}", op.metric, op.name),
        reason: format!("cannot encode the body: {e}"),
    })
}

mod compute_clients;
mod network_clients;
