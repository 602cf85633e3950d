//! The connections the CA's gRPC server reads from: TCP connections accepted on the listener
//! and taken through the TLS handshake concurrently, yielding only those whose handshake
//! succeeded.
//!
//! A handshake that fails (a scanner, a client with a certificate from another mesh, a client
//! that stalls) is logged and dropped; it neither stops the server nor delays other clients.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use crate::tls::describe_tls_error;

/// How long a client may take to complete the TLS handshake before its connection is dropped,
/// so stalled clients cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before accepting again after an accept error such as "too many open files", which would
/// otherwise repeat at once in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A stream of established TLS connections. It never yields an error: failures are logged here,
/// because tonic's server would only trace them.
pub(crate) struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsStream<TcpStream>>>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl TlsIncoming {
    pub(crate) fn new(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            handshakes: JoinSet::new(),
            backoff: None,
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::warn!(
                        %peer,
                        error = %describe_tls_error(&e),
                        "CA service: TLS handshake failed"
                    );
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        %peer,
                        timeout = ?HANDSHAKE_TIMEOUT,
                        "CA service: TLS handshake timed out"
                    );
                    None
                }
            }
        });
    }

    /// Accepts one connection if one is waiting; `true` when something happened that warrants
    /// polling again.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(backoff) = &mut self.backoff {
            if backoff.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.backoff = None;
        }
        match self.listener.poll_accept(cx) {
            Poll::Ready(Ok((tcp, peer))) => {
                self.start_handshake(tcp, peer);
                true
            }
            Poll::Ready(Err(e)) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "CA service: a connection failed while being accepted");
                true
            }
            Poll::Ready(Err(e)) => {
                tracing::warn!(error = %e, "CA service: accepting connections failed; retrying");
                self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                true
            }
            Poll::Pending => false,
        }
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // One accept per round, then the finished handshakes: a flood of new connections
            // cannot starve clients whose handshake is complete.
            let accepted = this.poll_accept(cx);
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(stream)))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some(Ok(None))) => continue,
                Poll::Ready(Some(Err(e))) => {
                    tracing::error!(error = %e, "CA service: a TLS handshake task failed");
                    continue;
                }
                Poll::Ready(None) | Poll::Pending if accepted => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}
