//! Metrics in a [`prometheus_client`] registry: [`Server::register_metrics`].
//!
//! Two kinds:
//!
//! - counters updated as things happen (connections opened and closed by reason,
//!   messages and bytes in, events in and out, acks answered and timed out): plain
//!   atomics, installed by the first `register_metrics` through the server's internal
//!   observer hook, so a server that never registers them pays one load per hook;
//! - values read at scrape time by a collector (open connections, sockets by namespace
//!   and transport, the recovery counters of every namespace, sessions held and log
//!   bytes of the in-memory store, the cluster runtime's backend errors and lag): nothing
//!   more on the hot path.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tether_connections` | gauge | |
//! | `tether_connections_opened_total` | counter | `transport` (the first one) |
//! | `tether_connections_closed_total` | counter | `reason` (`send buffer full`, ...) |
//! | `tether_sockets` | gauge | `nsp`, `transport` |
//! | `tether_packets_out_total`, `tether_bytes_out_total` | counter | |
//! | `tether_outbox_packets`, `tether_outbox_bytes`, `tether_outbox_max_packets` | gauge | |
//! | `tether_messages_in_total`, `tether_message_bytes_in_total` | counter | |
//! | `tether_events_received_total`, `tether_events_sent_total` | counter | |
//! | `tether_acks_received_total`, `tether_ack_timeouts_total` | counter | |
//! | `tether_recovery_sessions_kept_total`, `..._recovered_total` | counter | `nsp` |
//! | `tether_recovery_sessions_not_kept_total` | counter | `nsp`, `reason` (`too_large`) |
//! | `tether_recovery_failed_total` | counter | `nsp`, `reason` |
//! | `tether_recovery_packets_replayed_total` | counter | `nsp` |
//! | `tether_recovery_sessions_held`, `tether_recovery_log_bytes` | gauge | `nsp` (in-memory store only) |
//! | `tether_cluster_backend_errors_total`, `..._reconnects_total` | counter | `node`, `op` (`read`, `append`, `sessions`) |
//! | `tether_cluster_lag_seconds` | histogram | `node`: from the start of an append of this node's broadcasts to their delivery here |

pub use prometheus_client;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tether_engine::{CloseReason, EngineSocket};

use crate::cluster::stats::{BackendOp, ClusterStats};
use crate::namespace::Observer;
use crate::sync::MutexExt as _;
use crate::{Payload, Server, SocketRef};

type Label = [(&'static str, &'static str); 1];

/// The counters that move as things happen. Clones share the values.
#[derive(Debug, Default, Clone)]
pub(crate) struct LiveMetrics {
    opened: Family<Label, Counter>,
    closed: Family<Label, Counter>,
    messages_in: Counter,
    bytes_in: Counter,
    events_received: Counter,
    events_sent: Counter,
    acks_received: Counter,
    ack_timeouts: Counter,
}

impl LiveMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "tether_connections_opened",
            "Engine.IO connections opened, by first transport",
            self.opened.clone(),
        );
        r.register(
            "tether_connections_closed",
            "Engine.IO connections closed, by reason",
            self.closed.clone(),
        );
        r.register(
            "tether_messages_in",
            "Engine.IO messages received",
            self.messages_in.clone(),
        );
        r.register(
            "tether_message_bytes_in",
            "Bytes of Engine.IO messages received",
            self.bytes_in.clone(),
        );
        r.register(
            "tether_events_received",
            "Socket.IO events received from clients",
            self.events_received.clone(),
        );
        r.register(
            "tether_events_sent",
            "Socket.IO events emitted to one socket (broadcasts not included)",
            self.events_sent.clone(),
        );
        r.register(
            "tether_acks_received",
            "Acknowledgements received for emit_with_ack on a socket",
            self.acks_received.clone(),
        );
        r.register(
            "tether_ack_timeouts",
            "emit_with_ack on a socket that timed out",
            self.ack_timeouts.clone(),
        );
    }
}

impl Observer for LiveMetrics {
    fn conn_opened(&self, s: &EngineSocket) {
        self.opened
            .get_or_create(&[("transport", s.transport().as_str())])
            .inc();
    }

