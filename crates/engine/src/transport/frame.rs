//! Reading a client's WebSocket frames (RFC 6455 §5, server role).
//!
//! Hand-written rather than tungstenite's reader (`WebSocketStream::poll_next`, its
//! `read_frame`, buffers and waker proxies), which cost ~1,100 instructions per small text
//! message under callgrind. With this one the echo benchmark went from 5,540 to 4,690
//! instructions per message; the read path is ~500 of them, of which ~140 are the UTF-8
//! check and ~60 the socket read through hyper. A message that fits in one frame is
//! unmasked in place and handed on as a slice of the read buffer; only fragmented
//! messages are gathered in a buffer of their own.
//!
//! Memory stays bounded and idle connections hold none: the socket is read in chunks of
//! [`READ_CHUNK`] into a stack buffer and only what was read is kept, on the heap, until
//! it is handled (then freed); a frame's declared length is checked against the limit
//! before any of its payload is kept, so at most one frame (up to the limit) plus a
//! chunk, and one fragmented message (up to the limit), are buffered.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The opcodes (RFC 6455 §5.2).
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The most read from the socket in one call.
pub(crate) const READ_CHUNK: usize = 4096;

/// What the client's frames amount to (pongs are skipped).
#[derive(Debug, PartialEq)]
pub(crate) enum Event<'a> {
    /// A whole text message, valid UTF-8.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping, to be answered with a pong of the same payload.
    Ping(&'a [u8]),
    /// A close: the code to answer with (`None`: an empty close, as the client sent).
    Close(Option<u16>),
}

/// A frame that breaks the protocol; the connection is closed with [`Error::code`].
#[derive(Debug, PartialEq, Clone, Copy)]
pub(crate) enum Error {
    /// A broken frame or sequence of frames.
    Protocol,
    /// Text that is not UTF-8.
    Utf8,
    /// A frame or message over the limit.
    Size,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Protocol => "protocol error",
            Error::Utf8 => "text that is not UTF-8",
            Error::Size => "a frame or message over max_payload",
        })
    }
}

impl Error {
    /// The close code the error earns (RFC 6455 §7.4.1).
    pub(crate) fn code(self) -> u16 {
        match self {
            Error::Protocol => 1002,
            Error::Utf8 => 1007,
            Error::Size => 1009,
        }
    }
}

/// A frame's header.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// The header's own size.
    len: usize,
    /// The payload's declared size.
    payload: u64,
}

/// Parses the header at the start of `b`: `None` while it is incomplete.
fn parse_head(b: &[u8]) -> Result<Option<Head>, Error> {
    let [b0, b1, ..] = *b else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        // Reserved bits (no extension is negotiated), or an unmasked client frame.
        return Err(Error::Protocol);
    }
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        // Control frames are final and carry at most 125 bytes (§5.5).
        OP_CLOSE | OP_PING | OP_PONG if fin && b1 & 0x7f <= 125 => {}
        _ => return Err(Error::Protocol),
    }
    let (ext, payload) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(&[h, l]) => (2, u64::from(u16::from_be_bytes([h, l]))),
            _ => return Ok(None),
        },
        127 => match b.get(2..10).map(<[u8; 8]>::try_from) {
            Some(Ok(l)) => {
                let n = u64::from_be_bytes(l);
                if n >> 63 != 0 {
                    return Err(Error::Protocol);
                }
                (8, n)
            }
            _ => return Ok(None),
        },
        n => (0, u64::from(n)),
    };
    let len = 2 + ext + 4;
    match b.get(2 + ext..len).map(<[u8; 4]>::try_from) {
        Some(Ok(mask)) => Ok(Some(Head {
            fin,
            opcode,
            mask,
            len,
            payload,
        })),
        _ => Ok(None),
    }
}

