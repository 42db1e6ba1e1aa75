//! The node-ipam controller (upstream's `RangeAllocator`): with `--allocate-node-cidrs=true` every Node without
//! a pod CIDR gets one from each `--cluster-cidr` (one per IP family, dual-stack as two), sized by
//! `--node-cidr-mask-size[-ipv4|-ipv6]`; the route controller then routes them.
//!
//! - Never hands out one CIDR twice: a single task owns the allocation bitmaps; at start (and on every
//!   resync) they are rebuilt from the CIDRs the Nodes already hold, so a restart or a new leader continues
//!   where the last one stopped.
//! - A deleted Node's CIDRs are released; a CIDR outside the cluster CIDRs is left alone (and not tracked).
//! - Exhaustion is a `CIDRNotAvailable` Warning event on the Node and a retry later, never a crash.
//! - `spec.podCIDR(s)` is immutable once set, so a Node is patched once, with every family at once.

use crate::events::{EventType, Recorder};
use crate::informer::{NodeChange, NodeInformer};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The component name on events.
pub const COMPONENT: &str = "node-ipam-controller";
/// Upstream refuses a cluster CIDR split into more node CIDRs than this (`mask - prefix > 16`).
pub const MAX_SPLIT_BITS: u8 = 16;
/// How long a Node that got no CIDR (exhaustion, API error) waits before the next attempt.
pub const RETRY: Duration = Duration::from_secs(30);

/// A wrong node-ipam setting (what, which flag, what to do).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// A flag value that cannot be used.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// Every node CIDR of a cluster CIDR is in use.
    #[error("no node CIDR left in {0}: every /{1} is in use (widen --cluster-cidr or raise the node mask size)")]
    Exhausted(IpNet, u8),
}

/// The node CIDRs of one cluster CIDR, as a bitmap: bit `i` is the `i`-th node CIDR.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: IpNet,
    mask: u8,
    used: Vec<u64>,
    count: usize,
    in_use: usize,
    next: usize,
}

impl CidrSet {
    /// The node CIDRs of size `/mask` of `cluster`.
    pub fn new(cluster: IpNet, mask: u8) -> Result<Self, IpamError> {
        let max = cluster.max_prefix_len();
        if mask < cluster.prefix_len() || mask > max {
            return Err(IpamError::Flag {
                flag: "--node-cidr-mask-size",
                reason: format!(
                    "/{mask} does not fit in --cluster-cidr {cluster}: it must be between /{} and /{max}",
                    cluster.prefix_len()
                ),
            });
        }
        let bits = mask - cluster.prefix_len();
        if bits > MAX_SPLIT_BITS {
            return Err(IpamError::Flag {
                flag: "--node-cidr-mask-size",
                reason: format!(
                    "/{mask} splits {cluster} into 2^{bits} node CIDRs; at most 2^{MAX_SPLIT_BITS} are supported (as upstream): use a larger mask size or a smaller cluster CIDR"
                ),
            });
        }
        let count = 1usize << bits;
        Ok(Self {
            cluster: cluster.trunc(),
            mask,
            used: vec![0; count.div_ceil(64)],
            count,
            in_use: 0,
            next: 0,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    /// Node CIDRs in use.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Node CIDRs in all.
    pub fn capacity(&self) -> usize {
        self.count
    }

    fn nth(&self, i: usize) -> IpNet {
        let shift = u32::from(self.cluster.max_prefix_len() - self.mask);
        let offset = (i as u128) << shift;
        let addr = match self.cluster.network() {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) | offset as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) | offset).into()),
        };
        IpNet::new(addr, self.mask).unwrap_or(self.cluster)
    }

    /// The index of a node CIDR of this set (exactly `/mask`, inside the cluster CIDR, aligned).
    fn index_of(&self, net: &IpNet) -> Option<usize> {
        if net.prefix_len() != self.mask || !self.cluster.contains(net) || net.trunc() != *net {
            return None;
        }
        let shift = u32::from(self.cluster.max_prefix_len() - self.mask);
        let delta = match (net.network(), self.cluster.network()) {
            (IpAddr::V4(n), IpAddr::V4(c)) => u128::from(u32::from(n) - u32::from(c)),
            (IpAddr::V6(n), IpAddr::V6(c)) => u128::from(n) - u128::from(c),
            _ => return None,
        };
        usize::try_from(delta >> shift).ok()
    }

    fn is_set(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        let was = self.is_set(i);
        if on {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
        match (was, on) {
            (false, true) => self.in_use += 1,
            (true, false) => self.in_use -= 1,
            _ => {}
        }
    }

    /// Marks in use every node CIDR a block overlaps (a node CIDR itself, a narrower block inside one, or a
    /// wider one such as an overlapping service range); false when the block is outside this cluster CIDR.
    pub fn occupy(&mut self, net: &IpNet) -> bool {
        if !(self.cluster.contains(net) || net.contains(&self.cluster)) {
            return false;
        }
        let lo = self.cluster.network().max(net.network());
        let hi = self.cluster.broadcast().min(net.broadcast());
        let index = |ip: IpAddr| IpNet::new(ip, self.mask).ok().and_then(|n| self.index_of(&n.trunc()));
        if let (Some(a), Some(b)) = (index(lo), index(hi)) {
            for i in a..=b {
                self.set(i, true);
            }
        }
        true
    }

    /// Frees a node CIDR; false when it was not one of this set in use.
    pub fn release(&mut self, net: &IpNet) -> bool {
        match self.index_of(net) {
            Some(i) if self.is_set(i) => {
                self.set(i, false);
                self.next = self.next.min(i);
                true
            }
            _ => false,
        }
    }

    /// The lowest free node CIDR at or after the last allocation, wrapping around.
    pub fn allocate(&mut self) -> Result<IpNet, IpamError> {
        if self.in_use >= self.count {
            return Err(IpamError::Exhausted(self.cluster, self.mask));
        }
        for k in 0..self.count {
            let i = (self.next + k) % self.count;
            if !self.is_set(i) {
                self.set(i, true);
                self.next = (i + 1) % self.count;
                return Ok(self.nth(i));
            }
        }
        Err(IpamError::Exhausted(self.cluster, self.mask))
    }
}

