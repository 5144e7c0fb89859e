//! WebSocket: a direct session, or the upgrade of a polling session (probe, upgrade).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::buffers::{frame_len, Buffers, WRITE_LIMIT};
use super::dispatch_text;
use crate::engine::{Engine, Handler, Inner, Message, Session};
use crate::socket::{recycle, Frame, Handshake, Transport};
use crate::{CloseReason, ProtocolError, Sid};

type Ws = WebSocketStream<Buffers<TokioIo<hyper::upgrade::Upgraded>>>;

/// How much tungstenite zero-fills and reads per call (see [`super::buffers`], which
/// reads the socket in larger chunks in front of it).
const FRAME_READ_CHUNK: usize = 256;
/// How much tungstenite gathers before it writes to [`Buffers`]: nothing, as it writes only
/// what it answers on its own (pongs, the close handshake) and the first packets; the
/// connection loop writes its frames to [`Buffers`] itself (see [`write_frames`]).
const TUNGSTENITE_WRITE_BUFFER: usize = 0;

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
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(inner.config.max_payload);
        config.max_frame_size = Some(inner.config.max_payload);
        config.read_buffer_size = FRAME_READ_CHUNK;
        // tungstenite's own frames go on to `Buffers` at once, whole.
        config.write_buffer_size = TUNGSTENITE_WRITE_BUFFER;
        config.max_write_buffer_size = usize::MAX;
        let ws = WebSocketStream::from_raw_socket(
            Buffers::new(TokioIo::new(upgraded)),
            Role::Server,
            Some(config),
        )
        .await;
        match upgrade_of {
            None => run_new(inner, ws, new_sid.unwrap_or_else(Sid::random), handshake).await,
            Some(_) if refuse => {
                let mut ws = ws;
                let _ = tokio::time::timeout(inner.config.write_timeout, ws.close(None)).await;
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
    let sent =
        tokio::time::timeout(inner.config.write_timeout, ws.send(WsMessage::text(open))).await;
    if !matches!(sent, Ok(Ok(()))) {
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
        while let Some(msg) = ws.next().await {
            let Ok(WsMessage::Text(t)) = msg else {
                return false;
            };
            match (probed, t.as_str()) {
                (false, "2probe") => {
                    if ws.send(WsMessage::text("3probe")).await.is_err() {
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
        let _ = tokio::time::timeout(inner.config.write_timeout, ws.close(None)).await;
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

/// The WebSocket opcodes of the messages the connection loop writes (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

/// The WebSocket messages a frame is, in order: a text (or binary) message, then its
/// binary attachments.
fn messages(frame: &Frame) -> impl Iterator<Item = (u8, &[u8])> {
    let (op, first, attachments): (u8, &[u8], &[Bytes]) = match frame {
        Frame::Text(t) => (OP_TEXT, t.as_bytes(), &[]),
        Frame::Binary(b) => (OP_BINARY, b, &[]),
        Frame::WithAttachments(t, bins) => (OP_TEXT, t.as_bytes(), bins),
    };
    std::iter::once((op, first)).chain(attachments.iter().map(|b| (OP_BINARY, &b[..])))
}

/// The close frame a protocol error earns (RFC 6455 §7.4.1): 1009 for a message over
/// `max_payload`, 1007 for text that is not UTF-8, 1002 for a broken frame.
fn close_for(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error as E;
    let code = match e {
        E::Capacity(_) => CloseCode::Size,
        E::Utf8(_) => CloseCode::Invalid,
        E::Protocol(_) => CloseCode::Protocol,
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: "".into(),
    })
}

/// How the client's frames ended the connection, for what the server still sends.
#[derive(Default)]
enum Ending {
    /// Not by a frame of the client's (or not yet): a plain close.
    #[default]
    Server,
    /// The client closed (or went away): only tungstenite's answer to its close goes.
    PeerClosed,
    /// A protocol error: closed with its code.
    Error(Option<CloseFrame>),
}

impl Ending {
    /// The close frame the server ends with.
    fn close_frame(self) -> Option<CloseFrame> {
        match self {
            Ending::Error(frame) => frame,
            Ending::Server | Ending::PeerClosed => None,
        }
    }
}

/// Handles one frame from the client. Returns `false` when the connection must end,
/// with how it ended in `close`.
fn on_frame<H: Handler>(
    inner: &Inner<H>,
    session: &Session<H>,
    msg: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    close: &mut Ending,
) -> bool {
    let socket = &session.socket;
    match msg {
        Some(Ok(WsMessage::Text(t))) => {
            !socket.is_closed() && dispatch_text(inner, session, t.as_str())
        }
        Some(Ok(WsMessage::Binary(b))) => {
            if !socket.is_closed() {
                inner.handler.on_message(&session.conn, Message::Binary(b));
            }
            true
        }
        Some(Ok(WsMessage::Close(_))) | None => {
            *close = Ending::PeerClosed;
            socket.close(CloseReason::TransportClose);
            false
        }
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            tracing::debug!(sid = %socket.sid(), "websocket error: {e}");
            *close = Ending::Error(close_for(&e));
            socket.close(CloseReason::TransportError);
            false
        }
    }
}

/// How many already-buffered frames are handled before queued output is flushed.
const READ_BATCH: usize = 64;

/// Writes `frames` as finished WebSocket frames into [`Buffers`] (one allocation for the
/// batch), sending to the socket when [`WRITE_LIMIT`] is reached, then flushes through
/// tungstenite, which first passes on what it queued itself (a pong). Each step is bounded
/// by `timeout`, so that a peer that stops reading cannot hold the connection (and its
/// buffers) forever. Returns whether all of it was written.
async fn write_frames(ws: &mut Ws, frames: &mut VecDeque<Frame>, timeout: Duration) -> bool {
    let total: usize = frames
        .iter()
        .flat_map(messages)
        .map(|(_, payload)| frame_len(payload.len()))
        .sum();
    ws.get_mut().reserve(total.min(WRITE_LIMIT));
    for frame in frames.drain(..) {
        for (op, payload) in messages(&frame) {
            let out = ws.get_mut();
            if !out.has_room(frame_len(payload.len())) && !bounded(out.send(), timeout).await {
                return false;
            }
            ws.get_mut().put_frame(op, payload);
        }
    }
    recycle(frames);
    bounded(ws.flush(), timeout).await
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
/// for the outbox alone (each delivery of a broadcast) does not poll the reader:
/// tungstenite's read path, tokio-tungstenite's waker proxies and the socket's readiness
/// cost more than the delivery itself (fanout-1k: a fifth of all instructions).
struct ReadWake {
    woken: AtomicBool,
    /// The connection task, woken with the flag set.
    task: AtomicWaker,
}

impl Default for ReadWake {
    fn default() -> Self {
        ReadWake {
            // Polled at once: the reader has not registered a waker yet.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What woke the connection loop.
enum Woken {
    /// The reader has a frame (or the stream ended).
    Read(Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>),
    /// The outbox was written to (or the session is closing).
    Outbox,
}

/// The connection loop: one task reads the socket and drains the outbox. Frames that
/// arrive together are handled together, so their answers leave in one write.
async fn run<H: Handler>(inner: &Inner<H>, mut ws: Ws, session: &Session<H>) {
    let socket = &session.socket;
    let timeout = inner.config.write_timeout;
    let mut frames = VecDeque::new();
    let mut writable = true;
    let mut close = Ending::default();
    let reader = Arc::new(ReadWake::default());
    let read_waker = Waker::from(reader.clone());
    loop {
        let notified = socket.outbox.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        socket.outbox.drain_into(&mut frames);
        if !frames.is_empty() {
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
            reader.task.register(cx.waker());
            if reader.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(msg) = ws.poll_next_unpin(&mut Context::from_waker(&read_waker))
                {
                    return Poll::Ready(Woken::Read(msg));
                }
            }
            std::future::Future::poll(notified.as_mut(), cx).map(|()| Woken::Outbox)
        })
        .await;
        match woken {
            Woken::Read(msg) => {
                // More may be buffered already (no readiness will say so): the reader is
                // polled again next time round, until it waits.
                reader.woken.store(true, Ordering::Release);
                let _guard = session.inbound.lock().await;
                let mut keep = on_frame(inner, session, msg, &mut close);
                let mut n = 1;
                while keep && n < READ_BATCH {
                    match ws.next().now_or_never() {
                        Some(msg) => keep = on_frame(inner, session, msg, &mut close),
                        None => break,
                    }
                    n += 1;
                }
                if !keep {
                    // Flush what is queued (a close, a disconnect packet), then stop;
                    // after the peer's close only tungstenite's answer goes.
                    socket.outbox.drain_into(&mut frames);
                    if matches!(close, Ending::PeerClosed) {
                        frames.clear();
                    }
                    writable = write_frames(&mut ws, &mut frames, timeout).await;
                    break;
                }
            }
            Woken::Outbox => {}
        }
    }
    if writable {
        let _ = tokio::time::timeout(timeout, ws.close(close.close_frame())).await;
        // tungstenite ends a close handshake it answered without flushing the stream:
        // the answer is still in `Buffers`.
        let _ = tokio::time::timeout(timeout, ws.get_mut().flush()).await;
    }
}
