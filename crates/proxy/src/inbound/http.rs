//! The HTTP chain: HTTP/1.1 and HTTP/2 (gRPC included) served over the plaintext or mTLS stream,
//! each request run through `jwt_authn` → RBAC (`InboundPolicy::authorize_http`) and then either
//! forwarded to the application or answered locally.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jiff::Timestamp;
use meshward_policy::inventory::Protocol;
use meshward_policy::jwt::HeaderMutations;
use meshward_policy::{Header, HttpVerdict, InboundRequest};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use super::body::{RequestBody, ResponseBody, grpc_status};
use super::conn::Conn;
use super::drain::Drain;
use super::event::{AuthzVerdict, EventGuard};
use super::reply::{self, local_reply};
use super::xfcc;
use crate::observe::record::ResponseFlags;

/// authentication.md §5.5: "path = original path incl. query, truncated to 256 chars".
const REALM_PATH_MAX: usize = 256;

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Serves HTTP on `io` until the client closes, or shutdown.
pub(crate) async fn serve<I>(io: I, conn: Arc<Conn>, shared: Arc<Shared>, drain: Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let conn = conn.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req| handle(req, &conn, &shared))
    };
    // The negotiated ALPN fixes the protocol; without one (plaintext, or an `istio` value)
    // the HTTP/2 preface is sniffed.
    let negotiated = conn.peer.as_ref().and_then(|p| p.alpn.as_deref());
    let mut builder = match negotiated {
        Some(b"h2") => auto::Builder::new(TokioExecutor::new()).http2_only(),
        Some(b"http/1.1") => auto::Builder::new(TokioExecutor::new()).http1_only(),
        _ => auto::Builder::new(TokioExecutor::new()),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.header_read);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = drain.clone();
    let mut closing = drain;
    let mut changes = shared.state.subscribe();
    let mut watching = true;
    let mut graceful = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(remote = %conn.remote, dst = %conn.dst, error = %e, "inbound HTTP connection ended with an error");
                }
                return;
            }
            () = draining.draining(), if !graceful => {
                // Idle HTTP/1 connections close now, busy ones after their response; HTTP/2
                // clients get GOAWAY and finish their streams.
                connection.as_mut().graceful_shutdown();
                graceful = true;
            }
            changed = changes.changed(), if watching && !graceful => {
                // Every request reads the current state, so authorization changes apply to the
                // next request by themselves. A PeerAuthentication change that leaves this
                // connection without a chain (plaintext on a port now STRICT, mTLS on a port now
                // DISABLE) closes it the way Envoy drains connections of a removed chain.
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let mode = shared.state.load().inbound.mtls_mode(conn.dst.port());
                if !conn.admitted_by(mode) {
                    tracing::info!(remote = %conn.remote, dst = %conn.dst, mode = mode.as_str(), "inbound HTTP connection closing: its PeerAuthentication chain is gone");
                    connection.as_mut().graceful_shutdown();
                    graceful = true;
                }
            }
            () = closing.closed() => return,
        }
    }
}

/// Where a request stands once the policy has spoken: answered locally, or sent to the
/// application and waiting for its response. It is the future hyper keeps for the request.
///
/// Deciding needs no waiting, so it is done before this exists, and the only wait left is for
/// the application's response head. Written out by hand rather than as an `async` block, the
/// future is just this enum: an `async` block would also keep every local of the decision
/// (request parts, header views, the verdict) and a second copy of what it awaits, about four
/// times the size, stored per connection and copied per request.
enum Step {
    /// A local reply (denied, unauthenticated, bad request, application unavailable).
    Reply(Response<ResponseBody>),
    /// The request is on its way to the application.
    Upstream(PendingUpstream),
    /// The response was handed to hyper.
    Done,
}

/// A request sent to the application: its response to come, and the event to complete.
struct PendingUpstream {
    response: hyper_util::client::legacy::ResponseFuture,
    guard: EventGuard,
    grpc: bool,
}

impl Future for Step {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let step = self.get_mut();
        let answer = match step {
            Step::Upstream(pending) => Some(ready!(Pin::new(&mut pending.response).poll(cx))),
            Step::Reply(_) | Step::Done => None,
        };
        let response = match (std::mem::replace(step, Step::Done), answer) {
            (Step::Reply(response), _) => response,
            (Step::Upstream(pending), Some(answer)) => relay(answer, pending.guard, pending.grpc),
            // Polled after it completed: there is nothing left to give.
            _ => return Poll::Pending,
        };
        Poll::Ready(Ok(response))
    }
}

