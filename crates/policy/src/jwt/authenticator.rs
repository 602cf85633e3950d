//! All rules of a workload combined into Istio's requirement tree, evaluated the way Envoy's
//! `jwt_authn` filter evaluates it (`filter.cc`, `verifier.cc`, `authenticator.cc`).

use crate::attributes::Header;
use serde_json::{Map, Value};

use super::claims::{claim_header_value, normalize};
use super::config::JwtProvider;
use super::extract::{TokenLocation, remove_query_param};
use super::token::{Jwt, JwtFailure};
use super::verify::{audiences_allowed, check_time, verify_signature};

/// The parts of an HTTP request `jwt_authn` reads.
#[derive(Debug, Clone, Copy)]
pub struct JwtRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as received, query included.
    pub path: &'a str,
    /// Header names in lower case; a repeated header is several entries.
    pub headers: &'a [Header<'a>],
}

/// What `jwt_authn` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtOutcome {
    /// No token in any configured location, or a CORS preflight: the request proceeds without
    /// `request.auth.*` attributes. The mutations still matter: configured output headers sent by
    /// the client are removed even when there is no token.
    NoToken(HeaderMutations),
    /// A token verified; the request proceeds with its claims.
    Verified(VerifiedJwt),
    /// The proxy answers with a local reply.
    Rejected(JwtRejection),
}

/// A verified token, as authorization and the upstream see it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    /// The token's `iss` (empty when absent).
    pub issuer: String,
    /// The payload, with `scope`, `permission` and the rule's `spaceDelimitedClaims` split into
    /// lists (authentication.md §5.7).
    pub payload: Map<String, Value>,
    /// What the proxy must change in the request before forwarding it.
    pub headers: HeaderMutations,
}

/// A local reply from `jwt_authn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtRejection {
    /// 401, or 403 for [`JwtFailure::AudienceNotAllowed`].
    pub status: u16,
    /// The response body (`content-type: text/plain`): Envoy's status string.
    pub message: &'static str,
    /// The typed reason.
    pub reason: JwtFailure,
}

/// Request changes, applied in order: delete every header named in `remove`, append `append`,
/// then replace `:path` if `path` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    /// Lower-case names of headers to delete (all their values).
    pub remove: Vec<String>,
    /// Headers to append after the deletions.
    pub append: Vec<(String, String)>,
    /// The new `:path`, when a verified token's query parameter was removed.
    pub path: Option<String>,
}

/// All `JWTRule`s applying to one workload, combined as authentication.md §5.2 describes.
#[derive(Debug, Clone, Default)]
pub struct JwtAuthenticator {
    /// Sorted by issuer; index `i` is Envoy provider `origins-i`.
    providers: Vec<JwtProvider>,
    requirement: Option<Requirement>,
}

/// Envoy's `JwtRequirement`, restricted to the shapes Istio generates.
#[derive(Debug, Clone)]
enum Requirement {
    Provider(usize),
    Any {
        children: Vec<Requirement>,
        allow_missing: bool,
    },
    All(Vec<Requirement>),
}

/// A verifier's completion status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Missing,
    Failed(JwtFailure),
}

/// The request as the filter chain mutates it, plus the payload reported to authorization.
struct Exchange {
    headers: Vec<(String, String)>,
    path: String,
    now: u64,
    verified: Option<(String, Map<String, Value>)>,
}

// === impl JwtAuthenticator ===

impl JwtAuthenticator {
    /// Combines the compiled rules of every `RequestAuthentication` selecting a workload.
    #[must_use]
    pub fn new(mut providers: Vec<JwtProvider>) -> Self {
        // authentication.md §5.2: "rules are sorted by `issuer`, numbered `origins-0…N-1` (one Envoy
        // provider each). No deduplication of identical issuers."
        providers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        let requirement = build_requirement(providers.len());
        Self {
            providers,
            requirement,
        }
    }

    /// True when no rule applies: Istio then installs no `jwt_authn` filter at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The providers in `origins-N` order.
    #[must_use]
    pub fn providers(&self) -> &[JwtProvider] {
        &self.providers
    }

