//! The explicit HTTP proxy port, for environments without traffic capture: clients send
//! absolute-form requests (`GET http://httpbin.foo:8000/path HTTP/1.1`, what `curl -x` and
//! `http_proxy=` produce) and `CONNECT host:port` for TCP or TLS tunnels.
//!
//! The plain forwarder (a pod without a sidecar, see [`super::OutboundConfig::plain_forwarder`])
//! stands for "no proxy at all": when the upstream closes or resets the connection before
//! answering (a STRICT sidecar refusing plaintext), the client's connection is reset too, with
//! no response, so the client sees what it would see talking to that sidecar directly (curl
//! exit 56), where a sidecar would answer Envoy's 503.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Shared;
use super::body::{self, Body};
use super::event::Listener;
use super::forward::{Downstream, forward};
use super::record::{record_route, request_recorder};
use super::reply::{
    UpstreamReset, connect_failure, dns_failure, local_reply, loop_detected, no_healthy_upstream,
    route_failure,
};
use super::resolve::Destination;
use super::server::{serve_http, serve_http_or_abort};
use super::tunnel::{self, TcpFailure};
use crate::observe::record::ResponseFlags;
use crate::wire;

/// The status line of a successful `CONNECT`.
const ESTABLISHED: ReasonPhrase = ReasonPhrase::from_static(b"Connection established");

/// Serves one client of the proxy port.
pub(super) async fn serve(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    let local = stream.local_addr().unwrap_or(remote);
    let down = Downstream {
        remote,
        local,
        listener: Listener::HttpProxy,
    };
    if shared.plain_forwarder {
        serve_resetting(shared, stream, down).await;
        return;
    }
    let handler_shared = shared.clone();
    serve_http(&shared, stream, move |req| {
        handle(handler_shared.clone(), req, down)
    })
    .await;
}

/// The plain forwarder's downstream connection was reset because its upstream's was.
#[derive(Debug, thiserror::Error)]
#[error("the upstream closed the connection without a response; the client's is reset")]
struct PassedOnReset;

/// Serves one client of the plain forwarder (see the module docs).
async fn serve_resetting(shared: Arc<Shared>, stream: TcpStream, down: Downstream) {
    // hyper owns the stream while it serves; a second descriptor of the same socket lets the
    // handler switch the close to a reset (the socket closes with the last descriptor).
    let socket: Arc<OwnedFd> = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            tracing::warn!(error = %e, "cannot duplicate a client socket; closed");
            return;
        }
    };
    let handler_shared = shared.clone();
    serve_http_or_abort(&shared, stream, move |req| {
        let shared = handler_shared.clone();
        let socket = socket.clone();
        async move {
            let response = handle(shared, req, down).await;
            if response.extensions().get::<UpstreamReset>().is_none() {
                return Ok(response);
            }
            if let Err(e) = wire::reset_on_close(&*socket) {
                tracing::debug!(error = %e, "cannot make the client connection end in a reset");
            }
            Err(PassedOnReset)
        }
    })
    .await;
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, down: Downstream) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req, down).await;
    }
    let authority = match request_authority(&req) {
        Ok(a) => a,
        Err(why) => return bad_request(&shared, &req, &down, why),
    };
    // An `https://` request target asks the proxy to originate TLS to an arbitrary server;
    // clients use CONNECT for that, and the mesh decides the TLS of mesh destinations.
    if req.uri().scheme_str().is_some_and(|s| s != "http") {
        return bad_request(
            &shared,
            &req,
            &down,
            "only http:// request targets are proxied; use CONNECT for TLS".to_owned(),
        );
    }
    let port = authority.port_u16().unwrap_or(80);
    let state = shared.state.load();
    let route = shared.resolver.resolve(
        &state,
        Destination::Host {
            host: authority.host(),
            port,
        },
    );
    forward(
        shared.clone(),
        route,
        state.version,
        authority.to_string(),
        req,
        down,
    )
    .await
}

/// The destination of a proxy request: the absolute-form target's authority, else `Host`
/// (origin-form requests arrive when a client treats the proxy as the server).
fn request_authority(req: &Request<Incoming>) -> Result<Authority, String> {
    if let Some(authority) = req.uri().authority() {
        return Ok(authority.clone());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .ok_or_else(|| "the request names no destination (no absolute URI, no Host)".to_owned())?;
    let host = host
        .to_str()
        .map_err(|_| "the Host header is not ASCII".to_owned())?;
    host.parse::<Authority>()
        .map_err(|e| format!("invalid Host `{host}`: {e}"))
}

fn bad_request(
    shared: &Shared,
    req: &Request<Incoming>,
    down: &Downstream,
    why: String,
) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let rec = request_recorder(shared, req, &authority, down);
    local_reply(
        rec,
        StatusCode::BAD_REQUEST,
        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        "invalid_proxy_request".to_owned(),
        why,
    )
}

/// `CONNECT host:port`: open the upstream (mTLS with the TCP ALPN for mesh destinations),
/// answer `200 Connection established`, then copy bytes both ways.
async fn connect(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    down: Downstream,
) -> Response<Body> {
    let target = req
        .uri()
        .authority()
        .cloned()
        .and_then(|a| a.port_u16().map(|p| (a, p)));
    let Some((authority, port)) = target else {
        return bad_request(
            &shared,
            &req,
            &down,
            "CONNECT needs a host:port target".to_owned(),
        );
    };
    let mut rec = request_recorder(&shared, &req, authority.as_str(), &down);
    let state = shared.state.load();
    let route = match shared.resolver.resolve(
        &state,
        Destination::Host {
            host: authority.host(),
            port,
        },
    ) {
        Ok(r) => r,
        Err(e) => return route_failure(rec, &e),
    };
    record_route(&mut rec, &route);
    let upstream = match tunnel::open_tcp(&shared, &route, state.version, &mut rec).await {
        Ok(u) => u,
        Err(TcpFailure::NoEndpoint) => return no_healthy_upstream(rec),
        Err(TcpFailure::Dns(why)) => return dns_failure(rec, why),
        Err(TcpFailure::Loop(addr)) => return loop_detected(rec, addr),
        Err(TcpFailure::Connect(e)) => return connect_failure(rec, &e, false),
    };
    rec.update(|e| {
        e.response_code = StatusCode::OK.as_u16();
        e.response_code_details = Some("via_upstream".to_owned());
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let guard = shared.drain.track();
    let tunnel_shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        match on_upgrade.await {
            Ok(upgraded) => {
                tunnel::splice(&tunnel_shared, TokioIo::new(upgraded), upstream, rec).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT client left before the tunnel opened");
                rec.finish();
            }
        }
    });
    let mut response = Response::new(body::empty());
    response.extensions_mut().insert(ESTABLISHED);
    response
}
