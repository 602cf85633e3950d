//! MW0007 QuotedBracketKey.
//!
//! authorization.md §5: "`request.headers[<name>]` | header matcher on `<name>`"; "Key lookup is
//! exact (case‑sensitive); map keys use `name[...]`", and for claims "a claim name may contain
//! `.`, `/`, `:` literally". Nothing strips quotes: `request.headers["x-api-version"]` names a
//! header whose name starts and ends with `"`. No request has one, so `values` never hold and
//! `notValues` always do (the seed README, 001: "Istio keeps the quotes as part of the header or
//! claim name, so these conditions never hold").

use super::{Context, Finding, Level, MW0007, rules_of};

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        for (_, rule, path) in rules_of(policy) {
            for (j, c) in rule.when.iter().flatten().enumerate() {
                let Some(c) = c else { continue };
                let Some(key) = c.key.as_deref() else {
                    continue;
                };
                let Some(fixed) = unquoted(key) else { continue };
                let what = if key.starts_with("request.headers[") {
                    "header"
                } else {
                    "claim"
                };
                let effect = if c.values.as_ref().is_some_and(|v| !v.is_empty()) {
                    "its `values` never match, so the rule never matches"
                } else {
                    "its `notValues` always match"
                };
                out.push(cx.finding(
                    MW0007,
                    Level::Warning,
                    loaded,
                    path.key("when").index(j).key("key"),
                    format!(
                        "`{key}` names a {what} with quotes in its name; no request has one, so {effect}"
                    ),
                    format!("Write the key without quotes: `{fixed}`"),
                ));
            }
        }
    }
}

/// The key with quotes removed from every `[...]` segment, when some segment is quoted.
fn unquoted(key: &str) -> Option<String> {
    let open = key.find('[')?;
    let (head, mut rest) = key.split_at(open);
    let mut out = head.to_owned();
    let mut quoted = false;
    while let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']')?;
        let name = inner.get(..end)?;
        let bare = ['"', '\'']
            .iter()
            .find_map(|q| name.strip_prefix(*q).and_then(|n| n.strip_suffix(*q)));
        match bare {
            Some(b) if name.len() >= 2 => {
                quoted = true;
                out.push_str(&format!("[{b}]"));
            }
            _ => out.push_str(&format!("[{name}]")),
        }
        rest = inner.get(end + 1..)?;
    }
    quoted.then_some(out)
}
