//! The task that owns one Engine.IO connection: the heartbeat, the outgoing queue (one
//! `POST` at a time within `maxPayload` on polling, frames on WebSocket), and the upgrade.
//!
//! One [`connect`] call opens one connection and spawns its task. The Socket.IO layer
//! talks to that task through an [`EngineHandle`] (outgoing messages) and a channel of
//! [`EngineEvent`]s (incoming messages, then one `Closed`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt as _;
use tether_proto::engine::{self as eio, Packet, PayloadItem};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, trace};

use super::polling::{self, Http};
use super::websocket::{self, Ws};
use super::{
    CloseReason, EngineEvent, EngineOptions, Frame, Handshake, TEvent, TaskGuard, Transport,
};
use crate::error::{Error, Result};

/// Commands for the engine task.
#[derive(Debug)]
enum EngineCmd {
    Text(String),
    Binary(Bytes),
    Close(Option<oneshot::Sender<()>>),
}

/// The sending side of an open Engine.IO connection. Dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct EngineHandle {
    tx: mpsc::UnboundedSender<EngineCmd>,
    transport: Arc<AtomicU8>,
}

impl EngineHandle {
    /// Queues a text message.
    pub fn send_text(&self, s: String) {
        let _ = self.tx.send(EngineCmd::Text(s));
    }

    /// Queues a binary message.
    pub fn send_binary(&self, b: Bytes) {
        let _ = self.tx.send(EngineCmd::Binary(b));
    }

    /// Closes the connection (after flushing what is queued, best effort).
    pub fn close(&self) {
        self.close_then(None);
    }

    /// Closes the connection, then signals `done`.
    pub fn close_then(&self, done: Option<oneshot::Sender<()>>) {
        if let Err(mpsc::error::SendError(EngineCmd::Close(Some(done)))) =
            self.tx.send(EngineCmd::Close(done))
        {
            let _ = done.send(());
        }
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        transport_from_u8(self.transport.load(Ordering::Relaxed))
    }
}

fn transport_from_u8(n: u8) -> Transport {
    if n == 1 {
        Transport::Websocket
    } else {
        Transport::Polling
    }
}

fn transport_to_u8(t: Transport) -> u8 {
    match t {
        Transport::Polling => 0,
        Transport::Websocket => 1,
    }
}

/// Opens an Engine.IO connection with the first of `opts.transports`.
///
/// Returns the handle, the events, and the handshake.
pub(crate) async fn connect(
    opts: Arc<EngineOptions>,
) -> Result<(
    EngineHandle,
    mpsc::UnboundedReceiver<EngineEvent>,
    Handshake,
)> {
    let first = opts
        .transports
        .first()
        .copied()
        .ok_or_else(|| Error::Config("no transport enabled".into()))?;
    let http = Http::new(
        opts.headers.clone(),
        opts.tls.as_ref(),
        opts.cookies.clone(),
    );
    let (t_tx, t_rx) = mpsc::unbounded_channel();
    let mut guard = TaskGuard::default();
    let (handshake, transport, initial) = match first {
        Transport::Polling => {
            let (hs, stop_tx, rest) = polling::open(&opts, &http, &t_tx, &mut guard).await?;
            let tr = Tr::Polling {
                post_in_flight: false,
                paused: false,
                stop_tx,
            };
            (hs, tr, rest)
        }
        Transport::Websocket => {
            let (hs, ws) = websocket::open(&opts).await?;
            let out = websocket::start(ws, &t_tx, &mut guard);
            (hs, Tr::Ws { out }, Vec::new())
        }
    };
    debug!(sid = %handshake.sid, transport = first.as_str(), "engine.io open");
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(AtomicU8::new(transport_to_u8(first)));
    for body in initial {
        let _ = t_tx.send(TEvent::PollBody(body));
    }
    let want_upgrade = first == Transport::Polling
        && opts.upgrade
        && opts.transports.contains(&Transport::Websocket)
        && handshake.upgrades.iter().any(|u| u == "websocket");
    let probe = if want_upgrade {
        let o = opts.clone();
        let sid = handshake.sid.clone();
        Some(tokio::spawn(
            async move { websocket::probe(&o, &sid).await },
        ))
    } else {
        None
    };
    let task = EngineTask {
        http,
        post_url: opts.endpoint.polling_url(Some(&handshake.sid)),
        max_payload: handshake.max_payload.max(1),
        heartbeat: handshake.ping_interval + handshake.ping_timeout,
        ping_deadline: Instant::now() + handshake.ping_interval + handshake.ping_timeout,
        cmd_rx,
        ev_tx,
        t_tx,
        t_rx,
        queue: VecDeque::new(),
        transport,
        probe,
        upgrading: None,
        shared: shared.clone(),
        guard,
    };
    tokio::spawn(task.run());
    Ok((
        EngineHandle {
            tx: cmd_tx,
            transport: shared,
        },
        ev_rx,
        handshake,
    ))
}

