//! Where tokens are looked for, and how they are taken out of a request (Envoy's
//! `jwt_authn/extractor.cc`).

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// The locations of one provider, in the order Envoy's extractor visits them: headers sorted by
/// `name + prefix`, then query parameters sorted by name, then cookies sorted by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Locations {
    headers: Vec<HeaderSpec>,
    params: Vec<String>,
    cookies: Vec<String>,
}

#[derive(Debug, Clone)]
struct HeaderSpec {
    /// Lower-case.
    name: String,
    /// Empty means "the whole value is the token".
    prefix: String,
}

/// Where a token was found; decides what `forwardOriginalToken: false` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenLocation {
    Header(String),
    Param(String),
    Cookie,
}

#[derive(Debug, Clone)]
pub(crate) struct ExtractedToken {
    pub(crate) token: String,
    pub(crate) location: TokenLocation,
}

/// Characters of a base64url JWT plus the dot (RFC 4648 §5), as in Envoy's `extractJWT`.
fn is_jwt_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

// === impl Locations ===

impl Locations {
    /// `headers` are `(name, prefix)` pairs as configured; names are lower-cased here.
    pub(crate) fn new(headers: &[(String, String)], params: &[String], cookies: &[String]) -> Self {
        // authentication.md §5.1: "Default locations when no `fromHeaders/fromParams/fromCookies`:
        // header `Authorization` with prefix `Bearer ` **and** query parameter `access_token`."
        if headers.is_empty() && params.is_empty() && cookies.is_empty() {
            return Self::new(
                &[("authorization".to_owned(), "Bearer ".to_owned())],
                &["access_token".to_owned()],
                &[],
            );
        }
        // Envoy keys header locations by `name + prefix` in a sorted map (duplicates collapse).
        let headers: BTreeMap<String, HeaderSpec> = headers
            .iter()
            .map(|(name, prefix)| {
                let name = name.to_ascii_lowercase();
                (
                    format!("{name}{prefix}"),
                    HeaderSpec {
                        name,
                        prefix: prefix.clone(),
                    },
                )
            })
            .collect();
        let mut params = params.to_vec();
        params.sort();
        params.dedup();
        let mut cookies = cookies.to_vec();
        cookies.sort();
        cookies.dedup();
        Self {
            headers: headers.into_values().collect(),
            params,
            cookies,
        }
    }

    /// Every token present in these locations, in extraction order (the authenticator verifies
    /// them last to first).
    pub(crate) fn extract(&self, headers: &[(String, String)], path: &str) -> Vec<ExtractedToken> {
        let mut tokens = Vec::new();
        for spec in &self.headers {
            if let Some(token) = spec.extract(headers) {
                tokens.push(ExtractedToken {
                    token,
                    location: TokenLocation::Header(spec.name.clone()),
                });
            }
        }
        if !self.params.is_empty() {
            let query = parse_query(path);
            for param in &self.params {
                // authentication.md §5.3: "Query param: first value of the param, URL-decoded."
                if let Some((_, value)) = query.iter().find(|(key, _)| key == param) {
                    tokens.push(ExtractedToken {
                        token: value.clone(),
                        location: TokenLocation::Param(param.clone()),
                    });
                }
            }
        }
        if !self.cookies.is_empty() {
            let cookies = parse_cookies(headers, &self.cookies);
            for cookie in &self.cookies {
                // authentication.md §5.3: "Cookie: cookie value."
                if let Some(value) = cookies.get(cookie.as_str()) {
                    tokens.push(ExtractedToken {
                        token: (*value).to_owned(),
                        location: TokenLocation::Cookie,
                    });
                }
            }
        }
        tokens
    }
}

// === impl HeaderSpec ===

