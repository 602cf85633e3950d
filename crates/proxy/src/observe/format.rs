//! Envoy access-log format strings: parsed once, rendered per request.
//!
//! Implements MeshConfig `accessLogEncoding`/`accessLogFormat` (authentication.md §6.1): a TEXT
//! format is a string of literal text and `%OPERATOR%` commands; a JSON format is an object whose
//! string values are such strings. Parsing follows Envoy's substitution-format grammar: a command
//! is `%NAME%`, `%NAME(argument)%` or `%NAME(argument):max_length%` with `NAME` made of `A-Z`,
//! `0-9` and `_`; `%%` is a literal `%`. An operator meshward does not implement is refused with
//! its name and byte position (the caller falls back to Istio's default format, as istiod does
//! for a JSON format it cannot parse).
//!
//! meshward always reports its authorization decision. A TEXT line ends with
//! ` authz=<decision> policy=<namespace/name or -> reason="<sentence>"` (before the newline) and
//! a JSON line carries the keys `authz_decision`, `authz_policy` and `authz_reason`, unless the
//! format already names one of the operators `%AUTHZ_DECISION%`, `%AUTHZ_POLICY%`,
//! `%AUTHZ_REASON%` (meshward extensions, like Istio's own `%REQ_WITHOUT_QUERY%`). A JSON key the
//! user already defined is never overwritten.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use crate::observe::record::RequestRecord;

/// Istio's default TEXT format (authentication.md §6.1, "Default TEXT format").
pub const ISTIO_DEFAULT_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON keys and their operators (authentication.md §6.1, "Default JSON keys
/// … (same operators as TEXT)").
pub const ISTIO_DEFAULT_JSON_FORMAT: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The JSON keys meshward adds, with their operators.
const AUTHZ_JSON_KEYS: [(&str, Operator); 3] = [
    ("authz_decision", Operator::AuthzDecision),
    ("authz_policy", Operator::AuthzPolicy),
    ("authz_reason", Operator::AuthzReason),
];

/// What is wrong with a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A `%` that does not start a well-formed command.
    #[error("no valid access log command at position {position} (`{found}`)")]
    InvalidCommand {
        /// Byte offset of the `%`.
        position: usize,
        /// The text from there (shortened).
        found: String,
    },
    /// A well-formed command whose operator meshward does not implement.
    #[error("unsupported access log operator %{operator}% at position {position}")]
    UnknownOperator {
        /// The operator's name.
        operator: String,
        /// Byte offset of its `%`.
        position: usize,
    },
    /// A known operator with a bad argument or length.
    #[error("access log operator %{operator}% at position {position}: {problem}")]
    InvalidArgument {
        /// The operator's name.
        operator: String,
        /// Byte offset of its `%`.
        position: usize,
        /// What is wrong.
        problem: String,
    },
    /// A problem inside one value of a JSON format.
    #[error("JSON access log format, key `{key}`: {source}")]
    InJsonKey {
        /// The key (nested keys joined with `.`).
        key: String,
        /// The problem.
        source: Box<FormatError>,
    },
}

/// TEXT or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One format string per line.
    Text,
    /// One JSON object per line.
    Json,
}

impl Encoding {
    /// MeshConfig spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Text => "TEXT",
            Encoding::Json => "JSON",
        }
    }
}

/// A parsed access-log format: TEXT or JSON, ready to render records without re-parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFormat {
    body: Body,
    /// Request headers the format reads (lower case, pseudo-headers with fields excluded).
    request_headers: Vec<String>,
    /// Response headers the format reads (lower case).
    response_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Text(Vec<Segment>),
    Json(Vec<(String, JsonNode)>),
}

#[derive(Debug, Clone, PartialEq)]
enum JsonNode {
    /// A value written as is: already serialized JSON.
    Raw(String),
    /// A string with commands.
    Template(Vec<Segment>),
    Object(Vec<(String, JsonNode)>),
    Array(Vec<JsonNode>),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq)]
