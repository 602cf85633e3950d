//! Validation of RequestAuthentication: the CRD schema and istiod's
//! `ValidateRequestAuthentication` (authentication.md §5.1).

use serde_json::{Map, Value};

use crate::diag::Issue;
use crate::resources::RequestAuthentication;
use crate::resources::security::JwtRule;
use crate::source::FieldPath;

use super::common::{self, check_duration_ms};

#[cfg(test)]
mod tests;

/// CRD `maxItems` of `jwtRules` and `spaceDelimitedClaims`; `maxLength` of `jwksUri`.
const MAX_JWT_RULES: usize = 4096;
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;
const MAX_JWKS_URI_LEN: usize = 2048;

pub(crate) fn validate_request_authentication(policy: &RequestAuthentication) -> Vec<Issue> {
    let mut issues = Vec::new();
    let spec = &policy.spec;
    let spec_path = FieldPath::root().key("spec");
    common::validate_istio_annotations(&policy.metadata, false, &mut issues);

    // authentication.md §5.1: selector / targetRefs (≤ 16) mutually exclusive, same rules as
    // AuthorizationPolicy.
    common::validate_one_of_selector(
        &spec_path,
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        spec.target_refs.is_some(),
        &mut issues,
    );
    common::validate_workload_selector(
        spec.selector.as_ref(),
        &spec_path.key("selector"),
        &mut issues,
    );
    if let Some(target) = &spec.target_ref {
        common::validate_target_ref(target, &spec_path.key("targetRef"), &mut issues);
    }
    common::validate_target_refs(
        spec.target_refs.as_ref(),
        &spec_path.key("targetRefs"),
        &mut issues,
    );

    let Some(rules) = &spec.jwt_rules else {
        return issues;
    };
    let rules_path = spec_path.key("jwtRules");
    // authentication.md §5.1: `jwtRules` (≤ 4096).
    if rules.len() > MAX_JWT_RULES {
        issues.push(Issue::error(
            rules_path.clone(),
            format!(
                "too many jwtRules: {}, must have at most {MAX_JWT_RULES}",
                rules.len()
            ),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let path = rules_path.index(i);
        match rule {
            Some(rule) => validate_jwt_rule(rule, &path, &mut issues),
            // The CRD types `jwtRules` items as objects.
            None => issues.push(Issue::error(path, "`jwtRules` entries must not be null")),
        }
    }
    issues
}

fn validate_jwt_rule(rule: &JwtRule, path: &FieldPath, issues: &mut Vec<Issue>) {
    let issuer = rule.issuer.as_deref();
    let jwks_uri = rule.jwks_uri.as_deref();
    // authentication.md §5.1: issuer "CRD MinLength 1; webhook: issuer or jwksUri required".
    if issuer == Some("") {
        issues.push(Issue::error(
            path.key("issuer"),
            "issuer must be non-empty string",
        ));
    } else if issuer.is_none() && jwks_uri.is_none_or(str::is_empty) {
        issues.push(Issue::error(
            path.clone(),
            "issuer or jwksUri must be non-empty string",
        ));
    }
    for (i, audience) in rule.audiences.iter().flatten().enumerate() {
        if audience.is_empty() {
            issues.push(Issue::error(
                path.key("audiences").index(i),
                "audience must be non-empty string",
            ));
        }
    }
    if let Some(uri) = jwks_uri {
        // authentication.md §5.1: jwksUri an http/https URL, ≤ 2048.
        if let Err(e) = check_jwks_uri(uri) {
            issues.push(Issue::error(path.key("jwksUri"), e));
        }
    }
    if let Some(jwks) = rule.jwks.as_deref() {
        if jwks_uri.is_some() {
            // authentication.md §5.1: "Only one of `jwksUri`/`jwks` (CEL)"; the CEL rule counts
            // present fields.
            issues.push(Issue::error(
                path.key("jwks"),
                "only one of jwks or jwksUri can be set",
            ));
        } else if !jwks.is_empty() {
            // authentication.md §5.1: jwks is parsed by the webhook, which warns about private
            // key material.
            match parse_jwks(jwks) {
                Ok(private) => {
                    for index in private {
                        issues.push(Issue::warning(
                            path.key("jwks"),
                            format!(
                                "jwks key at index {index} contains private key material; only \
                                 public keys are used for verification"
                            ),
                        ));
                    }
                }
                Err(e) => issues.push(Issue::error(
                    path.key("jwks"),
                    format!("jwks parse error: {e}"),
                )),
            }
        }
    }
    for (i, header) in rule.from_headers.iter().flatten().enumerate() {
        if header.name.is_empty() {
            issues.push(Issue::error(
                path.key("fromHeaders").index(i).key("name"),
                "location header name must be non-empty string",
            ));
        }
    }
    for (i, param) in rule.from_params.iter().flatten().enumerate() {
        if param.is_empty() {
            issues.push(Issue::error(
                path.key("fromParams").index(i),
                "location query must be non-empty string",
            ));
        }
    }
    for (i, cookie) in rule.from_cookies.iter().flatten().enumerate() {
        if cookie.is_empty() {
            issues.push(Issue::error(
                path.key("fromCookies").index(i),
                "cookie name must be non-empty string",
            ));
        }
    }
    for (i, output) in rule.output_claim_to_headers.iter().flatten().enumerate() {
        let at = path.key("outputClaimToHeaders").index(i);
        // authentication.md §5.1: header name pattern `^[-_A-Za-z0-9]+$`; claim required.
        if output.header.is_empty() {
            issues.push(Issue::error(
                at.key("header"),
                "outputClaimToHeaders header and claim value must be non-empty string",
            ));
        } else if !output
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            issues.push(Issue::error(
                at.key("header"),
                format!(
                    "header name `{}` is not a valid header name: expected `^[-_A-Za-z0-9]+$`",
                    output.header
                ),
            ));
        }
        if output.claim.is_empty() {
            issues.push(Issue::error(
                at.key("claim"),
                "outputClaimToHeaders header and claim value must be non-empty string",
            ));
        }
    }
    if let Some(timeout) = rule.timeout.as_deref() {
        // authentication.md §5.1: timeout a Duration (CRD: "must be a valid duration greater
        // than 1ms"; webhook: millisecond precision).
        if let Err(e) = check_duration_ms(timeout) {
            issues.push(Issue::error(path.key("timeout"), e));
        }
    }
    if let Some(claims) = &rule.space_delimited_claims {
        let at = path.key("spaceDelimitedClaims");
        // authentication.md §5.1: spaceDelimitedClaims (≤ 64), items non-empty.
        if claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
            issues.push(Issue::error(
                at.clone(),
                format!(
                    "too many spaceDelimitedClaims: {}, must have at most \
                     {MAX_SPACE_DELIMITED_CLAIMS}",
                    claims.len()
                ),
            ));
        }
        for (i, claim) in claims.iter().enumerate() {
            if claim.is_empty() {
                issues.push(Issue::error(
                    at.index(i),
                    "spaceDelimitedClaims entries must be non-empty strings",
                ));
            }
        }
    }
}

