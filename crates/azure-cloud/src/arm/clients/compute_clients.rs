//! The compute clients over the pipeline: VMs, disks, availability sets, scale sets and their instances.

use super::*;

const VM_GET: Operation = op(C, "virtualMachines", "vm", "get", "virtualMachineRateLimit");
const VM_LIST: Operation = op(C, "virtualMachines", "vm", "list", "virtualMachineRateLimit");
const VM_PUT: Operation = op(
    C,
    "virtualMachines",
    "vm",
    "create_or_update",
    "virtualMachineRateLimit",
);
const VM_PATCH: Operation = op(C, "virtualMachines", "vm", "update", "virtualMachineRateLimit");
const VM_DELETE: Operation = op(C, "virtualMachines", "vm", "delete", "virtualMachineRateLimit");

#[async_trait]
impl VirtualMachines for AzureClients {
    async fn get(&self, rg: &str, name: &str, instance_view: bool) -> Result<compute::VirtualMachine, ArmError> {
        let p = self.path(VM_GET, rg, &[("virtualMachines", name)], None)?;
        AzureClients::get(self, VM_GET, p, COMPUTE_API_VERSION, instance_view).await
    }
    async fn list(&self, rg: &str, instance_view: bool) -> Result<Vec<compute::VirtualMachine>, ArmError> {
        let p = self.path(VM_LIST, rg, &[], Some("virtualMachines"))?;
        AzureClients::list(self, VM_LIST, p, COMPUTE_API_VERSION, instance_view).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        vm: &compute::VirtualMachine,
    ) -> Result<compute::VirtualMachine, ArmError> {
        let p = self.path(VM_PUT, rg, &[("virtualMachines", name)], None)?;
        self.put(VM_PUT, p, COMPUTE_API_VERSION, vm).await
    }
    async fn update(
        &self,
        rg: &str,
        name: &str,
        patch: &serde_json::Value,
        if_match: Option<&str>,
    ) -> Result<compute::VirtualMachine, ArmError> {
        let p = self.path(VM_PATCH, rg, &[("virtualMachines", name)], None)?;
        self.write(Method::PATCH, VM_PATCH, p, COMPUTE_API_VERSION, patch, if_match)
            .await
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let p = self.path(VM_DELETE, rg, &[("virtualMachines", name)], None)?;
        AzureClients::delete(self, VM_DELETE, p, COMPUTE_API_VERSION).await
    }
}

const DISK_GET: Operation = op(C, "disks", "disks", "get", "diskRateLimit");

#[async_trait]
impl Disks for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<serde_json::Value, ArmError> {
        let p = self.path(DISK_GET, rg, &[("disks", name)], None)?;
        AzureClients::get(self, DISK_GET, p, DISK_API_VERSION, false).await
    }
}

const PROVIDER_GET: Operation = op(C, "providers", "provider", "get", "virtualMachineRateLimit");
/// api-version of the resource-provider API.
pub const PROVIDERS_API_VERSION: &str = "2021-04-01";

/// `East US` and `eastus` are the same location.
fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

#[async_trait]
impl ResourceProviders for AzureClients {
    async fn region_zones(&self, location: &str) -> Result<Vec<String>, ArmError> {
        let path = format!("/subscriptions/{}/providers/Microsoft.Compute", self.subscription);
        let v: serde_json::Value = self
            .arm
            .get_json(ArmRequest::new(Method::GET, path, PROVIDERS_API_VERSION, PROVIDER_GET))
            .await?;
        let mut zones: Vec<String> = v
            .get("resourceTypes")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|t| {
                t.get("resourceType")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|r| r.eq_ignore_ascii_case("virtualMachines"))
            })
            .flat_map(|t| {
                t.get("zoneMappings")
                    .and_then(serde_json::Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|m| {
                m.get("location")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|l| same_location(l, location))
            })
            .flat_map(|m| {
                m.get("zones")
                    .and_then(serde_json::Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|z| z.as_str().map(str::to_string))
            .collect();
        zones.sort();
        zones.dedup();
        Ok(zones)
    }
}

const AS_GET: Operation = op(C, "availabilitySets", "vmas", "get", "virtualMachineRateLimit");
const AS_LIST: Operation = op(C, "availabilitySets", "vmas", "list", "virtualMachineRateLimit");

#[async_trait]
impl AvailabilitySets for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<compute::AvailabilitySet, ArmError> {
        let p = self.path(AS_GET, rg, &[("availabilitySets", name)], None)?;
        AzureClients::get(self, AS_GET, p, COMPUTE_API_VERSION, false).await
    }
    async fn list(&self, rg: &str) -> Result<Vec<compute::AvailabilitySet>, ArmError> {
        let p = self.path(AS_LIST, rg, &[], Some("availabilitySets"))?;
        AzureClients::list(self, AS_LIST, p, COMPUTE_API_VERSION, false).await
    }
}

