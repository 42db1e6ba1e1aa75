//! Every call recorded: time, method, provider, resource type, operation, status.

use serde::Serialize;
use std::collections::BTreeMap;

/// One recorded call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallRecord {
    /// Simulated milliseconds since start, when the answer was sent.
    pub t_ms: u64,
    /// Simulated milliseconds since start, when the request arrived (before the simulated latency).
    pub arrived_ms: u64,
    /// The `Retry-After` the answer carried, in simulated milliseconds.
    pub retry_after_ms: Option<u64>,
    /// HTTP method.
    pub method: String,
    /// `Microsoft.Compute`, `Microsoft.Network`, `AAD`, `IMDS`, `Metadata`.
    pub provider: String,
    /// Resource type path, e.g. `Microsoft.Network/loadBalancers`, or the endpoint.
    pub resource_type: String,
    /// `get`, `list`, `put`, `patch`, `delete`, `poll`, `action`, `token`, `metadata`.
    pub operation: String,
    /// `read` or `write`.
    pub access: String,
    /// HTTP status answered (0: no answer — timeout or reset fault).
    pub status: u16,
    /// The request path (ARM calls; empty for the others).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl CallRecord {
    /// True for ARM calls (not AAD, IMDS or discovery).
    pub fn is_arm(&self) -> bool {
        self.provider.starts_with("Microsoft.")
    }
}

/// The call log.
#[derive(Debug, Default)]
pub struct Accounting {
    records: Vec<CallRecord>,
}

impl Accounting {
    /// Appends a record.
    pub fn record(&mut self, r: CallRecord) {
        self.records.push(r);
    }

    /// The records.
    pub fn records(&self) -> &[CallRecord] {
        &self.records
    }

    /// Counts by `provider resource_type operation` (access).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(format!(
                "{} {} {} ({})",
                r.provider, r.resource_type, r.operation, r.access
            ))
            .or_insert(0) += 1;
        }
        m
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.records.clear();
    }
}
