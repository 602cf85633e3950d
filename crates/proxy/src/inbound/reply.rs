//! Local replies: the responses the proxy writes itself instead of the application's, with
//! Envoy's status codes and bodies, and Envoy's conversion of local replies for gRPC requests.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::body::ResponseBody;
use super::event::EventGuard;

/// authorization.md §9: "local reply **403**, body exactly `RBAC: access denied` (19 bytes,
/// `text/plain`)".
pub(crate) const RBAC_DENIED: &str = "RBAC: access denied";

/// Envoy's router body when the application cannot be reached.
pub(crate) const UPSTREAM_CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

/// Envoy's router body when the application closed before answering.
pub(crate) const UPSTREAM_TERMINATED: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: `content-type` is `application/grpc` or starts
/// with `application/grpc+` (`application/grpc+proto`, …).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('+'))
        })
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`, used when a local reply answers a gRPC request.
pub(crate) fn http_to_grpc_status(status: u16) -> u32 {
    match status {
        // INTERNAL
        400 => 13,
        // UNAUTHENTICATED
        401 => 16,
        // PERMISSION_DENIED
        403 => 7,
        // UNIMPLEMENTED
        404 => 12,
        // UNAVAILABLE
        429 | 502 | 503 | 504 => 14,
        // UNKNOWN
        _ => 2,
    }
}

/// A local reply with `status` and `body` (`text/plain`), plus `extra` headers.
///
/// For a gRPC request the reply is converted the way Envoy converts local replies
/// (authorization.md §9: "same local reply converted to gRPC: HTTP 200 trailers‑only,
/// `grpc-status: 7` (PERMISSION_DENIED), `grpc-message: RBAC: access denied`"): HTTP 200,
/// `content-type: application/grpc`, `grpc-status` mapped from the HTTP status, `grpc-message`
/// the body, and no body, so the header block ends the stream (a trailers-only response).
pub(crate) fn local_reply(
    status: u16,
    body: &str,
    grpc: bool,
    extra: &[(&'static str, HeaderValue)],
    mut guard: EventGuard,
) -> Response<ResponseBody> {
    let http_status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::with_capacity(4 + extra.len());
    let response_body = if grpc {
        let grpc_status = http_to_grpc_status(status);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(grpc_status));
        if let Ok(message) = HeaderValue::from_str(&grpc_message_encode(body)) {
            headers.insert("grpc-message", message);
        }
        if let Some(event) = guard.event() {
            event.response_code = 200;
            event.grpc_status = Some(grpc_status);
        }
        Bytes::new()
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(event) = guard.event() {
            event.response_code = http_status.as_u16();
        }
        Bytes::copy_from_slice(body.as_bytes())
    };
    for (name, value) in extra {
        headers.insert(*name, value.clone());
    }
    let mut response = Response::new(ResponseBody::local(response_body, guard));
    *response.status_mut() = if grpc { StatusCode::OK } else { http_status };
    *response.headers_mut() = headers;
    response
}

/// gRPC's `grpc-message` encoding: percent-encode bytes outside printable ASCII and `%` itself
/// (the gRPC HTTP/2 protocol spec, as Envoy's `PercentEncoding::encode` does for local replies).
pub(crate) fn grpc_message_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn status_mapping_and_message_encoding() {
        assert_eq!(http_to_grpc_status(403), 7);
        assert_eq!(http_to_grpc_status(401), 16);
        assert_eq!(http_to_grpc_status(503), 14);
        assert_eq!(http_to_grpc_status(418), 2);
        assert_eq!(grpc_message_encode(RBAC_DENIED), RBAC_DENIED);
        assert_eq!(grpc_message_encode("100% é"), "100%25 %C3%A9");
    }
}
