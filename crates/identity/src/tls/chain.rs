//! X.509 path validation against the trust bundle, with failures mapped to rustls errors that
//! say why (expired, not yet valid, unknown issuer, …).

use std::time::SystemTime;

use rustls::{CertificateError, Error, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::bundle::TrustBundle;
use crate::crypto::provider;

/// Which end of a TLS connection presented the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A client certificate (checked by a server): EKU clientAuth.
    Client,
    /// A server certificate (checked by a client): EKU serverAuth.
    Server,
}

/// Verifies `chain` (leaf first; intermediates and the root may follow) against `bundle`.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    usage: Usage,
    now: SystemTime,
) -> Result<(), Error> {
    let roots = bundle.root_store();
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
    verify_with_store(leaf, intermediates, &roots, usage, now)
}

/// Path validation with a prepared root store (the verifiers' hot path).
pub(crate) fn verify_with_store(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    usage: Usage,
    now: UnixTime,
) -> Result<(), Error> {
    if roots.is_empty() {
        // Fail closed: no roots means nothing is trusted.
        return Err(CertificateError::UnknownIssuer.into());
    }
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(pki_error)?;
    let algorithms = provider().signature_verification_algorithms.all;
    let eku = match usage {
        Usage::Client => webpki::KeyUsage::client_auth(),
        Usage::Server => webpki::KeyUsage::server_auth(),
    };
    cert.verify_for_usage(
        algorithms,
        &roots.roots,
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map(|_| ())
    .map_err(pki_error)
}

/// webpki errors as the rustls errors that carry context (times, names).
fn pki_error(error: webpki::Error) -> Error {
    use webpki::Error as E;
    match error {
        E::CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }.into()
        }
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }.into()
        }
        E::InvalidCertValidity => CertificateError::Expired.into(),
        E::UnknownIssuer => CertificateError::UnknownIssuer.into(),
        // A chain signed by a key no trusted root holds, under a trusted root's name: another
        // CA that happens to use the same subject. Say so rather than "bad signature".
        E::InvalidSignatureForPublicKey => CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(WebPkiError(
                "unknown issuer: the chain is signed by a key that no trusted root holds (a different CA with the same name?)"
                    .to_owned(),
            )),
        ))
        .into(),
        E::CertRevoked => CertificateError::Revoked.into(),
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding.into(),
        other => CertificateError::Other(rustls::OtherError(std::sync::Arc::new(WebPkiError(
            format!("{other}"),
        ))))
        .into(),
    }
}

#[derive(Debug)]
struct WebPkiError(String);

impl std::fmt::Display for WebPkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebPkiError {}

/// A handshake or verification error in words: rustls prints its own context-carrying errors
/// well but shows wrapped errors (trust domain, identity mismatch) in debug form; this unwraps
/// them. Accepts the `io::Error` tokio-rustls returns.
pub fn describe_tls_error(error: &std::io::Error) -> String {
    // tokio-rustls may wrap the rustls error in more than one io::Error layer.
    let mut current = error;
    loop {
        let Some(inner) = current.get_ref() else {
            return current.to_string();
        };
        if let Some(tls) = inner.downcast_ref::<Error>() {
            return describe_rustls_error(tls);
        }
        match inner.downcast_ref::<std::io::Error>() {
            Some(io) => current = io,
            None => return current.to_string(),
        }
    }
}

/// [`describe_tls_error`] for a `rustls::Error`.
pub fn describe_rustls_error(error: &Error) -> String {
    match error {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("invalid peer certificate: {other}")
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "invalid peer certificate: unknown issuer (the chain does not lead to a trusted root)"
                .to_owned()
        }
        Error::NoCertificatesPresented => "the peer presented no certificate".to_owned(),
        other => other.to_string(),
    }
}
