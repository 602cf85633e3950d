//! TLS for the CA port (istiod's 15012): the server presents the control plane's certificate
//! and *may* receive a client certificate; the client checks the server's identity (secure
//! naming) and presents its own certificate only when it has a valid one.
//!
//! The mesh data-plane configurations of [`crate::tls::MeshTls`] require a client certificate
//! (§1.8 server step 1), which a workload asking for its first certificate cannot have; that is
//! the whole difference here.

use std::sync::Arc;

use jiff::Timestamp;
use meshward_api::{SpiffeId, TrustDomains};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::crypto::provider;
use crate::tls::alpn::H2;
use crate::tls::{ConfigError, Credentials, SpiffeClientVerifier, SpiffeServerVerifier};

/// The server configuration of the CA port: presents the current certificate in `credentials`
/// (the control plane identity), offers client authentication without requiring it, and verifies
/// an offered client certificate exactly as a mesh server does (§1.8: chain to the roots in
/// `credentials`, SPIFFE ID in one of `trust_domains`). ALPN `h2`: gRPC.
///
/// A client that offers an invalid certificate fails the handshake instead of being treated as
/// anonymous, as Go's `VerifyClientCertIfGiven` (istiod) behaves.
pub fn ca_server_tls_config(
    credentials: Arc<Credentials>,
    trust_domains: TrustDomains,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let verifier = Arc::new(OptionalClientCert(SpiffeClientVerifier::new(
        credentials.clone(),
        trust_domains,
    )));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServingCert(credentials)));
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for talking to the CA: the server must chain to the roots in
/// `credentials` and carry one of `expected_ca` (alias-expanded over `trust_domains`) as its
/// SPIFFE ID (§1.8 client step 3, secure naming). The client presents its current certificate
/// when it has an unexpired one (renewal by certificate) and none otherwise (bootstrap by token).
///
/// `expected_ca` must not be empty: for the mesh data plane an empty list means "chain check
/// only", but any workload certificate chains to the mesh roots, so without a name check any
/// workload could pose as the CA and collect CSRs and bootstrap tokens.
pub fn ca_client_tls_config(
    credentials: Arc<Credentials>,
    trust_domains: &TrustDomains,
    expected_ca: &[SpiffeId],
) -> Result<Arc<ClientConfig>, ConfigError> {
    if expected_ca.is_empty() {
        return Err(ConfigError::from(Error::General(
            "the CA's expected identities are empty: secure naming needs at least one".to_owned(),
        )));
    }
    let mut expanded: Vec<SpiffeId> = Vec::new();
    for id in expected_ca {
        for alias in trust_domains.expand(id) {
            if !expanded.contains(&alias) {
                expanded.push(alias);
            }
        }
    }
    let verifier = Arc::new(SpiffeServerVerifier::new(credentials.clone(), expanded));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(ValidCertIfAny(credentials)));
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(Arc::new(config))
}

/// [`SpiffeClientVerifier`] with client authentication offered but optional.
#[derive(Debug)]
struct OptionalClientCert(SpiffeClientVerifier);

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Bootstrap callers have no certificate yet; they authenticate with a token instead.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The CA's serving certificate: whatever is current when a handshake starts, so a renewed
/// control-plane certificate is used without restarting the server.
#[derive(Debug)]
struct ServingCert(Arc<Credentials>);

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.usable_certified_key()
    }
}

/// A client certificate only when there is an unexpired one. Unlike the data plane, having none
/// is normal here (the first request of a workload), so it is not logged as an error.
#[derive(Debug)]
struct ValidCertIfAny(Arc<Credentials>);

impl ResolvesClientCert for ValidCertIfAny {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let active = self.0.certificate()?;
        (Timestamp::now() <= active.cert.not_after()).then(|| active.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.certificate().is_some()
    }
}
