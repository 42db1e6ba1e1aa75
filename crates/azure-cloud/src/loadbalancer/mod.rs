//! Load balancers. Present, all pure and table-tested: upstream names (`names`), typed Service annotations
//! (`annotations`), the rules and probes (`rules`) and the frontends and public IPs (`frontend`) a Service
//! needs, and backend eligibility (`backends`). Still to come (the LoadBalancer issue): security rules,
//! backend-pool membership writes, diffing against the current LB, the group-committed applier;
//! `AzureCloud` does not implement the `LoadBalancer` trait yet.

pub mod annotations;
pub mod backends;
pub mod frontend;
pub mod names;
pub mod rules;
