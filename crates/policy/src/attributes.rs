//! What the evaluator knows about one connection and, on HTTP chains, one request
//! (authorization.md §1).

use std::net::IpAddr;

use serde_json::{Map, Value};

/// Attributes of one inbound connection, and of its request when the port is HTTP.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Direct peer address (`source.ip`, `ipBlocks`).
    pub src_ip: IpAddr,
    /// Envoy's trusted client address (`remote.ip`, `remoteIpBlocks`), §4.6.
    pub remote_ip: IpAddr,
    /// Local address of the accepted connection.
    pub dst_ip: IpAddr,
    /// Container (target) port, not the Service port.
    pub dst_port: u16,
    /// The peer certificate's URI SAN (`spiffe://td/ns/x/sa/y`); `None` for plaintext.
    pub peer: Option<&'a str>,
    /// TLS SNI, `""` when none.
    pub sni: &'a str,
    /// The request, on HTTP chains.
    pub http: Option<HttpAttributes<'a>>,
}

/// One request header line as the proxy received it: lower-case name, value. Borrowed from the
/// proxy's own header map, so deciding a request copies no header.
pub type Header<'a> = (&'a str, &'a str);

/// Header lines borrowed from an owned list (a PolicyTest case, a `check` request).
#[must_use]
pub fn borrow_headers(owned: &[(String, String)]) -> Vec<Header<'_>> {
    owned
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Attributes of one HTTP request, after normalization (§7).
#[derive(Debug, Clone)]
pub struct HttpAttributes<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:authority` (HTTP/1 `Host`) as received, with any port.
    pub authority: &'a str,
    /// Normalized `:path` including the query.
    pub path: &'a str,
    /// Request headers, names lower-case; a repeated header appears once per line.
    pub headers: &'a [Header<'a>],
    /// Payload of a JWT validated by RequestAuthentication.
    pub jwt: Option<&'a Map<String, Value>>,
}

impl HttpAttributes<'_> {
    /// The path used by `paths`: query and fragment stripped (Envoy `url_path`).
    pub fn url_path(&self) -> &str {
        crate::path::url_path(self.path)
    }

    /// Every line of header `name` (lower-case). Pseudo-headers map to the request line.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let pseudo = match name {
            ":method" => Some(self.method),
            ":path" => Some(self.path),
            ":authority" | "host" => Some(self.authority),
            _ => None,
        };
        let regular = self
            .headers
            .iter()
            .filter(move |(n, _)| pseudo.is_none() && *n == name)
            .map(|(_, v)| *v);
        pseudo.into_iter().chain(regular)
    }

    /// A claim of the validated JWT, following nested objects.
    pub fn claim(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.jwt?.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }
}
