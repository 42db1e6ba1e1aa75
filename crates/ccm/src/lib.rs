//! The Azure cloud-controller-manager: command line (`cli`), start-up, endpoints and leader election
//! (`manager`, `leader`), the cloud-node, cloud-node-lifecycle and route controllers (`controllers`), the
//! service controller (`service`), the Node cache they share (`informer`), and, with the default feature `simulators`, a demo and the benchmarks against the built-in simulated Azure
//! and cluster (`demo`, `bench`).
#![warn(missing_docs)]

pub mod authz;
#[cfg(feature = "simulators")]
pub mod bench;
pub mod cli;
pub mod compat;
pub mod controllers;
#[cfg(feature = "simulators")]
pub mod demo;
pub mod events;
pub mod informer;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod node_ipam;
pub mod node_manager;
pub mod runtime;
pub mod service;
