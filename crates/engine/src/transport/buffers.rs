//! The WebSocket transport's read and write buffers, which hold memory only while they
//! hold bytes.
//!
//! **Reads.** tungstenite zero-fills `read_buffer_size` bytes of its own buffer before
//! every read, even a read that finds nothing, and the connection loop polls the reader at
//! every wake-up (a broadcast to 1,000 sockets is 1,000 wake-ups): with the 4 KiB it needs
//! to read a batch of frames in one call, that zeroing was a third of the cost of a
//! delivery. So tungstenite is given a small read size, and [`Buffers`] reads up to
//! [`READ_CHUNK`] bytes from the socket per call into an uninitialised stack buffer, gives
//! tungstenite what it asked for and keeps the rest on the heap until it is taken.
//!
//! **Writes.** The connection loop writes its frames here as finished WebSocket frames
//! ([`Buffers::put_frame`]), gathered up to [`WRITE_LIMIT`] until it flushes; after the
//! flush a buffer grown past [`KEEP_WRITE`] is freed (a replay of 100 missed events to
//! 5,000 clients would otherwise keep 130 MiB: tungstenite's own write buffer never
//! shrinks, so it is given none and writes only its own control frames, whole).
//!
//! An idle connection so holds no read buffer and at most [`KEEP_WRITE`] of write buffer
//! here (tokio's `BufReader`/`BufWriter` keep theirs for the connection's life).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket in one call.
pub(crate) const READ_CHUNK: usize = 4096;
/// The most written frames gathered before they go to the socket without a flush.
pub(crate) const WRITE_LIMIT: usize = 64 * 1024;
/// The most write buffer kept between flushes.
pub(crate) const KEEP_WRITE: usize = 2048;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Buffers<S> {
    inner: S,
    /// Read from the socket, not yet taken; empty (and unallocated) most of the time.
    rest: BytesMut,
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
            rest: BytesMut::new(),
            out: Vec::new(),
            sent: 0,
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

impl<S: AsyncRead + Unpin> AsyncRead for Buffers<S> {
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

impl<S> Buffers<S> {
    /// Whether a frame of `len` bytes can be gathered without sending first: there is
    /// room under [`WRITE_LIMIT`], or nothing is gathered (a frame alone always goes).
    pub(crate) fn has_room(&self, len: usize) -> bool {
        let pending = self.pending();
        pending == 0 || pending + len <= WRITE_LIMIT
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
    /// frame, most of a broadcast's delivery. tungstenite still writes what it answers
    /// on its own (pongs, the close handshake), always whole frames between these.
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
    async fn small_reads_get_every_byte_in_order_and_the_rest_is_freed() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut reader = Buffers::new(r);
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

    #[tokio::test]
    async fn large_reads_go_straight_through() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        w.write_all(&[7u8; 9000]).await.unwrap();
        let mut reader = Buffers::new(r);
        let mut big = vec![0u8; 9000];
        reader.read_exact(&mut big).await.unwrap();
        assert!(big.iter().all(|&b| b == 7));
        assert_eq!(reader.rest.capacity(), 0);
    }
}