    fn conn_closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    fn message_in(&self, bytes: usize) {
        self.messages_in.inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    fn event_received(&self, _s: &SocketRef, _args: &[Value]) {
        self.events_received.inc();
    }

    fn event_sent(&self, _s: &SocketRef, _event: &str, _payload: &Payload) {
        self.events_sent.inc();
    }

    fn ack_received(&self, _s: &SocketRef) {
        self.acks_received.inc();
    }

    fn ack_timeout(&self, _s: &SocketRef) {
        self.ack_timeouts.inc();
    }
}

/// Reads the server's state at scrape time.
struct ScrapeCollector {
    io: Server,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCollector")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, u64)],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, i64)],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.io.connection_count() as i64);
        g.encode(enc.encode_descriptor(
            "tether_connections",
            "Open Engine.IO connections",
            None,
            g.metric_type(),
        )?)?;
        let engine = self.io.service();
        let depth = engine.outbox_depth();
        for (name, help, v) in [
            (
                "tether_packets_out",
                "Engine.IO messages sent (each binary attachment counts)",
                engine.stats().packets_out(),
            ),
            (
                "tether_bytes_out",
                "Bytes of the Engine.IO messages sent, before transport framing",
                engine.stats().bytes_out(),
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, v) in [
            (
                "tether_outbox_packets",
                "Frames waiting in the connections' outboxes",
                depth.packets,
            ),
            (
                "tether_outbox_bytes",
                "Bytes waiting in the connections' outboxes",
                depth.bytes,
            ),
            (
                "tether_outbox_max_packets",
                "The most frames waiting in one connection's outbox",
                depth.max_packets,
            ),
        ] {
            let g = ConstGauge::new(v as i64);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let mut namespaces = self.io.inner().all_namespaces();
        namespaces.sort_by(|a, b| a.name().cmp(b.name()));
        let mut sockets = Vec::new();
        let (mut kept, mut recovered, mut failed, mut replayed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut not_kept = Vec::new();
        let (mut held, mut log_bytes) = (Vec::new(), Vec::new());
        for ns in &namespaces {
            let nsp = || ("nsp", ns.name().to_owned());
            let mut by_transport: BTreeMap<&'static str, i64> = BTreeMap::new();
            for s in ns.sockets() {
                *by_transport.entry(s.transport()).or_default() += 1;
            }
            for (t, n) in by_transport {
                sockets.push((vec![nsp(), ("transport", t.to_owned())], n));
            }
            if let Some(m) = ns.recovery_metrics() {
                kept.push((vec![nsp()], m.sessions_kept));
                not_kept.push((
                    vec![nsp(), ("reason", "too_large".to_owned())],
                    m.sessions_not_kept,
                ));
                recovered.push((vec![nsp()], m.sessions_recovered));
                for (reason, v) in [
                    ("unknown_session", m.failed_unknown_session),
                    ("unknown_offset", m.failed_unknown_offset),
                    ("evicted", m.failed_evicted),
                    ("still_connected", m.failed_still_connected),
                ] {
                    failed.push((vec![nsp(), ("reason", reason.to_owned())], v));
                }
                replayed.push((vec![nsp()], m.packets_replayed));
                if let Some(h) = m.sessions_held {
                    held.push((vec![nsp()], h as i64));
                }
                if let Some(b) = m.log_bytes {
                    log_bytes.push((vec![nsp()], b as i64));
                }
            }
        }
        gauge(
            &mut enc,
            "tether_sockets",
            "Connected sockets, by namespace and current transport",
            &sockets,
        )?;
        counter(
            &mut enc,
            "tether_recovery_sessions_kept",
            "Sessions kept on a recoverable disconnect",
            &kept,
        )?;
        counter(
            &mut enc,
            "tether_recovery_sessions_not_kept",
            "Sessions not kept on a recoverable disconnect (over max_session_bytes)",
            &not_kept,
        )?;
        counter(
            &mut enc,
            "tether_recovery_sessions_recovered",
            "Sessions restored by connection state recovery",
            &recovered,
        )?;
        counter(
            &mut enc,
            "tether_recovery_failed",
            "Recovery attempts that failed, by reason",
            &failed,
        )?;
        counter(
            &mut enc,
            "tether_recovery_packets_replayed",
            "Packets replayed to recovered sockets",
            &replayed,
        )?;
        gauge(
            &mut enc,
            "tether_recovery_sessions_held",
            "Sessions held by this node's in-memory store",
            &held,
        )?;
        gauge(
            &mut enc,
            "tether_recovery_log_bytes",
            "Bytes in this node's in-memory packet log",
            &log_bytes,
        )?;
        match self.io.cluster() {
            Some(c) => encode_cluster(&c.stats, &mut enc, c.uid()),
            None => Ok(()),
        }
    }
}

impl Server {
    /// Registers Tether's metrics (see [`crate::metrics`]) in your registry. The first
    /// call also starts the counters that move as things happen; call it before serving.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    ///
    /// let io = tether::Server::default();
    /// let mut registry = Registry::default();
    /// io.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("tether_connections 0"));
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.live_metrics().register(registry);
        registry.register_collector(Box::new(ScrapeCollector { io: self.clone() }));
    }

    /// The live counters of this server, started (and observing) on first use.
    fn live_metrics(&self) -> LiveMetrics {
        let mut instruments = self.inner().instruments.locked();
        if let Some(m) = instruments.get::<LiveMetrics>() {
            return m.clone();
        }
        let m = LiveMetrics::default();
        self.inner().observers.add(Arc::new(m.clone()));
        instruments.insert(m.clone());
        m
    }

    /// Every metric (see [`crate::metrics`]) in the OpenMetrics text format, for a
    /// `/metrics` endpoint without a registry of your own. The live counters count from
    /// the first call of this or [`register_metrics`](Self::register_metrics).
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::warn!("metrics: encoding failed");
        }
        out
    }
}

