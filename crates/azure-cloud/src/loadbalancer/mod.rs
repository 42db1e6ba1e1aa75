//! Load balancers: upstream's names and Service annotations (this module's first pieces). Planning,
//! public IPs, security rules, backend pools and the group-committed applier are the LoadBalancer issue's
//! remaining work; `AzureCloud` does not implement the `LoadBalancer` trait yet.

pub mod annotations;
pub mod names;
