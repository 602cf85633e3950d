//! Reading a sidecar's admin endpoint (`/config_dump`, `/certs`, `/stats/prometheus`) in the
//! local mesh. The proxy's admin server listens on `127.0.0.1:15000` inside its pod's network
//! namespace, where nothing outside the pod can reach it, so the CLI enters the namespace the
//! way `meshward exec` does: `ip netns exec mw-… meshward admin-get PATH` runs a one-shot HTTP
//! GET in there (the hidden `admin-get` command, [`admin_get_main`]) and prints the body.
//!
//! The GET runs as root, whose loopback traffic the pod's capture rules leave alone (only
//! connections to other addresses are redirected to the sidecar).
//!
//! In loopback mode the admin server listens on the pod's own address (`POD_IP:15000`, see
//! [`super::loopback`]), and the CLI asks it directly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};

use super::capture::ADMIN_PORT;
use super::state::{Home, MeshState, PodState, alive};

/// Time allowed for connecting to and reading from the admin server.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read (a busy proxy's metrics stay far below this).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// The running mesh's state, or why there is none.
pub(crate) fn running_mesh() -> anyhow::Result<MeshState> {
    match Home::from_env()?.read()? {
        Some(state) => {
            crate::commands::up::preflight_for(&state)?;
            Ok(state)
        }
        None => bail!("no mesh is running (start one with `meshward up`)"),
    }
}

/// The pod `target` (a name, `pod/NAME` or `deploy/NAME`) of `namespace`, which must have a
/// running sidecar.
pub(crate) fn sidecar_pod<'a>(
    state: &'a MeshState,
    namespace: &str,
    target: &str,
) -> anyhow::Result<&'a PodState> {
    let Some(pod) = state.find_pod(namespace, target) else {
        bail!("no pod `{target}` in namespace `{namespace}` (see `meshward get pods`)");
    };
    if !pod.plan.sidecar {
        bail!("pod {} has no sidecar", pod.plan.key());
    }
    if !pod.proxy_pid.is_some_and(alive) {
        bail!("the sidecar of pod {} is not running", pod.plan.key());
    }
    Ok(pod)
}

/// GET `path` from the admin server of `pod`'s sidecar: the body of a 200 answer.
pub(crate) fn fetch(pod: &PodState, path: &str) -> anyhow::Result<String> {
    if super::loopback::is_loopback_pod(pod) {
        let addr = super::loopback::admin(pod.plan.ip);
        let (status, body) = http_get(addr, path)?;
        if status != 200 {
            bail!(
                "pod {}: GET {path} from the proxy's admin port {addr} answered HTTP {status}",
                pod.plan.key()
            );
        }
        return String::from_utf8(body)
            .with_context(|| format!("pod {}: {path} is not UTF-8", pod.plan.key()));
    }
    let exe = std::env::current_exe().context("cannot find the meshward executable")?;
    let output = Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .arg(exe)
        .args(["admin-get", path])
        .output()
        .with_context(|| format!("cannot enter pod {}", pod.plan.key()))?;
    if !output.status.success() {
        bail!(
            "pod {}: GET {path} from the proxy's admin port failed: {}",
            pod.plan.key(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("pod {}: {path} is not UTF-8", pod.plan.key()))
}

/// GET `path` and parse the answer as JSON.
pub(crate) fn fetch_json(pod: &PodState, path: &str) -> anyhow::Result<serde_json::Value> {
    let body = fetch(pod, path)?;
    serde_json::from_str(&body)
        .with_context(|| format!("pod {}: {path} is not JSON", pod.plan.key()))
}

/// `meshward admin-get PATH` (inside a pod): prints the body of the local admin server's answer;
/// exit 1 with the status on anything but 200.
pub(crate) fn admin_get_main(path: &str) -> anyhow::Result<ExitCode> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("`{path}`: expected an absolute path without spaces");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        eprintln!(
            "{addr} answered HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::io::stdout().write_all(&body)?;
    Ok(ExitCode::SUCCESS)
}

/// One HTTP/1.1 GET with `connection: close`: status and body.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("nothing answers on {addr} (is the proxy running?)"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\naccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    parse_response(&raw)
}

/// Status and body of a raw HTTP/1.1 answer (content-length or chunked).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete HTTP answer")?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default());
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status in the answer")?;
    let body = raw.get(split + 4..).unwrap_or_default();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_a_length_or_in_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, b"hello".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"abcde".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