    /// Runs `jwt_authn` on one request; `now_unix` is the current time in unix seconds.
    #[must_use]
    pub fn authenticate(&self, request: &JwtRequest<'_>, now_unix: i64) -> JwtOutcome {
        let Some(requirement) = &self.requirement else {
            return JwtOutcome::NoToken(HeaderMutations::default());
        };
        // authentication.md §5.5: "CORS preflight (`OPTIONS` with both `Origin` and
        // `Access-Control-Request-Method`) skips JWT checks entirely"; Istio sets
        // `bypass_cors_preflight`.
        if is_cors_preflight(request) {
            return JwtOutcome::NoToken(HeaderMutations::default());
        }
        // authentication.md §5.2: "Requirement installed on every path (prefix `/`)"; a request
        // target such as `*` matches no rule and is not checked.
        if !request.path.starts_with('/') {
            return JwtOutcome::NoToken(HeaderMutations::default());
        }
        let mut exchange = Exchange {
            headers: request
                .headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            path: request.path.to_owned(),
            now: u64::try_from(now_unix).unwrap_or(0),
            verified: None,
        };
        match self.evaluate(requirement, &mut exchange) {
            Verdict::Ok => {
                let headers = exchange.mutations(request);
                match exchange.verified {
                    Some((issuer, payload)) => JwtOutcome::Verified(VerifiedJwt {
                        issuer,
                        payload,
                        headers,
                    }),
                    None => JwtOutcome::NoToken(headers),
                }
            }
            Verdict::Missing => JwtOutcome::Rejected(JwtRejection::new(JwtFailure::Missing)),
            Verdict::Failed(failure) => JwtOutcome::Rejected(JwtRejection::new(failure)),
        }
    }

    fn evaluate(&self, requirement: &Requirement, exchange: &mut Exchange) -> Verdict {
        match requirement {
            Requirement::Provider(index) => match self.providers.get(*index) {
                Some(provider) => run_provider(provider, exchange),
                None => Verdict::Missing,
            },
            Requirement::Any {
                children,
                allow_missing,
            } => {
                // Envoy `AnyVerifierImpl`: children run in order and the first OK ends the group.
                let mut statuses = Vec::with_capacity(children.len());
                for child in children {
                    match self.evaluate(child, exchange) {
                        Verdict::Ok => return Verdict::Ok,
                        other => statuses.push(other),
                    }
                }
                // Otherwise the final status prefers a real error over "issuer not configured",
                // and that over "missing"; among real errors the last one wins.
                let mut status = Verdict::Missing;
                for child in statuses {
                    let real_error =
                        matches!(child, Verdict::Failed(f) if f != JwtFailure::UnknownIssuer);
                    if real_error || status == Verdict::Missing {
                        status = child;
                    }
                }
                if *allow_missing && status == Verdict::Missing {
                    Verdict::Ok
                } else {
                    status
                }
            }
            Requirement::All(children) => {
                // Envoy `AllVerifierImpl`: the first failure ends the group.
                for child in children {
                    match self.evaluate(child, exchange) {
                        Verdict::Ok => {}
                        other => return other,
                    }
                }
                Verdict::Ok
            }
        }
    }
}

/// The tree istiod's `convertToEnvoyJwtConfig` generates.
fn build_requirement(providers: usize) -> Option<Requirement> {
    let optional = |index| Requirement::Any {
        children: vec![Requirement::Provider(index)],
        allow_missing: true,
    };
    match providers {
        0 => None,
        // authentication.md §5.2: "N = 1: `ANY { origins-0, allow_missing }`".
        1 => Some(optional(0)),
        // authentication.md §5.2: "N > 1: `ANY { origins-0, …, origins-(N-1), ALL { ANY{origins-0,
        // allow_missing}, …, ANY{origins-(N-1), allow_missing} } }`". The outer ANY ends at the
        // first provider that verifies every token in its own locations, so the ALL branch,
        // which enforces "a present token must verify", only runs when no provider succeeds
        // outright.
        n => {
            let mut children: Vec<Requirement> = (0..n).map(Requirement::Provider).collect();
            children.push(Requirement::All((0..n).map(optional).collect()));
            Some(Requirement::Any {
                children,
                allow_missing: false,
            })
        }
    }
}

