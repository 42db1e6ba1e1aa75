//! Load balancers. Present: upstream names (`names`), typed Service annotations (`annotations`), and the
//! rules and probes a Service needs (`rules`), all pure and table-tested. Still to come (the LoadBalancer
//! issue): frontend and public-IP planning, security rules, backend pools, the group-committed applier;
//! `AzureCloud` does not implement the `LoadBalancer` trait yet.

pub mod annotations;
pub mod names;
pub mod rules;
