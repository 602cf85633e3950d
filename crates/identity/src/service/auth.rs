//! Who is calling the CA: authenticators that turn what a caller presents (a bearer token in the
//! gRPC metadata, the client certificate of the TLS connection) into the SPIFFE identity the CA
//! will certify.
//!
//! §1.5: "Authentication (any one authenticator succeeding): Kubernetes service‑account JWT in
//! gRPC metadata `authorization: Bearer <token>` […]; or an existing client certificate (mTLS)
//! whose SAN becomes the identity." [`Chain`] is the "any one succeeding" rule; the Kubernetes
//! service-account authenticator is another [`CallerAuthenticator`] to add to it when meshward
//! runs against a Kubernetes API server (it needs a TokenReview round trip, which is why the
//! trait is asynchronous).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use meshward_api::SpiffeId;
use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

use crate::cert::CertInfo;
use crate::crypto::sha256_hex;
use crate::tls::{Credentials, Usage, describe_rustls_error, verify_chain};

/// The gRPC metadata key carrying the bearer token, as Istio's agents send it.
pub const AUTHORIZATION: &str = "authorization";

/// The scheme prefix of the `authorization` value (`authorization: Bearer <token>`).
pub const BEARER_PREFIX: &str = "Bearer ";

/// Random bytes in an issued bootstrap token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Shortest token [`BootstrapTokens::insert`] accepts: 32 characters, 128 bits if they are hex.
/// A short shared secret could be guessed by a caller who can retry at will.
pub const MIN_TOKEN_LEN: usize = 32;

/// What the CA knows about one call when deciding who made it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The request's gRPC metadata (`authorization` and the rest).
    pub metadata: &'a MetadataMap,
    /// The certificate chain the client presented in the TLS handshake, leaf first; `None` when
    /// it presented none (or the connection is not TLS). The server's TLS configuration has
    /// already verified it; [`PeerCertificate`] verifies it again before trusting it.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
    /// The client's address, for logs.
    pub remote_addr: Option<SocketAddr>,
}

impl<'a> Caller<'a> {
    /// A caller known only by its metadata (no TLS client certificate).
    pub fn from_metadata(metadata: &'a MetadataMap) -> Self {
        Self {
            metadata,
            peer_certificates: None,
            remote_addr: None,
        }
    }

    /// The bearer token of the first `authorization: Bearer <token>` value, if any.
    pub fn bearer_token(&self) -> Option<&'a str> {
        self.metadata
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix(BEARER_PREFIX))
    }
}

/// Why an authenticator did not accept a caller. The detail is for the CA's log only: callers
/// receive Istio's opaque "request authenticate failure".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The caller presented nothing this authenticator reads (so another one may accept it).
    #[error("{authenticator}: no {expected} presented")]
    Missing {
        /// The authenticator's name.
        authenticator: &'static str,
        /// What it looks for.
        expected: &'static str,
    },
    /// The caller presented a credential of this kind, and it is not valid.
    #[error("{authenticator}: {reason}")]
    Invalid {
        /// The authenticator's name.
        authenticator: &'static str,
        /// Why the credential was refused.
        reason: String,
    },
    /// Every authenticator of a [`Chain`] refused (or the chain is empty).
    #[error("no authenticator accepted the caller: [{}]", join(.0))]
    AllFailed(Vec<AuthError>),
}

