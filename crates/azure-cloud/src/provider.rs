//! The cloud-provider interfaces (k8s.io/cloud-provider) in async Rust: LoadBalancer, Instances,
//! InstancesV2, Zones, Routes. They take k8s-openapi objects and return typed values; errors are typed,
//! with an explicit `InstanceNotFound`.

use crate::vmset::VmSetError;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, NodeAddress, Service};

/// Errors of the provider interfaces.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// The instance does not exist (confirmed). Controllers may act on it (e.g. delete the Node).
    #[error("instance not found: {0}")]
    InstanceNotFound(String),
    /// The node is not managed by this provider.
    #[error("{0}")]
    NotManaged(String),
    /// Azure could not answer (throttled, failed, timed out): retry later; never treat as "not found".
    #[error("{0}")]
    Azure(String),
    /// An ARM call failed: the typed error keeps the status, ARM's code and `Retry-After`.
    #[error(transparent)]
    Arm(#[from] crate::arm::ArmError),
    /// The input (annotation, field) is invalid; the message names it. Retrying without a change to the
    /// object cannot succeed.
    #[error("{0}")]
    InvalidInput(String),
    /// The object's configuration conflicts with another object's (e.g. a port another Service uses on a
    /// shared frontend); may clear when the other changes, so it is retried with backoff.
    #[error("{0}")]
    Conflict(String),
    /// The operation is not supported in this configuration.
    #[error("{0}")]
    NotSupported(String),
    /// The instance metadata service failed.
    #[error("instance metadata: {0}")]
    Imds(String),
}

impl CloudError {
    /// How long ARM asked us to wait (a throttled answer), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CloudError::Arm(e) => e.retry_after(),
            _ => None,
        }
    }

    /// True when retrying without a change to the input cannot succeed (invalid annotations or fields).
    pub fn is_permanent(&self) -> bool {
        matches!(self, CloudError::InvalidInput(_))
    }
}

impl From<VmSetError> for CloudError {
    fn from(e: VmSetError) -> Self {
        match e {
            VmSetError::InstanceNotFound(s) => CloudError::InstanceNotFound(s),
            VmSetError::NotManaged(s) => {
                CloudError::NotManaged(format!("node {s} is not managed by the Azure cloud provider"))
            }
            VmSetError::Arm(a) => CloudError::Arm(a),
            VmSetError::Invalid(s) => CloudError::Azure(s),
        }
    }
}

/// What InstancesV2 returns for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMetadata {
    /// `azure://...`.
    pub provider_id: String,
    /// VM size.
    pub instance_type: String,
    /// Addresses in upstream's order.
    pub node_addresses: Vec<NodeAddress>,
    /// Zone label value (`eastus-1` or a fault domain).
    pub zone: String,
    /// Region (lower-cased location).
    pub region: String,
}

/// A zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// `eastus-1`, or the fault domain for non-zonal VMs.
    pub failure_domain: String,
    /// Lower-cased location.
    pub region: String,
}

/// A pod-CIDR route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Route name in the table.
    pub name: String,
    /// The node the traffic goes to.
    pub target_node: String,
    /// Destination CIDRs.
    pub destination_cidrs: Vec<String>,
    /// True when the route's next hop no longer exists.
    pub blackhole: bool,
}

/// Instances (v1).
#[async_trait]
pub trait Instances: Send + Sync {
    /// Addresses of a node by name.
    async fn node_addresses(&self, node_name: &str) -> Result<Vec<NodeAddress>, CloudError>;
    /// Addresses by provider id.
    async fn node_addresses_by_provider_id(&self, provider_id: &str) -> Result<Vec<NodeAddress>, CloudError>;
    /// The instance id (ARM id with the resource group lower-cased).
    async fn instance_id(&self, node_name: &str) -> Result<String, CloudError>;
    /// VM size by node name.
    async fn instance_type(&self, node_name: &str) -> Result<String, CloudError>;
    /// VM size by provider id.
    async fn instance_type_by_provider_id(&self, provider_id: &str) -> Result<String, CloudError>;
    /// False only on a confirmed NotFound; unmanaged provider ids → true.
    async fn instance_exists_by_provider_id(&self, provider_id: &str) -> Result<bool, CloudError>;
    /// True when provisioning succeeded and the VM is stopped, deallocated or deallocating.
    async fn instance_shutdown_by_provider_id(&self, provider_id: &str) -> Result<bool, CloudError>;
    /// The node name of the current host.
    fn current_node_name(&self, hostname: &str) -> String {
        hostname.to_ascii_lowercase()
    }
}

