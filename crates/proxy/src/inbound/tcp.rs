//! The TCP chain: network RBAC, then bytes copied both ways between client and application.
//!
//! authorization.md §9: "TCP denied | … on deny the connection is closed without data". Envoy's
//! network RBAC decides on the first bytes; here the decision is made before the application is
//! even dialled, which is the same for the client (no byte reaches the application) and also
//! protects server-first protocols. When a new configuration arrives, every live connection is
//! judged again under it and closed if it would no longer be admitted (PeerAuthentication mode
//! or authorization), so revoking access takes effect on established connections too.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::Shared;
use super::conn::{Conn, Start};
use super::drain::Drain;
use super::event::InboundEvent;
use crate::observe::record::ResponseFlags;

/// Copy buffer per direction: bounded memory per connection.
const COPY_BUFFER: usize = 16 * 1024;

/// Authorizes `downstream` and, if allowed, proxies it to the application. `prefix` holds bytes
/// already read from the client (a passed-through ClientHello) that the application must see
/// first.
pub(crate) async fn proxy<S>(
    downstream: S,
    prefix: Vec<u8>,
    conn: Conn,
    shared: Arc<Shared>,
    mut drain: Drain,
    start: Start,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut event = conn.event(start.time);
    // Subscribe before reading the state, so a swap in between is not missed.
    let mut changes = shared.state.subscribe();
    let decision = shared
        .state
        .load()
        .inbound
        .authorize_tcp(&conn.inbound_connection());
    let allowed = decision.allowed;
    let details = decision.response_code_details();
    event.set_authz(decision);
    if !allowed {
        tracing::debug!(remote = %conn.remote, dst = %conn.dst, details = details.as_deref().unwrap_or("-"), "inbound TCP connection denied");
        event.connection_termination_details = details;
        finish(&shared, event, start);
        return;
    }

    event.upstream_host = Some(conn.upstream);
    let mut upstream = match shared.upstreams.tcp(conn.dst.port()).await {
        Ok(s) => s,
        Err(e) => {
            event.flag(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            event.upstream_transport_failure_reason = Some(e.to_string());
            finish(&shared, event, start);
            return;
        }
    };
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        event.flag(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
        event.bytes_received = prefix.len() as u64;
        finish(&shared, event, start);
        return;
    }

    let mut client = Counted::new(downstream);
    let mut closed_by_policy = None;
    {
        let copy = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            COPY_BUFFER,
            COPY_BUFFER,
        );
        tokio::pin!(copy);
        let mut watching = true;
        loop {
            tokio::select! {
                result = &mut copy => {
                    if let Err(e) = result {
                        tracing::debug!(remote = %conn.remote, dst = %conn.dst, error = %e, "inbound TCP connection ended with an error");
                    }
                    break;
                }
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The state handle is gone; nothing can change any more.
                        watching = false;
                        continue;
                    }
                    if let Some(reason) = recheck(&shared, &conn) {
                        closed_by_policy = Some(reason);
                        break;
                    }
                }
                () = drain.closed() => {
                    event.connection_termination_details = Some("proxy shutting down".to_owned());
                    break;
                }
            }
        }
    }
    if let Some((reason, decision)) = closed_by_policy {
        tracing::info!(remote = %conn.remote, dst = %conn.dst, %reason, "live inbound TCP connection closed after a configuration change");
        event.connection_termination_details = Some(reason);
        if let Some(decision) = decision {
            event.set_authz(decision);
        }
    }
    event.bytes_received = client.read.saturating_add(prefix.len() as u64);
    event.bytes_sent = client.written;
    finish(&shared, event, start);
}

/// Judges a live connection under the current state: `None` if it may stay, else why it must
/// close (and the denying decision, if authorization is the reason).
fn recheck(
    shared: &Shared,
    conn: &Conn,
) -> Option<(String, Option<meshward_policy::authz::AuthzDecision>)> {
    let state = shared.state.load();
    let mode = state.inbound.mtls_mode(conn.dst.port());
    if !conn.admitted_by(mode) {
        return Some((
            format!(
                "PeerAuthentication mode is now {} and no longer admits this connection",
                mode.as_str()
            ),
            None,
        ));
    }
    let decision = state.inbound.authorize_tcp(&conn.inbound_connection());
    if decision.allowed {
        return None;
    }
    let details = decision
        .response_code_details()
        .unwrap_or_else(|| "rbac_access_denied".to_owned());
    Some((details, Some(decision)))
}

fn finish(shared: &Shared, mut event: InboundEvent, start: Start) {
    event.duration = Some(start.instant.elapsed());
    (shared.events)(event);
}

/// Counts the bytes read from and written to a stream (`%BYTES_RECEIVED%`, `%BYTES_SENT%`).
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.read = this
                .read
                .saturating_add((buf.filled().len() - before) as u64);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written = this.written.saturating_add(n as u64);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