const SS_GET: Operation = op(
    C,
    "virtualMachineScaleSets",
    "vmss",
    "get",
    "virtualMachineScaleSetRateLimit",
);
const SS_LIST: Operation = op(
    C,
    "virtualMachineScaleSets",
    "vmss",
    "list",
    "virtualMachineScaleSetRateLimit",
);
const SS_PUT: Operation = op(
    C,
    "virtualMachineScaleSets",
    "vmss",
    "create_or_update",
    "virtualMachineScaleSetRateLimit",
);
const SS_DELETE_INSTANCES: Operation = op(
    C,
    "virtualMachineScaleSets",
    "vmss",
    "delete_instances",
    "virtualMachineScaleSetRateLimit",
);
const SS_PATCH: Operation = op(
    C,
    "virtualMachineScaleSets",
    "vmss",
    "update",
    "virtualMachineScaleSetRateLimit",
);

#[async_trait]
impl VirtualMachineScaleSets for AzureClients {
    async fn get(&self, rg: &str, name: &str) -> Result<compute::VirtualMachineScaleSet, ArmError> {
        let p = self.path(SS_GET, rg, &[("virtualMachineScaleSets", name)], None)?;
        AzureClients::get(self, SS_GET, p, COMPUTE_API_VERSION, false).await
    }
    async fn list(&self, rg: &str) -> Result<Vec<compute::VirtualMachineScaleSet>, ArmError> {
        let p = self.path(SS_LIST, rg, &[], Some("virtualMachineScaleSets"))?;
        AzureClients::list(self, SS_LIST, p, COMPUTE_API_VERSION, false).await
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        vmss: &compute::VirtualMachineScaleSet,
    ) -> Result<compute::VirtualMachineScaleSet, ArmError> {
        let p = self.path(SS_PUT, rg, &[("virtualMachineScaleSets", name)], None)?;
        self.put(SS_PUT, p, COMPUTE_API_VERSION, vmss).await
    }
    async fn update(
        &self,
        rg: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<compute::VirtualMachineScaleSet, ArmError> {
        let p = self.path(SS_PATCH, rg, &[("virtualMachineScaleSets", name)], None)?;
        self.write(Method::PATCH, SS_PATCH, p, COMPUTE_API_VERSION, patch, None)
            .await
    }
    async fn delete_instances(&self, rg: &str, name: &str, instance_ids: &[String]) -> Result<(), ArmError> {
        let p = self.path(
            SS_DELETE_INSTANCES,
            rg,
            &[("virtualMachineScaleSets", name)],
            Some("delete"),
        )?;
        let body = serde_json::json!({ "instanceIds": instance_ids });
        let mut r = ArmRequest::new(Method::POST, p, COMPUTE_API_VERSION, SS_DELETE_INSTANCES);
        r.body = Some(body.to_string().into_bytes().into());
        // The answer carries no body worth decoding; the LRO's outcome is what counts.
        self.arm.execute(r).await.map(|_| ())
    }
}

const SSVM_GET: Operation = op(
    C,
    "virtualMachineScaleSets/virtualMachines",
    "vmssvm",
    "get",
    "virtualMachineScaleSetRateLimit",
);
const SSVM_LIST: Operation = op(
    C,
    "virtualMachineScaleSets/virtualMachines",
    "vmssvm",
    "list",
    "virtualMachineScaleSetRateLimit",
);
const SSVM_PUT: Operation = op(
    C,
    "virtualMachineScaleSets/virtualMachines",
    "vmssvm",
    "update",
    "virtualMachineScaleSetRateLimit",
);
const SSVM_IV: Operation = op(
    C,
    "virtualMachineScaleSets/virtualMachines",
    "vmssvm",
    "get_instance_view",
    "virtualMachineScaleSetRateLimit",
);

#[async_trait]
impl VirtualMachineScaleSetVms for AzureClients {
    async fn get(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        instance_view: bool,
    ) -> Result<compute::VirtualMachineScaleSetVm, ArmError> {
        let p = self.path(
            SSVM_GET,
            rg,
            &[("virtualMachineScaleSets", vmss), ("virtualMachines", instance_id)],
            None,
        )?;
        AzureClients::get(self, SSVM_GET, p, COMPUTE_API_VERSION, instance_view).await
    }
    async fn list(
        &self,
        rg: &str,
        vmss: &str,
        instance_view: bool,
    ) -> Result<Vec<compute::VirtualMachineScaleSetVm>, ArmError> {
        let p = self.path(
            SSVM_LIST,
            rg,
            &[("virtualMachineScaleSets", vmss)],
            Some("virtualMachines"),
        )?;
        AzureClients::list(self, SSVM_LIST, p, COMPUTE_API_VERSION, instance_view).await
    }
    async fn update(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
        vm: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let p = self.path(
            SSVM_PUT,
            rg,
            &[("virtualMachineScaleSets", vmss), ("virtualMachines", instance_id)],
            None,
        )?;
        self.put(SSVM_PUT, p, COMPUTE_API_VERSION, vm).await
    }
    async fn instance_view(
        &self,
        rg: &str,
        vmss: &str,
        instance_id: &str,
    ) -> Result<compute::VirtualMachineScaleSetVmInstanceView, ArmError> {
        let p = self.path(
            SSVM_IV,
            rg,
            &[("virtualMachineScaleSets", vmss), ("virtualMachines", instance_id)],
            Some("instanceView"),
        )?;
        AzureClients::get(self, SSVM_IV, p, COMPUTE_API_VERSION, false).await
    }
}
