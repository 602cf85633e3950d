//! rustls configurations for mesh mTLS (authentication.md §1.8 and §4).
//!
//! Both ends present the workload certificate from [`Credentials`] and verify the peer against
//! the trust bundle in the same store; certificate rotation and root changes therefore take
//! effect on the next handshake without rebuilding configurations.

mod chain;
mod credentials;
mod identity_error;
mod sessions;
mod tickets;
mod verifier;

use std::sync::Arc;

use meshward_api::{SpiffeId, TrustDomains};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

pub use chain::{Usage, describe_rustls_error, describe_tls_error, verify_chain};
pub use credentials::{ActiveCert, ActiveRoots, Credentials};
pub use identity_error::PeerIdentityError;
pub use sessions::{DESTINATIONS, TICKETS_PER_DESTINATION};
pub use verifier::{
    SpiffeClientVerifier, SpiffeServerVerifier, peer_certificate, resumed_peer_is_current,
};

use crate::crypto::provider;

/// ALPN values of mesh traffic, §4.2. Servers accept these plus the plain protocols; the
/// `istio*` values tell a PERMISSIVE server that the TLS is mesh mTLS, not the application's.
pub mod alpn {
    /// Plain mesh mTLS (TCP).
    pub const ISTIO: &[u8] = b"istio";
    /// Mesh mTLS carrying HTTP/1.1.
    pub const ISTIO_HTTP11: &[u8] = b"istio-http/1.1";
    /// Mesh mTLS carrying HTTP/2.
    pub const ISTIO_H2: &[u8] = b"istio-h2";
    /// TCP with metadata exchange.
    pub const ISTIO_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
    /// HTTP/2.
    pub const H2: &[u8] = b"h2";
    /// HTTP/1.1.
    pub const HTTP11: &[u8] = b"http/1.1";

    /// What a client offers for HTTP/1.1 (§4.2: `istio-http/1.1, istio, http/1.1`).
    pub fn client_http1() -> Vec<Vec<u8>> {
        vec![ISTIO_HTTP11.to_vec(), ISTIO.to_vec(), HTTP11.to_vec()]
    }

    /// What a client offers for HTTP/2 (§4.2: `istio-h2, istio, h2`).
    pub fn client_h2() -> Vec<Vec<u8>> {
        vec![ISTIO_H2.to_vec(), ISTIO.to_vec(), H2.to_vec()]
    }

    /// What a client offers for opaque TCP (§4.2: `istio-peer-exchange, istio`).
    pub fn client_tcp() -> Vec<Vec<u8>> {
        vec![ISTIO_PEER_EXCHANGE.to_vec(), ISTIO.to_vec()]
    }

    /// What an inbound server accepts.
    pub fn server() -> Vec<Vec<u8>> {
        vec![
            H2.to_vec(),
            HTTP11.to_vec(),
            ISTIO_PEER_EXCHANGE.to_vec(),
            ISTIO_H2.to_vec(),
            ISTIO_HTTP11.to_vec(),
            ISTIO.to_vec(),
        ]
    }
}

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the TLS configuration: {0}")]
pub struct ConfigError(#[from] rustls::Error);

/// Builds the TLS configurations of one workload.
#[derive(Debug, Clone)]
pub struct MeshTls {
    credentials: Arc<Credentials>,
    trust_domains: TrustDomains,
    provider: Arc<CryptoProvider>,
}

impl MeshTls {
    /// Configurations presenting and verifying with `credentials`, accepting peers in
    /// `trust_domains` (the mesh trust domain and its aliases).
    pub fn new(credentials: Arc<Credentials>, trust_domains: TrustDomains) -> Self {
        Self {
            credentials,
            trust_domains,
            provider: mesh_provider(),
        }
    }

    /// The live credentials.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The accepted trust domains.
    pub fn trust_domains(&self) -> &TrustDomains {
        &self.trust_domains
    }

    /// Inbound mTLS: a client certificate is required and verified per §1.8; TLS 1.2 and 1.3
    /// (§4.1); ALPN as `alpn`.
    pub fn server_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerConfig>, ConfigError> {
        let verifier = Arc::new(SpiffeClientVerifier::new(
            self.credentials.clone(),
            self.trust_domains.clone(),
        ));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CurrentCert(self.credentials.clone())));
        config.alpn_protocols = alpn;
        // Resumption by stateless tickets only (`tickets`): no session cache to hold per client.
        config.ticketer = tickets::MeshTickets::new(self.credentials.clone());
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// Outbound mTLS towards a destination whose workloads may hold any of `expected` (before
    /// alias expansion; empty means "chain check only", §1.8 client step 3).
    pub fn client_config(
        &self,
        expected: &[SpiffeId],
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<ClientConfig>, ConfigError> {
        let mut expanded: Vec<SpiffeId> = Vec::new();
        for id in expected {
            for alias in self.trust_domains.expand(id) {
                if !expanded.contains(&alias) {
                    expanded.push(alias);
                }
            }
        }
        let verifier = Arc::new(SpiffeServerVerifier::new(
            self.credentials.clone(),
            expanded,
        ));
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentCert(self.credentials.clone())));
        config.alpn_protocols = alpn;
        // Resume sessions with the destination's servers (`tickets`, `sessions`); one store per
        // configuration, and configurations are per trust bundle (the proxy's connector).
        config.resumption =
            rustls::client::Resumption::store(Arc::new(sessions::MeshSessions::default()));
        // Mesh certificates carry no DNS names; SNI carries the `outbound_.…` cluster name set by
        // the caller, never an address.
        config.enable_sni = true;
        Ok(Arc::new(config))
    }
}

/// §4.1: TLS 1.2 suites limited to the ECDHE AES-GCM ones of Istio's list (rustls implements no
/// non-ECDHE suites); TLS 1.3 suites as the provider offers.
fn mesh_provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut p = provider().as_ref().clone();
    p.cipher_suites.retain(|s| {
        matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS13_AES_256_GCM_SHA384
                | C::TLS13_CHACHA20_POLY1305_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    // §4.1: "TLS 1.3 suites | BoringSSL fixed set (AES‑128‑GCM, AES‑256‑GCM, ChaCha20‑Poly1305)",
    // in that order of preference, so two sidecars negotiate AES-128-GCM-SHA256 as Envoys do.
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    Arc::new(p)
}

/// Presents whatever certificate is current when a handshake starts.
#[derive(Debug)]
struct CurrentCert(Arc<Credentials>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.usable_certified_key()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.usable_certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
