//! The seq ranges this edge lost for good that the twin's watermark has not passed yet: what it
//! declares on `rig/{rig}/loss` (`SeqLoss`) and repeats until the watermark covers them, kept
//! in `{state_dir}/lost_seqs.json` so a restart still declares them. Pure bookkeeping plus that
//! small file (blocking std I/O, like the spool); knows nothing of MQTT.
//!
//! The spool alone cannot rebuild these ranges: it forgets evicted and refused blocks, their
//! reason and their sample counts. Seqs missing from inside the spool at start that no entry
//! here explains are declared too (reason `spool_corrupt`, see [`LossLedger::unexplained`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dtop_proto::v1::{self, SeqLoss};
use serde::{Deserialize, Serialize};

use crate::backlog::{Loss, LossReason};

/// Name of the ledger file in the state directory.
pub const LEDGER_FILE_NAME: &str = "lost_seqs.json";
/// Most blocks one declaration covers; longer losses are split. Matches the twin's bound
/// (`dtop_twin::store::persisted::MAX_LOSS_BLOCKS`): a larger range is refused there.
pub const MAX_DECLARED_BLOCKS: u64 = 1 << 25;
/// Most ranges kept; beyond it the oldest is forgotten (logged by the caller). Only a twin that
/// never passes declared losses (one older than loss declarations) lets them pile up.
pub const MAX_LEDGER_RANGES: usize = 4096;

/// One lost range, as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostRange {
    pub first_seq: u64,
    /// Inclusive.
    pub last_seq: u64,
    /// Blocks in the range (every seq in it was lost).
    pub blocks: u64,
    /// Sample instants in them; 0 when unknown (`crash`, `spool_corrupt`, `skipped`).
    pub samples: u64,
    pub reason: LossReason,
    /// Edge wall clock when the loss was detected (the first part, for a merged range), ns.
    pub detected_at_ns: u64,
}

impl LostRange {
    /// The wire message for this range.
    pub fn to_seq_loss(&self, rig_id: &str, session: u64) -> SeqLoss {
        SeqLoss {
            rig_id: rig_id.to_owned(),
            session,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            blocks: self.blocks,
            samples: self.samples,
            reason: wire_reason(self.reason) as i32,
            detected_at_ns: self.detected_at_ns,
        }
    }
}

/// The wire enum of a loss reason.
pub const fn wire_reason(reason: LossReason) -> v1::LossReason {
    match reason {
        LossReason::SpoolFull => v1::LossReason::SpoolFull,
        LossReason::EvictedUnconfirmed => v1::LossReason::EvictedUnconfirmed,
        LossReason::Paused => v1::LossReason::Paused,
        LossReason::SpoolError => v1::LossReason::SpoolError,
        LossReason::Crash => v1::LossReason::Crash,
        LossReason::SpoolCorrupt => v1::LossReason::SpoolCorrupt,
        LossReason::Skipped => v1::LossReason::Skipped,
    }
}

/// Why the ledger file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a loss ledger ({source}); set it aside and start empty")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The uncovered lost ranges by first seq. See the module docs.
#[derive(Debug, Default)]
pub struct LossLedger {
    ranges: BTreeMap<u64, LostRange>,
    /// Where it is kept; `None` keeps it in memory only (tests, no state directory).
    path: Option<PathBuf>,
    /// Written (renamed into place) but not fsynced yet.
    unsynced: bool,
}

impl LossLedger {
    /// Loads `path`; a missing file is an empty ledger.
    pub fn load(path: &Path) -> Result<Self, LedgerError> {
        let ranges: Vec<LostRange> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LedgerError::Corrupt {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(LedgerError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            ranges: ranges.into_iter().map(|r| (r.first_seq, r)).collect(),
            path: Some(path.to_owned()),
            unsynced: false,
        })
    }

    /// An empty ledger kept at `path` (after a corrupt one was set aside).
    pub fn empty_at(path: &Path) -> Self {
        Self {
            path: Some(path.to_owned()),
            ..Self::default()
        }
    }

