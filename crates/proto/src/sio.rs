//! Socket.IO v5 packets.
//!
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, for example
//! `2["hello",1]`, `2/chat,7["hello"]`, `51-["file",{"_placeholder":true,"num":0}]`.
//! The attachments of a binary packet follow it as binary Engine.IO messages; in the JSON
//! data each one is a placeholder `{"_placeholder":true,"num":N}`.

use serde_json::Value;

use crate::Error;

/// Event names that a peer may not send, because the API uses them.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The seven Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: connect to a namespace (client) or accept it (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: the answer to an event that asked for one.
    Ack,
    /// `4`: the server refused a namespace connection.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl PacketType {
    fn from_char(c: char) -> Result<Self, Error> {
        Ok(match c {
            '0' => Self::Connect,
            '1' => Self::Disconnect,
            '2' => Self::Event,
            '3' => Self::Ack,
            '4' => Self::ConnectError,
            '5' => Self::BinaryEvent,
            '6' => Self::BinaryAck,
            other => return Err(Error::UnknownType(other)),
        })
    }

    /// The type's digit on the wire.
    pub fn as_char(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    /// Whether attachments follow a packet of this type.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// One decoded Socket.IO packet (its binary attachments travel separately).
///
/// `N` holds the namespace: a `String`, or a `&str` borrowed from the text that
/// [`Packet::decode_borrowed`] decoded (a server reads every packet that way, with no
/// allocation for the namespace).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet<N = String> {
    /// The packet type.
    pub ty: PacketType,
    /// The namespace, `/` by default.
    pub nsp: N,
    /// The ack id, if the sender wants an answer (events) or answers (acks).
    pub id: Option<u64>,
    /// How many binary attachments follow (binary types only).
    pub attachments: usize,
    /// The JSON data.
    pub data: Option<Value>,
}

impl Packet {
    /// A packet of the given type on a namespace, without data.
    pub fn new(ty: PacketType, nsp: impl Into<String>) -> Self {
        Packet {
            ty,
            nsp: nsp.into(),
            id: None,
            attachments: 0,
            data: None,
        }
    }

    /// Decodes and validates one packet.
    pub fn decode(s: &str) -> Result<Self, Error> {
        Packet::decode_borrowed(s).map(Packet::into_owned)
    }

    /// Encodes the packet's text part.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode_header_into(&mut out, self.ty, self.attachments, &self.nsp, self.id);
        if let Some(data) = &self.data {
            crate::json::write_value(&mut out, data);
        }
        out
    }

    /// The event name, for event packets whose first element is a string.
    pub fn event_name(&self) -> Option<&str> {
        match (&self.ty, &self.data) {
            (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(a))) => {
                a.first().and_then(Value::as_str)
            }
            _ => None,
        }
    }
}

impl<'a> Packet<&'a str> {
    /// Decodes and validates one packet, its namespace borrowed from `s`.
    ///
    /// ```
    /// use tether_proto::sio::Packet;
    /// let p = Packet::decode_borrowed(r#"2/chat,7["hi"]"#).unwrap();
    /// assert_eq!((p.nsp, p.id), ("/chat", Some(7)));
    /// assert_eq!(p.into_owned(), Packet::decode(r#"2/chat,7["hi"]"#).unwrap());
    /// ```
    pub fn decode_borrowed(s: &'a str) -> Result<Self, Error> {
        let (ty, attachments, nsp, id, rest) = decode_header(s)?;
        let data = if rest.is_empty() {
            None
        } else {
            Some(crate::json::from_str(rest)?)
        };
        validate(ty, data.as_ref())?;
        Ok(Packet {
            ty,
            nsp,
            id,
            attachments,
            data,
        })
    }

    /// The packet with a namespace of its own.
    pub fn into_owned(self) -> Packet {
        Packet {
            ty: self.ty,
            nsp: self.nsp.to_owned(),
            id: self.id,
            attachments: self.attachments,
            data: self.data,
        }
    }
}

/// Splits the header of a packet: type, attachments, namespace, ack id, and the rest (JSON).
pub fn decode_header(s: &str) -> Result<(PacketType, usize, &str, Option<u64>, &str), Error> {
    let first = s.chars().next().ok_or(Error::Empty)?;
    let ty = PacketType::from_char(first)?;
    let mut rest = &s[1..];
    let mut attachments = 0;
    if ty.is_binary() {
        let dash = rest.find('-').ok_or(Error::BadAttachments)?;
        let digits = &rest[..dash];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::BadAttachments);
        }
        attachments = digits.parse::<usize>().map_err(|_| Error::BadAttachments)?;
        rest = &rest[dash + 1..];
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        nsp = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut id = None;
    if digits > 0 {
        id = Some(rest[..digits].parse::<u64>().map_err(|_| Error::BadAckId)?);
        rest = &rest[digits..];
    }
    Ok((ty, attachments, nsp, id, rest))
}

/// Checks that the data has the shape that the packet type requires.
pub fn validate(ty: PacketType, data: Option<&Value>) -> Result<(), Error> {
    let ok = match ty {
        PacketType::Connect => matches!(data, None | Some(Value::Object(_))),
        PacketType::Disconnect => data.is_none(),
        PacketType::ConnectError => matches!(data, Some(Value::Object(_) | Value::String(_))),
        PacketType::Event | PacketType::BinaryEvent => match data {
            Some(Value::Array(a)) => match a.first() {
                Some(Value::Number(_)) => true,
                Some(Value::String(s)) => !RESERVED_EVENTS.contains(&s.as_str()),
                _ => false,
            },
            _ => false,
        },
        PacketType::Ack | PacketType::BinaryAck => matches!(data, Some(Value::Array(_))),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadPayload)
    }
}

