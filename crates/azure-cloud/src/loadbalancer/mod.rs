//! Load balancers: everything a Service of type LoadBalancer needs in Azure.
//!
//! Pure and table-tested: upstream names (`names`), typed Service annotations (`annotations`), the rules and
//! probes (`rules`) and frontends and public IPs (`frontend`) a Service needs, backend eligibility
//! (`backends`), the LB merge (`plan`) and the security-group merge (`security`). I/O: backend-pool
//! membership of NICs and scale sets (`membership`) and the group-committed applier that implements the
//! `LoadBalancer` trait (`service`).

pub mod annotations;
pub mod backends;
pub mod frontend;
pub mod membership;
pub mod multislb;
pub mod names;
pub mod plan;
pub mod pls;
pub mod rules;
pub mod security;
pub mod service;
