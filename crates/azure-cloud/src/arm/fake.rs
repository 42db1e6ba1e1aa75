//! An in-memory ARM for tests (ours and embedders'): the network client traits — load balancers and their
//! pools, public IPs, security groups, route tables — over a JSON store with ETags (`If-Match` from the
//! body's `etag`: a stale one is a 412), with injectable errors and delays and per-operation call counts, so
//! the shared-resource writers get millisecond tests. It is a test double, not a simulator: it checks no
//! references or limits (azure-sim does, over HTTP).

use super::clients::{LoadBalancers, PublicIpAddresses, RouteTables, SecurityGroups};
use super::error::ArmError;
use async_trait::async_trait;
use azure_mgmt_network::models as network;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// An error to answer, once, to the next matching call.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `GET`, `PUT`, `DELETE` (or `*`).
    pub method: &'static str,
    /// `loadBalancers`, `publicIPAddresses`, `networkSecurityGroups`, `routeTables` (or `*`).
    pub resource_type: &'static str,
    /// What to answer.
    pub error: ArmError,
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Value>,
    etag: u64,
    calls: HashMap<String, usize>,
    faults: VecDeque<Fault>,
    delay: Duration,
}

/// The in-memory ARM.
#[derive(Default)]
pub struct FakeArm {
    state: Mutex<State>,
}

fn key(ty: &str, rg: &str, name: &str) -> String {
    format!("{ty}/{rg}/{name}").to_ascii_lowercase()
}

