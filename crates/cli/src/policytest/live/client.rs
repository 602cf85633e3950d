//! The client side of live cases, run inside a pod's network namespace by the hidden
//! `meshward live-client`: it makes each probe's connection (plaintext, or mesh mTLS with the
//! certificate it is given, offering the ALPN a sidecar offers), sends the request or the TCP
//! line, and reports what came back. Probes run one after another, each with its own timeout,
//! so one hung connection costs its case, not the batch.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshward_identity::tls::alpn;
use meshward_identity::{Credentials, MeshTls, TrustDomains, WorkloadCertificate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;

use super::wire::{HttpSpec, Observed, Probe, ProbeResult, TCP_LINE, TlsSpec, WireProtocol};

/// Time to establish the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for the whole exchange after connecting.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a response body is kept: a whole `/config_dump` (its routes grow with the
/// services and workloads of the document); denials are a line.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Runs every probe in order.
pub(crate) fn run_batch(probes: &[Probe]) -> anyhow::Result<Vec<ProbeResult>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let mut out = Vec::with_capacity(probes.len());
        for p in probes {
            out.push(run_probe(p).await);
        }
        out
    }))
}

async fn run_probe(p: &Probe) -> ProbeResult {
    let stream = match connect(p).await {
        Ok(s) => s,
        Err(detail) => {
            return ProbeResult {
                id: p.id,
                local: None,
                observed: Observed::ConnectFailed { detail },
            };
        }
    };
    let local = stream.local_addr().ok().map(|a| a.to_string());
    let observed = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(p, stream)).await {
        Ok(o) => o,
        Err(_) => Observed::Closed {
            detail: format!("no answer within {}s", EXCHANGE_TIMEOUT.as_secs()),
        },
    };
    ProbeResult {
        id: p.id,
        local,
        observed,
    }
}

async fn connect(p: &Probe) -> Result<TcpStream, String> {
    let target: SocketAddr = p
        .connect
        .parse()
        .map_err(|_| format!("`{}` is not ip:port", p.connect))?;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(bind) = &p.bind {
        let ip: std::net::IpAddr = bind
            .parse()
            .map_err(|_| format!("`{bind}` is not an IP address"))?;
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("cannot use source address {ip}: {e}"))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect {target}: {e}")),
        Err(_) => Err(format!("connect {target}: timed out")),
    }
}

async fn exchange(p: &Probe, stream: TcpStream) -> Observed {
    match &p.tls {
        None => talk(p, stream).await,
        Some(tls) => {
            let offered = match p.protocol {
                WireProtocol::Http1 => alpn::client_http1(),
                WireProtocol::Http2 | WireProtocol::Grpc => alpn::client_h2(),
                WireProtocol::Tcp => alpn::client_tcp(),
            };
            let connector = match tls_connector(tls, offered) {
                Ok(c) => c,
                Err(e) => {
                    return Observed::ConnectFailed {
                        detail: format!("client TLS configuration: {e:#}"),
                    };
                }
            };
            let name = match server_name(&tls.sni, &p.connect) {
                Ok(n) => n,
                Err(e) => {
                    return Observed::ConnectFailed {
                        detail: format!("SNI `{}`: {e}", tls.sni),
                    };
                }
            };
            match connector.connect(name, stream).await {
                Ok(s) => talk(p, s).await,
                Err(e) => Observed::Closed {
                    detail: format!("TLS handshake failed: {e}"),
                },
            }
        }
    }
}

/// The name to put in the ClientHello: the case's SNI, or none at all (an IP address sends
/// no SNI), as a peer that sets none.
fn server_name(sni: &str, connect: &str) -> Result<ServerName<'static>, String> {
    if sni.is_empty() {
        let addr: SocketAddr = connect
            .parse()
            .map_err(|_| format!("`{connect}` is not ip:port"))?;
        return Ok(ServerName::IpAddress(addr.ip().into()));
    }
    ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())
}

