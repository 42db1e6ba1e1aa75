//! Data disks, for an Azure Disk CSI driver embedding the provider: attach and detach managed disks to a
//! node's VM — availability-set and standalone VMs through a VM PATCH of `storageProfile.dataDisks`,
//! scale-set instances through a PUT of the instance (never the scale-set model).
//!
//! Concurrent attach/detach calls for the same node are group-committed (`batch::GroupCommit`): one read of
//! the VM, a pure plan of its new data-disk list (`plan`), one write with `If-Match` (412: re-read and
//! re-plan). LUNs are the caller's or the lowest free of 0–63; the disk encryption set defaults to the OS
//! disk's (upstream). Detaching a disk that is not attached succeeds; attaching a disk another VM holds is
//! an error naming that VM.

use crate::arm::{ArmError, ResourceId};
use crate::batch::GroupCommit;
use crate::cloud::ArmClients;
use crate::vmset::names::{parse_provider_id, ProviderTarget};
use crate::vmset::{VmSet, VmSetError, VmSetKind};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The highest LUN Azure allows (64 data disks).
pub const MAX_LUN: i32 = 63;

/// Host caching of a data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachingMode {
    /// No caching.
    None,
    /// Read-only caching (upstream's default for data disks).
    #[default]
    ReadOnly,
    /// Read-write caching.
    ReadWrite,
}

impl CachingMode {
    /// The ARM string.
    pub fn as_str(self) -> &'static str {
        match self {
            CachingMode::None => "None",
            CachingMode::ReadOnly => "ReadOnly",
            CachingMode::ReadWrite => "ReadWrite",
        }
    }
}

/// How to attach a disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// The LUN; `None`: the lowest free one.
    pub lun: Option<i32>,
    /// Host caching.
    pub caching: CachingMode,
    /// Write accelerator (M-series VMs).
    pub write_accelerator: bool,
    /// Disk encryption set id; `None`: the OS disk's, if any.
    pub disk_encryption_set_id: Option<String>,
}

/// A data disk attached to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDisk {
    /// Disk name.
    pub name: String,
    /// LUN.
    pub lun: i32,
    /// Managed disk id.
    pub disk_id: String,
    /// Host caching.
    pub caching: String,
    /// Write accelerator.
    pub write_accelerator: bool,
}

/// Errors of disk operations; each names the disk, node or VM concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// The node has no VM (confirmed).
    #[error("node {0} has no VM: cannot change its disks")]
    NodeNotFound(String),
    /// The disk id is not a managed-disk id.
    #[error("{0:?} is not a managed disk id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/disks/<name>)")]
    InvalidDiskId(String),
    /// The disk does not exist.
    #[error("disk {0} was not found")]
    DiskNotFound(String),
    /// The disk is attached to another VM.
    #[error("disk {disk} is attached to VM {vm}; detach it there first")]
    AttachedElsewhere {
        /// Disk id.
        disk: String,
        /// The VM holding it (its id, as Azure reports it).
        vm: String,
    },
    /// The requested LUN holds another disk.
    #[error("LUN {lun} of node {node} already holds disk {disk}")]
    LunInUse {
        /// Node.
        node: String,
        /// LUN.
        lun: i32,
        /// The disk there.
        disk: String,
    },
    /// The disk is attached already, at another LUN than requested.
    #[error("disk {disk} is already attached to node {node} at LUN {lun}")]
    AlreadyAttached {
        /// Disk id.
        disk: String,
        /// Node.
        node: String,
        /// Its LUN.
        lun: i32,
    },
    /// The requested LUN is outside 0–63, or all 64 are taken.
    #[error("node {node}: {reason}")]
    NoLun {
        /// Node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Azure failed (throttled, 5xx, timeout): retry later.
    #[error("{0}")]
    Azure(String),
}

impl From<ArmError> for DiskError {
    fn from(e: ArmError) -> Self {
        DiskError::Azure(e.to_string())
    }
}

/// One requested change of a node's disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// Attach `disk_id`.
    Attach {
        /// Managed disk id.
        disk_id: String,
        /// Options.
        options: AttachOptions,
        /// Who holds the disk now (`managedBy`), read before planning.
        owner: Option<String>,
    },
    /// Detach `disk_id` (nothing to do when it is not attached).
    Detach {
        /// Managed disk id.
        disk_id: String,
    },
}

