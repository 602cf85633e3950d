//! What a verified token produces: header changes (authentication.md §5.1), the payload for
//! authorization (§5.7) and the rejection reply (§5.5).

use serde_json::{Value, json};
use test_case::test_case;

use super::super::{HeaderMutations, JwtFailure, JwtOutcome, JwtRuleConfig};
use super::fixtures::*;

fn claim_rule(claims: &[(&str, &str)]) -> JwtRuleConfig {
    let mut rule = test_rule();
    rule.output_claim_to_headers = claims
        .iter()
        .map(|(header, claim)| claim_to_header(header, claim))
        .collect();
    rule
}

/// The `x-out` header the upstream receives for `claim` of a token carrying `extra`.
fn claim_header(claim: &str, extra: &Value) -> Vec<String> {
    let authn = authenticator(&[claim_rule(&[("X-Out", claim)])]);
    let request = bearer(&rsa_token(extra));
    let verified = verified(get(&authn, "/", &request));
    upstream_headers(&request, &verified.headers)
        .into_iter()
        .filter(|(name, _)| name == "x-out")
        .map(|(_, value)| value)
        .collect()
}

#[test_case("c", json!({"c": "text"}), &["text"] ; "string")]
#[test_case("c", json!({"c": 1_704_067_200}), &["1704067200"] ; "integer")]
#[test_case("c", json!({"c": 2.0}), &["2"] ; "whole double printed as integer")]
#[test_case("c", json!({"c": 1.5}), &["1.500000"] ; "fraction printed with six decimals")]
#[test_case("c", json!({"c": -3}), &["-3.000000"] ; "negative printed as double")]
#[test_case("c", json!({"c": 1e20}), &["100000000000000000000.000000"] ; "beyond u64 printed as double")]
#[test_case("c", json!({"c": true}), &["true"] ; "bool")]
#[test_case("a.b.c", json!({"a": {"b": {"c": "deep"}}}), &["deep"] ; "nested path")]
#[test_case("c", json!({"c": ["x", "y"]}), &[] ; "array not added")]
#[test_case("c", json!({"c": {"x": 1}}), &[] ; "object not added")]
#[test_case("c", json!({"c": null}), &[] ; "null not added")]
#[test_case("c", json!({"c": ""}), &[] ; "empty string not added")]
#[test_case("c", json!({}), &[] ; "missing not added")]
#[test_case("a.b", json!({"a": "not an object"}), &[] ; "path through a non-object not added")]
#[test_case("a.b", json!({"a.b": "literal key"}), &[] ; "dots always descend")]
fn claim_to_header_values(claim: &str, extra: Value, expected: &[&str]) {
    assert_eq!(claim_header(claim, &extra), expected);
}

#[test]
fn claim_headers_replace_client_copies_even_without_a_token() {
    let authn = authenticator(&[claim_rule(&[("x-user", "sub")])]);
    let request = headers(&[("x-user", "admin"), ("x-other", "kept")]);
    let mutations = no_token(get(&authn, "/", &request));
    assert_eq!(
        upstream_headers(&request, &mutations),
        headers(&[("x-other", "kept")])
    );

    // With a token the header carries the claim only.
    let mut request = bearer(&rsa_token(&json!({})));
    request.extend(headers(&[("x-user", "admin"), ("x-user", "root")]));
    let verified = verified(get(&authn, "/", &request));
    assert_eq!(
        upstream_headers(&request, &verified.headers),
        headers(&[("x-user", "alice")])
    );
}

#[test]
fn payload_header_is_the_payload_section_verbatim() {
    let mut rule = test_rule();
    rule.output_payload_to_header = Some("X-Jwt-Payload".to_owned());
    rule.forward_original_token = true;
    let authn = authenticator(&[rule]);
    let token = rsa_token(&json!({"name": "Ünïcode"}));
    let request = headers(&[
        ("authorization", &format!("Bearer {token}")),
        ("x-jwt-payload", "forged"),
    ]);
    let verified = verified(get(&authn, "/", &request));
    let section = token.split('.').nth(1).unwrap();
    assert!(!section.ends_with('='));
    assert_eq!(
        upstream_headers(&request, &verified.headers),
        sorted(headers(&[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-payload", section),
        ]))
    );
}

