//! `AzureCloud`: the provider built from a config. `vmType` selects the VM-set backend; it implements
//! Instances, InstancesV2 and Zones (this module) and, in their issues, LoadBalancer and Routes.

use crate::arm::{
    self, ArmClient, AvailabilitySets as AvSetClient, AzureClients, LoadBalancers, NetworkInterfaces,
    PublicIpAddresses, RouteTables, SecurityGroups, Subnets, VirtualMachineScaleSetVms, VirtualMachineScaleSets,
    VirtualMachines,
};
use crate::config::{CloudConfig, EnvLookup};
use crate::imds::{local_addresses, Imds};
use crate::provider::{address, CloudError, InstanceMetadata, Instances, InstancesV2, Zone, Zones};
use crate::vmset::availability_set::{AvailabilitySets, VmTtls};
use crate::vmset::scale_set::{ScaleSetTtls, ScaleSets};
use crate::vmset::{names, Dispatch, NodeVm, VmSet, VmSetError};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use std::sync::Arc;
use std::time::Duration;

/// The ARM clients the provider uses, as trait objects (the production [`AzureClients`] or another
/// implementation in tests and embeddings).
#[derive(Clone)]
pub struct ArmClients {
    /// Virtual machines.
    pub vms: Arc<dyn VirtualMachines>,
    /// Availability sets.
    pub availability_sets: Arc<dyn AvSetClient>,
    /// Scale sets.
    pub scale_sets: Arc<dyn VirtualMachineScaleSets>,
    /// Scale-set instances.
    pub scale_set_vms: Arc<dyn VirtualMachineScaleSetVms>,
    /// NICs.
    pub nics: Arc<dyn NetworkInterfaces>,
    /// Load balancers.
    pub load_balancers: Arc<dyn LoadBalancers>,
    /// Public IPs.
    pub public_ips: Arc<dyn PublicIpAddresses>,
    /// NSGs.
    pub security_groups: Arc<dyn SecurityGroups>,
    /// Route tables.
    pub route_tables: Arc<dyn RouteTables>,
    /// Subnets.
    pub subnets: Arc<dyn Subnets>,
    /// Private Link Services.
    pub private_link_services: Arc<dyn crate::arm::PrivateLinkServices>,
    /// Managed disks.
    pub disks: Arc<dyn crate::arm::Disks>,
    /// Resource providers (the region's zones).
    pub providers: Arc<dyn crate::arm::ResourceProviders>,
}

impl From<AzureClients> for ArmClients {
    fn from(c: AzureClients) -> Self {
        let c = Arc::new(c);
        Self {
            vms: c.clone(),
            availability_sets: c.clone(),
            scale_sets: c.clone(),
            scale_set_vms: c.clone(),
            nics: c.clone(),
            load_balancers: c.clone(),
            public_ips: c.clone(),
            security_groups: c.clone(),
            route_tables: c.clone(),
            subnets: c.clone(),
            private_link_services: c.clone(),
            disks: c.clone(),
            providers: c,
        }
    }
}

impl ArmClients {
    /// `networkResourceSubscriptionID`: the network resources whose ids the provider writes in that
    /// subscription (load balancers with their frontends, pools and probes, public IPs, the virtual network's
    /// subnets, Private Link Services) are read and written there too, so a URL and the ids in its body
    /// agree. NICs, VMs, the security group and the route table stay in the cluster's subscription.
    pub fn use_network_subscription(&mut self, network: AzureClients) {
        let n = Arc::new(network);
        self.load_balancers = n.clone();
        self.public_ips = n.clone();
        self.subnets = n.clone();
        self.private_link_services = n;
    }
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

/// The Azure cloud provider.
pub struct AzureCloud {
    cfg: Arc<CloudConfig>,
    clients: ArmClients,
    vmset: Arc<dyn VmSet>,
    imds: Option<Imds>,
    arm: Option<Arc<ArmClient>>,
    routes: Option<crate::routes::RouteTableWriter>,
    lb: crate::loadbalancer::service::LoadBalancerApplier,
}

impl AzureCloud {
    /// Connects to ARM as the config says (endpoint discovery, credentials) and builds the provider.
    pub async fn new(cfg: CloudConfig, env: EnvLookup<'_>) -> Result<Self, CloudError> {
        let conn = arm::connect(&cfg, env)
            .await
            .map_err(|e| CloudError::Azure(e.to_string()))?;
        let arm = conn.arm.clone();
        let mut clients = ArmClients::from(conn.clients);
        if !cfg.network_resource_subscription_id.is_empty()
            && !cfg
                .network_resource_subscription_id
                .eq_ignore_ascii_case(&cfg.subscription_id)
        {
            clients.use_network_subscription(AzureClients::new(
                arm.clone(),
                cfg.network_resource_subscription_id.clone(),
            ));
        }
        let mut cloud = Self::from_parts(cfg, clients, Some(conn.http))?;
        cloud.arm = Some(arm);
        Ok(cloud)
    }