fn join(errors: &[AuthError]) -> String {
    if errors.is_empty() {
        return "no authenticators are configured".to_owned();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The future an authenticator returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<SpiffeId, AuthError>> + Send + 'a>>;

/// Decides which identity a caller has proved.
///
/// Asynchronous because some proofs need a round trip: a Kubernetes service-account token is
/// checked with a TokenReview against the API server (§1.5). Implementations that need no I/O
/// return `Box::pin(std::future::ready(result))`.
pub trait CallerAuthenticator: Send + Sync {
    /// A short name for logs ("bootstrap-token", "client-certificate", …).
    fn name(&self) -> &'static str;

    /// The identity `caller` has proved, or why it has not.
    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a>;
}

impl<T: CallerAuthenticator + ?Sized> CallerAuthenticator for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a> {
        (**self).authenticate(caller)
    }
}

/// Per-workload bootstrap credentials for a local mesh without a Kubernetes API server: each
/// token stands for one SPIFFE identity, sent as `authorization: Bearer <token>` exactly where
/// Istio's agents send their service-account token.
///
/// Only SHA-256 hashes of the tokens are kept, so a memory dump or a debug print does not reveal
/// a usable token. A lookup compares the presented token's hash with every stored hash in
/// constant time and does not stop at a match, so timing reveals neither which entry matched nor
/// how much of a hash was right.
#[derive(Default, Clone)]
pub struct BootstrapTokens {
    /// SHA-256 of the token, lowercase hex → the identity it stands for.
    by_hash: HashMap<String, SpiffeId>,
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapTokens")
            .field("tokens", &self.by_hash.len())
            .finish()
    }
}

/// A bootstrap token that cannot be issued or registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The operating system's random generator failed; no token is issued rather than a weak one.
    #[error("cannot generate a bootstrap token: the system random number generator failed")]
    Random,
    /// The token is too short to resist guessing.
    #[error(
        "a bootstrap token must be at least {MIN_TOKEN_LEN} characters long (this one has {len})"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The token cannot travel in a gRPC metadata value.
    #[error(
        "a bootstrap token must be printable ASCII without spaces (it travels as `authorization: Bearer <token>`)"
    )]
    NotPrintable,
}

impl BootstrapTokens {
    const NAME: &'static str = "bootstrap-token";

    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Generates a new 256-bit random token (lowercase hex) for `identity`, registers it, and
    /// returns it: the only time the token itself is available.
    pub fn issue(&mut self, identity: SpiffeId) -> Result<String, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TokenError::Random)?;
        let token = hex::encode(bytes);
        self.insert(&token, identity)?;
        Ok(token)
    }

    /// Registers an existing token for `identity` (a token handed out earlier and read back from
    /// configuration). Re-registering a token moves it to the new identity.
    pub fn insert(&mut self, token: &str, identity: SpiffeId) -> Result<(), TokenError> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: token.len() });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        self.by_hash.insert(hash(token), identity);
        Ok(())
    }

    /// Forgets a token; returns the identity it stood for.
    pub fn revoke(&mut self, token: &str) -> Option<SpiffeId> {
        self.by_hash.remove(&hash(token))
    }

    /// Number of registered tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is registered.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The identity `token` stands for.
    pub fn identity_for(&self, token: &str) -> Option<&SpiffeId> {
        let presented = hash(token);
        let mut found = None;
        // Every entry is compared, and the comparison itself is constant-time: the time taken
        // depends on the number of tokens only.
        for (stored, identity) in &self.by_hash {
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                stored.as_bytes(),
                presented.as_bytes(),
            )
            .is_ok()
            {
                found = Some(identity);
            }
        }
        found
    }
}

fn hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

impl CallerAuthenticator for BootstrapTokens {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a> {
        Box::pin(std::future::ready(authenticate_token(self, caller)))
    }
}

fn authenticate_token(
    tokens: &BootstrapTokens,
    caller: &Caller<'_>,
) -> Result<SpiffeId, AuthError> {
    match caller.bearer_token() {
        None => Err(AuthError::Missing {
            authenticator: BootstrapTokens::NAME,
            expected: "`authorization: Bearer <token>` metadata",
        }),
        Some(token) => tokens
            .identity_for(token)
            .cloned()
            .ok_or_else(|| AuthError::Invalid {
                authenticator: BootstrapTokens::NAME,
                reason: "the bearer token is not a registered bootstrap token".to_owned(),
            }),
    }
}

