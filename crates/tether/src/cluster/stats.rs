//! One cluster node's backend health and delivery lag, counted by the runtime and read by
//! the metrics (`crate::metrics`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::Position;
use crate::sync::MutexExt as _;

/// A backend operation of the cluster runtime, for its error counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BackendOp {
    /// Reading the log.
    Read,
    /// Appending to the log.
    Append,
    /// Writing session changes.
    Sessions,
}

impl BackendOp {
    pub(crate) const ALL: [BackendOp; 3] =
        [BackendOp::Read, BackendOp::Append, BackendOp::Sessions];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendOp::Read => "read",
            BackendOp::Append => "append",
            BackendOp::Sessions => "sessions",
        }
    }
}

/// The most appends waiting for their local delivery that the lag keeps track of.
const MAX_IN_FLIGHT: usize = 4096;

/// One cluster node's backend health and delivery lag, kept by the cluster runtime.
#[derive(Debug)]
pub(crate) struct ClusterStats {
    pub(crate) errors: [AtomicU64; 3],
    pub(crate) reconnects: [AtomicU64; 3],
    /// Seconds from the start of an append of this node to its delivery here.
    pub(crate) lag: Histogram,
    /// This node's appends not read back yet: the newest position of a batch, when its
    /// append started.
    pub(crate) in_flight: Mutex<VecDeque<(Position, Instant)>>,
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats {
            errors: Default::default(),
            reconnects: Default::default(),
            lag: Histogram::new(exponential_buckets(0.000_5, 2.0, 14)),
            in_flight: Mutex::new(VecDeque::new()),
        }
    }
}

impl ClusterStats {
    /// An operation failed (each failure of a retry loop counts).
    pub(crate) fn failed(&self, op: BackendOp) {
        self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An operation succeeded after failures: the backend is back.
    pub(crate) fn back(&self, op: BackendOp) {
        self.reconnects[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A batch of this node's broadcasts was appended, up to `newest`.
    pub(crate) fn appended(&self, newest: Position, started: Instant) {
        let mut q = self.in_flight.locked();
        if q.len() < MAX_IN_FLIGHT {
            q.push_back((newest, started));
        }
    }

    /// The reader delivered every entry up to `upto` here.
    pub(crate) fn delivered(&self, upto: Position) {
        let mut q = self.in_flight.locked();
        while q.front().is_some_and(|(p, _)| *p <= upto) {
            if let Some((_, t)) = q.pop_front() {
                self.lag.observe(t.elapsed().as_secs_f64());
            }
        }
    }
}