/// InstancesV2.
#[async_trait]
pub trait InstancesV2: Send + Sync {
    /// False only on a confirmed NotFound (and outside the grace period for new nodes).
    async fn instance_exists(&self, node: &Node) -> Result<bool, CloudError>;
    /// Upstream's shutdown rule.
    async fn instance_shutdown(&self, node: &Node) -> Result<bool, CloudError>;
    /// Provider id, type, addresses, zone and region.
    async fn instance_metadata(&self, node: &Node) -> Result<InstanceMetadata, CloudError>;
}

/// Zones.
#[async_trait]
pub trait Zones: Send + Sync {
    /// The zone of the local instance (IMDS).
    async fn get_zone(&self) -> Result<Zone, CloudError>;
    /// Zone by provider id.
    async fn get_zone_by_provider_id(&self, provider_id: &str) -> Result<Zone, CloudError>;
    /// Zone by node name.
    async fn get_zone_by_node_name(&self, node_name: &str) -> Result<Zone, CloudError>;
}

/// LoadBalancer (implemented by the load-balancer issue).
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// The service's current status, `None` when it has no load balancer.
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>, CloudError>;
    /// The LB name the service uses.
    fn get_load_balancer_name(&self, cluster_name: &str, service: &Service) -> String;
    /// Creates or updates everything the service needs.
    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> Result<LoadBalancerStatus, CloudError>;
    /// Updates backend membership for a new node set.
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> Result<(), CloudError>;
    /// Removes what the service owns.
    async fn ensure_load_balancer_deleted(&self, cluster_name: &str, service: &Service) -> Result<(), CloudError>;
    /// [`LoadBalancer::ensure_load_balancer`] with a node set the caller shares between Services (a
    /// controller's one list): a provider may keep it instead of copying or comparing it. The default calls
    /// the slice form.
    async fn ensure_load_balancer_shared(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: std::sync::Arc<Vec<Node>>,
    ) -> Result<LoadBalancerStatus, CloudError> {
        self.ensure_load_balancer(cluster_name, service, &nodes).await
    }
    /// [`LoadBalancer::update_load_balancer`] with a shared node set (see
    /// [`LoadBalancer::ensure_load_balancer_shared`]).
    async fn update_load_balancer_shared(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: std::sync::Arc<Vec<Node>>,
    ) -> Result<(), CloudError> {
        self.update_load_balancer(cluster_name, service, &nodes).await
    }
}

/// Routes (implemented by the routes issue).
#[async_trait]
pub trait Routes: Send + Sync {
    /// Routes of the cluster.
    async fn list_routes(&self, cluster_name: &str) -> Result<Vec<Route>, CloudError>;
    /// Creates a route.
    async fn create_route(&self, cluster_name: &str, name_hint: &str, route: &Route) -> Result<(), CloudError>;
    /// Deletes a route.
    async fn delete_route(&self, cluster_name: &str, route: &Route) -> Result<(), CloudError>;
    /// Tells the provider a node is unmanaged (`kubernetes.azure.com/managed=false`): its routes are kept in
    /// memory, never written to Azure. The default ignores it.
    fn set_node_unmanaged(&self, _node: &str, _unmanaged: bool) {}
}

/// A node address.
pub fn address(kind: &str, address: &str) -> NodeAddress {
    NodeAddress {
        type_: kind.to_string(),
        address: address.to_string(),
    }
}
