//! Forwarding one HTTP request along a route: choose an endpoint, take or open an upstream
//! connection (mTLS or plaintext as the route says), send the request in the form the upstream
//! expects, and stream the response back; or answer locally as Envoy does when that fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Shared;
use super::body::{Body, BodyEnd, Counted};
use super::connect::{AppProtocol, ConnectError, ConnectionInfo};
use super::event::{Listener, Recorder};
use super::headers::{into_http1, strip_hop_by_hop, upstream_request};
use super::pool::{PoolKey, Pooled, Sender};
use super::record::{record_route, record_upstream, request_recorder};
use super::reply::{
    connect_failure, dns_failure, local_reply, loop_detected, no_healthy_upstream, route_failure,
    upstream_reset,
};
use super::resolve::{Route, RouteError, Transport};
use crate::observe::record::ResponseFlags;

/// Istio's default retry policy retries connect failures twice (§3.5 "Default retry policy
/// (`connect-failure,…`, 2 retries) makes connect failures show `URX` too").
const CONNECT_RETRIES: u32 = 2;
/// Envoy's base retry back-off.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// A pooled connection that turns out closed is replaced without counting as a retry, a few
/// times at most.
const STALE_CONNECTION_RETRIES: u32 = 4;

/// The downstream side of a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Downstream {
    /// The client.
    pub(super) remote: SocketAddr,
    /// Where it connected (the original destination when captured).
    pub(super) local: SocketAddr,
    /// Which listener.
    pub(super) listener: Listener,
}

/// Where one attempt goes.
struct Target {
    addr: SocketAddr,
    transport: Transport,
    workload: Option<String>,
}

/// Forwards `req` along `route`; `authority` is the request's host as the upstream must see it.
pub(super) async fn forward(
    shared: Arc<Shared>,
    route: Result<Route, RouteError>,
    state_version: u64,
    authority: String,
    mut req: Request<Incoming>,
    down: Downstream,
) -> Response<Body> {
    crate::request_id::ensure(req.headers_mut());
    let mut rec = request_recorder(&shared, &req, &authority, &down);
    let route = match route {
        Ok(r) => r,
        Err(e) => return route_failure(rec, &e),
    };
    record_route(&mut rec, &route);
    // HTTP2 and GRPC ports get HTTP/2 upstream; otherwise the upstream speaks what the client
    // spoke (Envoy's `USE_DOWNSTREAM_PROTOCOL` for sniffed and passthrough traffic).
    let h2 = route.wants_h2() || req.version() == Version::HTTP_2;
    let downstream_version = req.version();
    let (parts, incoming) = req.into_parts();
    let counted = Counted::new(incoming, rec.received.clone(), None).boxed();
    let mut upstream_req = match upstream_request(parts, counted, &authority, h2) {
        Ok(r) => r,
        Err(why) => {
            return local_reply(
                rec,
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "invalid_authority".to_owned(),
                why,
            );
        }
    };
    let mut retries = 0;
    let mut stale = 0;
    loop {
        let target = match &route {
            Route::Mesh(m) => match shared.resolver.pick(state_version, m) {
                Some(ep) => Target {
                    addr: shared.connector.mesh_endpoint(ep.address),
                    transport: ep.transport.clone(),
                    workload: Some(ep.workload.clone()),
                },
                None => return no_healthy_upstream(rec),
            },
            Route::Passthrough(p) => match p.address(shared.timeouts.connect).await {
                Ok(addr) => Target {
                    addr,
                    transport: Transport::Plaintext,
                    workload: None,
                },
                Err(why) => return dns_failure(rec, why),
            },
        };
        if shared.is_own_address(target.addr) {
            return loop_detected(rec, target.addr);
        }
        let key = PoolKey {
            addr: target.addr,
            transport: target.transport,
            h2,
        };
        let (pooled, reused) = match shared.pool.checkout(&key) {
            Some(p) => (p, true),
            // Boxed: opening a connection (TCP, TLS and HTTP handshakes) is the largest state
            // of this future and the rarest path; inline, every request would carry it.
            None => match Box::pin(open(&shared, &key)).await {
                Ok(p) => (p, false),
                Err(e) => {
                    if retries < CONNECT_RETRIES {
                        retries += 1;
                        tokio::time::sleep(RETRY_BACKOFF * retries).await;
                        continue;
                    }
                    return connect_failure(rec, &e, retries > 0);
                }
            },
        };
        record_upstream(&mut rec, &pooled.info, target.workload.as_deref());
        let info = pooled.info.clone();
        let sent = match pooled.sender {
            Sender::H1(mut s) => s
                .try_send_request(into_http1(upstream_req, &authority))
                .await
                .map(|r| (r, Some(s))),
            Sender::H2(mut s) => s.try_send_request(upstream_req).await.map(|r| (r, None)),
        };
        match sent {
            Ok((response, h1_sender)) => {
                let back = h1_sender.map(|s| (key, s, info));
                return relay_response(&shared, rec, response, back, downstream_version);
            }
            Err(mut e) => match e.take_message() {
                // The request never left: a pooled connection the server had closed.
                Some(unsent) if reused && stale < STALE_CONNECTION_RETRIES => {
                    stale += 1;
                    upstream_req = unsent;
                }
                _ => return upstream_reset(rec, e.error()),
            },
        }
    }
}

/// Opens a new upstream HTTP connection for `key` and shares it when it is HTTP/2.
async fn open(shared: &Arc<Shared>, key: &PoolKey) -> Result<Pooled, ConnectError> {
    let protocol = if key.h2 {
        AppProtocol::Http2
    } else {
        AppProtocol::Http1
    };
    let upstream = shared
        .connector
        .connect(key.addr, &key.transport, protocol)
        .await?;
    // The server chose the protocol when it negotiated ALPN; without ALPN (plaintext) the
    // route decides.
    let h2 = match upstream.info.alpn.as_deref() {
        Some(b"h2" | b"istio-h2") => true,
        Some(b"http/1.1" | b"istio-http/1.1") => false,
        _ => key.h2,
    };
    let io = TokioIo::new(upstream.stream);
    let info = upstream.info;
    let handshake_failed = |e: hyper::Error| ConnectError::Tls(format!("HTTP handshake: {e}"));
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        if key.h2 {
            shared.pool.share_h2(key.clone(), &sender, info.clone());
        }
        Ok(Pooled {
            sender: Sender::H2(sender),
            info,
        })
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Pooled {
            sender: Sender::H1(sender),
            info,
        })
    }
}

/// Streams the upstream response back; the event is emitted, and an HTTP/1.1 connection
/// returned to the pool, when the body ends.
fn relay_response(
    shared: &Arc<Shared>,
    mut rec: Recorder,
    response: Response<Incoming>,
    h1_back: Option<(PoolKey, http1::SendRequest<Body>, Arc<ConnectionInfo>)>,
    downstream_version: Version,
) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = downstream_version;
    rec.update(|e| {
        e.response_code = parts.status.as_u16();
        e.response_code_details = Some("via_upstream".to_owned());
    });
    let counter = rec.sent.clone();
    let pool = shared.pool.clone();
    let on_end = Box::new(move |how: BodyEnd| {
        match how {
            BodyEnd::Complete => {
                if let Some((key, sender, info)) = h1_back {
                    pool.checkin_h1(key, sender, info);
                }
            }
            BodyEnd::Error => rec.flag(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION),
            BodyEnd::Dropped => rec.flag(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION),
        }
        rec.finish();
    });
    Response::from_parts(parts, Counted::new(incoming, counter, Some(on_end)).boxed())
}
