//! Load balancers. Present: upstream names (`names`), typed Service annotations (`annotations`), the rules
//! and probes (`rules`) and the frontends and public IPs (`frontend`) a Service needs, all pure and
//! table-tested. Still to come (the LoadBalancer issue): security rules, backend pools, diffing against the
//! current LB, the group-committed applier; `AzureCloud` does not implement the `LoadBalancer` trait yet.

pub mod annotations;
pub mod frontend;
pub mod names;
pub mod rules;
