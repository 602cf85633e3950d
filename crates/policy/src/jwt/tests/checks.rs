//! authentication.md §5.4: every row of the verification table, in order.

use jsonwebtoken::Algorithm;
use serde_json::json;
use test_case::test_case;

use super::super::JwtFailure;
use super::fixtures::*;

const HEADER: &str = r#"{"alg":"RS256","kid":"rsa-1"}"#;
const PAYLOAD: &str = r#"{"iss":"https://issuer.test","sub":"alice"}"#;

/// A token whose header is `header` and payload [`PAYLOAD`], with a dummy signature.
fn with_header(header: &str) -> String {
    unsigned(header, PAYLOAD, "c2ln")
}

/// A token whose payload is `payload` and header [`HEADER`], with a dummy signature.
fn with_payload(payload: &str) -> String {
    unsigned(HEADER, payload, "c2ln")
}

#[test_case("a.b" ; "two sections")]
#[test_case("a.b.c.d" ; "four sections")]
#[test_case("a..b" ; "an empty middle section is skipped")]
#[test_case("..." ; "only dots")]
#[test_case("abc" ; "no dot")]
fn row1_three_sections(token: &str) {
    assert_eq!(rejected(raw(token)).reason, JwtFailure::BadFormat);
}

#[test]
fn row1_status_strings_are_envoys() {
    let rejection = rejected(raw("a.b"));
    assert_eq!(
        rejection.message,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    assert_eq!(rejection.status, 401);
}

#[test_case(&format!("e30+.{}.c2ln", b64(PAYLOAD.as_bytes())), JwtFailure::HeaderBadBase64 ; "header with a standard-alphabet character")]
#[test_case(&format!("e30=x.{}.c2ln", b64(PAYLOAD.as_bytes())), JwtFailure::HeaderBadBase64 ; "header with data after padding")]
#[test_case(&with_header("not json"), JwtFailure::HeaderBadJson ; "header not json")]
#[test_case(&with_header("[1]"), JwtFailure::HeaderBadJson ; "header json but not an object")]
#[test_case(&with_header("{}"), JwtFailure::HeaderBadAlg ; "alg missing")]
#[test_case(&with_header(r#"{"alg":256}"#), JwtFailure::HeaderBadAlg ; "alg a number")]
#[test_case(&with_header(r#"{"alg":null}"#), JwtFailure::HeaderBadAlg ; "alg null")]
#[test_case(&with_header(r#"{"alg":"none"}"#), JwtFailure::HeaderAlgNotImplemented ; "alg none")]
#[test_case(&with_header(r#"{"alg":"rs256"}"#), JwtFailure::HeaderAlgNotImplemented ; "alg is case sensitive")]
#[test_case(&with_header(r#"{"alg":"ES256K"}"#), JwtFailure::HeaderAlgNotImplemented ; "alg unknown")]
#[test_case(&with_header(r#"{"alg":"RS256","kid":7}"#), JwtFailure::HeaderBadKid ; "kid a number")]
#[test_case(&with_header(r#"{"alg":"RS256","kid":null}"#), JwtFailure::HeaderBadKid ; "kid null")]
#[test_case(&format!("{}.e30+.c2ln", b64(HEADER.as_bytes())), JwtFailure::PayloadBadBase64 ; "payload not base64url")]
#[test_case(&with_payload("nope"), JwtFailure::PayloadBadJson ; "payload not json")]
#[test_case(&with_payload(r#""a string""#), JwtFailure::PayloadBadJson ; "payload json but not an object")]
#[test_case(&with_payload(r#"{"iss":1}"#), JwtFailure::IssNotString ; "iss a number")]
#[test_case(&with_payload(r#"{"sub":{}}"#), JwtFailure::SubNotString ; "sub an object")]
#[test_case(&with_payload(r#"{"iat":"1"}"#), JwtFailure::IatNotInteger ; "iat a string")]
#[test_case(&with_payload(r#"{"iat":-1}"#), JwtFailure::IatOutOfRange ; "iat negative")]
#[test_case(&with_payload(r#"{"nbf":true}"#), JwtFailure::NbfNotInteger ; "nbf a bool")]
#[test_case(&with_payload(r#"{"nbf":-0.5}"#), JwtFailure::NbfOutOfRange ; "nbf negative fraction")]
#[test_case(&with_payload(r#"{"exp":"soon"}"#), JwtFailure::ExpNotInteger ; "exp a string")]
#[test_case(&with_payload(r#"{"exp":null}"#), JwtFailure::ExpNotInteger ; "exp null")]
#[test_case(&with_payload(r#"{"exp":-1}"#), JwtFailure::ExpOutOfRange ; "exp negative")]
#[test_case(&with_payload(r#"{"exp":18446744073709551616}"#), JwtFailure::ExpOutOfRange ; "exp 2 to the 64")]
#[test_case(&with_payload(r#"{"jti":5}"#), JwtFailure::JtiNotString ; "jti a number")]
#[test_case(&with_payload(r#"{"aud":5}"#), JwtFailure::AudNotStringOrList ; "aud a number")]
#[test_case(&with_payload(r#"{"aud":["a",1]}"#), JwtFailure::AudNotStringOrList ; "aud a mixed list")]
#[test_case(&with_payload(r#"{"aud":{"a":"b"}}"#), JwtFailure::AudNotStringOrList ; "aud an object")]
#[test_case(&unsigned(HEADER, PAYLOAD, "c2ln+"), JwtFailure::SignatureBadBase64 ; "signature not base64url")]
#[test_case(&unsigned(HEADER, PAYLOAD, "c"), JwtFailure::SignatureBadBase64 ; "signature one character")]
fn row1_structure(token: &str, expected: JwtFailure) {
    let rejection = rejected(raw(token));
    assert_eq!(rejection.reason, expected);
    assert_eq!(rejection.message, expected.message());
    assert_eq!(rejection.status, 401);
}

#[test_case(&with_header(r#"{"alg":"RS256","kid":7}"#).replace(".c2ln", "+.c2ln"), JwtFailure::HeaderBadKid ; "header before payload")]
#[test_case(&unsigned(r#"{"alg":"none"}"#, "nope", "c2ln"), JwtFailure::HeaderAlgNotImplemented ; "alg before payload")]
#[test_case(&with_payload(r#"{"iss":1,"sub":2}"#), JwtFailure::IssNotString ; "iss before sub")]
#[test_case(&with_payload(r#"{"exp":"x","aud":5}"#), JwtFailure::ExpNotInteger ; "exp before aud")]
#[test_case(&with_payload(r#"{"nbf":"x","exp":"x"}"#), JwtFailure::NbfNotInteger ; "nbf before exp")]
#[test_case(&unsigned(HEADER, r#"{"jti":1}"#, "c2ln+"), JwtFailure::JtiNotString ; "payload before signature")]
#[test_case(&unsigned(HEADER, r#"{"iss":"someone-else"}"#, "c2ln+"), JwtFailure::SignatureBadBase64 ; "parsing before issuer")]
fn row1_checks_run_in_jwt_verify_lib_order(token: &str, expected: JwtFailure) {
    assert_eq!(rejected(raw(token)).reason, expected);
}

#[test]
fn row1_padding_and_fractional_times_are_accepted() {
    // absl accepts padded base64url; the signature covers the sections as sent.
    let header = format!("{}=", b64(br#"{"alg":"RS256","kid":"rsa-1"}"#));
    let claims = claims(&json!({"exp": (NOW + 10) as f64 + 0.75, "nbf": 1.5}));
    let payload = b64(claims.to_string().as_bytes());
    let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
    assert!(header.ends_with('=') || padded.ends_with('='));
    let token = sign_sections(TestKey::Rsa, Algorithm::RS256, &header, &padded);
    verified(raw(&token));
}

#[test]
fn row2_issuer_must_match() {
    let authn = authenticator(&[test_rule()]);
    let other = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&json!({"iss": "https://issuer.test/"})),
    );
    assert_eq!(
        rejection_message(&authn, &other),
        "Jwt issuer is not configured"
    );
    // A token without `iss` has the empty issuer.
    let mut no_iss = claims(&json!({}));
    no_iss.as_object_mut().unwrap().remove("iss");
    let no_iss = sign(TestKey::Rsa, Algorithm::RS256, Some("rsa-1"), &no_iss);
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&no_iss))).reason,
        JwtFailure::UnknownIssuer
    );
}

