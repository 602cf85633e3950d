//! The CA service as a certificate source for rotation: a workload renews through the same
//! gRPC call it bootstrapped with.

use std::sync::Arc;
use std::time::Duration;

use meshward_api::SpiffeId;

use super::client::CaClient;
use crate::rotation::{CertificateSource, FetchError, FetchFuture};
use crate::tls::Credentials;
use crate::workload::KeyAlgorithm;

/// Obtains `identity`'s certificates from a remote CA, verifying each against the roots the
/// workload currently trusts.
#[derive(Debug, Clone)]
pub struct RemoteCa {
    client: CaClient,
    identity: SpiffeId,
    algorithm: KeyAlgorithm,
    validity: Option<Duration>,
    credentials: Arc<Credentials>,
}

impl RemoteCa {
    /// Certificates for `identity` through `client`; `credentials` supplies the trust bundle
    /// (and, once the first certificate is in, lets renewals authenticate with it).
    pub fn new(
        client: CaClient,
        identity: SpiffeId,
        algorithm: KeyAlgorithm,
        validity: Option<Duration>,
        credentials: Arc<Credentials>,
    ) -> Self {
        Self {
            client,
            identity,
            algorithm,
            validity,
            credentials,
        }
    }
}

impl CertificateSource for RemoteCa {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let roots = self.credentials.roots().bundle.clone();
            self.client
                .fetch(&self.identity, self.algorithm, roots, self.validity)
                .await
                .map_err(|e| FetchError(e.to_string()))
        })
    }
}
