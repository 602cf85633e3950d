//! The checks after parsing: time window, audiences, key selection and signature
//! (jwt_verify_lib `verify.cc`, `check_audience.cc`).

use std::collections::BTreeSet;

use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwks::{Curve, Jwk, KeyMaterial, strip_leading_zeros};
use super::token::{Jwt, JwtFailure};

/// authentication.md §5.4: "Clock skew: 60 s (Envoy default; Istio does not set
/// `clock_skew_seconds`)."
const CLOCK_SKEW_SECONDS: u64 = 60;

pub(crate) fn check_time(jwt: &Jwt, now: u64) -> Result<(), JwtFailure> {
    // authentication.md §5.4 #3: "`nbf`: reject if `now + 60 < nbf`".
    if now.wrapping_add(CLOCK_SKEW_SECONDS) < jwt.nbf {
        return Err(JwtFailure::NotYetValid);
    }
    // authentication.md §5.4 #3: "`exp`: reject if `exp != 0 && now > exp + 60` (no `exp` ⇒ never
    // expires; `iat` not checked)".
    if jwt.exp != 0 && now > jwt.exp.wrapping_add(CLOCK_SKEW_SECONDS) {
        return Err(JwtFailure::Expired);
    }
    Ok(())
}

/// jwt_verify_lib `sanitizeAudience`. authentication.md §5.1 `audiences`: "comparison strips a
/// leading `http://`/`https://` and one trailing `/` on both sides".
pub(crate) fn sanitize_audience(audience: &str) -> String {
    let without_scheme = audience
        .strip_prefix("http://")
        .or_else(|| audience.strip_prefix("https://"))
        .unwrap_or(audience);
    // The trailing `/` is looked for in the original string, so `http://` itself becomes empty.
    if audience.ends_with('/') {
        without_scheme
            .strip_suffix('/')
            .unwrap_or_default()
            .to_owned()
    } else {
        without_scheme.to_owned()
    }
}

/// `configured` holds sanitized audiences.
pub(crate) fn audiences_allowed(configured: &BTreeSet<String>, jwt: &Jwt) -> bool {
    // authentication.md §5.1 `audiences`: "empty ⇒ **no `aud` check**. Else token must contain ≥1
    // listed audience".
    configured.is_empty()
        || jwt
            .audiences
            .iter()
            .any(|aud| configured.contains(&sanitize_audience(aud)))
}

/// jwt_verify_lib `verifyJwtWithoutTimeChecking`.
pub(crate) fn verify_signature(jwt: &Jwt, keys: &[Jwk]) -> Result<(), JwtFailure> {
    let mut kid_alg_matched = false;
    for key in keys {
        // authentication.md §5.4 #5: "keys whose `kid` equals token `kid` (a key without `kid`, or
        // a token without `kid`, matches any), and whose `alg` (if set) equals token `alg`".
        if !jwt.kid.is_empty() && !key.kid.is_empty() && key.kid != jwt.kid {
            continue;
        }
        if !key.alg.is_empty() && key.alg != jwt.alg {
            continue;
        }
        kid_alg_matched = true;
        // authentication.md §5.4 #5: "signature with each candidate (RSA key: `RS*` PKCS#1 v1.5,
        // `PS*` PSS; EC key: ES*; `oct`: HS*; OKP Ed25519: EdDSA)". As in jwt_verify_lib the key
        // type picks the scheme and the token's `alg` only picks the digest.
        let verified = match &key.material {
            KeyMaterial::Rsa(decoding) => {
                rsa_algorithm(&jwt.alg).is_some_and(|alg| check(alg, decoding, jwt, &jwt.signature))
            }
            KeyMaterial::Ec { curve, key } => key
                .as_ref()
                .is_some_and(|decoding| ecdsa_verify(*curve, decoding, &jwt.alg, jwt)),
            KeyMaterial::Oct(decoding) => {
                let alg = match jwt.alg.as_str() {
                    "HS384" => Algorithm::HS384,
                    "HS512" => Algorithm::HS512,
                    _ => Algorithm::HS256,
                };
                check(alg, decoding, jwt, &jwt.signature)
            }
            KeyMaterial::Ed25519(decoding) => {
                // jwt_verify_lib stops at the first Ed25519 key when the length is wrong instead
                // of trying the remaining keys.
                if jwt.signature.len() != 64 {
                    return Err(JwtFailure::Ed25519SignatureWrongLength);
                }
                check(Algorithm::EdDSA, decoding, jwt, &jwt.signature)
            }
        };
        if verified {
            return Ok(());
        }
    }
    // authentication.md §5.4 #5: "none matched ⇒ `Jwks doesn't have key to match kid or alg from
    // Jwt`", otherwise "`Jwt verification fails`".
    Err(if kid_alg_matched {
        JwtFailure::VerificationFail
    } else {
        JwtFailure::JwksKidAlgMismatch
    })
}

fn rsa_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "PS256" => Algorithm::PS256,
        // jwt_verify_lib defaults the digest to SHA-256 for any other `RS…`; the parser only lets
        // `RS256` through.
        _ if alg.starts_with("RS") => Algorithm::RS256,
        // An `ES…`, `HS…` or `EdDSA` token against an RSA key without `alg` is never verified.
        _ => return None,
    })
}

/// jwt_verify_lib reads an ECDSA signature as `r || s` split at half its length (any length) and
/// hashes with SHA-384 for `ES384`, SHA-512 for `ES512`, SHA-256 for anything else. The signature
/// library only has the fixed-size P-256/SHA-256 and P-384/SHA-384 pairs, so the halves are
/// re-padded to that size and the other pairs, which no standard token uses, fail.
fn ecdsa_verify(curve: Curve, decoding: &DecodingKey, alg: &str, jwt: &Jwt) -> bool {
    let sha384 = alg == "ES384";
    let sha256 = !sha384 && alg != "ES512";
    let (algorithm, len) = match curve {
        Curve::P256 if sha256 => (Algorithm::ES256, 32),
        Curve::P384 if sha384 => (Algorithm::ES384, 48),
        _ => return false,
    };
    let half = jwt.signature.len() / 2;
    let (Some(r), Some(s)) = (jwt.signature.get(..half), jwt.signature.get(half..2 * half)) else {
        return false;
    };
    let (r, s) = (strip_leading_zeros(r), strip_leading_zeros(s));
    if r.len() > len || s.len() > len {
        return false;
    }
    let mut fixed = vec![0; 2 * len];
    let (r_out, s_out) = fixed.split_at_mut(len);
    if let (Some(r_dst), Some(s_dst)) = (
        r_out.get_mut(len - r.len()..),
        s_out.get_mut(len - s.len()..),
    ) {
        r_dst.copy_from_slice(r);
        s_dst.copy_from_slice(s);
    }
    check(algorithm, decoding, jwt, &fixed)
}

/// Uses the aws-lc provider directly rather than the process-wide default, which panics when
/// feature unification enables both of jsonwebtoken's crypto backends.
fn check(algorithm: Algorithm, key: &DecodingKey, jwt: &Jwt, signature: &[u8]) -> bool {
    (DEFAULT_PROVIDER.verifier_factory)(&algorithm, key).is_ok_and(|verifier| {
        verifier
            .verify(jwt.signed.as_bytes(), &signature.to_vec())
            .is_ok()
    })
}