#[test]
fn row2_an_empty_issuer_accepts_any() {
    let mut rule = test_rule();
    rule.issuer = String::new();
    let authn = authenticator(&[rule]);
    let token = rsa_token(&json!({"iss": "anyone"}));
    assert_eq!(verified(get(&authn, "/", &bearer(&token))).issuer, "anyone");
}

#[test]
fn row2_issuer_is_checked_before_time() {
    let authn = authenticator(&[test_rule()]);
    let token = rsa_token(&json!({"iss": "someone-else", "exp": NOW - 3600}));
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::UnknownIssuer
    );
}

#[test_case(json!({"nbf": NOW + 60}), None ; "nbf within the skew")]
#[test_case(json!({"nbf": NOW + 61}), Some(JwtFailure::NotYetValid) ; "nbf past the skew")]
#[test_case(json!({"exp": NOW - 60}), None ; "exp within the skew")]
#[test_case(json!({"exp": NOW - 61}), Some(JwtFailure::Expired) ; "exp past the skew")]
#[test_case(json!({"exp": 0}), None ; "exp zero never expires")]
#[test_case(json!({"exp": 0.9}), None ; "exp truncated to zero never expires")]
#[test_case(json!({"iat": NOW + 100_000}), None ; "iat is not checked")]
#[test_case(json!({"nbf": NOW + 61, "exp": NOW - 61}), Some(JwtFailure::NotYetValid) ; "nbf before exp")]
fn row3_time_window_with_60s_skew(extra: serde_json::Value, expected: Option<JwtFailure>) {
    let authn = authenticator(&[test_rule()]);
    let outcome = get(&authn, "/", &bearer(&rsa_token(&extra)));
    match expected {
        None => {
            verified(outcome);
        }
        Some(failure) => assert_eq!(rejected(outcome).reason, failure),
    }
}