    /// Records a loss; returns the ranges to declare now (split at [`MAX_DECLARED_BLOCKS`]).
    /// A loss continuing the newest range with the same reason extends it, so a long outage
    /// stays one range; the returned pieces are the new part only, with exact counts.
    /// The second value is how many old ranges the bound pushed out.
    pub fn add(&mut self, loss: &Loss, detected_at_ns: u64) -> (Vec<LostRange>, usize) {
        let pieces = split(loss, detected_at_ns);
        for piece in &pieces {
            self.insert(*piece);
        }
        let mut forgotten = 0;
        while self.ranges.len() > MAX_LEDGER_RANGES {
            self.ranges.pop_first();
            forgotten += 1;
        }
        (pieces, forgotten)
    }

    fn insert(&mut self, piece: LostRange) {
        if let Some((_, last)) = self.ranges.range_mut(..piece.first_seq).next_back()
            && last.reason == piece.reason
            && last.last_seq.checked_add(1) == Some(piece.first_seq)
            && last.blocks + piece.blocks <= MAX_DECLARED_BLOCKS
        {
            last.last_seq = piece.last_seq;
            last.blocks += piece.blocks;
            last.samples += piece.samples;
            return;
        }
        self.ranges.insert(piece.first_seq, piece);
    }

    /// Forgets every range the twin's watermark covers; returns how many.
    pub fn covered_by(&mut self, watermark: u64) -> usize {
        let before = self.ranges.len();
        self.ranges.retain(|_, r| r.last_seq > watermark);
        before - self.ranges.len()
    }

    /// Uncovered ranges, oldest first.
    pub fn uncovered(&self) -> impl Iterator<Item = &LostRange> {
        self.ranges.values()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The parts of `holes` (seq ranges missing from inside the spool) no range explains.
    pub fn unexplained(&self, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(first, last) in holes {
            let mut at = first;
            for r in self.ranges.values() {
                if r.last_seq < at || r.first_seq > last {
                    continue;
                }
                if r.first_seq > at {
                    out.push((at, r.first_seq - 1));
                }
                at = r.last_seq.saturating_add(1);
                if at > last {
                    break;
                }
            }
            if at <= last && at >= first {
                out.push((at, last));
            }
        }
        out
    }

    /// Replaces the file (temporary file, rename): survives a SIGKILL at once; [`Self::sync`]
    /// makes it survive a power loss too.
    pub fn save(&mut self) -> Result<(), LedgerError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        let ranges: Vec<&LostRange> = self.ranges.values().collect();
        let bytes = serde_json::to_vec(&ranges).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)?;
        self.unsynced = true;
        Ok(())
    }

    /// Fsyncs the file and its directory if a save has not been synced yet.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.unsynced {
            return Ok(());
        }
        let err = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .map_err(err)?;
        }
        self.unsynced = false;
        Ok(())
    }
}