/// The allocator of every cluster CIDR (one per family) and who holds what.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    sets: Vec<CidrSet>,
    held: HashMap<String, Vec<IpNet>>,
    reserved: Vec<IpNet>,
}

/// node-ipam settings from the flags.
#[derive(Debug, Clone)]
pub struct IpamSettings {
    /// `--cluster-cidr` (one or two, different families).
    pub cluster_cidrs: Vec<IpNet>,
    /// `--node-cidr-mask-size-ipv4` (default 24; `--node-cidr-mask-size` on a single-stack IPv4 cluster).
    pub mask_v4: u8,
    /// `--node-cidr-mask-size-ipv6` (default 64; `--node-cidr-mask-size` on a single-stack IPv6 cluster).
    pub mask_v6: u8,
    /// `--service-cluster-ip-range`: never handed to a node when it overlaps a cluster CIDR.
    pub reserved: Vec<IpNet>,
}

impl IpamSettings {
    /// Settings from the flag values as upstream reads them. `mask` is `--node-cidr-mask-size` (single-stack
    /// only; dual-stack must use the per-family flags, as upstream).
    pub fn from_flags(
        cluster_cidr: &str,
        mask: Option<&str>,
        mask_v4: Option<&str>,
        mask_v6: Option<&str>,
        service_range: Option<&str>,
    ) -> Result<Self, IpamError> {
        let flag = |flag: &'static str, reason: String| IpamError::Flag { flag, reason };
        let cluster_cidrs = cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|e| flag("--cluster-cidr", format!("{c:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let v4 = cluster_cidrs.iter().filter(|c| matches!(c, IpNet::V4(_))).count();
        let v6 = cluster_cidrs.len() - v4;
        if cluster_cidrs.is_empty() {
            return Err(flag(
                "--cluster-cidr",
                "is required with --allocate-node-cidrs=true (e.g. 10.244.0.0/16, or 10.244.0.0/16,fd00:10:244::/56)"
                    .into(),
            ));
        }
        if cluster_cidrs.len() > 2 || v4 > 1 || v6 > 1 {
            return Err(flag(
                "--cluster-cidr",
                format!("{cluster_cidr:?}: at most one IPv4 and one IPv6 CIDR (dual-stack)"),
            ));
        }
        let parse_mask = |f: &'static str, v: Option<&str>| -> Result<Option<u8>, IpamError> {
            v.map(|s| s.trim().parse::<u8>().map_err(|e| flag(f, format!("{s:?}: {e}"))))
                .transpose()
        };
        let single = parse_mask("--node-cidr-mask-size", mask)?;
        if single.is_some() && cluster_cidrs.len() == 2 {
            return Err(flag(
                "--node-cidr-mask-size",
                "cannot be used on a dual-stack cluster: use --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6"
                    .into(),
            ));
        }
        let mut mask_v4 = parse_mask("--node-cidr-mask-size-ipv4", mask_v4)?.unwrap_or(24);
        let mut mask_v6 = parse_mask("--node-cidr-mask-size-ipv6", mask_v6)?.unwrap_or(64);
        if let Some(m) = single {
            if v4 == 1 {
                mask_v4 = m;
            } else {
                mask_v6 = m;
            }
        }
        let reserved = match service_range {
            Some(r) => r
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    c.parse::<IpNet>()
                        .map_err(|e| flag("--service-cluster-ip-range", format!("{c:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let s = Self {
            cluster_cidrs,
            mask_v4,
            mask_v6,
            reserved,
        };
        RangeAllocator::new(&s)?;
        Ok(s)
    }
}

impl RangeAllocator {
    /// An empty allocator for the settings (service ranges reserved).
    pub fn new(settings: &IpamSettings) -> Result<Self, IpamError> {
        let sets = settings
            .cluster_cidrs
            .iter()
            .map(|c| {
                let mask = match c {
                    IpNet::V4(_) => settings.mask_v4,
                    IpNet::V6(_) => settings.mask_v6,
                };
                CidrSet::new(*c, mask)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut a = Self {
            sets,
            held: HashMap::new(),
            reserved: settings.reserved.clone(),
        };
        a.reserve();
        Ok(a)
    }

    fn reserve(&mut self) {
        for r in self.reserved.clone() {
            for s in &mut self.sets {
                s.occupy(&r);
            }
        }
    }

    /// Forgets everything and takes the CIDRs the Nodes hold (start, new leader, resync).
    pub fn rebuild(&mut self, nodes: &[Arc<Node>]) {
        for s in &mut self.sets {
            *s = CidrSet::new(s.cluster, s.mask).unwrap_or_else(|_| s.clone());
        }
        self.held.clear();
        self.reserve();
        for n in nodes.iter().filter(|n| n.metadata.deletion_timestamp.is_none()) {
            self.occupy(&n.name_any(), &pod_cidrs(n));
        }
    }

    /// Records a Node's CIDRs as in use (those inside a cluster CIDR).
    pub fn occupy(&mut self, node: &str, cidrs: &[IpNet]) {
        let mut mine = Vec::new();
        for c in cidrs {
            if self.sets.iter_mut().any(|s| s.occupy(c)) {
                mine.push(*c);
            } else {
                tracing::debug!(node, cidr = %c, "pod CIDR outside the cluster CIDRs: not tracked");
            }
        }
        if !mine.is_empty() {
            self.held.insert(node.to_string(), mine);
        }
    }

    /// Frees what a deleted Node held.
    pub fn release(&mut self, node: &str) -> Vec<IpNet> {
        let cidrs = self.held.remove(node).unwrap_or_default();
        for c in &cidrs {
            for s in &mut self.sets {
                s.release(c);
            }
        }
        cidrs
    }

    /// One CIDR per cluster CIDR for a Node, or none at all (a partial allocation is rolled back).
    pub fn allocate(&mut self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        if let Some(h) = self.held.get(node) {
            return Ok(h.clone());
        }
        let mut got = Vec::new();
        for i in 0..self.sets.len() {
            match self.sets[i].allocate() {
                Ok(c) => got.push(c),
                Err(e) => {
                    for (s, c) in self.sets.iter_mut().zip(&got) {
                        s.release(c);
                    }
                    return Err(e);
                }
            }
        }
        self.held.insert(node.to_string(), got.clone());
        Ok(got)
    }

    /// Whether a Node holds CIDRs here.
    pub fn holds(&self, node: &str) -> bool {
        self.held.contains_key(node)
    }

    /// (in use, capacity) per cluster CIDR.
    pub fn usage(&self) -> Vec<(IpNet, usize, usize)> {
        self.sets
            .iter()
            .map(|s| (s.cluster(), s.in_use(), s.capacity()))
            .collect()
    }
}

/// The pod CIDRs a Node holds (`spec.podCIDRs`, else `spec.podCIDR`), parsed.
pub fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    let list = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    let list = if list.is_empty() {
        spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect()
    } else {
        list
    };
    list.iter().filter_map(|c| c.parse().ok()).collect()
}

/// Runs the controller until dropped (it holds no state that outlives the lease: a new leader rebuilds).
pub async fn run(client: Client, settings: IpamSettings, nodes: NodeInformer) {
    let recorder = Recorder::new(client.clone(), COMPONENT);
    let api: Api<Node> = Api::all(client);
    let mut alloc = match RangeAllocator::new(&settings) {
        Ok(a) => a,
        Err(e) => {
            // Validated at start; reaching here is a bug, reported and fatal for the controller (not silent).
            tracing::error!(error = %e, "node-ipam cannot start");
            return;
        }
    };
    let mut changes = nodes.subscribe();
    nodes.ready().await;
    alloc.rebuild(&nodes.nodes());
    for (cidr, used, cap) in alloc.usage() {
        tracing::info!(cluster_cidr = %cidr, in_use = used, capacity = cap, "node-ipam: allocations rebuilt from the Nodes");
    }
    let mut todo: BTreeSet<String> = nodes
        .nodes()
        .iter()
        .filter(|n| needs_cidr(n))
        .map(|n| n.name_any())
        .collect();
    let mut retry = tokio::time::interval(RETRY);
    retry.tick().await;
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    loop {
        for name in std::mem::take(&mut todo) {
            let Some(node) = nodes.get(&name) else {
                continue;
            };
            if !needs_cidr(&node) {
                continue;
            }
            if !assign(&api, &recorder, &mut alloc, &node).await {
                waiting.insert(name);
            }
        }
        tokio::select! {
            change = changes.next() => match change {
                Some(NodeChange::Touched(n)) => {
                    let name = n.name_any();
                    let gone = nodes.get(&name).is_none() || n.metadata.deletion_timestamp.is_some();
                    if gone {
                        let freed = alloc.release(&name);
                        if !freed.is_empty() {
                            tracing::info!(node = %name, cidrs = ?freed, "node deleted: pod CIDRs released");
                            todo.extend(std::mem::take(&mut waiting));
                        }
                    } else if needs_cidr(&n) {
                        todo.insert(name);
                    } else if !alloc.holds(&name) {
                        // Set by someone else (or by us before a restart): never hand it out again.
                        alloc.occupy(&name, &pod_cidrs(&n));
                    }
                }
                Some(NodeChange::Resynced) => {
                    alloc.rebuild(&nodes.nodes());
                    todo.extend(nodes.nodes().iter().filter(|n| needs_cidr(n)).map(|n| n.name_any()));
                }
                None => return,
            },
            _ = retry.tick() => todo.extend(std::mem::take(&mut waiting)),
        }
    }
}

fn needs_cidr(n: &Node) -> bool {
    n.metadata.deletion_timestamp.is_none() && pod_cidrs(n).is_empty()
}

/// Allocates and writes a Node's CIDRs; false when it must be retried.
async fn assign(api: &Api<Node>, recorder: &Recorder, alloc: &mut RangeAllocator, node: &Node) -> bool {
    let name = node.name_any();
    let cidrs = match alloc.allocate(&name) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(node = %name, error = %e, "no pod CIDR for the node");
            crate::controllers::publish(
                recorder,
                node,
                EventType::Warning,
                "CIDRNotAvailable",
                format!("Node {name} status is now: CIDRNotAvailable ({e})"),
            );
            return false;
        }
    };
    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    let patch = json!({"spec": {"podCIDR": list[0], "podCIDRs": list}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(node = %name, cidrs = ?list, "pod CIDRs allocated");
            true
        }
        Err(e) => {
            // Not written: give them back unless the Node has them after all (a lost answer).
            let written = api
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| !pod_cidrs(&n).is_empty());
            if !written {
                alloc.release(&name);
            }
            tracing::warn!(node = %name, error = %e, "cannot write the node's pod CIDRs; retrying");
            crate::controllers::publish(
                recorder,
                node,
                EventType::Warning,
                "CIDRAssignmentFailed",
                format!("Node {name} status is now: CIDRAssignmentFailed ({e})"),
            );
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn settings(cidr: &str, mask: Option<&str>, v4: Option<&str>, v6: Option<&str>) -> Result<IpamSettings, IpamError> {
        IpamSettings::from_flags(cidr, mask, v4, v6, None)
    }

    #[test]
    fn flags_table() {
        for (cidr, mask, v4, v6, want) in [
            ("10.244.0.0/16", None, None, None, Ok((24, 64))),
            ("10.244.0.0/16", Some("26"), None, None, Ok((26, 64))),
            ("fd00::/48", Some("64"), None, None, Ok((24, 64))),
            ("10.244.0.0/16,fd00::/56", None, Some("25"), Some("64"), Ok((25, 64))),
            (
                "10.244.0.0/16,fd00::/56",
                Some("24"),
                None,
                None,
                Err("--node-cidr-mask-size"),
            ),
            ("", None, None, None, Err("--cluster-cidr")),
            ("10.0.0.0/8,10.1.0.0/16", None, None, None, Err("at most one IPv4")),
            ("10.244.0.0/16", Some("15"), None, None, Err("does not fit")),
            ("10.0.0.0/8", Some("28"), None, None, Err("2^20")),
            ("nonsense", None, None, None, Err("--cluster-cidr")),
            ("10.244.0.0/16", Some("x"), None, None, Err("--node-cidr-mask-size")),
        ] {
            match (settings(cidr, mask, v4, v6), want) {
                (Ok(s), Ok((a, b))) => assert_eq!((s.mask_v4, s.mask_v6), (a, b), "{cidr}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{cidr}: {e}"),
                (got, want) => panic!("{cidr}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn allocates_in_order_never_twice_and_exhausts() {
        let mut s = CidrSet::new(net("10.244.0.0/22"), 24).unwrap();
        let got: Vec<String> = (0..4).map(|_| s.allocate().unwrap().to_string()).collect();
        assert_eq!(
            got,
            ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
        );
        assert!(matches!(s.allocate(), Err(IpamError::Exhausted(..))));
        assert!(s.release(&net("10.244.2.0/24")));
        assert!(!s.release(&net("10.244.2.0/24")), "released twice");
        assert_eq!(s.allocate().unwrap(), net("10.244.2.0/24"));
        assert!(!s.occupy(&net("10.245.0.0/24")), "outside");
    }

    #[test]
    fn ipv6_sets_and_service_range_reserved() {
        let mut s = CidrSet::new(net("fd00:10:244::/56"), 64).unwrap();
        assert_eq!(s.capacity(), 256);
        assert_eq!(s.allocate().unwrap(), net("fd00:10:244::/64"));
        assert_eq!(s.allocate().unwrap(), net("fd00:10:244:1::/64"));
        let st = IpamSettings::from_flags("10.0.0.0/22", Some("24"), None, None, Some("10.0.1.0/24")).unwrap();
        let mut a = RangeAllocator::new(&st).unwrap();
        let got: Vec<IpNet> = (0..3).map(|i| a.allocate(&format!("n{i}")).unwrap()[0]).collect();
        assert!(
            !got.contains(&net("10.0.1.0/24")),
            "the service range is never a node's: {got:?}"
        );
        assert!(a.allocate("n3").is_err());
    }

    fn node(name: &str, cidrs: &[&str]) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"podCIDRs": cidrs, "podCIDR": cidrs.first()}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn dual_stack_all_or_nothing_and_rebuild_after_restart() {
        let st = settings("10.244.0.0/23,fd00::/63", None, Some("24"), Some("64")).unwrap();
        let mut a = RangeAllocator::new(&st).unwrap();
        let first = a.allocate("a").unwrap();
        assert_eq!(first, vec![net("10.244.0.0/24"), net("fd00::/64")]);
        // The same node asks again (a retried write): the same CIDRs, nothing new taken.
        assert_eq!(a.allocate("a").unwrap(), first);
        // A restart: a new allocator learns "a" from the Node and a foreign CIDR is ignored.
        let mut b = RangeAllocator::new(&st).unwrap();
        b.rebuild(&[
            node("a", &["10.244.0.0/24", "fd00::/64"]),
            node("x", &["192.168.0.0/24"]),
        ]);
        assert_eq!(
            b.allocate("b").unwrap(),
            vec![net("10.244.1.0/24"), net("fd00:0:0:1::/64")]
        );
        // Exhausted on one family: nothing taken from the other.
        let err = b.allocate("c").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted(..)), "{err}");
        assert_eq!(b.usage().iter().map(|u| u.1).collect::<Vec<_>>(), vec![2, 2]);
        // Deleting "a" frees both families for "c".
        assert_eq!(b.release("a").len(), 2);
        assert_eq!(b.allocate("c").unwrap(), first);
    }
}
