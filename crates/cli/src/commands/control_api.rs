//! A client of the control plane's admin API (`meshward-control`'s `admin` module), used by
//! `apply`, `delete` and `get`. The API listens on loopback over plain HTTP/1.1, so a blocking
//! request on a `std` socket is all a one-shot command needs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Where the control plane's admin API is, unless `--control-plane` or
/// `MESHWARD_CONTROL_PLANE` says otherwise.
pub(crate) const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:15014";

/// Time allowed for one request (applying recompiles the mesh, which takes milliseconds).
const TIMEOUT: Duration = Duration::from_secs(30);

/// `--control-plane` for commands that talk to the control plane.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ControlPlaneUrl {
    /// The control plane's admin API.
    #[arg(
        long = "control-plane",
        value_name = "URL",
        env = "MESHWARD_CONTROL_PLANE",
        default_value = DEFAULT_CONTROL_PLANE
    )]
    pub(crate) url: String,
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl ControlPlaneUrl {
    fn host_port(&self) -> anyhow::Result<String> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            anyhow::anyhow!(
                "--control-plane {}: expected http://HOST:PORT (the admin API is plain HTTP on loopback)",
                self.url
            )
        })?;
        let host_port = rest.trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') {
            bail!("--control-plane {}: expected http://HOST:PORT", self.url);
        }
        Ok(if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:80")
        })
    }

    /// Sends `method path` with an optional JSON body.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let address = self.host_port()?;
        let unreachable = || {
            format!(
                "cannot reach the control plane at {} (start it with `meshward control-plane`, or set --control-plane / MESHWARD_CONTROL_PLANE)",
                self.url
            )
        };
        let mut stream = TcpStream::connect(&address).with_context(unreachable)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let payload = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\naccept: application/json\r\ncontent-length: {}\r\n",
            payload.len()
        );
        if body.is_some() {
            head.push_str("content-type: application/json\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&payload)?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of {}", self.url))?;
        parse_response(&raw)
    }

    /// GET, failing on a non-2xx answer with the API's errors.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let answer = self.request("GET", path, None)?;
        if !(200..300).contains(&answer.status) {
            bail!("{}", error_text(&answer));
        }
        Ok(answer.body)
    }
}

/// The errors of a refused request, one per line.
pub(crate) fn error_text(answer: &Answer) -> String {
    match answer.body.get("errors").and_then(Value::as_array) {
        Some(errors) => errors
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join("\n"),
        None => format!(
            "the control plane answered HTTP {}: {}",
            answer.status, answer.body
        ),
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the control plane sent an incomplete HTTP answer"))?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default());
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the control plane sent no HTTP status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok(Answer { status, body })
}

/// Decodes a chunked body (what hyper sends when it does not know the length up front).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(data.get(..line_end).unwrap_or_default());
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let Some(chunk) = data.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
    out
}
