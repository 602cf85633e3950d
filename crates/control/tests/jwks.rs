#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! JWKS fetching against local HTTP and HTTPS servers on 127.0.0.1: results, cache, refresh on a
//! proxy's request, size and time bounds, failures isolated per URI.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshward_api::protocol::proto::fetched_jwks;
use meshward_control::jwks::{Fetcher, JwksCache, JwksFetchError, JwksOptions, JwksResult};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
enum Reply {
    Body(String),
    Status(u16),
    Hang,
}

/// A minimal HTTP/1.1 server: counts requests and answers with the current [`Reply`].
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(reply: Reply, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(reply));
        let (h, r) = (hits.clone(), reply.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (h, r, tls) = (h.clone(), r.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, h, r).await;
                            }
                        }
                        None => serve(tcp, h, r).await,
                    }
                });
            }
        });
        Self {
            addr,
            hits,
            reply,
            task,
        }
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = reply.lock().unwrap().clone();
    let response = match reply {
        Reply::Body(body) => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Status(code) => {
            format!("HTTP/1.1 {code} Nope\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A self-signed certificate for `localhost`, and an acceptor serving it.
fn tls_server() -> (TlsAcceptor, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(meshward_identity::crypto::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), cert)
}

const JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0"}]}"#;

fn options() -> JwksOptions {
    JwksOptions {
        timeout: Duration::from_millis(500),
        on_demand_min_interval: Duration::from_millis(600),
        retry_initial: Duration::from_secs(60),
        ..JwksOptions::default()
    }
}

async fn wait_for(cache: &JwksCache, uri: &str, f: impl Fn(&JwksResult) -> bool) -> JwksResult {
    for _ in 0..300 {
        if let Some(status) = cache.status().into_iter().find(|s| s.uri == uri)
            && f(&status.result)
        {
            return status.result;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{uri}: no such result; status: {:?}", cache.status());
}

#[tokio::test]
async fn http_and_https_fetches_with_bounds() {
    let http = Server::start(Reply::Body(JWKS.into()), None).await;
    let (acceptor, cert) = tls_server();
    let https = Server::start(Reply::Body(JWKS.into()), Some(acceptor)).await;

    let trusting = Fetcher::new(&JwksOptions {
        extra_roots: vec![cert],
        ..options()
    })
    .unwrap();
    let plain = Fetcher::new(&options()).unwrap();
    assert_eq!(
        trusting
            .fetch(&format!("http://{}/jwks", http.addr))
            .await
            .unwrap(),
        JWKS
    );
    let secure = format!("https://localhost:{}/jwks", https.addr.port());
    assert_eq!(trusting.fetch(&secure).await.unwrap(), JWKS);
    // Without the root, the server is not trusted.
    assert!(matches!(
        plain.fetch(&secure).await,
        Err(JwksFetchError::Tls { .. })
    ));

    http.set(Reply::Status(404));
    assert_eq!(
        plain.fetch(&format!("http://{}/jwks", http.addr)).await,
        Err(JwksFetchError::Status(404))
    );

    http.set(Reply::Body("x".repeat(2 * 1024 * 1024)));
    assert_eq!(
        plain.fetch(&format!("http://{}/jwks", http.addr)).await,
        Err(JwksFetchError::TooLarge { limit: 1024 * 1024 })
    );

    http.set(Reply::Hang);
    let started = std::time::Instant::now();
    let result = plain.fetch(&format!("http://{}/jwks", http.addr)).await;
    assert_eq!(
        result,
        Err(JwksFetchError::Timeout(Duration::from_millis(500)))
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    assert!(matches!(
        plain.fetch("ftp://127.0.0.1/jwks").await,
        Err(JwksFetchError::UnsupportedScheme(_))
    ));
}

#[tokio::test]
async fn cached_refreshed_on_request_and_failures_isolated() {
    let good = Server::start(Reply::Body(JWKS.into()), None).await;
    let hanging = Server::start(Reply::Hang, None).await;
    let cache = JwksCache::new(options()).unwrap();
    let good_uri = format!("http://{}/jwks", good.addr);
    let bad_uri = format!("http://{}/jwks", hanging.addr);
    let mut changes = cache.subscribe();
    cache.set_uris(&[good_uri.clone(), bad_uri.clone()].into_iter().collect());

    // The good issuer is ready long before the hanging one times out: nothing waits on it.
    let ready = wait_for(&cache, &good_uri, |r| matches!(r, JwksResult::Ready { .. })).await;
    assert_eq!(
        ready,
        JwksResult::Ready {
            document: JWKS.into()
        }
    );
    assert!(matches!(
        cache.lookup(&bad_uri).result,
        Some(fetched_jwks::Result::Error(_))
    ));
    let failed = wait_for(&cache, &bad_uri, |r| matches!(r, JwksResult::Failed { .. })).await;
    let JwksResult::Failed { error } = failed else {
        unreachable!()
    };
    assert!(error.contains("no complete response"), "{error}");
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();

    // Cached: no refetch without a reason (and the on-demand interval has passed afterwards).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(good.hits(), 1);

    // A key rotation at the issuer: a proxy's unknown-kid request fetches again.
    let rotated = JWKS.replace("k1", "k2");
    good.set(Reply::Body(rotated.clone()));
    cache.request_refresh([good_uri.as_str()]);
    wait_for(&cache, &good_uri, |r| {
        *r == JwksResult::Ready {
            document: rotated.clone(),
        }
    })
    .await;
    assert_eq!(good.hits(), 2);
    assert!(changes.has_changed().unwrap(), "proxies are told");

    // Rate limited: a burst of requests right after a fetch does nothing.
    for _ in 0..5 {
        cache.request_refresh([good_uri.as_str()]);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(good.hits(), 2);
    // Unknown URIs are ignored: proxies cannot make the control plane fetch arbitrary URLs.
    cache.request_refresh(["http://127.0.0.1:9/elsewhere"]);
    assert!(
        cache
            .status()
            .iter()
            .all(|s| s.uri != "http://127.0.0.1:9/elsewhere")
    );

    // A failed refresh keeps the last good document (istiod's cache does the same).
    tokio::time::sleep(Duration::from_millis(700)).await;
    good.set(Reply::Status(500));
    cache.request_refresh([good_uri.as_str()]);
    for _ in 0..100 {
        if good.hits() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = cache
        .status()
        .into_iter()
        .find(|s| s.uri == good_uri)
        .unwrap();
    assert_eq!(status.result, JwksResult::Ready { document: rotated });
    assert!(status.last_error.unwrap().contains("500"));

    // URIs no longer referenced are dropped.
    cache.set_uris(&[good_uri.clone()].into_iter().collect());
    assert_eq!(cache.status().len(), 1);
}