/// Tokens that change while the server runs: share an `Arc<RwLock<BootstrapTokens>>` between the
/// service (through [`Chain::with_shared`] or directly) and whatever issues and revokes tokens.
impl CallerAuthenticator for std::sync::RwLock<BootstrapTokens> {
    fn name(&self) -> &'static str {
        BootstrapTokens::NAME
    }

    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a> {
        let result = match self.read() {
            // The lookup is synchronous, so the guard is released before the future is returned.
            Ok(tokens) => authenticate_token(&tokens, caller),
            // A writer panicked mid-update: refuse rather than trust a half-written table.
            Err(_) => Err(AuthError::Invalid {
                authenticator: BootstrapTokens::NAME,
                reason: "the token table is unavailable (a writer panicked)".to_owned(),
            }),
        };
        Box::pin(std::future::ready(result))
    }
}

/// A caller that presents a valid mesh client certificate over mTLS is that certificate's
/// identity: how a workload renews before its certificate expires (§1.5: "an existing client
/// certificate (mTLS) whose SAN becomes the identity").
///
/// The chain is verified again here, against the roots in `credentials` with client-auth usage,
/// so this authenticator is sound even behind a TLS configuration that did not verify it, and a
/// certificate that expired while its connection stayed open is refused.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    credentials: Arc<Credentials>,
}

impl PeerCertificate {
    const NAME: &'static str = "client-certificate";

    /// Accepts client certificates that chain to the roots currently in `credentials`.
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self { credentials }
    }

    fn identity(&self, chain: &[CertificateDer<'static>]) -> Result<SpiffeId, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            authenticator: Self::NAME,
            reason,
        };
        let roots = self.credentials.roots();
        verify_chain(chain, &roots.bundle, Usage::Client, SystemTime::now()).map_err(|e| {
            invalid(format!(
                "the client certificate does not verify: {}",
                describe_rustls_error(&e)
            ))
        })?;
        let leaf = chain
            .first()
            .ok_or_else(|| invalid("the client presented an empty chain".to_owned()))?;
        let info = CertInfo::parse(leaf).map_err(|e| invalid(e.to_string()))?;
        info.spiffe_id().ok_or_else(|| {
            invalid(format!(
                "the client certificate carries no SPIFFE ID (URI SANs: {:?})",
                info.uri_sans
            ))
        })
    }
}

impl CallerAuthenticator for PeerCertificate {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a> {
        let result = match caller.peer_certificates {
            None | Some([]) => Err(AuthError::Missing {
                authenticator: Self::NAME,
                expected: "TLS client certificate",
            }),
            Some(chain) => self.identity(chain),
        };
        Box::pin(std::future::ready(result))
    }
}

/// Several authenticators tried in order; the first that accepts the caller decides its identity.
///
/// §1.5: "Authentication (any one authenticator succeeding)". When all refuse, the error lists
/// every refusal so the CA's log says what each one saw.
#[derive(Clone, Default)]
pub struct Chain {
    authenticators: Vec<Arc<dyn CallerAuthenticator>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.authenticators.iter().map(|a| a.name()))
            .finish()
    }
}

impl Chain {
    /// An empty chain: refuses everyone until authenticators are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an authenticator (tried after the ones already present).
    pub fn with(mut self, authenticator: impl CallerAuthenticator + 'static) -> Self {
        self.authenticators.push(Arc::new(authenticator));
        self
    }

    /// Appends a shared authenticator.
    pub fn with_shared(mut self, authenticator: Arc<dyn CallerAuthenticator>) -> Self {
        self.authenticators.push(authenticator);
        self
    }

    /// The names of the authenticators, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.authenticators.iter().map(|a| a.name()).collect()
    }
}

impl CallerAuthenticator for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn authenticate<'a>(&'a self, caller: &'a Caller<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let mut refusals = Vec::with_capacity(self.authenticators.len());
            for authenticator in &self.authenticators {
                match authenticator.authenticate(caller).await {
                    Ok(identity) => {
                        tracing::debug!(
                            authenticator = authenticator.name(),
                            %identity,
                            "caller authenticated"
                        );
                        return Ok(identity);
                    }
                    Err(e) => refusals.push(e),
                }
            }
            Err(AuthError::AllFailed(refusals))
        })
    }
}

