//! The application's handlers of a namespace: connect middlewares and the connection
//! handler, shared by a dynamic namespace's children. Stored type-erased; the generic
//! registration is in `crate::handler`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::{AckSender, BoxedHandler, SocketRef};
use crate::error::{ConnectError, Error};
use crate::sync::RwLockExt as _;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A connect middleware stored type-erased: the socket and the CONNECT payload.
pub(crate) type BoxedMiddleware =
    Arc<dyn Fn(SocketRef, Option<Value>) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
pub(crate) type ExtractErrorHook = Arc<dyn Fn(SocketRef, Error, Option<AckSender>) + Send + Sync>;

/// Middlewares and the connection handler, shared by a dynamic namespace's children.
#[derive(Default)]
pub(crate) struct NsHandlers {
    pub middlewares: RwLock<Vec<BoxedMiddleware>>,
    pub on_connection: RwLock<Option<BoxedHandler>>,
    on_extract_error: RwLock<Option<ExtractErrorHook>>,
}

impl NsHandlers {
    pub(crate) fn add_middleware(&self, mw: BoxedMiddleware) {
        self.middlewares.writing().push(mw);
    }

    pub(crate) fn set_on_connection(&self, h: BoxedHandler) {
        *self.on_connection.writing() = Some(h);
    }

    pub(crate) fn set_on_extract_error(&self, hook: ExtractErrorHook) {
        *self.on_extract_error.writing() = Some(hook);
    }

    pub(crate) fn extract_error_hook(&self) -> Option<ExtractErrorHook> {
        self.on_extract_error.reading().clone()
    }
}
