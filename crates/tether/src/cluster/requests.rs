//! Requests between nodes that are not kept in the log: broadcasts with acks, fetching
//! sockets and server-side emits. They travel as [`Ephemeral`] messages (Redis: pub/sub,
//! as `@socket.io/redis-streams-adapter` does), and every wait is bounded by a timeout.
//!
//! A requester asks the backend how many nodes listen to the namespace, sends the request
//! to all of them, and waits for one answer per other node (for a broadcast with an ack:
//! one count per node, then that many acks).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Broadcast, Cluster, Ephemeral, EphemeralBody, SocketInfo};
use crate::recovery::Target;
use crate::sync::MutexExt as _;
use crate::{AckResponse, AckResponses, Error, Payload};

/// How long a node answering a broadcast with an ack waits for its sockets when the
/// requester did not say (the reference's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The requests this node is waiting on, by request id.
#[derive(Default)]
pub(crate) struct Pending {
    map: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Ephemeral>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Ephemeral>>> {
        self.map.locked()
    }
}

/// An open request: its answers arrive on `rx` until it is dropped.
struct Open<'a> {
    cluster: &'a Cluster,
    id: String,
    /// How many other nodes should answer.
    nodes: usize,
    rx: mpsc::UnboundedReceiver<Ephemeral>,
}

impl Open<'_> {
    /// The first answer of every other node that `pick` accepts, in arrival order;
    /// [`Error::Timeout`] when a node has not answered by `deadline`.
    async fn one_per_node<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(EphemeralBody) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        let mut answered = std::collections::HashSet::new();
        let mut out = Vec::new();
        while answered.len() < self.nodes {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    if answered.contains(&m.uid) {
                        continue;
                    }
                    if let Some(v) = pick(m.body) {
                        answered.insert(m.uid);
                        out.push(v);
                    }
                }
                _ => return Err(Error::Timeout),
            }
        }
        Ok(out)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.cluster.pending.lock().remove(&self.id);
    }
}

fn request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `[event, ...args]` of an emit.
pub(crate) fn event_data(event: &str, payload: &Payload) -> Vec<Value> {
    let mut data = Vec::with_capacity(payload.args.len() + 1);
    data.push(Value::String(event.to_owned()));
    data.extend(payload.args.iter().cloned());
    data
}

/// Splits `[event, ...args]` into the event and its payload.
fn split_event(data: &[Value], attachments: &[Bytes]) -> Option<(String, Payload)> {
    let event = data.first()?.as_str()?.to_owned();
    Some((
        event,
        Payload {
            args: data.get(1..).unwrap_or_default().to_vec(),
            attachments: attachments.to_vec(),
        },
    ))
}

