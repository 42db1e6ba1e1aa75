//! An Azure cloud provider for Kubernetes.
//!
//! Modules, one per concern: [`config`] (azure.json), [`auth`] (credentials), [`arm`] (ARM access: ids,
//! resource clients, the request pipeline, caches), [`http`] (the HTTP client), [`secret`].
#![warn(missing_docs)]

pub mod arm;
pub mod auth;
pub mod config;
pub mod http;
pub mod secret;
