//! JWKS parsing with jwt_verify_lib's rules: which keys are accepted, which are skipped, and when a
//! whole set is unusable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::token::decode_base64url;

/// A JWKS document that yields no key set at all.
///
/// Istio's admission webhook parses `jwks` and refuses the resource in these cases, so
/// [`JwtProvider::compile`](super::JwtProvider::compile) reports them instead of compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document is not JSON, or not a JSON object.
    #[error("jwks is not a JSON object: {reason}")]
    InvalidJson {
        /// What the JSON parser objected to.
        reason: String,
    },
    /// The object has no `keys` member.
    #[error("jwks has no `keys` field")]
    MissingKeys,
    /// `keys` is not an array.
    #[error("`keys` in the jwks is not an array")]
    KeysNotArray,
}

/// Why one entry of a JWKS was ignored. Envoy skips such entries and keeps the others, so these
/// are diagnostics, not compile errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The entry has no `kty`.
    #[error("`kty` is missing")]
    MissingKty,
    /// `kty` is not a string.
    #[error("`kty` is not a string")]
    KtyNotString,
    /// `kty` is not `RSA`, `EC`, `oct` or `OKP`.
    #[error("`kty` `{kty}` is not supported")]
    UnsupportedKty {
        /// The entry's `kty`.
        kty: String,
    },
    /// `alg` names an algorithm of another key type.
    #[error("`alg` `{alg}` does not fit a `{kty}` key")]
    AlgNotForKty {
        /// The entry's `kty`.
        kty: &'static str,
        /// The entry's `alg`.
        alg: String,
    },
    /// A member the key type needs is absent.
    #[error("`{field}` is missing")]
    MissingField {
        /// The member name.
        field: &'static str,
    },
    /// A member the key type needs is not a string.
    #[error("`{field}` is not a string")]
    FieldNotString {
        /// The member name.
        field: &'static str,
    },
    /// A key member is not base64url.
    #[error("`{field}` is not base64url")]
    BadBase64 {
        /// The member name.
        field: &'static str,
    },
    /// `crv` is not a curve Envoy implements for this key type.
    #[error("curve `{crv}` is not supported")]
    UnsupportedCurve {
        /// The entry's `crv` (or `alg` when `crv` is absent).
        crv: String,
    },
    /// `crv` and `alg` name different curves.
    #[error("curve `{crv}` does not match `alg` `{alg}`")]
    CurveAlgMismatch {
        /// The entry's `crv`.
        crv: String,
        /// The entry's `alg`.
        alg: String,
    },
    /// The RSA public key fails BoringSSL's checks.
    #[error("RSA key is invalid: `e` must be 3 or 65537 and `n` odd, 34 to 16384 bits long")]
    InvalidRsaKey,
    /// An EC coordinate is longer than the curve's field.
    #[error("EC coordinates are too large for the curve")]
    InvalidEcPoint,
    /// An Ed25519 `x` that is not 32 bytes.
    #[error("`x` is not 32 bytes long")]
    WrongKeyLength,
    /// An `oct` key whose `k` decodes to nothing.
    #[error("`k` is empty")]
    EmptyOctKey,
}

/// A JWKS entry that was skipped, with its position in `keys`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jwks key #{index} is ignored: {problem}")]
pub struct SkippedKey {
    /// Zero-based position in the `keys` array.
    pub index: usize,
    /// Why it was skipped.
    pub problem: JwkError,
}

/// One usable key.
#[derive(Debug, Clone)]
pub(crate) struct Jwk {
    /// Empty when absent; an empty `kid` matches any token.
    pub(crate) kid: String,
    /// Empty when absent; an empty `alg` matches any token.
    pub(crate) alg: String,
    pub(crate) material: KeyMaterial,
}

