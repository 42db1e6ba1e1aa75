//! The simulator's own control endpoints (loopback, no auth): `/_sim/calls`, `/_sim/reset`,
//! `/_sim/faults`, `/_sim/state`, `/_sim/instances`.

use crate::faults::FaultRule;
use crate::{lock, scenario, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// `GET /_sim/calls`: every record and the counts.
pub(crate) async fn calls(State(s): State<Arc<Shared>>) -> Json<Value> {
    let a = lock(&s.calls);
    Json(json!({"calls": a.records(), "counts": a.counts()}))
}

/// `POST /_sim/reset`: forget recorded calls.
pub(crate) async fn reset(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.calls).reset();
    StatusCode::NO_CONTENT
}

/// `GET /_sim/faults`.
pub(crate) async fn get_faults(State(s): State<Arc<Shared>>) -> Json<Vec<FaultRule>> {
    Json(lock(&s.faults).rules().to_vec())
}

/// `PUT /_sim/faults`: replace the rules (a JSON list of rules).
pub(crate) async fn put_faults(State(s): State<Arc<Shared>>, Json(rules): Json<Vec<FaultRule>>) -> StatusCode {
    lock(&s.faults).set(rules);
    StatusCode::NO_CONTENT
}

/// `DELETE /_sim/faults`.
pub(crate) async fn delete_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.faults).set(Vec::new());
    StatusCode::NO_CONTENT
}

/// `GET /_sim/state`: every resource.
pub(crate) async fn state(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(lock(&s.store).dump())
}

/// A runtime change.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub(crate) enum Change {
    /// Add instances to a scale set (next free instance ids).
    #[serde(rename_all = "camelCase")]
    Add { scale_set: String, count: u32 },
    /// Remove a VM or instance by id.
    Remove { id: String },
    /// Set the power state of a VM or instance.
    #[serde(rename_all = "camelCase")]
    Power { id: String, state: String },
}

/// `POST /_sim/instances`: add, remove, stop or deallocate instances at run time.
pub(crate) async fn change_instances(State(s): State<Arc<Shared>>, Json(change): Json<Change>) -> Response {
    let mut store = lock(&s.store);
    let result = match change {
        Change::Add { scale_set, count } => {
            let ss_id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}",
                s.cluster.subscription, s.cluster.resource_group
            );
            scenario::scale_out(&mut store, &ss_id, u64::from(count)).map(|added| json!({"added": added}))
        }
        Change::Remove { id } => scenario::remove_vm(&mut store, &id).map(|_| json!({"removed": id})),
        Change::Power { id, state } => {
            scenario::set_power_state(&mut store, &id, &state).map(|_| json!({"id": id, "powerState": state}))
        }
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}
