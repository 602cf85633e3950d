//! JWKS handling (authentication.md §5.6) and signature schemes (§5.4 row 5).

use jsonwebtoken::Algorithm;
use serde_json::json;
use test_case::test_case;

use super::super::{JwkError, JwksError, JwtFailure, JwtProvider, JwtRuleConfig, SkippedKey};
use super::fixtures::*;

#[test_case(TestKey::Rsa, Algorithm::RS256 ; "RS256")]
#[test_case(TestKey::Rsa, Algorithm::RS384 ; "RS384")]
#[test_case(TestKey::Rsa, Algorithm::RS512 ; "RS512")]
#[test_case(TestKey::Rsa, Algorithm::PS256 ; "PS256")]
#[test_case(TestKey::Rsa, Algorithm::PS384 ; "PS384")]
#[test_case(TestKey::Rsa, Algorithm::PS512 ; "PS512")]
#[test_case(TestKey::EcP256, Algorithm::ES256 ; "ES256")]
#[test_case(TestKey::EcP384, Algorithm::ES384 ; "ES384")]
#[test_case(TestKey::Ed25519, Algorithm::EdDSA ; "EdDSA")]
#[test_case(TestKey::Hmac, Algorithm::HS256 ; "HS256")]
#[test_case(TestKey::Hmac, Algorithm::HS384 ; "HS384")]
#[test_case(TestKey::Hmac, Algorithm::HS512 ; "HS512")]
fn every_supported_algorithm_verifies(key: TestKey, alg: Algorithm) {
    let authn = authenticator(&[test_rule()]);
    let token = sign(key, alg, Some(key.kid()), &claims(&json!({})));
    verified(get(&authn, "/", &bearer(&token)));
    // The same token with one signature byte flipped fails.
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut raw = base64_decode(signature);
    raw[0] ^= 1;
    let forged = format!("{message}.{}", b64(&raw));
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&forged))).reason,
        JwtFailure::VerificationFail
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[test]
fn ecdsa_digest_follows_alg_and_must_fit_the_curve() {
    let authn = authenticator(&[test_rule()]);
    // An ES384 signature made with the P-256 key: jwt_verify_lib hashes with SHA-384, which the
    // P-256 verifier cannot do, so the key fails to verify.
    let token = sign(
        TestKey::EcP384,
        Algorithm::ES384,
        Some("ec256-1"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::VerificationFail
    );
}

#[test]
fn the_key_type_picks_the_scheme_and_alg_only_the_digest() {
    // jwt_verify_lib verifies with the matched key's type: an `oct` key without `alg` checks an
    // HMAC-SHA256 even when the token says RS256.
    let keys = jwks(&[TestKey::Hmac.jwk("k", None)]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    let header = r#"{"alg":"RS256","kid":"k"}"#;
    let token = sign_raw(
        TestKey::Hmac,
        Algorithm::HS256,
        header,
        &claims(&json!({})).to_string(),
    );
    verified(get(&authn, "/", &bearer(&token)));
    // An `alg` on the key restores the check.
    let keys = jwks(&[TestKey::Hmac.jwk("k", Some("HS256"))]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::JwksKidAlgMismatch
    );
}

#[test]
fn an_rsa_key_never_verifies_a_non_rsa_alg() {
    let keys = jwks(&[TestKey::Rsa.jwk("k", None)]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    let token = sign(
        TestKey::Hmac,
        Algorithm::HS256,
        Some("k"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::VerificationFail
    );
}

#[test]
fn a_wrong_length_ed25519_signature_stops_the_key_search() {
    // The Ed25519 key (no kid, no alg) matches first; an RS256 signature is 256 bytes long.
    let mut ed = TestKey::Ed25519.jwk("x", None);
    ed.as_object_mut().unwrap().remove("kid");
    let keys = jwks(&[ed, TestKey::Rsa.jwk("rsa-1", None)]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    let token = sign(TestKey::Rsa, Algorithm::RS256, None, &claims(&json!({})));
    assert_eq!(
        rejection_message(&authn, &token),
        "Jwt ED25519 signature is wrong length"
    );
    // With the RSA key first, it verifies before the Ed25519 key is reached.
    let mut ed = TestKey::Ed25519.jwk("x", None);
    ed.as_object_mut().unwrap().remove("kid");
    let keys = jwks(&[TestKey::Rsa.jwk("rsa-1", None), ed]);
    let authn = authenticator(&[rule_with(TEST_ISSUER, &keys)]);
    verified(get(&authn, "/", &bearer(&token)));
}

#[test]
fn p521_keys_match_but_cannot_verify() {
    let p521 = json!({
        "kty": "EC", "kid": "p521", "crv": "P-521",
        "x": b64(&[7; 66]), "y": b64(&[9; 66]),
    });
    let provider = JwtProvider::compile(&rule_with(TEST_ISSUER, &jwks(&[p521]))).unwrap();
    assert!(provider.skipped_keys().is_empty());
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    let token = unsigned(
        r#"{"alg":"ES512","kid":"p521"}"#,
        &claims(&json!({})).to_string(),
        &b64(&[1; 132]),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&token))).reason,
        JwtFailure::VerificationFail
    );
}

#[test]
fn ec_key_defaults_to_p256_and_ignores_leading_zero_bytes() {
    let mut jwk = TestKey::EcP256.jwk("ec", None);
    let object = jwk.as_object_mut().unwrap();
    object.remove("crv");
    let x = base64_decode(object["x"].as_str().unwrap());
    object.insert("x".to_owned(), json!(b64(&[&[0, 0][..], &x].concat())));
    let authn = authenticator(&[rule_with(TEST_ISSUER, &jwks(&[jwk]))]);
    let token = sign(
        TestKey::EcP256,
        Algorithm::ES256,
        Some("ec"),
        &claims(&json!({})),
    );
    verified(get(&authn, "/", &bearer(&token)));
}

#[test_case("not json", "jwks is not a JSON object" ; "not json")]
#[test_case("[]", "jwks is not a JSON object" ; "an array")]
#[test_case(r#"{"kty":"RSA"}"#, "jwks has no `keys` field" ; "a single key")]
#[test_case(r#"{"keys":{}}"#, "`keys` in the jwks is not an array" ; "keys an object")]
fn unusable_inline_jwks_is_a_compile_error(document: &str, message: &str) {
    let error = JwtProvider::compile(&rule_with(TEST_ISSUER, document)).unwrap_err();
    assert!(error.to_string().starts_with(message), "{error}");
}

#[test]
fn compile_error_is_typed() {
    let error = JwtProvider::compile(&rule_with(TEST_ISSUER, "{")).unwrap_err();
    assert!(matches!(error, JwksError::InvalidJson { .. }));
}

#[test]
fn bad_entries_are_skipped_and_reported() {
    let good = TestKey::Rsa.jwk("rsa-1", None);
    let mut rsa_es = good.clone();
    rsa_es["alg"] = json!("ES256");
    let mut rsa_e5 = good.clone();
    rsa_e5["e"] = json!("BQ");
    let mut rsa_even = good.clone();
    let mut n = base64_decode(good["n"].as_str().unwrap());
    *n.last_mut().unwrap() &= 0xfe;
    rsa_even["n"] = json!(b64(&n));
    let mut rsa_no_n = good.clone();
    rsa_no_n.as_object_mut().unwrap().remove("n");
    let mut ec_mismatch = TestKey::EcP256.jwk("ec", Some("ES256"));
    ec_mismatch["crv"] = json!("P-384");
    let mut ec_curve = TestKey::EcP256.jwk("ec", None);
    ec_curve["crv"] = json!("secp256k1");
    let mut ec_x = TestKey::EcP256.jwk("ec", None);
    ec_x["x"] = json!("not+base64");
    let mut okp_x25519 = TestKey::Ed25519.jwk("ed", None);
    okp_x25519["crv"] = json!("X25519");
    let mut okp_short = TestKey::Ed25519.jwk("ed", None);
    okp_short["x"] = json!(b64(&[1; 31]));
    let document = jwks(&[
        json!(5),
        json!({"kid": "x"}),
        json!({"kty": 1}),
        json!({"kty": "DSA"}),
        rsa_es,
        rsa_e5,
        rsa_even,
        rsa_no_n,
        ec_mismatch,
        ec_curve,
        ec_x,
        json!({"kty": "oct", "k": ""}),
        okp_x25519,
        okp_short,
        good,
    ]);
    let provider = JwtProvider::compile(&rule_with(TEST_ISSUER, &document)).unwrap();
    let skipped = |index, problem| SkippedKey { index, problem };
    assert_eq!(
        provider.skipped_keys(),
        [
            skipped(1, JwkError::MissingKty),
            skipped(2, JwkError::KtyNotString),
            skipped(
                3,
                JwkError::UnsupportedKty {
                    kty: "DSA".to_owned()
                }
            ),
            skipped(
                4,
                JwkError::AlgNotForKty {
                    kty: "RSA",
                    alg: "ES256".to_owned()
                }
            ),
            skipped(5, JwkError::InvalidRsaKey),
            skipped(6, JwkError::InvalidRsaKey),
            skipped(7, JwkError::MissingField { field: "n" }),
            skipped(
                8,
                JwkError::CurveAlgMismatch {
                    crv: "P-384".to_owned(),
                    alg: "ES256".to_owned()
                }
            ),
            skipped(
                9,
                JwkError::UnsupportedCurve {
                    crv: "secp256k1".to_owned()
                }
            ),
            skipped(10, JwkError::BadBase64 { field: "x" }),
            skipped(11, JwkError::EmptyOctKey),
            skipped(
                12,
                JwkError::UnsupportedCurve {
                    crv: "X25519".to_owned()
                }
            ),
            skipped(13, JwkError::WrongKeyLength),
        ]
    );
    assert!(provider.has_keys());
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    verified(get(&authn, "/", &bearer(&rsa_token(&json!({})))));
}

#[test]
fn rsa_exponent_3_is_accepted() {
    let mut jwk = TestKey::Rsa.jwk("rsa-1", None);
    jwk["e"] = json!("Aw");
    let provider = JwtProvider::compile(&rule_with(TEST_ISSUER, &jwks(&[jwk]))).unwrap();
    assert!(provider.skipped_keys().is_empty());
    // It is a different key, so the signature does not verify.
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&rsa_token(&json!({}))))).reason,
        JwtFailure::VerificationFail
    );
}