struct Command {
    op: Operator,
    max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operator {
    /// `None`: Envoy's default `YYYY-MM-DDTHH:MM:SS.mmmZ`; otherwise a jiff strftime string.
    StartTime(Option<String>),
    RequestHeader {
        main: String,
        alt: Option<String>,
    },
    RequestHeaderWithoutQuery {
        main: String,
        alt: Option<String>,
    },
    ResponseHeader {
        main: String,
        alt: Option<String>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    DownstreamTlsVersion,
    DownstreamPeerUriSan,
    DownstreamPeerSubject,
    DynamicMetadata {
        namespace: String,
        path: Vec<String>,
    },
    AuthzDecision,
    AuthzPolicy,
    AuthzReason,
}

impl Operator {
    fn is_authz(&self) -> bool {
        matches!(
            self,
            Operator::AuthzDecision | Operator::AuthzPolicy | Operator::AuthzReason
        )
    }
}

/// One operator's value for one record.
enum Rendered<'a> {
    Missing,
    Str(&'a str),
    Number(u64),
    Json(&'a Value),
    OwnedJson(Value),
}

impl LogFormat {
    /// Parses a TEXT `accessLogFormat`. Istio appends a newline when the string lacks one
    /// (authentication.md §6.1: "a trailing `\n` is appended if missing"); the meshward authz
    /// suffix goes before that newline.
    pub fn parse_text(format: &str) -> Result<Self, FormatError> {
        let mut segments = parse_segments(format)?;
        let references_authz = segments_reference_authz(&segments);
        // Take the final newline off so the suffix can go in front of it.
        if let Some(Segment::Literal(last)) = segments.last_mut()
            && last.ends_with('\n')
        {
            last.pop();
            if last.is_empty() {
                segments.pop();
            }
        }
        if !references_authz {
            segments.extend([
                Segment::Literal(" authz=".to_owned()),
                command(Operator::AuthzDecision),
                Segment::Literal(" policy=".to_owned()),
                command(Operator::AuthzPolicy),
                Segment::Literal(" reason=\"".to_owned()),
                command(Operator::AuthzReason),
                Segment::Literal("\"".to_owned()),
            ]);
        }
        segments.push(Segment::Literal("\n".to_owned()));
        Ok(Self::from_body(Body::Text(merge_literals(segments))))
    }

    /// Parses a JSON `accessLogFormat` object: key → operator string (nested objects, lists,
    /// numbers, booleans and null are kept as Envoy keeps them). Output keys are sorted, as
    /// Envoy's JSON formatter sorts them.
    pub fn parse_json(format: &Map<String, Value>) -> Result<Self, FormatError> {
        let mut fields = parse_json_object(format, "")?;
        let references_authz = fields.iter().any(|(_, node)| node_references_authz(node));
        if !references_authz {
            for (key, op) in AUTHZ_JSON_KEYS {
                if !fields.iter().any(|(k, _)| k == key) {
                    fields.push((key.to_owned(), JsonNode::Template(vec![command(op)])));
                }
            }
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self::from_body(Body::Json(fields)))
    }

    /// Istio's default TEXT format, with the meshward suffix.
    pub fn istio_default_text() -> Self {
        // The constant is known to parse (unit-tested); an empty format is a harmless fallback
        // that never happens.
        Self::parse_text(ISTIO_DEFAULT_TEXT_FORMAT)
            .unwrap_or_else(|_| Self::from_body(Body::Text(Vec::new())))
    }

    /// Istio's default JSON format, with the meshward keys.
    pub fn istio_default_json() -> Self {
        let map: Map<String, Value> = ISTIO_DEFAULT_JSON_FORMAT
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        Self::parse_json(&map).unwrap_or_else(|_| Self::from_body(Body::Json(Vec::new())))
    }

    /// TEXT or JSON.
    pub fn encoding(&self) -> Encoding {
        match self.body {
            Body::Text(_) => Encoding::Text,
            Body::Json(_) => Encoding::Json,
        }
    }

    /// The request headers the format reads, lower case (`:method`, `:path` and `:authority`
    /// are left out: they have their own record fields). The proxy only needs to copy these
    /// into [`RequestRecord::request_headers`].
    pub fn request_header_names(&self) -> &[String] {
        &self.request_headers
    }

    /// The response headers the format reads, lower case.
    pub fn response_header_names(&self) -> &[String] {
        &self.response_headers
    }

    /// Renders one line, newline-terminated.
    pub fn render(&self, record: &RequestRecord) -> String {
        let mut out = String::with_capacity(512);
        self.render_into(record, &mut out);
        out
    }

    /// Appends one line, newline-terminated, to `out`.
    pub fn render_into(&self, record: &RequestRecord, out: &mut String) {
        let mut scratch = String::new();
        match &self.body {
            Body::Text(segments) => {
                for segment in segments {
                    match segment {
                        Segment::Literal(text) => out.push_str(text),
                        Segment::Command(cmd) => write_text_value(cmd, record, &mut scratch, out),
                    }
                }
            }
            Body::Json(fields) => {
                write_json_object(fields, record, &mut scratch, out);
                out.push('\n');
            }
        }
    }

    fn from_body(body: Body) -> Self {
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        let mut visit = |segments: &[Segment]| {
            for segment in segments {
                let Segment::Command(cmd) = segment else {
                    continue;
                };
                let (target, main, alt) = match &cmd.op {
                    Operator::RequestHeader { main, alt }
                    | Operator::RequestHeaderWithoutQuery { main, alt } => {
                        (&mut request_headers, main, alt)
                    }
                    Operator::ResponseHeader { main, alt } => (&mut response_headers, main, alt),
                    _ => continue,
                };
                for name in std::iter::once(main).chain(alt.iter()) {
                    if matches!(name.as_str(), ":method" | ":path" | ":authority") {
                        continue;
                    }
                    if !target.contains(name) {
                        target.push(name.clone());
                    }
                }
            }
        };
        match &body {
            Body::Text(segments) => visit(segments),
            Body::Json(fields) => {
                fn walk(node: &JsonNode, visit: &mut impl FnMut(&[Segment])) {
                    match node {
                        JsonNode::Raw(_) => {}
                        JsonNode::Template(segments) => visit(segments),
                        JsonNode::Object(fields) => fields.iter().for_each(|(_, n)| walk(n, visit)),
                        JsonNode::Array(items) => items.iter().for_each(|n| walk(n, visit)),
                    }
                }
                fields.iter().for_each(|(_, n)| walk(n, &mut visit));
            }
        }
        LogFormat {
            body,
            request_headers,
            response_headers,
        }
    }
}

fn command(op: Operator) -> Segment {
    Segment::Command(Command { op, max_len: None })
}

/// Joins adjacent literals (the parser emits one per run of text between commands).
fn merge_literals(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for segment in segments {
        match (out.last_mut(), segment) {
            (Some(Segment::Literal(prev)), Segment::Literal(next)) => prev.push_str(&next),
            (_, segment) => out.push(segment),
        }
    }
    out
}

fn segments_reference_authz(segments: &[Segment]) -> bool {
    segments
        .iter()
        .any(|s| matches!(s, Segment::Command(c) if c.op.is_authz()))
}

fn node_references_authz(node: &JsonNode) -> bool {
    match node {
        JsonNode::Raw(_) => false,
        JsonNode::Template(segments) => segments_reference_authz(segments),
        JsonNode::Object(fields) => fields.iter().any(|(_, n)| node_references_authz(n)),
        JsonNode::Array(items) => items.iter().any(node_references_authz),
    }
}

fn parse_json_object(
    map: &Map<String, Value>,
    prefix: &str,
) -> Result<Vec<(String, JsonNode)>, FormatError> {
    let mut fields = Vec::with_capacity(map.len());
    for (key, value) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        fields.push((key.clone(), parse_json_value(value, &path)?));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(fields)
}

fn parse_json_value(value: &Value, path: &str) -> Result<JsonNode, FormatError> {
    Ok(match value {
        // Envoy copies a string without `%` verbatim and parses any other string as a format.
        Value::String(s) if s.contains('%') => {
            JsonNode::Template(parse_segments(s).map_err(|e| FormatError::InJsonKey {
                key: path.to_owned(),
                source: Box::new(e),
            })?)
        }
        Value::Object(map) => JsonNode::Object(parse_json_object(map, path)?),
        Value::Array(items) => JsonNode::Array(
            items
                .iter()
                .map(|item| parse_json_value(item, path))
                .collect::<Result<_, _>>()?,
        ),
        other => JsonNode::Raw(other.to_string()),
    })
}

/// Splits a format string into literals and commands (Envoy's `SubstitutionFormatParser`).
fn parse_segments(format: &str) -> Result<Vec<Segment>, FormatError> {
    let bytes = format.as_bytes();
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(offset) = format.get(pos..).and_then(|rest| rest.find('%')) else {
            literal.push_str(format.get(pos..).unwrap_or_default());
            break;
        };
        literal.push_str(format.get(pos..pos + offset).unwrap_or_default());
        pos += offset;
        // `%%` is a literal `%` (Envoy: "escape '%%'").
        if bytes.get(pos + 1) == Some(&b'%') {
            literal.push('%');
            pos += 2;
            continue;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        let (cmd, end) = parse_command(format, pos)?;
        segments.push(Segment::Command(cmd));
        pos = end;
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

/// Parses the command starting at the `%` at `start`, Envoy's
/// `^%([A-Z]|[0-9]|_)+(\([^\)]*\))?(:[0-9]+)?%`. Returns the command and the offset after it.
fn parse_command(format: &str, start: usize) -> Result<(Command, usize), FormatError> {
    let bytes = format.as_bytes();
    let invalid = || FormatError::InvalidCommand {
        position: start,
        found: format
            .get(start..)
            .unwrap_or_default()
            .chars()
            .take(24)
            .collect(),
    };
    let mut i = start + 1;
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
    {
        i += 1;
    }
    if i == start + 1 {
        return Err(invalid());
    }
    let name = format.get(start + 1..i).unwrap_or_default();
    let mut argument = None;
    if bytes.get(i) == Some(&b'(') {
        let close = format
            .get(i + 1..)
            .and_then(|rest| rest.find(')'))
            .ok_or_else(invalid)?;
        argument = Some(format.get(i + 1..i + 1 + close).unwrap_or_default());
        i += close + 2;
    }
    let mut max_len = None;
    if bytes.get(i) == Some(&b':') {
        let digits_start = i + 1;
        let mut j = digits_start;
        while bytes.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == digits_start {
            return Err(invalid());
        }
        let digits = format.get(digits_start..j).unwrap_or_default();
        max_len = Some(
            digits
                .parse::<usize>()
                .map_err(|_| FormatError::InvalidArgument {
                    operator: name.to_owned(),
                    position: start,
                    problem: format!("length {digits} is too large"),
                })?,
        );
        i = j;
    }
    if bytes.get(i) != Some(&b'%') {
        return Err(invalid());
    }
    let op = operator(name, argument, max_len.is_some(), start)?;
    Ok((Command { op, max_len }, i + 1))
}

/// Builds one operator, with Envoy's argument checks (`CommandSyntaxChecker`).
fn operator(
    name: &str,
    argument: Option<&str>,
    has_len: bool,
    position: usize,
) -> Result<Operator, FormatError> {
    let bad = |problem: &str| FormatError::InvalidArgument {
        operator: name.to_owned(),
        position,
        problem: problem.to_owned(),
    };
    let argument = argument.filter(|a| !a.is_empty());
    let simple = |op: Operator| {
        if argument.is_some() || has_len {
            Err(bad("takes no argument or length"))
        } else {
            Ok(op)
        }
    };
    let headers = || -> Result<(String, Option<String>), FormatError> {
        let arg = argument.ok_or_else(|| bad("requires a header name"))?;
        let mut parts = arg.split('?');
        let main = parts.next().unwrap_or_default();
        let alt = parts.next();
        if parts.next().is_some() {
            return Err(bad("more than one alternative header"));
        }
        for header in std::iter::once(main).chain(alt) {
            if header.bytes().any(|b| b == b'\n' || b == b'\r' || b == 0) {
                return Err(bad("header name contains a newline or NUL"));
            }
        }
        if main.is_empty() {
            return Err(bad("requires a header name"));
        }
        Ok((
            main.to_ascii_lowercase(),
            alt.filter(|a| !a.is_empty()).map(str::to_ascii_lowercase),
        ))
    };
    match name {
        "START_TIME" => {
            if has_len {
                return Err(bad("takes no length"));
            }
            match argument {
                None => Ok(Operator::StartTime(None)),
                Some(custom) => {
                    let translated = translate_time_format(custom);
                    // Checked once here, so a bad format is refused at configuration time.
                    let probe = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
                    jiff::fmt::strtime::format(translated.as_str(), &probe)
                        .map_err(|e| bad(&format!("invalid time format: {e}")))?;
                    Ok(Operator::StartTime(Some(translated)))
                }
            }
        }
        "REQ" => headers().map(|(main, alt)| Operator::RequestHeader { main, alt }),
        "REQ_WITHOUT_QUERY" => {
            headers().map(|(main, alt)| Operator::RequestHeaderWithoutQuery { main, alt })
        }
        "RESP" => headers().map(|(main, alt)| Operator::ResponseHeader { main, alt }),
        "DYNAMIC_METADATA" => {
            let arg = argument.ok_or_else(|| bad("requires a metadata namespace"))?;
            let mut parts = arg.split(':');
            let namespace = parts.next().unwrap_or_default().to_owned();
            if namespace.is_empty() {
                return Err(bad("requires a metadata namespace"));
            }
            Ok(Operator::DynamicMetadata {
                namespace,
                path: parts.map(str::to_owned).collect(),
            })
        }
        "PROTOCOL" => simple(Operator::Protocol),
        "RESPONSE_CODE" => simple(Operator::ResponseCode),
        "RESPONSE_FLAGS" => simple(Operator::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => simple(Operator::ResponseCodeDetails),
        "CONNECTION_TERMINATION_DETAILS" => simple(Operator::ConnectionTerminationDetails),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => simple(Operator::UpstreamTransportFailureReason),
        "BYTES_RECEIVED" => simple(Operator::BytesReceived),
        "BYTES_SENT" => simple(Operator::BytesSent),
        "DURATION" => simple(Operator::Duration),
        "UPSTREAM_HOST" => simple(Operator::UpstreamHost),
        // Istio sets no `alt_stat_name`, so the observability name is the raw cluster name.
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => simple(Operator::UpstreamCluster),
        "UPSTREAM_LOCAL_ADDRESS" => simple(Operator::UpstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS" => simple(Operator::DownstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            simple(Operator::DownstreamLocalAddressWithoutPort)
        }
        "DOWNSTREAM_REMOTE_ADDRESS" => simple(Operator::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            simple(Operator::DownstreamRemoteAddressWithoutPort)
        }
        "REQUESTED_SERVER_NAME" => simple(Operator::RequestedServerName),
        "ROUTE_NAME" => simple(Operator::RouteName),
        "DOWNSTREAM_TLS_VERSION" => simple(Operator::DownstreamTlsVersion),
        "DOWNSTREAM_PEER_URI_SAN" => simple(Operator::DownstreamPeerUriSan),
        "DOWNSTREAM_PEER_SUBJECT" => simple(Operator::DownstreamPeerSubject),
        "AUTHZ_DECISION" => simple(Operator::AuthzDecision),
        "AUTHZ_POLICY" => simple(Operator::AuthzPolicy),
        "AUTHZ_REASON" => simple(Operator::AuthzReason),
        _ => Err(FormatError::UnknownOperator {
            operator: name.to_owned(),
            position,
        }),
    }
}

/// Envoy's `START_TIME(...)` adds specifiers to strftime: `%f`/`%<n>f` (fraction, 9 digits by
/// default), `%E<n>S` (seconds with `n` fractional digits), `%E*S` (seconds with the shortest
/// exact fraction). They are rewritten into jiff's equivalents; the rest is jiff's strftime.
fn translate_time_format(envoy: &str) -> String {
    let mut out = String::with_capacity(envoy.len() + 8);
    let mut chars = envoy.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let rest_start = chars.peek().map(|(i, _)| *i).unwrap_or(envoy.len());
        let rest = envoy.get(rest_start..).unwrap_or_default();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (replacement, consumed): (Cow<'_, str>, usize) = if rest.starts_with('%') {
            ("%%".into(), 1)
        } else if rest.starts_with("E*S") {
            ("%S%.f".into(), 3)
        } else if let Some(n) = fixed_seconds_digits(rest) {
            (
                format!("%S.%{}f", rest.get(1..1 + n).unwrap_or("9")).into(),
                n + 2,
            )
        } else if rest.as_bytes().get(digits) == Some(&b'f') {
            if digits == 0 {
                ("%9f".into(), 1)
            } else {
                (
                    format!("%{}f", rest.get(..digits).unwrap_or("9")).into(),
                    digits + 1,
                )
            }
        } else {
            ("%".into(), 0)
        };
        out.push_str(&replacement);
        for _ in 0..consumed {
            chars.next();
        }
    }
    out
}

/// For `E<n>S` at the start of `rest`, the number of digits `n`.
fn fixed_seconds_digits(rest: &str) -> Option<usize> {
    let after_e = rest.strip_prefix('E')?;
    let n = after_e.bytes().take_while(u8::is_ascii_digit).count();
    (n > 0 && after_e.as_bytes().get(n) == Some(&b'S')).then_some(n)
}

/// Computes one operator's value. Values computed on the fly are written into `scratch`.
fn value<'a>(op: &Operator, record: &'a RequestRecord, scratch: &'a mut String) -> Rendered<'a> {
    scratch.clear();
    let opt = |v: Option<&'a str>| match v {
        // Envoy treats an empty string as absent for these fields (e.g. SNI, route name, peer
        // subject: "`-` if no cert", and Istio certificates have an empty subject).
        Some(s) if !s.is_empty() => Rendered::Str(s),
        _ => Rendered::Missing,
    };
    match op {
        Operator::StartTime(custom) => {
            match custom {
                None => write_default_time(record.start_time, scratch),
                Some(fmt) => {
                    let zoned = record.start_time.to_zoned(TimeZone::UTC);
                    match jiff::fmt::strtime::format(fmt.as_str(), &zoned) {
                        Ok(s) => scratch.push_str(&s),
                        Err(_) => return Rendered::Missing,
                    }
                }
            }
            Rendered::Str(scratch)
        }
        Operator::RequestHeader { main, alt } => {
            opt(header(main, alt.as_deref(), |n| record.request_header(n)))
        }
        Operator::RequestHeaderWithoutQuery { main, alt } => {
            opt(header(main, alt.as_deref(), |n| record.request_header(n))
                .map(|v| v.split_once('?').map_or(v, |(path, _)| path)))
        }
        Operator::ResponseHeader { main, alt } => {
            opt(header(main, alt.as_deref(), |n| record.response_header(n)))
        }
        Operator::Protocol => opt(record.protocol),
        // Envoy: `responseCode().value_or(0)`; always a number.
        Operator::ResponseCode => Rendered::Number(u64::from(record.response_code)),
        Operator::ResponseFlags => {
            // Writing into a String cannot fail.
            let _ = record.response_flags.write_to(scratch);
            Rendered::Str(scratch)
        }
        Operator::ResponseCodeDetails => opt(record.response_code_details.as_deref()),
        Operator::ConnectionTerminationDetails => {
            opt(record.connection_termination_details.as_deref())
        }
        Operator::UpstreamTransportFailureReason => {
            opt(record.upstream_transport_failure_reason.as_deref())
        }
        Operator::BytesReceived => Rendered::Number(record.bytes_received),
        Operator::BytesSent => Rendered::Number(record.bytes_sent),
        Operator::Duration => match record.duration {
            Some(d) => Rendered::Number(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => Rendered::Missing,
        },
        Operator::UpstreamHost => address(record.upstream_host, true, scratch),
        Operator::UpstreamCluster => opt(record.upstream_cluster.as_deref()),
        Operator::UpstreamLocalAddress => address(record.upstream_local_address, true, scratch),
        Operator::DownstreamLocalAddress => address(record.downstream_local_address, true, scratch),
        Operator::DownstreamLocalAddressWithoutPort => {
            address(record.downstream_local_address, false, scratch)
        }
        Operator::DownstreamRemoteAddress => {
            address(record.downstream_remote_address, true, scratch)
        }
        Operator::DownstreamRemoteAddressWithoutPort => {
            address(record.downstream_remote_address, false, scratch)
        }
        Operator::RequestedServerName => opt(record.requested_server_name.as_deref()),
        Operator::RouteName => opt(record.route_name.as_deref()),
        Operator::DownstreamTlsVersion => opt(record.downstream_tls_version),
        Operator::DownstreamPeerUriSan => {
            // Envoy joins the URI SANs with "," (authentication.md §6.1: "comma-joined").
            for (i, san) in record.downstream_peer_uri_sans.iter().enumerate() {
                if i > 0 {
                    scratch.push(',');
                }
                scratch.push_str(san);
            }
            opt(Some(scratch.as_str()))
        }
        Operator::DownstreamPeerSubject => opt(record.downstream_peer_subject.as_deref()),
        Operator::DynamicMetadata { namespace, path } => metadata(record, namespace, path),
        Operator::AuthzDecision => opt(record.authz.map(|a| a.as_str())),
        Operator::AuthzPolicy => opt(record.authz_policy.as_deref()),
        Operator::AuthzReason => opt(record.authz_reason.as_deref()),
    }
}

fn header<'a>(
    main: &str,
    alt: Option<&str>,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Option<&'a str> {
    get(main).or_else(|| alt.and_then(&get))
}

fn address<'a>(addr: Option<SocketAddr>, with_port: bool, scratch: &'a mut String) -> Rendered<'a> {
    let Some(addr) = addr else {
        return Rendered::Missing;
    };
    // `[v6]:port` and bare `v6` without the port, as Envoy prints them.
    let _ = if with_port {
        write!(scratch, "{addr}")
    } else {
        write!(scratch, "{}", addr.ip())
    };
    Rendered::Str(scratch)
}

fn metadata<'a>(record: &'a RequestRecord, namespace: &str, path: &[String]) -> Rendered<'a> {
    let Some((first, rest)) = path.split_first() else {
        // The whole namespace, as a JSON object.
        let object: Map<String, Value> = record
            .dynamic_metadata
            .iter()
            .filter(|m| m.namespace == namespace)
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect();
        if object.is_empty() {
            return Rendered::Missing;
        }
        return Rendered::OwnedJson(Value::Object(object));
    };
    let mut value = record.metadata(namespace, first);
    for key in rest {
        value = value.and_then(|v| v.get(key));
    }
    match value {
        None | Some(Value::Null) => Rendered::Missing,
        Some(v) => Rendered::Json(v),
    }
}