#[test]
fn row3_missing_exp_never_expires() {
    let authn = authenticator(&[test_rule()]);
    let mut no_exp = claims(&json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = sign(TestKey::Rsa, Algorithm::RS256, Some("rsa-1"), &no_exp);
    verified(request(&authn, "GET", "/", &bearer(&token), i64::MAX / 2));
}

#[test]
fn row3_time_is_checked_before_audiences() {
    let mut rule = test_rule();
    rule.audiences = vec!["api".to_owned()];
    let authn = authenticator(&[rule]);
    let token = rsa_token(&json!({"aud": "other", "exp": NOW - 3600}));
    let rejection = rejected(get(&authn, "/", &bearer(&token)));
    assert_eq!(
        (rejection.status, rejection.message),
        (401, "Jwt is expired")
    );
}

#[test_case(&["api"], json!("api"), true ; "exact")]
#[test_case(&["api"], json!(["x", "api"]), true ; "any element of a list")]
#[test_case(&["http://api/"], json!("https://api"), true ; "scheme and slash stripped on both sides")]
#[test_case(&["api"], json!("api/"), true ; "one trailing slash stripped from the token")]
#[test_case(&["api"], json!("api//"), false ; "only one trailing slash stripped")]
#[test_case(&["api"], json!("API"), false ; "case sensitive")]
#[test_case(&["api"], json!("ftp://api"), false ; "only http and https schemes stripped")]
#[test_case(&["api"], json!([]), false ; "empty list")]
#[test_case(&[], json!("anything"), true ; "no audiences configured means no check")]
fn row4_audiences(configured: &[&str], aud: serde_json::Value, allowed: bool) {
    let mut rule = test_rule();
    rule.audiences = configured.iter().map(|a| (*a).to_owned()).collect();
    let authn = authenticator(&[rule]);
    let outcome = get(&authn, "/", &bearer(&rsa_token(&json!({ "aud": aud }))));
    if allowed {
        verified(outcome);
    } else {
        let rejection = rejected(outcome);
        assert_eq!(
            (rejection.status, rejection.message),
            (403, "Audiences in Jwt are not allowed")
        );
    }
}

#[test]
fn row4_token_without_aud_fails_configured_audiences() {
    let mut rule = test_rule();
    rule.audiences = vec!["api".to_owned()];
    let authn = authenticator(&[rule]);
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&rsa_token(&json!({}))))).status,
        403
    );
}

