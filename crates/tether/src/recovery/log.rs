use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use tether_backend::Position;

use super::{RecoveryFailure, Room, StoredPacket, Target};

struct Entry {
    seq: u64,
    at: Instant,
    target: Target,
    packet: StoredPacket,
    size: usize,
}

/// The packets of one namespace, oldest first, bounded by age and by bytes.
///
/// Positions are the log's random epoch and consecutive sequence numbers; an offset on the
/// wire is both in hex (`"<epoch>.<seq>"`), so a forged or foreign offset is recognised as
/// unknown.
///
/// ```
/// use std::time::Duration;
/// use tether::recovery::{PacketLog, Target};
/// let mut log = PacketLog::new(Duration::from_secs(60), 1 << 20);
/// let (position, offset) = log.next_offset();
/// assert_eq!(log.parse_offset(&offset), None); // not issued until appended
/// log.push(Target::default(), tether::recovery::StoredPacket {
///     message: tether_engine::TextMessage::new("2[\"e\"]"),
///     attachments: None,
/// });
/// assert_eq!(log.parse_offset(&offset), Some(position));
/// ```
pub struct PacketLog {
    epoch: u32,
    entries: VecDeque<Entry>,
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
    max_age: Duration,
}

impl std::fmt::Debug for PacketLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketLog")
            .field("packets", &self.entries.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl PacketLog {
    /// An empty log that keeps packets for `max_age` and at most `max_bytes`.
    pub fn new(max_age: Duration, max_bytes: usize) -> Self {
        PacketLog {
            epoch: rand::rng().next_u32(),
            entries: VecDeque::new(),
            next_seq: 1,
            bytes: 0,
            max_bytes,
            max_age,
        }
    }

    /// The position and offset string the next packet will get.
    pub fn next_offset(&self) -> (Position, String) {
        (
            self.at(self.next_seq),
            format!("{:x}.{:x}", self.epoch, self.next_seq),
        )
    }

    fn at(&self, seq: u64) -> Position {
        Position::new(u64::from(self.epoch), seq)
    }

    /// Stores a packet under the position returned by [`next_offset`](Self::next_offset).
    pub fn push(&mut self, target: Target, packet: StoredPacket) {
        let size = packet.size() + target.size() + 64;
        self.bytes += size;
        self.entries.push_back(Entry {
            seq: self.next_seq,
            at: Instant::now(),
            target,
            packet,
            size,
        });
        self.next_seq += 1;
        self.evict(Instant::now());
    }

    /// Drops packets older than the age limit, then the oldest beyond the byte budget.
    pub fn evict(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let too_old = now.duration_since(front.at) > self.max_age;
            if !too_old && self.bytes <= self.max_bytes {
                break;
            }
            self.bytes -= front.size;
            self.entries.pop_front();
        }
    }

    /// The position of the newest packet (sequence 0 before the first).
    pub fn position(&self) -> Position {
        self.at(self.next_seq - 1)
    }

    /// The position named by an offset this log issued, or `None`.
    pub fn parse_offset(&self, offset: &str) -> Option<Position> {
        let (epoch, seq) = offset.split_once('.')?;
        if epoch.len() > 8 || seq.len() > 16 {
            return None;
        }
        let epoch = u32::from_str_radix(epoch, 16).ok()?;
        let seq = u64::from_str_radix(seq, 16).ok()?;
        (epoch == self.epoch && seq >= 1 && seq < self.next_seq).then(|| self.at(seq))
    }

    /// Whether every packet after `after` is still held (none was evicted), so that a
    /// replay from there has no gap.
    pub fn holds_after(&self, after: Position) -> bool {
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        after.epoch == u64::from(self.epoch) && after.seq + 1 >= first
    }

    /// The packets after position `after` that match the socket, oldest first; an error if
    /// any packet after `after` was evicted.
    pub fn read_after(
        &self,
        after: Position,
        sid: &str,
        rooms: &[Room],
    ) -> Result<Vec<StoredPacket>, RecoveryFailure> {
        if !self.holds_after(after) {
            return Err(RecoveryFailure::Evicted);
        }
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let skip = usize::try_from(after.seq + 1 - first).unwrap_or(usize::MAX);
        Ok(self
            .entries
            .iter()
            .skip(skip)
            .filter(|e| e.target.matches(sid, rooms))
            .map(|e| e.packet.clone())
            .collect())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
