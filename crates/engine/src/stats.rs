//! What an engine sent, summed over its sessions, for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the frames that an [`Engine`](crate::Engine)'s transports took from the
/// sessions' outboxes to send. Updated once per drain (a WebSocket write batch or a
/// poll), not per packet.
#[derive(Debug, Default)]
pub struct EngineStats {
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl EngineStats {
    /// Messages sent (an event with binary attachments counts once per part).
    pub fn packets_out(&self) -> u64 {
        self.packets_out.load(Ordering::Relaxed)
    }

    /// Bytes of the messages sent, before transport framing (base64 for polling).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub(crate) fn sent(&self, packets: usize, bytes: usize) {
        if packets > 0 {
            self.packets_out
                .fetch_add(packets as u64, Ordering::Relaxed);
            self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

/// How much waits in the sessions' outboxes at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Frames queued, over every session.
    pub packets: usize,
    /// Bytes queued (as the outbox counts them against `max_buffered_bytes`).
    pub bytes: usize,
    /// The most frames queued in one session.
    pub max_packets: usize,
}
