//! Positions in the cluster log, and the text clients see as offsets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in the cluster log: an epoch and a sequence within it, ordered by epoch,
/// then sequence.
///
/// Redis stream ids `"<ms>-<seq>"` are an epoch (the milliseconds) and a sequence;
/// PostgreSQL and NATS number their log with one sequence, in epoch 0. The text that
/// clients see as an offset is the backend's [`OffsetForm`]; `Display` and
/// [`Position::parse`] are the epoch-first form.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
pub struct Position {
    /// The epoch.
    pub epoch: u64,
    /// The sequence within the epoch.
    pub seq: u64,
}

impl Position {
    /// The start of the log (an empty log's last position).
    pub const ZERO: Position = Position { epoch: 0, seq: 0 };

    /// A position.
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Position { epoch, seq }
    }

    /// Parses the epoch-first text `"<epoch>-<seq>"`.
    ///
    /// ```
    /// use tether_backend::Position;
    /// assert_eq!(Position::parse("17-3"), Some(Position::new(17, 3)));
    /// assert_eq!(Position::parse("17"), None);
    /// assert_eq!(Position::parse("a-b"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = parse_pair(s)?;
        Some(Position::new(a, b))
    }
}

/// Two decimal numbers joined by `-`, each at most 20 digits.
fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// How a backend writes a [`Position`] as the offset that clients see.
///
/// ```
/// use tether_backend::{OffsetForm, Position};
/// let p = Position::new(0, 42);
/// assert_eq!(OffsetForm::SeqEpoch.format(p), "42-0");
/// assert_eq!(OffsetForm::SeqEpoch.parse("42-0"), Some(p));
/// assert_eq!(OffsetForm::EpochSeq.format(Position::new(17, 3)), "17-3");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum OffsetForm {
    /// `"<epoch>-<seq>"`: Redis stream ids.
    #[default]
    EpochSeq,
    /// `"<seq>-<epoch>"`: a log numbered by one sequence (PostgreSQL, NATS), whose
    /// offsets read `"<seq>-0"`.
    SeqEpoch,
}

impl OffsetForm {
    /// The offset text of `p`.
    pub fn format(self, p: Position) -> String {
        match self {
            OffsetForm::EpochSeq => format!("{}-{}", p.epoch, p.seq),
            OffsetForm::SeqEpoch => format!("{}-{}", p.seq, p.epoch),
        }
    }

    /// The position of an offset text; `None` when malformed.
    pub fn parse(self, s: &str) -> Option<Position> {
        let (a, b) = parse_pair(s)?;
        Some(match self {
            OffsetForm::EpochSeq => Position::new(a, b),
            OffsetForm::SeqEpoch => Position::new(b, a),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_reject_junk() {
        for form in [OffsetForm::EpochSeq, OffsetForm::SeqEpoch] {
            for p in [
                Position::ZERO,
                Position::new(1, 2),
                Position::new(u64::MAX, 7),
            ] {
                assert_eq!(form.parse(&form.format(p)), Some(p));
            }
            for bad in [
                "",
                "-",
                "1-",
                "-1",
                "1-2-3",
                "x-1",
                "+1-2",
                "123456789012345678901-0",
            ] {
                assert_eq!(form.parse(bad), None, "{bad}");
            }
        }
        assert!(Position::new(0, u64::MAX) < Position::new(1, 0));
    }
}
