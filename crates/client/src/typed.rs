//! Typed arguments: any `T: Serialize` as the arguments of an emit, and the arguments of
//! an event or an ack deserialized into the user's types.
//!
//! The rule for emits: a Rust **tuple** is several arguments (`(1, "a")` is two, `()` is
//! none); anything else is **one** argument (a `Vec` or a slice is one array, a struct one
//! object). serde serializes fixed-size arrays (`[T; N]`) as tuples: several arguments.
//!
//! Binary data anywhere in the structure is a [`Binary`]: it travels as an attachment,
//! with its placeholder where it stands, both ways.

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{DeserializeOwned, Deserializer};
use serde::ser::{Serialize, SerializeStruct as _, Serializer};
use serde::Deserialize;
use serde_json::Value;

use tether_proto::{Payload, Shape};

use crate::error::{Error, Result};

/// Binary data inside typed arguments ([`to_payload`], [`from_payload`],
/// [`Client::emit_serde`](crate::Client::emit_serde), [`Event::arg_as`](crate::Event::arg_as)...):
/// at any depth of a struct, a tuple or a `Vec`, it is sent as a binary attachment, and an
/// attachment received is read back into it. (A `Vec<u8>` or a `Bytes` field is not: serde
/// makes it an array of numbers.)
///
/// ```
/// # use tether_client::{from_payload, to_payload, Binary};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Upload { name: String, parts: Vec<Binary> }
/// let up = Upload { name: "a.bin".into(), parts: vec![Binary::from(vec![1u8, 2]), Binary::from(vec![3u8])] };
/// let p = to_payload(&up).unwrap();
/// assert_eq!(p.attachments.len(), 2);
/// assert_eq!(p.args[0]["parts"][1], serde_json::json!({"_placeholder": true, "num": 1}));
/// let (back,): (Upload,) = from_payload(&p).unwrap();
/// assert_eq!(back.parts[1].as_ref(), &[3]);
/// ```
///
/// Outside of these functions (for example with `serde_json::to_value`), it serializes as
/// bytes, and deserializes from a placeholder only where attachments are known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Binary(pub Bytes);

impl From<Vec<u8>> for Binary {
    fn from(v: Vec<u8>) -> Self {
        Binary(v.into())
    }
}

impl From<Bytes> for Binary {
    fn from(b: Bytes) -> Self {
        Binary(b)
    }
}

