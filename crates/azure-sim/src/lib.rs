//! azure-sim: a stateful local Azure (ARM compute + network, AAD, IMDS) — being built in the azure-sim issue.
#![warn(missing_docs)]
