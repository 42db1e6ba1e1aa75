//! Fault injection: per operation (or all), 500/503, 429, timeouts and connection resets, at a rate,
//! optionally a bounded number of times; deterministic from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultKind {
    /// Answer with this status (500, 503, ...) and an ARM error body.
    Status {
        /// HTTP status.
        status: u16,
    },
    /// Answer 429 with `Retry-After`.
    Throttle {
        /// Seconds.
        retry_after_secs: u64,
    },
    /// Hold the request and never answer usefully (the client times out).
    Timeout,
    /// Break the connection mid-answer.
    Reset,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the resource type path to match, case-insensitive (any when absent),
    /// e.g. `loadBalancers` or `virtualMachineScaleSets/virtualMachines`.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// The fault.
    pub fault: FaultKind,
    /// Probability per matching call (1.0: always).
    #[serde(default = "one")]
    pub rate: f64,
    /// Inject at most this many times (unbounded when absent).
    #[serde(default)]
    pub count: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// The active rules and the seeded generator.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<FaultRule>,
    rng: StdRng,
    seed: u64,
}

impl Faults {
    /// No rules.
    pub fn new(seed: u64) -> Self {
        Self {
            rules: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
        }
    }

    /// Replaces the rules and restarts the generator from the seed (same rules + same calls = same faults).
    pub fn set(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules;
        self.rng = StdRng::seed_from_u64(self.seed);
    }

    /// The rules.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// The fault to inject into a call, if any.
    pub fn check(&mut self, method: &str, resource_type: &str) -> Option<FaultKind> {
        let rt = resource_type.to_ascii_lowercase();
        for rule in self.rules.iter_mut() {
            if rule.method.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(method)) {
                continue;
            }
            if rule
                .resource_type
                .as_deref()
                .is_some_and(|t| !rt.contains(&t.to_ascii_lowercase()))
            {
                continue;
            }
            if rule.count == Some(0) {
                continue;
            }
            let hit = rule.rate >= 1.0 || self.rng.gen::<f64>() < rule.rate;
            if hit {
                if let Some(c) = rule.count.as_mut() {
                    *c -= 1;
                }
                return Some(rule.fault.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<FaultRule> {
        vec![FaultRule {
            method: Some("PUT".into()),
            resource_type: Some("loadBalancers".into()),
            fault: FaultKind::Status { status: 503 },
            rate: 0.3,
            count: None,
        }]
    }

    #[test]
    fn deterministic_from_seed_and_filtered() {
        let run = |seed| {
            let mut f = Faults::new(seed);
            f.set(rules());
            (0..200)
                .map(|_| f.check("PUT", "Microsoft.Network/loadBalancers").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let hits = run(7).iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "{hits}");
        let mut f = Faults::new(1);
        f.set(rules());
        assert!((0..50).all(|_| f.check("GET", "Microsoft.Network/loadBalancers").is_none()));
        assert!((0..50).all(|_| f.check("PUT", "Microsoft.Network/publicIPAddresses").is_none()));
    }

    #[test]
    fn bounded_count() {
        let mut f = Faults::new(1);
        f.set(vec![FaultRule {
            method: None,
            resource_type: None,
            fault: FaultKind::Timeout,
            rate: 1.0,
            count: Some(2),
        }]);
        let hits = (0..5).filter(|_| f.check("GET", "x").is_some()).count();
        assert_eq!(hits, 2);
    }
}
