//! Parsing a compact JWS exactly as jwt_verify_lib's `Jwt::parseFromString` does, so that every
//! malformed token fails with the same status string Envoy puts in the 401 body.

use serde_json::{Map, Value};

/// Why `jwt_authn` rejected a request. Each variant's [`message`](Self::message) is the
/// jwt_verify_lib status string Envoy sends as the response body.
///
/// Exhaustive on purpose: a new rejection reason must break callers that map reasons to replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtFailure {
    /// No token where one was required. Istio's requirement tree always allows a missing token,
    /// so authentication never ends with this; it is kept so the status set is complete.
    Missing,
    /// The token does not split into three non-empty dot-separated sections.
    BadFormat,
    /// The header section is not base64url.
    HeaderBadBase64,
    /// The decoded header is not a JSON object.
    HeaderBadJson,
    /// `alg` is missing or not a string.
    HeaderBadAlg,
    /// `alg` is not one of the algorithms Envoy implements (`none` included).
    HeaderAlgNotImplemented,
    /// `kid` is present but not a string.
    HeaderBadKid,
    /// The payload section is not base64url.
    PayloadBadBase64,
    /// The decoded payload is not a JSON object.
    PayloadBadJson,
    /// `iss` is present but not a string.
    IssNotString,
    /// `sub` is present but not a string.
    SubNotString,
    /// `iat` is present but not a number.
    IatNotInteger,
    /// `iat` is negative or does not fit in 64 bits.
    IatOutOfRange,
    /// `nbf` is present but not a number.
    NbfNotInteger,
    /// `nbf` is negative or does not fit in 64 bits.
    NbfOutOfRange,
    /// `exp` is present but not a number.
    ExpNotInteger,
    /// `exp` is negative or does not fit in 64 bits.
    ExpOutOfRange,
    /// `jti` is present but not a string.
    JtiNotString,
    /// `aud` is neither a string nor a list of strings.
    AudNotStringOrList,
    /// The signature section is not base64url.
    SignatureBadBase64,
    /// No provider owning the token's location has the token's `iss`.
    UnknownIssuer,
    /// `nbf` is more than the clock skew in the future.
    NotYetValid,
    /// `exp` is more than the clock skew in the past.
    Expired,
    /// None of the token's audiences is configured (the only 403).
    AudienceNotAllowed,
    /// No key of the provider's JWKS matches the token's `kid` and `alg`.
    JwksKidAlgMismatch,
    /// Keys matched but none verified the signature.
    VerificationFail,
    /// An Ed25519 key matched and the signature is not 64 bytes long.
    Ed25519SignatureWrongLength,
    /// The provider has no usable key at all (empty or unparsable JWKS).
    JwksNoValidKeys,
}

// === impl JwtFailure ===

impl JwtFailure {
    /// The jwt_verify_lib status string, used verbatim as the local reply body.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "Jwt is missing",
            Self::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Self::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Self::HeaderBadJson => "Jwt header is an invalid JSON",
            Self::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Self::HeaderAlgNotImplemented => "Jwt header [alg] is not supported",
            Self::HeaderBadKid => "Jwt header [kid] field is not a string",
            Self::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Self::PayloadBadJson => "Jwt payload is an invalid JSON",
            Self::IssNotString => "Jwt payload [iss] field is not a string",
            Self::SubNotString => "Jwt payload [sub] field is not a string",
            Self::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Self::IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Self::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Self::NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Self::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Self::ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Self::JtiNotString => "Jwt payload [jti] field is not a string",
            Self::AudNotStringOrList => "Jwt payload [aud] field is not a string or string list",
            Self::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Self::UnknownIssuer => "Jwt issuer is not configured",
            Self::NotYetValid => "Jwt not yet valid",
            Self::Expired => "Jwt is expired",
            Self::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Self::JwksKidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Self::VerificationFail => "Jwt verification fails",
            Self::Ed25519SignatureWrongLength => "Jwt ED25519 signature is wrong length",
            Self::JwksNoValidKeys => "Jwks doesn't have any valid public key",
        }
    }

    /// The HTTP status of the local reply.
    #[must_use]
    pub fn http_status(self) -> u16 {
        // authentication.md §5.4: audiences ⇒ "Audiences in Jwt are not allowed" | **403**;
        // every other row is 401.
        match self {
            Self::AudienceNotAllowed => 403,
            _ => 401,
        }
    }
}

impl std::fmt::Display for JwtFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A token that passed the structural checks (authentication.md §5.4 row group 1).
#[derive(Debug, Clone)]
pub(crate) struct Jwt {
    pub(crate) alg: String,
    /// Empty when absent: jwt_verify_lib does not distinguish a missing `kid` from `""`.
    pub(crate) kid: String,
    pub(crate) iss: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    pub(crate) payload: Map<String, Value>,
    /// The payload section as it appeared in the token (base64url, usually unpadded).
    pub(crate) payload_b64: String,
    /// `header_b64 + "." + payload_b64`, the bytes the signature covers.
    pub(crate) signed: String,
    pub(crate) signature: Vec<u8>,
}

