use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tether_proto::sio::{as_placeholder, placeholder};

/// The arguments of an event or an ack: JSON values, and the binary attachments that
/// placeholders in them stand for.
///
/// ```
/// use tether::Payload;
/// let p = Payload::new().arg("hello").arg(42).binary(vec![1u8, 2, 3]);
/// assert_eq!(p.args.len(), 3);
/// assert_eq!(p.attachments.len(), 1);
/// assert_eq!(p.binary_arg(2).unwrap().as_ref(), &[1, 2, 3]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// The arguments. A binary argument is a placeholder `{"_placeholder":true,"num":N}`.
    pub args: Vec<Value>,
    /// The binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// No arguments.
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

    /// Adds an argument. A value that fails to serialize becomes `null`.
    pub fn arg(mut self, v: impl Serialize) -> Self {
        self.args
            .push(serde_json::to_value(v).unwrap_or(Value::Null));
        self
    }

    /// Adds a binary argument.
    pub fn binary(mut self, bytes: impl Into<Bytes>) -> Self {
        self.args.push(placeholder(self.attachments.len()));
        self.attachments.push(bytes.into());
        self
    }

    /// The first argument, if any.
    pub fn first(&self) -> Option<&Value> {
        self.args.first()
    }

    /// Argument `i` as binary, if it is a placeholder for an attachment.
    pub fn binary_arg(&self, i: usize) -> Option<&Bytes> {
        self.attachments.get(as_placeholder(self.args.get(i)?)?)
    }

    /// Argument `i` deserialized into `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, i: usize) -> Option<T> {
        T::deserialize(self.args.get(i)?).ok()
    }
}

impl From<()> for Payload {
    fn from(_: ()) -> Self {
        Payload::new()
    }
}

impl From<Value> for Payload {
    /// One argument.
    fn from(v: Value) -> Self {
        Payload::from_args(vec![v])
    }
}

impl From<Vec<Value>> for Payload {
    /// Several arguments.
    fn from(args: Vec<Value>) -> Self {
        Payload::from_args(args)
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload::from_args(vec![Value::String(s.to_owned())])
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload::from_args(vec![Value::String(s)])
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::new().binary(b)
    }
}