/// Envoy's default `%START_TIME%`: `YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC (authentication.md §6.1).
fn write_default_time(ts: Timestamp, out: &mut String) {
    let dt = TimeZone::UTC.to_datetime(ts);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    );
}

/// Cuts `s` to at most `max` bytes (Envoy's `:N` length), on a character boundary.
fn truncate(s: &str, max: Option<usize>) -> &str {
    let Some(max) = max else { return s };
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn write_text_value(cmd: &Command, record: &RequestRecord, scratch: &mut String, out: &mut String) {
    match value(&cmd.op, record, scratch) {
        Rendered::Missing => out.push('-'),
        Rendered::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Rendered::Str(s) => {
            let s = truncate(s, cmd.max_len);
            if cmd.op == Operator::AuthzReason {
                // The reason sits inside `reason="…"`: quotes and backslashes are escaped so
                // the field stays parseable.
                escape_quoted(s, out);
            } else {
                escape_text(s, out);
            }
        }
        Rendered::Json(Value::String(s)) => escape_text(truncate(s, cmd.max_len), out),
        Rendered::Json(v) => escape_text(truncate(&v.to_string(), cmd.max_len), out),
        Rendered::OwnedJson(v) => escape_text(truncate(&v.to_string(), cmd.max_len), out),
    }
}

/// Copies `s`, escaping control characters as `\xNN`. HTTP codecs already refuse CR/LF in
/// header values; this keeps any other source from splitting a log line in two.
fn escape_text(s: &str, out: &mut String) {
    if !s.bytes().any(|b| b.is_ascii_control()) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_ascii_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

fn escape_quoted(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

fn write_json_object(
    fields: &[(String, JsonNode)],
    record: &RequestRecord,
    scratch: &mut String,
    out: &mut String,
) {
    out.push('{');
    for (i, (key, node)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(key, out);
        out.push(':');
        write_json_node(node, record, scratch, out);
    }
    out.push('}');
}

fn write_json_node(
    node: &JsonNode,
    record: &RequestRecord,
    scratch: &mut String,
    out: &mut String,
) {
    match node {
        JsonNode::Raw(raw) => out.push_str(raw),
        JsonNode::Object(fields) => write_json_object(fields, record, scratch, out),
        JsonNode::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_node(item, record, scratch, out);
            }
            out.push(']');
        }
        // A value that is exactly one command keeps its type, as Envoy's JSON formatter does:
        // numbers stay numbers and a missing value is `null`.
        JsonNode::Template(segments) => match segments.as_slice() {
            [Segment::Command(cmd)] => match value(&cmd.op, record, scratch) {
                Rendered::Missing => out.push_str("null"),
                Rendered::Number(n) => {
                    let _ = write!(out, "{n}");
                }
                Rendered::Str(s) => json_string(truncate(s, cmd.max_len), out),
                Rendered::Json(v) => out.push_str(&v.to_string()),
                Rendered::OwnedJson(v) => out.push_str(&v.to_string()),
            },
            // Several pieces: one string, missing values as `-`.
            _ => {
                let mut text = String::new();
                for segment in segments {
                    match segment {
                        Segment::Literal(s) => text.push_str(s),
                        Segment::Command(cmd) => match value(&cmd.op, record, scratch) {
                            Rendered::Missing => text.push('-'),
                            Rendered::Number(n) => {
                                let _ = write!(text, "{n}");
                            }
                            Rendered::Str(s) => text.push_str(truncate(s, cmd.max_len)),
                            Rendered::Json(Value::String(s)) => {
                                text.push_str(truncate(s, cmd.max_len))
                            }
                            Rendered::Json(v) => text.push_str(&v.to_string()),
                            Rendered::OwnedJson(v) => text.push_str(&v.to_string()),
                        },
                    }
                }
                json_string(&text, out);
            }
        },
    }
}

/// Writes `s` as a JSON string literal.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
