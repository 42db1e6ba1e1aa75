//! Multiple standard load balancers (`multipleStandardLoadBalancerConfigurations`), upstream's semantics as
//! pure functions: which configured LBs a Service may use, which one it gets, and which LB's backend pool
//! each node joins.
//!
//! - **Services**: the LBs named by `azure-load-balancer-configurations` (all when absent), minus those with
//!   `allowServicePlacement: false` (unless the Service is already on it), minus those whose
//!   `serviceLabelSelector` / `serviceNamespaceSelector` rejects the Service. A selector without terms
//!   matches everything, but only when no selector with terms matched (upstream's rule). The Service stays on
//!   the LB it is on while that LB is eligible; otherwise it goes to the eligible LB with the fewest rules.
//! - **Nodes** (first match wins): the LB whose `primaryVMSet` is the node's VM set; else every LB whose
//!   `nodeSelector` (with terms) matches it; else every LB without a `nodeSelector`. Among those, a node stays
//!   in the pool it is in, or joins the one with the fewest nodes.
//!
//! Internal Services use `<name>-internal`, with the configuration (and node placement) of `<name>`.

use crate::config::MultipleStandardLoadBalancerConfiguration;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A `metav1.LabelSelector`: `matchLabels` and `matchExpressions` (`In`, `NotIn`, `Exists`, `DoesNotExist`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    match_labels: Labels,
    expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expression {
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Parses a label selector as the API server would accept it; the error names the bad part.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("must be a label selector object (matchLabels / matchExpressions), got {v}"))?;
        let mut s = Selector::default();
        for (k, val) in obj {
            match k.as_str() {
                "matchLabels" => {
                    let m = val.as_object().ok_or("matchLabels must be an object of strings")?;
                    for (lk, lv) in m {
                        let lv = lv
                            .as_str()
                            .ok_or_else(|| format!("matchLabels.{lk} must be a string"))?;
                        s.match_labels.insert(lk.clone(), lv.to_string());
                    }
                }
                "matchExpressions" => {
                    let list = val.as_array().ok_or("matchExpressions must be a list")?;
                    for e in list {
                        let key = e
                            .get("key")
                            .and_then(Value::as_str)
                            .filter(|k| !k.is_empty())
                            .ok_or("every matchExpressions entry needs a key")?
                            .to_string();
                        let op = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                            "In" => Op::In,
                            "NotIn" => Op::NotIn,
                            "Exists" => Op::Exists,
                            "DoesNotExist" => Op::DoesNotExist,
                            other => {
                                return Err(format!(
                                    "matchExpressions operator {other:?} of key {key} is not one of In, NotIn, Exists, DoesNotExist"
                                ))
                            }
                        };
                        let values: Vec<String> = match e.get("values") {
                            None | Some(Value::Null) => Vec::new(),
                            Some(Value::Array(a)) => a
                                .iter()
                                .map(|x| x.as_str().map(str::to_string))
                                .collect::<Option<_>>()
                                .ok_or_else(|| format!("matchExpressions values of key {key} must be strings"))?,
                            Some(_) => return Err(format!("matchExpressions values of key {key} must be a list")),
                        };
                        let needs_values = matches!(op, Op::In | Op::NotIn);
                        if needs_values == values.is_empty() {
                            return Err(format!(
                                "matchExpressions of key {key}: {op:?} {}",
                                if needs_values {
                                    "needs values"
                                } else {
                                    "takes no values"
                                }
                            ));
                        }
                        s.expressions.push(Expression { key, op, values });
                    }
                }
                other => return Err(format!("unknown label selector field {other:?}")),
            }
        }
        Ok(s)
    }

    /// Whether the selector has no terms (it then matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e.op {
                Op::In => labels.get(&e.key).is_some_and(|v| e.values.contains(v)),
                Op::NotIn => labels.get(&e.key).is_none_or(|v| !e.values.contains(v)),
                Op::Exists => labels.contains_key(&e.key),
                Op::DoesNotExist => !labels.contains_key(&e.key),
            })
    }
}

/// One configured load balancer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbConfig {
    /// The (public) LB name; the internal one is `<name>-internal`.
    pub name: String,
    /// `allowServicePlacement` (default true).
    pub allow_placement: bool,
    /// `primaryVMSet`, lower-cased ("" when unset).
    pub primary_vm_set: String,
    service_labels: Option<Selector>,
    namespaces: Option<Selector>,
    nodes: Option<Selector>,
}

