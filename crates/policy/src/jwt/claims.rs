//! What a verified payload turns into: the normalised claims for authorization and the values of
//! `outputClaimToHeaders` headers.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::token::double_to_u64;

/// Claims split on spaces for every rule, whatever its `spaceDelimitedClaims`.
pub(crate) const ALWAYS_SPACE_DELIMITED: [&str; 2] = ["permission", "scope"];

/// The payload stored for authorization, with space-delimited claims turned into lists.
///
/// authentication.md §5.7: "Verified payload stored in dynamic metadata … (claims listed in
/// `scope`, `permission` and `spaceDelimitedClaims` converted from space-separated strings to
/// lists)". Envoy looks the names up as top-level keys (a dotted name is a literal key), splits on
/// the space character only, drops empty pieces, and leaves a string with no piece at all (`""`,
/// `"  "`) unchanged; non-string claims are left alone.
pub(crate) fn normalize(
    payload: &Map<String, Value>,
    claims: &BTreeSet<String>,
) -> Map<String, Value> {
    let mut out = payload.clone();
    for claim in claims {
        let Some(Value::String(text)) = payload.get(claim) else {
            continue;
        };
        let items: Vec<Value> = text
            .split(' ')
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_owned()))
            .collect();
        if !items.is_empty() {
            out.insert(claim.clone(), Value::Array(items));
        }
    }
    out
}

/// The value of an `outputClaimToHeaders` header, or `None` when the header is not added.
///
/// authentication.md §5.1 `outputClaimToHeaders`: "claim may be dotted nested path; only
/// string/number/bool claims (numbers without fraction printed as integers); missing/array claim ⇒
/// header not added". Envoy also skips an empty string, and prints other numbers with
/// `std::to_string(double)`, i.e. six decimals.
pub(crate) fn claim_header_value(payload: &Map<String, Value>, claim: &str) -> Option<String> {
    let value = lookup(payload, claim)?;
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => {
            let double = number.as_f64()?;
            match double_to_u64(double) {
                Some(whole) if double.fract() == 0.0 => whole.to_string(),
                _ => format!("{double:.6}"),
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// jwt_verify_lib `StructUtils::GetValue`: split at `.`, every step but the last an object.
fn lookup<'a>(payload: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut steps = path.split('.');
    let mut current = payload.get(steps.next()?)?;
    for step in steps {
        current = current.as_object()?.get(step)?;
    }
    Some(current)
}
