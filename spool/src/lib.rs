//! DTOP spool: a durable, on-disk, write-ahead FIFO of opaque records keyed by a strictly
//! increasing `u64` seq. The edge spools `SampleBlock`s under their block seq until the twin's
//! `PersistedWatermark` covers them; the twin spools storage batches while InfluxDB is down.
//!
//! # Model
//! - [`Spool::append`] writes one record (`seq` above every seq appended or acked before, also
//!   across restarts) as one frame: length, seq, CRC-32C, payload ([`frame`]).
//! - [`Spool::iter`] / [`Spool::replay_from`] read the unacked records back, oldest first.
//! - [`Spool::ack`] releases every record up to a seq: the ack point is persisted (written to a
//!   temporary file and renamed over `ack`) so a restart does not replay acked records, and
//!   segments holding only acked records are deleted.
//! - Records live in segment files named after their first seq; a segment is closed once it
//!   reaches [`SpoolConfig::segment_bytes`].
//! - [`Spool::open`] rebuilds the index by scanning every segment. A segment that ends inside a
//!   record (a torn append) or in a record failing its CRC is cut back to its last intact
//!   record; this is counted in [`Spool::recovery`], never fatal. A lock file keeps a second
//!   process out of the directory.
//!
//! # Capacity
//! The segment files may take at most [`SpoolConfig::capacity_bytes`] (frame headers of 16
//! bytes included). Size it from the data rate: seconds of rig data to survive × bytes per
//! second. When an append does not fit, [`FullPolicy`] decides: [`FullPolicy::DropOldest`]
//! deletes the oldest segments and reports the unacked records lost ([`Appended::dropped`]: how
//! many, their seq range, their bytes), [`FullPolicy::Refuse`] keeps everything and returns
//! [`SpoolError::Full`] so the caller can pause its producer.
//!
//! # What survives a crash
//! Each append is a single `write(2)` to the segment file with no buffering in this process,
//! so **a SIGKILL (or panic, or OOM kill) loses nothing that `append` returned for**, under
//! every fsync policy: the kernel holds the bytes. A power loss or kernel crash loses what the
//! kernel had not yet written back, so [`FsyncPolicy`] decides what survives it:
//!
//! | policy | survives power loss |
//! | --- | --- |
//! | [`FsyncPolicy::Always`] | every record `append` returned for |
//! | [`FsyncPolicy::EveryN`]`(n)` | every record up to the last multiple of `n` appends (at most `n - 1` lost) |
//! | [`FsyncPolicy::IntervalMs`]`(ms)` | every record up to the last fsync: the first append `ms` after the previous one, or [`Spool::sync`] |
//! | [`FsyncPolicy::Never`] | whatever the kernel wrote back (Linux: typically up to 30 s old) |
//!
//! Lost records are always a suffix of what was appended: the recovery scan stops at the first
//! record that is torn or fails its CRC, and never returns garbage. With every policy but
//! `Never`, new segment files and the ack point are fsynced (file and directory) too; a lost ack
//! point only means acked records are replayed again, which consumers must tolerate anyway.
//!
//! # Layout
//! - [`frame`]: the pure record framing (length + seq + CRC-32C).
//! - [`segment`]: segment file names and the pure scan of a segment's bytes.
//! - [`ack`]: the pure ack-file format.
//! - [`policy`]: [`FullPolicy`], [`FsyncPolicy`] and the pure decisions behind them.
//! - [`spool`]: [`Spool`], which owns the directory, the index and the bookkeeping.

pub mod ack;
pub mod frame;
pub mod policy;
pub mod segment;
pub mod spool;

use std::path::PathBuf;

pub use policy::{FsyncPolicy, FullPolicy};
pub use spool::{Appended, Dropped, Record, Recovery, Replay, Spool, SpoolConfig, SpoolCounters};

/// What can go wrong; one variant per reaction.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The config is unusable; every problem is listed.
    #[error("invalid spool config: {}", .0.join("; "))]
    BadConfig(Vec<String>),
    /// Another process (or another `Spool` in this one) has the directory open.
    #[error("the spool directory {} is locked by another user: {errno}", dir.display())]
    Locked {
        dir: PathBuf,
        errno: nix::errno::Errno,
    },
    /// [`FullPolicy::Refuse`]: the record does not fit; pause the producer, or drop it.
    #[error("the spool is full: {needed_bytes} bytes needed, {free_bytes} free")]
    Full { needed_bytes: u64, free_bytes: u64 },
    /// The record can never fit (larger than the capacity or the frame limit).
    #[error("a record of {bytes} bytes exceeds the limit of {limit}")]
    RecordTooLarge { bytes: u64, limit: u64 },
    /// A caller bug: seqs must strictly increase.
    #[error("seq {seq} does not exceed the last seq {last}")]
    SeqNotIncreasing { seq: u64, last: u64 },
    /// A record changed on disk since it was scanned at open.
    #[error("record {seq} at offset {offset} of {} is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        seq: u64,
        offset: u64,
    },
    /// The file system failed.
    #[error("spool I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