/// The transport in use, as the connection task drives it.
enum Tr {
    Polling {
        post_in_flight: bool,
        paused: bool,
        stop_tx: watch::Sender<bool>,
    },
    Ws {
        out: mpsc::UnboundedSender<Message>,
    },
}

/// The connection task.
struct EngineTask {
    http: Http,
    post_url: String,
    max_payload: usize,
    heartbeat: Duration,
    ping_deadline: Instant,
    cmd_rx: mpsc::UnboundedReceiver<EngineCmd>,
    ev_tx: mpsc::UnboundedSender<EngineEvent>,
    t_tx: mpsc::UnboundedSender<TEvent>,
    t_rx: mpsc::UnboundedReceiver<TEvent>,
    queue: VecDeque<Frame>,
    transport: Tr,
    /// The WebSocket probe under way.
    probe: Option<JoinHandle<Result<Ws>>>,
    /// A probed WebSocket waiting for polling to pause.
    upgrading: Option<Ws>,
    shared: Arc<AtomicU8>,
    guard: TaskGuard,
}

async fn wait_probe(p: &mut Option<JoinHandle<Result<Ws>>>) -> Result<Ws> {
    match p {
        Some(h) => {
            let r = h.await;
            *p = None;
            r.unwrap_or_else(|e| Err(Error::transport(e)))
        }
        None => std::future::pending().await,
    }
}

impl EngineTask {
    async fn run(mut self) {
        let reason = loop {
            tokio::select! {
                ev = self.t_rx.recv() => {
                    let Some(ev) = ev else { break CloseReason::TransportClose };
                    if let Err(r) = self.on_transport_event(ev).await {
                        break r;
                    }
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(EngineCmd::Text(s)) => {
                        let mut out = String::with_capacity(s.len() + 1);
                        Packet::Message(&s).encode_into(&mut out);
                        self.queue.push_back(Frame::Text(out));
                        self.flush();
                    }
                    Some(EngineCmd::Binary(b)) => {
                        self.queue.push_back(Frame::Binary(b));
                        self.flush();
                    }
                    Some(EngineCmd::Close(done)) => {
                        self.close().await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        break CloseReason::ForcedClose;
                    }
                    None => {
                        self.close().await;
                        break CloseReason::ForcedClose;
                    }
                },
                r = wait_probe(&mut self.probe) => match r {
                    Ok(ws) => {
                        debug!("websocket probe succeeded, pausing polling");
                        self.upgrading = Some(ws);
                        if let Tr::Polling { stop_tx, .. } = &self.transport {
                            let _ = stop_tx.send(true);
                        }
                        if let Err(r) = self.maybe_finish_upgrade().await {
                            break r;
                        }
                    }
                    Err(e) => debug!("websocket probe failed, staying on polling: {e}"),
                },
                _ = tokio::time::sleep_until(self.ping_deadline) => break CloseReason::PingTimeout,
            }
        };
        debug!(?reason, "engine.io closed");
        let _ = self.ev_tx.send(EngineEvent::Closed(reason));
        drop(self.guard);
    }

    async fn on_transport_event(&mut self, ev: TEvent) -> Result<(), CloseReason> {
        let polling = matches!(self.transport, Tr::Polling { .. });
        match ev {
            TEvent::PollBody(body) if polling => {
                for item in eio::decode_payload(&body) {
                    match item {
                        Ok(PayloadItem::Packet(p)) => self.on_packet(p)?,
                        Ok(PayloadItem::Binary(b)) => self.deliver(EngineEvent::Binary(b.into())),
                        Err(e) => return Err(CloseReason::ParseError(e.to_string())),
                    }
                }
            }
            TEvent::PollPaused if polling => {
                if let Tr::Polling { paused, .. } = &mut self.transport {
                    *paused = true;
                }
                self.maybe_finish_upgrade().await?;
            }
            TEvent::PostDone(r) if polling => {
                if let Err(e) = r {
                    return Err(CloseReason::TransportError(e.to_string()));
                }
                if let Tr::Polling { post_in_flight, .. } = &mut self.transport {
                    *post_in_flight = false;
                }
                self.flush();
                self.maybe_finish_upgrade().await?;
            }
            TEvent::PollError(e) if polling => {
                return Err(CloseReason::TransportError(e.to_string()))
            }
            TEvent::WsText(t) if !polling => match Packet::decode(&t) {
                Ok(p) => self.on_packet(p)?,
                Err(e) => return Err(CloseReason::ParseError(e.to_string())),
            },
            TEvent::WsMessage(m) if !polling => self.deliver(EngineEvent::Text(m)),
            TEvent::WsBinary(b) if !polling => self.deliver(EngineEvent::Binary(b)),
            TEvent::WsClosed if !polling => return Err(CloseReason::TransportClose),
            TEvent::WsError(e) if !polling => {
                return Err(CloseReason::TransportError(e.to_string()))
            }
            // Late events of the transport we left.
            other => trace!(?other, "ignoring an event of the previous transport"),
        }
        Ok(())
    }

