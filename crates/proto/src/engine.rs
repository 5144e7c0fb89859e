//! Engine.IO v4 packets.
//!
//! A packet is one type digit followed by its data: `4hello` is a message, `2` a ping,
//! `2probe` the ping of a WebSocket upgrade probe. Binary messages travel as binary
//! WebSocket frames, or over HTTP long-polling as `b` followed by base64.
//! Over polling, packets are joined with the record separator `\x1e`.
//!
//! ```
//! use tether_proto::engine::{Packet, decode_payload, PayloadItem};
//! assert_eq!(Packet::decode("4hi").unwrap(), Packet::Message("hi"));
//! let items: Vec<_> = decode_payload("4a\x1ebAQI=").collect::<Result<_, _>>().unwrap();
//! assert_eq!(items[0], PayloadItem::Packet(Packet::Message("a")));
//! assert_eq!(items[1], PayloadItem::Binary(vec![1, 2]));
//! ```

use base64::Engine as _;

use crate::Error;

/// The record separator that joins packets in a long-polling payload.
pub const SEPARATOR: char = '\x1e';

/// One text Engine.IO packet, borrowing its data from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0`: the handshake, with its JSON data.
    Open(&'a str),
    /// `1`: the transport is closing.
    Close,
    /// `2`: a ping, with optional data (`probe` during an upgrade).
    Ping(&'a str),
    /// `3`: a pong, echoing the ping's data.
    Pong(&'a str),
    /// `4`: a text message for the layer above.
    Message(&'a str),
    /// `5`: completes an upgrade.
    Upgrade,
    /// `6`: does nothing; used to end a pending poll during an upgrade.
    Noop,
}

impl<'a> Packet<'a> {
    /// Decodes one text packet.
    pub fn decode(s: &'a str) -> Result<Self, Error> {
        let mut chars = s.chars();
        let ty = chars.next().ok_or(Error::Empty)?;
        let data = &s[ty.len_utf8()..];
        Ok(match ty {
            '0' => Packet::Open(data),
            '1' => Packet::Close,
            '2' => Packet::Ping(data),
            '3' => Packet::Pong(data),
            '4' => Packet::Message(data),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            other => return Err(Error::UnknownType(other)),
        })
    }

    /// The packet's type digit.
    pub fn type_char(&self) -> char {
        match self {
            Packet::Open(_) => '0',
            Packet::Close => '1',
            Packet::Ping(_) => '2',
            Packet::Pong(_) => '3',
            Packet::Message(_) => '4',
            Packet::Upgrade => '5',
            Packet::Noop => '6',
        }
    }

    /// Appends the encoded packet to `out`.
    pub fn encode_into(&self, out: &mut String) {
        out.push(self.type_char());
        match self {
            Packet::Open(d) | Packet::Ping(d) | Packet::Pong(d) | Packet::Message(d) => {
                out.push_str(d)
            }
            Packet::Close | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Encodes the packet.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        self.encode_into(&mut s);
        s
    }
}

/// One item of a long-polling payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadItem<'a> {
    /// A text packet.
    Packet(Packet<'a>),
    /// A binary message (`b` + base64 on the wire).
    Binary(Vec<u8>),
}

/// Splits a long-polling payload into its packets.
pub fn decode_payload(body: &str) -> impl Iterator<Item = Result<PayloadItem<'_>, Error>> {
    body.split(SEPARATOR).map(|part| {
        if let Some(b64) = part.strip_prefix('b') {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(PayloadItem::Binary)
                .map_err(|_| Error::BadBase64)
        } else {
            Packet::decode(part).map(PayloadItem::Packet)
        }
    })
}

/// Appends a binary message to a long-polling payload under construction.
pub fn encode_binary_into(bytes: &[u8], out: &mut String) {
    out.push('b');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        for p in [
            Packet::Open(r#"{"sid":"x"}"#),
            Packet::Close,
            Packet::Ping(""),
            Packet::Ping("probe"),
            Packet::Pong("probe"),
            Packet::Message("héllo"),
            Packet::Upgrade,
            Packet::Noop,
        ] {
            let s = p.encode();
            assert_eq!(Packet::decode(&s).unwrap(), p);
        }
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(Packet::decode(""), Err(Error::Empty));
        assert_eq!(Packet::decode("9"), Err(Error::UnknownType('9')));
        assert_eq!(Packet::decode("é"), Err(Error::UnknownType('é')));
        let items: Vec<_> = decode_payload("b!!!").collect();
        assert_eq!(items, vec![Err(Error::BadBase64)]);
        let items: Vec<_> = decode_payload("4a\x1e\x1e").collect();
        assert_eq!(items[1], Err(Error::Empty));
    }

    #[test]
    fn payload_round_trip() {
        let mut s = String::new();
        Packet::Message("a").encode_into(&mut s);
        s.push(SEPARATOR);
        encode_binary_into(&[0, 255, 7], &mut s);
        let items: Vec<_> = decode_payload(&s).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            items,
            vec![
                PayloadItem::Packet(Packet::Message("a")),
                PayloadItem::Binary(vec![0, 255, 7])
            ]
        );
    }
}