/// One request: authorize, then forward or answer locally.
fn handle(req: Request<Incoming>, conn: &Conn, shared: &Shared) -> Step {
    let started = Instant::now();
    let mut event = conn.event(Timestamp::now());
    let (mut parts, body) = req.into_parts();
    crate::request_id::ensure(&mut parts.headers);
    event.protocol = Some(match parts.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    });
    if shared.request_details {
        event.request_headers = crate::observe::record::logged_headers(&parts.headers);
    }
    let grpc = reply::is_grpc(&parts.headers);
    // Envoy sets `x-forwarded-proto` (and `:scheme` when absent) from the downstream transport.
    let scheme = if conn.peer.is_some() { "https" } else { "http" };

    // The connection manager rewrites these before any filter runs, so JWT and RBAC (header
    // conditions included) see the request as the application will.
    strip_hop_by_hop(&mut parts.headers);
    // authentication.md §1.9 (APPEND_FORWARD; removed on plaintext).
    xfcc::apply(&mut parts.headers, conn.xfcc.as_ref());
    // The client is not a trusted proxy (`xff_num_trusted_hops: 0`), so its value is replaced.
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));

    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = request_authority(&parts.uri, &parts.headers);
    if shared.request_details {
        event.method = Some(parts.method.as_str().to_owned());
        event.path = Some(path.to_owned());
        event.authority = Some(authority.to_owned());
    }

    let state = shared.state.load();
    let port = conn.dst.port();
    // Envoy keeps HTTP/1.1 `Host` as `:authority`, never as a header, so policies see it only
    // as the authority. The policy borrows the header map; only a value that is not visible
    // ASCII is copied, decoded lossily.
    let lossy: Vec<String> = parts
        .headers
        .iter()
        .filter(|(name, value)| *name != HOST && value.to_str().is_err())
        .map(|(_, value)| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let mut lossy_values = lossy.iter();
    let headers: Vec<Header<'_>> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != HOST)
        .filter_map(|(name, value)| {
            let value = match value.to_str() {
                Ok(text) => text,
                Err(_) => lossy_values.next()?.as_str(),
            };
            Some((name.as_str(), value))
        })
        .collect();
    let decision = state.inbound.authorize_http(
        &conn.inbound_connection(),
        InboundRequest {
            method: parts.method.as_str(),
            path,
            authority,
            headers: &headers,
            now_unix: Timestamp::now().as_second(),
        },
        false,
    );
    event.request_principal = decision.jwt.as_ref().and_then(|j| j.principal.clone());
    let mut guard = EventGuard::new(event, shared.events.clone(), started);

    match decision.verdict {
        HttpVerdict::Forward {
            mutations,
            path,
            decision,
        } => {
            if let Some(event) = guard.event() {
                event.set_authz(decision);
            }
            apply_jwt_changes(&mut parts.headers, &mutations);
            // The policy returns the normalized path (authorization.md §7.1: "the backend sees
            // the same path"), minus a token parameter JWT removed.
            let h2 = matches!(
                state.workload().protocol(port),
                Protocol::Http2 | Protocol::Grpc
            );
            drop(state);
            forward(parts, body, &path, h2, grpc, conn, shared, guard)
        }
        HttpVerdict::Deny { decision } => {
            let details = decision.response_code_details();
            if let Some(event) = guard.event() {
                event.set_authz(decision);
                event.response_code_details = details;
            }
            Step::Reply(local_reply(403, reply::RBAC_DENIED, grpc, &[], guard))
        }
        HttpVerdict::Unauthenticated(rejection) => {
            // authentication.md §5.5: "`%RESPONSE_CODE_DETAILS%` =
            // `jwt_authn_access_denied{<status with spaces replaced by _>}`".
            if let Some(event) = guard.event() {
                event.verdict = Some(AuthzVerdict::Unauthenticated);
                event.authz_reason = Some(rejection.message.to_owned());
                event.response_code_details = Some(format!(
                    "jwt_authn_access_denied{{{}}}",
                    rejection.message.replace(' ', "_")
                ));
            }
            // §5.5: header `www-authenticate: Bearer realm="<scheme>://<host><path>",
            // error="invalid_token"` on the local reply (Envoy's jwt_authn adds it to every
            // rejection, the 403 for audiences included).
            let realm = realm(&parts.uri, scheme, authority, path);
            let extra: Vec<(&'static str, HeaderValue)> = HeaderValue::from_str(&format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\""
            ))
            .map(|v| vec![("www-authenticate", v)])
            .unwrap_or_default();
            Step::Reply(local_reply(
                rejection.status,
                rejection.message,
                grpc,
                &extra,
                guard,
            ))
        }
        HttpVerdict::BadRequest(rejection) => {
            if let Some(event) = guard.event() {
                event.response_code_details = Some(path_rejection_details(rejection).to_owned());
            }
            Step::Reply(local_reply(rejection.status(), "", grpc, &[], guard))
        }
    }
}

