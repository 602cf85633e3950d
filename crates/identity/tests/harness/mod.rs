//! Shared helpers for the identity integration tests: CAs, credentials, and a real TLS exchange
//! over a loopback socket.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::crypto::provider;
use meshward_identity::tls::{SpiffeServerVerifier, describe_tls_error, peer_certificate};
use meshward_identity::{
    CertificateAuthority, Credentials, KeyAlgorithm, MeshTls, SpiffeId, TrustBundle, TrustDomain,
    TrustDomains, WorkloadCertificate,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

pub fn id(trust_domain: &str, ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td(trust_domain), ns, sa).unwrap()
}

pub fn trust_domains(primary: &str, aliases: &[&str]) -> TrustDomains {
    TrustDomains::new(td(primary), aliases.iter().map(|a| td(a)))
}

pub fn root_ca(trust_domain: &str) -> CertificateAuthority {
    CertificateAuthority::generate_root(td(trust_domain), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap()
}

/// The same signing key and root, issuing in another trust domain (a second cluster sharing
/// the organisation's root).
pub fn same_keys_other_trust_domain(
    ca: &CertificateAuthority,
    trust_domain: &str,
) -> CertificateAuthority {
    let files = ca.to_files();
    CertificateAuthority::from_pem(
        td(trust_domain),
        files.ca_cert.as_bytes(),
        files.ca_key.as_bytes(),
        Some(files.cert_chain.as_bytes()),
        files.root_cert.as_bytes(),
    )
    .unwrap()
}

/// A workload's TLS setup with a fresh certificate from `ca`.
pub fn mesh(ca: &CertificateAuthority, ns: &str, sa: &str, aliases: &[&str]) -> MeshTls {
    let identity = id(ca.trust_domain().as_str(), ns, sa);
    let cert = ca.issue(&identity, KeyAlgorithm::EcdsaP256, None).unwrap();
    MeshTls::new(
        Credentials::with_certificate(cert).unwrap(),
        trust_domains(ca.trust_domain().as_str(), aliases),
    )
}

pub fn alpn_server() -> Vec<Vec<u8>> {
    meshward_identity::tls::alpn::server()
}

pub fn alpn_client() -> Vec<Vec<u8>> {
    meshward_identity::tls::alpn::client_tcp()
}

/// A client that presents `cert` no matter what (even expired), as a misbehaving peer would.
pub fn raw_client(cert: &WorkloadCertificate, roots: &TrustBundle) -> Arc<ClientConfig> {
    let key = reparse_key(cert);
    let verifier = Arc::new(SpiffeServerVerifier::new(
        Credentials::new(roots.clone()),
        vec![],
    ));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.chain().to_vec(), key)
        .unwrap();
    config.alpn_protocols = alpn_client();
    Arc::new(config)
}

fn reparse_key(cert: &WorkloadCertificate) -> PrivateKeyDer<'static> {
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap()
}

/// A client with no certificate at all.
pub fn anonymous_client(roots: &TrustBundle) -> Arc<ClientConfig> {
    let verifier = Arc::new(SpiffeServerVerifier::new(
        Credentials::new(roots.clone()),
        vec![],
    ));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn_client();
    Arc::new(config)
}

/// What each side of one exchange saw: the peer's URI SAN, or the error text.
pub struct Exchange {
    pub server: Result<String, String>,
    pub client: Result<String, String>,
    pub alpn: Option<Vec<u8>>,
    /// The server resumed an earlier session instead of a full handshake.
    pub resumed: bool,
}

/// Connects once, completes the handshake, sends `ping` and expects `pong` back, so a refusal
/// on either side surfaces as an error on both.
pub async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Exchange {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| describe_tls_error(&e))?;
        let peer = peer_certificate(tls.get_ref().1.peer_certificates())
            .and_then(|c| c.uri_sans.first().cloned())
            .unwrap_or_default();
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| describe_tls_error(&e))?;
        tls.write_all(b"pong")
            .await
            .map_err(|e| describe_tls_error(&e))?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, resumed))
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let sni = ServerName::try_from("outbound_.8000_._.httpbin.foo.svc.cluster.local").unwrap();
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(sni, tcp)
            .await
            .map_err(|e| describe_tls_error(&e))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let peer = peer_certificate(tls.get_ref().1.peer_certificates())
            .and_then(|c| c.uri_sans.first().cloned())
            .unwrap_or_default();
        tls.write_all(b"ping")
            .await
            .map_err(|e| describe_tls_error(&e))?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| describe_tls_error(&e))?;
        Ok::<_, String>((peer, alpn))
    };
    let client = tokio::time::timeout(std::time::Duration::from_secs(10), client_side)
        .await
        .unwrap_or_else(|_| Err("client timed out".to_owned()));
    let server = tokio::time::timeout(std::time::Duration::from_secs(10), server_side)
        .await
        .map_err(|_| "server timed out".to_owned())
        .and_then(|joined| joined.map_err(|e| e.to_string()))
        .and_then(|r| r);
    let (client, alpn) = match client {
        Ok((peer, alpn)) => (Ok(peer), alpn),
        Err(e) => (Err(e), None),
    };
    let (server, resumed) = match server {
        Ok((peer, resumed)) => (Ok(peer), resumed),
        Err(e) => (Err(e), false),
    };
    Exchange {
        server,
        client,
        alpn,
        resumed,
    }
}