    /// Builds the provider over given clients (`http` enables IMDS when `useInstanceMetadata` is on).
    pub fn from_parts(
        cfg: CloudConfig,
        clients: ArmClients,
        http: Option<reqwest::Client>,
    ) -> Result<Self, CloudError> {
        // An embedder may build the config by hand: the same validation as a config file, so nothing we do
        // not implement runs as something else.
        let errors = cfg.validate();
        if !errors.is_empty() {
            return Err(CloudError::InvalidInput(
                crate::config::ConfigError::Invalid(errors).to_string(),
            ));
        }
        let vm_ttls = |ttl: i64| VmTtls {
            vms: secs(ttl),
            nics: secs(ttl),
            public_ips: secs(cfg.public_ip_cache_ttl_in_seconds),
        };
        let avsets = |ttl: i64| {
            AvailabilitySets::new(
                clients.vms.clone(),
                clients.nics.clone(),
                clients.public_ips.clone(),
                &cfg.resource_group,
                vm_ttls(ttl),
            )
        };
        let vmset: Arc<dyn VmSet> = match cfg.vm_kind() {
            crate::config::VmType::Standard => Arc::new(Dispatch::standard(avsets(cfg.vm_cache_ttl_in_seconds))),
            // Flexible scale sets: their instances are VMs, served by the VM list (`vmssFlexVMCacheTTLInSeconds`).
            crate::config::VmType::VmssFlex => Arc::new(Dispatch::standard(
                avsets(cfg.vmss_flex_vm_cache_ttl_in_seconds).with_flex(true),
            )),
            crate::config::VmType::Vmss => {
                let ss = ScaleSets::new(
                    clients.scale_sets.clone(),
                    clients.scale_set_vms.clone(),
                    clients.nics.clone(),
                    &cfg.resource_group,
                    &cfg.location,
                    ScaleSetTtls {
                        scale_sets: secs(cfg.vmss_cache_ttl_in_seconds),
                        instances: secs(cfg.vmss_virtual_machines_cache_ttl_in_seconds),
                    },
                    !cfg.list_vmss_virtual_machines_without_instance_view,
                );
                // Mixed clusters: availability-set VMs (unless `disableAvailabilitySetNodes`), and flexible scale
                // sets' VMs with `enableVmssFlexNodes`.
                let vms = (!cfg.disable_availability_set_nodes || cfg.enable_vmss_flex_nodes).then(|| {
                    let vms =
                        avsets(cfg.non_vmss_uniform_nodes_cache_ttl_in_seconds).with_flex(cfg.enable_vmss_flex_nodes);
                    if cfg.disable_availability_set_nodes {
                        vms.without_availability_set_vms()
                    } else {
                        vms
                    }
                });
                Arc::new(Dispatch::vmss(ss, vms))
            }
        };
        let imds = match (cfg.use_instance_metadata, http) {
            (true, Some(h)) => Some(Imds::new(h, &cfg.imds_endpoint)),
            _ => None,
        };
        let routes = (!cfg.route_table_name.is_empty())
            .then(|| crate::routes::RouteTableWriter::new(&cfg, clients.route_tables.clone(), vmset.clone()));
        let cfg = Arc::new(cfg);
        let lb = crate::loadbalancer::service::LoadBalancerApplier::new(cfg.clone(), clients.clone(), vmset.clone());
        Ok(Self {
            cfg,
            clients,
            vmset,
            imds,
            arm: None,
            routes,
            lb,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CloudConfig {
        &self.cfg
    }

    /// The ARM clients.
    pub fn clients(&self) -> &ArmClients {
        &self.clients
    }

    /// The VM-set backend.
    pub fn vm_set(&self) -> &Arc<dyn VmSet> {
        &self.vmset
    }

    /// The ARM pipeline (metrics, gates), when built by [`AzureCloud::new`].
    pub fn arm(&self) -> Option<&Arc<ArmClient>> {
        self.arm.as_ref()
    }

    /// Runs one provider operation and records it in upstream's `cloudprovider_azure_op_*` series
    /// (`request` = `<prefix>_<operation>`, e.g. `services_ensure_loadbalancer`; `source` the Service or node).
    pub(crate) async fn observed_op<T>(
        &self,
        request: &str,
        source: String,
        op: impl std::future::Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let started = std::time::Instant::now();
        let result = op.await;
        if let Some(arm) = &self.arm {
            let subscription = if self.cfg.network_resource_subscription_id.is_empty() {
                &self.cfg.subscription_id
            } else {
                &self.cfg.network_resource_subscription_id
            };
            let labels = crate::arm::metrics::RequestLabels {
                request: request.to_string(),
                resource_group: self.cfg.resource_group.to_ascii_lowercase(),
                subscription_id: subscription.clone(),
                source,
            };
            arm.metrics().observe_op(&labels, started.elapsed(), result.is_ok());
        }
        result
    }

    /// A Service operation of the LoadBalancer interface: observed as upstream's operation metrics, and a
    /// failed Azure operation reported as upstream's Warning event on the Service.
    async fn service_op<T>(
        &self,
        request: &str,
        service: &k8s_openapi::api::core::v1::Service,
        op: impl std::future::Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let r = self.observed_op(request, service_source(service), op).await;
        if let Err(e) = &r {
            self.lb.report_failure(service, e);
        }
        r
    }

    /// A data-disk controller over this provider's clients and VM sets (for CSI drivers). Keep the value:
    /// `data_disks` answers from a per-node copy for `vmCacheTTLInSeconds`, refreshed by its own writes.
    pub fn disks(&self) -> crate::disks::DiskController {
        crate::disks::DiskController::new(self.clients.clone(), self.vmset.clone())
            .with_cache_ttl(secs(self.cfg.vm_cache_ttl_in_seconds))
    }

    /// The cluster's node groups (scale sets of the resource group), bounded by `specs` or by their
    /// `min`/`max` tags (for cluster autoscalers). Keep the value: its group list and instance lists are
    /// cached for `vmssCacheTTLInSeconds` / `vmssVirtualMachinesCacheTTLInSeconds` and refreshed by its writes.
    pub fn node_groups(&self, specs: Vec<crate::nodegroups::NodeGroupSpec>) -> crate::nodegroups::NodeGroups {
        crate::nodegroups::NodeGroups::new(
            self.clients.clone(),
            self.vmset.clone(),
            &self.cfg.resource_group,
            specs,
        )
        .with_cache_ttls(
            secs(self.cfg.vmss_cache_ttl_in_seconds),
            secs(self.cfg.vmss_virtual_machines_cache_ttl_in_seconds),
        )
    }

    /// The load-balancer applier (e.g. to set where Warning events go).
    pub fn load_balancers(&self) -> &crate::loadbalancer::service::LoadBalancerApplier {
        &self.lb
    }

    /// The route-table writer (`routeTableName` must be set).
    pub fn routes(&self) -> Result<&crate::routes::RouteTableWriter, CloudError> {
        self.routes
            .as_ref()
            .ok_or_else(|| CloudError::NotSupported("routes need routeTableName in the cloud config".into()))
    }

    /// Records a node's `kubernetes.azure.com/managed` label: routes of unmanaged nodes stay in memory.
    pub fn set_node_unmanaged(&self, node: &str, unmanaged: bool) {
        if let Some(r) = &self.routes {
            r.set_unmanaged(node, unmanaged);
        }
    }

    async fn resolve(&self, node: &Node) -> Result<Arc<NodeVm>, VmSetError> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .filter(|p| !p.is_empty())
        {
            Some(pid) => self.vmset.node_by_provider_id(pid).await,
            None => self.vmset.node(name).await,
        }
    }

    /// True when `node_name` is the instance this process runs on (IMDS computer name), with `useInstanceMetadata`.
    async fn local_instance(&self, node_name: &str) -> Option<Arc<serde_json::Value>> {
        let imds = self.imds.as_ref()?;
        let doc = imds.instance().await.ok()?;
        let name = doc
            .pointer("/compute/osProfile/computerName")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        name.eq_ignore_ascii_case(node_name).then_some(doc)
    }

    async fn addresses(&self, vm: &NodeVm) -> Result<Vec<NodeAddress>, CloudError> {
        if let (Some(doc), Some(imds)) = (self.local_instance(&vm.node_name).await, self.imds.as_ref()) {
            let lb = imds.load_balancer().await.ok();
            return local_addresses(&vm.node_name, &doc, lb.as_deref());
        }
        let ips = self.vmset.node_ips(vm).await?;
        let mut out: Vec<NodeAddress> = ips
            .internal_v4
            .iter()
            .chain(&ips.internal_v6)
            .map(|ip| address("InternalIP", ip))
            .collect();
        out.push(address("Hostname", &vm.node_name));
        out.extend(ips.external.iter().map(|ip| address("ExternalIP", ip)));
        Ok(out)
    }

    fn zone_of(vm: &NodeVm) -> Result<Zone, CloudError> {
        Ok(Zone {
            failure_domain: vm.failure_domain()?,
            region: vm.location.to_ascii_lowercase(),
        })
    }

    fn within_grace(&self, node: &Node) -> bool {
        let grace = self.cfg.node_instance_not_found_grace_period_in_seconds;
        if grace <= 0 {
            return false;
        }
        let Some(created) = node.metadata.creation_timestamp.as_ref() else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now - created.0.as_second() < grace
    }
}

/// `namespace/name`, the `source` of upstream's operation metrics for a Service.
fn service_source(service: &k8s_openapi::api::core::v1::Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The label upstream uses to mark nodes that are not Azure VMs of this cluster.
pub const MANAGED_LABEL: &str = "kubernetes.azure.com/managed";

fn is_unmanaged_node(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_LABEL))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

/// "Not shut down" for a provider id that is not an Azure VM's (another provider, a bare-metal node), an
/// error for one that looks like an Azure VM's but cannot be parsed (as upstream).
fn unmanaged_or_unparsable(provider_id: &str) -> Result<bool, CloudError> {
    if crate::arm::id::is_managed_provider_id(provider_id) {
        Err(CloudError::InvalidInput(format!(
            "cannot parse provider id {provider_id:?}: expected azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name> or .../virtualMachineScaleSets/<set>/virtualMachines/<id>"
        )))
    } else {
        Ok(false)
    }
}

#[async_trait]
impl Instances for AzureCloud {
    async fn node_addresses(&self, node_name: &str) -> Result<Vec<NodeAddress>, CloudError> {
        let vm = self.vmset.node(node_name).await?;
        self.addresses(&vm).await
    }

    async fn node_addresses_by_provider_id(&self, provider_id: &str) -> Result<Vec<NodeAddress>, CloudError> {
        let vm = self.vmset.node_by_provider_id(provider_id).await?;
        self.addresses(&vm).await
    }

    async fn instance_id(&self, node_name: &str) -> Result<String, CloudError> {
        match self.vmset.node(node_name).await {
            Ok(vm) => Ok(crate::arm::id::resource_id_from_provider_id(&vm.provider_id).to_string()),
            // The local node that the (cached) ARM lists do not know yet: its id from IMDS, as upstream.
            Err(e @ (VmSetError::InstanceNotFound(_) | VmSetError::NotManaged(_))) => {
                let from_imds = self.local_instance(node_name).await.and_then(|doc| {
                    doc.pointer("/compute/resourceId")
                        .and_then(|v| v.as_str())
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                });
                from_imds.ok_or_else(|| e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn instance_type(&self, node_name: &str) -> Result<String, CloudError> {
        Ok(self.vmset.node(node_name).await?.instance_type.clone())
    }

    async fn instance_type_by_provider_id(&self, provider_id: &str) -> Result<String, CloudError> {
        Ok(self.vmset.node_by_provider_id(provider_id).await?.instance_type.clone())
    }

    async fn instance_exists_by_provider_id(&self, provider_id: &str) -> Result<bool, CloudError> {
        if !crate::arm::id::is_managed_provider_id(provider_id) {
            return Ok(true);
        }
        match self.vmset.node_by_provider_id(provider_id).await {
            Ok(_) => Ok(true),
            Err(VmSetError::InstanceNotFound(_)) => Ok(false),
            Err(VmSetError::NotManaged(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn instance_shutdown_by_provider_id(&self, provider_id: &str) -> Result<bool, CloudError> {
        match self.vmset.node_by_provider_id(provider_id).await {
            Ok(vm) => Ok(vm.is_shut_down()),
            Err(VmSetError::InstanceNotFound(_)) => Ok(false),
            Err(VmSetError::NotManaged(_)) => unmanaged_or_unparsable(provider_id),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl InstancesV2 for AzureCloud {
    async fn instance_exists(&self, node: &Node) -> Result<bool, CloudError> {
        // A node labelled `kubernetes.azure.com/managed=false` (on-premises, edge) is not ours to judge: it
        // exists, so the lifecycle controller never deletes it (as upstream).
        if is_unmanaged_node(node) {
            return Ok(true);
        }
        if let Some(pid) = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .filter(|p| !p.is_empty())
        {
            if !crate::arm::id::is_managed_provider_id(pid) {
                return Ok(true);
            }
        }
        match self.resolve(node).await {
            Ok(_) => Ok(true),
            Err(VmSetError::InstanceNotFound(_)) => Ok(self.within_grace(node)),
            Err(VmSetError::NotManaged(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn instance_shutdown(&self, node: &Node) -> Result<bool, CloudError> {
        if is_unmanaged_node(node) {
            return Ok(false);
        }
        match self.resolve(node).await {
            Ok(vm) => Ok(vm.is_shut_down()),
            Err(VmSetError::InstanceNotFound(_)) => Ok(false),
            Err(VmSetError::NotManaged(_)) => match node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) {
                Some(pid) if !pid.is_empty() => unmanaged_or_unparsable(pid),
                _ => Ok(false),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn instance_metadata(&self, node: &Node) -> Result<InstanceMetadata, CloudError> {
        let vm = self.resolve(node).await?;
        let zone = Self::zone_of(&vm)?;
        let provider_id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| vm.provider_id.clone());
        Ok(InstanceMetadata {
            provider_id,
            instance_type: vm.instance_type.clone(),
            node_addresses: self.addresses(&vm).await?,
            zone: zone.failure_domain,
            region: zone.region,
        })
    }
}

#[async_trait]
impl Zones for AzureCloud {
    async fn get_zone(&self) -> Result<Zone, CloudError> {
        let imds = self
            .imds
            .as_ref()
            .ok_or_else(|| CloudError::NotSupported("GetZone needs useInstanceMetadata (it reads IMDS)".into()))?;
        let doc = imds.instance().await?;
        let get = |p: &str| doc.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let location = get("/compute/location");
        let fd = get("/compute/platformFaultDomain").parse::<i32>().ok();
        let zone = get("/compute/zone");
        Ok(Zone {
            failure_domain: names::zone_failure_domain(&location, Some(zone.as_str()), fd).map_err(CloudError::Imds)?,
            region: location.to_ascii_lowercase(),
        })
    }

    async fn get_zone_by_provider_id(&self, provider_id: &str) -> Result<Zone, CloudError> {
        Self::zone_of(&*self.vmset.node_by_provider_id(provider_id).await?)
    }

    async fn get_zone_by_node_name(&self, node_name: &str) -> Result<Zone, CloudError> {
        Self::zone_of(&*self.vmset.node(node_name).await?)
    }
}

#[async_trait]
impl crate::provider::LoadBalancer for AzureCloud {
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
    ) -> Result<Option<k8s_openapi::api::core::v1::LoadBalancerStatus>, CloudError> {
        self.lb.get(cluster_name, service).await
    }

    fn get_load_balancer_name(&self, cluster_name: &str, service: &k8s_openapi::api::core::v1::Service) -> String {
        self.lb.name(cluster_name, service)
    }

    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
        nodes: &[Node],
    ) -> Result<k8s_openapi::api::core::v1::LoadBalancerStatus, CloudError> {
        self.ensure_load_balancer_shared(cluster_name, service, self.lb.intern_nodes(nodes))
            .await
    }

    async fn ensure_load_balancer_shared(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
        nodes: Arc<Vec<Node>>,
    ) -> Result<k8s_openapi::api::core::v1::LoadBalancerStatus, CloudError> {
        self.service_op(
            "services_ensure_loadbalancer",
            service,
            self.lb.ensure(cluster_name, service, nodes),
        )
        .await
    }

    async fn update_load_balancer_shared(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
        nodes: Arc<Vec<Node>>,
    ) -> Result<(), CloudError> {
        self.service_op(
            "services_update_loadbalancer",
            service,
            self.lb.update(cluster_name, service, nodes),
        )
        .await
    }

    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
        nodes: &[Node],
    ) -> Result<(), CloudError> {
        self.update_load_balancer_shared(cluster_name, service, self.lb.intern_nodes(nodes))
            .await
    }

    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &k8s_openapi::api::core::v1::Service,
    ) -> Result<(), CloudError> {
        self.service_op(
            "services_ensure_loadbalancer_deleted",
            service,
            self.lb.delete(cluster_name, service),
        )
        .await
    }
}
