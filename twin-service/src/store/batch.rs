//! The batch being accumulated for one storage write. Pure: no I/O, time is passed in.

use std::collections::BTreeMap;

use bytes::Bytes;
use dtop_proto::RigId;
use tokio::time::Instant;

use crate::rig::Chunk;
use crate::stats::RigStoreStats;

/// Lines of whole blocks, with what they are worth per rig once stored.
#[derive(Debug, Default)]
pub struct Batch {
    body: String,
    lines: usize,
    per_rig: BTreeMap<RigId, RigStoreStats>,
    /// When the first chunk went in; the batch is due `max_delay` later.
    started: Option<Instant>,
}

impl Batch {
    pub fn push(&mut self, chunk: Chunk, now: Instant) {
        self.started.get_or_insert(now);
        self.body.push_str(&chunk.lines);
        self.lines += chunk.line_count;
        let rig = self.per_rig.entry(chunk.rig).or_default();
        rig.blocks_stored += 1;
        rig.lines_written += chunk.line_count as u64;
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Empties the batch, returning the body to send and the per-rig tallies.
    pub fn take(&mut self) -> (Bytes, usize, BTreeMap<RigId, RigStoreStats>) {
        let taken = std::mem::take(self);
        (Bytes::from(taken.body), taken.lines, taken.per_rig)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn chunk(rig: &str, seq: u64, lines: &str, line_count: usize) -> Chunk {
        Chunk {
            rig: RigId::new(rig).unwrap(),
            seq,
            lines: lines.into(),
            line_count,
        }
    }

    #[test]
    fn concatenates_blocks_and_tallies_them_per_rig() {
        let mut b = Batch::default();
        assert!(b.is_empty());
        let t0 = Instant::now();
        b.push(chunk("a", 1, "x\ny\n", 2), t0);
        b.push(
            chunk("b", 1, "z\n", 1),
            t0 + std::time::Duration::from_millis(5),
        );
        b.push(chunk("a", 2, "w\n", 1), t0);
        assert_eq!(b.lines(), 4);
        assert_eq!(b.started(), Some(t0));
        let (body, lines, per_rig) = b.take();
        assert_eq!(&body[..], b"x\ny\nz\nw\n");
        assert_eq!(lines, 4);
        assert_eq!(
            per_rig[&RigId::new("a").unwrap()],
            RigStoreStats {
                blocks_stored: 2,
                lines_written: 3
            }
        );
        assert_eq!(
            per_rig[&RigId::new("b").unwrap()],
            RigStoreStats {
                blocks_stored: 1,
                lines_written: 1
            }
        );
        assert!(b.is_empty());
        assert_eq!(b.started(), None);
    }
}
