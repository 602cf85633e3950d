//! The conformance corpus's `jwt-D-*` cases, with the corpus's own tokens and keys.

use serde_json::json;

use super::super::{JwtAuthenticator, JwtFailure};
use super::fixtures::*;

#[test]
fn d10_valid_token_yields_issuer_and_claims() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let verified = verified(get(&authn, "/valid-token", &bearer(TOKEN_ISSUER_1)));
    assert_eq!(verified.issuer, "test-issuer-1@istio.io");
    assert_eq!(verified.subject(), Some("sub-1"));
    assert_eq!(verified.payload["groups"], json!(["group-1"]));
}

#[test]
fn d3_expired_token_gets_401_with_envoy_body_and_realm() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let rejection = rejected(get(
        &authn,
        "/expired-token-noauthz",
        &bearer(TOKEN_ISSUER_1_EXPIRED),
    ));
    assert_eq!(rejection.status, 401);
    assert_eq!(rejection.message, "Jwt is expired");
    assert_eq!(rejection.reason, JwtFailure::Expired);
    assert_eq!(
        rejection.www_authenticate("http", "httpbin.foo:8000", "/expired-token-noauthz"),
        r#"Bearer realm="http://httpbin.foo:8000/expired-token-noauthz", error="invalid_token""#
    );
    assert_eq!(
        rejection.response_code_details(),
        "jwt_authn_access_denied{Jwt_is_expired}"
    );
}

#[test]
fn d2_no_token_passes_unauthenticated() {
    let authn = authenticator(&[
        corpus_rule("test-issuer-1@istio.io"),
        corpus_rule("test-issuer-2@istio.io"),
    ]);
    let mutations = no_token(get(&authn, "/no-token-noauthz", &[]));
    assert!(mutations.remove.is_empty() && mutations.append.is_empty());
}

#[test]
fn d4_cors_preflight_skips_an_expired_token() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let mut preflight = bearer(TOKEN_ISSUER_1_EXPIRED);
    preflight.extend(headers(&[
        ("origin", "http://example.com"),
        ("access-control-request-method", "GET"),
    ]));
    let outcome = request(&authn, "OPTIONS", "/expired", &preflight, NOW);
    assert_eq!(no_token(outcome), Default::default());

    // Without Origin the same OPTIONS request is checked.
    let mut no_origin = bearer(TOKEN_ISSUER_1_EXPIRED);
    no_origin.extend(headers(&[("access-control-request-method", "GET")]));
    let outcome = request(&authn, "OPTIONS", "/expired", &no_origin, NOW);
    assert_eq!(rejected(outcome).message, "Jwt is expired");
}

#[test]
fn d5_nested_claim_header_replaces_the_client_copy() {
    let mut rule1 = corpus_rule("test-issuer-1@istio.io");
    rule1.output_payload_to_header = Some("x-test-payload".to_owned());
    rule1.output_claim_to_headers = vec![
        claim_to_header("x-jwt-iss", "iss"),
        claim_to_header("x-jwt-iat", "iat"),
        claim_to_header("x-jwt-nested-claim", "nested.nested-2.key2"),
    ];
    let mut rule2 = corpus_rule("test-issuer-2@istio.io");
    rule2.output_payload_to_header = Some("x-test-payload".to_owned());
    let authn = authenticator(&[rule1, rule2]);

    let mut request = bearer(TOKEN_NESTED_CLAIM);
    request.extend(headers(&[("x-jwt-nested-claim", "value_to_be_replaced")]));
    let verified = verified(get(&authn, "/valid-token-noauthz", &request));

    let payload_segment = TOKEN_NESTED_CLAIM.split('.').nth(1).unwrap();
    assert_eq!(
        upstream_headers(&request, &verified.headers),
        sorted(headers(&[
            ("x-jwt-iat", "1704067200"),
            ("x-jwt-iss", "test-issuer-1@istio.io"),
            ("x-jwt-nested-claim", "valueC"),
            ("x-test-payload", payload_segment),
        ]))
    );
}

#[test]
fn d11_forward_original_token_keeps_the_authorization_header() {
    let mut rule = corpus_rule("test-issuer-1@istio.io");
    rule.forward_original_token = true;
    let authn = authenticator(&[rule]);
    let forwarded = verified(get(&authn, "/valid-token-forward", &bearer(TOKEN_ISSUER_1)));
    assert!(forwarded.headers.is_empty(), "{:?}", forwarded.headers);

    // Control: the default removes it.
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let stripped = verified(get(&authn, "/valid-token", &bearer(TOKEN_ISSUER_1)));
    assert_eq!(stripped.headers.remove, ["authorization"]);
    assert!(stripped.headers.append.is_empty());
}

