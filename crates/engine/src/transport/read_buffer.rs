//! A read buffer for the WebSocket transport that holds memory only while it holds bytes.
//!
//! tungstenite zero-fills `read_buffer_size` bytes of its own buffer before every read,
//! even a read that finds nothing, and the connection loop polls the reader at every
//! wake-up (a broadcast to 1,000 sockets is 1,000 wake-ups): with the 4 KiB it needs to
//! read a batch of frames in one call, that zeroing was a third of the cost of a delivery.
//! So tungstenite is given a small read size, and this reader in front of it reads up to
//! [`READ_CHUNK`] bytes from the socket per call into an uninitialised stack buffer,
//! gives tungstenite what it asked for and keeps the rest on the heap until it is taken.
//! An idle connection holds no read buffer at all (tokio's `BufReader` would keep its
//! 4 KiB per connection for the connection's life). Writes pass through.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket in one call.
pub(crate) const READ_CHUNK: usize = 4096;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LazyReadBuffer<S> {
    inner: S,
    /// Read from the socket, not yet taken; empty (and unallocated) most of the time.
    rest: BytesMut,
}

impl<S> LazyReadBuffer<S> {
    pub(crate) fn new(inner: S) -> Self {
        LazyReadBuffer {
            inner,
            rest: BytesMut::new(),
        }
    }

    /// Copies what fits of the kept bytes to `dst`, freeing them once all are taken.
    fn take_rest(&mut self, dst: &mut ReadBuf<'_>) {
        let n = self.rest.len().min(dst.remaining());
        dst.put_slice(&self.rest[..n]);
        self.rest.advance(n);
        if self.rest.is_empty() {
            self.rest = BytesMut::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LazyReadBuffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            this.take_rest(dst);
            return Poll::Ready(Ok(()));
        }
        if dst.remaining() >= READ_CHUNK {
            return Pin::new(&mut this.inner).poll_read(cx, dst);
        }
        let mut raw = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut raw);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let n = read.len().min(dst.remaining());
        dst.put_slice(&read[..n]);
        if n < read.len() {
            this.rest.extend_from_slice(&read[n..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LazyReadBuffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_the_rest_is_freed() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut reader = LazyReadBuffer::new(r);
        let mut got = Vec::new();
        let mut small = [0u8; 256];
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(reader.rest.capacity(), 0, "nothing kept once all is taken");
    }

    #[tokio::test]
    async fn large_reads_go_straight_through() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        w.write_all(&[7u8; 9000]).await.unwrap();
        let mut reader = LazyReadBuffer::new(r);
        let mut big = vec![0u8; 9000];
        reader.read_exact(&mut big).await.unwrap();
        assert!(big.iter().all(|&b| b == 7));
        assert_eq!(reader.rest.capacity(), 0);
    }
}
