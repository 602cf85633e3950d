//! The two SPIFFE verifiers: a server checking its clients, a client checking its server.

use std::sync::Arc;

use meshward_api::{SpiffeId, TrustDomains};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::chain::{Usage, verify_with_store};
use super::credentials::Credentials;
use super::identity_error::PeerIdentityError;
use crate::cert::CertInfo;
use crate::crypto::provider;

/// Inbound: authentication.md §1.8 server side.
///
/// "1. Client cert **required**. 2. Chain must validate to the `ROOTCA` SDS bundle (standard
/// X.509 path validation, validity window, no custom clock skew). 3. SAN check: at least one SAN
/// must **prefix-match** `spiffe://<td>/` for some td in the §1.2 list. No ns/sa check here —
/// that is AuthorizationPolicy's job."
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    credentials: Arc<Credentials>,
    trust_domains: TrustDomains,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// Verifies clients against the roots in `credentials`, accepting `trust_domains`.
    pub fn new(credentials: Arc<Credentials>, trust_domains: TrustDomains) -> Self {
        Self {
            credentials,
            trust_domains,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let roots = self.credentials.roots();
        verify_with_store(end_entity, intermediates, &roots.store, Usage::Client, now)?;
        let info = parsed(end_entity)?;
        let spiffe: Vec<&String> = info
            .uri_sans
            .iter()
            .filter(|san| san.starts_with(meshward_api::spiffe::SCHEME))
            .collect();
        if spiffe.is_empty() {
            return Err(PeerIdentityError::NoSpiffeId {
                uri_sans: info.uri_sans,
            }
            .into());
        }
        let accepted = spiffe.iter().any(|san| {
            self.trust_domains.all().any(|td| {
                san.strip_prefix(meshward_api::spiffe::SCHEME)
                    .and_then(|rest| rest.strip_prefix(td.as_str()))
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        });
        if !accepted {
            return Err(PeerIdentityError::WrongTrustDomain {
                presented: spiffe.into_iter().cloned().collect(),
                accepted: self.trust_domains.all().cloned().collect(),
            }
            .into());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Outbound: authentication.md §1.8 client side.
///
/// "2. Validates server chain against `ROOTCA`. 3. **Secure naming**: server cert must carry a SAN
/// **exactly equal** to one entry of the expected list […] alias-expanded. **Empty list ⇒ no SAN
/// check** (chain check only)." The TLS server name is not checked: mesh certificates carry no
/// DNS names.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    credentials: Arc<Credentials>,
    expected: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Verifies a server against the roots in `credentials`; `expected` is already
    /// alias-expanded.
    pub fn new(credentials: Arc<Credentials>, expected: Vec<SpiffeId>) -> Self {
        Self {
            credentials,
            expected,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let roots = self.credentials.roots();
        verify_with_store(end_entity, intermediates, &roots.store, Usage::Server, now)?;
        if self.expected.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let info = parsed(end_entity)?;
        let matched = info
            .uri_sans
            .iter()
            .any(|san| self.expected.iter().any(|id| id.to_string() == *san));
        if !matched {
            return Err(PeerIdentityError::IdentityMismatch {
                presented: info.uri_sans,
                expected: self.expected.clone(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn parsed(cert: &CertificateDer<'_>) -> Result<CertInfo, Error> {
    CertInfo::parse(cert).map_err(|_| rustls::CertificateError::BadEncoding.into())
}

/// The peer's certificate facts after a handshake (its SPIFFE URI SAN for authorization, the
/// XFCC hash, expiry for `/certs`).
pub fn peer_certificate(peer_certificates: Option<&[CertificateDer<'static>]>) -> Option<CertInfo> {
    peer_certificates
        .and_then(|chain| chain.first())
        .and_then(|leaf| CertInfo::parse(leaf).ok())
}

/// After a resumed handshake: is the peer's certificate still within its validity period? A
/// resumed session skips verification (RFC 8446 §2.2), and its certificate may have expired
/// since the handshake that verified it; an expired peer is refused (fail closed). `Err` says
/// why in words.
pub fn resumed_peer_is_current(peer: &CertInfo, now: jiff::Timestamp) -> Result<(), String> {
    if now > peer.not_after {
        return Err(format!(
            "the resumed session's peer certificate expired at {}",
            peer.not_after
        ));
    }
    Ok(())
}
