//! The in-memory adapter: one node. Recoverable emits get an offset from this node's
//! [`MemoryStore`] and are logged and delivered under one lock, so every socket sees the
//! log's order; registration takes the same lock, so a socket's replay ends exactly where
//! its live delivery begins.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::time::Instant as Deadline;

use super::{
    Adapter, BoxFuture, BroadcastOptions, LocalSockets, Register, Retiring, SocketInfo,
    SocketsAction,
};
use crate::recovery::{
    MemoryStore, Position, RecoveryConfig, RecoveryFailure, Session, StoredPacket,
};
use crate::sync::MutexExt as _;
use crate::{encode, AckResponses, Error, Payload};

/// One node's adapter (see the [module docs](self)).
pub(crate) struct MemoryAdapter {
    nsp: String,
    recovery: Option<Recovery>,
    /// Orders recoverable emits, registrations and retirements.
    order: Mutex<()>,
}

struct Recovery {
    config: RecoveryConfig,
    store: MemoryStore,
    last_purge: Mutex<Instant>,
}

impl MemoryAdapter {
    pub(crate) fn new(nsp: &str, recovery: Option<RecoveryConfig>) -> Self {
        MemoryAdapter {
            nsp: nsp.to_owned(),
            recovery: recovery.map(|config| Recovery {
                store: MemoryStore::new(&config),
                config,
                last_purge: Mutex::new(Instant::now()),
            }),
            order: Mutex::new(()),
        }
    }
}

impl Recovery {
    fn maybe_purge(&self) {
        let mut last = self.last_purge.locked();
        if last.elapsed() > Duration::from_secs(1) {
            *last = Instant::now();
            self.store.purge();
        }
    }
}

impl Adapter for MemoryAdapter {
    fn recovery(&self) -> Option<&RecoveryConfig> {
        self.recovery.as_ref().map(|r| &r.config)
    }

    fn usage(&self) -> Option<(usize, usize)> {
        self.recovery.as_ref().map(|r| r.store.usage())
    }

    fn holds_sessions(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|r| r.store.holds_sessions())
    }

    fn broadcast(
        &self,
        local: &dyn LocalSockets,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    ) {
        let attachments = encode::attachments(payload);
        match self.recovery.as_ref().filter(|_| !opts.volatile) {
            Some(rec) => {
                let _order = self.order.locked();
                let packet = rec.store.append(opts.target(), &mut |offset| StoredPacket {
                    message: encode::event(&self.nsp, None, event, payload, Some(offset)),
                    attachments: attachments.clone(),
                });
                local.deliver(opts, &packet);
            }
            None => {
                let packet = StoredPacket {
                    message: encode::event(&self.nsp, None, event, payload, None),
                    attachments,
                };
                local.deliver(opts, &packet);
            }
        }
    }

    fn fresh_start(&self) -> Option<Position> {
        self.recovery.as_ref().map(|r| r.store.position())
    }

    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Session, RecoveryFailure>> {
        let taken = match &self.recovery {
            Some(rec) => rec.store.take_session(pid, offset),
            None => Err(RecoveryFailure::UnknownSession),
        };
        Box::pin(std::future::ready(taken))
    }

    fn keep_again(&self, session: Session) {
        if let Some(rec) = &self.recovery {
            rec.store
                .keep_session(session, rec.config.max_disconnection_duration);
        }
    }

    fn replay_and_register<'a>(
        &'a self,
        session: Session,
        recovered: bool,
        register: Register<'a>,
    ) -> BoxFuture<'a, Result<Option<usize>, RecoveryFailure>> {
        let _order = self.order.locked();
        let replay = match (&self.recovery, session.start) {
            (Some(rec), Some(after)) => {
                match rec.store.read_after(after, &session.sid, &session.rooms) {
                    Ok(p) => p,
                    // Packets it needs were evicted while middlewares ran: no silent gap.
                    Err(e) if recovered => return Box::pin(std::future::ready(Err(e))),
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let outcome = if register(&replay, session.start) {
            Some(replay.len())
        } else {
            if recovered {
                self.keep_again(session);
            }
            None
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn retire(&self, socket: Retiring<'_>, unregister: &mut dyn FnMut()) {
        let _order = self.order.locked();
        unregister();
        if let (Some(rec), Some(session)) = (&self.recovery, socket.keep) {
            rec.store
                .keep_session(session, rec.config.max_disconnection_duration);
            rec.maybe_purge();
        }
    }

    fn socket_changed(&self, _session: &mut dyn FnMut() -> Session) {}

    fn sockets_action(&self, _opts: &BroadcastOptions, _action: &SocketsAction) {}

    fn fetch_remote<'a>(
        &'a self,
        _opts: &'a BroadcastOptions,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<SocketInfo>, Error>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn broadcast_with_ack_remote<'a>(
        &'a self,
        _opts: &'a BroadcastOptions,
        _event: &'a str,
        _payload: &'a Payload,
        _timeout: Duration,
        _deadline: Deadline,
    ) -> BoxFuture<'a, Option<AckResponses>> {
        Box::pin(std::future::ready(None))
    }

    fn server_side_emit<'a>(
        &'a self,
        _event: &'a str,
        _payload: Payload,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn server_side_emit_with_ack<'a>(
        &'a self,
        _event: &'a str,
        _payload: Payload,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Payload>, Error>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
