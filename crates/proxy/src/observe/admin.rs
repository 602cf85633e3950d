//! The admin HTTP server: readiness, Prometheus metrics, config dump and certificates.
//!
//! | Path | Answer |
//! |---|---|
//! | `/ready` | 200 `ready` once [`Readiness::set_ready`] was called with `true`, else 503 `not ready` |
//! | `/stats/prometheus` | [`Metrics::encode`], OpenMetrics text |
//! | `/config_dump` | the caller's JSON |
//! | `/certs` | the caller's JSON |
//! | anything else | 404 |
//!
//! Only `GET` and `HEAD` are served (405 with `allow: GET, HEAD` otherwise): nothing here changes
//! state, so nothing here may be triggered by a request that looks like it would.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::observe::metrics::Metrics;

/// Content type of `/stats/prometheus`: the encoder writes OpenMetrics (counter families
/// without `_total` in `# TYPE`, a final `# EOF`), which Prometheus negotiates and parses.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send request headers before the connection is closed, so idle
/// or slow connections cannot pile up on the admin port.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests already being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A JSON document produced on demand (config dump, certificates).
pub type JsonProvider = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The readiness flag behind `/ready`. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Reads the flag.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin server serves.
#[derive(Clone)]
pub struct AdminState {
    /// `/ready`.
    pub readiness: Readiness,
    /// `/stats/prometheus`.
    pub metrics: Arc<Metrics>,
    /// `/config_dump`.
    pub config_dump: JsonProvider,
    /// `/certs`.
    pub certs: JsonProvider,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.readiness.is_ready())
            .finish_non_exhaustive()
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes, then stops accepting,
/// lets requests in progress finish (up to a few seconds) and returns.
///
/// Errors accepting one connection are logged and do not stop the server.
pub async fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin: accept failed");
                        // Out of file descriptors and similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &req)) }
                    });
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "admin: connection ended with an error");
                            }
                        }
                        () = async {
                            // The guard `wait_for` returns is not `Send`: drop it here.
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        } => {
                            // Finish the request in flight, then close.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
                // Reap finished connections so the set does not grow with every request.
                while connections.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Dropping the set aborts whatever is left.
        tracing::debug!("admin: connections still open at shutdown were closed");
    }
}

/// Answers one request.
fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/ready" | "/stats/prometheus" | "/config_dump" | "/certs"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // hyper leaves the body out of HEAD responses and keeps its content-length.
    match path {
        "/ready" => {
            if state.readiness.is_ready() {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
        "/stats/prometheus" => body(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            state.metrics.encode().into(),
        ),
        "/config_dump" => json(&(state.config_dump)()),
        _ => json(&(state.certs)()),
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(message.as_bytes()),
    )
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            body(StatusCode::OK, "application/json", bytes.into())
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode JSON\n"),
    }
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
