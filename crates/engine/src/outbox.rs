//! A session's outgoing queue: the messages its transport has yet to send, in order,
//! bounded in messages and in bytes.
//!
//! A broadcast to N sessions is N pushes, each into a different queue, so the bytes a
//! push writes are the bytes that miss the cache (storm-5k under `perf`: a third of the
//! server's time was the push, nearly all of it waiting on the store of the entry). An
//! entry is therefore one [`Bytes`] handle, 32 bytes: a text message is its own entry,
//! and a binary message is an empty text entry (no Engine.IO text packet is empty: it
//! starts with its type digit) standing for the next entry of a second queue, which
//! sessions that send no binary never allocate. A 56-byte enum entry cost 10 % more CPU
//! per delivery in storm-5k.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::stats::EngineStats;
use crate::SendError;

/// One Engine.IO message, as the transports send it.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// A whole Engine.IO text packet (type digit included).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    /// Its bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Its size in a polling payload.
    pub(crate) fn polling_len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => binary_polling_len(b.len()),
        }
    }
}

/// The size of a binary message of `len` bytes in a polling payload: base64 with a `b`
/// prefix.
fn binary_polling_len(len: usize) -> usize {
    1 + len.div_ceil(3) * 4
}

/// What a message costs the outbox's byte budget: its bytes plus a fixed share for the
/// queue entry itself, so that a flood of tiny messages is bounded too.
fn cost(len: usize) -> usize {
    const ENTRY: usize = 48;
    ENTRY + len
}

/// Messages in order, 32 bytes an entry (see the module's documentation).
#[derive(Default, Debug)]
pub(crate) struct Frames {
    /// The text messages; an empty one stands for the next of `binaries`.
    texts: VecDeque<Utf8Bytes>,
    binaries: VecDeque<Bytes>,
}

/// The most entries a drained queue keeps room for (see [`Frames::recycle`]).
const KEEP_FRAMES: usize = 16;

impl Frames {
    fn push(&mut self, frame: Frame) {
        match frame {
            Frame::Text(t) => self.texts.push_back(t),
            Frame::Binary(b) => {
                self.texts.push_back(Utf8Bytes::default());
                self.binaries.push_back(b);
            }
        }
    }

    /// The first message's [`Frame::polling_len`].
    fn front_polling_len(&self) -> Option<usize> {
        let t = self.texts.front()?;
        Some(if t.is_empty() {
            binary_polling_len(self.binaries.front()?.len())
        } else {
            t.len()
        })
    }

    fn pop_front(&mut self) -> Option<Frame> {
        let t = self.texts.pop_front()?;
        Some(if t.is_empty() {
            Frame::Binary(self.binaries.pop_front()?)
        } else {
            Frame::Text(t)
        })
    }

    /// How many messages there are.
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The messages in order: whether each is text, and its bytes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (bool, &[u8])> {
        let mut binaries = self.binaries.iter();
        self.texts.iter().filter_map(move |t| {
            if t.is_empty() {
                binaries.next().map(|b| (false, &b[..]))
            } else {
                Some((true, t.as_bytes()))
            }
        })
    }

    /// Drops every message and shrinks buffers grown past [`KEEP_FRAMES`] (a burst) back
    /// to that, so that an idle session holds at most that much outbox memory and the
    /// next burst starts from it. The connection loop calls it once it has written what
    /// it drained.
    pub(crate) fn recycle(&mut self) {
        self.texts.clear();
        self.binaries.clear();
        if self.texts.capacity() > KEEP_FRAMES {
            self.texts.shrink_to(KEEP_FRAMES);
        }
        if self.binaries.capacity() > KEEP_FRAMES {
            self.binaries.shrink_to(KEEP_FRAMES);
        }
    }

    /// Messages and bytes, for the statistics.
    fn totals(&self) -> (usize, usize) {
        let text: usize = self.texts.iter().map(|t| t.len()).sum();
        let binary: usize = self.binaries.iter().map(|b| b.len()).sum();
        (self.texts.len(), text + binary)
    }
}

/// The outgoing queue of a session, bounded in messages and in bytes.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes a poll that waits for messages (and, on an upgrade, one that must end).
    pub(crate) notify: Notify,
    /// The WebSocket connection loop's task, woken like `notify`. Each delivery of a
    /// broadcast is a wake-up, and `Notify`'s waiter list takes a lock to wait, to wake
    /// and to stop waiting (~950 instructions per delivery in fanout-1k under callgrind);
    /// the loop is the one waiter, so a waker slot does.
    pub(crate) task: AtomicWaker,
    max_packets: usize,
    max_bytes: usize,
    stats: Arc<EngineStats>,
}