#[test]
fn two_rules_with_the_same_payload_header_add_it_once() {
    let mut other = rule_with("https://other.test", &test_jwks());
    other.output_payload_to_header = Some("x-test-payload".to_owned());
    let mut mine = test_rule();
    mine.output_payload_to_header = Some("x-test-payload".to_owned());
    let authn = authenticator(&[other, mine]);
    let request = bearer(&rsa_token(&json!({})));
    let verified = verified(get(&authn, "/", &request));
    let payload_headers = upstream_headers(&request, &verified.headers)
        .into_iter()
        .filter(|(name, _)| name == "x-test-payload")
        .count();
    assert_eq!(payload_headers, 1);
}

#[test]
fn forward_false_removes_every_value_of_the_token_header() {
    let authn = authenticator(&[test_rule()]);
    let request = headers(&[
        ("authorization", "Basic dXNlcjpwYXNz"),
        (
            "authorization",
            &format!("Bearer {}", rsa_token(&json!({}))),
        ),
        ("x-kept", "1"),
    ]);
    let verified = verified(get(&authn, "/", &request));
    assert_eq!(
        verified.headers,
        HeaderMutations {
            remove: vec!["authorization".to_owned()],
            append: Vec::new(),
            path: None,
        }
    );
}

#[test]
fn forward_false_removes_the_query_parameter_and_forward_true_keeps_it() {
    let path = format!("/items?b=2&access_token={}&a=1", rsa_token(&json!({})));
    let authn = authenticator(&[test_rule()]);
    let stripped = verified(get(&authn, &path, &[]));
    assert_eq!(stripped.headers.path.as_deref(), Some("/items?a=1&b=2"));

    let mut rule = test_rule();
    rule.forward_original_token = true;
    let authn = authenticator(&[rule]);
    assert!(verified(get(&authn, &path, &[])).headers.is_empty());
}

#[test]
fn header_mutations_are_available_on_the_outcome() {
    let authn = authenticator(&[test_rule()]);
    let outcome = get(&authn, "/", &bearer(&rsa_token(&json!({}))));
    assert_eq!(
        outcome.header_mutations().unwrap().remove,
        ["authorization"]
    );
    let outcome = get(&authn, "/", &bearer("garbage"));
    assert!(matches!(outcome, JwtOutcome::Rejected(_)));
    assert!(outcome.header_mutations().is_none());
}

/// The payload authorization sees for a token carrying `extra`, with `custom` split claims.
fn payload(extra: &Value, custom: &[&str]) -> serde_json::Map<String, Value> {
    let mut rule = test_rule();
    rule.space_delimited_claims = custom.iter().map(|c| (*c).to_owned()).collect();
    let authn = authenticator(&[rule]);
    verified(get(&authn, "/", &bearer(&rsa_token(extra)))).payload
}

#[test_case("scope", json!("read  write admin"), &[], json!(["read", "write", "admin"]) ; "scope always split")]
#[test_case("permission", json!("a b"), &[], json!(["a", "b"]) ; "permission always split")]
#[test_case("roles", json!("a b"), &["roles"], json!(["a", "b"]) ; "configured claim split")]
#[test_case("roles", json!("a b"), &[], json!("a b") ; "unconfigured claim kept")]
#[test_case("scope", json!(["a b"]), &[], json!(["a b"]) ; "list kept")]
#[test_case("scope", json!(""), &[], json!("") ; "empty string kept")]
#[test_case("scope", json!("   "), &[], json!("   ") ; "blank string kept")]
#[test_case("scope", json!("a\tb"), &[], json!(["a\tb"]) ; "only spaces separate")]
#[test_case("scope", json!(7), &[], json!(7) ; "number kept")]
fn space_delimited_claims(claim: &str, value: Value, custom: &[&str], expected: Value) {
    let payload = payload(&json!({ claim: value }), custom);
    assert_eq!(payload[claim], expected);
}