/// Unmasks `data` in place (§5.3), eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so the mask starts over.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The answer to a close frame's payload (§5.5.1, §7.4): its code if a peer may send it,
/// 1002 if not; a one-byte payload is a protocol error, a reason that is not UTF-8 too.
fn close_event(payload: &[u8]) -> Result<Event<'_>, Error> {
    match *payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(Error::Protocol),
        [h, l, ref reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| Error::Utf8)?;
            let code = u16::from_be_bytes([h, l]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999);
            Ok(Event::Close(Some(if allowed { code } else { 1002 })))
        }
    }
}

/// A whole message: text (which must be UTF-8) or binary.
fn message(text: bool, data: &[u8]) -> Result<Event<'_>, Error> {
    if !text {
        return Ok(Event::Binary(data));
    }
    std::str::from_utf8(data)
        .map(Event::Text)
        .map_err(|_| Error::Utf8)
}

/// What is at the read position.
enum Next {
    /// A whole frame, with its payload's size (checked against the limit).
    Frame(Head, usize),
    /// Not all of a frame: how many bytes it takes, if its header says (else 0).
    Incomplete(usize),
}

/// A fragmented message being gathered.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// Reads a client's frames; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Reader {
    /// The most a frame or a message may carry.
    max: usize,
    /// Read from the socket; the bytes from `pos` on are not handled yet. Freed once all
    /// are handled.
    buf: Vec<u8>,
    pos: usize,
    /// A fragmented message, until its last frame.
    partial: Option<Partial>,
    /// The last fragmented message handed on, freed at the next call.
    done: Vec<u8>,
}

impl Reader {
    pub(crate) fn new(max: usize) -> Self {
        Reader {
            max,
            buf: Vec::new(),
            pos: 0,
            partial: None,
            done: Vec::new(),
        }
    }

    /// Whether [`Reader::next`] has something to say without more bytes: a frame (or a
    /// protocol error) is buffered.
    pub(crate) fn has_frame(&self) -> bool {
        !matches!(self.peek(), Ok(Next::Incomplete(_)))
    }

    /// What is at the read position; errors are found from the header alone, before
    /// the payload is read.
    fn peek(&self) -> Result<Next, Error> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(head) = parse_head(rest)? else {
            return Ok(Next::Incomplete(0));
        };
        let gathered = match (head.opcode, &self.partial) {
            (OP_CONTINUATION, Some(p)) => p.data.len(),
            (OP_CONTINUATION, None) | (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(Error::Protocol)
            }
            _ => 0,
        };
        let room = self.max.saturating_sub(gathered);
        let len = match usize::try_from(head.payload) {
            Ok(len) if len <= room => len,
            _ => return Err(Error::Size),
        };
        let total = head.len + len;
        Ok(if rest.len() < total {
            Next::Incomplete(total)
        } else {
            Next::Frame(head, len)
        })
    }

    /// The next message or ping, once all its frames are buffered (`None` until then).
    /// After an error the reader must not be used again.
    pub(crate) fn next(&mut self) -> Result<Option<Event<'_>>, Error> {
        self.done = Vec::new();
        loop {
            let (head, len) = match self.peek()? {
                Next::Frame(head, len) => (head, len),
                Next::Incomplete(_) => {
                    self.release();
                    return Ok(None);
                }
            };
            let start = self.pos + head.len;
            let end = start + len;
            self.pos = end;
            let Some(payload) = self.buf.get_mut(start..end) else {
                return Err(Error::Protocol);
            };
            unmask(payload, head.mask);
            match head.opcode {
                OP_TEXT | OP_BINARY if !head.fin => {
                    let mut data = Vec::new();
                    grow(&mut data, len, self.max);
                    data.extend_from_slice(payload);
                    self.partial = Some(Partial {
                        text: head.opcode == OP_TEXT,
                        data,
                    });
                }
                OP_TEXT | OP_BINARY => {
                    let data = self.buf.get(start..end).unwrap_or_default();
                    return message(head.opcode == OP_TEXT, data).map(Some);
                }
                OP_CONTINUATION => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(Error::Protocol);
                    };
                    grow(&mut p.data, len, self.max);
                    p.data.extend_from_slice(payload);
                    if head.fin {
                        let Some(Partial { text, data }) = self.partial.take() else {
                            return Err(Error::Protocol);
                        };
                        self.done = data;
                        return message(text, &self.done).map(Some);
                    }
                }
                OP_PING => {
                    return Ok(Some(Event::Ping(
                        self.buf.get(start..end).unwrap_or_default(),
                    )))
                }
                OP_CLOSE => {
                    return close_event(self.buf.get(start..end).unwrap_or_default()).map(Some)
                }
                // A pong (unsolicited: the server sends no pings) is ignored.
                _ => {}
            }
        }
    }

    /// Frees what is handled: the read buffer once all of it is, the last gathered
    /// message.
    fn release(&mut self) {
        if self.pos >= self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
        self.done = Vec::new();
    }

    /// Reads once from `io` (up to [`READ_CHUNK`] bytes): the number of bytes read,
    /// 0 at the end of the stream.
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.release();
        let mut raw = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut raw);
        ready!(Pin::new(io).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        self.append(read);
        Poll::Ready(Ok(read.len()))
    }

    /// Keeps `read` after the bytes not handled yet. A large frame's buffer is made
    /// as large as the frame (and a chunk) at once rather than grown step by step.
    fn append(&mut self, read: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        if self.buf.capacity() - len < read.len() {
            let want = match self.peek() {
                Ok(Next::Incomplete(total)) if len > 0 => total,
                _ => 0,
            };
            let frame_rest = want.saturating_sub(len);
            let extra = if frame_rest > read.len() {
                frame_rest + READ_CHUNK
            } else {
                read.len()
            };
            self.buf.reserve_exact(extra);
        }
        self.buf.extend_from_slice(read);
    }
}