#[derive(Debug, Clone)]
pub(crate) enum KeyMaterial {
    Rsa(DecodingKey),
    /// `None` for P-521: accepted like Envoy does (so `kid` matching is the same), but the
    /// signature library has no P-521 verifier, so such a key never verifies.
    Ec {
        curve: Curve,
        key: Option<DecodingKey>,
    },
    Oct(DecodingKey),
    Ed25519(DecodingKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

// === impl Curve ===

impl Curve {
    /// Bytes of one affine coordinate.
    fn field_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// The keys of a JWKS document and the entries that were skipped.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedJwks {
    pub(crate) keys: Vec<Jwk>,
    pub(crate) skipped: Vec<SkippedKey>,
}

pub(crate) fn parse_jwks(document: &str) -> Result<ParsedJwks, JwksError> {
    let object = match serde_json::from_str::<Value>(document) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(JwksError::InvalidJson {
                reason: "the top-level value is not an object".to_owned(),
            });
        }
        Err(err) => {
            return Err(JwksError::InvalidJson {
                reason: err.to_string(),
            });
        }
    };
    let entries = match object.get("keys") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(JwksError::KeysNotArray),
        None => return Err(JwksError::MissingKeys),
    };
    let mut parsed = ParsedJwks::default();
    for (index, entry) in entries.iter().enumerate() {
        // jwt_verify_lib `createFromJwksCore`: non-object entries are skipped without a status.
        let Value::Object(entry) = entry else {
            continue;
        };
        match parse_jwk(entry) {
            Ok(key) => parsed.keys.push(key),
            Err(problem) => parsed.skipped.push(SkippedKey { index, problem }),
        }
    }
    Ok(parsed)
}

/// The JWKS istiod inlines when it could not fetch `jwksUri` (`CreateFakeJwks` in
/// `jwks_resolver.go`).
///
/// authentication.md §5.6: "Fetch failure or non-JWKS body ⇒ a fixed RSA public key whose private
/// key was discarded is inlined ⇒ every token for that issuer fails (`Jwt verification fails`, or
/// the kid-mismatch message)". Its modulus is the bytes of a message naming the URI, so it goes
/// through the same checks as any key: when the URI's last byte is even the modulus is even,
/// BoringSSL refuses the key and Envoy answers "Jwks doesn't have any valid public key" instead.
pub(crate) fn istiod_placeholder_jwks(jwks_uri: &str) -> String {
    let modulus = URL_SAFE_NO_PAD.encode(format!("Error-IstiodFailedToFetchJwksUri-{jwks_uri}"));
    format!(r#"{{"keys":[ {{"e":"AQAB","kid":"abc","kty":"RSA","n":"{modulus}"}}]}}"#)
}

fn parse_jwk(entry: &Map<String, Value>) -> Result<Jwk, JwkError> {
    let kty = match entry.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err(JwkError::KtyNotString),
        None => return Err(JwkError::MissingKty),
    };
    // jwt_verify_lib ignores a `kid` or `alg` of the wrong type: the key then matches any token.
    let kid = lenient_string(entry, "kid");
    let alg = lenient_string(entry, "alg");
    let material = match kty {
        "RSA" => rsa_key(entry, &alg)?,
        "EC" => ec_key(entry, &alg)?,
        "oct" => oct_key(entry, &alg)?,
        "OKP" => okp_key(entry, &alg)?,
        other => {
            return Err(JwkError::UnsupportedKty {
                kty: other.to_owned(),
            });
        }
    };
    Ok(Jwk { kid, alg, material })
}