/// A connector presenting `tls`'s certificate and checking that the server's chains to its
/// roots (no name check: the case is about the server's decision, not the client's).
fn tls_connector(
    tls: &TlsSpec,
    offered: Vec<Vec<u8>>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let cert = WorkloadCertificate::from_pem(
        tls.key_pem.as_bytes(),
        tls.chain_pem.as_bytes(),
        tls.roots_pem.as_bytes(),
    )?;
    let trust_domain = cert.identity().trust_domain().clone();
    let credentials = Credentials::with_certificate(cert)?;
    let mesh = MeshTls::new(credentials, TrustDomains::new(trust_domain, []));
    let config = mesh.client_config(&[], offered)?;
    Ok(tokio_rustls::TlsConnector::from(config))
}

async fn talk<S>(p: &Probe, stream: S) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match (p.protocol, &p.request) {
        (WireProtocol::Tcp, _) | (_, None) => tcp_line(stream).await,
        (WireProtocol::Http1, Some(r)) => http1(stream, r).await,
        (WireProtocol::Http2 | WireProtocol::Grpc, Some(r)) => {
            http2(stream, r, p.protocol == WireProtocol::Grpc).await
        }
    }
}

async fn tcp_line<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Observed {
    if let Err(e) = stream.write_all(TCP_LINE).await {
        return Observed::Closed {
            detail: format!("write: {e}"),
        };
    }
    let _ = stream.flush().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < TCP_LINE.len() {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => {
                if got.is_empty() {
                    return Observed::Closed {
                        detail: format!("read: {e}"),
                    };
                }
                break;
            }
            Err(_) => break,
        }
    }
    let _ = stream.shutdown().await;
    if got.is_empty() {
        Observed::Closed {
            detail: "closed with no data".to_owned(),
        }
    } else {
        Observed::Echoed
    }
}

fn request(
    r: &HttpSpec,
    uri: &str,
    host_header: bool,
    grpc: bool,
) -> Result<hyper::Request<Empty<Bytes>>, String> {
    let mut builder = hyper::Request::builder().method(r.method.as_str()).uri(uri);
    if host_header {
        builder = builder.header(hyper::header::HOST, r.host.as_str());
    }
    if grpc {
        builder = builder
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers");
    }
    for (name, value) in &r.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Empty::new())
        .map_err(|e| format!("the request cannot be expressed: {e}"))
}

async fn http1<S>(stream: S, r: &HttpSpec) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = match request(r, &r.path, true, false) {
        Ok(req) => req,
        Err(detail) => return Observed::ConnectFailed { detail },
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            return Observed::Closed {
                detail: format!("HTTP/1.1: {e}"),
            };
        }
    };
    tokio::spawn(conn);
    respond(sender.send_request(req).await).await
}

async fn http2<S>(stream: S, r: &HttpSpec, grpc: bool) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uri = format!("http://{}{}", r.host, r.path);
    let req = match request(r, &uri, false, grpc) {
        Ok(req) => req,
        Err(detail) => return Observed::ConnectFailed { detail },
    };
    let (mut sender, conn) =
        match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
        {
            Ok(x) => x,
            Err(e) => {
                return Observed::Closed {
                    detail: format!("HTTP/2: {e}"),
                };
            }
        };
    tokio::spawn(conn);
    respond(sender.send_request(req).await).await
}

async fn respond(answer: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>) -> Observed {
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return Observed::Closed {
                detail: format!("no response: {e}"),
            };
        }
    };
    let status = response.status().as_u16();
    let from_app = response.headers().contains_key("x-meshward-pod");
    let header_grpc = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (body, trailer_grpc) = match response.into_body().collect().await {
        Ok(collected) => {
            let trailer = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = collected.to_bytes();
            let text = String::from_utf8_lossy(&bytes);
            (text.chars().take(BODY_LIMIT).collect(), trailer)
        }
        Err(_) => (String::new(), None),
    };
    Observed::Response {
        status,
        from_app,
        grpc_status: header_grpc.or(trailer_grpc),
        body,
    }
}