/// authentication.md §5.1: an absolute http/https URL of at most 2048 characters (CRD CEL
/// `url(self).getScheme() in ["http", "https"]`, webhook `ParseJwksURI`).
fn check_jwks_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("jwksUri must be non-empty string".to_owned());
    }
    if uri.len() > MAX_JWKS_URI_LEN {
        return Err(format!(
            "jwksUri is {} characters long: must be no more than {MAX_JWKS_URI_LEN}",
            uri.len()
        ));
    }
    if uri.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "invalid jwksUri `{uri}`: contains a space or control character"
        ));
    }
    let scheme_ok = uri.split_once(':').map(|(scheme, rest)| {
        (
            matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"),
            rest,
        )
    });
    let Some((true, rest)) = scheme_ok else {
        return Err(format!(
            "invalid jwksUri `{uri}`: url must have scheme http:// or https://"
        ));
    };
    // Kubernetes' `url()` parses with Go's `url.ParseRequestURI`: absolute path required.
    let Some(after) = rest.strip_prefix("//") else {
        return Err(format!(
            "invalid jwksUri `{uri}`: expected `http://host/path` or `https://host/path`"
        ));
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // The port, when given, must be a number (Go's url.Parse: "invalid port").
    let port = match host_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((_, tail)) => tail.strip_prefix(':'),
            None => {
                return Err(format!("invalid jwksUri `{uri}`: missing ']' in host"));
            }
        },
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port
        && !port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("invalid jwksUri `{uri}`: invalid port `{port}`"));
    }
    Ok(())
}

/// Parses an inline JWKS (a key set `{"keys": […]}` or a single key, as istiod's JWK library
/// accepts) and returns the indexes of the keys carrying private material.
fn parse_jwks(jwks: &str) -> Result<Vec<usize>, String> {
    let value: Value = serde_json::from_str(jwks).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object with a `keys` array".to_owned());
    };
    let keys: Vec<&Value> = match object.get("keys") {
        Some(Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("`keys` must be an array of JWK objects".to_owned()),
        None => vec![],
    };
    let mut private = Vec::new();
    if object.contains_key("keys") {
        for (i, key) in keys.into_iter().enumerate() {
            let Value::Object(key) = key else {
                return Err(format!("key at index {i} is not a JSON object"));
            };
            if check_jwk(key).map_err(|e| format!("key at index {i}: {e}"))? {
                private.push(i);
            }
        }
    } else if check_jwk(&object)? {
        private.push(0);
    }
    Ok(private)
}

/// Checks one JWK's required members; returns whether it holds private material.
fn check_jwk(key: &Map<String, Value>) -> Result<bool, String> {
    let kty = match key.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err("`kty` must be a string".to_owned()),
        None => return Err("missing `kty`".to_owned()),
    };
    let (required, private): (&[&str], bool) = match kty {
        "RSA" => (&["n", "e"], key.contains_key("d")),
        "EC" => (&["crv", "x", "y"], key.contains_key("d")),
        "OKP" => (&["crv", "x"], key.contains_key("d")),
        // A symmetric key is secret material by nature.
        "oct" => (&["k"], true),
        other => {
            return Err(format!(
                "unsupported key type `{other}`: expected RSA, EC, OKP or oct"
            ));
        }
    };
    let curves: &[&str] = match kty {
        "EC" => &["P-256", "P-384", "P-521"],
        "OKP" => &["Ed25519", "X25519"],
        _ => &[],
    };
    if let Some(Value::String(crv)) = key.get("crv")
        && !curves.is_empty()
        && !curves.contains(&crv.as_str())
    {
        return Err(format!(
            "unsupported curve `{crv}` for the {kty} key: expected one of {}",
            curves.join(", ")
        ));
    }
    for member in required {
        match key.get(*member) {
            Some(Value::String(v)) if is_base64(v) || *member == "crv" => {}
            Some(Value::String(_)) => {
                return Err(format!("`{member}` of the {kty} key is not base64url"));
            }
            _ => return Err(format!("the {kty} key requires a string `{member}`")),
        }
    }
    Ok(private)
}

fn is_base64(value: &str) -> bool {
    !value.is_empty()
        && value
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/'))
}
