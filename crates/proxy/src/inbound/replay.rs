//! A transport that remembers what was read from it, so bytes consumed while inspecting a
//! ClientHello can be replayed to the application when the TLS is passed through untouched
//! (authentication.md §2.4: "TLS without Istio ALPN → TCP passthrough, TLS not terminated (app
//! sees the client's TLS)").

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// More than any ClientHello (a handshake message is at most 2^24 bytes in theory; rustls caps
/// what it buffers far below this), so a client cannot make the proxy buffer without bound.
const MAX_RECORDED: usize = 64 * 1024;

/// Wraps a transport; while recording, every byte read is also kept.
#[derive(Debug)]
pub(crate) struct Recording<S> {
    inner: S,
    recorded: Option<Vec<u8>>,
}

impl<S> Recording<S> {
    /// Starts recording.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            recorded: Some(Vec::new()),
        }
    }

    /// Stops recording and frees what was kept (the TLS will be terminated here).
    pub(crate) fn stop(&mut self) {
        self.recorded = None;
    }

    /// The transport and the bytes read so far.
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        (self.inner, self.recorded.unwrap_or_default())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(recorded)) = (&result, this.recorded.as_mut()) {
            let fresh = buf.filled().get(before..).unwrap_or_default();
            if recorded.len() + fresh.len() > MAX_RECORDED {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS ClientHello larger than the proxy inspects",
                )));
            }
            recorded.extend_from_slice(fresh);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn records_until_stopped() {
        let data: &[u8] = b"hello world";
        let mut r = Recording::new(data);
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).await.unwrap();
        r.stop();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" world");
        let (_, recorded) = r.into_parts();
        assert!(recorded.is_empty());

        let mut r = Recording::new(data);
        r.read_exact(&mut buf).await.unwrap();
        let (_, recorded) = r.into_parts();
        assert_eq!(recorded, b"hello");
    }
}