/// The parsed `multipleStandardLoadBalancerConfigurations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiSlb {
    /// In configuration order (ties go to the earlier one).
    pub lbs: Vec<LbConfig>,
}

/// What a Service brings to the choice of its LB.
#[derive(Debug, Clone, Default)]
pub struct ServiceFacts<'a> {
    /// The Service's labels.
    pub labels: Option<&'a Labels>,
    /// Its namespace's labels (`None`: unknown).
    pub namespace_labels: Option<&'a Labels>,
    /// `azure-load-balancer-configurations`, when set.
    pub requested: Option<Vec<String>>,
    /// The configured LB the Service is on now.
    pub current: Option<&'a str>,
}

/// What a node brings to its placement.
#[derive(Debug, Clone)]
pub struct NodeFacts<'a> {
    /// Node name.
    pub name: &'a str,
    /// Node labels.
    pub labels: Option<&'a Labels>,
    /// The node's VM set (scale set or availability set name), when known.
    pub vm_set: Option<String>,
    /// The configured LB whose pool holds it now.
    pub current: Option<String>,
}

impl MultiSlb {
    /// Parses and validates the configuration list; `None` when it is empty (one LB per kind, as without it).
    pub fn from_config(list: &[MultipleStandardLoadBalancerConfiguration]) -> Result<Option<Self>, String> {
        if list.is_empty() {
            return Ok(None);
        }
        let mut lbs: Vec<LbConfig> = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let name = c.name.trim().to_string();
            if name.is_empty() {
                return Err(format!("entry {i} has no name"));
            }
            if name.to_ascii_lowercase().ends_with(super::names::INTERNAL_SUFFIX) {
                return Err(format!(
                    "entry {name:?}: list the public load balancer's name; its internal one ({name}) is derived"
                ));
            }
            if lbs.iter().any(|l| l.name.eq_ignore_ascii_case(&name)) {
                return Err(format!("entry {name:?} appears twice"));
            }
            let primary = c.primary_vm_set.trim().to_ascii_lowercase();
            if !primary.is_empty() {
                if let Some(other) = lbs.iter().find(|l| l.primary_vm_set == primary) {
                    return Err(format!(
                        "VM set {primary:?} is the primaryVMSet of both {:?} and {name:?} (a VM set can be primary for one load balancer only)",
                        other.name
                    ));
                }
            }
            let sel = |v: &Option<Value>, field: &str| -> Result<Option<Selector>, String> {
                match v {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => Selector::parse(v)
                        .map(Some)
                        .map_err(|e| format!("entry {name:?}: {field}: {e}")),
                }
            };
            lbs.push(LbConfig {
                allow_placement: c.allow_service_placement.unwrap_or(true),
                primary_vm_set: primary,
                service_labels: sel(&c.service_label_selector, "serviceLabelSelector")?,
                namespaces: sel(&c.service_namespace_selector, "serviceNamespaceSelector")?,
                nodes: sel(&c.node_selector, "nodeSelector")?,
                name,
            });
        }
        Ok(Some(MultiSlb { lbs }))
    }

    /// Whether any entry selects Services by their namespace's labels.
    pub fn needs_namespace_labels(&self) -> bool {
        self.lbs.iter().any(|l| l.namespaces.is_some())
    }

    /// Whether any entry selects Services by their labels.
    pub fn needs_service_labels(&self) -> bool {
        self.lbs.iter().any(|l| l.service_labels.is_some())
    }

    /// Whether any entry places nodes by VM set.
    pub fn needs_vm_sets(&self) -> bool {
        self.lbs.iter().any(|l| !l.primary_vm_set.is_empty())
    }

    /// The entry of that (public) name.
    pub fn get(&self, name: &str) -> Option<&LbConfig> {
        self.lbs.iter().find(|l| l.name.eq_ignore_ascii_case(name))
    }

    /// The LBs the Service may use, in configuration order; the error says why there is none.
    pub fn eligible(&self, s: &ServiceFacts<'_>) -> Result<Vec<&LbConfig>, String> {
        let mut out: Vec<&LbConfig> = match &s.requested {
            Some(names) => {
                self.check_requested(names)?;
                self.lbs
                    .iter()
                    .filter(|l| names.iter().any(|n| n.eq_ignore_ascii_case(&l.name)))
                    .collect()
            }
            None => self.lbs.iter().collect(),
        };
        let is_current = |l: &LbConfig| s.current.is_some_and(|c| c.eq_ignore_ascii_case(&l.name));
        out.retain(|l| l.allow_placement || is_current(l));
        let empty = Labels::new();
        out = narrow(out, |l| l.service_labels.as_ref(), s.labels.unwrap_or(&empty));
        if out.iter().any(|l| l.namespaces.is_some()) {
            let Some(ns) = s.namespace_labels else {
                return Err(
                    "the Service's namespace labels are unknown (serviceNamespaceSelector needs them); will retry"
                        .into(),
                );
            };
            out = narrow(out, |l| l.namespaces.as_ref(), ns);
        }
        if out.is_empty() {
            return Err(format!(
                "no load balancer of multipleStandardLoadBalancerConfigurations ({}) is eligible for the Service (azure-load-balancer-configurations, allowServicePlacement, serviceLabelSelector, serviceNamespaceSelector)",
                self.names()
            ));
        }
        Ok(out)
    }

    /// Every name of `azure-load-balancer-configurations` must be a configured entry.
    pub fn check_requested(&self, names: &[String]) -> Result<(), String> {
        match names.iter().find(|n| self.get(n).is_none()) {
            Some(n) => Err(format!(
                "annotation azure-load-balancer-configurations names {n:?}, which is not in multipleStandardLoadBalancerConfigurations ({})",
                self.names()
            )),
            None => Ok(()),
        }
    }

    fn names(&self) -> String {
        self.lbs.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Places every node (see the module doc); nodes with no possible LB are left out (returned second).
    pub fn place_nodes(&self, nodes: &[NodeFacts<'_>]) -> (HashMap<String, usize>, Vec<String>) {
        let empty = Labels::new();
        let mut counts = vec![0usize; self.lbs.len()];
        let mut placed: HashMap<String, usize> = HashMap::with_capacity(nodes.len());
        let mut pending: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut unplaced = Vec::new();
        for n in nodes {
            let labels = n.labels.unwrap_or(&empty);
            let primary = n
                .vm_set
                .as_deref()
                .and_then(|v| self.lbs.iter().position(|l| l.primary_vm_set.eq_ignore_ascii_case(v)));
            let targets: Vec<usize> = match primary {
                Some(i) => vec![i],
                None => {
                    let selected: Vec<usize> = (0..self.lbs.len())
                        .filter(|&i| {
                            self.lbs[i]
                                .nodes
                                .as_ref()
                                .is_some_and(|s| !s.is_empty() && s.matches(labels))
                        })
                        .collect();
                    if selected.is_empty() {
                        (0..self.lbs.len())
                            .filter(|&i| self.lbs[i].nodes.as_ref().is_none_or(Selector::is_empty))
                            .collect()
                    } else {
                        selected
                    }
                }
            };
            if targets.is_empty() {
                unplaced.push(n.name.to_string());
                continue;
            }
            let kept = n.current.as_deref().and_then(|c| {
                targets
                    .iter()
                    .copied()
                    .find(|&i| self.lbs[i].name.eq_ignore_ascii_case(c))
            });
            match kept {
                Some(i) => {
                    counts[i] += 1;
                    placed.insert(n.name.to_ascii_lowercase(), i);
                }
                None => pending.push((n.name, targets)),
            }
        }
        pending.sort_by(|a, b| a.0.cmp(b.0));
        for (name, targets) in pending {
            // Fewest nodes; ties go to the earlier entry.
            let i = targets
                .iter()
                .copied()
                .min_by_key(|&i| (counts[i], i))
                .unwrap_or(targets[0]);
            counts[i] += 1;
            placed.insert(name.to_ascii_lowercase(), i);
        }
        (placed, unplaced)
    }
}

/// Keeps the LBs whose selector accepts `labels`: no selector → yes; a selector with terms → when it
/// matches; a selector without terms → only when no selector with terms matched.
fn narrow<'a>(
    lbs: Vec<&'a LbConfig>,
    get: impl Fn(&LbConfig) -> Option<&Selector>,
    labels: &Labels,
) -> Vec<&'a LbConfig> {
    let specific = lbs
        .iter()
        .any(|l| get(l).is_some_and(|s| !s.is_empty() && s.matches(labels)));
    lbs.into_iter()
        .filter(|l| match get(l) {
            None => true,
            Some(s) if s.is_empty() => !specific,
            Some(s) => s.matches(labels),
        })
        .collect()
}

