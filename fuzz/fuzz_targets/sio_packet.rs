//! Socket.IO v5 codec: `Packet::decode` on arbitrary text, the encode/decode round trip,
//! and `count_placeholders` on the decoded data.
//!
//! Properties: nothing panics; for every packet that decodes, decoding its encoding gives
//! an equal packet, and encoding is stable from then on; `count_placeholders` agrees with
//! itself when the attachment limit is raised.
//!
//! With the `lenient_floats` feature, floats may drift by a few ULPs in the round trip (see
//! fuzz/README.md: serde_json's default float parsing is not correctly rounded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::sio::{count_placeholders, decode_header, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // The header splitter is public and used on its own by the server.
    let _ = decode_header(s);

    let Ok(p) = Packet::decode(s) else {
        return;
    };

    let encoded = p.encode();
    let again = match Packet::decode(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("{s:?} decoded, but its encoding {encoded:?} does not: {e}"),
    };
    assert_round_trip(s, &encoded, &p, &again);

    if let Some(data) = &p.data {
        let limited = count_placeholders(data, p.attachments);
        let unlimited = count_placeholders(data, usize::MAX);
        if let Ok(n) = limited {
            assert_eq!(unlimited, Ok(n));
        }
    }
    let _ = p.event_name();
});

#[cfg(not(feature = "lenient_floats"))]
fn assert_round_trip(s: &str, encoded: &str, p: &Packet, again: &Packet) {
    assert_eq!(again, p, "round trip of {s:?} via {encoded:?}");
    assert_eq!(again.encode(), encoded, "encoding of {s:?} is not stable");
}

#[cfg(feature = "lenient_floats")]
fn assert_round_trip(s: &str, encoded: &str, p: &Packet, again: &Packet) {
    use serde_json::Value;

    /// serde_json's best-effort parsing was seen 2 ULPs off; leave some margin.
    const MAX_ULPS: u64 = 4;

    fn close(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x == y
                    || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= MAX_ULPS)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            _ => a == b,
        }
    }

    let same_data = match (&p.data, &again.data) {
        (Some(a), Some(b)) => close(a, b),
        (a, b) => a == b,
    };
    assert!(
        again.ty == p.ty
            && again.nsp == p.nsp
            && again.id == p.id
            && again.attachments == p.attachments
            && same_data,
        "round trip of {s:?} via {encoded:?}: {p:?} != {again:?}"
    );
}
