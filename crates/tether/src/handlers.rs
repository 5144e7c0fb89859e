//! The application's handlers of a namespace: connect middlewares and the connection
//! handler, shared by a dynamic namespace's children.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::extract::{AckSender, Parts};
use crate::handler::{BoxedHandler, Handler};
use crate::socket::SocketRef;
use crate::sync::RwLockExt as _;
use crate::{ConnectError, Error};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Middleware =
    Arc<dyn Fn(SocketRef, Option<Value>) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
pub(crate) type ExtractErrorHook = Arc<dyn Fn(SocketRef, Error, Option<AckSender>) + Send + Sync>;

/// Middlewares and the connection handler, shared by a dynamic namespace's children.
#[derive(Default)]
pub(crate) struct NsHandlers {
    pub middlewares: RwLock<Vec<Middleware>>,
    pub on_connection: RwLock<Option<BoxedHandler>>,
    on_extract_error: RwLock<Option<ExtractErrorHook>>,
}

impl NsHandlers {
    pub(crate) fn add_middleware<H: crate::handler::Middleware<M>, M>(&self, h: H) {
        let mw: Middleware = Arc::new(move |s, auth| h.call(Parts::connect(s, auth)));
        self.middlewares.writing().push(mw);
    }

    pub(crate) fn set_on_connection<H: Handler<M>, M>(&self, h: H) {
        *self.on_connection.writing() = Some(crate::handler::boxed(h));
    }

    pub(crate) fn set_on_extract_error<F>(&self, f: F)
    where
        F: Fn(SocketRef, Error, Option<AckSender>) + Send + Sync + 'static,
    {
        *self.on_extract_error.writing() = Some(Arc::new(f));
    }

    pub(crate) fn extract_error_hook(&self) -> Option<ExtractErrorHook> {
        self.on_extract_error.reading().clone()
    }
}
