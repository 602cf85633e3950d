//! Why a peer's certificate chained correctly but its identity was refused.

use std::sync::Arc;

use meshward_api::{SpiffeId, TrustDomain};

/// An identity check failure; carried inside `rustls::CertificateError::Other` so the handshake
/// error says exactly what was presented and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdentityError {
    /// The certificate has no `spiffe://` URI SAN.
    #[error("the peer certificate carries no SPIFFE ID (URI SANs: {uri_sans:?})")]
    NoSpiffeId {
        /// The URI SANs it has.
        uri_sans: Vec<String>,
    },
    /// authentication.md §1.8 server step 3: no SAN prefix-matches `spiffe://<td>/` for an
    /// accepted trust domain.
    #[error(
        "wrong trust domain: the peer presents {presented:?}, but only trust domains [{}] are accepted",
        join(accepted)
    )]
    WrongTrustDomain {
        /// The SPIFFE URI SANs presented.
        presented: Vec<String>,
        /// The mesh trust domain and its aliases.
        accepted: Vec<TrustDomain>,
    },
    /// §1.8 client step 3 (secure naming): no SAN equals an expected server identity.
    #[error(
        "server identity mismatch: expected one of [{}], the certificate presents {presented:?}",
        join(expected)
    )]
    IdentityMismatch {
        /// The URI SANs presented.
        presented: Vec<String>,
        /// The identities expected for the destination.
        expected: Vec<SpiffeId>,
    },
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<PeerIdentityError> for rustls::Error {
    fn from(e: PeerIdentityError) -> Self {
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))).into()
    }
}
