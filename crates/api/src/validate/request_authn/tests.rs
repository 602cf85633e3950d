//! RequestAuthentication rules (authentication.md §5.1).

use test_case::test_case;

use crate::validate::common::testutil::{assert_clean, assert_error, assert_warning, diagnostics};

const HEAD: &str = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: foo
spec:
  jwtRules:";

/// A policy with one JWT rule whose fields are `fields` (each line indented by 4 spaces).
fn policy(fields: &str) -> String {
    format!("{HEAD}\n  - {fields}")
}

const RSA_KEY: &str = r#"{"kty":"RSA","kid":"k1","alg":"RS256","n":"rrhtNKyObYkzGiQV5I9Q3Dl7hK6_wopUTL_OT5CpFuPT","e":"AQAB"}"#;
const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","x":"kslppEVE383i4cAlOJD_U2iZNkrE5tpHfOiBD8rRl04","y":"khw5LLQisGWoXnN-_dEsQwArS9T2IxoABkdW45MT1j8"}"#;

#[test_case("audiences: [a] # <-", "issuer or jwksUri must be non-empty string"; "no issuer nor jwks uri")]
#[test_case("issuer: \"\" # <-", "issuer must be non-empty string"; "empty issuer")]
#[test_case("issuer: i\n    audiences:\n    - \"\" # <-", "audience must be non-empty string"; "empty audience")]
#[test_case(
    "issuer: i\n    jwksUri: https://example.com/jwks\n    jwks: '{\"keys\":[]}' # <-",
    "only one of jwks or jwksUri can be set";
    "jwks and jwks uri"
)]
#[test_case("issuer: i\n    jwksUri: \"\" # <-", "jwksUri must be non-empty string"; "empty jwks uri")]
#[test_case("issuer: i\n    jwksUri: ftp://example.com/jwks # <-", "url must have scheme http:// or https://"; "ftp")]
#[test_case("issuer: i\n    jwksUri: example.com/jwks # <-", "url must have scheme http:// or https://"; "no scheme")]
#[test_case("issuer: i\n    jwksUri: \"https:jwks\" # <-", "expected `http://host/path`"; "opaque url")]
#[test_case("issuer: i\n    jwksUri: https://example.com:port/jwks # <-", "invalid port `port`"; "bad port")]
#[test_case("issuer: i\n    jwksUri: https://exa mple.com/ # <-", "contains a space"; "space")]
#[test_case("issuer: i\n    jwks: not json # <-", "jwks parse error: invalid JSON"; "jwks not json")]
#[test_case("issuer: i\n    jwks: '[]' # <-", "jwks parse error: expected a JSON object"; "jwks array")]
#[test_case("issuer: i\n    jwks: '{\"keys\":{}}' # <-", "`keys` must be an array"; "keys not array")]
#[test_case("issuer: i\n    jwks: '{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}' # <-", "requires a string `n`"; "rsa without modulus")]
#[test_case("issuer: i\n    jwks: '{\"keys\":[{\"kty\":\"XYZ\"}]}' # <-", "unsupported key type `XYZ`"; "unknown key type")]
#[test_case("issuer: i\n    jwks: '{\"keys\":[{\"n\":\"x\"}]}' # <-", "missing `kty`"; "no key type")]
#[test_case(
    "issuer: i\n    jwks: '{\"kty\":\"EC\",\"crv\":\"P-999\",\"x\":\"AQAB\",\"y\":\"AQAB\"}' # <-",
    "unsupported curve `P-999`";
    "unknown curve"
)]
#[test_case("issuer: i\n    fromHeaders:\n    - prefix: \"Bearer \" # <-", "location header name must be non-empty string"; "header without name")]
#[test_case("issuer: i\n    fromParams:\n    - \"\" # <-", "location query must be non-empty string"; "empty param")]
#[test_case("issuer: i\n    fromCookies:\n    - \"\" # <-", "cookie name must be non-empty string"; "empty cookie")]
#[test_case(
    "issuer: i\n    outputClaimToHeaders:\n    - header: x-sub\n      claim: \"\" # <-",
    "outputClaimToHeaders header and claim value must be non-empty string";
    "empty claim"
)]
#[test_case(
    "issuer: i\n    outputClaimToHeaders:\n    - claim: sub # <-",
    "outputClaimToHeaders header and claim value must be non-empty string";
    "missing header"
)]
#[test_case(
    "issuer: i\n    outputClaimToHeaders:\n    - header: x.sub # <-\n      claim: sub",
    "header name `x.sub` is not a valid header name";
    "bad header name"
)]
#[test_case("issuer: i\n    timeout: 5m # <-", "invalid duration `5m`"; "minutes")]
#[test_case("issuer: i\n    timeout: 0s # <-", "duration must be greater than 1ms"; "zero timeout")]
#[test_case("issuer: i\n    timeout: 0.0015s # <-", "only durations to ms precision are supported"; "sub millisecond")]
#[test_case("issuer: i\n    spaceDelimitedClaims:\n    - \"\" # <-", "spaceDelimitedClaims entries must be non-empty"; "empty claim name")]
fn refused(fields: &str, needle: &str) {
    assert_error(&policy(fields), needle);
}

