//! Request and response heads as they cross the proxy: the form the upstream expects
//! (origin-form with `Host` for HTTP/1.1, `:authority` for HTTP/2) and no connection-specific
//! headers in either direction.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri, Version};

use super::body::Body;

/// The request as the upstream gets it: origin-form with `Host` for HTTP/1.1; for HTTP/2 the
/// authority travels as `:authority`, so the URI is absolute and `Host` goes.
pub(super) fn upstream_request(
    mut parts: Parts,
    body: Body,
    authority: &str,
    h2: bool,
) -> Result<Request<Body>, String> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_owned();
    strip_hop_by_hop(&mut parts.headers);
    let invalid =
        |e: &dyn std::fmt::Display| format!("invalid request target {authority}{path}: {e}");
    if h2 {
        parts.uri = format!("http://{authority}{path}")
            .parse::<Uri>()
            .map_err(|e| invalid(&e))?;
        parts.headers.remove(header::HOST);
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = path.parse::<Uri>().map_err(|e| invalid(&e))?;
        let host = HeaderValue::from_str(authority).map_err(|e| invalid(&e))?;
        parts.headers.insert(header::HOST, host);
        parts.version = Version::HTTP_11;
    }
    // Extensions hold downstream connection state (upgrades); none of it belongs upstream.
    parts.extensions = http::Extensions::new();
    Ok(Request::from_parts(parts, body))
}

/// An HTTP/2-form request for an upstream that chose HTTP/1.1 in ALPN.
pub(super) fn into_http1(mut req: Request<Body>, authority: &str) -> Request<Body> {
    if req.version() != Version::HTTP_2 {
        return req;
    }
    *req.version_mut() = Version::HTTP_11;
    if let Some(path) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(path);
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        req.headers_mut().insert(header::HOST, host);
    }
    req
}

/// RFC 9110 §7.6.1: connection-specific headers are not forwarded, nor the headers the
/// `Connection` header names. `te: trailers` stays: gRPC needs it end to end.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(&name);
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::body;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("proxy-connection").is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn requests_go_upstream_in_origin_form_with_host() {
        let req = Request::builder()
            .uri("http://httpbin.foo:8000/get?x=1")
            .header("proxy-connection", "keep-alive")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let out = upstream_request(parts, body::empty(), "httpbin.foo:8000", false).unwrap();
        assert_eq!(out.uri(), "/get?x=1");
        assert_eq!(out.headers()[header::HOST], "httpbin.foo:8000");
        assert!(out.headers().get("proxy-connection").is_none());
    }
}
