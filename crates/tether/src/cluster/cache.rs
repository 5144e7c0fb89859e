//! The newest log entries this node has read, kept in memory for recoveries.
//!
//! Every node reads the whole log in order (that is how it delivers), so the entries a
//! recovering socket missed have usually just passed through this node's reader. Without
//! this cache each recovery read them again from the backend, with the newest 1,000
//! entries before its offset (to drop an entry a retry appended twice): a storm of 1,000
//! recoveries read and decoded the same range 1,000 times. With it, a recovery whose
//! offset is recent enough reads nothing from the backend but its session.
//!
//! The cache is exact, never a guess: it answers a range only when it holds every entry
//! of it (the reader pushes each entry before delivering it, and the cache knows from
//! where on it is complete), and otherwise says so, and the caller reads the backend.
//! Each entry also keeps its namespace's encoding, made once by the first to need it
//! (delivery, usually), so that a replay sends the same bytes without encoding them again.
//! Bounded by entries and by bytes ([`ClusterConfig`](super::ClusterConfig)); the oldest
//! go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use super::{ClusterMessage, Position, Record};
use crate::recovery::{json_len, StoredPacket};
use crate::sync::MutexExt as _;

/// A log entry as this node read it, and its encoding for the namespace's sockets.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The entry.
    pub(crate) record: Record,
    /// The namespace's encoding of a broadcast (`None`: nothing to send), made once.
    encoded: OnceLock<Option<StoredPacket>>,
    /// What the entry is charged in the cache's byte budget.
    cost: usize,
}

impl Entry {
    /// Wraps an entry read from the log, charged its cost.
    fn new(record: Record) -> Arc<Self> {
        let cost = cost(&record);
        Arc::new(Entry {
            record,
            encoded: OnceLock::new(),
            cost,
        })
    }

    /// Wraps an entry read from the backend for one caller, outside the cache.
    pub(crate) fn uncached(record: Record) -> Arc<Self> {
        Arc::new(Entry {
            record,
            encoded: OnceLock::new(),
            cost: 0,
        })
    }

    /// The entry's encoding, made by `encode` the first time it is asked for.
    pub(crate) fn encoded(
        &self,
        encode: impl FnOnce() -> Option<StoredPacket>,
    ) -> Option<&StoredPacket> {
        self.encoded.get_or_init(encode).as_ref()
    }
}

/// What an entry costs: its JSON twice (the decoded values and the encoded packet), its
/// attachments and a fixed overhead.
fn cost(record: &Record) -> usize {
    const OVERHEAD: usize = 160;
    let body = match &record.message {
        ClusterMessage::Broadcast(b) => {
            let data: usize = b.data.iter().map(json_len).sum();
            let attachments: usize = b.attachments.iter().map(|a| a.len()).sum();
            let rooms: usize = b.rooms.iter().chain(&b.except).map(|r| r.len() + 24).sum();
            2 * data + attachments + rooms
        }
        _ => 64,
    };
    OVERHEAD + record.uid.len() + body
}

/// The newest entries read, bounded (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct LogCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Inner {
    /// In log order.
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    /// Every entry after this position, up to the newest pushed, is held.
    floor: Position,
    /// Whether the entries held are all the log had before them (nothing evicted, and
    /// the log held no older entries when the cache was filled).
    from_beginning: bool,
}

