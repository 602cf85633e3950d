//! The built-in echo app (`meshward echo --port P...`, hidden): what a container runs when its
//! manifest's image means nothing locally and no `meshward.dev/run` command replaces it.
//!
//! On every port it serves HTTP/1.1 and h2c (prior knowledge), answering `200` with a plain text
//! report of the request, one `key: value` per line, so people can read it and tests can grep it:
//!
//! ```text
//! pod: default/backend-0
//! protocol: HTTP/1.1
//! method: GET
//! path: /api/data?x=1
//! identity: spiffe://cluster.local/ns/default/sa/frontend-sa
//! client: 127.0.0.1:40422
//! headers:
//!   host: backend
//!   x-forwarded-client-cert: By=…;URI=spiffe://cluster.local/ns/default/sa/frontend-sa
//! ```
//!
//! `identity` is the caller's SPIFFE ID from the `URI=` of `X-Forwarded-Client-Cert`, which the
//! sidecar adds for mTLS callers; `none (plaintext)` without it. A connection whose first bytes
//! are not HTTP is echoed back byte for byte (TCP ports).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Serves every port on `host` until the process is stopped (`0.0.0.0` in a pod's network
/// namespace; the app address in loopback mode). Errors name the port that cannot be bound.
pub(crate) fn serve(host: IpAddr, ports: &[u16], pod: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for &port in ports {
            let addr = SocketAddr::new(host, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("echo: cannot listen on {addr}: {e}"))?;
            eprintln!("echo: {pod} listening on {addr}");
            tasks.push(tokio::spawn(accept_loop(listener, pod.clone())));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

async fn accept_loop(listener: TcpListener, pod: String) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let pod = pod.clone();
        tokio::spawn(async move {
            if looks_like_http(&stream).await {
                let service = hyper::service::service_fn(move |req| {
                    let pod = pod.clone();
                    async move { Ok::<_, Infallible>(reply(&pod, peer, req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                echo_bytes(stream).await;
            }
        });
    }
}

/// Peeks at the first bytes: an HTTP/1 request line starts with an upper-case method and a
/// space, an h2c connection with `PRI `.
async fn looks_like_http(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        let seen = buf.get(..n).unwrap_or_default();
        match seen.iter().position(|&b| b == b' ') {
            Some(i) => return i > 0 && seen.iter().take(i).all(u8::is_ascii_uppercase),
            None if n < buf.len() && seen.iter().all(u8::is_ascii_uppercase) => {
                // Only part of the method so far; wait for more.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            None => return false,
        }
    }
}

async fn echo_bytes(mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
    let _ = write.shutdown().await;
}

/// The caller's SPIFFE ID from the last `URI=` of `X-Forwarded-Client-Cert`.
pub(crate) fn caller_identity(xfcc: Option<&str>) -> Option<String> {
    let xfcc = xfcc?;
    // Several elements (one per hop) are comma-separated; the last is the nearest hop.
    let element = xfcc.rsplit(',').next()?;
    element.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("URI")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The report of one request.
pub(crate) fn report(
    pod: &str,
    peer: SocketAddr,
    version: hyper::Version,
    method: &str,
    path: &str,
    headers: &hyper::HeaderMap,
) -> String {
    let protocol = match version {
        hyper::Version::HTTP_2 => "HTTP/2 (h2c)",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let xfcc = headers
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok());
    let identity = caller_identity(xfcc).unwrap_or_else(|| "none (plaintext)".to_owned());
    let mut out = format!(
        "pod: {pod}\nprotocol: {protocol}\nmethod: {method}\npath: {path}\nidentity: {identity}\nclient: {peer}\nheaders:\n"
    );
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("  {k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    lines.sort();
    for l in lines {
        out.push_str(&l);
    }
    out
}

fn reply(pod: &str, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let body = report(
        pod,
        peer,
        req.version(),
        req.method().as_str(),
        &path,
        req.headers(),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = hyper::header::HeaderValue::from_str(pod) {
        response.headers_mut().insert("x-meshward-pod", v);
    }
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_comes_from_the_nearest_xfcc_uri() {
        let xfcc = "By=spiffe://cluster.local/ns/a/sa/x;Hash=ab;Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/frontend-sa";
        assert_eq!(
            caller_identity(Some(xfcc)).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/frontend-sa")
        );
        assert_eq!(
            caller_identity(Some(
                "URI=spiffe://td/ns/a/sa/1,By=x;URI=spiffe://td/ns/b/sa/2"
            ))
            .as_deref(),
            Some("spiffe://td/ns/b/sa/2")
        );
        assert_eq!(caller_identity(None), None);
        assert_eq!(caller_identity(Some("By=x")), None);
    }

    #[test]
    fn report_lists_request_and_sorted_headers() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-b", "2".parse().unwrap());
        headers.insert("host", "backend".parse().unwrap());
        let text = report(
            "default/backend-0",
            "10.244.0.2:5000".parse().unwrap(),
            hyper::Version::HTTP_11,
            "POST",
            "/api?x=1",
            &headers,
        );
        assert_eq!(
            text,
            "pod: default/backend-0\nprotocol: HTTP/1.1\nmethod: POST\npath: /api?x=1\n\
             identity: none (plaintext)\nclient: 10.244.0.2:5000\nheaders:\n  host: backend\n  x-b: 2\n"
        );
    }
}
