//! The durable backlog: every `SampleBlock` in the on-disk spool (`dtop-spool`) until the twin's
//! `PersistedWatermark` covers it, what to replay (after a reconnect, or when the watermark
//! stalls), and the loss accounting (why, how many samples, which seqs). Owns the spool
//! directory; knows nothing of MQTT (the publisher feeds it PUBACKs and watermarks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtop_proto::Message;
use dtop_proto::v1::SampleBlock;
use dtop_spool::{Dropped, FsyncPolicy, FullPolicy, Spool, SpoolConfig, SpoolError};
use tokio::time::Instant;

use crate::batcher::block_sample_count;

/// How the backlog is set up (from `[spool]` and the manifest).
#[derive(Debug, Clone)]
pub struct BacklogConfig {
    pub dir: PathBuf,
    pub capacity_bytes: u64,
    pub full: FullPolicy,
    pub fsync: FsyncPolicy,
    /// How long the watermark may stay below blocks appended before a replay of them starts.
    pub stall_after: Duration,
}

/// Why samples were given up; the label of `samples_dropped_by_reason`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// Drop-oldest evicted blocks that never reached the broker: lost for sure.
    SpoolFull,
    /// Drop-oldest evicted blocks the broker had acknowledged but no watermark covered yet:
    /// stored unless the twin lost them too, but no longer re-sendable.
    EvictedUnconfirmed,
    /// `full_policy = "pause"`: the spool was full and the new block was not taken.
    Paused,
    /// The spool failed to write; the block went on in memory only and was then lost.
    SpoolError,
    /// Seqs the acquisition task numbered but the spool never received (the edge died in
    /// between). No longer declared (see `Skipped`); kept so older ledgers still load.
    Crash,
    /// Seqs missing from inside the spool at start that no recorded loss explains (a corrupt
    /// segment cut back on open, or a loss the previous run could not record). Their sample
    /// count is unknown.
    SpoolCorrupt,
    /// Seqs between the spool's last one and where this run starts: reserved by the previous
    /// run (`seq_reservation`), never used or lost in a crash. Found at start; most carried no
    /// data, so they are counted apart from lost blocks. Their sample count is unknown (0).
    Skipped,
}

impl LossReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::SpoolFull => "spool_full",
            LossReason::EvictedUnconfirmed => "evicted_unconfirmed",
            LossReason::Paused => "paused",
            LossReason::SpoolError => "spool_error",
            LossReason::Crash => "crash",
            LossReason::SpoolCorrupt => "spool_corrupt",
            LossReason::Skipped => "skipped",
        }
    }
}

/// The seqs after `last_used` (the highest seq known to have been used) below `start_seq`,
/// as a `skipped` loss; `None` when there are none.
pub fn skipped_gap(last_used: u64, start_seq: u64) -> Option<Loss> {
    let first = last_used.checked_add(1)?;
    (start_seq > first).then(|| Loss {
        reason: LossReason::Skipped,
        blocks: start_seq - first,
        samples: 0,
        first_seq: first,
        last_seq: start_seq - 1,
    })
}

