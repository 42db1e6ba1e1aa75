//! `tags` + `tagsMap` merging, as upstream's `ParseTags`.

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

#[cfg(test)]
mod tests {
    use super::*;

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
