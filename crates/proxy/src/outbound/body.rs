//! HTTP bodies on the way through: one boxed body type for both directions, byte counting,
//! and a hook that runs when a body is complete (to log the request and hand the upstream
//! connection back to the pool) or abandoned.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the outbound side sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// Every byte went through.
    Complete,
    /// The body's source failed (the upstream reset or closed mid-body).
    Error,
    /// The body was dropped before its end (the downstream went away).
    Dropped,
}

/// Runs once, when the body ends.
pub(crate) type OnEnd = Box<dyn FnOnce(BodyEnd) + Send>;

/// Counts the data bytes of `inner` and calls `on_end` when it ends or is dropped.
pub(crate) struct Counted<B: HttpBody> {
    inner: B,
    counter: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

impl<B> Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Wraps `inner`.
    pub(crate) fn new(inner: B, counter: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        Counted {
            inner,
            counter,
            on_end,
        }
    }

    /// As the common body type.
    pub(crate) fn boxed(self) -> Body {
        self.map_err(Into::into).boxed_unsync()
    }
}

impl<B: HttpBody> Counted<B> {
    fn end(&mut self, how: BodyEnd) {
        if let Some(on_end) = self.on_end.take() {
            on_end(how);
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // hyper stops polling once `is_end_stream` says so; finish here rather than
                // waiting for a `None` that may never be asked for.
                if this.inner.is_end_stream() {
                    this.end(BodyEnd::Complete);
                }
            }
            Poll::Ready(None) => this.end(BodyEnd::Complete),
            Poll::Ready(Some(Err(_))) => this.end(BodyEnd::Error),
            Poll::Pending => {}
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

impl<B: HttpBody> Drop for Counted<B> {
    fn drop(&mut self) {
        // A body that was empty from the start is never polled; anything else dropped before
        // its end means the downstream went away or the request was cancelled.
        let how = if self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::Dropped
        };
        self.end(how);
    }
}