/// Encodes a cluster node's backend health and delivery lag.
fn encode_cluster(
    stats: &ClusterStats,
    enc: &mut DescriptorEncoder,
    node: &str,
) -> std::fmt::Result {
    let rows = |counters: &[AtomicU64; 3]| -> Vec<(Vec<(&str, String)>, u64)> {
        BackendOp::ALL
            .iter()
            .map(|op| {
                (
                    vec![("node", node.to_owned()), ("op", op.as_str().to_owned())],
                    counters[*op as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    counter(
        enc,
        "tether_cluster_backend_errors",
        "Failed backend operations of the cluster runtime, by operation",
        &rows(&stats.errors),
    )?;
    counter(
        enc,
        "tether_cluster_backend_reconnects",
        "Backend operations that succeeded again after failures, by operation",
        &rows(&stats.reconnects),
    )?;
    let mut m = enc.encode_descriptor(
        "tether_cluster_lag_seconds",
        "From the start of an append of this node to its delivery on this node",
        None,
        stats.lag.metric_type(),
    )?;
    stats.lag.encode(m.encode_family(&[("node", node)])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Position;
    use std::time::Instant;

    #[test]
    fn live_counters_move_and_are_encoded() {
        let m = LiveMetrics::default();
        m.message_in(10);
        m.message_in(5);
        m.conn_closed(CloseReason::SendBufferFull);
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("tether_messages_in_total 2"), "{text}");
        assert!(text.contains("tether_message_bytes_in_total 15"), "{text}");
        assert!(
            text.contains("tether_connections_closed_total{reason=\"send buffer full\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn cluster_lag_is_observed_when_an_append_is_read_back() {
        let s = ClusterStats::default();
        let p = |seq| Position { epoch: 0, seq };
        s.appended(p(3), Instant::now());
        s.appended(p(7), Instant::now());
        s.delivered(p(5));
        s.failed(BackendOp::Read);
        s.back(BackendOp::Read);
        let mut text = String::new();
        {
            let mut r = Registry::default();
            #[derive(Debug)]
            struct One(Arc<ClusterStats>);
            impl Collector for One {
                fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
                    encode_cluster(&self.0, &mut enc, "n1")
                }
            }
            let s = Arc::new(s);
            r.register_collector(Box::new(One(s.clone())));
            prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
            assert_eq!(s.in_flight.locked().len(), 1, "the append up to 7 waits");
        }
        assert!(
            text.contains("tether_cluster_lag_seconds_count{node=\"n1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tether_cluster_backend_errors_total{node=\"n1\",op=\"read\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tether_cluster_backend_reconnects_total{node=\"n1\",op=\"read\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_text_has_the_recovery_counters_of_every_namespace() {
        let io = Server::new(crate::ServerConfig {
            recovery: Some(crate::RecoveryConfig::default()),
            ..Default::default()
        });
        io.of("/chat");
        let text = io.metrics_text();
        assert!(text.contains("tether_connections 0"), "{text}");
        assert!(text.contains("tether_packets_out_total 0"), "{text}");
        assert!(text.contains("tether_outbox_packets 0"), "{text}");
        for nsp in ["/", "/chat"] {
            assert!(
                text.contains(&format!(
                    "tether_recovery_failed_total{{nsp=\"{nsp}\",reason=\"evicted\"}} 0"
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!("tether_recovery_sessions_held{{nsp=\"{nsp}\"}} 0")),
                "{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
