//! [`IntoPayload`]: what `emit` and acknowledgements accept.

use serde::ser::{Impossible, Serialize, Serializer};
use serde_json::Value;

use crate::Payload;

/// What can be sent as the arguments of an event or an acknowledgement: a [`Payload`]
/// (for binary attachments), or any `T: Serialize`:
///
/// - a tuple is several arguments: `("a", 1)` sends `"a", 1`;
/// - `()` is no argument (a `null` is one);
/// - anything else is one argument (a `Vec` or a JSON array stays one argument).
///
/// Serialization errors are returned, never turned into `null`.
///
/// ```
/// use tether_proto::{IntoPayload, Payload};
/// use serde_json::json;
///
/// assert_eq!(("a", 1).into_payload().unwrap().args, vec![json!("a"), json!(1)]);
/// assert_eq!(vec![1, 2].into_payload().unwrap().args, vec![json!([1, 2])]);
/// assert!(().into_payload().unwrap().args.is_empty());
/// let bin = Payload::new().binary(vec![1u8]);
/// assert_eq!(bin.clone().into_payload().unwrap(), bin);
///
/// // A map with non-string keys does not serialize to JSON: an error, not `null`.
/// let bad: std::collections::HashMap<Vec<u8>, u8> = [(vec![1], 1)].into();
/// assert!(bad.into_payload().is_err());
/// ```
pub trait IntoPayload {
    /// The arguments, or the serialization's error.
    fn into_payload(self) -> Result<Payload, serde_json::Error>;
}

impl IntoPayload for Payload {
    fn into_payload(self) -> Result<Payload, serde_json::Error> {
        Ok(self)
    }
}

impl<T: Serialize> IntoPayload for T {
    fn into_payload(self) -> Result<Payload, serde_json::Error> {
        let shape = match shape_of(&self) {
            // `()` itself, not a `null` (`Value::Null` serializes as a unit too).
            Shape::Unit if std::mem::size_of::<T>() != 0 => Shape::One,
            shape => shape,
        };
        let args = match (shape, serde_json::to_value(&self)?) {
            (Shape::Tuple, Value::Array(args)) => args,
            (Shape::Unit, Value::Null) => Vec::new(),
            (_, v) => vec![v],
        };
        Ok(Payload::from_args(args))
    }
}

/// The top-level shape of a value, found without serializing it: every method of
/// the serializer stops at once. How the server's [`IntoPayload`] and the client's
/// `to_payload` tell several arguments (a tuple) and none (a unit) from one.
///
/// ```
/// use tether_proto::{shape_of, Shape};
/// assert_eq!(shape_of(&(1, "a")), Shape::Tuple);
/// assert_eq!(shape_of(&()), Shape::Unit);
/// assert_eq!(shape_of(&serde_json::Value::Null), Shape::Unit); // a unit too
/// assert_eq!(shape_of(&vec![1, 2]), Shape::One);
/// ```
pub fn shape_of<T: Serialize + ?Sized>(value: &T) -> Shape {
    match value.serialize(Probe) {
        Err(shape) => shape,
        Ok(()) => Shape::One,
    }
}

/// What [`shape_of`] finds at a value's top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A tuple: one argument per element.
    Tuple,
    /// A unit (`()`, or a `null`).
    Unit,
    /// Anything else: one argument.
    One,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Shape {}

impl serde::ser::Error for Shape {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Shape::One
    }
}

struct Probe;

macro_rules! one {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<(), Shape> { Err(Shape::One) })*
    };
}

impl Serializer for Probe {
    type Ok = ();
    type Error = Shape;
    type SerializeSeq = Impossible<(), Shape>;
    type SerializeTuple = Impossible<(), Shape>;
    type SerializeTupleStruct = Impossible<(), Shape>;
    type SerializeTupleVariant = Impossible<(), Shape>;
    type SerializeMap = Impossible<(), Shape>;
    type SerializeStruct = Impossible<(), Shape>;
    type SerializeStructVariant = Impossible<(), Shape>;

    one!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_unit(self) -> Result<(), Shape> {
        Err(Shape::Unit)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Shape> {
        Err(Shape::One)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Shape> {
        Err(Shape::One)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Shape> {
        Err(Shape::One)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Shape> {
        Err(Shape::One)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Shape> {
        Err(Shape::Tuple)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Shape> {
        Err(Shape::One)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Shape> {
        Err(Shape::One)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Shape> {
        Err(Shape::One)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Shape> {
        Err(Shape::One)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Shape> {
        Err(Shape::One)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Serialize)]
    struct Msg {
        text: &'static str,
    }

    #[test]
    fn shapes() {
        let args = |p: Result<Payload, _>| p.unwrap().args;
        assert_eq!(args("x".into_payload()), vec![json!("x")]);
        assert_eq!(args(json!([1, 2]).into_payload()), vec![json!([1, 2])]);
        assert_eq!(
            args((1, "b", [3]).into_payload()),
            vec![json!(1), json!("b"), json!([3])]
        );
        assert_eq!(args((5,).into_payload()), vec![json!(5)]);
        assert_eq!(
            args(Msg { text: "t" }.into_payload()),
            vec![json!({"text": "t"})]
        );
        assert_eq!(
            args((&Msg { text: "t" }).into_payload()),
            vec![json!({"text": "t"})]
        );
        assert_eq!(args(Some(1).into_payload()), vec![json!(1)]);
        assert_eq!(args(None::<u8>.into_payload()), vec![Value::Null]);
        assert_eq!(args(json!(null).into_payload()), vec![Value::Null]);
        assert_eq!(args(Value::Null.into_payload()), vec![Value::Null]);
        assert!(args(().into_payload()).is_empty());
    }
}
