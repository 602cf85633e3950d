//! One `JWTRule` as plain data, and its compiled form (Envoy's `JwtProvider` plus its key set).

use std::collections::BTreeSet;

use super::cache::VerifiedSignatures;
use super::claims::ALWAYS_SPACE_DELIMITED;
use super::extract::Locations;
use super::jwks::{Jwk, JwksError, SkippedKey, istiod_placeholder_jwks, parse_jwks};
use super::verify::sanitize_audience;

/// One `JWTRule` of a `RequestAuthentication`, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtRuleConfig {
    /// `issuer`: the exact `iss` a token must carry; empty accepts any issuer.
    pub issuer: String,
    /// `audiences`: empty means no `aud` check.
    pub audiences: Vec<String>,
    /// `jwks`: an inline JWKS document.
    pub jwks: Option<String>,
    /// `jwksUri`: keys are fetched by the control plane and supplied with
    /// [`JwtProvider::with_keys`].
    pub jwks_uri: Option<String>,
    /// `fromHeaders`.
    pub from_headers: Vec<HeaderLocation>,
    /// `fromParams`.
    pub from_params: Vec<String>,
    /// `fromCookies`.
    pub from_cookies: Vec<String>,
    /// `outputPayloadToHeader`.
    pub output_payload_to_header: Option<String>,
    /// `forwardOriginalToken`.
    pub forward_original_token: bool,
    /// `outputClaimToHeaders`.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// `spaceDelimitedClaims`.
    pub space_delimited_claims: Vec<String>,
}

/// `JWTHeader`: a header a token is read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderLocation {
    /// Header name (any case).
    pub name: String,
    /// Text before the token, such as `"Bearer "`; `None` means the whole value is the token.
    pub prefix: Option<String>,
}

/// `ClaimToHeader`: copy one claim of a verified token into a request header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimToHeader {
    /// Header name (any case).
    pub header: String,
    /// Claim name; dots descend into nested objects.
    pub claim: String,
}

/// A compiled `JWTRule`: parsed keys and token locations.
#[derive(Debug, Clone)]
pub struct JwtProvider {
    pub(crate) issuer: String,
    /// Sanitized (scheme and one trailing `/` stripped).
    pub(crate) audiences: BTreeSet<String>,
    pub(crate) keys: Vec<Jwk>,
    skipped: Vec<SkippedKey>,
    jwks_error: Option<JwksError>,
    awaiting_keys: bool,
    pub(crate) locations: Locations,
    /// Lower-case.
    pub(crate) payload_header: Option<String>,
    /// `(lower-case header, claim)` in configuration order.
    pub(crate) claim_headers: Vec<(String, String)>,
    /// Headers removed from every request before verification.
    pub(crate) sanitized_headers: Vec<String>,
    pub(crate) forward: bool,
    pub(crate) space_delimited: BTreeSet<String>,
    /// Tokens whose signature these keys already verified.
    pub(crate) verified: VerifiedSignatures,
}

// === impl JwtProvider ===

impl JwtProvider {
    /// Compiles one rule.
    ///
    /// An inline `jwks` that is not a JSON object with a `keys` array is an error (Istio's webhook
    /// refuses it). Individual keys that Envoy would skip are only reported by
    /// [`skipped_keys`](Self::skipped_keys).
    ///
    /// # Errors
    ///
    /// [`JwksError`] when the inline `jwks` is unusable as a whole.
    pub fn compile(rule: &JwtRuleConfig) -> Result<Self, JwksError> {
        // authentication.md §5.6: istiod inlines `jwks` as given; without it, it fetches `jwksUri`
        // (or discovers it from the issuer) and, until that succeeds, inlines a placeholder key
        // that verifies nothing. This crate does no I/O, so that is where every `jwksUri` rule
        // starts.
        let inline = rule.jwks.as_deref().filter(|jwks| !jwks.is_empty());
        let (parsed, awaiting_keys) = match inline {
            Some(document) => (parse_jwks(document)?, false),
            None => {
                let placeholder =
                    istiod_placeholder_jwks(rule.jwks_uri.as_deref().unwrap_or_default());
                (parse_jwks(&placeholder).unwrap_or_default(), true)
            }
        };

        let headers: Vec<(String, String)> = rule
            .from_headers
            .iter()
            .map(|h| (h.name.clone(), h.prefix.clone().unwrap_or_default()))
            .collect();
        let payload_header = rule
            .output_payload_to_header
            .as_deref()
            .filter(|name| !name.is_empty())
            .map(str::to_ascii_lowercase);
        let claim_headers: Vec<(String, String)> = rule
            .output_claim_to_headers
            .iter()
            .map(|c| (c.header.to_ascii_lowercase(), c.claim.clone()))
            .collect();
        // authentication.md §5.1 `outputClaimToHeaders`: "incoming copies of these headers are
        // always removed first"; Envoy's extractor does the same for the payload header.
        let sanitized_headers = payload_header
            .iter()
            .cloned()
            .chain(claim_headers.iter().map(|(header, _)| header.clone()))
            .collect();
        // authentication.md §5.1 `spaceDelimitedClaims`: "extra claims to split on spaces for
        // authz; `scope` and `permission` always split".
        let space_delimited = ALWAYS_SPACE_DELIMITED
            .iter()
            .map(|claim| (*claim).to_owned())
            .chain(rule.space_delimited_claims.iter().cloned())
            .collect();

        Ok(Self {
            issuer: rule.issuer.clone(),
            audiences: rule
                .audiences
                .iter()
                .map(|a| sanitize_audience(a))
                .collect(),
            keys: parsed.keys,
            skipped: parsed.skipped,
            jwks_error: None,
            awaiting_keys,
            locations: Locations::new(&headers, &rule.from_params, &rule.from_cookies),
            payload_header,
            claim_headers,
            sanitized_headers,
            forward: rule.forward_original_token,
            space_delimited,
            verified: VerifiedSignatures::default(),
        })
    }

    /// Replaces the keys with a JWKS document fetched from `jwksUri`.
    ///
    /// Never fails: like istiod, whatever was fetched is used verbatim, and a body that is not a
    /// JWKS leaves the provider without keys, so its tokens are refused with "Jwks doesn't have any
    /// valid public key". The parse problem is kept in [`jwks_error`](Self::jwks_error).
    #[must_use]
    pub fn with_keys(mut self, jwks: &str) -> Self {
        let (parsed, error) = match parse_jwks(jwks) {
            Ok(parsed) => (parsed, None),
            Err(error) => (Default::default(), Some(error)),
        };
        self.keys = parsed.keys;
        self.skipped = parsed.skipped;
        self.jwks_error = error;
        self.awaiting_keys = false;
        // Verdicts remembered for the old keys say nothing about the new ones.
        self.verified = VerifiedSignatures::default();
        self
    }

    /// The `issuer` of the rule.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether at least one key can verify signatures.
    #[must_use]
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() && !self.awaiting_keys
    }

    /// True for a `jwksUri` rule whose keys were not supplied with [`with_keys`](Self::with_keys):
    /// its tokens are refused the way Envoy refuses them behind istiod's placeholder key.
    #[must_use]
    pub fn awaiting_keys(&self) -> bool {
        self.awaiting_keys
    }

    /// JWKS entries that were ignored, as Envoy ignores them.
    #[must_use]
    pub fn skipped_keys(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Why the document given to [`with_keys`](Self::with_keys) yielded no key set, if it did not.
    #[must_use]
    pub fn jwks_error(&self) -> Option<&JwksError> {
        self.jwks_error.as_ref()
    }
}