impl LogCache {
    /// An empty cache that holds every entry after `start` once the reader pushes them.
    pub(crate) fn new(start: Position, max_entries: usize, max_bytes: usize) -> Self {
        LogCache {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                bytes: 0,
                floor: start,
                from_beginning: false,
            }),
            max_entries,
            max_bytes,
        }
    }

    /// Fills an empty cache with the entries up to its start (`newest_first`, as the
    /// backend's `recent` gives them); `complete` says whether they are all the log had.
    pub(crate) fn prefill(&self, newest_first: Vec<Record>, complete: bool) {
        let mut inner = self.inner.locked();
        if !inner.entries.is_empty() {
            return;
        }
        for r in newest_first.into_iter().rev() {
            if r.id > inner.floor {
                continue; // only what is before the start
            }
            let e = Entry::new(r);
            inner.bytes += e.cost;
            inner.entries.push_back(e);
        }
        match inner.entries.front() {
            // The oldest entry is held, but not what was just before it.
            Some(oldest) if !complete => inner.floor = oldest.record.id,
            _ => {
                inner.floor = Position::default();
                inner.from_beginning = complete;
            }
        }
        self.evict(&mut inner);
    }

    /// Adds the entry the reader just read (entries come in log order) and returns it
    /// for delivery; with the cache off, only wraps it.
    pub(crate) fn push(&self, record: Record) -> Arc<Entry> {
        if self.max_entries == 0 {
            return Entry::uncached(record);
        }
        let entry = Entry::new(record);
        let mut inner = self.inner.locked();
        inner.bytes += entry.cost;
        inner.entries.push_back(entry.clone());
        self.evict(&mut inner);
        entry
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.entries.len() > self.max_entries
            || (inner.bytes > self.max_bytes && !inner.entries.is_empty())
        {
            if let Some(old) = inner.entries.pop_front() {
                inner.bytes -= old.cost;
                inner.floor = old.record.id;
                inner.from_beginning = false;
            }
        }
    }

    /// The entries in `(after, upto]`, oldest first, or `None` when the cache cannot
    /// tell them all (`after` is older than what it holds, or `upto` newer).
    pub(crate) fn range(&self, after: Position, upto: Position) -> Option<Vec<Arc<Entry>>> {
        let inner = self.inner.locked();
        let newest = inner.entries.back().map_or(inner.floor, |e| e.record.id);
        if after < inner.floor || upto > newest {
            return None;
        }
        let start = inner.entries.partition_point(|e| e.record.id <= after);
        Some(
            inner
                .entries
                .range(start..)
                .take_while(|e| e.record.id <= upto)
                .cloned()
                .collect(),
        )
    }

    /// The newest `count` entries up to `upto` (inclusive), newest first, or `None`
    /// when the cache holds fewer and the log may have more.
    pub(crate) fn recent(&self, upto: Position, count: usize) -> Option<Vec<Arc<Entry>>> {
        let inner = self.inner.locked();
        let newest = inner.entries.back().map_or(inner.floor, |e| e.record.id);
        if upto > newest || upto < inner.floor {
            return None;
        }
        let end = inner.entries.partition_point(|e| e.record.id <= upto);
        if end < count && !inner.from_beginning {
            return None;
        }
        Some(
            inner
                .entries
                .range(..end)
                .rev()
                .take(count)
                .cloned()
                .collect(),
        )
    }

    /// Entries and bytes held.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let inner = self.inner.locked();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_backend::Broadcast;

    fn pos(seq: u64) -> Position {
        Position { epoch: 1, seq }
    }

    fn rec(seq: u64, text: &str) -> Record {
        Record {
            id: pos(seq),
            uid: "n".into(),
            seq: Some(seq),
            message: ClusterMessage::Broadcast(Broadcast {
                nsp: "/".into(),
                data: vec!["tick".into(), text.into()],
                attachments: Vec::new(),
                rooms: Vec::new(),
                except: Vec::new(),
                volatile: false,
            }),
        }
    }

    fn seqs(v: &[Arc<Entry>]) -> Vec<u64> {
        v.iter().map(|e| e.record.id.seq).collect()
    }

    #[test]
    fn answers_only_what_it_holds_whole() {
        let cache = LogCache::new(pos(10), 100, 1 << 20);
        for s in 11..=20 {
            cache.push(rec(s, "x"));
        }
        assert_eq!(
            seqs(&cache.range(pos(10), pos(20)).unwrap()),
            (11..=20).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&cache.range(pos(15), pos(17)).unwrap()), vec![16, 17]);
        assert!(cache.range(pos(15), pos(15)).unwrap().is_empty());
        assert!(
            cache.range(pos(9), pos(20)).is_none(),
            "before what it holds"
        );
        assert!(cache.range(pos(12), pos(21)).is_none(), "not read yet");
        // Before the start nothing is known, so `recent` needs enough entries.
        assert_eq!(seqs(&cache.recent(pos(20), 3).unwrap()), vec![20, 19, 18]);
        assert!(cache.recent(pos(20), 11).is_none());
    }

    #[test]
    fn eviction_moves_the_floor() {
        let cache = LogCache::new(pos(0), 5, 1 << 20);
        for s in 1..=8 {
            cache.push(rec(s, "x"));
        }
        assert_eq!(cache.usage().0, 5);
        assert!(cache.range(pos(2), pos(8)).is_none(), "entry 3 was evicted");
        assert_eq!(
            seqs(&cache.range(pos(3), pos(8)).unwrap()),
            vec![4, 5, 6, 7, 8]
        );
        let big = LogCache::new(pos(0), 100, 2_000);
        for s in 1..=50 {
            big.push(rec(s, &"y".repeat(100)));
        }
        let (n, bytes) = big.usage();
        assert!(
            bytes <= 2_000 && n < 50,
            "bounded in bytes: {n} entries, {bytes} bytes"
        );
        assert_eq!(big.range(pos(50 - n as u64), pos(50)).unwrap().len(), n);
    }

    #[test]
    fn prefill_knows_whether_it_has_the_beginning() {
        // The whole log was 3 entries: `recent` may answer with fewer than asked.
        let cache = LogCache::new(pos(3), 100, 1 << 20);
        cache.prefill(vec![rec(3, "c"), rec(2, "b"), rec(1, "a")], true);
        assert_eq!(seqs(&cache.recent(pos(3), 1000).unwrap()), vec![3, 2, 1]);
        assert_eq!(
            seqs(&cache.range(Position::default(), pos(3)).unwrap()),
            vec![1, 2, 3]
        );
        // A longer log: what came before the oldest prefilled entry is unknown.
        let cache = LogCache::new(pos(30), 100, 1 << 20);
        cache.prefill((21..=30).rev().map(|s| rec(s, "z")).collect(), false);
        assert!(cache.range(pos(20), pos(30)).is_none());
        assert_eq!(seqs(&cache.range(pos(21), pos(30)).unwrap()).len(), 9);
        assert_eq!(cache.recent(pos(30), 10).unwrap().len(), 10);
        assert!(cache.recent(pos(30), 11).is_none());
    }

    #[test]
    fn an_entry_is_encoded_once() {
        let e = Entry::new(rec(1, "x"));
        let mut calls = 0;
        for _ in 0..3 {
            e.encoded(|| {
                calls += 1;
                None
            });
        }
        assert_eq!(calls, 1);
    }
}
