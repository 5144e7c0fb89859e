//! The cluster adapter: one namespace of a node of a cluster (see [`crate::cluster`]).
//!
//! Broadcasts go to the cluster log; this node delivers each entry when its reader reads
//! it back ([`Member::deliver`]), so every node delivers in log order, and the entry's
//! position is the offset every recipient gets. Sessions are the backend's: a live record
//! per connected socket, a kept session after a recoverable disconnect, taken one-shot.
//!
//! Replay, then live: a restored socket reads the bulk of what it missed without holding
//! up delivery, then, holding `delivery` (so the reader waits), the tail up to what this
//! node has delivered, and registers under `order` (which delivery takes too). So its
//! replay ends exactly at the entry before the first one it gets live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{
    Adapter, BoxFuture, BroadcastOptions, LocalSockets, Register, Retiring, SocketInfo,
    SocketsAction,
};
use crate::cluster::cache::Entry;
use crate::cluster::{Broadcast, Cluster, ClusterMessage, Member, ServerSideAck, SessionOp};
use crate::recovery::{Position, RecoveryConfig, RecoveryFailure, Session, StoredPacket, Target};
use crate::sync::MutexExt as _;
use crate::{encode, AckResponses, Error, Payload};

/// One namespace's adapter on a node of a cluster (see the [module docs](self)).
pub(crate) struct ClusterAdapter {
    nsp: String,
    cluster: Arc<Cluster>,
    recovery: Option<RecoveryConfig>,
    local: Weak<dyn LocalSockets>,
    /// Orders delivery, registration, retirement and the refresh of live records.
    order: Mutex<()>,
    /// Held by delivery and by the tail of a restore (across backend reads).
    delivery: tokio::sync::Mutex<()>,
    /// The newest entry delivered to this namespace (changed under `order`).
    position: Mutex<Position>,
}

impl ClusterAdapter {
    /// The adapter of `nsp`, joined to the cluster's reader and requests.
    pub(crate) fn start(
        cluster: Arc<Cluster>,
        nsp: &str,
        local: Weak<dyn LocalSockets>,
        recovery: Option<RecoveryConfig>,
    ) -> Arc<Self> {
        let adapter = Arc::new(ClusterAdapter {
            nsp: nsp.to_owned(),
            position: Mutex::new(cluster.position()),
            cluster: cluster.clone(),
            recovery,
            local,
            order: Mutex::new(()),
            delivery: tokio::sync::Mutex::new(()),
        });
        let member: Arc<dyn Member> = adapter.clone();
        cluster.join(nsp, Arc::downgrade(&member));
        adapter
    }

    /// How long a live record lives without a refresh.
    fn live_ttl(rec: &RecoveryConfig) -> Duration {
        rec.max_disconnection_duration + Duration::from_secs(30)
    }

    fn position(&self) -> Position {
        *self.position.locked()
    }

    fn retire_op(&self, pid: String, keep: Option<Session>) -> SessionOp {
        let ttl = self
            .recovery
            .as_ref()
            .map_or(Duration::ZERO, |r| r.max_disconnection_duration);
        SessionOp::Retire {
            nsp: self.nsp.clone(),
            pid,
            keep: keep.map(|s| (s, ttl)),
        }
    }

    /// Encodes a log entry for this node's sockets, with its offset when it is
    /// recoverable here.
    fn encode(&self, id: Position, b: &Broadcast) -> Option<StoredPacket> {
        let event = b.data.first()?.as_str()?;
        let offset = (self.recovery.is_some() && !b.volatile).then(|| self.cluster.offset(id));
        Some(StoredPacket {
            message: encode::event_args(
                &self.nsp,
                None,
                event,
                b.data.get(1..).unwrap_or_default(),
                b.attachments.len(),
                offset.as_deref(),
            ),
            attachments: (!b.attachments.is_empty()).then(|| Arc::from(b.attachments.clone())),
        })
    }