impl Cluster {
    /// Listens to the ephemeral messages of a namespace (retrying while the backend is
    /// unreachable).
    pub(crate) fn listen(self: &Arc<Self>, nsp: &str) {
        let weak = Arc::downgrade(self);
        let nsp = nsp.to_owned();
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                let Some(c) = weak.upgrade() else { return };
                match c.backend.listen(&c.uid, &nsp, c.ephemeral_tx.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(
                                "cluster: cannot listen to requests of {nsp}: {e}; \
                                 broadcasts with acks, fetch_sockets and server-side emits \
                                 stay on this node until it can"
                            );
                        }
                        failures += 1;
                    }
                }
                drop(c);
                tokio::time::sleep(super::backoff(failures)).await;
            }
        });
    }

    /// Sends a request to the other nodes of `nsp`; `None` when there are none (or the
    /// backend cannot say, which is logged).
    async fn open(
        &self,
        nsp: &str,
        body: impl FnOnce(String) -> EphemeralBody,
    ) -> Result<Option<Open<'_>>, Error> {
        let nodes = self
            .backend
            .listeners(nsp)
            .await
            .map_err(Error::Cluster)?
            .saturating_sub(1);
        if nodes == 0 {
            return Ok(None);
        }
        let id = request_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let open = Open {
            cluster: self,
            id: id.clone(),
            nodes,
            rx,
        };
        let message = Ephemeral {
            uid: self.uid.clone(),
            nsp: nsp.to_owned(),
            body: body(id),
        };
        self.backend
            .send_ephemeral(None, &message)
            .await
            .map_err(Error::Cluster)?;
        Ok(Some(open))
    }

    /// Emits to the matching sockets of the other nodes and collects their answers until
    /// `deadline`.
    pub(crate) async fn broadcast_with_ack(
        &self,
        broadcast: Broadcast,
        timeout: Duration,
        deadline: Instant,
    ) -> AckResponses {
        let nsp = broadcast.nsp.clone();
        let open = self
            .open(&nsp, |request_id| EphemeralBody::BroadcastWithAck {
                request_id,
                broadcast,
                timeout: Some(timeout),
            })
            .await;
        let mut open = match open {
            Ok(Some(open)) => open,
            Ok(None) => {
                return AckResponses {
                    responses: Vec::new(),
                    complete: true,
                }
            }
            Err(e) => {
                tracing::warn!("broadcast with ack: {e}; only this node's sockets answer");
                return AckResponses {
                    responses: Vec::new(),
                    complete: false,
                };
            }
        };
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut responses = Vec::new();
        loop {
            let expected: u64 = counts.values().sum();
            if counts.len() >= open.nodes && responses.len() as u64 >= expected {
                break;
            }
            match tokio::time::timeout_at(deadline, open.rx.recv()).await {
                Ok(Some(m)) => match m.body {
                    EphemeralBody::ClientCount { count, .. } => {
                        counts.insert(m.uid, count);
                    }
                    EphemeralBody::BroadcastAck {
                        sid,
                        args,
                        attachments,
                        ..
                    } => responses.push(AckResponse {
                        socket_id: sid,
                        result: Ok(Payload { args, attachments }),
                    }),
                    _ => {}
                },
                _ => break,
            }
        }
        let expected: u64 = counts.values().sum();
        for _ in (responses.len() as u64)..expected {
            responses.push(AckResponse {
                socket_id: None,
                result: Err(Error::Timeout),
            });
        }
        AckResponses {
            responses,
            complete: counts.len() >= open.nodes,
        }
    }

    /// The matching sockets of the other nodes; [`Error::Timeout`] when a node does not
    /// answer in time.
    pub(crate) async fn fetch_sockets(
        &self,
        nsp: &str,
        target: Target,
        timeout: Duration,
    ) -> Result<Vec<SocketInfo>, Error> {
        let deadline = Instant::now() + timeout;
        let Target { rooms, except } = target;
        let Some(mut open) = self
            .open(nsp, |request_id| EphemeralBody::FetchSockets {
                request_id,
                rooms,
                except,
            })
            .await?
        else {
            return Ok(Vec::new());
        };
        let answers = open
            .one_per_node(deadline, |body| match body {
                EphemeralBody::Sockets { sockets, .. } => Some(sockets),
                _ => None,
            })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Sends an event to the server-side handlers of the other nodes.
    pub(crate) async fn server_side_emit(
        &self,
        nsp: &str,
        data: Vec<Value>,
        attachments: Vec<Bytes>,
    ) -> Result<(), Error> {
        let message = Ephemeral {
            uid: self.uid.clone(),
            nsp: nsp.to_owned(),
            body: EphemeralBody::ServerSideEmit {
                request_id: None,
                data,
                attachments,
            },
        };
        self.backend
            .send_ephemeral(None, &message)
            .await
            .map_err(Error::Cluster)
    }

    /// Sends an event to the server-side handlers of the other nodes and collects one
    /// answer per node; [`Error::Timeout`] when a node does not answer in time.
    pub(crate) async fn server_side_emit_with_ack(
        &self,
        nsp: &str,
        data: Vec<Value>,
        attachments: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Vec<Payload>, Error> {
        let deadline = Instant::now() + timeout;
        let Some(mut open) = self
            .open(nsp, |request_id| EphemeralBody::ServerSideEmit {
                request_id: Some(request_id),
                data,
                attachments,
            })
            .await?
        else {
            return Ok(Vec::new());
        };
        open.one_per_node(deadline, |body| match body {
            EphemeralBody::ServerSideAck {
                args, attachments, ..
            } => Some(Payload { args, attachments }),
            _ => None,
        })
        .await
    }

    /// Sends an answer to the node that asked.
    pub(crate) fn respond(self: &Arc<Self>, to: String, nsp: String, body: EphemeralBody) {
        let c = self.clone();
        tokio::spawn(async move {
            c.send_response(&to, nsp, body).await;
        });
    }

    async fn send_response(&self, to: &str, nsp: String, body: EphemeralBody) {
        let message = Ephemeral {
            uid: self.uid.clone(),
            nsp,
            body,
        };
        if let Err(e) = self.backend.send_ephemeral(Some(to), &message).await {
            tracing::debug!("cluster: answer to {to} lost: {e}");
        }
    }

    /// Handles an ephemeral message from the backend.
    pub(crate) fn handle_ephemeral(self: &Arc<Self>, m: Ephemeral) {
        if m.uid == self.uid {
            return; // our own request, back from the public channel
        }
        match m.body {
            EphemeralBody::ClientCount { .. }
            | EphemeralBody::BroadcastAck { .. }
            | EphemeralBody::Sockets { .. }
            | EphemeralBody::ServerSideAck { .. } => {
                let Some(id) = m.body.request_id() else {
                    return;
                };
                let tx = self.pending.lock().get(id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(m);
                }
            }
            EphemeralBody::FetchSockets {
                request_id,
                rooms,
                except,
            } => {
                let sockets = match self.member(&m.nsp) {
                    Some(member) => member.socket_infos(Target { rooms, except }),
                    None => Vec::new(),
                };
                self.respond(
                    m.uid,
                    m.nsp,
                    EphemeralBody::Sockets {
                        request_id,
                        sockets,
                    },
                );
            }
            EphemeralBody::BroadcastWithAck {
                request_id,
                broadcast,
                timeout,
            } => {
                let c = self.clone();
                tokio::spawn(async move {
                    c.answer_broadcast_with_ack(m.uid, request_id, broadcast, timeout)
                        .await;
                });
            }
            EphemeralBody::ServerSideEmit {
                request_id,
                data,
                attachments,
            } => {
                let Some(member) = self.member(&m.nsp) else {
                    return;
                };
                let Some((event, payload)) = split_event(&data, &attachments) else {
                    return;
                };
                let ack = request_id.map(|request_id| ServerSideAck {
                    cluster: self.clone(),
                    to: m.uid,
                    nsp: m.nsp,
                    request_id,
                });
                member.run_server_side(&event, payload, ack);
            }
        }
    }

    async fn answer_broadcast_with_ack(
        &self,
        to: String,
        request_id: String,
        b: Broadcast,
        timeout: Option<Duration>,
    ) {
        let member = self.member(&b.nsp);
        let event = split_event(&b.data, &b.attachments);
        let waits = match (&member, event) {
            (Some(member), Some((event, payload))) => {
                let target = Target {
                    rooms: b.rooms.clone(),
                    except: b.except.clone(),
                };
                member.emit_with_ack(target, &event, &payload)
            }
            _ => Vec::new(),
        };
        let count = EphemeralBody::ClientCount {
            request_id: request_id.clone(),
            count: waits.len() as u64,
        };
        self.send_response(&to, b.nsp.clone(), count).await;
        let deadline = Instant::now() + timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut answers: FuturesUnordered<_> = waits
            .into_iter()
            .map(|(sid, rx)| async move { (sid, rx.await) })
            .collect();
        while let Ok(Some((sid, answer))) = tokio::time::timeout_at(deadline, answers.next()).await
        {
            let Ok(p) = answer else { continue };
            let body = EphemeralBody::BroadcastAck {
                request_id: request_id.clone(),
                sid: Some(sid),
                args: p.args,
                attachments: p.attachments,
            };
            self.send_response(&to, b.nsp.clone(), body).await;
        }
    }
}

/// Answers a server-side emit from another node, once.
///
/// ```no_run
/// # fn f(io: tether::Server) {
/// io.of("/").on_server_side("ping", |payload, ack| {
///     if let Some(ack) = ack {
///         ack.send("pong");
///     }
/// });
/// # }
/// ```
pub struct ServerSideAck {
    cluster: Arc<Cluster>,
    to: String,
    nsp: String,
    request_id: String,
}

impl std::fmt::Debug for ServerSideAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSideAck")
            .field("to", &self.to)
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl ServerSideAck {
    /// Sends the answer to the node that asked.
    pub fn send(self, payload: impl Into<Payload>) {
        let p = payload.into();
        self.cluster.respond(
            self.to,
            self.nsp,
            EphemeralBody::ServerSideAck {
                request_id: self.request_id,
                args: p.args,
                attachments: p.attachments,
            },
        );
    }
}
