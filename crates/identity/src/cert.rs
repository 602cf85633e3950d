//! What a certificate says: subject, SANs, issuer, validity, serial. Used by the CA (to check
//! its own signing certificate), the verifiers (to read the peer's SPIFFE ID) and
//! `meshward ca inspect`.

use jiff::Timestamp;
use meshward_api::SpiffeId;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crypto::sha256_hex;

/// A certificate that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct CertParseError(String);

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Subject distinguished name in RFC 4514 form; empty for Istio workload certificates.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// URI SANs (SPIFFE IDs live here).
    pub uri_sans: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// Whether BasicConstraints says CA.
    pub is_ca: bool,
    /// Public key algorithm, e.g. `ECDSA P-256` or `RSA 2048`.
    pub key_algorithm: String,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub sha256: String,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, CertParseError> {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| CertParseError(e.to_string()))?;
        let validity = cert.validity();
        let timestamp = |t: &x509_parser::time::ASN1Time| {
            Timestamp::from_second(t.timestamp()).map_err(|e| CertParseError(e.to_string()))
        };
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        Ok(Self {
            serial: hex::encode(cert.raw_serial()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: timestamp(&validity.not_before)?,
            not_after: timestamp(&validity.not_after)?,
            uri_sans,
            dns_sans,
            is_ca,
            key_algorithm: key_algorithm(&cert),
            sha256: sha256_hex(der.as_ref()),
        })
    }

    /// The SPIFFE identity: the first URI SAN that parses as one.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.uri_sans
            .iter()
            .find_map(|uri| SpiffeId::parse(uri).ok())
    }

    /// Whether `now` lies inside the validity window.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => match point.key_size() {
            256 => "ECDSA P-256".to_owned(),
            384 => "ECDSA P-384".to_owned(),
            521 => "ECDSA P-521".to_owned(),
            bits => format!("ECDSA {bits}-bit"),
        },
        Ok(_) => match cert
            .public_key()
            .algorithm
            .algorithm
            .to_id_string()
            .as_str()
        {
            "1.3.101.112" => "Ed25519".to_owned(),
            other => format!("OID {other}"),
        },
        Err(_) => "unknown".to_owned(),
    }
}
