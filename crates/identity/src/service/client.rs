//! The workload side of the CA service: dial the CA over TLS, check that it is the CA (secure
//! naming), send a CSR with the caller's credentials, and turn the answer into a
//! [`WorkloadCertificate`].

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use meshward_api::{SpiffeId, TrustDomains};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::auth::{AUTHORIZATION, BEARER_PREFIX};
use super::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use super::proto::{IstioCertificateRequest, IstioCertificateResponse};
use super::tls::ca_client_tls_config;
use crate::bundle::TrustBundle;
use crate::pem;
use crate::tls::{
    ConfigError, Credentials, Usage, describe_rustls_error, describe_tls_error, verify_chain,
};
use crate::workload::{CertificateRequest, KeyAlgorithm, WorkloadCertError, WorkloadCertificate};

/// Default time allowed for connecting: TCP, and the TLS handshake (tonic applies the same limit
/// to the whole dial).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time allowed for one `CreateCertificate` call.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a certificate could not be obtained from the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is misconfigured (address, expected identities, token).
    #[error("CA client configuration: {0}")]
    Config(String),
    /// The TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] ConfigError),
    /// No TCP connection to the CA.
    #[error("cannot reach the CA at {address}: {reason}")]
    Unreachable {
        /// `host:port` dialled.
        address: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The TLS handshake with the CA failed: wrong server identity, unknown issuer, expired
    /// certificate, or the CA refused this client's certificate.
    #[error("TLS handshake with the CA at {address} failed: {reason}")]
    Handshake {
        /// `host:port` dialled.
        address: String,
        /// rustls' reason.
        reason: String,
    },
    /// The CA did not accept this caller's credentials (no or wrong token, no valid client
    /// certificate), or refused an impersonation request.
    #[error("the CA refused to authenticate this caller: {message}")]
    Unauthenticated {
        /// The CA's message (Istio: "request authenticate failure").
        message: String,
    },
    /// The CA authenticated the caller and refused the request.
    #[error("the CA refused the request ({code:?}): {message}")]
    Refused {
        /// The gRPC status code (`InvalidArgument` for a bad CSR or lifetime).
        code: Code,
        /// The CA's message, e.g. "CSR signing error (requested TTL … is greater than the max
        /// allowed TTL …)".
        message: String,
    },
    /// The call failed below the CA (HTTP/2, timeout, connection lost).
    #[error("calling the CA at {address} failed ({code:?}): {message}")]
    Transport {
        /// `host:port` dialled.
        address: String,
        /// The gRPC status code tonic reported.
        code: Code,
        /// What went wrong.
        message: String,
    },
    /// The CA answered with something that is not a usable chain.
    #[error("the CA returned an unusable certificate chain: {0}")]
    BadResponse(String),
    /// The CA certified another identity than the one this workload expects to be.
    #[error("the CA issued a certificate for {issued}, but this workload is {expected}")]
    WrongIdentity {
        /// The identity the workload expected.
        expected: Box<SpiffeId>,
        /// The identity in the issued leaf.
        issued: Box<SpiffeId>,
    },
    /// The key, CSR or the resulting credentials could not be built.
    #[error(transparent)]
    Credentials(#[from] WorkloadCertError),
}

/// How to reach and recognise the CA, and what to prove to it.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    address: String,
    ca_identities: Vec<SpiffeId>,
    trust_domains: TrustDomains,
    credentials: Arc<Credentials>,
    token: Option<String>,
    server_name: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl CaClientConfig {
    /// The CA at `address` (`host:port`, istiod: `istiod.istio-system.svc:15012`), whose
    /// certificate must carry `ca_identity` (secure naming) and chain to the roots in
    /// `credentials`. The certificate in `credentials`, if any and unexpired, is presented to the
    /// CA (renewal by certificate).
    pub fn new(
        address: impl Into<String>,
        ca_identity: SpiffeId,
        credentials: Arc<Credentials>,
    ) -> Self {
        let trust_domains = TrustDomains::new(ca_identity.trust_domain().clone(), []);
        Self {
            address: address.into(),
            ca_identities: vec![ca_identity],
            trust_domains,
            credentials,
            token: None,
            server_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sends `authorization: Bearer <token>` with every request (a bootstrap token, or later a
    /// Kubernetes service-account token).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also accepts `identity` as the CA's (several istiod deployments, a CA moving accounts).
    pub fn with_ca_identity(mut self, identity: SpiffeId) -> Self {
        if !self.ca_identities.contains(&identity) {
            self.ca_identities.push(identity);
        }
        self
    }

    /// The mesh trust domain and aliases: the CA's identity is accepted in any of them (§1.2).
    pub fn with_trust_domains(mut self, trust_domains: TrustDomains) -> Self {
        self.trust_domains = trust_domains;
        self
    }

    /// The TLS server name (SNI) to send; by default the host part of the address.
    pub fn with_server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = Some(server_name.into());
        self
    }

    /// Time limits for the TCP connect and for each call.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }
}

/// A connection to the CA's `IstioCertificateService`. Cheap to clone; the channel reconnects
/// by itself after a lost connection.
#[derive(Debug, Clone)]
pub struct CaClient {
    grpc: IstioCertificateServiceClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
    address: String,
}

impl CaClient {
    /// Connects now: an unreachable CA or a failed handshake (wrong identity, unknown issuer) is
    /// reported here rather than at the first call.
    pub async fn connect(config: CaClientConfig) -> Result<Self, ClientError> {
        let (endpoint, dialer, authorization) = prepare(&config)?;
        let channel = endpoint.connect_with_connector(dialer).await.map_err(|e| {
            transport_error(
                &config.address,
                Code::Unavailable,
                &e.to_string(),
                e.source(),
            )
        })?;
        Ok(Self::from_channel(channel, authorization, config.address))
    }

    /// Connects at the first call (for a workload that starts before its CA is reachable).
    pub fn connect_lazy(config: CaClientConfig) -> Result<Self, ClientError> {
        let (endpoint, dialer, authorization) = prepare(&config)?;
        let channel = endpoint.connect_with_connector_lazy(dialer);
        Ok(Self::from_channel(channel, authorization, config.address))
    }

    fn from_channel(
        channel: Channel,
        authorization: Option<MetadataValue<Ascii>>,
        address: String,
    ) -> Self {
        Self {
            grpc: IstioCertificateServiceClient::new(channel),
            authorization,
            address,
        }
    }

    /// The CA's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `csr_pem` and returns the issued chain, leaf first and root last. `validity` is the
    /// requested lifetime in whole seconds; `None` (or under a second) leaves it to the CA's
    /// default.
    pub async fn create_certificate(
        &self,
        csr_pem: &str,
        validity: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, ClientError> {
        let validity_duration = validity
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let response = self
            .call(IstioCertificateRequest {
                csr: csr_pem.to_owned(),
                validity_duration,
                metadata: None,
            })
            .await?;
        let mut chain = Vec::with_capacity(response.cert_chain.len());
        for (i, element) in response.cert_chain.iter().enumerate() {
            // Istio sends one certificate per element; older CAs concatenated several in one.
            let what = format!("cert_chain[{i}]");
            chain.extend(
                pem::certificates(element.as_bytes(), &what)
                    .map_err(|e| ClientError::BadResponse(e.to_string()))?,
            );
        }
        if chain.is_empty() {
            return Err(ClientError::BadResponse(
                "the response holds no certificate".to_owned(),
            ));
        }
        Ok(chain)
    }

    /// One `CreateCertificate` call as is, with this client's `authorization` (for callers that
    /// set request metadata themselves).
    pub async fn call(
        &self,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, ClientError> {
        let mut request = Request::new(request);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        // The generated client needs `&mut`; clones share the channel.
        self.grpc
            .clone()
            .create_certificate(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(&status))
    }

    /// Obtains credentials for `identity`: generates a key of `algorithm` and a CSR locally (the
    /// key never leaves this process), asks the CA, and checks the answer: the chain must verify
    /// against `roots` and the leaf must carry exactly `identity`.
    pub async fn fetch(
        &self,
        identity: &SpiffeId,
        algorithm: KeyAlgorithm,
        roots: TrustBundle,
        validity: Option<Duration>,
    ) -> Result<WorkloadCertificate, ClientError> {
        let request = CertificateRequest::generate(identity, algorithm)?;
        let chain = self.create_certificate(&request.csr_pem, validity).await?;
        verify_chain(&chain, &roots, Usage::Client, SystemTime::now()).map_err(|e| {
            ClientError::BadResponse(format!(
                "the issued certificate does not verify against the trust bundle: {}",
                describe_rustls_error(&e)
            ))
        })?;
        let cert = WorkloadCertificate::new(request.key, chain, roots)?;
        if cert.identity() != identity {
            return Err(ClientError::WrongIdentity {
                expected: Box::new(identity.clone()),
                issued: Box::new(cert.identity().clone()),
            });
        }
        Ok(cert)
    }

    fn status_error(&self, status: &Status) -> ClientError {
        match status.code() {
            Code::Unauthenticated => ClientError::Unauthenticated {
                message: status.message().to_owned(),
            },
            // What the CA itself decides; anything else comes from the transport.
            Code::InvalidArgument
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Internal
            | Code::Unimplemented
            | Code::ResourceExhausted => ClientError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            },
            code => transport_error(&self.address, code, status.message(), status.source()),
        }
    }
}

/// The endpoint, the TLS dialer and the authorization value for `config`.
fn prepare(
    config: &CaClientConfig,
) -> Result<(Endpoint, Dialer, Option<MetadataValue<Ascii>>), ClientError> {
    if config.ca_identities.is_empty() {
        return Err(ClientError::Config(
            "no expected CA identity: the CA's certificate must be checked against one".to_owned(),
        ));
    }
    // `http` although the connection is TLS: the dialer below does the TLS itself, and tonic
    // refuses an `https` URI unless it does the TLS. The scheme only fills the `:scheme`
    // pseudo-header, which gRPC servers (istiod's included) do not check.
    let uri: Uri = format!("http://{}", config.address)
        .parse()
        .map_err(|e| ClientError::Config(format!("CA address {:?}: {e}", config.address)))?;
    let (Some(host), Some(_port)) = (uri.host(), uri.port_u16()) else {
        return Err(ClientError::Config(format!(
            "CA address {:?}: expected host:port",
            config.address
        )));
    };
    let name = config.server_name.clone().unwrap_or_else(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    });
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| ClientError::Config(format!("TLS server name {name:?}: {e}")))?;
    let tls = ca_client_tls_config(
        config.credentials.clone(),
        &config.trust_domains,
        &config.ca_identities,
    )?;
    let authorization = config
        .token
        .as_ref()
        .map(|token| {
            MetadataValue::try_from(format!("{BEARER_PREFIX}{token}")).map_err(|_| {
                ClientError::Config(
                    "the token cannot be sent as gRPC metadata (must be printable ASCII)"
                        .to_owned(),
                )
            })
        })
        .transpose()?;
    let endpoint = Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout);
    let dialer = Dialer {
        address: config.address.clone(),
        server_name,
        tls: TlsConnector::from(tls),
        connect_timeout: config.connect_timeout,
    };
    Ok((endpoint, dialer, authorization))
}

/// Dials TCP and runs the TLS handshake for tonic's channel.
#[derive(Clone)]
struct Dialer {
    address: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = DialError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, DialError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), DialError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // The configured address is dialled, not the URI: they are the same, and this keeps the
        // server name and the address from ever disagreeing.
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(this.connect_timeout, TcpStream::connect(&this.address))
                .await
                .map_err(|_| {
                    DialError::Unreachable(format!("timed out after {:?}", this.connect_timeout))
                })?
                .map_err(|e| DialError::Unreachable(e.to_string()))?;
            // gRPC messages are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            let tls = this
                .tls
                .connect(this.server_name.clone(), tcp)
                .await
                .map_err(|e| DialError::Handshake(describe_tls_error(&e)))?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A dial failure; travels inside tonic's error chain and is found again by [`transport_error`].
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Handshake(String),
}

