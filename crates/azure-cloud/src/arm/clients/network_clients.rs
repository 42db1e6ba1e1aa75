//! The network clients over the pipeline: NICs (also scale-set instance NICs), load balancers and pools,
//! public IPs, security groups, route tables, subnets.

use super::*;

const NIC_GET: Operation = op(N, "networkInterfaces", "interfaces", "get", "interfaceRateLimit");
const NIC_LIST: Operation = op(N, "networkInterfaces", "interfaces", "list", "interfaceRateLimit");
const NIC_PUT: Operation = op(
    N,
    "networkInterfaces",
    "interfaces",
    "create_or_update",
    "interfaceRateLimit",
);
const SSNIC_GET: Operation = op(
    C,
    "virtualMachineScaleSets/networkInterfaces",
    "vmss_interfaces",
    "get",
    "interfaceRateLimit",
);
const SSNIC_LIST: Operation = op(
    C,
    "virtualMachineScaleSets/networkInterfaces",
    "vmss_interfaces",
    "list",
    "interfaceRateLimit",
);
const SSPIP_GET: Operation = op(
    C,
    "virtualMachineScaleSets/publicIPAddresses",
    "vmss_public_ip_addresses",
    "get",
    "publicIPAddressRateLimit",
);

#[async_trait]
impl NetworkInterfaces for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<network::NetworkInterface, ArmError> {
        let p = self.path(NIC_GET, rg, &[("networkInterfaces", name)], None)?;
        AzureClients::get(self, NIC_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn list(&self, rg: &str) -> Result<Vec<network::NetworkInterface>, ArmError> {
        let p = self.path(NIC_LIST, rg, &[], Some("networkInterfaces"))?;
        AzureClients::list(self, NIC_LIST, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        nic: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(NIC_PUT, rg, &[("networkInterfaces", name)], None)?;
        self.put(NIC_PUT, p, NETWORK_API_VERSION, nic).await
    }
    async fn get_scale_set_nic(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        nic: &str,
    ) -> Result<network::NetworkInterface, ArmError> {
        let p = self.path(
            SSNIC_GET,
            rg,
            &[
                ("virtualMachineScaleSets", vmss),
                ("virtualMachines", instance_id),
                ("networkInterfaces", nic),
            ],
            None,
        )?;
        AzureClients::get(self, SSNIC_GET, p, VMSS_NETWORK_API_VERSION, false).await
    }
    async fn list_scale_set_nics(&self, rg: &str, vmss: &str) -> Result<Vec<network::NetworkInterface>, ArmError> {
        let p = self.path(
            SSNIC_LIST,
            rg,
            &[("virtualMachineScaleSets", vmss)],
            Some("networkInterfaces"),
        )?;
        AzureClients::list(self, SSNIC_LIST, p, VMSS_NETWORK_API_VERSION, false).await
    }
    async fn get_scale_set_public_ip(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        nic: &str,
        ip_config: &str,
        public_ip: &str,
    ) -> Result<network::PublicIpAddress, ArmError> {
        let p = self.path(
            SSPIP_GET,
            rg,
            &[
                ("virtualMachineScaleSets", vmss),
                ("virtualMachines", instance_id),
                ("networkInterfaces", nic),
                ("ipconfigurations", ip_config),
                ("publicipaddresses", public_ip),
            ],
            None,
        )?;
        AzureClients::get(self, SSPIP_GET, p, VMSS_NETWORK_API_VERSION, false).await
    }
}

const LB_GET: Operation = op(N, "loadBalancers", "load_balancers", "get", "loadBalancerRateLimit");
const LB_LIST: Operation = op(N, "loadBalancers", "load_balancers", "list", "loadBalancerRateLimit");
const LB_PUT: Operation = op(
    N,
    "loadBalancers",
    "load_balancers",
    "create_or_update",
    "loadBalancerRateLimit",
);
const LB_DELETE: Operation = op(N, "loadBalancers", "load_balancers", "delete", "loadBalancerRateLimit");
const POOL_PUT: Operation = op(
    N,
    "loadBalancers/backendAddressPools",
    "load_balancer_backend_address_pools",
    "create_or_update",
    "loadBalancerRateLimit",
);

#[async_trait]
impl LoadBalancers for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<network::LoadBalancer, ArmError> {
        let p = self.path(LB_GET, rg, &[("loadBalancers", name)], None)?;
        AzureClients::get(self, LB_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn list(&self, rg: &str) -> Result<Vec<network::LoadBalancer>, ArmError> {
        let p = self.path(LB_LIST, rg, &[], Some("loadBalancers"))?;
        AzureClients::list(self, LB_LIST, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        lb: serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(LB_PUT, rg, &[("loadBalancers", name)], None)?;
        let etag = lb.etag().map(str::to_string);
        let bytes = super::encode(&lb, LB_PUT)?;
        drop(lb);
        self.write_bytes(Method::PUT, LB_PUT, p, NETWORK_API_VERSION, bytes, etag.as_deref())
            .await
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let p = self.path(LB_DELETE, rg, &[("loadBalancers", name)], None)?;
        AzureClients::delete(self, LB_DELETE, p, NETWORK_API_VERSION).await
    }
    async fn create_or_update_backend_pool(
        &self,
        rg: &str,
        lb: &str,
        pool: &str,
        body: &network::BackendAddressPool,
    ) -> Result<network::BackendAddressPool, ArmError> {
        let p = self.path(
            POOL_PUT,
            rg,
            &[("loadBalancers", lb), ("backendAddressPools", pool)],
            None,
        )?;
        self.put(POOL_PUT, p, NETWORK_API_VERSION, body).await
    }
}

const PIP_GET: Operation = op(
    N,
    "publicIPAddresses",
    "public_ip_addresses",
    "get",
    "publicIPAddressRateLimit",
);
const PIP_LIST: Operation = op(
    N,
    "publicIPAddresses",
    "public_ip_addresses",
    "list",
    "publicIPAddressRateLimit",
);
const PIP_PUT: Operation = op(
    N,
    "publicIPAddresses",
    "public_ip_addresses",
    "create_or_update",
    "publicIPAddressRateLimit",
);
const PIP_DELETE: Operation = op(
    N,
    "publicIPAddresses",
    "public_ip_addresses",
    "delete",
    "publicIPAddressRateLimit",
);

#[async_trait]
impl PublicIpAddresses for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<network::PublicIpAddress, ArmError> {
        let p = self.path(PIP_GET, rg, &[("publicIPAddresses", name)], None)?;
        AzureClients::get(self, PIP_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn list(&self, rg: &str) -> Result<Vec<network::PublicIpAddress>, ArmError> {
        let p = self.path(PIP_LIST, rg, &[], Some("publicIPAddresses"))?;
        AzureClients::list(self, PIP_LIST, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        pip: &network::PublicIpAddress,
    ) -> Result<network::PublicIpAddress, ArmError> {
        let p = self.path(PIP_PUT, rg, &[("publicIPAddresses", name)], None)?;
        self.put(PIP_PUT, p, NETWORK_API_VERSION, pip).await
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let p = self.path(PIP_DELETE, rg, &[("publicIPAddresses", name)], None)?;
        AzureClients::delete(self, PIP_DELETE, p, NETWORK_API_VERSION).await
    }
}

const NSG_GET: Operation = op(
    N,
    "networkSecurityGroups",
    "security_groups",
    "get",
    "securityGroupRateLimit",
);
const NSG_PUT: Operation = op(
    N,
    "networkSecurityGroups",
    "security_groups",
    "create_or_update",
    "securityGroupRateLimit",
);

#[async_trait]
impl SecurityGroups for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<network::NetworkSecurityGroup, ArmError> {
        let p = self.path(NSG_GET, rg, &[("networkSecurityGroups", name)], None)?;
        AzureClients::get(self, NSG_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        nsg: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(NSG_PUT, rg, &[("networkSecurityGroups", name)], None)?;
        self.put(NSG_PUT, p, NETWORK_API_VERSION, nsg).await
    }
}

const RT_GET: Operation = op(N, "routeTables", "route_tables", "get", "routeTableRateLimit");
const RT_PUT: Operation = op(
    N,
    "routeTables",
    "route_tables",
    "create_or_update",
    "routeTableRateLimit",
);

#[async_trait]
impl RouteTables for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<network::RouteTable, ArmError> {
        let p = self.path(RT_GET, rg, &[("routeTables", name)], None)?;
        AzureClients::get(self, RT_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        table: &network::RouteTable,
    ) -> Result<network::RouteTable, ArmError> {
        let p = self.path(RT_PUT, rg, &[("routeTables", name)], None)?;
        self.put(RT_PUT, p, NETWORK_API_VERSION, table).await
    }
}

const SUBNET_GET: Operation = op(N, "virtualNetworks/subnets", "subnets", "get", "subnetsRateLimit");
const SUBNET_PUT: Operation = op(
    N,
    "virtualNetworks/subnets",
    "subnets",
    "create_or_update",
    "subnetsRateLimit",
);

#[async_trait]
impl Subnets for AzureClients {
    async fn get(&self, rg: &str, vnet: &str, name: &str) -> Result<network::Subnet, ArmError> {
        let p = self.path(SUBNET_GET, rg, &[("virtualNetworks", vnet), ("subnets", name)], None)?;
        AzureClients::get(self, SUBNET_GET, p, NETWORK_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        vnet: &str,
        name: &str,
        subnet: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(SUBNET_PUT, rg, &[("virtualNetworks", vnet), ("subnets", name)], None)?;
        self.put(SUBNET_PUT, p, NETWORK_API_VERSION, subnet).await
    }
}

const PLS_LIST: Operation = op(
    N,
    "privateLinkServices",
    "private_link_services",
    "list",
    "privateLinkServiceRateLimit",
);
const PLS_PUT: Operation = op(
    N,
    "privateLinkServices",
    "private_link_services",
    "create_or_update",
    "privateLinkServiceRateLimit",
);
const PLS_DELETE: Operation = op(
    N,
    "privateLinkServices",
    "private_link_services",
    "delete",
    "privateLinkServiceRateLimit",
);
const PE_CONN_DELETE: Operation = op(
    N,
    "privateLinkServices/privateEndpointConnections",
    "private_link_services",
    "delete_pe_connection",
    "privateLinkServiceRateLimit",
);

#[async_trait]
impl PrivateLinkServices for AzureClients {
    async fn list(&self, rg: &str) -> Result<Vec<serde_json::Value>, ArmError> {
        let p = self.path(PLS_LIST, rg, &[], Some("privateLinkServices"))?;
        match AzureClients::list(self, PLS_LIST, p, NETWORK_API_VERSION, false).await {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            other => other,
        }
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        pls: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(PLS_PUT, rg, &[("privateLinkServices", name)], None)?;
        self.put(PLS_PUT, p, NETWORK_API_VERSION, pls).await
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let p = self.path(PLS_DELETE, rg, &[("privateLinkServices", name)], None)?;
        AzureClients::delete(self, PLS_DELETE, p, NETWORK_API_VERSION).await
    }
    async fn delete_endpoint_connection(&self, rg: &str, pls: &str, connection: &str) -> Result<(), ArmError> {
        let p = self.path(
            PE_CONN_DELETE,
            rg,
            &[("privateLinkServices", pls), ("privateEndpointConnections", connection)],
            None,
        )?;
        AzureClients::delete(self, PE_CONN_DELETE, p, NETWORK_API_VERSION).await
    }
}
