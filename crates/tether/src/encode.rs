//! Encoding of outgoing packets straight into an Engine.IO message buffer.

use serde_json::Value;
use tether_engine::TextMessage;
use tether_proto::sio::{encode_header_into, PacketType};

use crate::Payload;

/// An EVENT (or BINARY_EVENT) with `[event, ...args, offset?]`.
pub(crate) fn event(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    payload: &Payload,
    offset: Option<&str>,
) -> TextMessage {
    event_args(
        nsp,
        id,
        event,
        &payload.args,
        payload.attachments.len(),
        offset,
    )
}

/// An EVENT from its parts: `attachments` binary parts follow it.
pub(crate) fn event_args(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: usize,
    offset: Option<&str>,
) -> TextMessage {
    let mut buf = TextMessage::buffer();
    let ty = if attachments == 0 {
        PacketType::Event
    } else {
        PacketType::BinaryEvent
    };
    encode_header_into(&mut buf, ty, attachments, nsp, id);
    buf.push('[');
    write_str(&mut buf, event);
    for a in args {
        buf.push(',');
        tether_proto::json::write_value(&mut buf, a);
    }
    if let Some(o) = offset {
        buf.push(',');
        write_str(&mut buf, o);
    }
    buf.push(']');
    TextMessage::from_buffer(buf)
}

/// An ACK (or BINARY_ACK).
pub(crate) fn ack(nsp: &str, id: u64, payload: &Payload) -> TextMessage {
    let mut buf = TextMessage::buffer();
    let ty = if payload.attachments.is_empty() {
        PacketType::Ack
    } else {
        PacketType::BinaryAck
    };
    encode_header_into(&mut buf, ty, payload.attachments.len(), nsp, Some(id));
    buf.push('[');
    for (i, a) in payload.args.iter().enumerate() {
        if i > 0 {
            buf.push(',');
        }
        tether_proto::json::write_value(&mut buf, a);
    }
    buf.push(']');
    TextMessage::from_buffer(buf)
}

/// A packet with JSON data (CONNECT, CONNECT_ERROR) or none (DISCONNECT).
pub(crate) fn simple(ty: PacketType, nsp: &str, data: Option<&Value>) -> TextMessage {
    let mut buf = TextMessage::buffer();
    encode_header_into(&mut buf, ty, 0, nsp, None);
    if let Some(d) = data {
        tether_proto::json::write_value(&mut buf, d);
    }
    TextMessage::from_buffer(buf)
}

fn write_str(buf: &mut String, s: &str) {
    tether_proto::json::write_str(buf, s);
}

/// A payload's binary attachments, shared by every recipient.
pub(crate) fn attachments(payload: &Payload) -> Option<std::sync::Arc<[bytes::Bytes]>> {
    (!payload.attachments.is_empty()).then(|| std::sync::Arc::from(payload.attachments.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_and_acks() {
        let p = Payload::from_args(vec![json!("x"), json!({"a":1})]);
        assert_eq!(
            event("/", None, "ev", &p, None).payload(),
            r#"2["ev","x",{"a":1}]"#
        );
        assert_eq!(
            event("/n", Some(3), "ev", &p, Some("o1")).payload(),
            r#"2/n,3["ev","x",{"a":1},"o1"]"#
        );
        let b = Payload::new().binary(vec![1u8]);
        assert_eq!(
            event("/", None, "f", &b, Some("o")).payload(),
            r#"51-["f",{"_placeholder":true,"num":0},"o"]"#
        );
        assert_eq!(ack("/", 7, &p).payload(), r#"37["x",{"a":1}]"#);
        assert_eq!(
            ack("/a", 7, &b).payload(),
            r#"61-/a,7[{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(
            simple(PacketType::Connect, "/", Some(&json!({"sid":"s"}))).payload(),
            r#"0{"sid":"s"}"#
        );
        assert_eq!(simple(PacketType::Disconnect, "/a", None).payload(), "1/a,");
    }
}
