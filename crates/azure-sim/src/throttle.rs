//! The throttling model (off by default, on for benchmarks): ARM subscription read/write/delete token
//! buckets, Network RP 1,000 writes / 10,000 reads per 5 minutes, Compute RP policies per subscription and
//! per resource. Every ARM answer carries `x-ms-ratelimit-remaining-*`; an empty bucket → 429 with
//! `Retry-After`. Buckets refill on the simulated clock.

use std::collections::HashMap;

/// Read, write or delete (ARM counts deletes apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// GET.
    Read,
    /// PUT, PATCH, POST.
    Write,
    /// DELETE.
    Delete,
}

#[derive(Debug, Clone)]
struct Bucket {
    cap: f64,
    per_ms: f64,
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    fn new(cap: f64, refill: f64, per_ms: f64) -> Self {
        Self {
            cap,
            per_ms: refill / per_ms,
            tokens: cap,
            last_ms: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        let dt = now.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + dt * self.per_ms).min(self.cap);
        self.last_ms = now;
    }

    /// Milliseconds until one token is available (0 when available now).
    fn wait_ms(&self) -> u64 {
        if self.tokens >= 1.0 {
            0
        } else {
            ((1.0 - self.tokens) / self.per_ms).ceil() as u64
        }
    }
}

/// A bucket definition: name, capacity, refill amount per window (ms).
#[derive(Debug, Clone, Copy)]
struct Policy {
    name: &'static str,
    cap: f64,
    refill: f64,
    window_ms: f64,
}

const MIN: f64 = 60_000.0;
const SEC: f64 = 1_000.0;

const SUB_READS: Policy = Policy {
    name: "subscription-reads",
    cap: 250.0,
    refill: 25.0,
    window_ms: SEC,
};
const SUB_WRITES: Policy = Policy {
    name: "subscription-writes",
    cap: 200.0,
    refill: 10.0,
    window_ms: SEC,
};
const SUB_DELETES: Policy = Policy {
    name: "subscription-deletes",
    cap: 200.0,
    refill: 10.0,
    window_ms: SEC,
};
const NRP_READS: Policy = Policy {
    name: "NetworkReads",
    cap: 10_000.0,
    refill: 10_000.0,
    window_ms: 5.0 * MIN,
};
const NRP_WRITES: Policy = Policy {
    name: "NetworkWrites",
    cap: 1_000.0,
    refill: 1_000.0,
    window_ms: 5.0 * MIN,
};

fn crp(name: &'static str, cap: f64, refill_per_min: f64) -> Policy {
    Policy {
        name,
        cap,
        refill: refill_per_min,
        window_ms: MIN,
    }
}

/// The Compute policies that apply to a call: (policy, per-resource key or empty for subscription scope).
fn compute_policies(resource_type: &str, op: &str, resource_id: &str) -> Vec<(Policy, String)> {
    let t = resource_type.to_ascii_lowercase();
    let id = resource_id.to_ascii_lowercase();
    let sub = String::new();
    let mut v = Vec::new();
    if t.ends_with("virtualmachinescalesets/virtualmachines") {
        match op {
            "list" => v.push((crp("HighCostGetVMScaleSetVMs", 1080.0, 360.0), sub)),
            "get" => {
                v.push((crp("GetVMScaleSetVM", 6000.0, 2000.0), sub));
                v.push((crp("GetVMScaleSetVMResource", 36.0, 12.0), id));
            }
            _ => {
                v.push((crp("VMScaleSetVMUpdate", 1500.0, 500.0), sub));
                v.push((crp("VMScaleSetVMUpdateResource", 12.0, 4.0), id));
            }
        }
    } else if t.ends_with("virtualmachinescalesets") {
        match op {
            "list" => v.push((crp("HighCostGetVMScaleSet", 1080.0, 360.0), sub)),
            "get" => {
                v.push((crp("GetVMScaleSet", 2400.0, 800.0), sub));
                v.push((crp("GetVMScaleSetResource", 36.0, 12.0), id));
            }
            _ => {
                v.push((crp("VMScaleSetUpdate", 1500.0, 500.0), sub));
                v.push((crp("VMScaleSetUpdateResource", 12.0, 4.0), id));
            }
        }
    } else if t.ends_with("virtualmachines") || t.ends_with("availabilitysets") {
        match op {
            "list" => v.push((crp("HighCostGet", 900.0, 300.0), sub)),
            "get" => {
                v.push((crp("LowCostGet", 24_000.0, 8_000.0), sub));
                v.push((crp("LowCostGetResource", 36.0, 12.0), id));
            }
            _ => {
                v.push((crp("PutVM", 1500.0, 500.0), sub));
                v.push((crp("PutVMResource", 12.0, 4.0), id));
            }
        }
    }
    v
}

/// A refused call.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    /// Simulated milliseconds until the bucket has a token.
    pub wait_ms: u64,
    /// ARM error code.
    pub code: &'static str,
    /// Message (names the bucket).
    pub message: String,
    /// `x-ms-ratelimit-remaining-subscription-*` as ARM sends it on a 429 too: 0 when the subscription
    /// bucket refused, its count when a resource provider's bucket did.
    pub headers: Vec<(String, String)>,
}

/// The model.
#[derive(Debug)]
pub struct ThrottleModel {
    enabled: bool,
    buckets: HashMap<(String, String), Bucket>,
}

