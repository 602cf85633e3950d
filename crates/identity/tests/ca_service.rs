#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The CA service end to end: a real gRPC server over TLS on a loopback port, real clients,
//! real certificates (authentication.md §1.4, §1.5).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshward_identity::ca::{DEFAULT_ROOT_TTL, PluginFiles};
use meshward_identity::service::proto::IstioCertificateRequest;
use meshward_identity::service::{
    AUTHENTICATE_FAILURE, BootstrapTokens, CaClient, CaClientConfig, CaService, Chain, ClientError,
    IMPERSONATED_IDENTITY, IMPERSONATION_FAILURE, PeerCertificate, ServeError,
    ca_server_tls_config, serve,
};
use meshward_identity::{
    CertInfo, CertificateAuthority, CertificateRequest, Credentials, KeyAlgorithm, SpiffeId,
    TrustBundle, TrustDomain, TrustDomains,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td(), ns, sa).unwrap()
}

fn istiod() -> SpiffeId {
    id("istio-system", "istiod")
}

/// A running CA service and what a test needs to talk to it.
struct Harness {
    ca: Arc<CertificateAuthority>,
    addr: SocketAddr,
    /// Bootstrap token of `foo/sleep`.
    sleep_token: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    /// Serves a fresh self-signed root CA.
    async fn start() -> Self {
        let ca =
            CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
                .unwrap();
        Self::start_with(ca).await
    }

    /// Serves `ca`, presenting a certificate it issued for istiod.
    async fn start_with(ca: CertificateAuthority) -> Self {
        let ca = Arc::new(ca);
        let serving = ca.issue(&istiod(), KeyAlgorithm::EcdsaP256, None).unwrap();
        let credentials = Credentials::with_certificate(serving).unwrap();
        let tls = ca_server_tls_config(credentials.clone(), TrustDomains::new(td(), [])).unwrap();
        let mut tokens = BootstrapTokens::new();
        let sleep_token = tokens.issue(id("foo", "sleep")).unwrap();
        let authenticators = Chain::new()
            .with(PeerCertificate::new(credentials))
            .with(tokens);
        let service = CaService::new(ca.clone(), authenticators);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, service, tls, async {
            let _ = rx.await;
        }));
        Self {
            ca,
            addr,
            sleep_token,
            shutdown: Some(tx),
            server,
        }
    }

    fn roots(&self) -> TrustBundle {
        self.ca.trust_bundle().clone()
    }

    /// Client config expecting istiod, trusting the CA's roots, with no certificate of its own.
    fn config(&self) -> CaClientConfig {
        CaClientConfig::new(
            self.addr.to_string(),
            istiod(),
            Credentials::new(self.roots()),
        )
    }

    async fn client_with_token(&self, token: &str) -> CaClient {
        CaClient::connect(self.config().with_token(token))
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the server stops after the shutdown signal")
            .unwrap()
            .unwrap();
    }
}

