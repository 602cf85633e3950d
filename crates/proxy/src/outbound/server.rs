//! Serving one downstream HTTP connection (HTTP/1.1, or HTTP/2 with prior knowledge), with
//! upgrades for `CONNECT` and a graceful close when the proxy drains.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::Shared;
use super::body::Body;

/// Concurrent HTTP/2 streams per downstream connection (Envoy's default is effectively
/// unbounded; a bound keeps one client from tying up the proxy).
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves `stream` with `handle` until the client closes it, or the proxy drains (the current
/// requests finish, then the connection closes) and finally closes.
pub(super) async fn serve_http<F, Fut>(shared: &Arc<Shared>, stream: TcpStream, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_http_or_abort(shared, stream, move |req| {
        // The handler's future is created inside this one, not captured by it: a captured
        // future would be stored twice (once as the capture, once while awaited), doubling
        // what hyper keeps per connection and copies per request.
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(handle(req).await) }
    })
    .await;
}

/// [`serve_http`] with a handler that may refuse to answer: an `Err` makes hyper drop the
/// connection without writing a response.
pub(super) async fn serve_http_or_abort<F, Fut, E>(
    shared: &Arc<Shared>,
    stream: TcpStream,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Duration::from_secs(60));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| handle(req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = shared.drain.draining() => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shared.drain.closed() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}