/// Sends an allowed request to the application; [`relay`] streams its response back.
#[allow(clippy::too_many_arguments)]
fn forward(
    mut parts: http::request::Parts,
    body: Incoming,
    path: &str,
    h2: bool,
    grpc: bool,
    conn: &Conn,
    shared: &Shared,
    mut guard: EventGuard,
) -> Step {
    let authority = request_authority(&parts.uri, &parts.headers).to_owned();
    parts.uri = upstream_uri(&authority, path, conn)
        .or_else(|| upstream_uri("", path, conn))
        .unwrap_or_else(|| parts.uri.clone());
    if h2 {
        parts.version = Version::HTTP_2;
        // The authority travels as `:authority`.
        parts.headers.remove(HOST);
    } else {
        parts.version = Version::HTTP_11;
    }
    if let Some(event) = guard.event() {
        event.upstream_host = Some(conn.upstream);
    }
    let Some(client) = shared.upstreams.http(conn.dst.port(), h2) else {
        return Step::Reply(upstream_failed(
            guard,
            grpc,
            true,
            "the application client is unavailable".to_owned(),
        ));
    };
    let request = Request::from_parts(parts, RequestBody::new(body, guard.received_counter()));
    Step::Upstream(PendingUpstream {
        response: client.request(request),
        guard,
        grpc,
    })
}

/// The application's answer to a forwarded request, streamed back (or Envoy's 503 when it
/// gave none).
fn relay(
    answer: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    mut guard: EventGuard,
    grpc: bool,
) -> Response<ResponseBody> {
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(event) = guard.event() {
                event.response_code = parts.status.as_u16();
                event.response_code_details = Some("via_upstream".to_owned());
                // A trailers-only gRPC response carries its status in the headers.
                event.grpc_status = grpc_status(&parts.headers);
            }
            Response::from_parts(parts, ResponseBody::upstream(body, guard))
        }
        Err(e) => {
            let connect = e.is_connect();
            upstream_failed(guard, grpc, connect, error_chain(&e))
        }
    }
}

/// Envoy's router reply when the application could not be reached (`UF`) or closed before
/// answering (`UC`): 503 with the reset reason in the body.
fn upstream_failed(
    mut guard: EventGuard,
    grpc: bool,
    connect: bool,
    reason: String,
) -> Response<ResponseBody> {
    let (flag, body, details) = if connect {
        (
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            reply::UPSTREAM_CONNECT_FAILURE,
            "upstream_reset_before_response_started{connection_failure}",
        )
    } else {
        (
            ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            reply::UPSTREAM_TERMINATED,
            "upstream_reset_before_response_started{connection_termination}",
        )
    };
    if let Some(event) = guard.event() {
        event.flag(flag);
        event.response_code_details = Some(details.to_owned());
        event.upstream_transport_failure_reason = Some(reason);
    }
    local_reply(503, body, grpc, &[], guard)
}

/// `:authority` (HTTP/2) or `Host` (HTTP/1.1); empty when neither is present.
fn request_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

/// Envoy's `buildOriginalUri`: `<:scheme>://<host><path>`, the path cut to 256 characters.
fn realm(uri: &Uri, transport_scheme: &str, authority: &str, path: &str) -> String {
    let scheme = uri.scheme_str().unwrap_or(transport_scheme);
    let mut cut = path.len().min(REALM_PATH_MAX);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    let path = path.get(..cut).unwrap_or(path);
    format!("{scheme}://{authority}{path}")
}

/// Envoy's response code details for a refused `:path`.
fn path_rejection_details(rejection: meshward_policy::path::PathRejection) -> &'static str {
    use meshward_policy::path::PathRejection;
    match rejection {
        PathRejection::MissingPath => "missing_path_rejected",
        PathRejection::NotRelative => "absolute_path_rejected",
        PathRejection::ForbiddenByte { .. } | PathRejection::EncodedNul => {
            "path_normalization_failed"
        }
    }
}

/// Applies what `jwt_authn` changed (authentication.md §5.1): headers it removed go, headers it
/// wrote are appended (a name or value that cannot be a header is dropped). Everything else
/// keeps its exact bytes.
fn apply_jwt_changes(headers: &mut HeaderMap, mutations: &HeaderMutations) {
    for name in &mutations.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &mutations.append {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// Removes connection-specific headers, which describe one hop and must not be forwarded
/// (RFC 9110 §7.6.1); HTTP/2 forbids them outright. `te: trailers` is end-to-end for gRPC and
/// stays.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if name != TE {
            headers.remove(name);
        }
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers_only = headers
        .get_all(TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers_only {
        headers.remove(TE);
    }
}

/// `http://<authority><path>`; the application's address stands in for a missing or unusable
/// authority. The per-port client dials the application whatever the authority says.
fn upstream_uri(authority: &str, path: &str, conn: &Conn) -> Option<Uri> {
    let fallback;
    let authority = if authority.is_empty() {
        fallback = conn.upstream.to_string();
        fallback.as_str()
    } else {
        authority
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()
}

/// An error and its sources, for `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_request_future_stays_small() {
        // hyper keeps this future per connection and moves it per request; as an `async`
        // block it was over 5 KiB. The bound leaves room for a few more fields, not for
        // an `async` state machine to come back.
        assert!(
            std::mem::size_of::<Step>() <= 1024,
            "Step is {} bytes",
            std::mem::size_of::<Step>()
        );
    }
}
