//! The server side: `IstioCertificateService.CreateCertificate` answered by the CA, and the
//! function that serves it over TLS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meshward_api::SpiffeId;
use prost_types::value::Kind;
use tokio::net::TcpListener;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use super::auth::{Caller, CallerAuthenticator};
use super::incoming::TlsIncoming;
use super::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use super::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::ca::{CaError, CertificateAuthority};
use crate::cert::CertInfo;
use crate::pem;

/// The message of every authentication failure, Istio's text: callers learn nothing about why
/// (the reason is logged on the CA side).
pub const AUTHENTICATE_FAILURE: &str = "request authenticate failure";

/// The message when a caller asks for another identity, Istio's text.
pub const IMPERSONATION_FAILURE: &str = "request impersonation authentication failure";

/// Request metadata key naming an identity a node agent asks for on a workload's behalf.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Request metadata key choosing one of several signers (Istio's RA mode; not supported here, so
/// ignored and the CA's own key signs).
pub const CERT_SIGNER: &str = "CertSigner";

/// The CA's certificate service.
///
/// Every certificate is issued for the identity the caller *authenticated* as. §1.4: "SAN value
/// source: the **authenticated caller identity**, not whatever the CSR requested (CSR SANs
/// ignored)". A caller can therefore only ever obtain its own identity.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<dyn CallerAuthenticator>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("authenticator", &self.authenticator.name())
            .finish()
    }
}

impl CaService {
    /// Issues certificates from `ca` to callers that `authenticator` accepts (usually a
    /// [`super::Chain`]).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: impl CallerAuthenticator + 'static,
    ) -> Self {
        Self {
            ca,
            authenticator: Arc::new(authenticator),
        }
    }

    /// The CA that signs.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The tonic service, to add to a `tonic::transport::Server` next to other services.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Signs in a blocking task: CSR verification and signing are CPU work (milliseconds with
    /// RSA keys) that must not stall the connections sharing this runtime thread.
    async fn sign(
        &self,
        csr: String,
        identity: SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, Status> {
        let ca = self.ca.clone();
        tokio::task::spawn_blocking(move || ca.sign_csr(&csr, &identity, ttl))
            .await
            .map_err(|e| Status::internal(format!("CSR signing error (signing task failed: {e})")))?
            .map_err(|e| signing_status(&e))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        // Present when the connection is a tokio-rustls stream (see `serve`); the handshake has
        // already verified any client certificate in it.
        let tls = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let peer_certificates = tls.as_ref().and_then(TlsConnectInfo::peer_certs);
        let remote_addr = tls.as_ref().and_then(|info| info.get_ref().remote_addr());
        let caller = Caller {
            metadata: request.metadata(),
            peer_certificates: peer_certificates.as_deref().map(Vec::as_slice),
            remote_addr,
        };
        // §1.5: "Authentication (any one authenticator succeeding) […] Failure ⇒ gRPC
        // `Unauthenticated` "request authenticate failure"."
        let identity = match self.authenticator.authenticate(&caller).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(client = ?remote_addr, reason = %e, "CA: caller not authenticated");
                return Err(Status::unauthenticated(AUTHENTICATE_FAILURE));
            }
        };
        let request = request.into_inner();

        // §1.5: "`ImpersonatedIdentity` (used by ztunnel for node agents): only if
        // `CA_TRUSTED_NODE_ACCOUNTS` authorises the caller; otherwise `Unauthenticated` "request
        // impersonation authentication failure"." No node agent is trusted here.
        if let Some(asked) = impersonated_identity(&request) {
            tracing::warn!(
                client = ?remote_addr,
                caller = %identity,
                impersonated = asked,
                "CA: impersonation refused: no node agent is authorised to ask for other identities"
            );
            return Err(Status::unauthenticated(IMPERSONATION_FAILURE));
        }
        if request
            .metadata
            .as_ref()
            .is_some_and(|m| m.fields.contains_key(CERT_SIGNER))
        {
            tracing::debug!(caller = %identity, "CA: ignoring CertSigner metadata: one signer only");
        }

        // §1.4: "CA default when request ≤ 0".
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs);
        let chain = match self.sign(request.csr, identity.clone(), ttl).await {
            Ok(chain) => chain,
            Err(status) => {
                tracing::warn!(
                    client = ?remote_addr,
                    caller = %identity,
                    code = ?status.code(),
                    error = status.message(),
                    "CA: certificate not issued"
                );
                return Err(status);
            }
        };
        match chain.first().map(CertInfo::parse) {
            Some(Ok(leaf)) => tracing::info!(
                client = ?remote_addr,
                %identity,
                serial = %leaf.serial,
                not_after = %leaf.not_after,
                "CA: issued workload certificate"
            ),
            _ => {
                tracing::info!(client = ?remote_addr, %identity, "CA: issued workload certificate")
            }
        }
        // §1.4 "Chain returned": "leaf, then intermediate chain (`cert-chain.pem` of the CA),
        // then **root as last element**; each PEM cert is a separate list element, each ending
        // in `\n`". `sign_csr` returns that order; each PEM block ends in "\n".
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain.iter().map(pem::encode_certificate).collect(),
        }))
    }
}