/// The highest seq the spool in `dir` holds or acknowledged, read without opening (or
/// locking, or repairing) it: the ack point, and the last intact record of the newest
/// non-empty segment. `None` for a missing or empty spool. Cheap: one segment is read.
pub fn spool_last_seq(dir: &Path) -> std::io::Result<Option<u64>> {
    use dtop_spool::{ack, segment};
    let acked = match std::fs::read(dir.join(ack::FILE_NAME)) {
        Ok(bytes) => ack::decode(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut firsts = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if let Some(first) = entry
                    .file_name()
                    .to_str()
                    .and_then(segment::parse_file_name)
                {
                    firsts.push(first);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(acked),
        Err(e) => return Err(e),
    }
    firsts.sort_unstable();
    for first in firsts.into_iter().rev() {
        let bytes = std::fs::read(dir.join(segment::file_name(first)))?;
        if let Some(last) = segment::scan(&bytes, None).records.last() {
            return Ok(acked.max(Some(last.seq)));
        }
    }
    Ok(acked)
}

/// The index after the last sample of the newest block of `stream_id` the spool in `dir`
/// holds, read without opening (or locking, or repairing) it: where a restarted edge's loss
/// accounting resumes (`None` for a missing spool or one without such a block). Newest
/// segments first; stops at the first segment holding one.
pub fn spool_stream_end_index(dir: &Path, stream_id: u32) -> std::io::Result<Option<u64>> {
    use dtop_spool::{frame, segment};
    let mut firsts = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                if let Some(first) = entry?
                    .file_name()
                    .to_str()
                    .and_then(segment::parse_file_name)
                {
                    firsts.push(first);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    firsts.sort_unstable();
    for first in firsts.into_iter().rev() {
        let bytes = std::fs::read(dir.join(segment::file_name(first)))?;
        for record in segment::scan(&bytes, None).records.iter().rev() {
            let at = usize::try_from(record.offset).unwrap_or(usize::MAX);
            let Some(from) = bytes.get(at..) else {
                continue;
            };
            let frame::Decoded::Record { payload, .. } = frame::decode(from) else {
                continue;
            };
            // A record that is not a block is not ours to judge here; the spool reports it.
            if let Ok(block) = SampleBlock::decode(payload)
                && block.stream_id == stream_id
            {
                return Ok(Some(
                    block.first_sample_index + block_sample_count(&block) as u64,
                ));
            }
        }
    }
    Ok(None)
}

/// Blocks given up at once, for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub reason: LossReason,
    pub blocks: u64,
    pub samples: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// What became of a block offered to [`Backlog::append`].
#[derive(Debug)]
pub enum Admitted {
    /// In the spool; `losses` are blocks evicted to make room.
    Stored { losses: Vec<Loss> },
    /// Not taken: the spool is full and the policy is to pause.
    Paused(Loss),
}

/// What a watermark released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Released {
    pub blocks: u64,
    pub samples: u64,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    samples: u64,
    /// Rig time the block covers, ns (stream 0 only: the backlog is in seconds of rig data).
    rig_ns: u64,
    appended_at: Instant,
}

/// The spool plus what the publisher needs to decide about it. See the module docs.
#[derive(Debug)]
pub struct Backlog {
    spool: Spool,
    stall_after: Duration,
    /// Unacked blocks by seq (mirrors the spool's index).
    meta: BTreeMap<u64, Meta>,
    /// Unacked seqs the broker acknowledged (PUBACK): evicting them is not a certain loss.
    delivered: BTreeSet<u64>,
    watermark: Option<u64>,
    /// When the watermark last moved (or the backlog last became non-empty).
    progress_at: Instant,
    /// Consecutive stall replays without progress; doubles the wait each time.
    stalls: u32,
    /// Seq ranges missing between the ack point and the last record when the spool was
    /// opened (what earlier runs evicted or never took, or a corrupt segment cut back).
    holes_at_open: Vec<(u64, u64)>,
    /// Next seq to replay and the last one this replay covers.
    replay: Option<(u64, u64)>,
}

impl Backlog {
    /// Opens the spool and indexes what it holds (decoding each record for its sample count).
    pub fn open(config: &BacklogConfig) -> Result<Self, SpoolError> {
        let spool = Spool::open(
            SpoolConfig::new(&config.dir, config.capacity_bytes)
                .with_full(config.full)
                .with_fsync(config.fsync),
        )?;
        let now = Instant::now();
        let mut meta = BTreeMap::new();
        let mut holes_at_open = Vec::new();
        let mut expected = spool.acked_seq().and_then(|a| a.checked_add(1));
        for record in spool.iter() {
            let record = record?;
            if let Some(e) = expected
                && record.seq > e
            {
                holes_at_open.push((e, record.seq - 1));
            }
            expected = record.seq.checked_add(1);
            let m = SampleBlock::decode(record.payload.as_slice())
                .map(|b| meta_of(&b, now))
                .unwrap_or(Meta {
                    samples: 0,
                    rig_ns: 0,
                    appended_at: now,
                });
            meta.insert(record.seq, m);
        }
        Ok(Self {
            spool,
            stall_after: config.stall_after,
            meta,
            delivered: BTreeSet::new(),
            watermark: None,
            progress_at: now,
            stalls: 0,
            holes_at_open,
            replay: None,
        })
    }

    /// Seq ranges missing from inside the spool when it was opened, oldest first.
    pub fn holes_at_open(&self) -> &[(u64, u64)] {
        &self.holes_at_open
    }

    /// Seqs the previous run reserved but never spooled (never used, or lost in a crash):
    /// everything between the spool's last seq and `start_seq`, where this run starts. `None`
    /// when the spool holds no seq at all (the twin's watermark bounds the gap then).
    pub fn crash_gap(&self, start_seq: u64) -> Option<Loss> {
        skipped_gap(self.spool.last_seq()?, start_seq)
    }

    /// Appends `block` (before it is published).
    pub fn append(&mut self, block: &SampleBlock) -> Result<Admitted, SpoolError> {
        let now = Instant::now();
        if self.meta.is_empty() {
            self.progress_at = now;
        }
        let payload = block.encode_to_vec();
        match self.spool.append(block.seq, &payload) {
            Ok(appended) => {
                let losses = appended
                    .dropped
                    .map(|d| self.evicted(d))
                    .unwrap_or_default();
                self.meta.insert(block.seq, meta_of(block, now));
                Ok(Admitted::Stored { losses })
            }
            Err(SpoolError::Full { .. }) => Ok(Admitted::Paused(Loss {
                reason: LossReason::Paused,
                blocks: 1,
                samples: block_sample_count(block) as u64,
                first_seq: block.seq,
                last_seq: block.seq,
            })),
            Err(e) => Err(e),
        }
    }

    /// Splits evicted records into certain losses and unconfirmed ones.
    fn evicted(&mut self, d: Dropped) -> Vec<Loss> {
        let seqs: Vec<u64> = self
            .meta
            .range(d.first_seq..=d.last_seq)
            .map(|(&s, _)| s)
            .collect();
        let mut out: Vec<Loss> = Vec::new();
        for seq in seqs {
            let Some(m) = self.meta.remove(&seq) else {
                continue;
            };
            let reason = if self.delivered.remove(&seq) {
                LossReason::EvictedUnconfirmed
            } else {
                LossReason::SpoolFull
            };
            // One loss per contiguous run of one reason, so each is a declarable seq range.
            match out
                .last_mut()
                .filter(|l| l.reason == reason && l.last_seq + 1 == seq)
            {
                Some(l) => {
                    l.blocks += 1;
                    l.samples += m.samples;
                    l.last_seq = seq;
                }
                None => out.push(Loss {
                    reason,
                    blocks: 1,
                    samples: m.samples,
                    first_seq: seq,
                    last_seq: seq,
                }),
            }
        }
        out
    }

    /// The broker acknowledged block `seq`.
    pub fn on_delivered(&mut self, seq: u64) {
        if self.meta.contains_key(&seq) {
            self.delivered.insert(seq);
        }
    }

    /// The twin's watermark: releases every block up to it.
    pub fn on_watermark(&mut self, seq: u64, now: Instant) -> Result<Released, SpoolError> {
        if self.watermark.is_some_and(|w| seq <= w) {
            return Ok(Released::default());
        }
        self.watermark = Some(seq);
        self.progress_at = now;
        self.stalls = 0;
        // Never ack beyond what was appended: the spool refuses later appends below its ack
        // point, and a watermark above our seqs means another state directory numbered them.
        let Some(last) = self.spool.last_seq() else {
            return Ok(Released::default());
        };
        let up_to = seq.min(last);
        self.release_through(up_to)
    }

    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Replays every unacked block up to the newest appended, oldest first (after a
    /// reconnect).
    pub fn replay_all(&mut self) {
        if let (Some((&first, _)), Some((&last, _))) =
            (self.meta.first_key_value(), self.meta.last_key_value())
        {
            self.replay = Some((first, last));
        }
    }

    /// Replays the unacked blocks with a seq below `end` (what an earlier run left).
    pub fn replay_below(&mut self, end: u64) {
        let last = self.meta.range(..end).next_back().map(|(&s, _)| s);
        if let (Some((&first, _)), Some(last)) = (self.meta.first_key_value(), last) {
            self.replay = Some((first, last));
        }
    }

    /// True when a replay is under way.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Whether the watermark has stopped short of blocks appended long enough ago: if so, a
    /// replay of the unacked blocks starts (the wait doubles per fruitless replay, up to 8×).
    /// `Err(gap)` when replaying cannot help: the seq after the watermark is not in the spool
    /// (lost, so the twin's watermark cannot pass it).
    pub fn check_stall(&mut self, now: Instant) -> Result<bool, u64> {
        if self.replay.is_some() {
            return Ok(false);
        }
        let Some((&oldest, m)) = self.meta.first_key_value() else {
            return Ok(false);
        };
        let wait = self.stall_after * (1u32 << self.stalls.min(3));
        let since = now.saturating_duration_since(self.progress_at.max(m.appended_at));
        if since < wait {
            return Ok(false);
        }
        if let Some(w) = self.watermark
            && w + 1 < oldest
        {
            return Err(w + 1);
        }
        self.stalls = self.stalls.saturating_add(1);
        self.progress_at = now;
        self.replay_all();
        Ok(true)
    }

    /// When the watermark waits for a seq this edge no longer has, it cannot pass it until the
    /// twin learns of the loss, and waiting would fill the spool. So the oldest blocks the broker
    /// acknowledged (PUBACK) at least `stall_after` ago are released unconfirmed; they stop at
    /// the first block the broker has not acknowledged.
    pub fn release_past_gap(&mut self, now: Instant) -> Result<Released, SpoolError> {
        let (Some(w), Some((&oldest, _))) = (self.watermark, self.meta.first_key_value()) else {
            return Ok(Released::default());
        };
        if w + 1 >= oldest {
            return Ok(Released::default());
        }
        let mut up_to = None;
        for (&seq, m) in &self.meta {
            if !self.delivered.contains(&seq)
                || now.saturating_duration_since(m.appended_at) < self.stall_after
            {
                break;
            }
            up_to = Some(seq);
        }
        let Some(up_to) = up_to else {
            return Ok(Released::default());
        };
        self.release_through(up_to)
    }

    /// Drops every block up to `up_to` from the spool and the index.
    fn release_through(&mut self, up_to: u64) -> Result<Released, SpoolError> {
        self.spool.ack(up_to)?;
        let keep = self.meta.split_off(&(up_to + 1));
        let released = std::mem::replace(&mut self.meta, keep);
        self.delivered = self.delivered.split_off(&(up_to + 1));
        Ok(Released {
            blocks: released.len() as u64,
            samples: released.values().map(|m| m.samples).sum(),
        })
    }

    /// The next block to replay, flagged backfill; `None` when the replay is done.
    pub fn next_replay(&mut self) -> Result<Option<SampleBlock>, SpoolError> {
        let Some((next, end)) = self.replay else {
            return Ok(None);
        };
        let record = self.spool.replay_from(next).next().transpose()?;
        let Some(record) = record.filter(|r| r.seq <= end) else {
            self.replay = None;
            return Ok(None);
        };
        self.replay = Some((record.seq + 1, end));
        match SampleBlock::decode(record.payload.as_slice()) {
            Ok(mut block) => {
                block.backfill = true;
                Ok(Some(block))
            }
            // The CRC passed, so this is a bug in whoever wrote it; skip rather than loop.
            Err(_) => self.next_replay(),
        }
    }

    /// Fsyncs unsynced appends (for [`FsyncPolicy::IntervalMs`] on a quiet spool).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.spool.sync()
    }

    /// Unacked blocks.
    pub fn blocks(&self) -> usize {
        self.meta.len()
    }

    /// Unacked samples.
    pub fn samples(&self) -> u64 {
        self.meta.values().map(|m| m.samples).sum()
    }

    /// Rig time waiting for the watermark, s.
    pub fn backlog_s(&self) -> f64 {
        self.meta.values().map(|m| m.rig_ns).sum::<u64>() as f64 * 1e-9
    }

    pub fn unacked_bytes(&self) -> u64 {
        self.spool.unacked_bytes()
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

fn meta_of(block: &SampleBlock, now: Instant) -> Meta {
    let samples = block_sample_count(block) as u64;
    Meta {
        samples,
        rig_ns: if block.stream_id == 0 {
            samples.saturating_mul(block.sample_period_ns)
        } else {
            0
        },
        appended_at: now,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_proto::v1::ChannelSamples;

    fn block(seq: u64, samples: usize) -> SampleBlock {
        SampleBlock {
            rig_id: "r".into(),
            seq,
            sample_period_ns: 1_000_000,
            channels: vec![ChannelSamples {
                channel_id: 0,
                raw: vec![7; samples],
            }],
            ..SampleBlock::default()
        }
    }

    fn config(dir: &std::path::Path, capacity_bytes: u64, full: FullPolicy) -> BacklogConfig {
        BacklogConfig {
            dir: dir.to_owned(),
            capacity_bytes,
            full,
            fsync: FsyncPolicy::Never,
            stall_after: Duration::from_secs(10),
        }
    }

    fn stored(a: Admitted) -> Vec<Loss> {
        match a {
            Admitted::Stored { losses } => losses,
            Admitted::Paused(l) => panic!("paused: {l:?}"),
        }
    }

    #[test]
    fn keeps_blocks_until_the_watermark_covers_them_even_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let mut b = Backlog::open(&c).unwrap();
        for s in 0..5 {
            assert!(stored(b.append(&block(s, 10)).unwrap()).is_empty());
        }
        b.on_delivered(0);
        let r = b.on_watermark(1, Instant::now()).unwrap();
        assert_eq!(
            r,
            Released {
                blocks: 2,
                samples: 20
            }
        );
        drop(b);
        let mut b = Backlog::open(&c).unwrap();
        assert_eq!(b.blocks(), 3);
        assert_eq!(b.samples(), 30);
        assert!((b.backlog_s() - 0.03).abs() < 1e-9);
        b.replay_all();
        let mut seqs = Vec::new();
        while let Some(block) = b.next_replay().unwrap() {
            assert!(block.backfill);
            seqs.push(block.seq);
        }
        assert_eq!(seqs, [2, 3, 4]);
        assert!(!b.replaying());
        b.replay_below(4);
        assert_eq!(b.next_replay().unwrap().map(|b| b.seq), Some(2));
        assert_eq!(b.next_replay().unwrap().map(|b| b.seq), Some(3));
        assert!(b.next_replay().unwrap().is_none());
        b.replay_below(2);
        assert!(!b.replaying());
    }

    #[test]
    fn a_watermark_above_every_appended_seq_does_not_block_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
        b.append(&block(3, 1)).unwrap();
        b.on_watermark(1_000, Instant::now()).unwrap();
        assert_eq!(b.blocks(), 0);
        assert!(stored(b.append(&block(4, 1)).unwrap()).is_empty());
    }

    #[test]
    fn drop_oldest_counts_undelivered_blocks_as_lost_and_delivered_ones_as_unconfirmed() {
        let dir = tempfile::tempdir().unwrap();
        // 4 KiB capacity, 1 KiB segments: about 2 records of 400 samples per segment.
        let mut b = Backlog::open(&config(dir.path(), 4096, FullPolicy::DropOldest)).unwrap();
        let mut losses = Vec::new();
        for s in 0..20 {
            if s < 3 {
                b.append(&block(s, 400)).unwrap();
                b.on_delivered(s);
                continue;
            }
            losses.extend(stored(b.append(&block(s, 400)).unwrap()));
        }
        let lost: u64 = losses
            .iter()
            .filter(|l| l.reason == LossReason::SpoolFull)
            .map(|l| l.samples)
            .sum();
        let unconfirmed: u64 = losses
            .iter()
            .filter(|l| l.reason == LossReason::EvictedUnconfirmed)
            .map(|l| l.samples)
            .sum();
        assert_eq!(unconfirmed, 1200);
        assert_eq!(lost + unconfirmed + b.samples(), 20 * 400);
        assert!(lost > 0);
    }

    #[test]
    fn pause_refuses_new_blocks_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 4096, FullPolicy::Refuse)).unwrap();
        let mut paused = 0;
        for s in 0..20 {
            if let Admitted::Paused(l) = b.append(&block(s, 400)).unwrap() {
                assert_eq!((l.reason, l.samples), (LossReason::Paused, 400));
                paused += 1;
            }
        }
        assert!(paused > 0);
        assert_eq!(b.blocks() + paused, 20);
    }

    #[test]
    fn a_stalled_watermark_starts_a_replay_unless_a_lost_seq_blocks_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
        let t0 = Instant::now();
        b.append(&block(1, 1)).unwrap();
        b.append(&block(2, 1)).unwrap();
        b.on_watermark(1, t0).unwrap();
        assert_eq!(b.check_stall(t0 + Duration::from_secs(5)), Ok(false));
        assert_eq!(b.check_stall(t0 + Duration::from_secs(11)), Ok(true));
        assert_eq!(b.next_replay().unwrap().map(|b| b.seq), Some(2));
        assert!(b.next_replay().unwrap().is_none());
        // The second wait is twice as long.
        assert_eq!(b.check_stall(t0 + Duration::from_secs(25)), Ok(false));
        assert_eq!(b.check_stall(t0 + Duration::from_secs(32)), Ok(true));
        while b.next_replay().unwrap().is_some() {}
        // Seq 3 never reached the spool: no replay can fill it.
        b.append(&block(4, 1)).unwrap();
        b.on_watermark(2, t0 + Duration::from_secs(40)).unwrap();
        assert_eq!(b.check_stall(t0 + Duration::from_secs(60)), Err(3));
    }

    #[test]
    fn past_a_lost_seq_releases_only_old_blocks_the_broker_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
        let t0 = Instant::now();
        b.append(&block(1, 1)).unwrap();
        b.on_watermark(1, t0).unwrap();
        // Seq 2 is lost.
        for s in 3..=6 {
            b.append(&block(s, 10)).unwrap();
        }
        for s in [3, 4, 6] {
            b.on_delivered(s);
        }
        assert_eq!(b.release_past_gap(t0).unwrap(), Released::default());
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(
            b.release_past_gap(later).unwrap(),
            Released {
                blocks: 2,
                samples: 20
            }
        );
        assert_eq!(b.blocks(), 2);
        // Without a gap nothing is released on PUBACKs alone.
        b.on_watermark(5, later).unwrap();
        assert_eq!(b.release_past_gap(later).unwrap(), Released::default());
        assert_eq!(b.blocks(), 1);
    }

    #[test]
    fn reopening_finds_the_seqs_missing_inside_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let mut b = Backlog::open(&c).unwrap();
        for s in [1, 2, 5, 6, 9] {
            b.append(&block(s, 1)).unwrap();
        }
        b.on_watermark(1, Instant::now()).unwrap();
        drop(b);
        let b = Backlog::open(&c).unwrap();
        assert_eq!(b.holes_at_open(), [(3, 4), (7, 8)]);
        // Past the ack point, the seqs before the oldest record are missing too.
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let mut b = Backlog::open(&c).unwrap();
        b.append(&block(1, 1)).unwrap();
        b.on_watermark(1, Instant::now()).unwrap();
        b.append(&block(4, 1)).unwrap();
        drop(b);
        assert_eq!(Backlog::open(&c).unwrap().holes_at_open(), [(2, 3)]);
    }

    #[test]
    fn evictions_are_reported_as_contiguous_runs_of_one_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 4096, FullPolicy::DropOldest)).unwrap();
        let mut losses = Vec::new();
        for s in 0..30 {
            losses.extend(stored(b.append(&block(s, 400)).unwrap()));
            if s % 3 == 0 {
                b.on_delivered(s);
            }
        }
        assert!(!losses.is_empty());
        for l in &losses {
            assert_eq!(l.blocks, l.last_seq - l.first_seq + 1, "{l:?}");
        }
        // Runs never overlap and come in seq order.
        for w in losses.windows(2) {
            assert!(w[0].last_seq < w[1].first_seq);
        }
    }

    #[test]
    fn finds_the_seqs_a_previous_run_reserved_but_never_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
        assert_eq!(b.crash_gap(9), None, "an empty spool proves nothing");
        b.append(&block(4, 1)).unwrap();
        assert_eq!(b.crash_gap(5), None);
        let l = b.crash_gap(7).unwrap();
        assert_eq!((l.blocks, l.first_seq, l.last_seq), (2, 5, 6));
        assert_eq!((l.reason, l.samples), (LossReason::Skipped, 0));
        assert_eq!(skipped_gap(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn reads_the_spools_last_seq_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        assert_eq!(spool_last_seq(&spool_dir).unwrap(), None);
        {
            let mut b =
                Backlog::open(&config(&spool_dir, 1 << 20, FullPolicy::DropOldest)).unwrap();
            assert_eq!(spool_last_seq(&spool_dir).unwrap(), None);
            for seq in [3, 4, 9] {
                b.append(&block(seq, 1)).unwrap();
            }
            assert_eq!(spool_last_seq(&spool_dir).unwrap(), Some(9));
            // Everything acknowledged: the segments go, the ack point remembers.
            b.on_watermark(9, Instant::now()).unwrap();
        }
        assert_eq!(spool_last_seq(&spool_dir).unwrap(), Some(9));
        let b = Backlog::open(&config(&spool_dir, 1 << 20, FullPolicy::DropOldest)).unwrap();
        assert_eq!(b.spool().last_seq(), Some(9));
    }

    #[test]
    fn finds_where_the_newest_spooled_block_of_a_stream_ends() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        assert_eq!(spool_stream_end_index(&spool_dir, 0).unwrap(), None);
        let mut b = Backlog::open(&config(&spool_dir, 1 << 20, FullPolicy::DropOldest)).unwrap();
        let mut firmware = block(3, 10);
        firmware.first_sample_index = 500;
        b.append(&firmware).unwrap();
        // A polled stream's block after it does not hide it.
        let mut polled = block(4, 2);
        polled.stream_id = 1;
        b.append(&polled).unwrap();
        assert_eq!(spool_stream_end_index(&spool_dir, 0).unwrap(), Some(510));
        assert_eq!(
            spool_stream_end_index(&spool_dir, 1).unwrap(),
            Some(polled.first_sample_index + 2)
        );
    }
}