impl ThrottleModel {
    /// A model; when disabled it never refuses and reports full buckets.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            buckets: HashMap::new(),
        }
    }

    /// Whether it refuses calls.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Charges a call: the headers to send, or why it is refused. `provider` is `Microsoft.Compute` or
    /// `Microsoft.Network` (anything else only meets the subscription buckets).
    pub fn charge(
        &mut self,
        now_ms: u64,
        provider: &str,
        resource_type: &str,
        op: &str,
        kind: Kind,
        resource_id: &str,
    ) -> Result<Vec<(String, String)>, Throttled> {
        let sub = match kind {
            Kind::Read => SUB_READS,
            Kind::Write => SUB_WRITES,
            Kind::Delete => SUB_DELETES,
        };
        let mut policies: Vec<(Policy, String)> = vec![(sub, String::new())];
        if provider.eq_ignore_ascii_case("Microsoft.Network") {
            policies.push((if kind == Kind::Read { NRP_READS } else { NRP_WRITES }, String::new()));
        } else if provider.eq_ignore_ascii_case("Microsoft.Compute") && op != "poll" {
            policies.extend(compute_policies(resource_type, op, resource_id));
        }
        if !self.enabled {
            return Ok(vec![(
                format!("x-ms-ratelimit-remaining-{}", sub.name),
                format!("{}", sub.cap as u64 * 48),
            )]);
        }
        // Check every bucket first; charge only when all have a token.
        let mut sub_left = 0;
        for (p, key) in &policies {
            let b = self
                .buckets
                .entry((p.name.to_string(), key.clone()))
                .or_insert_with(|| Bucket::new(p.cap, p.refill, p.window_ms));
            b.refill(now_ms);
            if p.name == sub.name {
                sub_left = b.tokens.max(0.0) as u64;
            }
            let wait = b.wait_ms();
            if wait > 0 {
                let code = if provider.eq_ignore_ascii_case("Microsoft.Compute") && p.name != sub.name {
                    "OperationNotAllowed"
                } else {
                    "TooManyRequests"
                };
                return Err(Throttled {
                    wait_ms: wait,
                    code,
                    message: format!(
                        "The request was throttled: bucket {}{} is empty; retry after {} ms",
                        p.name,
                        if key.is_empty() {
                            String::new()
                        } else {
                            format!(" of {key}")
                        },
                        wait
                    ),
                    headers: vec![(format!("x-ms-ratelimit-remaining-{}", sub.name), sub_left.to_string())],
                });
            }
        }
        let mut headers = Vec::new();
        let mut compute = Vec::new();
        for (p, key) in &policies {
            if let Some(b) = self.buckets.get_mut(&(p.name.to_string(), key.clone())) {
                b.tokens -= 1.0;
                let remaining = b.tokens.max(0.0) as u64;
                if p.name == sub.name {
                    headers.push((format!("x-ms-ratelimit-remaining-{}", p.name), remaining.to_string()));
                } else if provider.eq_ignore_ascii_case("Microsoft.Compute") {
                    compute.push(format!("Microsoft.Compute/{};{}", p.name, remaining));
                }
            }
        }
        if !compute.is_empty() {
            headers.push(("x-ms-ratelimit-remaining-resource".into(), compute.join(",")));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_writes_run_out_and_refill() {
        let mut m = ThrottleModel::new(true);
        let mut refused = None;
        // Subscription writes: 200 burst at 10/s; at t=0 the subscription bucket empties first.
        for i in 0..300 {
            if let Err(t) = m.charge(
                0,
                "Microsoft.Network",
                "Microsoft.Network/loadBalancers",
                "put",
                Kind::Write,
                "x",
            ) {
                refused = Some((i, t));
                break;
            }
        }
        let (i, t) = refused.unwrap();
        assert_eq!(i, 200);
        assert_eq!(t.wait_ms, 100);
        assert!(t.message.contains("subscription-writes"));
        // A second later ten more fit.
        let ok = (0..20)
            .filter(|_| {
                m.charge(
                    1000,
                    "Microsoft.Network",
                    "Microsoft.Network/loadBalancers",
                    "put",
                    Kind::Write,
                    "x",
                )
                .is_ok()
            })
            .count();
        assert_eq!(ok, 10);
    }

    #[test]
    fn compute_per_resource_bucket_and_headers() {
        let mut m = ThrottleModel::new(true);
        let t = "Microsoft.Compute/virtualMachineScaleSets";
        let mut n = 0;
        while m.charge(0, "Microsoft.Compute", t, "put", Kind::Write, "/ss1").is_ok() {
            n += 1;
        }
        assert_eq!(n, 12); // VMSS update: 12 per scale set
        let h = m.charge(0, "Microsoft.Compute", t, "put", Kind::Write, "/ss2").unwrap();
        let res = h
            .iter()
            .find(|(k, _)| k == "x-ms-ratelimit-remaining-resource")
            .unwrap();
        assert!(
            res.1.contains("Microsoft.Compute/VMScaleSetUpdateResource;11"),
            "{}",
            res.1
        );
        let err = m
            .charge(0, "Microsoft.Compute", t, "put", Kind::Write, "/ss1")
            .unwrap_err();
        assert_eq!(err.code, "OperationNotAllowed");
        assert_eq!(err.wait_ms, 15_000); // 4 per minute
    }

    #[test]
    fn disabled_never_refuses() {
        let mut m = ThrottleModel::new(false);
        for _ in 0..10_000 {
            assert!(m.charge(0, "Microsoft.Network", "x", "put", Kind::Write, "x").is_ok());
        }
    }
}