    /// A log entry's packet for this namespace's sockets, encoded once per entry (the
    /// cache keeps it for replays).
    fn encoded<'e>(&self, entry: &'e Entry) -> Option<&'e StoredPacket> {
        let ClusterMessage::Broadcast(b) = &entry.record.message else {
            return None;
        };
        entry.encoded(|| self.encode(entry.record.id, b))
    }

    /// What a restored socket missed after `after`: the bulk without holding up delivery,
    /// then (returned with `delivery` held) the tail up to what this node has delivered.
    async fn read_replay(
        &self,
        session: &Session,
        after: Option<Position>,
    ) -> (
        Position,
        Result<Vec<StoredPacket>, crate::cluster::BackendError>,
        tokio::sync::MutexGuard<'_, ()>,
    ) {
        let mut seen = HashMap::new();
        if let Some(after) = after {
            // Never replay from behind the client: first catch up with its offset.
            self.cluster.wait_delivered(after).await;
            self.cluster.seed_seen(after, &mut seen).await;
        }
        let (sid, rooms) = (session.sid.as_str(), session.rooms.as_slice());
        let early = self.position();
        let after = after.unwrap_or(early);
        let bulk = self
            .cluster
            .missed(&self.nsp, after, early, sid, rooms, &mut seen)
            .await;
        let held = self.delivery.lock().await;
        let upto = self.position();
        let from = early.max(after);
        let missed = match bulk {
            Ok(mut m) if upto > from => self
                .cluster
                .missed(&self.nsp, from, upto, sid, rooms, &mut seen)
                .await
                .map(|tail| {
                    m.extend(tail);
                    m
                }),
            other => other,
        };
        let replay = missed.map(|m| m.iter().filter_map(|e| self.encoded(e).cloned()).collect());
        (after, replay, held)
    }
}

impl Adapter for ClusterAdapter {
    fn recovery(&self) -> Option<&RecoveryConfig> {
        self.recovery.as_ref()
    }

    fn usage(&self) -> Option<(usize, usize)> {
        None
    }

    fn holds_sessions(&self) -> bool {
        false // the backend holds them
    }

    fn broadcast(
        &self,
        local: &dyn LocalSockets,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    ) {
        if opts.local {
            // This node only: not in the log, so no offset.
            let packet = StoredPacket {
                message: encode::event(&self.nsp, None, event, payload, None),
                attachments: encode::attachments(payload),
            };
            local.deliver(opts, &packet);
            return;
        }
        self.cluster.publish(ClusterMessage::Broadcast(Broadcast {
            nsp: self.nsp.clone(),
            data: crate::cluster::requests::event_data(event, payload),
            attachments: payload.attachments.clone(),
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            volatile: opts.volatile,
        }));
    }

    fn fresh_start(&self) -> Option<Position> {
        None
    }

    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Session, RecoveryFailure>> {
        Box::pin(async move {
            let after = match offset {
                Some(o) => Some(
                    self.cluster
                        .parse_offset(o)
                        .ok_or(RecoveryFailure::UnknownOffset)?,
                ),
                None => None,
            };
            let mut session = self.cluster.take(&self.nsp, pid, after).await?;
            session.start = after.or(session.start);
            Ok(session)
        })
    }

    fn keep_again(&self, session: Session) {
        let op = self.retire_op(session.pid.clone(), Some(session));
        self.cluster.session_op(op);
    }

    fn replay_and_register<'a>(
        &'a self,
        mut session: Session,
        recovered: bool,
        register: Register<'a>,
    ) -> BoxFuture<'a, Result<Option<usize>, RecoveryFailure>> {
        Box::pin(async move {
            if !recovered {
                let _order = self.order.locked();
                let registered = register(&[], Some(self.position()));
                return Ok(registered.then_some(0));
            }
            let (after, replay, _delivery) = self.read_replay(&session, session.start).await;
            session.start = Some(after);
            let replay = match replay {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("replay failed: {e}");
                    self.keep_again(session);
                    return Err(RecoveryFailure::Evicted);
                }
            };
            let _order = self.order.locked();
            if register(&replay, Some(after)) {
                Ok(Some(replay.len()))
            } else {
                self.keep_again(session);
                Ok(None)
            }
        })
    }

    fn retire(&self, socket: Retiring<'_>, unregister: &mut dyn FnMut()) {
        let _order = self.order.locked();
        unregister();
        if let (Some(pid), true) = (socket.pid, socket.was_connected) {
            let op = self.retire_op(pid.to_owned(), socket.keep);
            self.cluster.session_op(op);
        }
    }

    fn socket_changed(&self, session: &mut dyn FnMut() -> Session) {
        let Some(rec) = &self.recovery else {
            return;
        };
        let session = session();
        let op = if rec.fits(&session) {
            SessionOp::PutLive {
                nsp: self.nsp.clone(),
                session,
                ttl: Self::live_ttl(rec),
                window: rec.max_disconnection_duration,
            }
        } else {
            // Over `max_session_bytes`: the record goes, as a disconnect would not keep the
            // session either, so that a crash of this node restores nothing larger.
            tracing::debug!(
                sid = %session.sid,
                max = rec.max_session_bytes,
                "live record dropped: session over max_session_bytes"
            );
            SessionOp::Retire {
                nsp: self.nsp.clone(),
                pid: session.pid,
                keep: None,
            }
        };
        self.cluster.session_op(op);
    }

    fn sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction) {
        if !opts.local {
            self.cluster.publish(ClusterMessage::Sockets {
                nsp: self.nsp.clone(),
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                action: action.clone(),
            });
        }
    }

    fn fetch_remote<'a>(
        &'a self,
        opts: &'a BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<SocketInfo>, Error>> {
        Box::pin(async move {
            if opts.local {
                return Ok(Vec::new());
            }
            self.cluster
                .fetch_sockets(&self.nsp, opts.target(), timeout)
                .await
        })
    }

    fn broadcast_with_ack_remote<'a>(
        &'a self,
        opts: &'a BroadcastOptions,
        event: &'a str,
        payload: &'a Payload,
        timeout: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, Option<AckResponses>> {
        Box::pin(async move {
            if opts.local {
                return None;
            }
            let b = Broadcast {
                nsp: self.nsp.clone(),
                data: crate::cluster::requests::event_data(event, payload),
                attachments: payload.attachments.clone(),
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                volatile: false,
            };
            Some(self.cluster.broadcast_with_ack(b, timeout, deadline).await)
        })
    }

    fn server_side_emit<'a>(
        &'a self,
        event: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let data = crate::cluster::requests::event_data(event, &payload);
            self.cluster
                .server_side_emit(&self.nsp, data, payload.attachments)
                .await
        })
    }

    fn server_side_emit_with_ack<'a>(
        &'a self,
        event: &'a str,
        payload: Payload,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Payload>, Error>> {
        Box::pin(async move {
            let data = crate::cluster::requests::event_data(event, &payload);
            self.cluster
                .server_side_emit_with_ack(&self.nsp, data, payload.attachments, timeout)
                .await
        })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cluster.flush())
    }
}