/// `httpbin-part1` (issuer-1 with `aud: foo`, issuer-2 with `aud: bar`) and `httpbin-part2`
/// (issuer-2, no audiences) select the same workload.
fn d12_authenticator() -> JwtAuthenticator {
    let mut issuer1_foo = corpus_rule("test-issuer-1@istio.io");
    issuer1_foo.audiences = vec!["foo".to_owned()];
    let mut issuer2_bar = corpus_rule("test-issuer-2@istio.io");
    issuer2_bar.audiences = vec!["bar".to_owned()];
    let issuer2_any = corpus_rule("test-issuer-2@istio.io");
    authenticator(&[issuer1_foo, issuer2_bar, issuer2_any])
}

#[test]
fn d12a_token_without_the_configured_audience_gets_403() {
    let rejection = rejected(get(
        &d12_authenticator(),
        "/valid-aud",
        &bearer(TOKEN_ISSUER_1),
    ));
    assert_eq!(rejection.status, 403);
    assert_eq!(rejection.message, "Audiences in Jwt are not allowed");
}

#[test]
fn d12b_token_with_the_configured_audience_passes() {
    let verified = verified(get(
        &d12_authenticator(),
        "/valid-aud",
        &bearer(TOKEN_ISSUER_1_AUD_FOO),
    ));
    assert_eq!(verified.payload["aud"], "foo");
}

#[test]
fn d12c_rules_with_the_same_issuer_are_combined() {
    let verified = verified(get(
        &d12_authenticator(),
        "/verify-policies-are-combined",
        &bearer(TOKEN_ISSUER_2_ES256),
    ));
    assert_eq!(verified.issuer, "test-issuer-2@istio.io");
}

#[test]
fn d15_lower_case_bearer_is_no_token() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let request = headers(&[("authorization", &format!("bearer {TOKEN_ISSUER_1}"))]);
    let mutations = no_token(get(&authn, "/", &request));
    assert!(mutations.is_empty());
}

#[test]
fn d16_access_token_query_parameter_is_a_default_location() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let path = format!("/headers?access_token={TOKEN_ISSUER_1}");
    let verified = verified(get(&authn, &path, &[]));
    assert_eq!(verified.subject(), Some("sub-1"));
    // forwardOriginalToken defaults to false: Envoy ≥ 1.31 drops the parameter.
    assert_eq!(verified.headers.path.as_deref(), Some("/headers"));
}

#[test]
fn d17_alg_none_token_is_refused() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    // The corpus token has an empty signature section, which jwt_verify_lib's empty-skipping
    // split turns into two sections.
    assert_eq!(
        rejection_message(&authn, TOKEN_ALG_NONE),
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    // With any signature text, `alg: none` itself is what fails.
    let signed_none = format!("{TOKEN_ALG_NONE}c2ln");
    assert_eq!(
        rejection_message(&authn, &signed_none),
        "Jwt header [alg] is not supported"
    );
}

#[test]
fn d18_unknown_issuer_is_refused_not_ignored() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    let rejection = rejected(get(&authn, "/", &bearer(TOKEN_OTHER_ISSUER)));
    assert_eq!(rejection.status, 401);
    assert_eq!(rejection.message, "Jwt issuer is not configured");
}

#[test]
fn d20_token_valid_from_2099_is_not_yet_valid() {
    let authn = authenticator(&[corpus_rule("test-issuer-1@istio.io")]);
    assert_eq!(
        rejection_message(&authn, TOKEN_NBF_2099),
        "Jwt not yet valid"
    );
}

#[test]
fn d21_audience_scheme_and_trailing_slash_are_ignored() {
    let mut rule = corpus_rule("test-issuer-1@istio.io");
    rule.audiences = vec!["https://api.example.com/".to_owned()];
    let authn = authenticator(&[rule]);
    verified(get(&authn, "/", &bearer(TOKEN_AUD_API)));
    let rejection = rejected(get(&authn, "/", &bearer(TOKEN_AUD_OTHER)));
    assert_eq!(rejection.status, 403);
}

#[test]
fn d23_list_claims_stay_lists() {
    let authn = authenticator(&[corpus_rule("testing@secure.istio.io")]);
    let verified = verified(get(&authn, "/headers", &bearer(TOKEN_GROUPS_SCOPE)));
    assert_eq!(verified.payload["groups"], json!(["group1", "group2"]));
    assert_eq!(verified.payload["scope"], json!(["scope1", "scope2"]));
}

#[test]
fn d25_malformed_token_gets_401() {
    let authn = authenticator(&[corpus_rule("testing@secure.istio.io")]);
    let rejection = rejected(get(&authn, "/headers", &bearer("invalidToken")));
    assert_eq!(rejection.status, 401);
    assert_eq!(rejection.reason, JwtFailure::BadFormat);
}

#[test]
fn d6_gateway_rejects_a_garbage_bearer_token() {
    let authn = authenticator(&[corpus_rule("testing@secure.istio.io")]);
    assert_eq!(
        rejected(get(&authn, "/headers", &bearer("deadbeef"))).status,
        401
    );
    assert!(no_token(get(&authn, "/headers", &[])).is_empty());
}