#[derive(Default)]
struct Queue {
    frames: Frames,
    /// The summed [`cost`] of `frames`.
    bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_packets: usize, max_bytes: usize, stats: Arc<EngineStats>) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            task: AtomicWaker::new(),
            max_packets,
            max_bytes,
            stats,
        }
    }

    /// Messages and bytes queued now.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let q = self.lock();
        (q.frames.len(), q.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message followed by `attachments` (binary messages), with nothing in
    /// between. A bounded push fails when the queue already holds `max_packets`, or when
    /// the messages would take it past `max_bytes` (messages alone in the queue always
    /// fit, whatever their size).
    ///
    /// Only a push into an empty queue notifies: whoever drains the queue (the WebSocket
    /// loop, a poll) registers for the notification before it looks at the queue and
    /// waits only when it found it empty, so a message that joins others is taken with
    /// them (a burst of a storm notifies once, not once per message).
    pub(crate) fn push(
        &self,
        frame: Frame,
        attachments: &[Bytes],
        bounded: bool,
    ) -> Result<(), SendError> {
        if matches!(&frame, Frame::Text(t) if t.is_empty()) {
            // No Engine.IO packet; it would read as a binary message.
            return Ok(());
        }
        let was_empty = {
            let mut q = self.lock();
            let mut added = cost(frame.len());
            for b in attachments {
                added += cost(b.len());
            }
            let was_empty = q.frames.is_empty();
            if bounded
                && !was_empty
                && (q.frames.len() >= self.max_packets || q.bytes + added > self.max_bytes)
            {
                return Err(SendError::Full);
            }
            q.bytes += added;
            q.frames.push(frame);
            for b in attachments {
                q.frames.push(Frame::Binary(b.clone()));
            }
            was_empty
        };
        if was_empty {
            self.task.wake();
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Moves everything queued to `out`, which must be empty, by swapping buffers: the
    /// queue keeps `out`'s buffers, so a busy session allocates no queue per wake-up
    /// (the connection loop [`Frames::recycle`]s `out` once it has written it, which
    /// bounds what the queue keeps).
    pub(crate) fn drain_into(&self, out: &mut Frames) {
        debug_assert!(out.is_empty());
        {
            let mut q = self.lock();
            std::mem::swap(&mut q.frames, out);
            q.bytes = 0;
        }
        let (n, bytes) = out.totals();
        self.stats.sent(n, bytes);
    }

    /// Moves queued messages to `out` while their polling encoding fits in `max_len`
    /// bytes (the first message always goes, whatever its size); the rest stays for the
    /// next poll.
    pub(crate) fn drain_for_poll(&self, out: &mut Vec<Frame>, max_len: usize) {
        let mut q = self.lock();
        let from = out.len();
        let mut len = 0;
        while let Some(frame_len) = q.frames.front_polling_len() {
            let next = len + usize::from(len > 0) + frame_len;
            if !out.is_empty() && next > max_len {
                break;
            }
            len = next;
            if let Some(frame) = q.frames.pop_front() {
                q.bytes -= cost(frame.len());
                out.push(frame);
            }
        }
        if q.frames.is_empty() {
            *q = Queue::default();
        }
        drop(q);
        let sent = &out[from..];
        self.stats
            .sent(sent.len(), sent.iter().map(Frame::len).sum::<usize>());
    }

    /// Drops everything queued and frees the queue's memory.
    pub(crate) fn clear(&self) {
        *self.lock() = Queue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_packets: usize, max_bytes: usize) -> (Outbox, Arc<EngineStats>) {
        let stats = Arc::new(EngineStats::default());
        (Outbox::new(max_packets, max_bytes, stats.clone()), stats)
    }

    #[test]
    fn an_entry_is_one_bytes_handle() {
        assert_eq!(std::mem::size_of::<Utf8Bytes>(), 32);
    }

    #[test]
    fn text_and_binary_messages_keep_their_order() {
        let (outbox, _) = outbox(100, 1 << 20);
        let bins = [Bytes::from_static(b"a"), Bytes::from_static(b"")];
        outbox.push(Frame::Text("4x".into()), &[], true).unwrap();
        outbox
            .push(Frame::Text("451-y".into()), &bins, true)
            .unwrap();
        outbox
            .push(Frame::Binary(Bytes::from_static(b"z")), &[], true)
            .unwrap();
        outbox.push(Frame::Text("4w".into()), &[], true).unwrap();
        let mut frames = Frames::default();
        outbox.drain_into(&mut frames);
        let got: Vec<_> = frames.iter().map(|(t, b)| (t, b.to_vec())).collect();
        let want = [
            (true, &b"4x"[..]),
            (true, b"451-y"),
            (false, b"a"),
            (false, b""),
            (false, b"z"),
            (true, b"4w"),
        ]
        .map(|(t, b)| (t, b.to_vec()));
        assert_eq!(got, want);
        frames.recycle();
        assert!(frames.is_empty());
    }

    #[test]
    fn drained_messages_are_counted_once_and_the_depth_follows_the_queue() {
        let (outbox, stats) = outbox(100, 1 << 20);
        outbox
            .push(Frame::Text("4hello".into()), &[], true)
            .unwrap();
        outbox
            .push(
                Frame::Text("451-x".into()),
                &[Bytes::from_static(b"abc")],
                true,
            )
            .unwrap();
        assert_eq!(outbox.depth().0, 3);
        let mut out = Vec::new();
        outbox.drain_for_poll(&mut out, 1_000_000);
        assert_eq!(outbox.depth(), (0, 0));
        assert_eq!(
            stats.packets_out(),
            3,
            "a text, an event and its attachment"
        );
        assert_eq!(stats.bytes_out(), 6 + 5 + 3);
        assert!(matches!(&out[2], Frame::Binary(b) if &b[..] == b"abc"));
        outbox
            .push(Frame::Binary(Bytes::from_static(b"xy")), &[], true)
            .unwrap();
        let mut frames = Frames::default();
        outbox.drain_into(&mut frames);
        assert_eq!(stats.packets_out(), 4);
        assert_eq!(stats.bytes_out(), 16);
        frames.recycle();
        outbox.drain_into(&mut frames);
        assert_eq!(stats.packets_out(), 4, "an empty drain counts nothing");
    }

    #[test]
    fn a_poll_takes_what_fits_and_leaves_the_rest_in_order() {
        let (outbox, _) = outbox(100, 1 << 20);
        outbox.push(Frame::Text("4aaaa".into()), &[], true).unwrap();
        outbox
            .push(Frame::Binary(Bytes::from_static(b"xyz")), &[], true)
            .unwrap();
        outbox.push(Frame::Text("4b".into()), &[], true).unwrap();
        let mut out = Vec::new();
        // "4aaaa" (5) + separator + "beHl6" (5) = 11.
        outbox.drain_for_poll(&mut out, 11);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1], Frame::Binary(b) if &b[..] == b"xyz"));
        assert_eq!(outbox.depth(), (1, cost(2)));
        out.clear();
        outbox.drain_for_poll(&mut out, 1);
        assert!(
            matches!(&out[0], Frame::Text(t) if t.as_str() == "4b"),
            "the first always goes"
        );
    }

    #[test]
    fn a_bounded_push_fails_when_full_but_a_message_alone_always_fits() {
        let (outbox, _) = outbox(2, 200);
        let big = Bytes::from(vec![0u8; 1000]);
        outbox.push(Frame::Binary(big.clone()), &[], true).unwrap();
        assert!(matches!(
            outbox.push(Frame::Text("4x".into()), &[], true),
            Err(SendError::Full)
        ));
        outbox.clear();
        outbox.push(Frame::Text("4a".into()), &[], true).unwrap();
        outbox.push(Frame::Text("4b".into()), &[], true).unwrap();
        assert!(
            matches!(
                outbox.push(Frame::Text("4c".into()), &[], true),
                Err(SendError::Full)
            ),
            "max_packets"
        );
        outbox.push(Frame::Text("4c".into()), &[], false).unwrap();
        assert_eq!(outbox.depth().0, 3, "an unbounded push ignores the bound");
    }

    #[test]
    fn an_empty_text_is_not_read_as_a_binary_message() {
        let (outbox, _) = outbox(100, 1 << 20);
        outbox.push(Frame::Text("".into()), &[], false).unwrap();
        outbox.push(Frame::Text("4a".into()), &[], false).unwrap();
        let mut frames = Frames::default();
        outbox.drain_into(&mut frames);
        assert_eq!(frames.iter().collect::<Vec<_>>(), [(true, &b"4a"[..])]);
    }
}
