//! Leader election over a coordination.k8s.io Lease with client-go semantics: acquire when the lease is
//! free or expired, renew every retry period, give up leadership when a renewal has not succeeded within
//! the renew deadline.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;

/// Election settings (`--leader-elect-*`).
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This process's identity.
    pub identity: String,
    /// `--leader-elect-lease-duration` (15 s).
    pub lease_duration: Duration,
    /// `--leader-elect-renew-deadline` (10 s).
    pub renew_deadline: Duration,
    /// `--leader-elect-retry-period` (2 s).
    pub retry_period: Duration,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn micro_time(us: i64) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_microsecond(us).ok().map(MicroTime)
}

/// True when the lease is held by someone else and not expired.
pub fn held_by_other(lease: &Lease, identity: &str, now_us: i64) -> bool {
    let Some(spec) = lease.spec.as_ref() else { return false };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return false;
    }
    let renew = spec.renew_time.as_ref().map(|t| t.0.as_microsecond()).unwrap_or(0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1_000_000;
    renew + duration > now_us
}

/// One acquire-or-renew attempt; `Ok(true)` when this process holds the lease afterwards.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &ElectionConfig) -> Result<bool, kube::Error> {
    let now = now_micros();
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: micro_time(now),
                    renew_time: micro_time(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(lease) if held_by_other(&lease, &cfg.identity, now) => Ok(false),
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.acquire_time = micro_time(now);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = micro_time(now);
            spec.lease_duration_seconds = Some(secs);
            // The resourceVersion read makes a concurrent writer's update fail with 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election forever, publishing leadership on the returned channel (true while leading).
pub fn run(client: Client, cfg: ElectionConfig) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_renew = tokio::time::Instant::now();
        loop {
            let leading = *tx.borrow();
            match try_acquire_or_renew(&api, &cfg).await {
                Ok(true) => {
                    last_renew = tokio::time::Instant::now();
                    if !leading {
                        tracing::info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.name), "became leader");
                        let _ = tx.send(true);
                    }
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!(identity = %cfg.identity, "lost the lease to another holder");
                        let _ = tx.send(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease update failed");
                    if leading && last_renew.elapsed() > cfg.renew_deadline {
                        tracing::error!(identity = %cfg.identity, "lease not renewed within the renew deadline: stepping down");
                        let _ = tx.send(false);
                    }
                }
            }
            tokio::time::sleep(cfg.retry_period).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let lease = |holder: &str, renew_us: i64| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: micro_time(renew_us),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        };
        let now = 1_000_000_000_000;
        assert!(held_by_other(&lease("b", now - 5_000_000), "a", now));
        assert!(!held_by_other(&lease("b", now - 16_000_000), "a", now));
        assert!(!held_by_other(&lease("a", now), "a", now));
        assert!(!held_by_other(&lease("", now), "a", now));
    }
}
