//! The application's handlers of a namespace: connect middlewares and the connection
//! handler, shared by a dynamic namespace's children.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::socket::SocketRef;
use crate::sync::RwLockExt as _;
use crate::ConnectError;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Middleware =
    Arc<dyn Fn(SocketRef, Option<Value>) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
pub(crate) type ConnectionHandler = Arc<dyn Fn(&SocketRef) + Send + Sync>;

/// Middlewares and the connection handler, shared by a dynamic namespace's children.
#[derive(Default)]
pub(crate) struct NsHandlers {
    pub middlewares: RwLock<Vec<Middleware>>,
    pub on_connection: RwLock<Option<ConnectionHandler>>,
}

impl NsHandlers {
    pub(crate) fn add_middleware<F, Fut>(&self, f: F)
    where
        F: Fn(SocketRef, Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        let mw: Middleware = Arc::new(move |s, auth| Box::pin(f(s, auth)));
        self.middlewares.writing().push(mw);
    }

    pub(crate) fn set_on_connection<F>(&self, f: F)
    where
        F: Fn(&SocketRef) + Send + Sync + 'static,
    {
        *self.on_connection.writing() = Some(Arc::new(f));
    }
}
