//! The workload certificate in control-plane mode: the CA service certifies the identity its
//! bootstrap token stands for (authentication.md §1.5: "issued for the authenticated caller
//! identity, not whatever the CSR requested"), so the proxy learns its identity from the first
//! certificate, then keeps it fresh through the same service (`RemoteCa`, renewing with the
//! certificate itself once it has one).

use std::sync::Arc;
use std::time::Duration;

use meshward_api::{SpiffeId, TrustDomain};
use meshward_identity::service::{CaClient, CaClientConfig, RemoteCa};
use meshward_identity::{
    CertInfo, CertManager, CertificateRequest, Credentials, KeyAlgorithm, RotationPolicy,
    TrustBundle,
};

use super::ControlOptions;
use super::client::Backoff;

/// Why no certificate could be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The roots file holds no usable certificate.
    #[error("{0}")]
    Roots(String),
    /// The options are unusable (trust domain, identities, token).
    #[error("{0}")]
    Config(String),
    /// The CA certified another namespace than the workload's.
    #[error(
        "the bootstrap token stands for {identity}, but this proxy serves namespace {namespace}"
    )]
    WrongNamespace {
        /// The certified identity.
        identity: Box<SpiffeId>,
        /// The workload's namespace.
        namespace: String,
    },
}

/// A proxy's certificate, kept fresh.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The live credentials (certificate and roots).
    pub credentials: Arc<Credentials>,
    /// The identity the CA certified.
    pub identity: SpiffeId,
    /// The rotation loop; dropping it stops renewals.
    pub manager: CertManager,
    /// The roots the control plane must chain to.
    pub roots: TrustBundle,
}

/// The control plane's expected identity.
pub(crate) fn control_plane_identity(options: &ControlOptions) -> Result<SpiffeId, BootstrapError> {
    let td = TrustDomain::sanitized(&options.trust_domain)
        .map_err(|e| BootstrapError::Config(format!("trust domain: {e}")))?;
    let (ns, sa) = options
        .control_plane_identity
        .clone()
        .unwrap_or_else(|| ("istio-system".to_owned(), "istiod".to_owned()));
    SpiffeId::new(td, &ns, &sa)
        .map_err(|e| BootstrapError::Config(format!("control plane identity: {e}")))
}

/// Obtains the first certificate for the workload in `namespace` (retrying with backoff while
/// the CA is unreachable or refuses) and starts rotating it.
pub async fn bootstrap_certificate(
    options: &ControlOptions,
    namespace: &str,
) -> Result<Bootstrapped, BootstrapError> {
    let pem = std::fs::read(&options.root_cert).map_err(|source| BootstrapError::Io {
        path: options.root_cert.clone(),
        source,
    })?;
    let roots = TrustBundle::from_pem(&pem, &options.root_cert.display().to_string())
        .map_err(|e| BootstrapError::Roots(e.to_string()))?;
    let token = match &options.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| BootstrapError::Io {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let credentials = Credentials::new(roots.clone());
    let ca_identity = control_plane_identity(options)?;
    let address = options
        .ca_address
        .clone()
        .unwrap_or_else(|| options.address.clone());
    let mut config = CaClientConfig::new(address, ca_identity.clone(), credentials.clone());
    if let Some(token) = token {
        config = config.with_token(token);
    }
    let client =
        CaClient::connect_lazy(config).map_err(|e| BootstrapError::Config(e.to_string()))?;

    // Which identity does the token stand for? The CSR's own SAN is ignored by the CA.
    let placeholder = SpiffeId::new(ca_identity.trust_domain().clone(), namespace, "default")
        .map_err(|e| BootstrapError::Config(e.to_string()))?;
    let mut backoff = Backoff::new();
    let identity = loop {
        let attempt = async {
            let csr = CertificateRequest::generate(&placeholder, KeyAlgorithm::EcdsaP256)
                .map_err(|e| e.to_string())?;
            let chain = client
                .create_certificate(&csr.csr_pem, Some(Duration::from_secs(60)))
                .await
                .map_err(|e| e.to_string())?;
            let leaf = chain
                .first()
                .ok_or_else(|| "the CA returned no certificate".to_owned())?;
            CertInfo::parse(leaf)
                .map_err(|e| e.to_string())?
                .spiffe_id()
                .ok_or_else(|| "the CA's certificate carries no SPIFFE ID".to_owned())
        };
        match attempt.await {
            Ok(identity) => break identity,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot obtain a workload certificate from the CA yet");
                tokio::time::sleep(delay).await;
            }
        }
    };
    if identity.namespace() != namespace {
        return Err(BootstrapError::WrongNamespace {
            identity: Box::new(identity),
            namespace: namespace.to_owned(),
        });
    }
    let source = RemoteCa::new(
        client,
        identity.clone(),
        KeyAlgorithm::EcdsaP256,
        options.cert_ttl,
        credentials.clone(),
    );
    let manager = CertManager::spawn(
        Arc::new(source),
        credentials.clone(),
        RotationPolicy::default(),
    );
    manager.ready().await;
    tracing::info!(%identity, "workload certificate obtained from the CA");
    Ok(Bootstrapped {
        credentials,
        identity,
        manager,
        roots,
    })
}
