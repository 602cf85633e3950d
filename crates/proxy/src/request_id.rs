//! `x-request-id`: Envoy's connection manager gives every request that arrives without one a
//! random UUID (version 4), on the client sidecar and on the server sidecar, so the application,
//! both access-log lines and any tracing see the same identifier (`generate_request_id`, on by
//! default in Istio's sidecars). A request that already carries one keeps it.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The header Envoy reads and writes.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds a fresh `x-request-id` unless the request has one.
pub(crate) fn ensure(headers: &mut HeaderMap) {
    if headers.contains_key(&X_REQUEST_ID) {
        return;
    }
    if let Some(id) = new_uuid_v4() {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
}

/// A random UUID in its 8-4-4-4-12 lower-case form, or `None` if the system has no randomness
/// to give (the request then goes on without an id rather than failing).
fn new_uuid_v4() -> Option<HeaderValue> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    // RFC 9562 §5.4: version 4 in the high nibble of byte 6, variant 0b10 in byte 8.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_version_4_uuid_when_missing() {
        let mut headers = HeaderMap::new();
        ensure(&mut headers);
        let id = headers
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(
            matches!(groups[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
            "{id}"
        );
        let mut again = HeaderMap::new();
        ensure(&mut again);
        assert_ne!(headers.get(&X_REQUEST_ID), again.get(&X_REQUEST_ID));
    }

    #[test]
    fn keeps_the_callers_id() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        ensure(&mut headers);
        assert_eq!(
            headers.get(&X_REQUEST_ID).map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