/// The VM id in a comparable form: lower-cased, with a scale-set instance's `managedBy` form
/// (`.../virtualMachines/<ss>_<id>`) reduced to the instance id.
pub fn canonical_vm_id(id: &str) -> String {
    match parse_provider_id(id) {
        Some(ProviderTarget::ScaleSetInstance {
            subscription,
            resource_group,
            scale_set,
            instance_id,
        }) => format!(
            "/subscriptions/{subscription}/resourcegroups/{resource_group}/providers/microsoft.compute/virtualmachinescalesets/{scale_set}/virtualmachines/{instance_id}"
        )
        .to_ascii_lowercase(),
        _ => id.to_ascii_lowercase(),
    }
}

fn disk_id_of(d: &Value) -> String {
    d.pointer("/managedDisk/id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn lun_of(d: &Value) -> i32 {
    d.get("lun")
        .and_then(Value::as_i64)
        .and_then(|l| i32::try_from(l).ok())
        .unwrap_or(-1)
}

/// The result of one op: the LUN of an attach, `None` for a detach.
pub type DiskResult = Result<Option<i32>, DiskError>;

/// Pure planning: applies the ops to a VM's data-disk list. Returns the new list, each op's result (the LUN
/// of an attach), and whether the list changed. `os_des`: the OS disk's encryption set.
pub fn plan(
    current: &[Value],
    ops: &[DiskOp],
    vm_id: &str,
    node: &str,
    os_des: Option<&str>,
) -> (Vec<Value>, Vec<DiskResult>, bool) {
    let mut disks = current.to_vec();
    let mut results = Vec::with_capacity(ops.len());
    let mut changed = false;
    let me = canonical_vm_id(vm_id);
    for op in ops {
        match op {
            DiskOp::Detach { disk_id } => {
                let before = disks.len();
                disks.retain(|d| !disk_id_of(d).eq_ignore_ascii_case(disk_id));
                changed |= disks.len() != before;
                results.push(Ok(None));
            }
            DiskOp::Attach {
                disk_id,
                options,
                owner,
            } => {
                if let Some(d) = disks.iter().find(|d| disk_id_of(d).eq_ignore_ascii_case(disk_id)) {
                    let lun = lun_of(d);
                    results.push(match options.lun {
                        Some(want) if want != lun => Err(DiskError::AlreadyAttached {
                            disk: disk_id.clone(),
                            node: node.to_string(),
                            lun,
                        }),
                        _ => Ok(Some(lun)),
                    });
                    continue;
                }
                if let Some(o) = owner.as_deref().filter(|o| !o.is_empty()) {
                    if canonical_vm_id(o) != me {
                        results.push(Err(DiskError::AttachedElsewhere {
                            disk: disk_id.clone(),
                            vm: o.to_string(),
                        }));
                        continue;
                    }
                }
                let used: BTreeSet<i32> = disks.iter().map(lun_of).collect();
                let lun = match options.lun {
                    Some(l) if !(0..=MAX_LUN).contains(&l) => {
                        results.push(Err(DiskError::NoLun {
                            node: node.to_string(),
                            reason: format!("LUN {l} is outside 0..{MAX_LUN}"),
                        }));
                        continue;
                    }
                    Some(l) if used.contains(&l) => {
                        let holder = disks
                            .iter()
                            .find(|d| lun_of(d) == l)
                            .map(disk_id_of)
                            .unwrap_or_default();
                        results.push(Err(DiskError::LunInUse {
                            node: node.to_string(),
                            lun: l,
                            disk: holder,
                        }));
                        continue;
                    }
                    Some(l) => l,
                    None => match (0..=MAX_LUN).find(|l| !used.contains(l)) {
                        Some(l) => l,
                        None => {
                            results.push(Err(DiskError::NoLun {
                                node: node.to_string(),
                                reason: format!("all {} LUNs hold a disk", MAX_LUN + 1),
                            }));
                            continue;
                        }
                    },
                };
                let name = disk_id.rsplit('/').next().unwrap_or_default();
                let mut managed = json!({ "id": disk_id });
                if let Some(des) = options.disk_encryption_set_id.as_deref().or(os_des) {
                    managed["diskEncryptionSet"] = json!({ "id": des });
                }
                disks.push(json!({
                    "name": name,
                    "lun": lun,
                    "caching": options.caching.as_str(),
                    "createOption": "Attach",
                    "managedDisk": managed,
                    "writeAcceleratorEnabled": options.write_accelerator,
                }));
                changed = true;
                results.push(Ok(Some(lun)));
            }
        }
    }
    (disks, results, changed)
}

/// Attaches and detaches data disks, group-committed per node.
pub struct DiskController {
    clients: ArmClients,
    vmset: Arc<dyn VmSet>,
    queues: Mutex<HashMap<String, Arc<GroupCommit<DiskOp, DiskResult>>>>,
    /// Each node's data-disk list as last read (`data_disks`), for [`DiskController::with_cache_ttl`];
    /// our own writes drop the node's copy. Writes always read the VM fresh.
    disk_lists: crate::arm::TtlCache<String, Vec<DataDisk>, DiskError>,
}

fn parse_disk_id(disk_id: &str) -> Result<(String, String), DiskError> {
    let id = ResourceId::parse(disk_id).map_err(|_| DiskError::InvalidDiskId(disk_id.to_string()))?;
    match id.name_of("disks") {
        Some(n) => Ok((id.resource_group.clone(), n.to_string())),
        None => Err(DiskError::InvalidDiskId(disk_id.to_string())),
    }
}

impl DiskController {
    /// A controller over the provider's clients and VM sets.
    pub fn new(clients: ArmClients, vmset: Arc<dyn VmSet>) -> Self {
        Self {
            clients,
            vmset,
            queues: Mutex::new(HashMap::new()),
            disk_lists: crate::arm::TtlCache::new(std::time::Duration::ZERO),
        }
    }

    /// Serves `data_disks` from a copy per node for `ttl` (the provider uses `vmCacheTTLInSeconds`); attach
    /// and detach through this controller refresh it, a change made elsewhere is seen after the TTL.
    pub fn with_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.disk_lists = crate::arm::TtlCache::new(ttl);
        self
    }

    fn queue(&self, node: &str) -> Arc<GroupCommit<DiskOp, DiskResult>> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    async fn vm_of(&self, node: &str) -> Result<Arc<crate::vmset::NodeVm>, DiskError> {
        match self.vmset.node(node).await {
            Ok(vm) => Ok(vm),
            Err(VmSetError::InstanceNotFound(_)) | Err(VmSetError::NotManaged(_)) => {
                Err(DiskError::NodeNotFound(node.to_string()))
            }
            Err(e) => Err(DiskError::Azure(e.to_string())),
        }
    }

    /// The VM (or instance) as JSON.
    async fn read(&self, vm: &crate::vmset::NodeVm) -> Result<Value, DiskError> {
        let rg = &vm.vm_set.resource_group;
        let name = vm.id.rsplit('/').next().unwrap_or_default();
        let v = match vm.vm_set.kind {
            VmSetKind::ScaleSet => {
                serde_json::to_value(self.clients.scale_set_vms.get(rg, &vm.vm_set.name, name, false).await?)
            }
            _ => serde_json::to_value(self.clients.vms.get(rg, name, false).await?),
        };
        v.map_err(|e| DiskError::Azure(format!("cannot read VM {}: {e}", vm.id)))
    }

    async fn write(&self, vm: &crate::vmset::NodeVm, mut current: Value, disks: Vec<Value>) -> Result<(), ArmError> {
        let rg = &vm.vm_set.resource_group;
        let name = vm.id.rsplit('/').next().unwrap_or_default().to_string();
        match vm.vm_set.kind {
            VmSetKind::ScaleSet => {
                // The instance's own PUT (never the model): the body as read, with the new list.
                current["properties"]["storageProfile"]["dataDisks"] = Value::Array(disks);
                crate::vmset::scale_set::instance_put_body(&mut current);
                self.clients
                    .scale_set_vms
                    .update(rg, &vm.vm_set.name, &name, &current)
                    .await
                    .map(|_| ())
            }
            _ => {
                let patch = json!({"properties": {"storageProfile": {"dataDisks": disks}}});
                let etag = current.get("etag").and_then(Value::as_str).map(str::to_string);
                self.clients
                    .vms
                    .update(rg, &name, &patch, etag.as_deref())
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn apply(&self, node: &str, ops: Vec<DiskOp>) -> Vec<DiskResult> {
        let vm = match self.vm_of(node).await {
            Ok(vm) => vm,
            Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
        };
        for attempt in 0..3 {
            let current = match self.read(&vm).await {
                Ok(v) => v,
                Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
            };
            let list: Vec<Value> = current
                .pointer("/properties/storageProfile/dataDisks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let os_des = current
                .pointer("/properties/storageProfile/osDisk/managedDisk/diskEncryptionSet/id")
                .and_then(Value::as_str)
                .map(str::to_string);
            let (disks, results, changed) = plan(&list, &ops, &vm.id, node, os_des.as_deref());
            if !changed {
                return results;
            }
            let written = self.write(&vm, current, disks).await;
            self.disk_lists.invalidate(&node.to_ascii_lowercase());
            match written {
                Ok(()) => {
                    tracing::info!(node, vm = %vm.id, changes = ops.len(), "data disks updated");
                    return results;
                }
                Err(e) if e.is_conflict() && attempt < 2 => {
                    tracing::debug!(node, "VM changed under us; re-reading its disks");
                }
                Err(e) => {
                    let e = DiskError::from(e);
                    return ops.iter().map(|_| Err(e.clone())).collect();
                }
            }
        }
        ops.iter()
            .map(|_| {
                Err(DiskError::Azure(format!(
                    "VM of node {node} kept changing under us; retry"
                )))
            })
            .collect()
    }

    async fn submit(&self, node: &str, op: DiskOp) -> DiskResult {
        self.queue(node)
            .submit(op, |ops| self.apply(node, ops))
            .await
            .unwrap_or_else(|| Err(DiskError::Azure(format!("disk update of node {node} was abandoned"))))
    }

    /// Attaches a managed disk to a node; returns its LUN. Attaching a disk the node already has returns its
    /// LUN and writes nothing.
    pub async fn attach_disk(&self, node: &str, disk_id: &str, options: AttachOptions) -> Result<i32, DiskError> {
        let (rg, name) = parse_disk_id(disk_id)?;
        let disk = match self.clients.disks.get(&rg, &name).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Err(DiskError::DiskNotFound(disk_id.to_string())),
            Err(e) => return Err(e.into()),
        };
        let owner = disk.get("managedBy").and_then(Value::as_str).map(str::to_string);
        let op = DiskOp::Attach {
            disk_id: disk.get("id").and_then(Value::as_str).unwrap_or(disk_id).to_string(),
            options,
            owner,
        };
        self.submit(node, op)
            .await?
            .ok_or_else(|| DiskError::Azure("attach returned no LUN".into()))
    }

    /// Detaches a disk from a node; a disk that is not attached (or no longer exists) is fine.
    pub async fn detach_disk(&self, node: &str, disk_id: &str) -> Result<(), DiskError> {
        parse_disk_id(disk_id)?;
        self.submit(
            node,
            DiskOp::Detach {
                disk_id: disk_id.to_string(),
            },
        )
        .await
        .map(|_| ())
    }

    /// The data disks attached to a node (cached per [`DiskController::with_cache_ttl`], else read fresh).
    pub async fn data_disks(&self, node: &str) -> Result<Vec<DataDisk>, DiskError> {
        let got = self
            .disk_lists
            .get(&node.to_ascii_lowercase(), crate::arm::ReadMode::Default, || {
                self.read_data_disks(node)
            })
            .await?;
        Ok((*got).clone())
    }

    async fn read_data_disks(&self, node: &str) -> Result<Vec<DataDisk>, DiskError> {
        let vm = self.vm_of(node).await?;
        let v = self.read(&vm).await?;
        Ok(v.pointer("/properties/storageProfile/dataDisks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| DataDisk {
                name: d.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                lun: lun_of(d),
                disk_id: disk_id_of(d),
                caching: d.get("caching").and_then(Value::as_str).unwrap_or("None").to_string(),
                write_accelerator: d
                    .get("writeAcceleratorEnabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
            .collect())
    }

    /// The node a disk is attached to (from its `managedBy`, either id form), `None` when unattached.
    pub async fn node_of_disk(&self, disk_id: &str) -> Result<Option<String>, DiskError> {
        let (rg, name) = parse_disk_id(disk_id)?;
        let disk = match self.clients.disks.get(&rg, &name).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Err(DiskError::DiskNotFound(disk_id.to_string())),
            Err(e) => return Err(e.into()),
        };
        let Some(owner) = disk.get("managedBy").and_then(Value::as_str).filter(|o| !o.is_empty()) else {
            return Ok(None);
        };
        match self.vmset.node_by_provider_id(&format!("azure://{owner}")).await {
            Ok(vm) => Ok(Some(vm.node_name.clone())),
            Err(VmSetError::InstanceNotFound(_)) | Err(VmSetError::NotManaged(_)) => Ok(None),
            Err(e) => Err(DiskError::Azure(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-0";
    const SS_VM: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3";

    fn disk(n: &str) -> String {
        format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/{n}")
    }

    fn attach(n: &str, lun: Option<i32>, owner: Option<&str>) -> DiskOp {
        DiskOp::Attach {
            disk_id: disk(n),
            options: AttachOptions {
                lun,
                ..Default::default()
            },
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn luns_are_the_lowest_free_or_the_callers() {
        let current = vec![
            json!({"lun": 0, "managedDisk": {"id": disk("a")}}),
            json!({"lun": 2, "managedDisk": {"id": disk("b")}}),
        ];
        let ops = vec![
            attach("c", None, None),
            attach("d", None, None),
            attach("e", Some(10), None),
        ];
        let (disks, results, changed) = plan(&current, &ops, VM, "vm-0", None);
        assert!(changed);
        assert_eq!(results, vec![Ok(Some(1)), Ok(Some(3)), Ok(Some(10))]);
        assert_eq!(disks.len(), 5);
        assert_eq!(disks[2]["caching"], "ReadOnly");
        assert_eq!(disks[2]["createOption"], "Attach");
    }

    #[test]
    fn attach_is_idempotent_and_detach_of_a_missing_disk_succeeds() {
        let current = vec![json!({"lun": 4, "managedDisk": {"id": disk("a")}})];
        let (_, r, changed) = plan(&current, &[attach("A", None, Some(VM))], VM, "vm-0", None);
        assert_eq!(
            (r, changed),
            (vec![Ok(Some(4))], false),
            "ids compare case-insensitively"
        );
        let (_, r, changed) = plan(&current, &[DiskOp::Detach { disk_id: disk("zzz") }], VM, "vm-0", None);
        assert_eq!((r, changed), (vec![Ok(None)], false));
        let (d, _, changed) = plan(&current, &[DiskOp::Detach { disk_id: disk("a") }], VM, "vm-0", None);
        assert!(changed && d.is_empty());
        let (_, r, _) = plan(&current, &[attach("a", Some(5), None)], VM, "vm-0", None);
        assert!(matches!(r[0], Err(DiskError::AlreadyAttached { lun: 4, .. })));
    }

    #[test]
    fn errors_name_the_other_vm_or_the_lun() {
        let other = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-9";
        let current = vec![json!({"lun": 0, "managedDisk": {"id": disk("a")}})];
        let (_, r, changed) = plan(
            &current,
            &[
                attach("b", None, Some(other)),
                attach("c", Some(0), None),
                attach("d", Some(64), None),
            ],
            VM,
            "vm-0",
            None,
        );
        assert!(!changed);
        assert_eq!(
            r[0].clone().unwrap_err().to_string(),
            format!("disk {} is attached to VM {other}; detach it there first", disk("b"))
        );
        assert!(matches!(&r[1], Err(DiskError::LunInUse { lun: 0, .. })));
        assert!(matches!(&r[2], Err(DiskError::NoLun { .. })));
        let full: Vec<Value> = (0..=MAX_LUN)
            .map(|l| json!({"lun": l, "managedDisk": {"id": disk(&l.to_string())}}))
            .collect();
        let (_, r, _) = plan(&full, &[attach("x", None, None)], VM, "vm-0", None);
        assert!(r[0].clone().unwrap_err().to_string().contains("all 64 LUNs"));
    }

    #[test]
    fn the_managed_by_form_of_scale_set_instances_is_the_same_vm() {
        let managed_by = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/ss_3";
        assert_eq!(canonical_vm_id(managed_by), canonical_vm_id(SS_VM));
        let (_, r, changed) = plan(&[], &[attach("a", None, Some(managed_by))], SS_VM, "ss000003", None);
        assert_eq!((r, changed), (vec![Ok(Some(0))], true));
    }

    #[test]
    fn the_encryption_set_defaults_to_the_os_disks() {
        let (d, _, _) = plan(&[], &[attach("a", None, None)], VM, "vm-0", Some("/des/os"));
        assert_eq!(d[0]["managedDisk"]["diskEncryptionSet"]["id"], "/des/os");
        let mut op = attach("b", None, None);
        if let DiskOp::Attach { options, .. } = &mut op {
            options.disk_encryption_set_id = Some("/des/own".into());
            options.caching = CachingMode::None;
            options.write_accelerator = true;
        }
        let (d, _, _) = plan(&[], &[op], VM, "vm-0", Some("/des/os"));
        assert_eq!(d[0]["managedDisk"]["diskEncryptionSet"]["id"], "/des/own");
        assert_eq!(
            (d[0]["caching"].as_str(), d[0]["writeAcceleratorEnabled"].as_bool()),
            (Some("None"), Some(true))
        );
    }
}
