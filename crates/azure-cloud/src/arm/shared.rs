//! The parts every shared-resource writer uses (load balancers, the security group, the route table; disks
//! group-commit per VM): the cached copy of the resource — our last read or the answer to our last write,
//! ETag included — with its own TTL per resource type, one rule for a 412 (forget the copy, read again) and
//! for a failed write (forget the copy), the attempt budget, and the read-only fields stripped before a
//! write, all in one place. The batching itself is [`crate::batch::GroupCommit`].

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Read-modify-write attempts per batch: a 412 (someone else wrote) costs a re-read and another attempt.
pub const MAX_ATTEMPTS: usize = 3;

/// A copy (`None`: the resource is known absent) and when it was taken.
type Taken<T> = (Option<Arc<T>>, Instant);

/// The cached copy of one shared resource.
#[derive(Debug)]
pub struct SharedCopy<T> {
    /// The copy, and the version (bumped by every change of the slot).
    slot: Mutex<(Option<Taken<T>>, u64)>,
    ttl: Duration,
}

impl<T> SharedCopy<T> {
    /// An empty copy with the resource type's TTL (e.g. `loadBalancerCacheTTLInSeconds`).
    pub fn new(ttl: Duration) -> Self {
        Self {
            slot: Mutex::new((None, 0)),
            ttl,
        }
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The copy when it is younger than `max_age`: `Some(Some(v))`, or `Some(None)` when the resource is
    /// known absent; `None` when there is no copy young enough (read from ARM).
    pub fn get(&self, max_age: Duration) -> Option<Option<Arc<T>>> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.0
            .as_ref()
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(v, _)| v.clone())
    }

    /// The copy when it is within the TTL.
    pub fn within_ttl(&self) -> Option<Option<Arc<T>>> {
        self.get(self.ttl)
    }

    /// Keeps `v` (what ARM just answered; `None`: the resource does not exist).
    pub fn set(&self, v: Option<Arc<T>>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = (Some((v, Instant::now())), slot.1 + 1);
    }

    /// The version of the copy: take it before a read, hand it to [`Self::set_read`] after.
    pub fn version(&self) -> u64 {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Keeps what a read started at `version` returned, unless the copy changed meanwhile (a write's answer
    /// that landed while the GET was on its way is newer than the GET: it must not be replaced by it).
    pub fn set_read(&self, version: u64, v: Option<Arc<T>>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.1 == version {
            *slot = (Some((v, Instant::now())), version + 1);
        }
    }

    /// Forgets the copy: after a 412 (it is stale) or a failed write (the resource's state is unknown).
    pub fn forget(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = (None, slot.1 + 1);
    }
}

/// The resource types written through a shared writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Microsoft.Network/loadBalancers`.
    LoadBalancer,
    /// `Microsoft.Network/networkSecurityGroups`.
    SecurityGroup,
    /// `Microsoft.Network/routeTables`.
    RouteTable,
}

/// Removes what ARM computes and refuses (or ignores) in a PUT body, for the resource type.
pub fn strip_read_only(kind: Kind, v: &mut serde_json::Value) {
    use serde_json::Value;
    let top: &[&str] = match kind {
        Kind::LoadBalancer => &["provisioningState", "resourceGuid"],
        Kind::SecurityGroup => &[
            "provisioningState",
            "resourceGuid",
            "networkInterfaces",
            "subnets",
            "defaultSecurityRules",
            "flowLogs",
        ],
        Kind::RouteTable => &["provisioningState", "resourceGuid", "subnets"],
    };
    if let Some(p) = v.get_mut("properties").and_then(Value::as_object_mut) {
        for k in top {
            p.remove(*k);
        }
    }
    if kind != Kind::LoadBalancer {
        return;
    }
    for prop in [
        "frontendIPConfigurations",
        "backendAddressPools",
        "loadBalancingRules",
        "probes",
    ] {
        let Some(children) = v
            .pointer_mut(&format!("/properties/{prop}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in children {
            if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                for k in [
                    "provisioningState",
                    "loadBalancingRules",
                    "backendIPConfigurations",
                    "inboundNatRules",
                    "outboundRules",
                    "outboundRule",
                ] {
                    p.remove(k);
                }
            }
            if let Some(o) = c.as_object_mut() {
                o.remove("etag");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn a_read_that_raced_a_write_does_not_replace_its_answer() {
        let c = SharedCopy::new(Duration::from_secs(10));
        let before_get = c.version();
        c.set(Some(Arc::new("written")));
        c.set_read(before_get, None);
        assert_eq!(
            c.within_ttl(),
            Some(Some(Arc::new("written"))),
            "the older GET is dropped"
        );
        let v = c.version();
        c.set_read(v, Some(Arc::new("read")));
        assert_eq!(c.within_ttl(), Some(Some(Arc::new("read"))), "an unraced GET is kept");
        c.forget();
        c.set_read(v, Some(Arc::new("stale")));
        assert!(c.within_ttl().is_none(), "forgetting counts as a change too");
    }

    #[tokio::test(start_paused = true)]
    async fn copy_expires_with_its_ttl_and_is_forgotten_on_demand() {
        let c = SharedCopy::new(Duration::from_secs(10));
        assert!(c.within_ttl().is_none());
        c.set(Some(Arc::new(1)));
        assert_eq!(c.within_ttl(), Some(Some(Arc::new(1))));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(c.within_ttl().is_none());
        assert!(
            c.get(Duration::MAX).is_some(),
            "writes may still use an old copy (its ETag protects them)"
        );
        c.set(None);
        assert_eq!(c.within_ttl(), Some(None), "known absent");
        c.forget();
        assert!(c.get(Duration::MAX).is_none());
    }

    #[test]
    fn read_only_fields_per_kind() {
        let mut nsg = json!({"properties": {"securityRules": [], "subnets": [{}], "networkInterfaces": [{}], "provisioningState": "Succeeded", "defaultSecurityRules": []}});
        strip_read_only(Kind::SecurityGroup, &mut nsg);
        assert_eq!(nsg, json!({"properties": {"securityRules": []}}));
        let mut lb = json!({"properties": {"resourceGuid": "g", "frontendIPConfigurations": [{"name": "f", "etag": "e", "properties": {"loadBalancingRules": [{}], "privateIPAddress": "10.0.0.1"}}]}});
        strip_read_only(Kind::LoadBalancer, &mut lb);
        assert_eq!(
            lb,
            json!({"properties": {"frontendIPConfigurations": [{"name": "f", "properties": {"privateIPAddress": "10.0.0.1"}}]}})
        );
        let mut rt = json!({"properties": {"routes": [], "subnets": [{}]}});
        strip_read_only(Kind::RouteTable, &mut rt);
        assert_eq!(rt, json!({"properties": {"routes": []}}));
    }
}
