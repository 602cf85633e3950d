//! The admin server over a real loopback socket, spoken to with raw HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use meshward_proxy::observe::admin::{AdminState, Readiness, serve_admin};
use meshward_proxy::observe::metrics::{
    ConnectionLabels, Metrics, Reporter, RequestLabels, RequestProtocol, SharedLabels,
};
use meshward_proxy::observe::record::ResponseFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends one request with `Connection: close` and returns (status, lower-cased head, body).
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String, String), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await??;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of head")?;
    let status = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

#[tokio::test]
async fn admin_endpoints() {
    let metrics = Arc::new(Metrics::new());
    metrics.record_request(
        &RequestLabels {
            connection: SharedLabels::new(ConnectionLabels::unknown(Reporter::Destination)),
            request_protocol: RequestProtocol::Http,
            response_code: 200,
            grpc_response_status: None,
            response_flags: ResponseFlags::NONE,
        },
        2.0,
        0,
        3,
    );
    let readiness = Readiness::new();
    let state = AdminState {
        readiness: readiness.clone(),
        metrics,
        config_dump: Arc::new(|| serde_json::json!({"configs": [{"name": "inbound|8080||"}]})),
        certs: Arc::new(|| serde_json::json!({"certificates": []})),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_admin(listener, state, async {
        let _ = stop_rx.await;
    }));

    let (status, _, body) = request(addr, "GET", "/ready").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "not ready"));
    readiness.set_ready(true);
    let (status, _, body) = request(addr, "GET", "/ready").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready"));

    let (status, head, body) = request(addr, "GET", "/stats/prometheus").await.unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0"));
    assert!(
        body.contains("istio_requests_total{reporter=\"destination\""),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));

    let (status, head, body) = request(addr, "GET", "/config_dump?include_eds")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["configs"][0]["name"], "inbound|8080||");

    let (status, _, body) = request(addr, "GET", "/certs").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"certificates": []})
    );

    // HEAD: same status and length, no body.
    let (status, head, body) = request(addr, "HEAD", "/ready").await.unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-length: 5"), "{head}");
    assert_eq!(body, "");

    let (status, _, _) = request(addr, "GET", "/nope").await.unwrap();
    assert_eq!(status, 404);

    let (status, head, _) = request(addr, "POST", "/ready").await.unwrap();
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_with_an_idle_keepalive_connection() {
    let state = AdminState {
        readiness: Readiness::new(),
        metrics: Arc::new(Metrics::new()),
        config_dump: Arc::new(|| serde_json::Value::Null),
        certs: Arc::new(|| serde_json::Value::Null),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_admin(listener, state, async {
        let _ = stop_rx.await;
    }));
    // A keep-alive client that got its answer and stays connected.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"));

    stop_tx.send(()).unwrap();
    // Graceful shutdown closes the idle connection instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .unwrap()
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}
