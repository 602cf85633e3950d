//! Local replies: the responses the proxy sends itself when a request cannot reach an
//! upstream, with Envoy's status, body, response flags and response code details so clients
//! and logs see what an Envoy sidecar would show.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{self, Body};
use super::connect::ConnectError;
use super::event::Recorder;
use super::resolve::RouteError;
use crate::observe::record::ResponseFlags;

/// A local reply: the response the proxy itself sends, logged at once.
pub(super) fn local_reply(
    mut rec: Recorder,
    status: StatusCode,
    flags: ResponseFlags,
    details: String,
    body: String,
) -> Response<Body> {
    rec.flag(flags);
    let len = body.len() as u64;
    rec.update(|e| {
        e.response_code = status.as_u16();
        e.response_code_details = Some(details);
    });
    rec.sent.fetch_add(len, Ordering::Relaxed);
    rec.finish();
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Envoy's 503 for an upstream that could not be reached; `retried` adds `URX`.
pub(super) fn connect_failure(
    mut rec: Recorder,
    error: &ConnectError,
    retried: bool,
) -> Response<Body> {
    rec.update(|e| e.upstream_transport_failure_reason = error.transport_failure_reason());
    let flags = if retried {
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
    } else {
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE
    };
    local_reply(
        rec,
        StatusCode::SERVICE_UNAVAILABLE,
        flags,
        error.response_code_details(),
        error.local_reply_body(),
    )
}

/// Envoy's answer when a route exists but nothing can serve it.
pub(super) fn route_failure(rec: Recorder, error: &RouteError) -> Response<Body> {
    local_reply(
        rec,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::NO_ROUTE_FOUND,
        "route_not_found".to_owned(),
        error.to_string(),
    )
}

/// Envoy's reply for a cluster without endpoints.
pub(super) fn no_healthy_upstream(rec: Recorder) -> Response<Body> {
    local_reply(
        rec,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::NO_HEALTHY_UPSTREAM,
        "no_healthy_upstream".to_owned(),
        "no healthy upstream".to_owned(),
    )
}

/// A request naming the proxy itself would loop through it until resources run out.
pub(super) fn loop_detected(rec: Recorder, addr: SocketAddr) -> Response<Body> {
    local_reply(
        rec,
        StatusCode::LOOP_DETECTED,
        ResponseFlags::NO_ROUTE_FOUND,
        "loop_detected".to_owned(),
        format!("the destination {addr} is this proxy"),
    )
}

/// Envoy's reply when a destination outside the mesh has no address.
pub(super) fn dns_failure(rec: Recorder, why: String) -> Response<Body> {
    local_reply(
        rec,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::DNS_FAIL,
        "dns_resolution_failure".to_owned(),
        why,
    )
}

/// Marks the local reply to an upstream that closed or reset before answering, for the plain
/// forwarder, which passes the reset on instead (see `http_proxy`).
#[derive(Debug, Clone, Copy)]
pub(super) struct UpstreamReset;

/// Envoy's 503 when the upstream closed or reset before a response.
pub(super) fn upstream_reset(rec: Recorder, error: &hyper::Error) -> Response<Body> {
    tracing::debug!(error = %error, "upstream request failed");
    let mut response = local_reply(
        rec,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
        "upstream_reset_before_response_started{connection_termination}".to_owned(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            .to_owned(),
    );
    response.extensions_mut().insert(UpstreamReset);
    response
}
