//! authentication.md §5.2: which rules apply and how they combine.

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::super::{HeaderLocation, JwtAuthenticator, JwtFailure, JwtRuleConfig};
use super::fixtures::*;

const ISSUER_A: &str = "https://a.test";
const ISSUER_B: &str = "https://b.test";

fn token_of(issuer: &str, extra: &serde_json::Value) -> String {
    let mut claims = claims(extra);
    claims["iss"] = json!(issuer);
    if let Some(extra_iss) = extra.get("iss") {
        claims["iss"] = extra_iss.clone();
    }
    sign(TestKey::Rsa, Algorithm::RS256, Some("rsa-1"), &claims)
}

fn rule_for(issuer: &str) -> JwtRuleConfig {
    rule_with(issuer, &test_jwks())
}

fn in_header(mut rule: JwtRuleConfig, header: &str) -> JwtRuleConfig {
    rule.from_headers = vec![HeaderLocation {
        name: header.to_owned(),
        prefix: None,
    }];
    rule
}

#[test]
fn no_rules_means_no_filter() {
    let authn = JwtAuthenticator::new(Vec::new());
    assert!(authn.is_empty());
    assert!(no_token(get(&authn, "/", &bearer("garbage"))).is_empty());
}

#[test]
fn rules_are_sorted_by_issuer() {
    let authn = authenticator(&[rule_for(ISSUER_B), rule_for(ISSUER_A), rule_for(ISSUER_B)]);
    let issuers: Vec<&str> = authn.providers().iter().map(|p| p.issuer()).collect();
    assert_eq!(issuers, [ISSUER_A, ISSUER_B, ISSUER_B]);
}

#[test]
fn rule1_no_token_anywhere_is_allowed_without_attributes() {
    let authn = authenticator(&[rule_for(ISSUER_A), rule_for(ISSUER_B)]);
    let mutations = no_token(get(&authn, "/path?x=1", &headers(&[("cookie", "a=b")])));
    assert!(mutations.is_empty());
}

#[test]
fn rule2_token_must_verify_under_a_provider_owning_its_location() {
    // A's token sits in B's header: the only provider owning `x-b` has another issuer.
    let authn = authenticator(&[
        in_header(rule_for(ISSUER_A), "x-a"),
        in_header(rule_for(ISSUER_B), "x-b"),
    ]);
    let token = token_of(ISSUER_A, &json!({}));
    let rejection = rejected(get(&authn, "/", &headers(&[("x-b", &token)])));
    assert_eq!(
        (rejection.status, rejection.message),
        (401, "Jwt issuer is not configured")
    );
    // The same token in its own provider's header verifies.
    verified(get(&authn, "/", &headers(&[("x-a", &token)])));
}

#[test]
fn rule2_shared_location_is_verified_by_the_provider_with_the_token_issuer() {
    let authn = authenticator(&[rule_for(ISSUER_A), rule_for(ISSUER_B)]);
    let token = token_of(ISSUER_B, &json!({}));
    assert_eq!(verified(get(&authn, "/", &bearer(&token))).issuer, ISSUER_B);
}

#[test]
fn rule2_issuer_of_no_provider_is_refused_with_several_rules() {
    let authn = authenticator(&[rule_for(ISSUER_A), rule_for(ISSUER_B)]);
    let token = token_of("https://c.test", &json!({}));
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::UnknownIssuer
    );
}

#[test]
fn rule2_a_real_error_is_reported_over_issuer_not_configured() {
    // One provider rejects the expired token, the other does not own its issuer: Envoy reports
    // the real error whichever provider comes first in `origins-N` order.
    let authn = authenticator(&[rule_for(ISSUER_A), rule_for(ISSUER_B)]);
    for issuer in [ISSUER_A, ISSUER_B] {
        let token = token_of(issuer, &json!({"exp": NOW - 3600}));
        assert_eq!(
            rejection_message(&authn, &token),
            "Jwt is expired",
            "{issuer}"
        );
    }
}

/// Istio test `invalid-token-set`: `?token=<valid>&secondary_token=<expired>` ⇒ 401.
#[test]
fn rule3_every_token_in_one_providers_locations_must_verify() {
    let mut rule = rule_for(ISSUER_A);
    rule.from_params = vec!["token".to_owned(), "secondary_token".to_owned()];
    let authn = authenticator(&[rule]);
    let valid = token_of(ISSUER_A, &json!({}));
    let expired = token_of(ISSUER_A, &json!({"exp": NOW - 3600}));

    let path = format!("/?token={valid}&secondary_token={expired}");
    assert_eq!(rejected(get(&authn, &path, &[])).message, "Jwt is expired");
    let swapped = format!("/?token={expired}&secondary_token={valid}");
    assert_eq!(
        rejected(get(&authn, &swapped, &[])).message,
        "Jwt is expired"
    );
    let both = format!("/?token={valid}&secondary_token={valid}");
    verified(get(&authn, &both, &[]));
}