impl Member for ClusterAdapter {
    fn deliver<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let ClusterMessage::Broadcast(b) = &entry.record.message else {
                return;
            };
            let id = entry.record.id;
            let _delivery = self.delivery.lock().await;
            let packet = self.encoded(entry);
            let _order = self.order.locked();
            if let (Some(packet), Some(local)) = (packet, self.local.upgrade()) {
                let opts = BroadcastOptions {
                    rooms: b.rooms.clone(),
                    except: b.except.clone(),
                    volatile: b.volatile,
                    ..Default::default()
                };
                local.deliver(&opts, packet);
            }
            *self.position.locked() = id;
        })
    }

    fn answer_probe(&self, pid: String) {
        let Some(local) = self.local.upgrade() else {
            return;
        };
        let cluster = self.cluster.clone();
        let marked = pid.clone();
        local.probe_live(
            &pid,
            Box::new(move || {
                cluster.session_op(SessionOp::MarkAlive {
                    pid: marked,
                    ttl: Duration::from_secs(10),
                })
            }),
        );
    }

    fn apply_sockets(&self, target: Target, action: &SocketsAction) {
        if let Some(local) = self.local.upgrade() {
            local.apply_sockets_action(&BroadcastOptions::of_target(target), action);
        }
    }

    fn socket_infos(&self, target: Target) -> Vec<SocketInfo> {
        self.local
            .upgrade()
            .map(|l| l.socket_infos(&BroadcastOptions::of_target(target)))
            .unwrap_or_default()
    }

    fn emit_with_ack(
        &self,
        target: Target,
        event: &str,
        payload: &Payload,
    ) -> Vec<(String, oneshot::Receiver<Payload>)> {
        self.local
            .upgrade()
            .map(|l| l.emit_with_ack(&BroadcastOptions::of_target(target), event, payload))
            .unwrap_or_default()
    }

    fn run_server_side(&self, event: &str, payload: Payload, ack: Option<ServerSideAck>) {
        if let Some(local) = self.local.upgrade() {
            local.run_server_side(event, payload, ack);
        }
    }

    fn refresh_live_records(&self) {
        let (Some(rec), Some(local)) = (&self.recovery, self.local.upgrade()) else {
            return;
        };
        // Under the order, which registration and retirement hold too: a socket retired
        // before this refresh is not in it, and one retired after it has its `Retire`
        // queued after it, so the refresh never writes back a retired record.
        let _order = self.order.locked();
        let mut sessions = local.live_sessions();
        sessions.retain(|s| rec.fits(s));
        if !sessions.is_empty() {
            self.cluster.session_op(SessionOp::RefreshLive {
                nsp: self.nsp.clone(),
                sessions,
                ttl: Self::live_ttl(rec),
                window: rec.max_disconnection_duration,
            });
        }
    }
}