/// The identity the request asks to impersonate, if it names one. Istio reads the value as a
/// string and ignores an empty one; any other value (even a non-string) counts as asking, so
/// nothing slips through as "not quite a request".
fn impersonated_identity(request: &IstioCertificateRequest) -> Option<String> {
    let value = request
        .metadata
        .as_ref()?
        .fields
        .get(IMPERSONATED_IDENTITY)?;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => None,
        Some(Kind::StringValue(s)) if s.is_empty() => None,
        Some(Kind::StringValue(s)) => Some(s.clone()),
        Some(other) => Some(format!("{other:?}")),
    }
}

/// The gRPC status for a CA refusal, with Istio's "CSR signing error (…)" wording.
fn signing_status(e: &CaError) -> Status {
    let message = format!("CSR signing error ({e})");
    match e {
        // The caller sent something unusable: the CSR, or a lifetime above the maximum.
        CaError::Csr(_) | CaError::TtlTooLong { .. } => Status::invalid_argument(message),
        // The caller's identity is in a trust domain this CA does not issue for (for example an
        // alias domain's certificate used to renew): a refusal, not a CA fault.
        CaError::ForeignTrustDomain { .. } => Status::permission_denied(message),
        _ => Status::internal(message),
    }
}

/// The server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("the CA gRPC server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves `service` as gRPC over TLS on `listener` (istiod serves it on port 15012) until
/// `shutdown` completes, then lets in-flight calls finish.
///
/// `tls` is usually [`super::ca_server_tls_config`]: a client certificate is optional, so callers
/// without one can authenticate with a bearer token. If `tls` requests client certificates, the
/// verified chain reaches the authenticators. A connection whose handshake fails is logged and
/// dropped; the server keeps running.
pub async fn serve(
    listener: TcpListener,
    service: CaService,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "CA service listening (gRPC over TLS)");
    }
    let incoming = TlsIncoming::new(listener, tls);
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("CA service stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::{Struct, Value};

    use super::*;

    fn with_metadata(key: &str, kind: Option<Kind>) -> IstioCertificateRequest {
        IstioCertificateRequest {
            metadata: Some(Struct {
                fields: BTreeMap::from([(key.to_owned(), Value { kind })]),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn impersonation_is_any_non_empty_value() {
        let asked = |kind| impersonated_identity(&with_metadata(IMPERSONATED_IDENTITY, kind));
        assert_eq!(
            asked(Some(Kind::StringValue(
                "spiffe://cluster.local/ns/a/sa/b".to_owned()
            ))),
            Some("spiffe://cluster.local/ns/a/sa/b".to_owned())
        );
        assert!(asked(Some(Kind::BoolValue(true))).is_some());
        assert_eq!(asked(Some(Kind::StringValue(String::new()))), None);
        assert_eq!(asked(Some(Kind::NullValue(0))), None);
        assert_eq!(asked(None), None);
        assert_eq!(
            impersonated_identity(&with_metadata(
                "WorkloadName",
                Some(Kind::StringValue("x".to_owned()))
            )),
            None
        );
        assert_eq!(
            impersonated_identity(&IstioCertificateRequest::default()),
            None
        );
    }

    #[test]
    fn refusals_map_to_grpc_codes() {
        use tonic::Code;
        let ttl = CaError::TtlTooLong {
            requested: Duration::from_secs(100),
            max: Duration::from_secs(10),
        };
        let status = signing_status(&ttl);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("CSR signing error (requested TTL")
        );
        let csr = CaError::Csr(crate::ca::CsrError::BadSignature);
        assert_eq!(signing_status(&csr).code(), Code::InvalidArgument);
        let other = CaError::Material("broken".to_owned());
        assert_eq!(signing_status(&other).code(), Code::Internal);
    }
}
