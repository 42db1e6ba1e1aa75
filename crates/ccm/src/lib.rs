//! The Azure cloud-controller-manager: command line, start-up and (in later versions) the controllers.
//!
//! Today the binary validates configurations (`--check-config`); the controllers are the subject of the
//! cloud-controller-manager issue and are not in this version.
#![warn(missing_docs)]

pub mod cli;