#[test]
fn row4_audiences_are_checked_before_keys() {
    let mut rule = test_rule();
    rule.audiences = vec!["api".to_owned()];
    let authn = authenticator(&[rule]);
    let token = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("unknown-kid"),
        &claims(&json!({"aud": "x"})),
    );
    assert_eq!(rejected(get(&authn, "/", &bearer(&token))).status, 403);
}

#[test]
fn row5_unknown_kid_has_no_matching_key() {
    let authn = authenticator(&[test_rule()]);
    let token = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("rsa-2"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejection_message(&authn, &token),
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
}

#[test]
fn row5_key_alg_must_equal_token_alg() {
    let keys = jwks(&[TestKey::Rsa.jwk("rsa-1", Some("RS256"))]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    let rs384 = sign(
        TestKey::Rsa,
        Algorithm::RS384,
        Some("rsa-1"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&rs384))).reason,
        JwtFailure::JwksKidAlgMismatch
    );
    let rs256 = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&json!({})),
    );
    verified(get(&authn, "/", &bearer(&rs256)));
}

#[test]
fn row5_token_without_kid_tries_every_key() {
    let authn = authenticator(&[test_rule()]);
    for (key, alg) in [
        (TestKey::Rsa, Algorithm::RS256),
        (TestKey::EcP256, Algorithm::ES256),
        (TestKey::Ed25519, Algorithm::EdDSA),
    ] {
        let token = sign(key, alg, None, &claims(&json!({})));
        verified(get(&authn, "/", &bearer(&token)));
    }
}

#[test]
fn row5_key_without_kid_matches_any_kid() {
    let mut jwk = TestKey::Rsa.jwk("ignored", None);
    jwk.as_object_mut().unwrap().remove("kid");
    let authn = authenticator(&[rule_with(TEST_ISSUER, &jwks(&[jwk]))]);
    let token = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("whatever"),
        &claims(&json!({})),
    );
    verified(get(&authn, "/", &bearer(&token)));
}

#[test]
fn row5_tampered_payload_fails_verification() {
    let authn = authenticator(&[test_rule()]);
    let token = rsa_token(&json!({"role": "user"}));
    let mut sections: Vec<String> = token.split('.').map(str::to_owned).collect();
    sections[1] = b64(claims(&json!({"role": "admin"})).to_string().as_bytes());
    let tampered = sections.join(".");
    let rejection = rejected(get(&authn, "/", &bearer(&tampered)));
    assert_eq!(
        (rejection.status, rejection.message),
        (401, "Jwt verification fails")
    );
}

#[test]
fn row5_corpus_kid_signed_by_another_key_fails_verification() {
    let authn = authenticator(&[corpus_rule(TEST_ISSUER)]);
    let token = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("meshward-rsa-1"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::VerificationFail
    );
}

#[test]
fn row5_a_provider_without_keys_fails_closed() {
    let authn = authenticator(&[rule_with(TEST_ISSUER, r#"{"keys":[]}"#)]);
    let token = rsa_token(&json!({}));
    assert_eq!(
        rejection_message(&authn, &token),
        "Jwks doesn't have any valid public key"
    );
    // Tokenless requests still pass (authentication.md §5.6, test `invalid-jwks`).
    assert!(no_token(get(&authn, "/", &[])).is_empty());
}
