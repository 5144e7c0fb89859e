//! WebSocket: a direct session, or the upgrade of a polling session (probe, upgrade).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::buffers::{frame_len, Buffers, WRITE_LIMIT};
use super::dispatch_text;
use super::frame::{self, Event, Reader, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT};
use crate::engine::{Engine, Handler, Inner, Message, Session};
use crate::outbox::Frames;
use crate::socket::{EngineSocket, Handshake, Transport};
use crate::{CloseReason, ProtocolError, Sid};

/// A WebSocket connection: the socket with its write buffer, and the reader of the
/// client's frames (see [`frame`] for why it is not tungstenite's).
struct Ws {
    io: Buffers<TokioIo<hyper::upgrade::Upgraded>>,
    reader: Reader,
    /// How the stream ended, once it did.
    ended: Option<End>,
}

/// How the socket's stream ended.
enum End {
    /// The client went away without a close frame.
    Eof,
    /// Reading the socket failed.
    Failed(io::Error),
}

impl Ws {
    /// Reads the socket until a frame (or a protocol error) is buffered or the stream
    /// ends; `cx`'s waker is registered when it waits.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.ended.is_none() && !self.reader.has_frame() {
            std::task::ready!(self.poll_fill(cx));
        }
        Poll::Ready(())
    }

    /// Reads the socket once into the reader, noting in `ended` how the stream ended if
    /// it did; `cx`'s waker is registered when it waits.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match std::task::ready!(self.reader.poll_fill(&mut self.io, cx)) {
            Ok(0) => self.ended = Some(End::Eof),
            Ok(_) => {}
            Err(e) => self.ended = Some(End::Failed(e)),
        }
        Poll::Ready(())
    }

    /// Sends a close frame (with `code`, else empty) and flushes, within `timeout`.
    async fn close(&mut self, code: Option<u16>, timeout: Duration) {
        let code = code.map(u16::to_be_bytes);
        self.io
            .put_frame(OP_CLOSE, code.as_ref().map_or(&[][..], |c| &c[..]));
        let _ = tokio::time::timeout(timeout, self.io.flush()).await;
    }
}