    fn deliver(&self, ev: EngineEvent) {
        let _ = self.ev_tx.send(ev);
    }

    fn on_packet(&mut self, p: Packet<'_>) -> Result<(), CloseReason> {
        trace!(?p, "engine.io packet");
        match p {
            Packet::Ping(data) => {
                self.ping_deadline = Instant::now() + self.heartbeat;
                self.queue
                    .push_back(Frame::Text(Packet::Pong(data).encode()));
                self.flush();
            }
            Packet::Message(m) => self.deliver(EngineEvent::Text(m.to_owned())),
            Packet::Close => return Err(CloseReason::TransportClose),
            Packet::Open(_) | Packet::Pong(_) | Packet::Upgrade | Packet::Noop => {}
        }
        Ok(())
    }

    /// Sends what is queued, if the transport can take it now.
    fn flush(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let upgrading = self.upgrading.is_some();
        match &mut self.transport {
            Tr::Polling {
                post_in_flight,
                paused,
                ..
            } => {
                if *post_in_flight || *paused || upgrading {
                    return;
                }
                let body = polling::take_payload(&mut self.queue, self.max_payload);
                *post_in_flight = true;
                let http = self.http.clone();
                let url = self.post_url.clone();
                let tx = self.t_tx.clone();
                self.guard.0.retain(|h| !h.is_finished());
                self.guard.0.push(tokio::spawn(async move {
                    let r = http
                        .request(http::Method::POST, &url, Some(body))
                        .await
                        .map(drop);
                    let _ = tx.send(TEvent::PostDone(r));
                }));
            }
            Tr::Ws { out } => {
                while let Some(f) = self.queue.pop_front() {
                    let msg = match f {
                        Frame::Text(s) => Message::text(s),
                        Frame::Binary(b) => Message::Binary(b),
                    };
                    let _ = out.send(msg);
                }
            }
        }
    }

    /// Completes the upgrade once polling is paused.
    async fn maybe_finish_upgrade(&mut self) -> Result<(), CloseReason> {
        let ready = matches!(
            self.transport,
            Tr::Polling {
                post_in_flight: false,
                paused: true,
                ..
            }
        );
        if !ready {
            return Ok(());
        }
        let Some(mut ws) = self.upgrading.take() else {
            return Ok(());
        };
        if let Err(e) = ws.send(Message::text(Packet::Upgrade.encode())).await {
            return Err(CloseReason::TransportError(e.to_string()));
        }
        debug!("upgraded to websocket");
        self.transport = Tr::Ws {
            out: websocket::start(ws, &self.t_tx, &mut self.guard),
        };
        self.shared
            .store(transport_to_u8(Transport::Websocket), Ordering::Relaxed);
        self.deliver(EngineEvent::Upgraded);
        self.flush();
        Ok(())
    }

    /// Tells the server that we leave, best effort.
    async fn close(&mut self) {
        match &self.transport {
            Tr::Polling { post_in_flight, .. } => {
                let deadline = Instant::now() + Duration::from_secs(1);
                // The server refuses overlapping POSTs: let the one in flight finish.
                if *post_in_flight {
                    while let Ok(Some(ev)) =
                        tokio::time::timeout_at(deadline, self.t_rx.recv()).await
                    {
                        if matches!(ev, TEvent::PostDone(_)) {
                            break;
                        }
                    }
                }
                // What is queued goes in its own POST before the close packet: the
                // Node.js server handles a Socket.IO packet a tick later than an
                // Engine.IO close in the same payload, so a `DISCONNECT` sharing a POST
                // with the close would be lost.
                let body = polling::take_payload(&mut self.queue, usize::MAX);
                let http = &self.http;
                let url = &self.post_url;
                let _ = tokio::time::timeout_at(deadline, async {
                    if !body.is_empty() {
                        http.request(http::Method::POST, url, Some(body)).await?;
                    }
                    http.request(http::Method::POST, url, Some(Packet::Close.encode()))
                        .await
                })
                .await;
            }
            Tr::Ws { .. } => {
                self.flush();
                let Tr::Ws { out } = &self.transport else {
                    return;
                };
                // The writer sends what is queued, then the close frame; wait (a little)
                // for the server's close frame in answer.
                let _ = out.send(Message::Close(None));
                let deadline = Instant::now() + Duration::from_secs(1);
                while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.t_rx.recv()).await {
                    if matches!(ev, TEvent::WsClosed | TEvent::WsError(_)) {
                        break;
                    }
                }
            }
        }
    }
}
