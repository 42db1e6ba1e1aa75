//! The Azure cloud-controller-manager: command line, start-up and (in later versions) the controllers.
//!
//! Today the binary validates configurations (`--check-config`) and runs the provider against the built-in
//! simulated Azure (`demo`); the controllers are the subject of the cloud-controller-manager issue.
#![warn(missing_docs)]

pub mod cli;
pub mod controllers;
pub mod demo;
pub mod leader;
pub mod manager;