#[cfg(test)]
mod tests {
    use meshward_api::TrustDomain;
    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::workload::KeyAlgorithm;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new(TrustDomain::new("cluster.local").unwrap(), ns, sa).unwrap()
    }

    fn metadata(authorization: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in authorization {
            map.append(AUTHORIZATION, MetadataValue::try_from(*value).unwrap());
        }
        map
    }

    fn run(auth: &dyn CallerAuthenticator, caller: &Caller<'_>) -> Result<SpiffeId, AuthError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(auth.authenticate(caller))
    }

    #[test]
    fn issued_tokens_are_256_bit_hex_and_distinct() {
        let mut tokens = BootstrapTokens::new();
        let a = tokens.issue(id("foo", "sleep")).unwrap();
        let b = tokens.issue(id("foo", "sleep")).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn a_token_authenticates_as_its_identity() {
        let mut tokens = BootstrapTokens::new();
        let sleep = tokens.issue(id("foo", "sleep")).unwrap();
        let httpbin = tokens.issue(id("bar", "httpbin")).unwrap();
        let md = metadata(&[&format!("Bearer {sleep}")]);
        assert_eq!(
            run(&tokens, &Caller::from_metadata(&md)),
            Ok(id("foo", "sleep"))
        );
        let md = metadata(&[&format!("Bearer {httpbin}")]);
        assert_eq!(
            run(&tokens, &Caller::from_metadata(&md)),
            Ok(id("bar", "httpbin"))
        );
    }

    #[test]
    fn only_hashes_are_stored() {
        let mut tokens = BootstrapTokens::new();
        let token = tokens.issue(id("foo", "sleep")).unwrap();
        assert!(!tokens.by_hash.keys().any(|k| *k == token));
        assert!(tokens.by_hash.contains_key(&sha256_hex(token.as_bytes())));
        assert!(!format!("{tokens:?}").contains(&token));
    }

    #[test]
    fn wrong_missing_and_malformed_tokens_are_refused() {
        let mut tokens = BootstrapTokens::new();
        let token = tokens.issue(id("foo", "sleep")).unwrap();
        let wrong = format!("Bearer {}", "0".repeat(64));
        let cases: [(&[&str], bool); 5] = [
            (&[], false),
            (&[&wrong], true),
            // Istio's form is `Bearer <token>`; the bare token or another scheme is not it.
            (&[&token], false),
            (&[&format!("Basic {token}")], false),
            (&[&format!("bearer {token}")], false),
        ];
        for (values, presented) in cases {
            let md = metadata(values);
            let err = run(&tokens, &Caller::from_metadata(&md)).unwrap_err();
            match err {
                AuthError::Invalid { .. } => assert!(presented, "{values:?}: {err}"),
                AuthError::Missing { .. } => assert!(!presented, "{values:?}: {err}"),
                AuthError::AllFailed(_) => panic!("{err}"),
            }
        }
    }

    #[test]
    fn a_later_bearer_value_is_used_when_the_first_is_another_scheme() {
        let mut tokens = BootstrapTokens::new();
        let token = tokens.issue(id("foo", "sleep")).unwrap();
        let md = metadata(&["Basic abc", &format!("Bearer {token}")]);
        assert_eq!(
            run(&tokens, &Caller::from_metadata(&md)),
            Ok(id("foo", "sleep"))
        );
    }

    #[test]
    fn revoked_and_reassigned_tokens() {
        let mut tokens = BootstrapTokens::new();
        let token = tokens.issue(id("foo", "sleep")).unwrap();
        tokens.insert(&token, id("foo", "other")).unwrap();
        assert_eq!(tokens.identity_for(&token), Some(&id("foo", "other")));
        assert_eq!(tokens.revoke(&token), Some(id("foo", "other")));
        assert_eq!(tokens.identity_for(&token), None);
        assert!(tokens.is_empty());
    }

    #[test]
    fn shared_tokens_can_be_issued_while_serving() {
        let shared = Arc::new(std::sync::RwLock::new(BootstrapTokens::new()));
        let chain = Chain::new().with_shared(shared.clone());
        let token = shared.write().unwrap().issue(id("foo", "late")).unwrap();
        let md = metadata(&[&format!("Bearer {token}")]);
        assert_eq!(
            run(&chain, &Caller::from_metadata(&md)),
            Ok(id("foo", "late"))
        );
        shared.write().unwrap().revoke(&token);
        assert!(run(&chain, &Caller::from_metadata(&md)).is_err());
    }

    #[test]
    fn weak_tokens_are_not_registered() {
        let mut tokens = BootstrapTokens::new();
        assert_eq!(
            tokens.insert("short", id("foo", "sleep")),
            Err(TokenError::TooShort { len: 5 })
        );
        assert_eq!(
            tokens.insert(&format!("{} x", "a".repeat(40)), id("foo", "sleep")),
            Err(TokenError::NotPrintable)
        );
        assert!(tokens.is_empty());
    }

    #[test]
    fn a_chain_takes_the_first_success_and_reports_every_refusal() {
        let ca = CertificateAuthority::generate_root(
            TrustDomain::new("cluster.local").unwrap(),
            KeyAlgorithm::EcdsaP256,
            crate::ca::DEFAULT_ROOT_TTL,
        )
        .unwrap();
        let credentials = Credentials::new(ca.trust_bundle().clone());
        let mut tokens = BootstrapTokens::new();
        let token = tokens.issue(id("foo", "sleep")).unwrap();
        let chain = Chain::new()
            .with(PeerCertificate::new(credentials))
            .with(tokens);
        assert_eq!(chain.names(), ["client-certificate", "bootstrap-token"]);

        let md = metadata(&[&format!("Bearer {token}")]);
        assert_eq!(
            run(&chain, &Caller::from_metadata(&md)),
            Ok(id("foo", "sleep"))
        );

        let md = metadata(&[]);
        let err = run(&chain, &Caller::from_metadata(&md)).unwrap_err();
        let AuthError::AllFailed(refusals) = &err else {
            panic!("{err}")
        };
        assert_eq!(refusals.len(), 2);
        assert!(err.to_string().contains("client-certificate"), "{err}");
        assert!(err.to_string().contains("bootstrap-token"), "{err}");

        let empty = Chain::new();
        let err = run(&empty, &Caller::from_metadata(&md)).unwrap_err();
        assert!(err.to_string().contains("no authenticators"), "{err}");
    }

    #[test]
    fn a_client_certificate_is_its_identity_only_if_it_chains_to_the_roots() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = CertificateAuthority::generate_root(
            td.clone(),
            KeyAlgorithm::EcdsaP256,
            crate::ca::DEFAULT_ROOT_TTL,
        )
        .unwrap();
        let other = CertificateAuthority::generate_root(
            td,
            KeyAlgorithm::EcdsaP256,
            crate::ca::DEFAULT_ROOT_TTL,
        )
        .unwrap();
        let auth = PeerCertificate::new(Credentials::new(ca.trust_bundle().clone()));
        let md = MetadataMap::new();

        let good = ca
            .issue(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256, None)
            .unwrap();
        let caller = Caller {
            peer_certificates: Some(good.chain()),
            ..Caller::from_metadata(&md)
        };
        assert_eq!(run(&auth, &caller), Ok(id("foo", "sleep")));

        let foreign = other
            .issue(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256, None)
            .unwrap();
        let caller = Caller {
            peer_certificates: Some(foreign.chain()),
            ..Caller::from_metadata(&md)
        };
        let err = run(&auth, &caller).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        let caller = Caller::from_metadata(&md);
        assert!(matches!(
            run(&auth, &caller),
            Err(AuthError::Missing { .. })
        ));
    }
}
