//! HTTP long-polling: GET waits for packets, POST carries the client's packets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tether_proto::engine::{decode_payload, encode_binary_into, PayloadItem, SEPARATOR};

use super::dispatch;
use crate::engine::{status, Engine, Handler, Message, Session};
use crate::outbox::Frame;
use crate::socket::{Handshake, Transport};
use crate::{CloseReason, Sid};

fn text(body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

/// The handshake over polling: opens a session and answers its open packet.
pub(crate) fn open<H: Handler, B>(engine: &Engine<H>, req: &Request<B>) -> Response<Full<Bytes>> {
    let handshake = Handshake::from_request(req);
    let session = engine
        .inner
        .open_session(Sid::random(), Transport::Polling, handshake);
    let sid = session.socket.sid();
    let mut res = text(engine.inner.open_packet(sid, Transport::Polling));
    if let Some(c) = engine
        .inner
        .config
        .cookie
        .as_ref()
        .and_then(|c| c.header(sid.as_str()))
    {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

/// A poll: waits until something is queued, then sends all of it.
pub(crate) async fn get<H: Handler>(
    engine: &Engine<H>,
    session: Arc<Session<H>>,
) -> Response<Full<Bytes>> {
    let socket = &session.socket;
    if socket.polling_get.swap(true, Ordering::AcqRel) {
        // Two polls at once: the reference closes the session.
        socket.close(CloseReason::TransportError);
        return crate::ProtocolError::BadRequest.response();
    }
    struct Release<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _release = Release(&socket.polling_get);
    let max_len = engine.inner.config.max_payload;
    let mut frames = Vec::new();
    loop {
        let notified = socket.outbox.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        socket.outbox.drain_for_poll(&mut frames, max_len);
        if !frames.is_empty() || socket.is_closed() {
            break;
        }
        if socket.upgrading.load(Ordering::Acquire) || socket.transport() != Transport::Polling {
            return text("6".to_owned());
        }
        notified.await;
    }
    socket.polls.fetch_add(1, Ordering::AcqRel);
    if socket.close_reason() == Some(CloseReason::TransportClose) {
        // The client closed the session (a `1` in a POST): the pending poll ends with a
        // noop and what was queued is dropped, as in the reference.
        return text("6".to_owned());
    }
    if frames.is_empty() {
        // Closed, and everything queued has gone out in earlier polls, which the client
        // acknowledged by making this one: only now the close packet. Sent with events,
        // the official client would act on the close before it has handled them, and
        // reconnect with an offset older than what it then receives (duplicates on
        // recovery).
        socket.close_sent.store(true, Ordering::Release);
        return text("1".to_owned());
    }
    let mut body = String::with_capacity(frames.iter().map(|f| f.polling_len() + 1).sum());
    for frame in &frames {
        if !body.is_empty() {
            body.push(SEPARATOR);
        }
        match frame {
            Frame::Text(t) => body.push_str(t.as_str()),
            Frame::Binary(b) => encode_binary_into(b, &mut body),
        }
    }
    text(body)
}

/// The client's packets.
pub(crate) async fn post<H: Handler, B>(
    engine: &Engine<H>,
    session: Arc<Session<H>>,
    req: Request<B>,
) -> Response<Full<Bytes>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let socket = &session.socket;
    if socket.polling_post.swap(true, Ordering::AcqRel) {
        socket.close(CloseReason::TransportError);
        return crate::ProtocolError::BadRequest.response();
    }
    let max = engine.inner.config.max_payload;
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > max);
    let body = if too_large {
        None
    } else {
        // A body that trickles in is cut off, like one that is too large.
        tokio::time::timeout(
            engine.inner.config.body_read_timeout,
            Limited::new(req.into_body(), max).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
    };
    let res = match body {
        None => {
            socket.close(CloseReason::TransportError);
            status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Some(bytes) => match std::str::from_utf8(&bytes) {
            Err(_) => {
                socket.close(CloseReason::ParseError);
                crate::ProtocolError::BadRequest.response()
            }
            Ok(body) => {
                let _guard = session.inbound.lock().await;
                let mut ok = true;
                for item in decode_payload(body) {
                    match item {
                        Ok(PayloadItem::Packet(p)) => {
                            ok = dispatch(&engine.inner, &session, Ok(p));
                        }
                        Ok(PayloadItem::Binary(b)) => {
                            if socket.is_closed() {
                                break;
                            }
                            engine
                                .inner
                                .handler
                                .on_message(&session.conn, Message::Binary(Bytes::from(b)))
                        }
                        Err(_) => {
                            socket.close(CloseReason::ParseError);
                            ok = false;
                        }
                    }
                    if !ok {
                        break;
                    }
                }
                if ok || socket.close_reason() == Some(CloseReason::TransportClose) {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
                    r
                } else {
                    crate::ProtocolError::BadRequest.response()
                }
            }
        },
    };
    socket.polling_post.store(false, Ordering::Release);
    res
}