#[test]
fn null_rule_refused() {
    assert_error(
        &format!("{HEAD}\n  - ~ # <-"),
        "`jwtRules` entries must not be null",
    );
}

#[test]
fn too_many_space_delimited_claims_refused() {
    let claims: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let yaml = policy(&format!(
        "issuer: i\n    spaceDelimitedClaims: [{}] # <-",
        claims.join(", ")
    ));
    assert_error(&yaml, "must have at most 64");
}

#[test_case(r#"{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}"#; "rsa private")]
#[test_case(r#"{"kty":"EC","crv":"P-256","x":"AQAB","y":"AQAB","d":"AQAB"}"#; "ec private")]
#[test_case(r#"{"kty":"OKP","crv":"Ed25519","x":"AQAB","d":"AQAB"}"#; "okp private")]
#[test_case(r#"{"kty":"oct","k":"c2VjcmV0"}"#; "symmetric")]
fn private_key_material_warns(key: &str) {
    let yaml = policy(&format!(
        "issuer: i\n    jwks: '{{\"keys\":[{RSA_KEY},{key}]}}' # <-"
    ));
    assert_warning(&yaml, "jwks key at index 1 contains private key material");
}

#[test]
fn single_key_jwks_accepted() {
    assert_clean(&policy(&format!("issuer: i\n    jwks: '{EC_KEY}'")));
}

#[test]
fn complete_rule_accepted() {
    let yaml = format!(
        "{HEAD}
  - issuer: https://accounts.example.com
    audiences: [app, https://app.example.com/]
    jwks: '{{\"keys\":[{RSA_KEY},{EC_KEY}]}}'
    fromHeaders:
    - {{name: Authorization, prefix: \"Bearer \"}}
    - name: x-jwt
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders:
    - {{header: x-sub, claim: sub}}
    - {{header: X_Group-1, claim: nested.group}}
    timeout: 1.5s
    spaceDelimitedClaims: [roles]
  - jwksUri: http://keys.example.com:8080/jwks.json
  - issuer: other
    jwksUri: https://[2001:db8::1]:443/jwks
"
    );
    assert_clean(&yaml);
}

#[test]
fn selector_and_target_refs_exclusive() {
    let yaml = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: x}}
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw} # <-
";
    assert_error(yaml, "only one of targetRefs or selector can be set");
}

#[test]
fn target_ref_kind_checked() {
    let yaml = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  targetRefs:
  - kind: Pod # <-
    name: x
";
    assert_error(yaml, "targetRef must be to one of");
}

#[test]
fn jwks_error_is_alone_with_jwks_uri() {
    // jwt-D-22: the exclusivity error is the only one, even though both sources are valid.
    let yaml = policy(&format!(
        "issuer: i\n    jwksUri: https://example.com/jwks\n    jwks: '{{\"keys\":[{RSA_KEY}]}}'"
    ));
    let messages: Vec<String> = diagnostics(&yaml).into_iter().map(|d| d.message).collect();
    assert_eq!(messages, ["only one of jwks or jwksUri can be set"]);
}
