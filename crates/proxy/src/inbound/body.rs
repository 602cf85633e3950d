//! Streaming bodies between client and application, counted on the way through. Neither side is
//! buffered: frames are handed on as they arrive, and the request's event is delivered when the
//! response body ends (or is dropped because the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::event::EventGuard;
use crate::observe::record::ResponseFlags;

/// The error type of bodies the proxy serves.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to the application, counting `%BYTES_RECEIVED%`.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    received: Arc<AtomicU64>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, received: Arc<AtomicU64>) -> Self {
        Self { inner, received }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response carries.
#[derive(Debug)]
enum Kind {
    /// The application's body, streamed.
    Upstream(Incoming),
    /// A local reply; `None` once handed out.
    Local(Option<Bytes>),
}

/// A response body towards the client; owns the request's event.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    guard: EventGuard,
}

impl ResponseBody {
    /// The application's body.
    pub(crate) fn upstream(inner: Incoming, guard: EventGuard) -> Self {
        Self {
            kind: Kind::Upstream(inner),
            guard,
        }
    }

    /// A local reply's body (may be empty).
    pub(crate) fn local(body: Bytes, guard: EventGuard) -> Self {
        let body = if body.is_empty() { None } else { Some(body) };
        Self {
            kind: Kind::Local(body),
            guard,
        }
    }

    fn ended(&self) -> bool {
        match &self.kind {
            Kind::Upstream(inner) => inner.is_end_stream(),
            Kind::Local(rest) => rest.is_none(),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Local(rest) => match rest.take() {
                Some(data) => {
                    this.guard.add_sent(data.len() as u64);
                    // hyper stops polling once `is_end_stream` says so: the reply is complete.
                    this.guard.finish();
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                None => {
                    this.guard.finish();
                    Poll::Ready(None)
                }
            },
            Kind::Upstream(inner) => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    this.guard.finish();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.guard.add_sent(data.len() as u64);
                    } else if let Some(trailers) = frame.trailers_ref()
                        && let Some(event) = this.guard.event()
                    {
                        event.grpc_status = grpc_status(trailers);
                    }
                    if inner.is_end_stream() {
                        this.guard.finish();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(event) = this.guard.event() {
                        event.flag(ResponseFlags::UPSTREAM_REMOTE_RESET);
                    }
                    this.guard.finish();
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(inner) => inner.size_hint(),
            Kind::Local(rest) => SizeHint::with_exact(rest.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body hyper never had to poll (empty, or HEAD) is complete, not abandoned.
        if self.ended() {
            self.guard.finish();
        }
    }
}

/// `grpc-status` of a header block.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