fn uri_sans(chain: &[rustls_pki_types::CertificateDer<'static>]) -> Vec<String> {
    CertInfo::parse(&chain[0]).unwrap().uri_sans
}

#[tokio::test]
async fn a_bootstrap_token_gets_its_own_identity_even_when_the_csr_asks_for_another() {
    let h = Harness::start().await;
    let client = h.client_with_token(&h.sleep_token).await;

    // The CSR asks for an administrator identity; the certificate is for the token's owner.
    let csr = CertificateRequest::generate(&id("istio-system", "admin"), KeyAlgorithm::EcdsaP256)
        .unwrap();
    let chain = client.create_certificate(&csr.csr_pem, None).await.unwrap();
    assert_eq!(uri_sans(&chain), ["spiffe://cluster.local/ns/foo/sa/sleep"]);

    // `fetch` for its own identity succeeds and builds usable credentials...
    let cert = client
        .fetch(
            &id("foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            h.roots(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cert.identity(), &id("foo", "sleep"));
    assert_eq!(
        cert.leaf().uri_sans,
        ["spiffe://cluster.local/ns/foo/sa/sleep"]
    );

    // ...and for another identity it is refused by the client, which checks what it got.
    let err = client
        .fetch(
            &id("istio-system", "admin"),
            KeyAlgorithm::EcdsaP256,
            h.roots(),
            None,
        )
        .await
        .unwrap_err();
    match &err {
        ClientError::WrongIdentity { expected, issued } => {
            assert_eq!(**expected, id("istio-system", "admin"));
            assert_eq!(**issued, id("foo", "sleep"));
        }
        other => panic!("expected WrongIdentity, got {other}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_unauthenticated_with_istios_text() {
    let h = Harness::start().await;
    let csr = CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256).unwrap();

    let wrong = h.client_with_token(&"f".repeat(64)).await;
    let missing = CaClient::connect(h.config()).await.unwrap();
    for client in [wrong, missing] {
        let err = client
            .create_certificate(&csr.csr_pem, None)
            .await
            .unwrap_err();
        match &err {
            ClientError::Unauthenticated { message } => {
                assert_eq!(message, AUTHENTICATE_FAILURE);
                assert_eq!(message, "request authenticate failure");
            }
            other => panic!("expected Unauthenticated, got {other}"),
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn impersonated_identity_metadata_is_refused() {
    let h = Harness::start().await;
    let client = h.client_with_token(&h.sleep_token).await;
    let csr = CertificateRequest::generate(&id("bar", "httpbin"), KeyAlgorithm::EcdsaP256).unwrap();
    let metadata = prost_types::Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    "spiffe://cluster.local/ns/bar/sa/httpbin".to_owned(),
                )),
            },
        )]),
    };
    let err = client
        .call(IstioCertificateRequest {
            csr: csr.csr_pem,
            validity_duration: 0,
            metadata: Some(metadata),
        })
        .await
        .unwrap_err();
    match &err {
        ClientError::Unauthenticated { message } => {
            assert_eq!(message, IMPERSONATION_FAILURE);
            assert_eq!(message, "request impersonation authentication failure");
        }
        other => panic!("expected Unauthenticated, got {other}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn a_valid_mesh_client_certificate_renews_without_a_token() {
    let h = Harness::start().await;
    let current =
        h.ca.issue(&id("bar", "httpbin"), KeyAlgorithm::EcdsaP256, None)
            .unwrap();
    let credentials = Credentials::with_certificate(current).unwrap();
    let client = CaClient::connect(CaClientConfig::new(
        h.addr.to_string(),
        istiod(),
        credentials,
    ))
    .await
    .unwrap();

    let renewed = client
        .fetch(
            &id("bar", "httpbin"),
            KeyAlgorithm::Rsa2048,
            h.roots(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(renewed.identity(), &id("bar", "httpbin"));
    assert_eq!(renewed.leaf().key_algorithm, "RSA 2048");

    // The certificate's identity, not the CSR's.
    let csr = CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256).unwrap();
    let chain = client.create_certificate(&csr.csr_pem, None).await.unwrap();
    assert_eq!(
        uri_sans(&chain),
        ["spiffe://cluster.local/ns/bar/sa/httpbin"]
    );
    h.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_not_accepted() {
    let h = Harness::start().await;
    let foreign_ca =
        CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
            .unwrap();
    let foreign = foreign_ca
        .issue(&id("istio-system", "admin"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    // The client trusts the real CA (so it accepts istiod) but presents a foreign certificate.
    let credentials = Credentials::with_certificate(foreign).unwrap();
    credentials.set_roots(h.roots());
    let result = match CaClient::connect(CaClientConfig::new(
        h.addr.to_string(),
        istiod(),
        credentials,
    ))
    .await
    {
        Ok(client) => {
            let csr =
                CertificateRequest::generate(&id("istio-system", "admin"), KeyAlgorithm::EcdsaP256)
                    .unwrap();
            client
                .create_certificate(&csr.csr_pem, None)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    // With TLS 1.3 the server's verdict arrives after the client finished its side of the
    // handshake, as an alert on the first read: rustls' name for "your certificate does not
    // chain to a root I trust" must be in the error either way.
    match &result {
        Err(ClientError::Handshake { reason: text, .. })
        | Err(ClientError::Transport { message: text, .. }) => {
            assert!(text.contains("UnknownCA"), "{text}")
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn a_validity_above_the_max_is_invalid_argument_naming_the_max() {
    let h = Harness::start().await;
    let client = h.client_with_token(&h.sleep_token).await;
    let csr = CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256).unwrap();
    let err = client
        .create_certificate(&csr.csr_pem, Some(Duration::from_secs(91 * 24 * 3600)))
        .await
        .unwrap_err();
    match &err {
        ClientError::Refused { code, message } => {
            assert_eq!(*code, Code::InvalidArgument);
            assert!(
                message.contains("is greater than the max allowed TTL 7776000s"),
                "{message}"
            );
        }
        other => panic!("expected Refused, got {other}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn zero_and_negative_validity_mean_the_ca_default() {
    let h = Harness::start().await;
    let client = h.client_with_token(&h.sleep_token).await;
    for validity_duration in [0, -1, i64::MIN] {
        let csr =
            CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256).unwrap();
        let response = client
            .call(IstioCertificateRequest {
                csr: csr.csr_pem,
                validity_duration,
                metadata: None,
            })
            .await
            .unwrap();
        let leaf = meshward_identity::pem::certificates(response.cert_chain[0].as_bytes(), "leaf")
            .unwrap();
        let info = CertInfo::parse(&leaf[0]).unwrap();
        // §1.4: default 24 h, NotBefore 2 min early.
        let window = info.not_after.as_second() - info.not_before.as_second();
        assert!(
            (24 * 3600 + 120 - 5..=24 * 3600 + 120 + 5).contains(&window),
            "{validity_duration}: {window}"
        );
    }
    // A requested lifetime is honoured.
    let chain = client
        .create_certificate(
            &CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256)
                .unwrap()
                .csr_pem,
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let info = CertInfo::parse(&chain[0]).unwrap();
    let window = info.not_after.as_second() - info.not_before.as_second();
    assert!(
        (3600 + 120 - 5..=3600 + 120 + 5).contains(&window),
        "{window}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_garbage_csr_is_invalid_argument() {
    let h = Harness::start().await;
    let client = h.client_with_token(&h.sleep_token).await;
    for csr in [
        "not a CSR".to_owned(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_owned(),
    ] {
        let err = client.create_certificate(&csr, None).await.unwrap_err();
        match &err {
            ClientError::Refused { code, message } => {
                assert_eq!(*code, Code::InvalidArgument, "{message}");
                assert!(message.starts_with("CSR signing error ("), "{message}");
                assert!(message.contains("CSR"), "{message}");
            }
            other => panic!("expected Refused, got {other}"),
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn the_client_refuses_a_server_with_an_unexpected_identity() {
    let h = Harness::start().await;
    let config = CaClientConfig::new(
        h.addr.to_string(),
        id("istio-system", "not-istiod"),
        Credentials::new(h.roots()),
    )
    .with_token(h.sleep_token.clone());
    let err = CaClient::connect(config).await.unwrap_err();
    match &err {
        ClientError::Handshake { reason, .. } => {
            assert!(reason.contains("server identity mismatch"), "{reason}");
            assert!(
                reason.contains("spiffe://cluster.local/ns/istio-system/sa/istiod"),
                "{reason}"
            );
        }
        other => panic!("expected Handshake, got {other}"),
    }

    // A server whose certificate does not chain to the client's roots is refused too.
    let other_root =
        CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
            .unwrap();
    let config = CaClientConfig::new(
        h.addr.to_string(),
        istiod(),
        Credentials::new(other_root.trust_bundle().clone()),
    );
    let err = CaClient::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Handshake { reason, .. } if reason.contains("unknown issuer")),
        "{err}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_ca_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let ca = CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    let config = CaClientConfig::new(
        addr.to_string(),
        istiod(),
        Credentials::new(ca.trust_bundle().clone()),
    );
    let err = CaClient::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Unreachable { address, .. } if address == &addr.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn the_chain_is_one_pem_per_element_leaf_first_root_last() {
    // A plug-in intermediate gives a three-certificate chain: leaf, intermediate, root.
    let root = CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    let PluginFiles {
        ca_cert,
        ca_key,
        cert_chain,
        root_cert,
    } = root
        .issue_intermediate(
            "cluster1 intermediate",
            KeyAlgorithm::EcdsaP256,
            DEFAULT_ROOT_TTL,
        )
        .unwrap();
    let intermediate = CertificateAuthority::from_pem(
        td(),
        ca_cert.as_bytes(),
        ca_key.as_bytes(),
        Some(cert_chain.as_bytes()),
        root_cert.as_bytes(),
    )
    .unwrap();
    let h = Harness::start_with(intermediate).await;
    let client = h.client_with_token(&h.sleep_token).await;
    let csr = CertificateRequest::generate(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256).unwrap();
    let response = client
        .call(IstioCertificateRequest {
            csr: csr.csr_pem,
            validity_duration: 0,
            metadata: None,
        })
        .await
        .unwrap();

    assert_eq!(response.cert_chain.len(), 3);
    for element in &response.cert_chain {
        assert!(
            element.ends_with("-----END CERTIFICATE-----\n"),
            "{element:?}"
        );
        assert_eq!(element.matches("-----BEGIN CERTIFICATE-----").count(), 1);
    }
    let parsed: Vec<CertInfo> = response
        .cert_chain
        .iter()
        .map(|pem| {
            let der = meshward_identity::pem::certificates(pem.as_bytes(), "element").unwrap();
            CertInfo::parse(&der[0]).unwrap()
        })
        .collect();
    assert_eq!(
        parsed[0].uri_sans,
        ["spiffe://cluster.local/ns/foo/sa/sleep"]
    );
    assert!(!parsed[0].is_ca);
    assert!(
        parsed[1].subject.contains("cluster1 intermediate"),
        "{}",
        parsed[1].subject
    );
    assert_eq!(parsed[0].issuer, parsed[1].subject);
    assert_eq!(response.cert_chain[2], root_cert);
    assert_eq!(parsed[2].subject, parsed[2].issuer);

    // The client's view: the whole chain verifies against the root.
    let cert = client
        .fetch(
            &id("foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            h.roots(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cert.chain().len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn failed_handshakes_do_not_stop_the_server() {
    let h = Harness::start().await;
    // Plain text on the TLS port, and a connection that closes mid-way.
    let mut plain = TcpStream::connect(h.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(TcpStream::connect(h.addr).await.unwrap());
    // A client that rejects the server's identity.
    let refused = CaClient::connect(CaClientConfig::new(
        h.addr.to_string(),
        id("istio-system", "not-istiod"),
        Credentials::new(h.roots()),
    ))
    .await;
    assert!(refused.is_err());

    let client = h.client_with_token(&h.sleep_token).await;
    let cert = client
        .fetch(
            &id("foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            h.roots(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cert.identity(), &id("foo", "sleep"));
    drop(plain);
    h.stop().await;
}

#[tokio::test]
async fn a_workload_bootstraps_with_its_token_then_rotates_through_the_service() {
    use meshward_identity::service::RemoteCa;
    use meshward_identity::{CertManager, CertState, RotationPolicy};
    let harness = Harness::start().await;
    // The workload's live credentials: roots from configuration, no certificate yet. The CA
    // client presents whatever certificate these hold, so renewals authenticate with it.
    let credentials = Credentials::new(harness.roots());
    let client = CaClient::connect(
        CaClientConfig::new(harness.addr.to_string(), istiod(), credentials.clone())
            .with_token(&harness.sleep_token),
    )
    .await
    .unwrap();
    let source = RemoteCa::new(
        client,
        id("foo", "sleep"),
        KeyAlgorithm::EcdsaP256,
        Some(Duration::from_secs(2)),
        credentials.clone(),
    );
    let manager = CertManager::spawn(
        Arc::new(source),
        credentials.clone(),
        RotationPolicy::default(),
    );
    let first = manager.ready().await;
    assert_eq!(first.identity(), &id("foo", "sleep"));
    let mut rx = manager.subscribe();
    let second = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let CertState::Ready { cert, generation } = &*rx.borrow_and_update()
                && *generation >= 2
            {
                return cert.clone();
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the certificate was renewed through the CA service");
    assert_ne!(second.leaf().serial, first.leaf().serial);
    assert_eq!(second.identity(), &id("foo", "sleep"));
    assert_eq!(
        credentials.certificate().unwrap().cert.leaf().serial,
        second.leaf().serial
    );
    drop(manager);
    harness.stop().await;
}