/// Answers the WebSocket handshake and runs the connection in a task of its own.
///
/// For an upgrade, the session must still use polling and have no other upgrade under
/// way; otherwise the WebSocket is accepted and closed at once, as the reference does
/// (a client sees a clean close rather than a failed handshake).
pub(crate) fn accept<H: Handler, B>(
    engine: &Engine<H>,
    req: &mut Request<B>,
    upgrade_of: Option<Arc<Session<H>>>,
) -> Result<Response<Full<Bytes>>, ProtocolError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(ProtocolError::BadRequest)?;
    let accept = derive_accept_key(key.as_bytes());
    let mut refuse = false;
    if let Some(session) = &upgrade_of {
        let socket = &session.socket;
        if socket.is_closed() {
            return Err(ProtocolError::BadRequest);
        }
        refuse = socket.transport() != Transport::Polling
            || socket.upgrade_claimed.swap(true, Ordering::AcqRel);
    }
    let handshake = Handshake::from_request(req);
    // A new session's id is drawn now, for the cookie of the 101 response.
    let new_sid = upgrade_of.is_none().then(Sid::random);
    let on_upgrade = hyper::upgrade::on(req);
    let inner = engine.inner.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                if let (Some(session), false) = (&upgrade_of, refuse) {
                    session
                        .socket
                        .upgrade_claimed
                        .store(false, Ordering::Release);
                }
                return;
            }
        };
        let ws = Ws {
            io: Buffers::new(TokioIo::new(upgraded)),
            reader: Reader::new(inner.config.max_payload),
            ended: None,
        };
        match upgrade_of {
            None => run_new(inner, ws, new_sid.unwrap_or_else(Sid::random), handshake).await,
            Some(_) if refuse => {
                let mut ws = ws;
                ws.close(None, inner.config.write_timeout).await;
            }
            Some(session) => run_upgrade(inner, ws, session).await,
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let (Some(sid), Some(c)) = (new_sid, &engine.inner.config.cookie) {
        if let Some(v) = c.header(sid.as_str()) {
            h.insert(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

async fn run_new<H: Handler>(inner: Arc<Inner<H>>, mut ws: Ws, sid: Sid, handshake: Handshake) {
    let session = inner.open_session(sid, Transport::Websocket, handshake);
    let open = inner.open_packet(session.socket.sid(), Transport::Websocket);
    ws.io.put_frame(OP_TEXT, open.as_bytes());
    if !bounded(ws.io.flush(), inner.config.write_timeout).await {
        session.socket.close(CloseReason::TransportError);
        return;
    }
    run(&inner, ws, &session).await;
}

async fn run_upgrade<H: Handler>(inner: Arc<Inner<H>>, mut ws: Ws, session: Arc<Session<H>>) {
    let socket = &session.socket;
    let probe = async {
        // Wait for `2probe`, answer `3probe`, then wait for `5`.
        let mut probed = false;
        while let Some(t) = probe_text(&mut ws, inner.config.write_timeout).await {
            match (probed, t.as_str()) {
                (false, "2probe") => {
                    ws.io.put_frame(OP_TEXT, b"3probe");
                    if !bounded(ws.io.flush(), inner.config.write_timeout).await {
                        return false;
                    }
                    probed = true;
                    socket.upgrading.store(true, Ordering::Release);
                    // End a pending poll so that the client can pause polling.
                    socket.outbox.notify.notify_waiters();
                }
                (true, "5") => return true,
                _ => return false,
            }
        }
        false
    };
    let upgraded = tokio::time::timeout(inner.config.upgrade_timeout, probe)
        .await
        .unwrap_or(false);
    if !upgraded || socket.is_closed() {
        socket.upgrading.store(false, Ordering::Release);
        socket.upgrade_claimed.store(false, Ordering::Release);
        ws.close(None, inner.config.write_timeout).await;
        return;
    }
    socket.set_transport(Transport::Websocket);
    socket.upgrading.store(false, Ordering::Release);
    // Wake a poll that might still be waiting: it answers noop.
    socket.outbox.notify.notify_waiters();
    tracing::debug!(sid = %socket.sid(), "upgraded to websocket");
    {
        // Handler calls of one session never overlap.
        let _inbound = session.inbound.lock().await;
        inner.handler.on_upgrade(&session.conn);
    }
    run(&inner, ws, &session).await;
}

/// Reads the next text message of the probe, answering pings on the way: `None` for
/// anything else (a binary message, a close, an error, the end of the stream).
async fn probe_text(ws: &mut Ws, timeout: Duration) -> Option<String> {
    loop {
        match ws.reader.next() {
            Ok(Some(Event::Text(t))) => return Some(t.to_owned()),
            Ok(Some(Event::Ping(p))) => {
                ws.io.put_frame(OP_PONG, p);
                if !bounded(ws.io.flush(), timeout).await {
                    return None;
                }
            }
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if ws.ended.is_some() => return None,
            Ok(None) => std::future::poll_fn(|cx| ws.poll_readable(cx)).await,
        }
    }
}

/// How the connection ended, for what the server still sends.
#[derive(Default)]
enum Ending {
    /// Not by a frame of the client's (or not yet): a plain close.
    #[default]
    Server,
    /// The client closed: only the answer to its close goes, with this code (or empty).
    PeerClosed(Option<u16>),
    /// A protocol error (or the stream's end or failure): closed with this code, if any
    /// (RFC 6455 §7.4.1: 1009 for a message over `max_payload`, 1007 for text that is
    /// not UTF-8, 1002 for a broken frame).
    Error(Option<u16>),
}

impl Ending {
    /// The code of the close frame the server ends with (`None`: an empty one).
    fn close_code(&self) -> Option<u16> {
        match *self {
            Ending::Server => None,
            Ending::PeerClosed(code) | Ending::Error(code) => code,
        }
    }
}

/// Handles one message (or ping) from the client; a pong goes to `out`. Returns `false`
/// when the connection must end, with how it ended in `close`.
fn on_event<H: Handler>(
    inner: &Inner<H>,
    session: &Session<H>,
    out: &mut Buffers<TokioIo<hyper::upgrade::Upgraded>>,
    event: Event<'_>,
    close: &mut Ending,
) -> bool {
    let socket = &session.socket;
    match event {
        Event::Text(t) => !socket.is_closed() && dispatch_text(inner, session, t),
        Event::Binary(b) => {
            if !socket.is_closed() {
                let b = Bytes::copy_from_slice(b);
                inner.handler.on_message(&session.conn, Message::Binary(b));
            }
            true
        }
        Event::Ping(p) => {
            out.put_frame(OP_PONG, p);
            true
        }
        Event::Close(code) => {
            *close = Ending::PeerClosed(code);
            socket.close(CloseReason::TransportClose);
            false
        }
    }
}

/// Ends the connection for a protocol error or the stream's end (tungstenite's rule: an
/// end without a close frame is an error, 1002).
fn on_error<H: Handler>(
    session: &Session<H>,
    code: Option<u16>,
    why: &dyn std::fmt::Display,
    close: &mut Ending,
) {
    tracing::debug!(sid = %session.socket.sid(), "websocket error: {why}");
    *close = Ending::Error(code);
    session.socket.close(CloseReason::TransportError);
}

/// How many already-buffered messages are handled before queued output is flushed.
const READ_BATCH: usize = 64;

/// Handles the messages buffered (and any more the socket has at once), up to
/// [`READ_BATCH`]. Returns `false` when the connection must end, with how in `close`.
/// The reader's waker is registered (and `reader.woken` left clear) only when the socket
/// has nothing more; otherwise `reader.woken` is set, to poll it again next time round.
fn read_batch<H: Handler>(
    inner: &Inner<H>,
    session: &Session<H>,
    ws: &mut Ws,
    reader: &ReadWake,
    read_waker: &Waker,
    close: &mut Ending,
) -> bool {
    let mut n = 0;
    while n < READ_BATCH {
        match ws.reader.next() {
            Ok(Some(event)) => {
                if !on_event(inner, session, &mut ws.io, event, close) {
                    return false;
                }
                n += 1;
            }
            Ok(None) => match &ws.ended {
                Some(End::Eof) => {
                    on_error(
                        session,
                        Some(frame::Error::Protocol.code()),
                        &"closed without a close frame",
                        close,
                    );
                    return false;
                }
                Some(End::Failed(e)) => {
                    on_error(session, None, e, close);
                    return false;
                }
                None => {
                    // Frames that arrive together are handled together: read on while
                    // the socket has bytes at once.
                    reader.woken.store(false, Ordering::Release);
                    if ws
                        .poll_fill(&mut Context::from_waker(read_waker))
                        .is_pending()
                    {
                        // The waker is registered.
                        return true;
                    }
                }
            },
            Err(e) => {
                on_error(session, Some(e.code()), &e, close);
                return false;
            }
        }
    }
    // More may be buffered already (no readiness will say so): the reader is polled
    // again next time round, until it waits.
    reader.woken.store(true, Ordering::Release);
    true
}

/// Writes `frames` as finished WebSocket frames into [`Buffers`] (one allocation for the
/// batch), after what is gathered there already (a pong), sending to the socket when
/// [`WRITE_LIMIT`] is reached, then flushes. Each step is bounded by `timeout`, so that a
/// peer that stops reading cannot hold the connection (and its buffers) forever. Returns
/// whether all of it was written; `frames` is left empty either way.
async fn write_frames(ws: &mut Ws, frames: &mut Frames, timeout: Duration) -> bool {
    let written = write_all(&mut ws.io, frames, timeout).await;
    frames.recycle();
    written && bounded(ws.io.flush(), timeout).await
}

/// The gathering part of [`write_frames`]: false when a send of a full buffer failed.
async fn write_all(
    out: &mut Buffers<TokioIo<hyper::upgrade::Upgraded>>,
    frames: &Frames,
    timeout: Duration,
) -> bool {
    let total: usize = frames.iter().map(|(_, m)| frame_len(m.len())).sum();
    out.reserve(total.min(WRITE_LIMIT));
    for (text, payload) in frames.iter() {
        if !out.has_room(frame_len(payload.len())) && !bounded(out.send(), timeout).await {
            return false;
        }
        out.put_frame(if text { OP_TEXT } else { OP_BINARY }, payload);
    }
    true
}

/// Runs one write step; a timer is armed only if it cannot finish at once, so the
/// common case (the socket takes the bytes) costs no timer per message.
async fn bounded<F, E>(step: F, timeout: Duration) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let mut step = std::pin::pin!(step);
    if let Some(done) = step.as_mut().now_or_never() {
        return done.is_ok();
    }
    matches!(tokio::time::timeout(timeout, step).await, Ok(Ok(())))
}

/// Whether the connection's reader was woken since it was last polled, so that a wake-up
/// for the outbox alone (each delivery of a broadcast) does not poll the reader: the read
/// path and the socket's readiness cost more than the delivery itself (fanout-1k, with
/// tungstenite's reader: a fifth of all instructions).
struct ReadWake {
    woken: AtomicBool,
    /// The session's socket, whose outbox's waker slot holds the connection task: one
    /// slot for both (each registration is a compare of wakers, per delivery).
    socket: Arc<EngineSocket>,
}

impl ReadWake {
    fn new(socket: Arc<EngineSocket>) -> Self {
        ReadWake {
            // Polled at once: the reader has not registered a waker yet.
            woken: AtomicBool::new(true),
            socket,
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.socket.outbox.task.wake();
    }
}

/// What woke the connection loop.
enum Woken {
    /// The reader has a frame (or the stream ended).
    Read,
    /// The outbox was written to (or the session is closing).
    Outbox,
}

/// The connection loop: one task reads the socket and drains the outbox. Frames that
/// arrive together are handled together, so their answers leave in one write.
async fn run<H: Handler>(inner: &Inner<H>, mut ws: Ws, session: &Session<H>) {
    let socket = &session.socket;
    let timeout = inner.config.write_timeout;
    let mut frames = Frames::default();
    let mut writable = true;
    let mut close = Ending::default();
    let reader = Arc::new(ReadWake::new(socket.clone()));
    let read_waker = Waker::from(reader.clone());
    loop {
        socket.outbox.drain_into(&mut frames);
        // Pongs are gathered in `Buffers` and go with the next write.
        if !frames.is_empty() || ws.io.has_pending() {
            if !write_frames(&mut ws, &mut frames, timeout).await {
                tracing::debug!(sid = %socket.sid(), "websocket write failed or timed out");
                socket.close(CloseReason::TransportError);
                writable = false;
                break;
            }
            continue;
        }
        if socket.is_closed() {
            break;
        }
        let woken = std::future::poll_fn(|cx| {
            // Registered before the reader and the queue are looked at: a frame or a push
            // after the look wakes it.
            socket.outbox.task.register(cx.waker());
            if reader.woken.swap(false, Ordering::AcqRel)
                && ws
                    .poll_readable(&mut Context::from_waker(&read_waker))
                    .is_ready()
            {
                return Poll::Ready(Woken::Read);
            }
            if socket.is_closed() || !socket.outbox.is_empty() {
                return Poll::Ready(Woken::Outbox);
            }
            Poll::Pending
        })
        .await;
        match woken {
            Woken::Read => {
                let _guard = session.inbound.lock().await;
                if !read_batch(inner, session, &mut ws, &reader, &read_waker, &mut close) {
                    // Flush what is queued (a close, a disconnect packet), then stop;
                    // after the peer's close only the answer to it goes.
                    socket.outbox.drain_into(&mut frames);
                    if matches!(close, Ending::PeerClosed(_)) {
                        frames.recycle();
                    }
                    writable = write_frames(&mut ws, &mut frames, timeout).await;
                    break;
                }
            }
            Woken::Outbox => {}
        }
    }
    if writable {
        ws.close(close.close_code(), timeout).await;
    }
}
