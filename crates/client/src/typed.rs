//! Typed arguments: any `T: Serialize` as the arguments of an emit, and the arguments of
//! an event or an ack deserialized into the user's types.
//!
//! The rule for emits: a Rust **tuple** is several arguments (`(1, "a")` is two, `()` is
//! none); anything else is **one** argument (a `Vec` or a slice is one array, a struct one
//! object). serde serializes fixed-size arrays (`[T; N]`) as tuples: several arguments.

use serde::de::DeserializeOwned;
use serde::ser::{Impossible, Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Payload, Result};

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
    let shape = match args.serialize(Probe) {
        Err(Found(s)) => s,
        Ok(()) => Shape::One,
    };
    let value = serde_json::to_value(args).map_err(|e| Error::serde("the emit's arguments", e))?;
    let args = match (shape, value) {
        (Shape::None, _) => Vec::new(),
        (Shape::Tuple, Value::Array(a)) => a,
        (_, v) => vec![v],
    };
    Ok(Payload::from_args(args))
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
    T::deserialize(Value::Array(p.args.clone())).map_err(|e| Error::serde("the arguments", e))
}

/// Deserializes argument `i` of a payload into `T`.
pub(crate) fn arg_of<T: DeserializeOwned>(p: &Payload, i: usize, what: &str) -> Result<T> {
    let v = p.args.get(i).unwrap_or(&Value::Null);
    T::deserialize(v).map_err(|e| Error::serde(&format!("argument {i} of {what}"), e))
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    None,
    Tuple,
    One,
}

/// What [`Probe`] found at the top level.
#[derive(Debug)]
struct Found(Shape);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Found {}

impl serde::ser::Error for Found {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Found(Shape::One)
    }
}

/// A serializer that only looks at the top-level shape of a value.
struct Probe;

macro_rules! one {
    ($($f:ident($($t:ty),*)),* $(,)?) => {
        $(fn $f(self, $(_: $t),*) -> Result<(), Found> { Err(Found(Shape::One)) })*
    };
}

impl Serializer for Probe {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Impossible<(), Found>;
    type SerializeTuple = Impossible<(), Found>;
    type SerializeTupleStruct = Impossible<(), Found>;
    type SerializeTupleVariant = Impossible<(), Found>;
    type SerializeMap = Impossible<(), Found>;
    type SerializeStruct = Impossible<(), Found>;
    type SerializeStructVariant = Impossible<(), Found>;

    one!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_unit(self) -> Result<(), Found> {
        Err(Found(Shape::None))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Found> {
        Err(Found(Shape::One))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Found> {
        Err(Found(Shape::One))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Found> {
        Err(Found(Shape::One))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Found> {
        Err(Found(Shape::One))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Found> {
        Err(Found(Shape::Tuple))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Found> {
        Err(Found(Shape::One))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Found> {
        Err(Found(Shape::One))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Found> {
        Err(Found(Shape::One))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Found> {
        Err(Found(Shape::One))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Found> {
        Err(Found(Shape::One))
    }
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
