//! The server's internal observer hook: socket lifecycle events of every namespace,
//! for the admin UI (see [`crate::admin`]) and other instruments.
//!
//! The core calls [`Observers`] from a handful of places (connect, disconnect, join,
//! leave, `data` change, event in, event out). With no observer registered each call is
//! one acquire load.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tether_engine::{CloseReason, EngineSocket};

use super::SocketRef;
use crate::reason::DisconnectReason;
use crate::Payload;

/// Hears socket lifecycle events of every namespace of a server. Every method has an
/// empty default; they run inline on the core's path, so they must be quick and must
/// not block.
pub(crate) trait Observer: Send + Sync + 'static {
    /// A socket joined its namespace (fresh or recovered), after its CONNECT reply.
    fn connected(&self, _socket: &SocketRef) {}
    /// A connected socket left its namespace, after it left its rooms.
    fn disconnected(&self, _socket: &SocketRef, _reason: DisconnectReason) {}
    /// A socket joined a room it was not in.
    fn joined(&self, _socket: &SocketRef, _room: &str) {}
    /// A socket left a room it was in.
    fn left(&self, _socket: &SocketRef, _room: &str) {}
    /// `socket.data` changed.
    fn data_changed(&self, _socket: &SocketRef) {}
    /// The socket's connection upgraded to WebSocket.
    fn transport_changed(&self, _socket: &SocketRef) {}
    /// An event came from the client: its arguments, the event name first.
    fn event_received(&self, _socket: &SocketRef, _args: &[Value]) {}
    /// The server emitted an event to this socket alone.
    fn event_sent(&self, _socket: &SocketRef, _event: &str, _payload: &Payload) {}
    /// A client answered an `emit_with_ack` of this socket.
    fn ack_received(&self, _socket: &SocketRef) {}
    /// An `emit_with_ack` of this socket timed out.
    fn ack_timeout(&self, _socket: &SocketRef) {}
    /// An Engine.IO connection opened.
    fn conn_opened(&self, _socket: &EngineSocket) {}
    /// An Engine.IO connection closed.
    fn conn_closed(&self, _reason: CloseReason) {}
    /// A message came in on a connection: its length in bytes.
    fn message_in(&self, _bytes: usize) {}
}

/// The most observers a server may have (the admin UI and the metrics use one each).
const MAX_OBSERVERS: usize = 8;

/// The observers of one server, shared by its namespaces. Append-only slots: reading
/// them is a few acquire loads, with no lock and no shared counter to contend on.
pub(crate) struct Observers {
    slots: [OnceLock<Arc<dyn Observer>>; MAX_OBSERVERS],
}

impl Default for Observers {
    fn default() -> Self {
        Observers {
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.iter().take_while(|s| s.get().is_some()).count();
        f.debug_struct("Observers").field("count", &n).finish()
    }
}

impl Observers {
    /// Adds an observer; it hears every event from now on.
    pub(crate) fn add(&self, o: Arc<dyn Observer>) {
        let mut o = Some(o);
        for slot in &self.slots {
            if let Some(x) = o.take() {
                if let Err(x) = slot.set(x) {
                    o = Some(x);
                }
            }
        }
        if o.is_some() {
            tracing::error!("more than {MAX_OBSERVERS} observers: one is left out");
        }
    }

    #[inline]
    fn each(&self, f: impl Fn(&dyn Observer)) {
        for slot in &self.slots {
            match slot.get() {
                Some(o) => f(o.as_ref()),
                None => return,
            }
        }
    }

    pub(crate) fn connected(&self, s: &SocketRef) {
        tracing::debug!(parent: s.span(), recovered = s.recovered(), "connected");
        self.each(|o| o.connected(s));
    }

    pub(crate) fn disconnected(&self, s: &SocketRef, reason: DisconnectReason) {
        tracing::debug!(
            parent: s.span(),
            reason = reason.as_str(),
            recoverable = reason.is_recoverable(),
            "disconnected"
        );
        self.each(|o| o.disconnected(s, reason));
    }

    pub(crate) fn joined(&self, s: &SocketRef, room: &str) {
        self.each(|o| o.joined(s, room));
    }

    pub(crate) fn left(&self, s: &SocketRef, room: &str) {
        self.each(|o| o.left(s, room));
    }

    pub(crate) fn data_changed(&self, s: &SocketRef) {
        self.each(|o| o.data_changed(s));
    }

    pub(crate) fn transport_changed(&self, s: &SocketRef) {
        tracing::debug!(parent: s.span(), transport = s.transport(), "transport changed");
        self.each(|o| o.transport_changed(s));
    }

    pub(crate) fn event_received(&self, s: &SocketRef, args: &[Value]) {
        self.each(|o| o.event_received(s, args));
    }

    pub(crate) fn event_sent(&self, s: &SocketRef, event: &str, payload: &Payload) {
        self.each(|o| o.event_sent(s, event, payload));
    }

    pub(crate) fn ack_received(&self, s: &SocketRef) {
        self.each(|o| o.ack_received(s));
    }

    pub(crate) fn ack_timeout(&self, s: &SocketRef) {
        self.each(|o| o.ack_timeout(s));
    }

    pub(crate) fn conn_opened(&self, s: &EngineSocket) {
        self.each(|o| o.conn_opened(s));
    }

    pub(crate) fn conn_closed(&self, reason: CloseReason) {
        self.each(|o| o.conn_closed(reason));
    }

    pub(crate) fn message_in(&self, bytes: usize) {
        self.each(|o| o.message_in(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Bytes(AtomicUsize);
    impl Observer for Bytes {
        fn message_in(&self, bytes: usize) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[test]
    fn every_observer_hears_what_comes_after_it_is_added() {
        let obs = Observers::default();
        let (a, b) = (Arc::new(Bytes::default()), Arc::new(Bytes::default()));
        obs.message_in(1);
        obs.add(a.clone());
        obs.message_in(10);
        obs.add(b.clone());
        obs.message_in(100);
        assert_eq!(a.0.load(Ordering::Relaxed), 110);
        assert_eq!(b.0.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn past_the_slots_an_observer_is_left_out_not_the_others() {
        let obs = Observers::default();
        let all: Vec<_> = (0..MAX_OBSERVERS + 1)
            .map(|_| Arc::new(Bytes::default()))
            .collect();
        for o in &all {
            obs.add(o.clone());
        }
        obs.message_in(1);
        assert!(all[..MAX_OBSERVERS]
            .iter()
            .all(|o| o.0.load(Ordering::Relaxed) == 1));
        assert_eq!(all[MAX_OBSERVERS].0.load(Ordering::Relaxed), 0);
    }
}