impl HeaderSpec {
    fn extract(&self, headers: &[(String, String)]) -> Option<String> {
        // authentication.md §5.3: "Every value of a repeated header is checked." Envoy reads the
        // header with `getAllOfHeaderAsString`, i.e. all values joined by `,`, so the prefix is
        // searched across every value and the first occurrence wins.
        let values: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| *name == self.name)
            .map(|(_, value)| value.as_str())
            .collect();
        if values.is_empty() {
            return None;
        }
        let value = values.join(",");
        if self.prefix.is_empty() {
            // authentication.md §5.3: "Header without prefix: whole value is the token."
            return Some(value);
        }
        // authentication.md §5.3: "the header value is searched for the prefix **anywhere,
        // case-sensitively** (`find`); if absent the header is skipped (token treated as
        // missing — *not* a 401)."
        let at = value.find(&self.prefix)? + self.prefix.len();
        Some(token_after(&value, at).to_owned())
    }
}

/// Envoy's `extractJWT`. authentication.md §5.3: "After the prefix, leading characters outside
/// `[A-Za-z0-9_.-]` are skipped". The token then runs to the first character outside that set
/// (so `Bearer a.b.c, Bearer x.y.z` yields `a.b.c`); with no such character after the prefix the
/// whole header value is returned, and fails verification.
pub(crate) fn token_after(value: &str, after: usize) -> &str {
    let bytes = value.as_bytes();
    let Some(start) =
        (after..bytes.len()).find(|i| bytes.get(*i).copied().is_some_and(is_jwt_char))
    else {
        return value;
    };
    let end = (start..bytes.len())
        .find(|i| !bytes.get(*i).copied().is_some_and(is_jwt_char))
        .unwrap_or(bytes.len());
    // INVARIANT: `start` is an ASCII byte and `end` is either the end or a byte that is not a
    // UTF-8 continuation byte (it follows an ASCII byte), so both are char boundaries.
    value.get(start..end).unwrap_or(value)
}

/// Envoy's `parseAndDecodeQueryString`: `&`-separated, split at the first `=`, both sides
/// percent-decoded (`+` stays `+`); a parameter without `=` has an empty value.
pub(crate) fn parse_query(path: &str) -> Vec<(String, String)> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    let mut params = Vec::new();
    let mut rest = query;
    while !rest.is_empty() {
        let (param, next) = rest.split_once('&').unwrap_or((rest, ""));
        match param.split_once('=') {
            Some((key, value)) => params.push((percent_decode(key), percent_decode(value))),
            None => params.push((param.to_owned(), String::new())),
        }
        rest = next;
    }
    params
}

fn percent_decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Envoy's `Http::Utility::parseCookies`: every `cookie` header, `;`-separated pairs, leading
/// spaces of the name dropped, one pair of surrounding double quotes stripped from the value, and
/// the first occurrence of a name wins.
pub(crate) fn parse_cookies<'a>(
    headers: &'a [(String, String)],
    wanted: &[String],
) -> BTreeMap<&'a str, &'a str> {
    let mut cookies = BTreeMap::new();
    for (_, value) in headers.iter().filter(|(name, _)| name == "cookie") {
        for pair in value.split(';').filter(|pair| !pair.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let name = name.trim_start_matches(' ');
            if !wanted.iter().any(|w| w == name) {
                continue;
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            cookies.entry(name).or_insert(value);
        }
    }
    cookies
}

/// The `:path` after Envoy (1.31 and later) removes a verified token's query parameter.
///
/// authentication.md §5.1 `forwardOriginalToken`: "false ⇒ after success the token's header
/// (whole header) is removed; newer Envoy also removes the query parameter; cookies never
/// removed". Envoy rebuilds the query from its parsed form (`QueryParamsMulti`): names sorted,
/// values percent-decoded, every value kept; no `?` when nothing is left.
pub(crate) fn remove_query_param(path: &str, param: &str) -> String {
    let Some((base, _)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut remaining: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in parse_query(path) {
        if key != param {
            remaining.entry(key).or_default().push(value);
        }
    }
    let mut rebuilt = base.to_owned();
    let mut separator = '?';
    for (key, values) in &remaining {
        for value in values {
            rebuilt.push(separator);
            rebuilt.push_str(key);
            rebuilt.push('=');
            rebuilt.push_str(value);
            separator = '&';
        }
    }
    rebuilt
}
