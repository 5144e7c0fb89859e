//! The WebSocket transport's socket and write buffer, which holds memory only while it
//! holds bytes.
//!
//! **Reads** go straight to the socket: [`super::frame::Reader`] reads it in chunks into a
//! stack buffer and keeps only what it has not handled yet.
//!
//! **Writes.** The connection loop writes its frames here as finished WebSocket frames
//! ([`Buffers::put_frame`]), gathered up to [`WRITE_LIMIT`] until it flushes; after the
//! flush a buffer grown past [`KEEP_WRITE`] is freed (a replay of 100 missed events to
//! 5,000 clients would otherwise keep 130 MiB).
//!
//! An idle connection so holds no read buffer and at most [`KEEP_WRITE`] of write buffer
//! here (tokio's `BufReader`/`BufWriter` keep theirs for the connection's life).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most written frames gathered before they go to the socket without a flush.
pub(crate) const WRITE_LIMIT: usize = 64 * 1024;
/// The most write buffer kept between flushes.
pub(crate) const KEEP_WRITE: usize = 2048;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Buffers<S> {
    inner: S,
    /// Written; the bytes from `sent` on are not yet sent to the socket. A `Vec`, whose
    /// capacity is its allocation (a `BytesMut` advanced past what was sent reports only
    /// the room left, so a burst's buffer would look small and be kept).
    out: Vec<u8>,
    sent: usize,
}

impl<S> Buffers<S> {
    pub(crate) fn new(inner: S) -> Self {
        Buffers {
            inner,
            out: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Buffers<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, dst)
    }
}

impl<S> Buffers<S> {
    /// Whether a frame of `len` bytes can be gathered without sending first: there is
    /// room under [`WRITE_LIMIT`], or nothing is gathered (a frame alone always goes).
    pub(crate) fn has_room(&self, len: usize) -> bool {
        let pending = self.pending();
        pending == 0 || pending + len <= WRITE_LIMIT
    }

    /// Whether bytes are gathered and not yet sent (a pong, say).
    pub(crate) fn has_pending(&self) -> bool {
        self.pending() > 0
    }

    /// Bytes gathered and not yet sent.
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Makes room for `len` more bytes in one allocation (a batch of frames whose size is
    /// known), rather than growing step by step.
    pub(crate) fn reserve(&mut self, len: usize) {
        self.out.reserve(len);
    }

    /// Gathers one WebSocket frame as a server sends it (RFC 6455 §5.2): final, unmasked,
    /// `opcode`, then the payload's length and the payload.
    ///
    /// The connection loop writes its frames here itself: tungstenite's write path (a
    /// `Message`, a `Frame`, its own buffer, then this one) cost ~400 instructions per
    /// frame, most of a broadcast's delivery. Pongs and close frames go the same way.
    pub(crate) fn put_frame(&mut self, opcode: u8, payload: &[u8]) {
        let n = payload.len();
        let head_len = head_len(n);
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        match head_len {
            2 => head[1] = n as u8,
            4 => {
                head[1] = 126;
                head[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                head[1] = 127;
                head[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.reserve(head_len + n);
        self.out.extend_from_slice(&head[..head_len]);
        self.out.extend_from_slice(payload);
    }
}

/// The size of a server frame of `payload_len` bytes (see [`Buffers::put_frame`]).
pub(crate) fn frame_len(payload_len: usize) -> usize {
    payload_len + head_len(payload_len)
}

/// The size of a server frame's header: the shortest length encoding (RFC 6455 §5.2).
fn head_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

impl<S: AsyncWrite + Unpin> Buffers<S> {
    /// Sends what is gathered to the socket (no flush of the socket itself).
    pub(crate) async fn send(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await
    }

    /// Sends what is gathered to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > KEEP_WRITE {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffers<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending() + buf.len() > WRITE_LIMIT {
            ready!(this.poll_send(cx))?;
            if buf.len() > WRITE_LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_gathered_until_a_flush_and_a_big_buffer_is_freed() {
        let (w, mut r) = tokio::io::duplex(1 << 20);
        let mut writer = Buffers::new(w);
        writer.write_all(b"hello ").await.unwrap();
        writer.write_all(&[b'x'; 10_000]).await.unwrap();
        let mut probe = [0u8; 1];
        let nothing_yet =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut probe)).await;
        assert!(nothing_yet.is_err(), "nothing is sent before the flush");
        writer.flush().await.unwrap();
        assert_eq!(
            writer.out.capacity(),
            0,
            "a buffer past KEEP_WRITE is freed"
        );
        let mut got = vec![0u8; 10_006];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..6], b"hello ");
        // Past WRITE_LIMIT, what is gathered goes out first, then the big write.
        writer.write_all(b"a").await.unwrap();
        writer
            .write_all(&vec![b'y'; WRITE_LIMIT + 1])
            .await
            .unwrap();
        writer.flush().await.unwrap();
        let mut got = vec![0u8; WRITE_LIMIT + 2];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'a');
        assert!(got[1..].iter().all(|&b| b == b'y'));
    }

    #[test]
    fn frames_are_final_unmasked_with_the_shortest_length() {
        let (w, _r) = tokio::io::duplex(16);
        let mut b = Buffers::new(w);
        for (n, head) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            b.out.clear();
            let payload = vec![b'a'; n];
            b.put_frame(0x1, &payload);
            assert_eq!(&b.out[..head.len()], &head[..], "header of {n} bytes");
            assert_eq!(&b.out[head.len()..], &payload[..]);
            assert_eq!(b.out.len(), frame_len(n));
        }
        b.out.clear();
        b.put_frame(0x2, b"xy");
        assert_eq!(&b.out[..], &[0x82, 2, b'x', b'y']);
        assert!(
            b.has_room(WRITE_LIMIT - 4),
            "gathered bytes leave room up to the limit"
        );
        assert!(!b.has_room(WRITE_LIMIT - 3), "but no further");
    }

    #[tokio::test]
    async fn a_batch_reserved_exactly_is_freed_after_its_flush() {
        let (w, mut r) = tokio::io::duplex(1 << 20);
        let mut writer = Buffers::new(w);
        let payload = vec![b'z'; 3000];
        writer.reserve(frame_len(payload.len()));
        writer.put_frame(0x1, &payload);
        writer.flush().await.unwrap();
        assert_eq!(writer.out.capacity(), 0, "a burst's buffer is not kept");
        let mut got = vec![0u8; frame_len(payload.len())];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[4..], &payload[..]);
    }
}