#[test]
fn rule3_header_and_default_parameter_tokens_must_both_verify() {
    let authn = authenticator(&[rule_for(ISSUER_A)]);
    let valid = token_of(ISSUER_A, &json!({}));
    let path = "/?access_token=garbage";
    assert_eq!(
        rejected(get(&authn, path, &bearer(&valid))).reason,
        JwtFailure::BadFormat
    );
}

/// Istio test `verify-policies-are-combined`: one rule with audiences, one without.
#[test]
fn rule4_same_issuer_rules_accept_if_any_accepts() {
    let mut with_aud = rule_for(ISSUER_A);
    with_aud.audiences = vec!["api".to_owned()];
    let authn = authenticator(&[with_aud.clone(), rule_for(ISSUER_A)]);
    verified(get(&authn, "/", &bearer(&token_of(ISSUER_A, &json!({})))));
    verified(get(
        &authn,
        "/",
        &bearer(&token_of(ISSUER_A, &json!({"aud": "api"}))),
    ));

    // Control: the audience rule alone refuses the first token.
    let only_aud = authenticator(&[with_aud]);
    assert_eq!(
        rejected(get(
            &only_aud,
            "/",
            &bearer(&token_of(ISSUER_A, &json!({})))
        ))
        .status,
        403
    );
}

#[test]
fn rule4_same_issuer_with_different_keys_accepts_if_any_key_set_verifies() {
    let rsa_only = rule_with(ISSUER_A, &jwks(&[TestKey::Rsa.jwk("rsa-1", None)]));
    let ec_only = rule_with(ISSUER_A, &jwks(&[TestKey::EcP256.jwk("ec-1", None)]));
    let authn = authenticator(&[rsa_only, ec_only]);
    let ec_token = sign(
        TestKey::EcP256,
        Algorithm::ES256,
        Some("ec-1"),
        &claims(&json!({"iss": ISSUER_A})),
    );
    verified(get(&authn, "/", &bearer(&ec_token)));
}

#[test]
fn rule5_unconfigured_locations_are_never_inspected() {
    let authn = authenticator(&[in_header(rule_for(ISSUER_A), "x-a")]);
    // A garbage bearer token in the (now unconfigured) Authorization header is ignored.
    assert!(no_token(get(&authn, "/?access_token=junk", &bearer("junk"))).is_empty());
}

/// The outer `ANY` of the tree ends at the first provider that verifies every token of its own
/// locations, before the `ALL` branch would look at the other providers' locations. Envoy thus lets
/// a request through with garbage in another provider's header (authentication.md §5.2 states the
/// tree; its summary rule 2 does not cover this case).
#[test]
fn one_provider_succeeding_ends_the_outer_any() {
    let authn = authenticator(&[
        in_header(rule_for(ISSUER_A), "x-a"),
        in_header(rule_for(ISSUER_B), "x-b"),
    ]);
    let valid_a = token_of(ISSUER_A, &json!({}));
    let request = headers(&[("x-a", &valid_a), ("x-b", "garbage")]);
    assert_eq!(verified(get(&authn, "/", &request)).issuer, ISSUER_A);

    // With A's header empty the ALL branch runs and B's garbage is refused.
    let request = headers(&[("x-b", "garbage")]);
    assert_eq!(
        rejected(get(&authn, "/", &request)).reason,
        JwtFailure::BadFormat
    );
}

#[test]
fn a_single_rule_reports_the_failing_tokens_status() {
    let authn = authenticator(&[rule_for(ISSUER_A)]);
    let not_yet = token_of(ISSUER_A, &json!({"nbf": NOW + 3600}));
    assert_eq!(rejection_message(&authn, &not_yet), "Jwt not yet valid");
}

#[test]
fn the_last_verified_token_is_the_one_reported() {
    // Tokens are verified from the last location to the first (cookies, then parameters, then
    // headers), so the header token's claims are the ones authorization sees.
    let mut rule = rule_for(ISSUER_A);
    rule.from_headers = vec![HeaderLocation {
        name: "x-a".to_owned(),
        prefix: None,
    }];
    rule.from_params = vec!["t".to_owned()];
    let authn = authenticator(&[rule]);
    let header_token = token_of(ISSUER_A, &json!({"sub": "from-header"}));
    let param_token = token_of(ISSUER_A, &json!({"sub": "from-param"}));
    let outcome = get(
        &authn,
        &format!("/?t={param_token}"),
        &headers(&[("x-a", &header_token)]),
    );
    assert_eq!(verified(outcome).subject(), Some("from-header"));
}