#[test]
fn space_delimited_claim_names_are_top_level_keys() {
    let extra = json!({"a.b": "x y", "a": {"b": "p q"}});
    let payload = payload(&extra, &["a.b"]);
    assert_eq!(payload["a.b"], json!(["x", "y"]));
    assert_eq!(payload["a"], json!({"b": "p q"}));
}

#[test]
fn rejection_reply_matches_envoy() {
    let authn = authenticator(&[test_rule()]);
    let token = unsigned(
        r#"{"alg":"RS256","kid":"nope"}"#,
        &claims(&json!({})).to_string(),
        "c2ln",
    );
    let rejection = rejected(get(&authn, "/", &bearer(&token)));
    assert_eq!(rejection.reason, JwtFailure::JwksKidAlgMismatch);
    assert_eq!(
        rejection.response_code_details(),
        "jwt_authn_access_denied{Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt}"
    );
    assert_eq!(
        rejection.www_authenticate("https", "api.test", "/a?b=c"),
        r#"Bearer realm="https://api.test/a?b=c", error="invalid_token""#
    );
}

#[test]
fn realm_path_is_truncated_to_256_bytes() {
    let authn = authenticator(&[test_rule()]);
    let rejection = rejected(get(&authn, "/", &bearer("garbage")));
    let long = format!("/{}", "x".repeat(300));
    let header = rejection.www_authenticate("http", "h", &long);
    assert_eq!(
        header,
        format!(
            r#"Bearer realm="http://h/{}", error="invalid_token""#,
            "x".repeat(255)
        )
    );
    // A cut inside a multi-byte character backs up to its start.
    let accented = format!("/{}é", "x".repeat(254));
    assert_eq!(accented.len(), 257);
    let header = rejection.www_authenticate("http", "h", &accented);
    assert!(
        header.contains(&format!("/{}\"", "x".repeat(254))),
        "{header}"
    );
}

#[test]
fn only_audience_failures_are_403() {
    for failure in ALL_FAILURES {
        let expected = if failure == JwtFailure::AudienceNotAllowed {
            403
        } else {
            401
        };
        assert_eq!(failure.http_status(), expected, "{failure:?}");
        assert_eq!(failure.to_string(), failure.message());
    }
}

const ALL_FAILURES: [JwtFailure; 28] = [
    JwtFailure::Missing,
    JwtFailure::BadFormat,
    JwtFailure::HeaderBadBase64,
    JwtFailure::HeaderBadJson,
    JwtFailure::HeaderBadAlg,
    JwtFailure::HeaderAlgNotImplemented,
    JwtFailure::HeaderBadKid,
    JwtFailure::PayloadBadBase64,
    JwtFailure::PayloadBadJson,
    JwtFailure::IssNotString,
    JwtFailure::SubNotString,
    JwtFailure::IatNotInteger,
    JwtFailure::IatOutOfRange,
    JwtFailure::NbfNotInteger,
    JwtFailure::NbfOutOfRange,
    JwtFailure::ExpNotInteger,
    JwtFailure::ExpOutOfRange,
    JwtFailure::JtiNotString,
    JwtFailure::AudNotStringOrList,
    JwtFailure::SignatureBadBase64,
    JwtFailure::UnknownIssuer,
    JwtFailure::NotYetValid,
    JwtFailure::Expired,
    JwtFailure::AudienceNotAllowed,
    JwtFailure::JwksKidAlgMismatch,
    JwtFailure::VerificationFail,
    JwtFailure::Ed25519SignatureWrongLength,
    JwtFailure::JwksNoValidKeys,
];

#[test]
fn status_strings_are_distinct() {
    let mut messages: Vec<&str> = ALL_FAILURES.iter().map(|f| f.message()).collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), ALL_FAILURES.len());
}
