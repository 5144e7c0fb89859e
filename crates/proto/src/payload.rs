//! The arguments of an event or an acknowledgement, as the server and the client see them.

use crate::sio;
use bytes::Bytes;
use serde_json::Value;

/// The arguments of an event or of an acknowledgement: JSON values plus binary attachments.
///
/// Binary data travels the Socket.IO way: in `args`, each binary value is a placeholder
/// `{"_placeholder":true,"num":N}` that stands for `attachments[N]`. Placeholders can sit
/// anywhere in the arguments, also nested in objects and arrays; [`Payload::binary`] adds
/// one as a top-level argument, and [`Payload::bytes_of`] resolves one.
///
/// The event name is not part of the payload.
///
/// ```
/// use tether_proto::Payload;
/// use serde_json::json;
///
/// let p = Payload::new().arg(json!({"id": 1})).arg("text").binary(vec![1u8, 2, 3]);
/// assert_eq!(p.args.len(), 3);
/// assert_eq!(p.binary_at(2).unwrap().as_ref(), &[1, 2, 3]);
/// assert_eq!(p.binary_at(0), None);
///
/// // Conversions used by `emit`:
/// let one: Payload = json!([1, 2]).into(); // one argument, an array
/// assert_eq!(one.args, vec![json!([1, 2])]);
/// let two: Payload = vec![json!(1), json!(2)].into(); // two arguments
/// assert_eq!(two.args.len(), 2);
/// let none: Payload = ().into();
/// assert!(none.args.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// The JSON arguments, with placeholders for binary values.
    pub args: Vec<Value>,
    /// The binary attachments that the placeholders refer to.
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arguments without binary parts.
    pub fn from_args(args: Vec<Value>) -> Self {
        Payload {
            args,
            attachments: Vec::new(),
        }
    }

    /// Appends an argument. A value that fails to serialize becomes `null`.
    pub fn arg(mut self, v: impl serde::Serialize) -> Self {
        self.args
            .push(serde_json::to_value(v).unwrap_or(Value::Null));
        self
    }

    /// The first argument, if any.
    pub fn first(&self) -> Option<&Value> {
        self.args.first()
    }

    /// Argument `i` deserialized into `T`; `None` when it is missing or does not fit
    /// (see [`try_get`](Self::try_get) for the reason).
    pub fn get<T: serde::de::DeserializeOwned>(&self, i: usize) -> Option<T> {
        T::deserialize(self.args.get(i)?).ok()
    }

    /// Argument `i` deserialized into `T`, or why not (a missing argument reads as
    /// `null`, so `Option<T>` accepts it).
    ///
    /// ```
    /// use tether_proto::Payload;
    /// let p = Payload::new().arg(1).arg("x");
    /// assert_eq!(p.try_get::<u8>(0).unwrap(), 1);
    /// assert!(p.try_get::<u8>(1).is_err());
    /// assert_eq!(p.try_get::<Option<u8>>(2).unwrap(), None);
    /// ```
    pub fn try_get<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
    ) -> Result<T, serde_json::Error> {
        T::deserialize(self.args.get(i).unwrap_or(&Value::Null))
    }

    /// All the arguments deserialized into `T`, by the rule of the server's `Data<T>`:
    /// none as `null`, one as itself, several as an array (so a tuple takes several).
    /// Binary values stay placeholders.
    ///
    /// ```
    /// use tether_proto::Payload;
    /// let two = Payload::new().arg("a").arg(2);
    /// assert_eq!(two.into_data::<(String, u32)>().unwrap(), ("a".to_owned(), 2));
    /// let one = Payload::new().arg(serde_json::json!({"n": 1}));
    /// assert_eq!(one.into_data::<serde_json::Value>().unwrap()["n"], 1);
    /// assert_eq!(Payload::new().into_data::<Option<u8>>().unwrap(), None);
    /// ```
    pub fn into_data<T: serde::de::DeserializeOwned>(mut self) -> Result<T, serde_json::Error> {
        let v = match self.args.len() {
            0 => Value::Null,
            1 => self.args.pop().unwrap_or(Value::Null),
            _ => Value::Array(self.args),
        };
        serde_json::from_value(v)
    }

    /// Appends a binary argument (an attachment and its placeholder).
    pub fn binary(mut self, b: impl Into<Bytes>) -> Self {
        let v = self.push_attachment(b);
        self.args.push(v);
        self
    }

    /// Stores an attachment and returns the placeholder to put where it belongs, for
    /// binary values nested in a JSON argument.
    ///
    /// ```
    /// use tether_proto::Payload;
    /// use serde_json::json;
    /// let mut p = Payload::new();
    /// let file = p.push_attachment(vec![0u8; 4]);
    /// p.args.push(json!({"name": "a.bin", "content": file}));
    /// assert_eq!(p.bytes_of(&p.args[0]["content"]).unwrap().len(), 4);
    /// ```
    pub fn push_attachment(&mut self, b: impl Into<Bytes>) -> Value {
        self.attachments.push(b.into());
        sio::placeholder(self.attachments.len() - 1)
    }

    /// If `v` is a placeholder, the attachment it stands for.
    pub fn bytes_of(&self, v: &Value) -> Option<&Bytes> {
        sio::as_placeholder(v).and_then(|n| self.attachments.get(n))
    }

    /// If argument `index` is a binary value, its bytes.
    pub fn binary_at(&self, index: usize) -> Option<&Bytes> {
        self.args.get(index).and_then(|v| self.bytes_of(v))
    }

    /// Whether the payload carries binary attachments.
    pub fn is_binary(&self) -> bool {
        !self.attachments.is_empty()
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
}

impl From<()> for Payload {
    fn from(_: ()) -> Self {
        Payload::new()
    }
}

/// Each element is one argument.
impl From<Vec<Value>> for Payload {
    fn from(args: Vec<Value>) -> Self {
        Payload {
            args,
            attachments: Vec::new(),
        }
    }
}

/// One argument (an array stays one argument).
impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::new().arg(v)
    }
}

/// One string argument.
impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload::new().arg(v)
    }
}

/// One string argument.
impl From<String> for Payload {
    fn from(v: String) -> Self {
        Payload::new().arg(v)
    }
}

/// One binary argument.
impl From<Bytes> for Payload {
    fn from(v: Bytes) -> Self {
        Payload::new().binary(v)
    }
}

/// One binary argument.
impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::new().binary(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_resolve() {
        let mut p = Payload::new().binary(vec![9u8]).arg(1);
        let ph = p.push_attachment(Bytes::from_static(b"xy"));
        p.args.push(json!([ph]));
        assert!(p.is_binary());
        assert_eq!(p.binary_at(0).map(|b| b.to_vec()), Some(vec![9]));
        assert_eq!(p.binary_at(1), None);
        assert_eq!(p.binary_at(7), None);
        assert_eq!(
            p.bytes_of(&p.args[2][0]).map(|b| b.to_vec()),
            Some(b"xy".to_vec())
        );
        // A placeholder pointing past the attachments resolves to nothing.
        assert_eq!(p.bytes_of(&sio::placeholder(5)), None);
        assert_eq!(p.len(), 3);
    }
}
