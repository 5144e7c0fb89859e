use std::sync::atomic::{AtomicU64, Ordering};

use super::RecoveryFailure;

/// Recovery counters of one namespace.
#[derive(Debug, Default)]
pub struct RecoveryMetrics {
    kept: AtomicU64,
    not_kept: AtomicU64,
    recovered: AtomicU64,
    failed_unknown_session: AtomicU64,
    failed_unknown_offset: AtomicU64,
    failed_evicted: AtomicU64,
    failed_still_connected: AtomicU64,
    replayed: AtomicU64,
}

/// A copy of the counters at one moment, plus the store's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryMetricsSnapshot {
    /// Sessions kept on a recoverable disconnect.
    pub sessions_kept: u64,
    /// Sessions not kept on a recoverable disconnect: over `max_session_bytes`.
    pub sessions_not_kept: u64,
    /// Sessions restored.
    pub sessions_recovered: u64,
    /// Attempts whose pid named no kept session.
    pub failed_unknown_session: u64,
    /// Attempts whose offset was unknown.
    pub failed_unknown_offset: u64,
    /// Attempts that needed evicted packets.
    pub failed_evicted: u64,
    /// Attempts whose pid belonged to a live socket.
    pub failed_still_connected: u64,
    /// Packets replayed.
    pub packets_replayed: u64,
    /// Sessions held now by this node's in-memory store (`None` in a cluster, where the
    /// backend holds them).
    pub sessions_held: Option<u64>,
    /// Bytes in this node's in-memory packet log now (`None` in a cluster).
    pub log_bytes: Option<u64>,
}

impl RecoveryMetrics {
    pub(crate) fn kept(&self) {
        self.kept.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn not_kept(&self) {
        self.not_kept.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self, replayed: usize) {
        self.recovered.fetch_add(1, Ordering::Relaxed);
        self.replayed.fetch_add(replayed as u64, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, why: RecoveryFailure) {
        let c = match why {
            RecoveryFailure::UnknownSession => &self.failed_unknown_session,
            RecoveryFailure::UnknownOffset => &self.failed_unknown_offset,
            RecoveryFailure::Evicted => &self.failed_evicted,
            RecoveryFailure::StillConnected => &self.failed_still_connected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, usage: Option<(usize, usize)>) -> RecoveryMetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RecoveryMetricsSnapshot {
            sessions_kept: g(&self.kept),
            sessions_not_kept: g(&self.not_kept),
            sessions_recovered: g(&self.recovered),
            failed_unknown_session: g(&self.failed_unknown_session),
            failed_unknown_offset: g(&self.failed_unknown_offset),
            failed_evicted: g(&self.failed_evicted),
            failed_still_connected: g(&self.failed_still_connected),
            packets_replayed: g(&self.replayed),
            sessions_held: usage.map(|u| u.0 as u64),
            log_bytes: usage.map(|u| u.1 as u64),
        }
    }
}