/// `loss` as declarable pieces of at most [`MAX_DECLARED_BLOCKS`], samples shared out in
/// proportion (exact for the usual single piece).
fn split(loss: &Loss, detected_at_ns: u64) -> Vec<LostRange> {
    let span = loss.last_seq - loss.first_seq + 1;
    let mut out = Vec::new();
    let mut first = loss.first_seq;
    let mut samples_left = loss.samples;
    while first <= loss.last_seq {
        let last = first
            .saturating_add(MAX_DECLARED_BLOCKS - 1)
            .min(loss.last_seq);
        let n = last - first + 1;
        let samples = if last == loss.last_seq {
            samples_left
        } else {
            let share = u128::from(loss.samples) * u128::from(n) / u128::from(span);
            u64::try_from(share).unwrap_or(u64::MAX).min(samples_left)
        };
        samples_left -= samples;
        out.push(LostRange {
            first_seq: first,
            last_seq: last,
            blocks: n,
            samples,
            reason: loss.reason,
            detected_at_ns,
        });
        match last.checked_add(1) {
            Some(next) => first = next,
            None => break,
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn loss(reason: LossReason, first_seq: u64, last_seq: u64, samples: u64) -> Loss {
        Loss {
            reason,
            blocks: last_seq - first_seq + 1,
            samples,
            first_seq,
            last_seq,
        }
    }

    #[test]
    fn contiguous_losses_of_one_reason_stay_one_range_but_are_declared_piece_by_piece() {
        let mut l = LossLedger::default();
        let (new, _) = l.add(&loss(LossReason::Paused, 10, 10, 100), 1);
        assert_eq!(new.len(), 1);
        let (new, _) = l.add(&loss(LossReason::Paused, 11, 12, 200), 2);
        assert_eq!((new[0].first_seq, new[0].samples), (11, 200));
        l.add(&loss(LossReason::SpoolFull, 13, 13, 100), 3);
        l.add(&loss(LossReason::Paused, 20, 20, 100), 4);
        let all: Vec<_> = l.uncovered().copied().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (
                all[0].first_seq,
                all[0].last_seq,
                all[0].blocks,
                all[0].samples
            ),
            (10, 12, 3, 300)
        );
        assert_eq!(all[0].detected_at_ns, 1);
    }

    #[test]
    fn the_watermark_retires_only_ranges_it_covers_entirely() {
        let mut l = LossLedger::default();
        l.add(&loss(LossReason::SpoolFull, 10, 14, 500), 0);
        l.add(&loss(LossReason::Crash, 30, 31, 0), 0);
        assert_eq!(l.covered_by(12), 0);
        assert_eq!(l.covered_by(14), 1);
        assert_eq!(l.len(), 1);
        assert_eq!(l.covered_by(100), 1);
        assert!(l.is_empty());
    }

    #[test]
    fn a_huge_loss_is_split_into_declarable_pieces_with_every_sample_counted() {
        let big = loss(
            LossReason::SpoolFull,
            0,
            2 * MAX_DECLARED_BLOCKS + 9,
            1_000_003,
        );
        let pieces = split(&big, 0);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.blocks <= MAX_DECLARED_BLOCKS));
        assert_eq!(pieces.iter().map(|p| p.blocks).sum::<u64>(), big.blocks);
        assert_eq!(pieces.iter().map(|p| p.samples).sum::<u64>(), 1_000_003);
        assert_eq!(pieces[2].last_seq, big.last_seq);
    }

    #[test]
    fn finds_holes_no_range_explains() {
        let mut l = LossLedger::default();
        l.add(&loss(LossReason::Paused, 12, 13, 0), 0);
        l.add(&loss(LossReason::Paused, 16, 16, 0), 0);
        assert_eq!(
            l.unexplained(&[(10, 17), (20, 21), (12, 13)]),
            [(10, 11), (14, 15), (17, 17), (20, 21)]
        );
    }

    #[test]
    fn the_ledger_survives_a_reload_and_a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE_NAME);
        let mut l = LossLedger::load(&path).unwrap();
        assert!(l.is_empty());
        l.add(&loss(LossReason::SpoolFull, 5, 9, 500), 42);
        l.save().unwrap();
        l.sync().unwrap();
        let again = LossLedger::load(&path).unwrap();
        assert_eq!(
            again.uncovered().copied().collect::<Vec<_>>(),
            l.uncovered().copied().collect::<Vec<_>>()
        );
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            LossLedger::load(&path),
            Err(LedgerError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_range_becomes_the_seq_loss_on_the_wire() {
        let r = split(&loss(LossReason::Crash, 7, 8, 0), 99)[0];
        let m = r.to_seq_loss("r1", 3);
        assert_eq!(
            (m.first_seq, m.last_seq, m.blocks, m.samples, m.session),
            (7, 8, 2, 0, 3)
        );
        assert_eq!(m.reason(), v1::LossReason::Crash);
        assert_eq!(m.detected_at_ns, 99);
    }
}