/// One provider verifier: Envoy `ProviderVerifierImpl` with its `AuthenticatorImpl`.
fn run_provider(provider: &JwtProvider, exchange: &mut Exchange) -> Verdict {
    // authentication.md §5.1 `outputClaimToHeaders`: "incoming copies of these headers are always
    // removed first" (whether or not a token is present).
    exchange
        .headers
        .retain(|(name, _)| !provider.sanitized_headers.contains(name));
    // authentication.md §5.2 rule 5: "Headers/params not configured are never inspected".
    let tokens = provider
        .locations
        .extract(&exchange.headers, &exchange.path);
    if tokens.is_empty() {
        return Verdict::Missing;
    }
    // authentication.md §5.2 rule 3: "Several tokens in one provider's locations ⇒ **all** must
    // verify". Envoy takes them from the back of the extraction order and stops at the first
    // failure.
    for extracted in tokens.iter().rev() {
        match check_token(provider, &extracted.token, exchange.now) {
            Ok(jwt) => exchange.accept(provider, jwt, &extracted.location),
            Err(failure) => return Verdict::Failed(failure),
        }
    }
    Verdict::Ok
}

/// authentication.md §5.4, rows in order.
fn check_token(provider: &JwtProvider, token: &str, now: u64) -> Result<Jwt, JwtFailure> {
    let jwt = Jwt::parse(token)?;
    // authentication.md §5.4 #2: "`iss` allowed for this location" — the location belongs to
    // this provider only, so its issuer must match (an empty issuer allows any).
    if !provider.issuer.is_empty() && jwt.iss != provider.issuer {
        return Err(JwtFailure::UnknownIssuer);
    }
    check_time(&jwt, now)?;
    // authentication.md §5.4 #4: "audiences (§5.1) | `Audiences in Jwt are not allowed` | 403".
    if !audiences_allowed(&provider.audiences, &jwt) {
        return Err(JwtFailure::AudienceNotAllowed);
    }
    // authentication.md §5.4 #5: "remote JWKS unusable | … `Jwks doesn't have any valid public
    // key`".
    if provider.keys.is_empty() {
        return Err(JwtFailure::JwksNoValidKeys);
    }
    // The signature is a function of the token and the keys alone, so a token these keys
    // already verified skips the check; every other row above ran for this request.
    if !provider.verified.contains(token) {
        verify_signature(&jwt, &provider.keys)?;
        provider.verified.insert(token);
    }
    Ok(jwt)
}

fn is_cors_preflight(request: &JwtRequest<'_>) -> bool {
    // Envoy reads these as inline headers, whose repeated values are joined with `,`.
    let present = |name: &str| {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect();
        !values.join(",").is_empty()
    };
    request.method == "OPTIONS" && present("origin") && present("access-control-request-method")
}

// === impl Exchange ===

impl Exchange {
    /// Envoy `AuthenticatorImpl::handleGoodJwt`.
    fn accept(&mut self, provider: &JwtProvider, jwt: Jwt, location: &TokenLocation) {
        // authentication.md §5.1 `outputPayloadToHeader`: "on success adds header = the token's
        // payload segment (base64url, unpadded)".
        if let Some(header) = &provider.payload_header {
            self.headers.push((header.clone(), jwt.payload_b64.clone()));
        }
        for (header, claim) in &provider.claim_headers {
            if let Some(value) = claim_header_value(&jwt.payload, claim) {
                self.headers.push((header.clone(), value));
            }
        }
        // authentication.md §5.1 `forwardOriginalToken`: "false ⇒ after success the token's header
        // (whole header) is removed; newer Envoy also removes the query parameter; cookies never
        // removed".
        if !provider.forward {
            match location {
                TokenLocation::Header(name) => self.headers.retain(|(n, _)| n != name),
                TokenLocation::Param(name) => self.path = remove_query_param(&self.path, name),
                TokenLocation::Cookie => {}
            }
        }
        // authentication.md §5.2: "Multiple valid tokens from different locations … implementation
        // sets metadata from whichever verified": every provider writes the same metadata key, so
        // the last verified token is what authorization sees.
        let payload = normalize(&jwt.payload, &provider.space_delimited);
        self.verified = Some((jwt.iss, payload));
    }