/// A transport failure as a [`ClientError`]: a dial failure or a TLS error found anywhere in
/// the error's causes becomes `Unreachable` or `Handshake` (a TLS 1.3 server that refuses the
/// client's certificate says so only after the client finished its side of the handshake, so the
/// alert surfaces at the first read, deep inside hyper's error); anything else is `Transport`.
fn transport_error(
    address: &str,
    code: Code,
    headline: &str,
    source: Option<&(dyn StdError + 'static)>,
) -> ClientError {
    for cause in causes(source) {
        if let Some(dial) = cause.downcast_ref::<DialError>() {
            return match dial {
                DialError::Unreachable(reason) => ClientError::Unreachable {
                    address: address.to_owned(),
                    reason: reason.clone(),
                },
                DialError::Handshake(reason) => ClientError::Handshake {
                    address: address.to_owned(),
                    reason: reason.clone(),
                },
            };
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return ClientError::Handshake {
                address: address.to_owned(),
                reason: describe_rustls_error(tls),
            };
        }
    }
    let mut message = headline.to_owned();
    for cause in causes(source) {
        let part = cause.to_string();
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
    }
    ClientError::Transport {
        address: address.to_owned(),
        code,
        message,
    }
}

/// `first` and its causes. `io::Error::source` skips the error an `io::Error` wraps, so that
/// wrapped error is visited explicitly.
fn causes<'a>(
    first: Option<&'a (dyn StdError + 'static)>,
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = first;
    std::iter::from_fn(move || {
        let current = next?;
        next = match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &'a (dyn StdError + 'static)),
            None => current.source(),
        };
        Some(current)
    })
}