/// The eligible LB the Service gets: the one it is on when eligible, else the fewest rules (ties: the
/// earlier entry). `rules` counts the rules of an LB (0 when it does not exist).
pub fn choose<'a>(eligible: &[&'a LbConfig], current: Option<&str>, rules: impl Fn(&str) -> usize) -> &'a str {
    if let Some(c) = current.and_then(|c| eligible.iter().find(|l| l.name.eq_ignore_ascii_case(c))) {
        return &c.name;
    }
    eligible
        .iter()
        .enumerate()
        .min_by_key(|(i, l)| (rules(&l.name), *i))
        .map(|(_, l)| l.name.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> MultiSlb {
        let list: Vec<MultipleStandardLoadBalancerConfiguration> = serde_json::from_value(v).unwrap();
        MultiSlb::from_config(&list).unwrap().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_match_as_the_api_server() {
        let s = Selector::parse(&json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "In", "values": ["x", "y"]},
                {"key": "c", "operator": "NotIn", "values": ["bad"]},
                {"key": "d", "operator": "Exists"},
                {"key": "e", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("a", "1"), ("b", "x"), ("d", "")], true),
            (&[("a", "1"), ("b", "y"), ("c", "ok"), ("d", "1")], true),
            (&[("a", "2"), ("b", "x"), ("d", "")], false),
            (&[("a", "1"), ("b", "z"), ("d", "")], false),
            (&[("a", "1"), ("b", "x"), ("c", "bad"), ("d", "")], false),
            (&[("a", "1"), ("b", "x")], false),
            (&[("a", "1"), ("b", "x"), ("d", ""), ("e", "")], false),
        ];
        for (l, want) in cases {
            assert_eq!(s.matches(&labels(l)), *want, "{l:?}");
        }
        assert!(Selector::parse(&json!({})).unwrap().is_empty());
        for (bad, says) in [
            (json!([]), "label selector object"),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["1"]}]}),
                "Equals",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "needs values",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]}),
                "takes no values",
            ),
            (json!({"matchLabel": {}}), "matchLabel"),
            (json!({"matchLabels": {"a": 1}}), "matchLabels.a"),
        ] {
            let e = Selector::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn configuration_errors_name_the_entry() {
        for (v, says) in [
            (json!([{"name": ""}]), "entry 0 has no name"),
            (json!([{"name": "a"}, {"name": "A"}]), "appears twice"),
            (json!([{"name": "a-internal"}]), "internal"),
            (
                json!([{"name": "a", "primaryVMSet": "p"}, {"name": "b", "primaryVMSet": "P"}]),
                "primary for one load balancer only",
            ),
            (
                json!([{"name": "a", "nodeSelector": {"matchExpressions": [{"key": "k", "operator": "Bad"}]}}]),
                "entry \"a\": nodeSelector",
            ),
        ] {
            let list: Vec<MultipleStandardLoadBalancerConfiguration> = serde_json::from_value(v.clone()).unwrap();
            let e = MultiSlb::from_config(&list).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
        assert_eq!(MultiSlb::from_config(&[]), Ok(None));
    }

    #[test]
    fn services_go_where_upstream_puts_them() {
        let m = cfg(json!([
            {"name": "kubernetes"},
            {"name": "lb2", "serviceLabelSelector": {"matchLabels": {"tier": "gold"}}},
            {"name": "lb3", "allowServicePlacement": false},
            {"name": "lb4", "serviceNamespaceSelector": {"matchLabels": {"team": "a"}}},
            {"name": "lb5", "serviceLabelSelector": {}}
        ]));
        let gold = labels(&[("tier", "gold")]);
        let team_a = labels(&[("team", "a")]);
        let team_b = labels(&[("team", "b")]);
        let names = |r: Result<Vec<&LbConfig>, String>| r.map(|v| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>());
        let facts = |l: Option<&'static Labels>, ns: Option<&'static Labels>| ServiceFacts {
            labels: l,
            namespace_labels: ns,
            ..Default::default()
        };
        let gold: &'static Labels = Box::leak(Box::new(gold));
        let team_a: &'static Labels = Box::leak(Box::new(team_a));
        let team_b: &'static Labels = Box::leak(Box::new(team_b));
        // No labels: the unselective ones (lb5's empty selector applies as nothing specific matched); lb3
        // takes no new Services; lb4 only for team a.
        assert_eq!(
            names(m.eligible(&facts(None, Some(team_b)))).unwrap(),
            ["kubernetes", "lb5"]
        );
        assert_eq!(
            names(m.eligible(&facts(None, Some(team_a)))).unwrap(),
            ["kubernetes", "lb4", "lb5"]
        );
        // A specific selector matched: lb5's empty one no longer applies.
        assert_eq!(
            names(m.eligible(&facts(Some(gold), Some(team_b)))).unwrap(),
            ["kubernetes", "lb2"]
        );
        // Already on a draining LB: it stays eligible there.
        let on_lb3 = ServiceFacts {
            current: Some("LB3"),
            namespace_labels: Some(team_b),
            ..Default::default()
        };
        assert_eq!(names(m.eligible(&on_lb3)).unwrap(), ["kubernetes", "lb3", "lb5"]);
        // The annotation narrows; unknown names and an empty result are errors.
        let pick = |r: &[&str]| ServiceFacts {
            requested: Some(r.iter().map(|s| s.to_string()).collect()),
            namespace_labels: Some(team_b),
            ..Default::default()
        };
        assert_eq!(
            names(m.eligible(&pick(&["lb2", "kubernetes"]))).unwrap(),
            ["kubernetes"]
        );
        assert!(m.eligible(&pick(&["nope"])).unwrap_err().contains("\"nope\""));
        assert!(m.eligible(&pick(&["lb3"])).unwrap_err().contains("no load balancer"));
        // Namespace labels unknown while a namespace selector is in play: an error to retry, not a guess.
        assert!(m.eligible(&facts(None, None)).unwrap_err().contains("namespace labels"));
        // Choice: stay while eligible, else fewest rules, ties to the earlier entry.
        let el = m.eligible(&facts(None, Some(team_a))).unwrap();
        let rules = |n: &str| match n {
            "kubernetes" => 10,
            "lb4" => 3,
            _ => 3,
        };
        assert_eq!(choose(&el, None, rules), "lb4");
        assert_eq!(choose(&el, Some("kubernetes"), rules), "kubernetes");
        assert_eq!(choose(&el, Some("lb2"), rules), "lb4");
    }

    #[test]
    fn nodes_go_to_their_primary_lb_then_selectors_then_the_fewest() {
        let m = cfg(json!([
            {"name": "kubernetes"},
            {"name": "lb2", "primaryVMSet": "pool2"},
            {"name": "lb3", "nodeSelector": {"matchLabels": {"gpu": "true"}}},
            {"name": "lb4"}
        ]));
        let gpu = labels(&[("gpu", "true")]);
        let n = |name: &'static str, l: Option<&'static Labels>, vm: Option<&str>, cur: Option<&str>| NodeFacts {
            name,
            labels: l,
            vm_set: vm.map(str::to_string),
            current: cur.map(str::to_string),
        };
        let gpu: &'static Labels = Box::leak(Box::new(gpu));
        let nodes = vec![
            n("a", None, Some("pool1"), None),
            n("b", None, Some("pool1"), None),
            n("c", None, Some("pool1"), Some("kubernetes")),
            n("d", Some(gpu), Some("POOL2"), None),
            n("e", Some(gpu), Some("pool1"), None),
            n("f", None, Some("pool1"), Some("lb3")),
            n("g", None, Some("pool1"), Some("lb4")),
        ];
        let (placed, unplaced) = m.place_nodes(&nodes);
        let at = |x: &str| m.lbs[placed[x]].name.as_str();
        assert!(unplaced.is_empty());
        assert_eq!(at("d"), "lb2", "primary VM set wins over the selector");
        assert_eq!(at("e"), "lb3", "the selector that matches");
        assert_eq!(at("c"), "kubernetes", "kept");
        assert_eq!(at("g"), "lb4", "kept");
        // The others go to the fewest of the LBs without a node selector (lb2 counts: its primary VM set only
        // pins that set's nodes), in name order; ties to the earlier entry. Kept: c (kubernetes), g (lb4).
        // a → lb2 (0); b → kubernetes (1/1/1, earliest); d → lb2 (primary); f (left lb3's selector) → lb4.
        assert_eq!(at("a"), "lb2");
        assert_eq!(at("b"), "kubernetes");
        assert_eq!(at("f"), "lb4");
        // Only selective LBs and a node matching none: it has nowhere to go.
        let only = cfg(json!([{"name": "x", "nodeSelector": {"matchLabels": {"k": "v"}}}]));
        let (p, u) = only.place_nodes(&[n("lonely", None, None, None)]);
        assert!(p.is_empty());
        assert_eq!(u, ["lonely"]);
    }
}
