//! Routes: pod-CIDR routes in the cluster's route table, with batched writes.
//!
//! Concurrent CreateRoute/DeleteRoute calls are group-committed: one applier takes every pending change,
//! reads the table (or reuses the copy its own last write returned), plans the new route list (pure), and
//! PUTs it once with `If-Match`. A lone change is applied at once; a burst that arrives while a write is in
//! flight is coalesced into the next one. Every caller gets its own result. Routes of unmanaged nodes
//! (`kubernetes.azure.com/managed=false`) are kept in memory and never reach ARM.

use crate::arm::shared::{self, SharedCopy};
use crate::arm::{ArmError, RouteTables};
use crate::batch::GroupCommit;
use crate::config::CloudConfig;
use crate::provider::{CloudError, Route, Routes};
use crate::vmset::VmSet;
use azure_mgmt_network::models as network;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Separator of node name and CIDR in route names (upstream's dual-stack naming, used in production).
pub const ROUTE_NAME_SEPARATOR: &str = "____";
/// Azure's limit of routes per route table.
pub const MAX_ROUTES_PER_TABLE: usize = 400;

/// `node____<cidr without ':' '.' '/'>`.
pub fn route_name(node: &str, cidr: &str) -> String {
    let safe: String = cidr.chars().filter(|c| !matches!(c, ':' | '.' | '/')).collect();
    format!("{node}{ROUTE_NAME_SEPARATOR}{safe}")
}

/// The node of a route name: the part before the first `____` (the whole name for legacy routes).
pub fn node_of_route_name(name: &str) -> &str {
    name.split(ROUTE_NAME_SEPARATOR).next().unwrap_or(name)
}

/// One requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Create or replace a route.
    Create {
        /// Route name.
        name: String,
        /// Destination CIDR.
        prefix: String,
        /// Next-hop address (the node's private IP of the CIDR's family).
        next_hop: String,
        /// The node (its legacy un-suffixed route is removed).
        node: String,
    },
    /// Delete a route (and its legacy un-suffixed twin).
    Delete {
        /// Route name.
        name: String,
        /// The node.
        node: String,
    },
    /// Change no route: the table's tags are reconciled with the cloud config's (and written when they
    /// differ), as every batch does.
    Tags,
}

/// A route as planned: name → (prefix, next hop).
pub type RouteSet = BTreeMap<String, (String, String)>;

/// Pure planning: applies ops to the current routes. Returns the new set, each op's result, and whether
/// anything changed. Creates that would exceed the table limit fail with an error naming the limit.
pub fn plan(current: &RouteSet, ops: &[RouteOp], table: &str) -> (RouteSet, Vec<Result<(), String>>, bool) {
    let mut next = current.clone();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            RouteOp::Create {
                name,
                prefix,
                next_hop,
                node,
            } => {
                // The legacy route of this node (plain node name) is replaced by the suffixed one.
                if name != node {
                    next.remove(node);
                }
                let exists = next.contains_key(name);
                if !exists && next.len() >= MAX_ROUTES_PER_TABLE {
                    results.push(Err(format!(
                        "route table {table} already holds {} routes: Azure allows at most {MAX_ROUTES_PER_TABLE} routes per route table",
                        next.len()
                    )));
                    continue;
                }
                next.insert(name.clone(), (prefix.clone(), next_hop.clone()));
                results.push(Ok(()));
            }
            RouteOp::Delete { name, node } => {
                next.remove(name);
                next.remove(node);
                results.push(Ok(()));
            }
            RouteOp::Tags => results.push(Ok(())),
        }
    }
    let changed = &next != current;
    (next, results, changed)
}

