//! An Azure cloud provider for Kubernetes.
//!
//! Modules, one per concern: [`config`] (azure.json), [`auth`] (credentials), [`arm`] (ARM access: ids,
//! resource clients, the request pipeline, caches), [`http`] (the HTTP client), [`secret`].
#![warn(missing_docs)]

pub mod arm;
pub mod auth;
pub mod batch;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod disks;
pub mod http;
pub mod imds;
pub mod loadbalancer;
pub mod nodegroups;
pub mod provider;
pub mod routes;
pub mod secret;
pub mod vmset;

pub use cloud::{ArmClients, AzureCloud};