fn uri_rule(uri: Option<&str>) -> JwtRuleConfig {
    JwtRuleConfig {
        issuer: TEST_ISSUER.to_owned(),
        jwks_uri: uri.map(str::to_owned),
        ..JwtRuleConfig::default()
    }
}

#[test]
fn unfetched_jwks_uri_fails_closed_like_istiods_placeholder_key() {
    let provider = JwtProvider::compile(&uri_rule(Some("https://idp.test/keys"))).unwrap();
    assert!(provider.awaiting_keys() && !provider.has_keys());
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    // The placeholder key has kid `abc` and no alg.
    let other_kid = rsa_token(&json!({}));
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&other_kid))).reason,
        JwtFailure::JwksKidAlgMismatch
    );
    let no_kid = sign(TestKey::Rsa, Algorithm::RS256, None, &claims(&json!({})));
    assert_eq!(rejection_message(&authn, &no_kid), "Jwt verification fails");
    let abc = sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("abc"),
        &claims(&json!({})),
    );
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&abc))).reason,
        JwtFailure::VerificationFail
    );
    // Tokenless requests still pass.
    assert!(no_token(get(&authn, "/", &[])).is_empty());
}

#[test]
fn placeholder_key_of_a_uri_ending_in_an_even_byte_is_refused_by_boringssl() {
    // `n` ends with the URI's last byte; `n` = 0x6e is even, so the key is invalid and Envoy has
    // no key at all.
    let provider = JwtProvider::compile(&uri_rule(Some("https://idp.test/jwks.json"))).unwrap();
    assert_eq!(provider.skipped_keys().len(), 1);
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    let no_kid = sign(TestKey::Rsa, Algorithm::RS256, None, &claims(&json!({})));
    assert_eq!(
        rejection_message(&authn, &no_kid),
        "Jwks doesn't have any valid public key"
    );
}

