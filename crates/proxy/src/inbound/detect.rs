//! What the client speaks, decided before a filter chain is chosen: Envoy's `tls_inspector`.
//!
//! The first bytes are peeked (nothing consumed) to tell a TLS ClientHello from plaintext. For
//! TLS the ClientHello is then read with [`LazyConfigAcceptor`] to learn its SNI and ALPN, which
//! PERMISSIVE chain selection needs (authentication.md §4.2: "The `istio*` values exist so the
//! server can tell mesh mTLS from application TLS"). The bytes read on the way are recorded so a
//! connection that turns out to be the application's own TLS can still be passed through intact.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use super::replay::Recording;

/// TLS record type `handshake`, the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;
/// The major version byte of every TLS record header (SSL 3.0 through TLS 1.3).
const TLS_MAJOR: u8 = 0x03;
/// How long to wait for a second byte after a lone `0x16`.
const SECOND_BYTE_POLL: Duration = Duration::from_millis(5);

/// The transport the client started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A TLS record header.
    Tls,
    /// Anything else, or nothing within the detection timeout (the chain is then chosen as for
    /// plaintext, as Envoy does with `continue_on_listener_filters_timeout`, so server-first
    /// protocols still work on PERMISSIVE and DISABLE ports).
    Plaintext,
    /// The client closed (or reset) before sending anything.
    Closed,
}

/// Peeks at the first two bytes, waiting at most `wait`.
pub(crate) async fn sniff(stream: &TcpStream, wait: Duration) -> Sniffed {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Sniffed::Plaintext,
            Ok(Err(_)) | Ok(Ok(0)) => return Sniffed::Closed,
            Ok(Ok(1)) if buf[0] == TLS_HANDSHAKE => {
                // Only the record type has arrived; a peek would return at once again, so give
                // the rest of the header a moment instead of spinning.
                if Instant::now() + SECOND_BYTE_POLL >= deadline {
                    return Sniffed::Plaintext;
                }
                tokio::time::sleep(SECOND_BYTE_POLL).await;
            }
            Ok(Ok(_)) => {
                return if buf[0] == TLS_HANDSHAKE && buf[1] == TLS_MAJOR {
                    Sniffed::Tls
                } else {
                    Sniffed::Plaintext
                };
            }
        }
    }
}

/// A ClientHello read off the wire, the handshake not yet answered.
pub(crate) struct ClientHello {
    /// The paused handshake; its transport still records what was read.
    pub(crate) start: StartHandshake<Recording<TcpStream>>,
    /// The SNI, if the client sent one.
    pub(crate) sni: Option<String>,
    /// The ALPN values offered, in the client's order.
    pub(crate) alpn: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHello")
            .field("sni", &self.sni)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

/// Reads the ClientHello within `wait`. Errors are words for the log.
pub(crate) async fn read_client_hello(
    stream: TcpStream,
    wait: Duration,
) -> Result<ClientHello, String> {
    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), Recording::new(stream));
    let start = match tokio::time::timeout(wait, acceptor).await {
        Err(_) => return Err("timed out waiting for the TLS ClientHello".to_owned()),
        Ok(Err(e)) => {
            return Err(format!(
                "malformed TLS ClientHello: {}",
                meshward_identity::tls::describe_tls_error(&e)
            ));
        }
        Ok(Ok(start)) => start,
    };
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    let alpn = hello
        .alpn()
        .map(|values| values.map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    Ok(ClientHello { start, sni, alpn })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn sniff_bytes(bytes: &'static [u8]) -> Sniffed {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let (server, _) = listener.accept().await.unwrap();
        let sniffed = sniff(&server, Duration::from_secs(2)).await;
        client.abort();
        sniffed
    }

    #[tokio::test]
    async fn tls_record_header_is_tls() {
        assert_eq!(sniff_bytes(&[0x16, 0x03, 0x01, 0x00]).await, Sniffed::Tls);
    }

    #[tokio::test]
    async fn http_is_plaintext() {
        assert_eq!(sniff_bytes(b"GET / HTTP/1.1\r\n").await, Sniffed::Plaintext);
        assert_eq!(sniff_bytes(&[0x16, 0x04]).await, Sniffed::Plaintext);
    }

    #[tokio::test]
    async fn silence_times_out_as_plaintext_and_close_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(
            sniff(&server, Duration::from_millis(50)).await,
            Sniffed::Plaintext
        );
        drop(client);
        assert_eq!(
            sniff(&server, Duration::from_secs(2)).await,
            Sniffed::Closed
        );
    }
}
