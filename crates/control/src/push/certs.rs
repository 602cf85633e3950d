//! Which workload certificate each connected proxy holds, for `meshward proxy-status`.
//!
//! Two facts are known for certain, and nothing else is used:
//! - the certificate a proxy presents when it opens its config stream (mutual TLS: the proxy
//!   holds it at that moment);
//! - every certificate this control plane's CA issues afterwards, with the identity it certifies
//!   and the address that asked for it. A proxy renews over the CA service from its pod's
//!   address, the same address its config stream comes from, so a certificate issued to the
//!   stream's identity at the stream's address is the one that proxy now holds.
//!
//! When several open streams share an identity and an address (replicas on one loopback
//! address), a renewal cannot be attributed to one of them: their certificate becomes unknown
//! rather than a guess.

use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use meshward_identity::CertInfo;
use meshward_identity::service::CaService;
use meshward_identity::service::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use meshward_identity::service::proto::{IstioCertificateRequest, IstioCertificateResponse};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use super::ProxyRegistry;

/// How the control plane knows a proxy's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertificateOrigin {
    /// Presented by the proxy when it opened its config stream.
    Presented,
    /// Issued by this control plane's CA to the proxy's identity at the proxy's address after
    /// the stream opened (a renewal).
    Renewed,
}

/// The workload certificate a proxy holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// How this is known.
    pub origin: CertificateOrigin,
    /// When the control plane learnt it.
    pub seen_at: Timestamp,
}

impl HeldCertificate {
    /// The facts of `leaf`, learnt now.
    pub fn from_info(leaf: &CertInfo, origin: CertificateOrigin) -> Self {
        Self {
            serial: leaf.serial.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            origin,
            seen_at: Timestamp::now(),
        }
    }

    /// The leaf of a presented chain, when it parses.
    pub fn presented(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = CertInfo::parse(chain.first()?).ok()?;
        Some(Self::from_info(&leaf, CertificateOrigin::Presented))
    }
}

/// The CA service, telling the proxy registry about every certificate it issues.
#[derive(Debug, Clone)]
pub struct RecordingCa {
    inner: CaService,
    registry: Arc<ProxyRegistry>,
}

impl RecordingCa {
    /// Serves `inner`, recording issued certificates in `registry`.
    pub fn new(inner: CaService, registry: Arc<ProxyRegistry>) -> Self {
        Self { inner, registry }
    }

    /// The tonic service.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for RecordingCa {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr())
            .map(|addr| addr.ip());
        let response = self.inner.create_certificate(request).await?;
        if let Some(address) = caller {
            record(&self.registry, address, response.get_ref());
        }
        Ok(response)
    }
}

/// Tells the registry about the leaf of an issued chain. The identity is read from the issued
/// certificate itself: it is what the CA certified, whatever the request said.
fn record(registry: &ProxyRegistry, address: IpAddr, issued: &IstioCertificateResponse) {
    let Some(leaf_pem) = issued.cert_chain.first() else {
        return;
    };
    let leaf = meshward_identity::pem::certificates(leaf_pem.as_bytes(), "issued certificate")
        .ok()
        .and_then(|chain| chain.into_iter().next())
        .and_then(|der| CertInfo::parse(&der).ok());
    let Some(leaf) = leaf else {
        return;
    };
    let Some(identity) = leaf.spiffe_id() else {
        return;
    };
    registry.certificate_issued(
        &identity.uri(),
        address,
        HeldCertificate::from_info(&leaf, CertificateOrigin::Renewed),
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshward_api::protocol::proto::Hello;
    use meshward_identity::{CertificateAuthority, KeyAlgorithm, TrustDomain};

    use super::*;
    use crate::push::status_for;

    #[test]
    fn an_issued_chain_is_recorded_with_the_identity_it_certifies() {
        let ca = CertificateAuthority::generate_root(
            TrustDomain::sanitized("cluster.local").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(3600),
        )
        .unwrap();
        let identity =
            meshward_api::SpiffeId::parse("spiffe://cluster.local/ns/foo/sa/httpbin").unwrap();
        let issued = ca
            .issue(
                &identity,
                KeyAlgorithm::EcdsaP256,
                Some(Duration::from_secs(600)),
            )
            .unwrap();
        let hello = Hello {
            namespace: "foo".into(),
            workload: "httpbin".into(),
            pod_address: String::new(),
            proxy_version: String::new(),
        };
        let registry = ProxyRegistry::default();
        registry.register(status_for(
            &hello,
            &identity,
            Some("10.244.0.2:40000".parse().unwrap()),
        ));
        let response = IstioCertificateResponse {
            cert_chain: issued
                .chain()
                .iter()
                .map(meshward_identity::pem::encode_certificate)
                .collect(),
        };
        record(&registry, "10.244.0.2".parse().unwrap(), &response);
        let held = registry.list()[0].certificate.clone().unwrap();
        assert_eq!(held.serial, issued.leaf().serial);
        assert_eq!(held.not_after, issued.not_after());
        assert_eq!(held.origin, CertificateOrigin::Renewed);
    }
}