fn to_set(table: &network::RouteTable) -> RouteSet {
    table
        .properties
        .as_ref()
        .map(|p| {
            p.routes
                .iter()
                .filter_map(|r| {
                    let props = r.properties.as_ref()?;
                    Some((
                        r.name.clone()?,
                        (
                            props.address_prefix.clone().unwrap_or_default(),
                            props.next_hop_ip_address.clone().unwrap_or_default(),
                        ),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn to_routes(set: &RouteSet) -> Vec<network::Route> {
    set.iter()
        .map(|(name, (prefix, hop))| network::Route {
            name: Some(name.clone()),
            properties: Some(network::RoutePropertiesFormat {
                address_prefix: Some(prefix.clone()),
                next_hop_type: network::RouteNextHopType::VirtualAppliance,
                next_hop_ip_address: Some(hop.clone()),
                provisioning_state: None,
                has_bgp_override: None,
            }),
            ..Default::default()
        })
        .collect()
}

/// The route-table writer of one cluster.
pub struct RouteTableWriter {
    client: Arc<dyn RouteTables>,
    vmset: Arc<dyn VmSet>,
    resource_group: String,
    table: String,
    location: String,
    tags: BTreeMap<String, String>,
    /// `systemTags` (lower-cased keys), for reconciling the table's tags; tags are managed only when the
    /// table is in the cluster's resource group (as upstream).
    system_tags: Vec<String>,
    manage_tags: bool,
    queue: GroupCommit<RouteOp, Result<(), CloudError>>,
    /// The table as last read or written (ETag included): `list` answers from it within
    /// `routeTableCacheTTLInSeconds`; a write reuses it at any age (its ETag turns a stale copy into a 412
    /// and a re-read, never a lost update), which saves the GET of every batch.
    copy: SharedCopy<network::RouteTable>,
    unmanaged_nodes: Mutex<std::collections::HashSet<String>>,
    unmanaged_routes: Mutex<HashMap<String, Route>>,
}

impl RouteTableWriter {
    /// A writer for the config's route table.
    pub fn new(cfg: &CloudConfig, client: Arc<dyn RouteTables>, vmset: Arc<dyn VmSet>) -> Self {
        let manage_tags = cfg.route_table_resource_group.eq_ignore_ascii_case(&cfg.resource_group);
        let tags = if manage_tags {
            cfg.merged_tags()
        } else {
            BTreeMap::new()
        };
        Self {
            client,
            vmset,
            resource_group: cfg.route_table_resource_group.clone(),
            table: cfg.route_table_name.clone(),
            location: cfg.location.clone(),
            tags,
            system_tags: crate::config::parse_system_tags(&cfg.system_tags),
            manage_tags,
            queue: GroupCommit::new(),
            copy: SharedCopy::new(std::time::Duration::from_secs(
                u64::try_from(cfg.route_table_cache_ttl_in_seconds).unwrap_or(0),
            )),
            unmanaged_nodes: Mutex::new(Default::default()),
            unmanaged_routes: Mutex::new(HashMap::new()),
        }
    }

    /// Marks a node as unmanaged (`kubernetes.azure.com/managed=false`) or managed again.
    pub fn set_unmanaged(&self, node: &str, unmanaged: bool) {
        let mut s = self.unmanaged_nodes.lock().unwrap_or_else(|p| p.into_inner());
        if unmanaged {
            s.insert(node.to_string());
        } else {
            s.remove(node);
        }
    }

    fn is_unmanaged(&self, node: &str) -> bool {
        self.unmanaged_nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(node)
    }

    /// Queues a change and waits for its result; concurrent changes are group-committed (one read and one
    /// write per batch).
    pub async fn submit(&self, op: RouteOp) -> Result<(), CloudError> {
        self.queue
            .submit(op, |ops| self.apply(ops))
            .await
            .unwrap_or_else(|| Err(CloudError::Azure("route update was abandoned".into())))
    }

    /// The table: our last copy when it is younger than `max_age` (writes carry its ETag, so a stale copy
    /// costs a 412 and a re-read, never a lost update), else a GET.
    async fn read(&self, max_age: Option<std::time::Duration>) -> Result<Option<network::RouteTable>, ArmError> {
        if let Some(max_age) = max_age {
            if let Some(Some(t)) = self.copy.get(max_age) {
                return Ok(Some((*t).clone()));
            }
        }
        match self.client.get(&self.resource_group, &self.table).await {
            Ok(t) => {
                self.copy.set(Some(Arc::new(t.clone())));
                Ok(Some(t))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn apply(&self, ops: Vec<RouteOp>) -> Vec<Result<(), CloudError>> {
        match self.apply_ops(&ops).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(CloudError::InvalidInput))
                .collect(),
            Err(e) => ops.iter().map(|_| Err(CloudError::Arm(e.clone()))).collect(),
        }
    }

    async fn apply_ops(&self, ops: &[RouteOp]) -> Result<Vec<Result<(), String>>, ArmError> {
        let mut fresh = false;
        for attempt in 0..shared::MAX_ATTEMPTS {
            let current = self.read((!fresh).then_some(std::time::Duration::MAX)).await?;
            let set = current.as_ref().map(to_set).unwrap_or_default();
            let (next, results, changed) = plan(&set, ops, &self.table);
            let tags = current.as_ref().and_then(|t| self.reconciled_tags(t));
            if !changed && tags.is_none() && current.is_some() {
                return Ok(results);
            }
            let mut table = current.unwrap_or_else(|| {
                let mut t = network::RouteTable::default();
                t.resource.location = Some(self.location.clone());
                if !self.tags.is_empty() {
                    t.resource.tags = serde_json::to_value(&self.tags).ok();
                }
                t
            });
            if let Some(t) = tags {
                tracing::info!(route_table = %self.table, "route table tags reconciled with the cloud config's");
                table.resource.tags = serde_json::to_value(&t).ok();
            }
            let props = table.properties.get_or_insert_with(Default::default);
            props.routes = to_routes(&next);
            props.subnets.clear(); // read-only (the typed form of shared::strip_read_only for route tables)
            match self
                .client
                .create_or_update(&self.resource_group, &self.table, &table)
                .await
            {
                Ok(written) => {
                    tracing::info!(route_table = %self.table, routes = next.len(), changes = ops.len(), "route table updated");
                    self.copy.set(Some(Arc::new(written)));
                    return Ok(results);
                }
                Err(e) if e.is_conflict() && attempt + 1 < shared::MAX_ATTEMPTS => {
                    tracing::debug!(route_table = %self.table, "route table changed under us; re-reading");
                    self.copy.forget();
                    fresh = true;
                }
                Err(e) => {
                    self.copy.forget();
                    return Err(e);
                }
            }
        }
        Err(ArmError::Conflict {
            operation: "route_table_create_or_update".into(),
            resource: self.table.clone(),
        })
    }

    /// The node's private IP of the CIDR's family.
    async fn next_hop(&self, node: &str, cidr: &str) -> Result<String, CloudError> {
        let vm = self.vmset.node(node).await?;
        let ips = self.vmset.node_ips(&vm).await?;
        let v6 = cidr.contains(':');
        let ip = if v6 {
            ips.internal_v6.first()
        } else {
            ips.internal_v4.first()
        };
        ip.cloned().ok_or_else(|| {
            CloudError::InvalidInput(format!(
                "node {node} has no private IPv{} address for route {cidr}",
                if v6 { 6 } else { 4 }
            ))
        })
    }

    /// The table's tags reconciled with the cloud config's, when they differ (and tags are ours to manage).
    fn reconciled_tags(&self, table: &network::RouteTable) -> Option<BTreeMap<String, String>> {
        if !self.manage_tags {
            return None;
        }
        let current: BTreeMap<String, String> = table
            .resource
            .tags
            .as_ref()
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        crate::config::reconcile_tags(&current, &self.tags, &self.system_tags, |_| false)
    }

    /// Routes in the table (a missing table has none; read at most once per `routeTableCacheTTLInSeconds`,
    /// our own writes refresh the copy) plus the in-memory routes of unmanaged nodes. A table whose tags
    /// differ from the cloud config's gets them (upstream's `ensureRouteTableTagged` on list).
    pub async fn list(&self) -> Result<Vec<Route>, CloudError> {
        let mut table = self.read(Some(self.copy.ttl())).await.map_err(CloudError::Arm)?;
        if table.as_ref().and_then(|t| self.reconciled_tags(t)).is_some() {
            self.submit(RouteOp::Tags).await?;
            table = self
                .read(Some(std::time::Duration::MAX))
                .await
                .map_err(CloudError::Arm)?;
        }
        let mut out: Vec<Route> = table
            .as_ref()
            .map(to_set)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, (prefix, _))| Route {
                target_node: node_of_route_name(&name).to_string(),
                name,
                destination_cidrs: vec![prefix],
                blackhole: false,
            })
            .collect();
        out.extend(
            self.unmanaged_routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned(),
        );
        Ok(out)
    }

    /// Creates a route for `route.target_node` and its first destination CIDR.
    pub async fn create(&self, route: &Route) -> Result<(), CloudError> {
        let cidr = route.destination_cidrs.first().ok_or_else(|| {
            CloudError::InvalidInput(format!("route for node {} has no destination CIDR", route.target_node))
        })?;
        let name = route_name(&route.target_node, cidr);
        if self.is_unmanaged(&route.target_node) {
            let r = Route {
                name: name.clone(),
                ..route.clone()
            };
            self.unmanaged_routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, r);
            return Ok(());
        }
        let next_hop = self.next_hop(&route.target_node, cidr).await?;
        self.submit(RouteOp::Create {
            name,
            prefix: cidr.clone(),
            next_hop,
            node: route.target_node.clone(),
        })
        .await
    }

    /// Deletes a route (by its node and CIDR, or its name).
    pub async fn delete(&self, route: &Route) -> Result<(), CloudError> {
        let name = match route.destination_cidrs.first() {
            Some(cidr) => route_name(&route.target_node, cidr),
            None => route.name.clone(),
        };
        if self
            .unmanaged_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name)
            .is_some()
        {
            return Ok(());
        }
        self.submit(RouteOp::Delete {
            name,
            node: route.target_node.clone(),
        })
        .await
    }
}

#[async_trait::async_trait]
impl Routes for crate::AzureCloud {
    async fn list_routes(&self, _cluster_name: &str) -> Result<Vec<Route>, CloudError> {
        self.routes()?.list().await
    }

    async fn create_route(&self, _cluster_name: &str, _name_hint: &str, route: &Route) -> Result<(), CloudError> {
        let op = async { self.routes()?.create(route).await };
        self.observed_op("routes_create_route", route.target_node.clone(), op)
            .await
    }

    async fn delete_route(&self, _cluster_name: &str, route: &Route) -> Result<(), CloudError> {
        let op = async { self.routes()?.delete(route).await };
        self.observed_op("routes_delete_route", route.target_node.clone(), op)
            .await
    }

    fn set_node_unmanaged(&self, node: &str, unmanaged: bool) {
        crate::AzureCloud::set_node_unmanaged(self, node, unmanaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(route_name("node-0", "10.244.0.0/24"), "node-0____102440024");
        assert_eq!(route_name("node-0", "fd00:10:244::/64"), "node-0____fd001024464");
        assert_eq!(node_of_route_name("node-0____102440024"), "node-0");
        assert_eq!(node_of_route_name("legacy-node"), "legacy-node");
    }

    fn set(items: &[(&str, &str, &str)]) -> RouteSet {
        items
            .iter()
            .map(|(n, p, h)| (n.to_string(), (p.to_string(), h.to_string())))
            .collect()
    }

    fn create(node: &str, cidr: &str, hop: &str) -> RouteOp {
        RouteOp::Create {
            name: route_name(node, cidr),
            prefix: cidr.into(),
            next_hop: hop.into(),
            node: node.into(),
        }
    }

    #[test]
    fn planning_table() {
        // Create into empty; idempotent repeat; replace next hop; legacy clean-up; delete with legacy twin.
        let (s, r, changed) = plan(&RouteSet::new(), &[create("a", "10.244.0.0/24", "10.0.0.4")], "rt");
        assert!(changed && r[0].is_ok());
        assert_eq!(s, set(&[("a____102440024", "10.244.0.0/24", "10.0.0.4")]));
        let (_, _, changed) = plan(&s, &[create("a", "10.244.0.0/24", "10.0.0.4")], "rt");
        assert!(!changed);
        let (s2, _, changed) = plan(&s, &[create("a", "10.244.0.0/24", "10.0.0.9")], "rt");
        assert!(changed);
        assert_eq!(s2["a____102440024"].1, "10.0.0.9");
        let legacy = set(&[("b", "10.244.1.0/24", "10.0.0.5")]);
        let (s3, _, _) = plan(&legacy, &[create("b", "10.244.1.0/24", "10.0.0.5")], "rt");
        assert_eq!(s3, set(&[("b____102441024", "10.244.1.0/24", "10.0.0.5")]));
        let both = set(&[("c", "10.244.2.0/24", "x"), ("c____102442024", "10.244.2.0/24", "x")]);
        let (s4, _, _) = plan(
            &both,
            &[RouteOp::Delete {
                name: "c____102442024".into(),
                node: "c".into(),
            }],
            "rt",
        );
        assert!(s4.is_empty());
        // Deleting an absent route is a success without a change.
        let (_, r, changed) = plan(
            &RouteSet::new(),
            &[RouteOp::Delete {
                name: "x____1".into(),
                node: "x".into(),
            }],
            "rt",
        );
        assert!(r[0].is_ok() && !changed);
    }

    #[test]
    fn limit_names_the_limit() {
        let full: RouteSet = (0..400)
            .map(|i| (format!("n{i}____1"), ("p".to_string(), "h".to_string())))
            .collect();
        let (s, r, changed) = plan(
            &full,
            &[create("new", "10.1.0.0/24", "h"), create("n0", "1", "h2")],
            "rt",
        );
        assert!(r[0]
            .as_ref()
            .unwrap_err()
            .contains("at most 400 routes per route table"));
        assert!(r[1].is_ok(), "replacing an existing route is fine at the limit");
        assert!(changed);
        assert_eq!(s.len(), 400);
    }
}
