//! Certificate rotation on live sockets: authentication.md §1.6 "New certs are pushed […];
//! existing connections keep their handshake‑time certs."
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::*;
use meshward_identity::rotation::{FetchError, FetchFuture};
use meshward_identity::tls::peer_certificate;
use meshward_identity::{
    CertManager, CertState, CertificateSource, Credentials, KeyAlgorithm, LocalCa, MeshTls,
    RotationPolicy, SpiffeId,
};
use rustls::ServerConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts mTLS connections forever and echoes what it reads.
async fn echo_server(config: Arc<ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(client: &MeshTls, addr: std::net::SocketAddr) -> Result<(Conn, String), String> {
    let config = client.client_config(&[], alpn_client()).unwrap();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let sni = ServerName::try_from("outbound_.80_._.echo.foo.svc.cluster.local").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(sni, tcp)
        .await
        .map_err(|e| meshward_identity::tls::describe_tls_error(&e))?;
    let serial = peer_certificate(tls.get_ref().1.peer_certificates())
        .unwrap()
        .serial;
    Ok((tls, serial))
}

async fn echo(conn: &mut Conn, msg: &[u8]) -> Result<Vec<u8>, String> {
    conn.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; msg.len()];
    conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(buf)
}

async fn wait_for_generation(manager: &CertManager, generation: u64) -> String {
    let mut rx = manager.subscribe();
    let wait = async {
        loop {
            if let CertState::Ready {
                cert,
                generation: g,
            } = &*rx.borrow_and_update()
                && *g >= generation
            {
                return cert.leaf().serial.clone();
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("rotation did not happen in time")
}

#[tokio::test]
async fn rotation_keeps_live_streams_open_and_new_connections_get_the_new_certificate() {
    let ca = Arc::new(root_ca("cluster.local"));
    let server_id = id("cluster.local", "foo", "echo");
    let credentials = Credentials::new(ca.trust_bundle().clone());
    // A 2-second certificate renews after about 1 second (half its life).
    let source = LocalCa::new(
        ca.clone(),
        server_id,
        KeyAlgorithm::EcdsaP256,
        Some(Duration::from_secs(2)),
    );
    let manager = CertManager::spawn(
        Arc::new(source),
        credentials.clone(),
        RotationPolicy::default(),
    );
    let first = manager.ready().await;
    let server = MeshTls::new(credentials, trust_domains("cluster.local", &[]));
    let addr = echo_server(server.server_config(alpn_server()).unwrap()).await;

    let client = mesh(&ca, "foo", "sleep", &[]);
    let (mut stream, serial) = connect(&client, addr).await.unwrap();
    assert_eq!(serial, first.leaf().serial);
    assert_eq!(echo(&mut stream, b"before").await.unwrap(), b"before");

    let rotated = wait_for_generation(&manager, 2).await;
    assert_ne!(rotated, serial);

    // The established stream is untouched by the rotation.
    assert_eq!(echo(&mut stream, b"after").await.unwrap(), b"after");
    // The next connection presents the new certificate.
    let (mut fresh, fresh_serial) = connect(&client, addr).await.unwrap();
    assert_eq!(fresh_serial, rotated);
    assert_eq!(echo(&mut fresh, b"new").await.unwrap(), b"new");
}

/// Succeeds once, then the CA is unreachable.
struct FailsAfterFirst {
    inner: LocalCa,
    calls: AtomicUsize,
}

impl CertificateSource for FailsAfterFirst {
    fn fetch(&self) -> FetchFuture<'_> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.inner.fetch()
        } else {
            Box::pin(std::future::ready(Err(FetchError(
                "CA unreachable: connection refused".to_owned(),
            ))))
        }
    }
}

#[tokio::test]
async fn expiry_without_renewal_fails_new_handshakes_closed_but_keeps_live_streams() {
    let ca = Arc::new(root_ca("cluster.local"));
    let server_id: SpiffeId = id("cluster.local", "foo", "echo");
    let credentials = Credentials::new(ca.trust_bundle().clone());
    let source = FailsAfterFirst {
        inner: LocalCa::new(
            ca.clone(),
            server_id,
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(2)),
        ),
        calls: AtomicUsize::new(0),
    };
    let manager = CertManager::spawn(
        Arc::new(source),
        credentials.clone(),
        RotationPolicy::default(),
    );
    let cert = manager.ready().await;
    let server = MeshTls::new(credentials, trust_domains("cluster.local", &[]));
    let addr = echo_server(server.server_config(alpn_server()).unwrap()).await;
    let client = mesh(&ca, "foo", "sleep", &[]);
    let (mut stream, _) = connect(&client, addr).await.unwrap();

    // Wait past NotAfter (X.509 times have one-second resolution).
    let until_expiry = cert.not_after().as_second() - jiff::Timestamp::now().as_second() + 1;
    tokio::time::sleep(Duration::from_secs(until_expiry.max(0) as u64 + 1)).await;

    // Renewal kept failing: the old certificate is still the current one…
    match manager.current() {
        CertState::Ready { generation, .. } => assert_eq!(generation, 1),
        CertState::Pending => panic!("the first certificate was lost"),
    }
    // …the established stream still works…
    assert_eq!(echo(&mut stream, b"still").await.unwrap(), b"still");
    // …and a new handshake is refused rather than served with an expired certificate.
    let refused = match connect(&client, addr).await {
        Err(e) => e,
        Ok((mut conn, _)) => echo(&mut conn, b"x").await.unwrap_err(),
    };
    assert!(!refused.is_empty());
}