impl FakeArm {
    /// An empty ARM.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `fault.error` to the next call matching its method and type.
    pub fn fail_next(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Every call waits this long before it is answered (to hold a batch in flight).
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// Calls of `method` on `resource_type` so far.
    pub fn calls(&self, method: &str, resource_type: &str) -> usize {
        self.lock()
            .calls
            .get(&format!("{method} {resource_type}"))
            .copied()
            .unwrap_or(0)
    }

    /// A stored resource.
    pub fn resource(&self, ty: &str, rg: &str, name: &str) -> Option<Value> {
        self.lock().resources.get(&key(ty, rg, name)).cloned()
    }

    /// Stores a resource as someone else's write would (a new ETag).
    pub fn seed(&self, ty: &str, rg: &str, name: &str, mut body: Value) {
        let mut s = self.lock();
        s.etag += 1;
        body["etag"] = Value::String(format!("W/\"{}\"", s.etag));
        s.resources.insert(key(ty, rg, name), body);
    }

    async fn call(&self, method: &'static str, ty: &'static str) -> Result<(), ArmError> {
        let (delay, fault) = {
            let mut s = self.lock();
            *s.calls.entry(format!("{method} {ty}")).or_insert(0) += 1;
            let i = s.faults.iter().position(|f| {
                (f.method == "*" || f.method == method) && (f.resource_type == "*" || f.resource_type == ty)
            });
            (s.delay, i.and_then(|i| s.faults.remove(i)))
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fault.map_or(Ok(()), |f| Err(f.error))
    }

    fn not_found(ty: &str, name: &str) -> ArmError {
        ArmError::NotFound {
            operation: format!("{ty}_get"),
            resource: name.to_string(),
            code: "ResourceNotFound".into(),
        }
    }

    async fn get(&self, ty: &'static str, rg: &str, name: &str) -> Result<Value, ArmError> {
        self.call("GET", ty).await?;
        self.resource(ty, rg, name).ok_or_else(|| Self::not_found(ty, name))
    }

    async fn list(&self, ty: &'static str, rg: &str) -> Result<Vec<Value>, ArmError> {
        self.call("GET", ty).await?;
        let prefix = key(ty, rg, "");
        Ok(self
            .lock()
            .resources
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn put(&self, ty: &'static str, rg: &str, name: &str, mut body: Value) -> Result<Value, ArmError> {
        self.call("PUT", ty).await?;
        let mut s = self.lock();
        let k = key(ty, rg, name);
        let sent = body.get("etag").and_then(Value::as_str).map(str::to_string);
        let stored = s
            .resources
            .get(&k)
            .and_then(|v| v.get("etag"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(sent) = sent {
            if Some(&sent) != stored.as_ref() {
                return Err(ArmError::Conflict {
                    operation: format!("{ty}_create_or_update"),
                    resource: name.to_string(),
                });
            }
        }
        s.etag += 1;
        body["etag"] = Value::String(format!("W/\"{}\"", s.etag));
        body["name"] = Value::String(name.to_string());
        s.resources.insert(k, body.clone());
        Ok(body)
    }

    async fn delete(&self, ty: &'static str, rg: &str, name: &str) -> Result<(), ArmError> {
        self.call("DELETE", ty).await?;
        self.lock().resources.remove(&key(ty, rg, name));
        Ok(())
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, ArmError> {
    serde_json::from_value(v).map_err(|e| ArmError::Decode {
        operation: what.to_string(),
        resource: String::new(),
        reason: e.to_string(),
    })
}

fn json_of<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

#[async_trait]
impl RouteTables for FakeArm {
    async fn get(&self, rg: &str, name: &str) -> Result<network::RouteTable, ArmError> {
        typed(FakeArm::get(self, "routeTables", rg, name).await?, "route_table_get")
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        table: &network::RouteTable,
    ) -> Result<network::RouteTable, ArmError> {
        typed(
            self.put("routeTables", rg, name, json_of(table)).await?,
            "route_table_put",
        )
    }
}

#[async_trait]
impl SecurityGroups for FakeArm {
    async fn get(&self, rg: &str, name: &str) -> Result<network::NetworkSecurityGroup, ArmError> {
        typed(FakeArm::get(self, "networkSecurityGroups", rg, name).await?, "nsg_get")
    }
    async fn create_or_update(&self, rg: &str, name: &str, nsg: &Value) -> Result<Value, ArmError> {
        self.put("networkSecurityGroups", rg, name, nsg.clone()).await
    }
}

#[async_trait]
impl LoadBalancers for FakeArm {
    async fn get(&self, rg: &str, name: &str) -> Result<network::LoadBalancer, ArmError> {
        typed(FakeArm::get(self, "loadBalancers", rg, name).await?, "lb_get")
    }
    async fn list(&self, rg: &str) -> Result<Vec<network::LoadBalancer>, ArmError> {
        FakeArm::list(self, "loadBalancers", rg)
            .await?
            .into_iter()
            .map(|v| typed(v, "lb_list"))
            .collect()
    }
    async fn create_or_update(&self, rg: &str, name: &str, lb: Value) -> Result<Value, ArmError> {
        self.put("loadBalancers", rg, name, lb).await
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        FakeArm::delete(self, "loadBalancers", rg, name).await
    }
    async fn create_or_update_backend_pool(
        &self,
        rg: &str,
        lb: &str,
        pool: &str,
        body: &network::BackendAddressPool,
    ) -> Result<network::BackendAddressPool, ArmError> {
        self.call("PUT", "backendAddressPools").await?;
        let mut s = self.lock();
        let k = key("loadBalancers", rg, lb);
        let Some(stored) = s.resources.get_mut(&k) else {
            return Err(Self::not_found("loadBalancers", lb));
        };
        let mut v = json_of(body);
        v["name"] = Value::String(pool.to_string());
        let pools = stored
            .pointer_mut("/properties/backendAddressPools")
            .and_then(Value::as_array_mut);
        match pools {
            Some(list) => match list.iter_mut().find(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(pool))
            }) {
                Some(p) => *p = v.clone(),
                None => list.push(v.clone()),
            },
            None => stored["properties"]["backendAddressPools"] = Value::Array(vec![v.clone()]),
        }
        typed(v, "pool_put")
    }
}

#[async_trait]
impl PublicIpAddresses for FakeArm {
    async fn get(&self, rg: &str, name: &str) -> Result<network::PublicIpAddress, ArmError> {
        typed(FakeArm::get(self, "publicIPAddresses", rg, name).await?, "pip_get")
    }
    async fn list(&self, rg: &str) -> Result<Vec<network::PublicIpAddress>, ArmError> {
        FakeArm::list(self, "publicIPAddresses", rg)
            .await?
            .into_iter()
            .map(|v| typed(v, "pip_list"))
            .collect()
    }
    async fn create_or_update(
        &self,
        rg: &str,
        name: &str,
        pip: &network::PublicIpAddress,
    ) -> Result<network::PublicIpAddress, ArmError> {
        typed(self.put("publicIPAddresses", rg, name, json_of(pip)).await?, "pip_put")
    }
    async fn delete(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        FakeArm::delete(self, "publicIPAddresses", rg, name).await
    }
}