/// Appends a packet header (everything before the JSON data) to `out`.
pub fn encode_header_into(
    out: &mut String,
    ty: PacketType,
    attachments: usize,
    nsp: &str,
    id: Option<u64>,
) {
    out.push(ty.as_char());
    // itoa rather than `write!`: the formatting machinery is a measurable share of an
    // echo's encode (every acknowledgement carries an id).
    let mut digits = itoa::Buffer::new();
    if ty.is_binary() {
        out.push_str(digits.format(attachments));
        out.push('-');
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        out.push_str(digits.format(id));
    }
}

/// The placeholder that stands for attachment `num` in a binary packet's data.
pub fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

/// If `v` is an attachment placeholder, its attachment number.
pub fn as_placeholder(v: &Value) -> Option<usize> {
    let obj = v.as_object()?;
    if obj.get("_placeholder")?.as_bool()? {
        usize::try_from(obj.get("num")?.as_u64()?).ok()
    } else {
        None
    }
}

/// Counts the placeholders in `v`, and checks that each one names an attachment below `max`.
pub fn count_placeholders(v: &Value, max: usize) -> Result<usize, Error> {
    match v {
        Value::Array(a) => a
            .iter()
            .try_fold(0, |n, x| Ok(n + count_placeholders(x, max)?)),
        Value::Object(o) => {
            if let Some(num) = as_placeholder(v) {
                if num < max {
                    Ok(1)
                } else {
                    Err(Error::BadAttachments)
                }
            } else {
                o.values()
                    .try_fold(0, |n, x| Ok(n + count_placeholders(x, max)?))
            }
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(s: &str) {
        let p = Packet::decode(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(p.encode(), s);
    }

    #[test]
    fn round_trips() {
        rt("0");
        rt(r#"0{"token":"x"}"#);
        rt(r#"0/admin,{"sid":"abc"}"#);
        rt("1");
        rt("1/admin,");
        rt(r#"2["hello",1]"#);
        rt(r#"2/admin,12["a",{"b":[1,2]}]"#);
        rt(r#"3/admin,12["ok"]"#);
        rt(r#"4{"message":"denied"}"#);
        rt(r#"51-["f",{"_placeholder":true,"num":0}]"#);
        rt(r#"62-/a,9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
        rt(r#"2[42]"#);
        rt(r#"2["s","\ud83d"]"#);
    }

    #[test]
    fn fields() {
        let p = Packet::decode(r#"52-/x,3["a",{"_placeholder":true,"num":1}]"#).unwrap();
        assert_eq!(p.ty, PacketType::BinaryEvent);
        assert_eq!(p.attachments, 2);
        assert_eq!(p.nsp, "/x");
        assert_eq!(p.id, Some(3));
        assert_eq!(p.event_name(), Some("a"));
        assert_eq!(count_placeholders(p.data.as_ref().unwrap(), 2), Ok(1));
        assert_eq!(
            count_placeholders(p.data.as_ref().unwrap(), 1),
            Err(Error::BadAttachments)
        );
        let p = Packet::decode("1/x").unwrap();
        assert_eq!(p.nsp, "/x");
        assert_eq!(p.data, None);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[(&str, Error)] = &[
            ("", Error::Empty),
            ("7", Error::UnknownType('7')),
            ("a", Error::UnknownType('a')),
            ("2", Error::BadPayload),
            ("2{}", Error::BadPayload),
            ("2[]", Error::BadPayload),
            ("2[{}]", Error::BadPayload),
            (r#"2["disconnect"]"#, Error::BadPayload),
            (r#"2["connect"]"#, Error::BadPayload),
            ("2[\"a\"", Error::BadJson),
            ("2[\"a\"]]", Error::BadJson),
            ("0[]", Error::BadPayload),
            ("0\"s\"", Error::BadPayload),
            ("1{}", Error::BadPayload),
            ("3", Error::BadPayload),
            ("3{}", Error::BadPayload),
            ("4", Error::BadPayload),
            ("4[1]", Error::BadPayload),
            ("5[\"a\"]", Error::BadAttachments),
            ("5-[\"a\"]", Error::BadAttachments),
            ("5x-[\"a\"]", Error::BadAttachments),
            ("599999999999999999999999-[\"a\"]", Error::BadAttachments),
            ("2999999999999999999999[\"a\"]", Error::BadAckId),
            ("2/a,x", Error::BadJson),
        ];
        for (s, e) in cases {
            assert_eq!(Packet::decode(s).as_ref().err(), Some(e), "{s}");
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_unicode() {
        let samples = [
            r#"52-/é,3["a",{"_placeholder":true,"num":1}]"#,
            "0/ü,{\"a\":\"€\"}",
            "2/,[\"a\"]",
        ];
        for s in samples {
            for (i, _) in s.char_indices() {
                let _ = Packet::decode(&s[..i]);
                let _ = Packet::decode(&s[i..]);
            }
        }
    }

    #[test]
    fn placeholders() {
        assert_eq!(as_placeholder(&placeholder(3)), Some(3));
        assert_eq!(
            as_placeholder(&json!({"_placeholder": false, "num": 1})),
            None
        );
        assert_eq!(as_placeholder(&json!({"num": 1})), None);
    }
}