/// Makes room for `more` bytes in a message's buffer, doubling but never past `max`.
fn grow(data: &mut Vec<u8>, more: usize, max: usize) {
    let need = data.len() + more;
    if need > data.capacity() {
        let cap = need.max(data.capacity() * 2).min(max).max(need);
        data.reserve_exact(cap - data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame: masked with [`KEY`], the shortest length unless `long`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], long: bool) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 && !long => f.push(0x80 | n as u8),
            n if n <= 0xffff && !long => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&KEY);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        f
    }

    fn fin(opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame(true, opcode, payload, false)
    }

    /// Feeds `bytes` one at a time; returns what came out, owned.
    fn events(max: usize, bytes: &[u8]) -> Result<Vec<String>, Error> {
        let mut r = Reader::new(max);
        let mut out = Vec::new();
        for b in bytes {
            r.append(std::slice::from_ref(b));
            while let Some(e) = r.next()? {
                out.push(format!("{e:?}"));
            }
        }
        assert_eq!(r.buf.capacity(), 0, "nothing kept once all is handled");
        Ok(out)
    }

    #[test]
    fn a_frame_comes_out_whole_whatever_way_its_bytes_arrive() {
        let mut bytes = fin(OP_TEXT, b"4hello");
        bytes.extend(fin(OP_BINARY, &[1, 2, 3]));
        assert_eq!(
            events(1000, &bytes),
            Ok(vec![
                r#"Text("4hello")"#.to_owned(),
                "Binary([1, 2, 3])".to_owned()
            ])
        );
        // All at once too.
        let mut r = Reader::new(1000);
        r.append(&bytes);
        assert_eq!(r.next(), Ok(Some(Event::Text("4hello"))));
        assert_eq!(r.next(), Ok(Some(Event::Binary(&[1, 2, 3]))));
        assert_eq!(r.next(), Ok(None));
        assert_eq!(r.buf.capacity(), 0);
    }

    #[test]
    fn lengths_of_16_and_64_bits_and_non_minimal_ones() {
        for (n, long) in [
            (0, false),
            (125, false),
            (126, false),
            (65_535, false),
            (65_536, false),
            (3, true),
            (200, true),
        ] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut r = Reader::new(100_000);
            r.append(&frame(true, OP_BINARY, &payload, long));
            assert_eq!(r.next(), Ok(Some(Event::Binary(&payload))), "{n} {long}");
        }
        // A 64-bit length with the high bit set.
        let mut f = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        f.extend_from_slice(&KEY);
        let mut r = Reader::new(100);
        r.append(&f);
        assert_eq!(r.next(), Err(Error::Protocol));
    }

    #[test]
    fn unmasking_matches_the_byte_wise_rule() {
        for n in 0..40 {
            let plain: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut data: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ KEY[i % 4])
                .collect();
            unmask(&mut data, KEY);
            assert_eq!(data, plain);
        }
    }

    #[test]
    fn broken_frames_are_protocol_errors() {
        let unmasked = [0x81, 2, b'4', b'x'];
        assert_eq!(events(100, &unmasked), Err(Error::Protocol));
        let mut rsv = fin(OP_TEXT, b"4x");
        rsv[0] |= 0x40;
        assert_eq!(events(100, &rsv), Err(Error::Protocol));
        assert_eq!(events(100, &fin(0x3, b"x")), Err(Error::Protocol));
        assert_eq!(events(100, &fin(0xB, b"x")), Err(Error::Protocol));
        // Control frames: final, at most 125 bytes.
        assert_eq!(
            events(1000, &frame(false, OP_PING, b"x", false)),
            Err(Error::Protocol)
        );
        assert_eq!(events(1000, &fin(OP_PING, &[0; 126])), Err(Error::Protocol));
        // Found from the first two bytes, before the rest arrives.
        let mut r = Reader::new(100);
        r.append(&unmasked[..2]);
        assert!(r.has_frame());
        assert_eq!(r.next(), Err(Error::Protocol));
    }

    #[test]
    fn fragments_are_gathered_with_control_frames_between() {
        let mut bytes = frame(false, OP_TEXT, b"4he", false);
        bytes.extend(frame(false, OP_CONTINUATION, b"ll", false));
        bytes.extend(fin(OP_PING, b"between"));
        bytes.extend(fin(OP_PONG, b"ignored"));
        let e = "o é".as_bytes();
        bytes.extend(frame(false, OP_CONTINUATION, &e[..3], false));
        bytes.extend(fin(OP_CONTINUATION, &e[3..]));
        bytes.extend(frame(false, OP_BINARY, &[1], false));
        bytes.extend(fin(OP_CONTINUATION, &[2]));
        assert_eq!(
            events(1000, &bytes),
            Ok(vec![
                r#"Ping([98, 101, 116, 119, 101, 101, 110])"#.to_owned(),
                r#"Text("4hello é")"#.to_owned(),
                "Binary([1, 2])".to_owned(),
            ])
        );
        // A continuation with nothing to continue; a new message inside one.
        assert_eq!(
            events(1000, &fin(OP_CONTINUATION, b"x")),
            Err(Error::Protocol)
        );
        let mut bytes = frame(false, OP_TEXT, b"4a", false);
        bytes.extend(fin(OP_TEXT, b"4b"));
        assert_eq!(events(1000, &bytes), Err(Error::Protocol));
    }

    #[test]
    fn text_must_be_utf8_as_a_whole() {
        assert_eq!(events(1000, &fin(OP_TEXT, &[b'4', 0xff])), Err(Error::Utf8));
        let mut bytes = frame(false, OP_TEXT, b"4ok", false);
        bytes.extend(fin(OP_CONTINUATION, &[0xc3, 0x28]));
        assert_eq!(events(1000, &bytes), Err(Error::Utf8));
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        assert_eq!(
            events(1000, &fin(OP_TEXT, &[b'a'; 1000])).map(|e| e.len()),
            Ok(1)
        );
        // One byte over: the header alone says so.
        let f = fin(OP_TEXT, &[b'a'; 1001]);
        let mut r = Reader::new(1000);
        r.append(&f[..8]);
        assert!(r.has_frame());
        assert_eq!(r.next(), Err(Error::Size));
        // A declared length of 2^62 is refused without being read.
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 62).to_be_bytes());
        f.extend_from_slice(&KEY);
        assert_eq!(events(1000, &f), Err(Error::Size));
        // Fragments each under the limit, together over it.
        let mut bytes = frame(false, OP_TEXT, &[b'a'; 600], false);
        bytes.extend(fin(OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(events(1000, &bytes), Err(Error::Size));
    }

    #[test]
    fn close_frames_are_answered_with_their_code() {
        assert_eq!(
            events(100, &fin(OP_CLOSE, b"")),
            Ok(vec!["Close(None)".to_owned()])
        );
        let mut p = 4001u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        assert_eq!(
            events(100, &fin(OP_CLOSE, &p)),
            Ok(vec!["Close(Some(4001))".to_owned()])
        );
        // Codes a peer may not send earn 1002.
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(
                events(100, &fin(OP_CLOSE, &code.to_be_bytes())),
                Ok(vec!["Close(Some(1002))".to_owned()]),
                "{code}"
            );
        }
        assert_eq!(events(100, &fin(OP_CLOSE, &[3])), Err(Error::Protocol));
        assert_eq!(
            events(100, &fin(OP_CLOSE, &[3, 232, 0xff])),
            Err(Error::Utf8)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded() {
        // A small deterministic generator (xorshift), so that failures reproduce.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut bytes = Vec::new();
            while bytes.len() < 300 {
                let r = next();
                if r % 3 == 0 {
                    // A well-formed frame of any opcode, final or not.
                    let len = (r >> 8) as usize % 140;
                    let op = ((r >> 16) % 16) as u8;
                    bytes.extend(frame((r >> 24) % 2 == 0, op, &vec![b'a'; len], r % 7 == 0));
                } else {
                    bytes.extend_from_slice(&r.to_le_bytes()[..(r >> 60) as usize % 8]);
                }
            }
            let mut r = Reader::new(100);
            let mut at = 0;
            while at < bytes.len() {
                let n = (next() % 40) as usize + 1;
                r.append(&bytes[at..(at + n).min(bytes.len())]);
                at += n;
                assert!(r.buf.len() <= 100 + 14 + 40);
                assert!(r.partial.as_ref().map_or(0, |p| p.data.capacity()) <= 100);
                let mut failed = false;
                loop {
                    match r.next() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break;
                }
            }
        }
    }

    #[tokio::test]
    async fn the_socket_is_read_in_chunks_and_nothing_is_kept_after() {
        let (mut w, mut r) = tokio::io::duplex(1 << 20);
        let mut sent = Vec::new();
        let mut bytes = Vec::new();
        for i in 0..300 {
            let payload = vec![b'a' + (i % 26) as u8; i * 7];
            bytes.extend(fin(OP_BINARY, &payload));
            sent.push(payload);
        }
        w.write_all(&bytes).await.unwrap();
        drop(w);
        let mut reader = Reader::new(1 << 20);
        let mut got = Vec::new();
        loop {
            let n = std::future::poll_fn(|cx| reader.poll_fill(&mut r, cx))
                .await
                .unwrap();
            while let Some(e) = reader.next().unwrap() {
                let Event::Binary(b) = e else { panic!("{e:?}") };
                got.push(b.to_vec());
            }
            if n == 0 {
                break;
            }
            assert!(reader.buf.capacity() <= 2100 + 2 * READ_CHUNK);
        }
        assert_eq!(got, sent);
        assert_eq!(reader.buf.capacity(), 0);
    }
}
