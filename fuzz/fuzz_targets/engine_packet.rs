//! Engine.IO v4 codec: `Packet::decode` and `decode_payload` on arbitrary text.
//!
//! Properties: neither panics; a decoded packet encodes to text that decodes to the same
//! packet; a decoded payload's items re-encode to a payload that decodes to the same items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::engine::{self, decode_payload, Packet, PayloadItem, SEPARATOR};

fuzz_target!(|data: &[u8]| {
    // Peers only ever hand the codec text (WebSocket text frames, UTF-8 polling bodies).
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(p) = Packet::decode(s) {
        let encoded = p.encode();
        let again = Packet::decode(&encoded).expect("an encoded packet decodes");
        assert_eq!(again, p, "round trip of {s:?} via {encoded:?}");
        assert_eq!(again.encode(), encoded);
    }

    let items: Vec<_> = decode_payload(s).collect();
    if let Ok(items) = items.into_iter().collect::<Result<Vec<_>, _>>() {
        let mut body = String::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(SEPARATOR);
            }
            match item {
                PayloadItem::Packet(p) => p.encode_into(&mut body),
                PayloadItem::Binary(b) => engine::encode_binary_into(b, &mut body),
            }
        }
        let again: Vec<_> = decode_payload(&body)
            .collect::<Result<_, _>>()
            .expect("an encoded payload decodes");
        assert_eq!(again, items, "payload round trip of {s:?} via {body:?}");
    }
});