    /// The difference between the request as received and as the filter left it.
    fn mutations(&self, request: &JwtRequest<'_>) -> HeaderMutations {
        let mut names: Vec<&str> = Vec::new();
        let received = request.headers.iter().map(|(n, _)| *n);
        for name in received.chain(self.headers.iter().map(|(n, _)| n.as_str())) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut mutations = HeaderMutations::default();
        for name in names {
            let after: Vec<&str> = self
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let before = request
                .headers
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v);
            if !before.eq(after.iter().copied()) {
                mutations.remove.push(name.to_owned());
                mutations.append.extend(
                    after
                        .into_iter()
                        .map(|value| (name.to_owned(), value.to_owned())),
                );
            }
        }
        if self.path != request.path {
            mutations.path = Some(self.path.clone());
        }
        mutations
    }
}

// === impl JwtOutcome ===

impl JwtOutcome {
    /// The request changes to apply when the request proceeds; `None` for a rejection.
    #[must_use]
    pub fn header_mutations(&self) -> Option<&HeaderMutations> {
        match self {
            Self::NoToken(mutations) => Some(mutations),
            Self::Verified(verified) => Some(&verified.headers),
            Self::Rejected(_) => None,
        }
    }
}

// === impl HeaderMutations ===

impl HeaderMutations {
    /// True when the request goes upstream unchanged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.append.is_empty() && self.path.is_none()
    }

    /// The header lines after the header part (`remove`, then `append`): what the filters
    /// after `jwt_authn` (RBAC) and the application see.
    #[must_use]
    pub fn view<'h>(&'h self, headers: &[Header<'h>]) -> Vec<Header<'h>> {
        headers
            .iter()
            .filter(|(name, _)| !self.remove.iter().any(|r| r == name))
            .copied()
            .chain(self.append.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .collect()
    }
}

// === impl VerifiedJwt ===

impl VerifiedJwt {
    /// The token's `sub`, if it is a string.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.payload.get("sub").and_then(Value::as_str)
    }
}

// === impl JwtRejection ===

impl JwtRejection {
    fn new(reason: JwtFailure) -> Self {
        Self {
            status: reason.http_status(),
            message: reason.message(),
            reason,
        }
    }

    /// The `www-authenticate` header of the local reply.
    ///
    /// `scheme` is what Envoy reads from `x-forwarded-proto`, `host` the `:authority`, `path` the
    /// original `:path` with its query.
    #[must_use]
    pub fn www_authenticate(&self, scheme: &str, host: &str, path: &str) -> String {
        // authentication.md §5.5: "`www-authenticate: Bearer realm="<scheme>://<host><path>",
        // error="invalid_token"` (path = original path incl. query, truncated to 256 chars;
        // `error=` omitted only for "Jwt is missing", which Istio's config never produces)".
        let path = truncate_at_boundary(path, 256);
        let mut value = format!("Bearer realm=\"{scheme}://{host}{path}\"");
        if self.reason != JwtFailure::Missing {
            value.push_str(", error=\"invalid_token\"");
        }
        value
    }

    /// `%RESPONSE_CODE_DETAILS%` of the access log entry.
    #[must_use]
    pub fn response_code_details(&self) -> String {
        // authentication.md §5.5: "`jwt_authn_access_denied{<status with spaces replaced by _>}`".
        let details: String = self
            .message
            .chars()
            .map(|c| if c.is_ascii_whitespace() { '_' } else { c })
            .collect();
        format!("jwt_authn_access_denied{{{details}}}")
    }
}

/// Envoy cuts at byte 256; a cut inside a UTF-8 sequence backs up to the character start.
fn truncate_at_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or(text)
}
