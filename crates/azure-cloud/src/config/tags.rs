//! `tags` + `tagsMap` merging, as upstream's `ParseTags`, and reconciliation of a resource's tags with them
//! (upstream's `reconcileTags`, with `systemTags`).

use std::collections::BTreeMap;

/// A tag value as upstream keeps it: trimmed, except that a value which trims to `null` (any case) keeps
/// its spaces — `null` is reserved by ARM, and upstream preserves `" null"` rather than sending `null`.
fn tag_value(raw: &str) -> &str {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("null") {
        raw
    } else {
        t
    }
}

/// Parses `tags` (`a=b,c=d`) and merges `tagsMap` over it. A `tagsMap` key equal to a `tags` key
/// ignoring case replaces it. Malformed pairs and empty keys are skipped with a warning, as upstream does.
/// Returns the tags and the warnings.
pub fn parse_tags(tags: &str, tags_map: &BTreeMap<String, String>) -> (BTreeMap<String, String>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut warnings = Vec::new();
    if !tags.trim().is_empty() {
        for kv in tags.split(',') {
            let parts: Vec<&str> = kv.split('=').collect();
            if parts.len() != 2 {
                warnings.push(format!(
                    "tags: ignoring malformed key-value pair {kv:?} (expected key=value)"
                ));
                continue;
            }
            let (k, v) = (parts[0].trim(), tag_value(parts[1]));
            if k.is_empty() {
                warnings.push(format!("tags: ignoring pair {kv:?} with an empty key"));
                continue;
            }
            out.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in tags_map {
        let (k, v) = (k.trim(), tag_value(v));
        if k.is_empty() {
            warnings.push("tagsMap: ignoring an entry with an empty key".into());
            continue;
        }
        if let Some(existing) = out
            .keys()
            .find(|e| e.eq_ignore_ascii_case(k) && e.as_str() != k)
            .cloned()
        {
            out.remove(&existing);
        }
        out.insert(k.to_string(), v.to_string());
    }
    (out, warnings)
}

/// `systemTags` (`a,b`): the tag keys, lower-cased, that reconciliation never removes.
pub fn parse_system_tags(system_tags: &str) -> Vec<String> {
    system_tags
        .split(',')
        .map(|k| k.trim().to_ascii_lowercase())
        .filter(|k| !k.is_empty())
        .collect()
}

/// A resource's tags reconciled with the wanted ones, as upstream's `reconcileTags`: every wanted tag is
/// added or updated (keys matched ignoring case, values compared ignoring case); when `system_tags` is not
/// empty, every other tag is removed unless its key is a system tag or `keep` says it is ours (e.g. the
/// per-Service tags of a public IP). `None` when nothing changes.
pub fn reconcile_tags(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    system_tags: &[String],
    keep: impl Fn(&str) -> bool,
) -> Option<BTreeMap<String, String>> {
    let mut out = current.clone();
    let mut changed = false;
    for (k, v) in wanted {
        match out.keys().find(|e| e.eq_ignore_ascii_case(k)).cloned() {
            None => {
                out.insert(k.clone(), v.clone());
                changed = true;
            }
            Some(existing) => {
                if !out[&existing].eq_ignore_ascii_case(v) {
                    out.insert(existing, v.clone());
                    changed = true;
                }
            }
        }
    }
    if !system_tags.is_empty() {
        let before = out.len();
        out.retain(|k, _| {
            wanted.keys().any(|w| w.eq_ignore_ascii_case(k))
                || system_tags.iter().any(|s| s.eq_ignore_ascii_case(k))
                || keep(k)
        });
        changed |= out.len() != before;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reconcile_tags_table() {
        let none = |_: &str| false;
        // (current, wanted, systemTags, want)
        type Tags = BTreeMap<String, String>;
        let cases: Vec<(Tags, Tags, &str, Option<Tags>)> = vec![
            (m(&[]), m(&[]), "", None),
            (m(&[("a", "1")]), m(&[("a", "1")]), "", None),
            (m(&[("A", "X")]), m(&[("a", "x")]), "", None),
            (
                m(&[("a", "1")]),
                m(&[("b", "2")]),
                "",
                Some(m(&[("a", "1"), ("b", "2")])),
            ),
            (m(&[("Team", "a")]), m(&[("team", "b")]), "", Some(m(&[("Team", "b")]))),
            // systemTags: foreign tags go, system ones stay.
            (
                m(&[("a", "1"), ("owner", "x"), ("old", "y")]),
                m(&[("a", "1")]),
                "Owner",
                Some(m(&[("a", "1"), ("owner", "x")])),
            ),
            (m(&[("a", "1"), ("owner", "x")]), m(&[("a", "1")]), "owner", None),
        ];
        for (current, wanted, system, want) in cases {
            assert_eq!(
                reconcile_tags(&current, &wanted, &parse_system_tags(system), none),
                want,
                "{current:?} + {wanted:?} (system {system:?})"
            );
        }
        // `keep` protects our own keys from removal.
        let ours = |k: &str| k.starts_with("k8s-azure-");
        assert_eq!(
            reconcile_tags(
                &m(&[("k8s-azure-service", "ns/a"), ("x", "1")]),
                &m(&[]),
                &parse_system_tags("s"),
                ours
            ),
            Some(m(&[("k8s-azure-service", "ns/a")]))
        );
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn table() {
        let cases: &[(&str, Pairs, Pairs, usize)] = &[
            ("", &[], &[], 0),
            ("a=b, c = d", &[], &[("a", "b"), ("c", "d")], 0),
            ("a=b,bad,=x,e=f=g", &[], &[("a", "b")], 3),
            ("Team=x", &[("team", "y")], &[("team", "y")], 0),
            ("team=x", &[("team", "y")], &[("team", "y")], 0),
            ("a=1", &[("b", "2"), (" ", "z")], &[("a", "1"), ("b", "2")], 1),
            // Upstream: keys and values trimmed, but a value that trims to "null" keeps its spaces.
            (
                " k = v 1 ,n= null ",
                &[("m", " Null")],
                &[("k", "v 1"), ("n", " null "), ("m", " Null")],
                0,
            ),
        ];
        for (tags, tm, want, nwarn) in cases {
            let (got, warns) = parse_tags(tags, &map(tm));
            assert_eq!(got, map(want), "tags {tags:?}");
            assert_eq!(warns.len(), *nwarn, "warnings for {tags:?}: {warns:?}");
        }
    }
}