/// The algorithms jwt_verify_lib implements; anything else (`none` included) is refused.
const IMPLEMENTED_ALGS: [&str; 13] = [
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

// === impl Jwt ===

impl Jwt {
    pub(crate) fn parse(token: &str) -> Result<Self, JwtFailure> {
        // authentication.md §5.4 #1: "3 dot-separated base64url parts". jwt_verify_lib splits with
        // `absl::SkipEmpty()`, so empty sections vanish: `h.p.` (an unsigned `alg: none` token)
        // has two sections and fails here, before its `alg` is ever looked at.
        let mut sections = token.split('.').filter(|s| !s.is_empty());
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(JwtFailure::BadFormat);
        };

        let header_bytes = decode_base64url(header_b64).ok_or(JwtFailure::HeaderBadBase64)?;
        let header = parse_object(&header_bytes).ok_or(JwtFailure::HeaderBadJson)?;

        // authentication.md §5.4 #1: "`alg` present, string", then "`alg` ∈ {RS256, …, EdDSA}
        // (`none` not in list)".
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(JwtFailure::HeaderBadAlg),
        };
        if !IMPLEMENTED_ALGS.contains(&alg.as_str()) {
            return Err(JwtFailure::HeaderAlgNotImplemented);
        }
        // authentication.md §5.4 #1: "`kid` string if present".
        let kid = optional_string(&header, "kid").ok_or(JwtFailure::HeaderBadKid)?;

        let payload_bytes = decode_base64url(payload_b64).ok_or(JwtFailure::PayloadBadBase64)?;
        let payload = parse_object(&payload_bytes).ok_or(JwtFailure::PayloadBadJson)?;

        // authentication.md §5.4 #1: "`iss`/`sub`/`jti` strings; `iat`/`nbf`/`exp` positive int64;
        // `aud` string or string list", checked in jwt_verify_lib's order.
        let iss = optional_string(&payload, "iss").ok_or(JwtFailure::IssNotString)?;
        optional_string(&payload, "sub").ok_or(JwtFailure::SubNotString)?;
        optional_seconds(
            &payload,
            "iat",
            JwtFailure::IatNotInteger,
            JwtFailure::IatOutOfRange,
        )?;
        let nbf = optional_seconds(
            &payload,
            "nbf",
            JwtFailure::NbfNotInteger,
            JwtFailure::NbfOutOfRange,
        )?;
        let exp = optional_seconds(
            &payload,
            "exp",
            JwtFailure::ExpNotInteger,
            JwtFailure::ExpOutOfRange,
        )?;
        optional_string(&payload, "jti").ok_or(JwtFailure::JtiNotString)?;
        let audiences = audiences(&payload).ok_or(JwtFailure::AudNotStringOrList)?;

        let signature = decode_base64url(signature_b64).ok_or(JwtFailure::SignatureBadBase64)?;

        Ok(Self {
            alg,
            kid,
            iss,
            audiences,
            nbf,
            exp,
            payload,
            payload_b64: payload_b64.to_owned(),
            signed: format!("{header_b64}.{payload_b64}"),
            signature,
        })
    }
}

/// Decodes protobuf-`Struct`-compatible JSON: anything but an object is a parse error.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// `Some("")` when absent, `None` when present with another type (jwt_verify_lib `GetString`).
fn optional_string(object: &Map<String, Value>, field: &str) -> Option<String> {
    match object.get(field) {
        None => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    }
}

/// jwt_verify_lib `GetUInt64`: the JSON number is a double; negative or ≥ 2^64 is out of range,
/// a fraction is truncated. Absent means 0, which for `exp` means "never expires".
fn optional_seconds(
    object: &Map<String, Value>,
    field: &str,
    not_integer: JwtFailure,
    out_of_range: JwtFailure,
) -> Result<u64, JwtFailure> {
    match object.get(field) {
        None => Ok(0),
        Some(Value::Number(n)) => {
            let value = n.as_f64().ok_or(not_integer)?;
            double_to_u64(value).ok_or(out_of_range)
        }
        Some(_) => Err(not_integer),
    }
}

/// 2^64 as a double: the first value `GetUInt64` rejects.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// `static_cast<uint64_t>(double)` for the range jwt_verify_lib accepts.
pub(crate) fn double_to_u64(value: f64) -> Option<u64> {
    if !(0.0..TWO_POW_64).contains(&value) {
        return None;
    }
    // INVARIANT: 0 ≤ value < 2^64, so the cast truncates the fraction and nothing else.
    Some(value as u64)
}

/// jwt_verify_lib `GetStringList`: a string, or a list whose every element is a string.
fn audiences(payload: &Map<String, Value>) -> Option<Vec<String>> {
    match payload.get("aud") {
        None => Some(Vec::new()),
        Some(Value::String(aud)) => Some(vec![aud.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

/// `absl::WebSafeBase64Unescape`: the URL-safe alphabet, whitespace skipped, padding optional but,
/// when present, exactly the right number of `=`; unused trailing bits are not checked.
pub(crate) fn decode_base64url(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut data_chars: usize = 0;
    let mut rest = input.bytes();
    let mut tail_start = None;
    for byte in rest.by_ref() {
        if let Some(value) = sextet(byte) {
            acc = (acc << 6) | u32::from(value);
            bits += 6;
            data_chars += 1;
            if bits >= 8 {
                bits -= 8;
                out.push(((acc >> bits) & 0xff) as u8);
                acc &= (1 << bits) - 1;
            }
        } else if !is_absl_space(byte) {
            tail_start = Some(byte);
            break;
        }
    }
    let expected_padding = match data_chars % 4 {
        0 => 0,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let mut padding = 0;
    for byte in tail_start.into_iter().chain(rest) {
        if byte == b'=' {
            padding += 1;
        } else if !is_absl_space(byte) {
            return None;
        }
    }
    (padding == 0 || padding == expected_padding).then_some(out)
}

/// `absl::ascii_isspace`, which unlike [`u8::is_ascii_whitespace`] includes vertical tab.
fn is_absl_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn sextet(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}