fn rsa_key(entry: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwkError> {
    if !(alg.is_empty() || alg.starts_with("RS") || alg.starts_with("PS")) {
        return Err(JwkError::AlgNotForKty {
            kty: "RSA",
            alg: alg.to_owned(),
        });
    }
    let n = required_string(entry, "n")?;
    let e = required_string(entry, "e")?;
    let n = decode_base64url(n).ok_or(JwkError::InvalidRsaKey)?;
    let e = decode_base64url(e).ok_or(JwkError::InvalidRsaKey)?;
    let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
    // jwt_verify_lib accepts only e ∈ {3, 65537}; BoringSSL's `RSA_check_key` then wants an odd
    // modulus of at most 16384 bits that is larger than any 33-bit exponent.
    let exponent_ok = e == [3] || e == [1, 0, 1];
    let modulus_bits = bit_len(n);
    let modulus_ok =
        n.last().is_some_and(|low| low & 1 == 1) && modulus_bits > 33 && modulus_bits <= 16_384;
    if !(exponent_ok && modulus_ok) {
        return Err(JwkError::InvalidRsaKey);
    }
    Ok(KeyMaterial::Rsa(DecodingKey::from_rsa_raw_components(n, e)))
}

fn ec_key(entry: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwkError> {
    if !alg.is_empty() && !alg.starts_with("ES") {
        return Err(JwkError::AlgNotForKty {
            kty: "EC",
            alg: alg.to_owned(),
        });
    }
    let crv = match entry.get("crv") {
        None => "",
        Some(Value::String(crv)) => crv.as_str(),
        Some(_) => return Err(JwkError::FieldNotString { field: "crv" }),
    };
    if !alg.is_empty()
        && !crv.is_empty()
        && !matches!(
            (alg, crv),
            ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521")
        )
    {
        return Err(JwkError::CurveAlgMismatch {
            crv: crv.to_owned(),
            alg: alg.to_owned(),
        });
    }
    // Neither `alg` nor `crv` means P-256.
    let curve = if alg == "ES256" || crv == "P-256" || (alg.is_empty() && crv.is_empty()) {
        Curve::P256
    } else if alg == "ES384" || crv == "P-384" {
        Curve::P384
    } else if alg == "ES512" || crv == "P-521" {
        Curve::P521
    } else {
        return Err(JwkError::UnsupportedCurve {
            crv: if crv.is_empty() { alg } else { crv }.to_owned(),
        });
    };
    let x = required_string(entry, "x")?;
    let y = required_string(entry, "y")?;
    let x = decode_base64url(x).ok_or(JwkError::BadBase64 { field: "x" })?;
    let y = decode_base64url(y).ok_or(JwkError::BadBase64 { field: "y" })?;
    // BoringSSL reads the coordinates as big numbers, so leading zeros are insignificant and a
    // short coordinate is fine; one longer than the field cannot be a point of the curve.
    let len = curve.field_len();
    let (x, y) = (strip_leading_zeros(&x), strip_leading_zeros(&y));
    if x.len() > len || y.len() > len {
        return Err(JwkError::InvalidEcPoint);
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.resize(1 + len - x.len(), 0);
    point.extend_from_slice(x);
    point.resize(1 + 2 * len - y.len(), 0);
    point.extend_from_slice(y);
    let key = (curve != Curve::P521).then(|| DecodingKey::from_ec_der(&point));
    Ok(KeyMaterial::Ec { curve, key })
}

fn oct_key(entry: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwkError> {
    if !alg.is_empty() && !matches!(alg, "HS256" | "HS384" | "HS512") {
        return Err(JwkError::AlgNotForKty {
            kty: "oct",
            alg: alg.to_owned(),
        });
    }
    let k = required_string(entry, "k")?;
    let k = decode_base64url(k).ok_or(JwkError::BadBase64 { field: "k" })?;
    if k.is_empty() {
        return Err(JwkError::EmptyOctKey);
    }
    Ok(KeyMaterial::Oct(DecodingKey::from_secret(&k)))
}

fn okp_key(entry: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwkError> {
    if !alg.is_empty() && alg != "EdDSA" {
        return Err(JwkError::AlgNotForKty {
            kty: "OKP",
            alg: alg.to_owned(),
        });
    }
    let crv = required_string(entry, "crv")?;
    if crv != "Ed25519" {
        return Err(JwkError::UnsupportedCurve {
            crv: crv.to_owned(),
        });
    }
    let x = required_string(entry, "x")?;
    let x = decode_base64url(x).ok_or(JwkError::BadBase64 { field: "x" })?;
    if x.len() != 32 {
        return Err(JwkError::WrongKeyLength);
    }
    // `from_ed_der` keeps the bytes as given; the Ed25519 verifier wants the raw 32-byte key.
    Ok(KeyMaterial::Ed25519(DecodingKey::from_ed_der(&x)))
}

fn lenient_string(entry: &Map<String, Value>, field: &str) -> String {
    entry
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn required_string<'a>(
    entry: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, JwkError> {
    match entry.get(field) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(JwkError::FieldNotString { field }),
        None => Err(JwkError::MissingField { field }),
    }
}

pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Significant bits of a big-endian number whose leading zero bytes are already stripped.
fn bit_len(big_endian: &[u8]) -> u64 {
    match big_endian.split_first() {
        None => 0,
        Some((first, rest)) => rest.len() as u64 * 8 + u64::from(8 - first.leading_zeros()),
    }
}
