//! PEM decoding of certificates and private keys, with errors that say what was expected.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM input that does not hold what it should.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text has no `CERTIFICATE` block.
    #[error("{what}: expected at least one PEM \"CERTIFICATE\" block, found none")]
    NoCertificate {
        /// What was being read (usually a file name).
        what: String,
    },
    /// The text has no private key block.
    #[error(
        "{what}: expected a PEM private key (\"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\"), found none"
    )]
    NoPrivateKey {
        /// What was being read.
        what: String,
    },
    /// A PEM block is malformed.
    #[error("{what}: malformed PEM: {detail}")]
    Malformed {
        /// What was being read.
        what: String,
        /// The decoder's message.
        detail: String,
    },
}

/// Every `CERTIFICATE` block in `pem`, in order. `what` names the input in errors.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoPrivateKey {
            what: what.to_owned(),
        },
        other => PemError::Malformed {
            what: what.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// PEM text for a list of certificates, each block ending in a newline (Istio's `cert_chain`
/// elements are exactly these blocks, §1.4).
pub fn encode_certificate(cert: &CertificateDer<'_>) -> String {
    encode("CERTIFICATE", cert.as_ref())
}

/// PEM text for a DER blob under `label`.
pub fn encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_certificates() {
        let der = CertificateDer::from(vec![1u8, 2, 3, 4, 5, 6, 7]);
        let pem = encode_certificate(&der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAQIDBAUGBw==\n"));
        assert_eq!(certificates(pem.as_bytes(), "x").unwrap(), vec![der]);
    }

    #[test]
    fn names_the_input_when_empty() {
        let err = certificates(b"hello", "ca-cert.pem").unwrap_err();
        assert!(
            err.to_string().starts_with("ca-cert.pem: expected"),
            "{err}"
        );
        let err = private_key(b"", "ca-key.pem").unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }
}
