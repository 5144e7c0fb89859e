//! The two transports. Each one moves frames between a session's outbox and the wire,
//! and hands what arrives to [`dispatch`].
pub(crate) mod buffers;
pub(crate) mod frame;
pub(crate) mod polling;
pub(crate) mod ws;

use tether_proto::engine::Packet;

use crate::engine::{Handler, Inner, Message, Session};
use crate::CloseReason;

/// Handles one text packet from a client. Returns `false` if the session must close.
pub(crate) fn dispatch_text<H: Handler>(
    inner: &Inner<H>,
    session: &Session<H>,
    text: &str,
) -> bool {
    dispatch(inner, session, Packet::decode(text))
}

/// Handles one decoded packet. Returns `false` if the session must close.
pub(crate) fn dispatch<H: Handler>(
    inner: &Inner<H>,
    session: &Session<H>,
    packet: Result<Packet<'_>, tether_proto::Error>,
) -> bool {
    if session.socket.is_closed() {
        return false;
    }
    match packet {
        Ok(Packet::Message(m)) => {
            inner.handler.on_message(&session.conn, Message::Text(m));
            true
        }
        Ok(Packet::Pong(_)) => {
            session.socket.on_pong();
            true
        }
        Ok(Packet::Close) => {
            session.socket.close(CloseReason::TransportClose);
            false
        }
        Ok(Packet::Ping(_) | Packet::Noop | Packet::Upgrade | Packet::Open(_)) => true,
        Err(_) => {
            session.socket.close(CloseReason::ParseError);
            false
        }
    }
}