#[test]
fn issuer_only_rule_uses_the_placeholder_too() {
    let authn =
        super::super::JwtAuthenticator::new(vec![JwtProvider::compile(&uri_rule(None)).unwrap()]);
    let no_kid = sign(TestKey::Rsa, Algorithm::RS256, None, &claims(&json!({})));
    assert_eq!(
        rejected(get(&authn, "/", &bearer(&no_kid))).reason,
        JwtFailure::VerificationFail
    );
}

#[test]
fn fetched_keys_replace_the_placeholder() {
    let provider = JwtProvider::compile(&uri_rule(Some("https://idp.test/keys")))
        .unwrap()
        .with_keys(&test_jwks());
    assert!(!provider.awaiting_keys() && provider.has_keys() && provider.jwks_error().is_none());
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    verified(get(&authn, "/", &bearer(&rsa_token(&json!({})))));
}

#[test]
fn a_fetched_body_that_is_not_a_jwks_leaves_no_key() {
    let provider = JwtProvider::compile(&uri_rule(Some("https://idp.test/keys")))
        .unwrap()
        .with_keys("<html>oops</html>");
    assert!(matches!(
        provider.jwks_error(),
        Some(JwksError::InvalidJson { .. })
    ));
    assert!(!provider.has_keys());
    let authn = super::super::JwtAuthenticator::new(vec![provider]);
    assert_eq!(
        rejection_message(&authn, &rsa_token(&json!({}))),
        "Jwks doesn't have any valid public key"
    );
}
