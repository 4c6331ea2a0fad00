//! The batch being accumulated for one storage write, and the blocks it carries. Pure: no I/O,
//! time is passed in.
//!
//! A block's lines never span batches: a chunk goes into one batch whole, so the blocks a
//! batch carries are exactly the blocks it makes durable once storage acknowledges it.

use bytes::Bytes;
use dtop_proto::RigId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::lineproto::{BLOCKS_MEASUREMENT, BLOCKS_OVERLAP_MEASUREMENT};
use crate::rig::Chunk;

/// One block in a batch: what storage acknowledging the batch is worth for the block's rig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub rig: RigId,
    pub seq: u64,
    /// Sample instants in the block.
    pub samples: u64,
    /// Rig time the block covers, ns (samples × sample period).
    pub span_ns: u64,
    /// Lines of the block (samples, audit line, estimated states).
    pub lines: u64,
}

impl BlockRef {
    /// The reference for a chunk, reading samples and period from its `dtop_blocks` line.
    pub fn of(chunk: &Chunk) -> Self {
        let (samples, period_ns) = block_audit(&chunk.lines).unwrap_or((0, 0));
        Self {
            rig: chunk.rig.clone(),
            seq: chunk.seq,
            samples,
            span_ns: samples.saturating_mul(period_ns),
            lines: chunk.line_count as u64,
        }
    }
}

/// `(samples, sample_period_ns)` from the `dtop_blocks` (or `dtop_blocks_overlap`) audit line among `lines` (see
/// [`crate::lineproto`] for its layout); `None` when there is none.
pub fn block_audit(lines: &str) -> Option<(u64, u64)> {
    let line = lines.lines().find(|l| {
        [BLOCKS_MEASUREMENT, BLOCKS_OVERLAP_MEASUREMENT]
            .iter()
            .any(|m| l.strip_prefix(m).is_some_and(|rest| rest.starts_with(',')))
    })?;
    // Rig ids and stream ids need no escaping, so the first space ends the tags and the last
    // one starts the timestamp.
    let fields = line.split(' ').nth(1)?;
    let int = |name: &str| -> Option<u64> {
        fields.split(',').find_map(|f| {
            f.strip_prefix(name)?
                .strip_prefix('=')?
                .strip_suffix('i')?
                .parse()
                .ok()
        })
    };
    Some((int("samples")?, int("sample_period_ns")?))
}

/// Lines of whole blocks, with the blocks they carry.
#[derive(Debug, Default)]
pub struct Batch {
    body: String,
    lines: usize,
    blocks: Vec<BlockRef>,
    /// When the first chunk went in; the batch is due `max_delay` later.
    started: Option<Instant>,
}

impl Batch {
    pub fn push(&mut self, chunk: Chunk, now: Instant) {
        self.started.get_or_insert(now);
        self.blocks.push(BlockRef::of(&chunk));
        self.body.push_str(&chunk.lines);
        self.lines += chunk.line_count;
    }

    /// Adds lines that belong to no block (a loss record): storage acknowledging the batch
    /// makes them durable, but moves no watermark.
    pub fn push_lines(&mut self, lines: &str, line_count: usize, now: Instant) {
        self.started.get_or_insert(now);
        self.body.push_str(lines);
        self.lines += line_count;
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0 && self.blocks.is_empty()
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn blocks(&self) -> &[BlockRef] {
        &self.blocks
    }

    /// Empties the batch, returning the body to send, its line count and its blocks.
    pub fn take(&mut self) -> (Bytes, usize, Vec<BlockRef>) {
        let taken = std::mem::take(self);
        (Bytes::from(taken.body), taken.lines, taken.blocks)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn chunk(rig: &str, seq: u64, lines: &str, line_count: usize) -> Chunk {
        Chunk {
            rig_start_seq: None,
            rig: RigId::new(rig).unwrap(),
            seq,
            lines: lines.into(),
            line_count,
        }
    }

    #[test]
    fn concatenates_blocks_and_lists_them_in_order() {
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
        let (body, lines, blocks) = b.take();
        assert_eq!(&body[..], b"x\ny\nz\nw\n");
        assert_eq!(lines, 4);
        let seqs: Vec<_> = blocks.iter().map(|r| (r.rig.as_str(), r.seq)).collect();
        assert_eq!(seqs, [("a", 1), ("b", 1), ("a", 2)]);
        assert!(b.is_empty());
        assert_eq!(b.started(), None);
    }

    #[test]
    fn reads_samples_and_period_from_the_audit_line() {
        let lines = "dtop_samples,rig=r,stream=0 a=1 1\n\
                     dtop_blocks,rig=r,stream=0 seq=42i,first_sample_index=1000i,samples=3i,sample_period_ns=1000000i,session=7i,backfill=false 1\n\
                     dtop_twin_state,rig=r nis=1 1\n";
        assert_eq!(block_audit(lines), Some((3, 1_000_000)));
        let r = BlockRef::of(&chunk("r", 42, lines, 3));
        assert_eq!(r.samples, 3);
        assert_eq!(r.span_ns, 3_000_000);
        assert_eq!(r.lines, 3);
        assert_eq!(block_audit("dtop_blocks_x,rig=r samples=3i 1\n"), None);
        // A block stored apart is a block too.
        assert_eq!(
            block_audit(
                "dtop_blocks_overlap,rig=r,stream=0,timeline=5/1 seq=1i,samples=4i,sample_period_ns=10i 1\n"
            ),
            Some((4, 10))
        );
        assert_eq!(block_audit("m a=1 1\n"), None);
    }
}
