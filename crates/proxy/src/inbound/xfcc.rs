//! `x-forwarded-client-cert` on inbound HTTP (authentication.md §1.9).
//!
//! §1.9: "Sidecar inbound HCM uses `forward_client_cert_details: APPEND_FORWARD` with
//! current-cert details `Subject`, `URI`, `DNS` (not `Cert`/`Chain`) ⇒ app receives
//! `X-Forwarded-Client-Cert: By=<server SPIFFE>;Hash=<sha256 hex of client cert>;Subject="";URI=<client SPIFFE>`.
//! No header when the connection is plaintext."

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::tls::PeerInfo;

/// The header name.
pub(crate) static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// This hop's element for a client certificate, in Envoy's order: `By`, `Hash`, `Subject`,
/// `URI`…, `DNS`…. Built once per connection; every request on it carries the same element.
pub(crate) fn element(by: &str, peer: &PeerInfo) -> Option<HeaderValue> {
    let mut value = String::with_capacity(160);
    value.push_str("By=");
    value.push_str(by);
    value.push_str(";Hash=");
    value.push_str(&peer.leaf_sha256);
    // Envoy always quotes the subject, so an Istio certificate (empty subject) gives `Subject=""`.
    value.push_str(";Subject=\"");
    value.push_str(&escape_quoted(&peer.subject));
    value.push('"');
    for uri in &peer.uri_sans {
        value.push_str(";URI=");
        value.push_str(uri);
    }
    for dns in &peer.dns_sans {
        value.push_str(";DNS=");
        value.push_str(dns);
    }
    HeaderValue::from_str(&value).ok()
}

/// Applies APPEND_FORWARD to a request's headers.
///
/// With a client certificate: the element is appended to what the client sent, separated by
/// `,` (one combined header). Without (plaintext): every XFCC the client sent is removed, per
/// §1.9 "No header when the connection is plaintext" — Envoy removes the header whenever the
/// downstream connection did not present a certificate, unless the mode is ALWAYS_FORWARD_ONLY.
pub(crate) fn apply(headers: &mut HeaderMap, element: Option<&HeaderValue>) {
    let Some(element) = element else {
        headers.remove(&XFCC);
        return;
    };
    let mut combined: Vec<u8> = Vec::new();
    for existing in headers.get_all(&XFCC) {
        if !combined.is_empty() {
            combined.push(b',');
        }
        combined.extend_from_slice(existing.as_bytes());
    }
    if combined.is_empty() {
        headers.insert(XFCC.clone(), element.clone());
        return;
    }
    combined.push(b',');
    combined.extend_from_slice(element.as_bytes());
    match HeaderValue::from_bytes(&combined) {
        Ok(v) => {
            headers.insert(XFCC.clone(), v);
        }
        // The client's value was a valid header value and so is ours; a join of the two cannot
        // be invalid, but if it were, the proxy's own element is what must reach the app.
        Err(_) => {
            headers.insert(XFCC.clone(), element.clone());
        }
    }
}

/// Envoy escapes `"` and `\` inside the quoted Subject value.
fn escape_quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['"', '\\']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer() -> PeerInfo {
        PeerInfo {
            uri: Some(Arc::from("spiffe://cluster.local/ns/foo/sa/sleep")),
            uri_sans: vec!["spiffe://cluster.local/ns/foo/sa/sleep".to_owned()],
            dns_sans: vec![],
            subject: Arc::from(""),
            leaf_sha256: "ab12".to_owned(),
            version: Some("TLSv1.3"),
            alpn: None,
            resumed: false,
        }
    }

    #[test]
    fn element_has_envoy_shape() {
        let v = element("spiffe://cluster.local/ns/foo/sa/httpbin", &peer()).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=ab12;Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep"
        );
    }

    #[test]
    fn append_forward_and_plaintext_strip() {
        let e = HeaderValue::from_static("By=b;Hash=h;Subject=\"\";URI=u");
        let mut h = HeaderMap::new();
        h.append(&XFCC, HeaderValue::from_static("By=x;URI=y"));
        apply(&mut h, Some(&e));
        assert_eq!(
            h.get(&XFCC).unwrap(),
            "By=x;URI=y,By=b;Hash=h;Subject=\"\";URI=u"
        );
        assert_eq!(h.get_all(&XFCC).iter().count(), 1);

        apply(&mut h, None);
        assert!(h.get(&XFCC).is_none());

        apply(&mut h, Some(&e));
        assert_eq!(h.get(&XFCC).unwrap(), &e);
    }
}
