//! Byte streams: a downstream connection (a captured TCP connection, or a `CONNECT` tunnel)
//! joined to an upstream connection opened along a route, bytes counted both ways.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Shared;
use super::connect::{AppProtocol, ConnectError, Upstream};
use super::event::Recorder;
use super::record::record_upstream;
use super::resolve::{Route, Transport};
use crate::observe::record::ResponseFlags;

/// Why no upstream connection could be opened for a byte stream.
#[derive(Debug)]
pub(super) enum TcpFailure {
    /// The service has no endpoints.
    NoEndpoint,
    /// A destination outside the mesh has no address.
    Dns(String),
    /// The destination is this proxy.
    Loop(SocketAddr),
    /// The connection or handshake failed.
    Connect(ConnectError),
}

impl TcpFailure {
    /// Records the failure on a TCP event (no HTTP status: the downstream is just closed).
    pub(super) fn record(&self, rec: &mut Recorder) {
        match self {
            TcpFailure::NoEndpoint => rec.flag(ResponseFlags::NO_HEALTHY_UPSTREAM),
            TcpFailure::Dns(why) => {
                rec.flag(ResponseFlags::DNS_FAIL);
                let why = why.clone();
                rec.update(|e| e.upstream_transport_failure_reason = Some(why));
            }
            TcpFailure::Loop(_) => rec.flag(ResponseFlags::NO_ROUTE_FOUND),
            TcpFailure::Connect(e) => {
                rec.flag(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                let reason = e.transport_failure_reason();
                rec.update(|ev| ev.upstream_transport_failure_reason = reason);
            }
        }
    }
}

/// Opens an upstream byte stream along `route`: mTLS with the TCP ALPN (§4.2
/// `istio-peer-exchange, istio`) or plaintext, as the chosen endpoint's transport says.
pub(super) async fn open_tcp(
    shared: &Arc<Shared>,
    route: &Route,
    state_version: u64,
    rec: &mut Recorder,
) -> Result<Upstream, TcpFailure> {
    let (addr, transport, workload) = match route {
        Route::Mesh(m) => {
            let ep = shared
                .resolver
                .pick(state_version, m)
                .ok_or(TcpFailure::NoEndpoint)?;
            let addr = shared.connector.mesh_endpoint(ep.address);
            (addr, ep.transport.clone(), Some(ep.workload.clone()))
        }
        Route::Passthrough(p) => {
            let addr = p
                .address(shared.timeouts.connect)
                .await
                .map_err(TcpFailure::Dns)?;
            (addr, Transport::Plaintext, None)
        }
    };
    if shared.is_own_address(addr) {
        return Err(TcpFailure::Loop(addr));
    }
    rec.update(|e| e.upstream_host = Some(addr));
    let upstream = shared
        .connector
        .connect(addr, &transport, AppProtocol::Tcp)
        .await
        .map_err(TcpFailure::Connect)?;
    record_upstream(rec, &upstream.info, workload.as_deref());
    Ok(upstream)
}

/// Copies bytes both ways until both sides are done, or the proxy's drain time is over; the
/// event is emitted at the end.
pub(super) async fn splice<D>(shared: &Shared, downstream: D, upstream: Upstream, rec: Recorder)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = Counting {
        inner: downstream,
        read: rec.received.clone(),
        written: rec.sent.clone(),
    };
    let mut up = upstream.stream;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "outbound byte stream ended with an error");
            }
        }
        _ = shared.drain.closed() => {}
    }
    rec.finish();
}

/// Counts what is read from and written to a stream.
struct Counting<T> {
    inner: T,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len().saturating_sub(before);
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
