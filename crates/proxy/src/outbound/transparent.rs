//! Capture mode (Istio's 15001 listener): connections redirected by iptables arrive here and
//! the socket still knows where they were going. HTTP ports are proxied request by request
//! (so every request is logged and the HTTP ALPN applies); other ports are copied as bytes over
//! mTLS with the TCP ALPN; addresses outside the mesh are passed through unchanged.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, header};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::Shared;
use super::body::Body;
use super::event::{Listener, Recorder};
use super::forward::{Downstream, forward};
use super::record::record_route;
use super::resolve::Destination;
use super::server::serve_http;
use super::tunnel;

/// The destination a redirected connection was addressed to (`SO_ORIGINAL_DST`).
pub(super) fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    original_dst_impl(stream)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn original_dst_impl(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr()?;
    // A v4 client on a dual-stack listener has a v4-mapped local address and a v4 NAT entry.
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let addr = if v4 {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn original_dst_impl(_stream: &TcpStream) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "capture mode needs Linux (SO_ORIGINAL_DST)",
    ))
}

/// Serves one connection redirected away from `original_dst`.
pub(super) async fn serve(shared: Arc<Shared>, stream: TcpStream, original_dst: SocketAddr) {
    let remote = match stream.peer_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // A connection made to the capture port itself was not redirected: passing it "through"
    // would connect back here, forever.
    if shared.is_own_address(original_dst) || stream.local_addr().ok() == Some(original_dst) {
        tracing::warn!(
            peer = %remote,
            "connection to the capture port itself (not redirected): closed"
        );
        return;
    }
    let down = Downstream {
        remote,
        local: original_dst,
        listener: Listener::Transparent,
    };
    let state = shared.state.load();
    let route = shared
        .resolver
        .resolve(&state, Destination::Address(original_dst));
    match route {
        Ok(route) if route.is_http() => {
            drop(state);
            let handler_shared = shared.clone();
            serve_http(&shared, stream, move |req| {
                http_request(handler_shared.clone(), req, down, original_dst)
            })
            .await;
        }
        Ok(route) => {
            let mut rec = Recorder::new(shared.sink.clone(), Listener::Transparent);
            rec.update(|e| {
                e.downstream_remote_address = Some(remote);
                e.downstream_local_address = Some(original_dst);
            });
            record_route(&mut rec, &route);
            match tunnel::open_tcp(&shared, &route, state.version, &mut rec).await {
                Ok(upstream) => tunnel::splice(&shared, stream, upstream, rec).await,
                // Envoy's TCP proxy closes the downstream connection; the event says why.
                Err(failure) => {
                    failure.record(&mut rec);
                    rec.finish();
                }
            }
        }
        // Address destinations always resolve (to a mesh endpoint or to passthrough).
        Err(e) => tracing::warn!(error = %e, "captured destination did not resolve"),
    }
}

/// One request on a captured HTTP connection. The route is resolved per request so a
/// configuration change applies to the next request on a kept-alive connection. Not an
/// `async fn`: resolving needs no waiting, and returning [`forward`]'s future itself keeps
/// the request from being stored twice in the future hyper holds.
fn http_request(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    down: Downstream,
    original_dst: SocketAddr,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    // The application addressed the request itself: `Host` (HTTP/1.1) or `:authority`
    // (HTTP/2) stay as sent; without either, the address it connected to stands in.
    let authority = req
        .uri()
        .authority()
        .map(ToString::to_string)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| original_dst.to_string());
    let state = shared.state.load();
    let route = shared
        .resolver
        .resolve(&state, Destination::Address(original_dst));
    let version = state.version;
    drop(state);
    forward(shared, route, version, authority, req, down)
}