impl AsRef<[u8]> for Binary {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

thread_local! {
    /// Attachments collected while [`to_payload`] serializes.
    static OUTGOING: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
    /// Attachments of the payload [`from_payload`] deserializes.
    static INCOMING: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
}

/// Sets a thread-local for the duration of a call, and puts the previous value back.
fn with_slot<R>(
    slot: &'static std::thread::LocalKey<RefCell<Option<Vec<Bytes>>>>,
    value: Vec<Bytes>,
    f: impl FnOnce() -> R,
) -> (R, Vec<Bytes>) {
    struct Restore(
        &'static std::thread::LocalKey<RefCell<Option<Vec<Bytes>>>>,
        Option<Vec<Bytes>>,
    );
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.1.take();
            self.0.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = slot.with(|s| s.borrow_mut().replace(value));
    let guard = Restore(slot, prev);
    let r = f();
    let value = slot.with(|s| s.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    (r, value)
}

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let num = OUTGOING.with(|o| {
            o.borrow_mut().as_mut().map(|v| {
                v.push(self.0.clone());
                v.len() - 1
            })
        });
        match num {
            Some(n) => {
                let mut m = s.serialize_struct("Placeholder", 2)?;
                m.serialize_field("_placeholder", &true)?;
                m.serialize_field("num", &n)?;
                m.end()
            }
            None => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Value::deserialize(d)?;
        if let Some(n) = tether_proto::sio::as_placeholder(&v) {
            return INCOMING
                .with(|i| i.borrow().as_ref().and_then(|a| a.get(n).cloned()))
                .map(Binary)
                .ok_or_else(|| D::Error::custom(format!("no binary attachment {n}")));
        }
        match v {
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect::<Option<Vec<u8>>>()
                .map(Binary::from)
                .ok_or_else(|| D::Error::custom("expected binary data")),
            other => Err(D::Error::custom(format!(
                "expected binary data, found {other}"
            ))),
        }
    }
}

/// The arguments of an emit from any serializable value: a tuple gives one argument per
/// element, `()` none, anything else one argument.
///
/// ```
/// # use tether_client::{to_payload, json};
/// #[derive(serde::Serialize)]
/// struct Msg { text: &'static str }
/// assert_eq!(to_payload(&(1, "two")).unwrap().args, vec![json!(1), json!("two")]);
/// assert_eq!(to_payload(&vec![1, 2]).unwrap().args, vec![json!([1, 2])]);
/// assert_eq!(to_payload(&Msg { text: "hi" }).unwrap().args, vec![json!({"text": "hi"})]);
/// assert!(to_payload(&()).unwrap().args.is_empty());
/// ```
pub fn to_payload<T: Serialize + ?Sized>(args: &T) -> Result<Payload> {
    let shape = tether_proto::shape_of(args);
    let (value, attachments) = with_slot(&OUTGOING, Vec::new(), || serde_json::to_value(args));
    let value = value.map_err(|e| Error::serde("the emit's arguments", e))?;
    let args = match (shape, value) {
        (Shape::Unit, _) => Vec::new(),
        (Shape::Tuple, Value::Array(a)) => a,
        (_, v) => vec![v],
    };
    Ok(Payload { args, attachments })
}

/// Deserializes a whole argument list (of an event or an ack) into `T`: a tuple, a `Vec`,
/// or a tuple struct.
///
/// ```
/// # use tether_client::{from_payload, to_payload};
/// let p = to_payload(&(7, "x")).unwrap();
/// let (n, s): (u32, String) = from_payload(&p).unwrap();
/// assert_eq!((n, s.as_str()), (7, "x"));
/// let e = from_payload::<(String,)>(&p).unwrap_err();
/// assert!(e.is_serde(), "{e}");
/// ```
pub fn from_payload<T: DeserializeOwned>(p: &Payload) -> Result<T> {
    with_slot(&INCOMING, p.attachments.clone(), || {
        T::deserialize(Value::Array(p.args.clone()))
    })
    .0
    .map_err(|e| Error::serde("the arguments", e))
}

/// Deserializes argument `i` of a payload into `T`.
pub(crate) fn arg_of<T: DeserializeOwned>(p: &Payload, i: usize, what: &str) -> Result<T> {
    let v = p.args.get(i).unwrap_or(&Value::Null);
    with_slot(&INCOMING, p.attachments.clone(), || T::deserialize(v))
        .0
        .map_err(|e| Error::serde(&format!("argument {i} of {what}"), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        assert_eq!(to_payload(&(1,)).unwrap().args, vec![json!(1)]);
        // serde serializes fixed-size arrays as tuples: several arguments; a slice is one.
        assert_eq!(to_payload(&[1, 2]).unwrap().args, vec![json!(1), json!(2)]);
        assert_eq!(to_payload(&[1, 2][..]).unwrap().args, vec![json!([1, 2])]);
        assert_eq!(to_payload(&"s").unwrap().args, vec![json!("s")]);
        assert_eq!(to_payload(&Some(3)).unwrap().args, vec![json!(3)]);
        assert_eq!(to_payload(&None::<u8>).unwrap().args, vec![json!(null)]);
        assert_eq!(
            to_payload(&((1, 2), json!({"a": 1}))).unwrap().args,
            vec![json!([1, 2]), json!({"a": 1})]
        );
        let mut m = std::collections::HashMap::new();
        m.insert(1, 2);
        // A map with non-string keys is not JSON: a clear error.
        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1], 2);
        let e = to_payload(&bad).unwrap_err();
        assert!(
            e.is_serde() && e.to_string().contains("the emit's arguments"),
            "{e}"
        );
        assert_eq!(to_payload(&m).unwrap().args, vec![json!({"1": 2})]);
    }

    #[test]
    fn arguments_deserialize_with_context() {
        let p = Payload::from_args(vec![json!(1), json!({"x": "y"})]);
        let n: u8 = arg_of(&p, 0, "event \"e\"").unwrap();
        assert_eq!(n, 1);
        let e = arg_of::<u8>(&p, 1, "event \"e\"").unwrap_err();
        assert!(
            e.to_string().starts_with("argument 1 of event \"e\""),
            "{e}"
        );
        let missing: Option<u8> = arg_of(&p, 5, "x").unwrap();
        assert_eq!(missing, None);
    }
}
