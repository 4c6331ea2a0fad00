//! The [`Spool`]: owns the spool directory (segment files, ack file, lock), the in-memory index
//! of unacked records, and the capacity and fsync bookkeeping. Synchronous, blocking file I/O;
//! async callers run it on a blocking thread or accept a short stall.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, info, warn};

use crate::frame::{self, Decoded, MAX_PAYLOAD_BYTES};
use crate::policy::{self, FsyncPolicy, FullPolicy, Room, SegmentSize};
use crate::segment::{self, Tail};
use crate::{SpoolError, ack};

/// Default largest segment file, bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Smallest accepted capacity, bytes.
pub const MIN_CAPACITY_BYTES: u64 = 4096;
/// Name of the lock file that keeps a second process out of the directory.
pub const LOCK_FILE_NAME: &str = "lock";

/// How a spool is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory owned by the spool (created if missing).
    pub dir: PathBuf,
    /// Most bytes the segment files may take together (headers included). Size it from the
    /// data rate: seconds to survive × bytes per second.
    pub capacity_bytes: u64,
    /// Largest segment file; capped at a quarter of the capacity so that dropping the oldest
    /// segment frees at most a quarter of the spool.
    pub segment_bytes: u64,
    pub full: FullPolicy,
    pub fsync: FsyncPolicy,
}

impl SpoolConfig {
    /// A config with the default segment size, [`FullPolicy::DropOldest`] and
    /// [`FsyncPolicy::Never`].
    pub fn new(dir: impl Into<PathBuf>, capacity_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            capacity_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            full: FullPolicy::default(),
            fsync: FsyncPolicy::default(),
        }
    }

    pub fn with_full(mut self, full: FullPolicy) -> Self {
        self.full = full;
        self
    }

    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }

    /// The segment size actually used.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(self.capacity_bytes / 4).max(1)
    }

    /// Every problem with the config, at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("dir is empty".to_owned());
        }
        if self.capacity_bytes < MIN_CAPACITY_BYTES {
            problems.push(format!(
                "capacity_bytes is {}; must be at least {MIN_CAPACITY_BYTES}",
                self.capacity_bytes
            ));
        }
        if self.segment_bytes == 0 {
            problems.push("segment_bytes must be at least 1".to_owned());
        }
        if let FsyncPolicy::EveryN(0) = self.fsync {
            problems.push("fsync every_n must be at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Unacked records deleted to make room ([`FullPolicy::DropOldest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Frame bytes of those records.
    pub bytes: u64,
}

/// What an append did besides storing the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Appended {
    /// Unacked records deleted to make room, if any.
    pub dropped: Option<Dropped>,
    /// Whether the record was fsynced before `append` returned.
    pub synced: bool,
}

/// What opening found and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    pub segments_scanned: u64,
    pub records_found: u64,
    /// Segments that ended inside a record (a torn append), cut back to the last intact one.
    pub torn_tails: u64,
    /// Segments with a record failing its CRC or seq order, cut back before it.
    pub corrupt_segments: u64,
    /// Bytes cut off for either reason.
    pub truncated_bytes: u64,
    /// The ack file was unreadable; every record was kept as unacked.
    pub ack_file_damaged: bool,
}

/// Running totals since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolCounters {
    pub appended_total: u64,
    pub appended_bytes_total: u64,
    pub acked_records_total: u64,
    /// Unacked records deleted by [`FullPolicy::DropOldest`].
    pub dropped_records_total: u64,
    /// Appends refused by [`FullPolicy::Refuse`].
    pub refused_total: u64,
    pub fsyncs_total: u64,
}

#[derive(Debug)]
struct Segment {
    /// From the file name: the seq of the first record ever written to it.
    name_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Highest seq in it; `None` while empty.
    last_seq: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    /// `name_seq` of its segment.
    segment: u64,
    offset: u64,
    frame_bytes: u32,
}

/// A durable FIFO of records keyed by strictly increasing seqs. See the crate docs.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    segment_bytes: u64,
    _lock: Flock<File>,
    /// Oldest first; the last one may be open for appends.
    segments: VecDeque<Segment>,
    /// Append handle of the last segment, while it has room.
    active: Option<File>,
    /// Unacked records, oldest first.
    index: VecDeque<Entry>,
    acked_seq: Option<u64>,
    /// Highest seq appended or acked; appends must exceed it.
    last_seq: Option<u64>,
    unsynced_appends: u64,
    last_sync: Instant,
    recovery: Recovery,
    counters: SpoolCounters,
    frame_buf: Vec<u8>,
}

fn io(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`: locks the directory, reads the ack point,
    /// scans every segment, cuts off torn or corrupt tails (counted in [`Spool::recovery`]),
    /// and deletes fully acked segments.
    pub fn open(config: SpoolConfig) -> Result<Self, SpoolError> {
        config.validate().map_err(SpoolError::BadConfig)?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                SpoolError::Locked {
                    dir: dir.clone(),
                    errno,
                }
            })?;

        let mut recovery = Recovery::default();
        let ack_path = dir.join(ack::FILE_NAME);
        let acked_seq = match std::fs::read(&ack_path) {
            Ok(bytes) => match ack::decode(&bytes) {
                Some(seq) => Some(seq),
                None => {
                    warn!(path = %ack_path.display(), "The spool's ack file is damaged; replaying every record kept.");
                    recovery.ack_file_damaged = true;
                    None
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io(&ack_path, e)),
        };

        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == ack::TMP_FILE_NAME {
                // A crash between writing and renaming it; the old ack file still holds.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(seq) = segment::parse_file_name(name) {
                names.push(seq);
            }
        }
        names.sort_unstable();

        let mut segments = VecDeque::new();
        let mut index = VecDeque::new();
        let mut last_seq: Option<u64> = None;
        for name_seq in names {
            let path = dir.join(segment::file_name(name_seq));
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            recovery.segments_scanned += 1;
            let scan = segment::scan(&bytes, last_seq);
            if scan.tail != Tail::Clean {
                let cut = bytes.len() as u64 - scan.valid_bytes;
                match scan.tail {
                    Tail::Torn => recovery.torn_tails += 1,
                    _ => recovery.corrupt_segments += 1,
                }
                recovery.truncated_bytes += cut;
                warn!(
                    path = %path.display(),
                    kept_bytes = scan.valid_bytes,
                    cut_bytes = cut,
                    tail = ?scan.tail,
                    "Cut a spool segment back to its last intact record."
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                f.set_len(scan.valid_bytes).map_err(|e| io(&path, e))?;
                f.sync_all().map_err(|e| io(&path, e))?;
            }
            recovery.records_found += scan.records.len() as u64;
            let seg_last = scan.records.last().map(|r| r.seq);
            let fully_acked = seg_last.is_none_or(|l| acked_seq.is_some_and(|a| l <= a));
            if fully_acked {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                if seg_last.is_some() {
                    last_seq = last_seq.max(seg_last);
                }
                continue;
            }
            for r in &scan.records {
                if acked_seq.is_some_and(|a| r.seq <= a) {
                    continue;
                }
                index.push_back(Entry {
                    seq: r.seq,
                    segment: name_seq,
                    offset: r.offset,
                    frame_bytes: r.frame_bytes,
                });
            }
            last_seq = last_seq.max(seg_last);
            segments.push_back(Segment {
                name_seq,
                path,
                bytes: scan.valid_bytes,
                last_seq: seg_last,
            });
        }
        let last_seq = last_seq.max(acked_seq);
        let segment_bytes = config.effective_segment_bytes();
        let active = match segments.back() {
            Some(s) if s.bytes < segment_bytes => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(|e| io(&s.path, e))?,
            ),
            _ => None,
        };
        info!(
            dir = %dir.display(),
            records = index.len(),
            segments = segments.len(),
            acked_seq = ?acked_seq,
            last_seq = ?last_seq,
            truncated_bytes = recovery.truncated_bytes,
            "Opened the spool."
        );
        Ok(Self {
            config,
            segment_bytes,
            _lock: lock,
            segments,
            active,
            index,
            acked_seq,
            last_seq,
            unsynced_appends: 0,
            last_sync: Instant::now(),
            recovery,
            counters: SpoolCounters::default(),
            frame_buf: Vec::new(),
        })
    }

    /// Appends one record. `seq` must exceed every seq appended or acked before (across
    /// restarts). On return the record is in the file (safe from a process crash) and, if
    /// [`Appended::synced`], on stable storage.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<Appended, SpoolError> {
        if let Some(last) = self.last_seq
            && seq <= last
        {
            return Err(SpoolError::SeqNotIncreasing { seq, last });
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SpoolError::RecordTooLarge {
                bytes: payload.len() as u64,
                limit: MAX_PAYLOAD_BYTES as u64,
            });
        }
        let needed = frame::frame_bytes(payload.len()) as u64;
        let sizes: Vec<SegmentSize> = self
            .segments
            .iter()
            .map(|s| SegmentSize { bytes: s.bytes })
            .collect();
        let mut appended = Appended::default();
        match policy::plan_room(&sizes, self.config.capacity_bytes, needed, self.config.full) {
            Room::Fits => {}
            Room::TooLarge => {
                return Err(SpoolError::RecordTooLarge {
                    bytes: needed,
                    limit: self.config.capacity_bytes,
                });
            }
            Room::Refuse { free_bytes } => {
                self.counters.refused_total += 1;
                return Err(SpoolError::Full {
                    needed_bytes: needed,
                    free_bytes,
                });
            }
            Room::DropOldest { segments } => appended.dropped = self.drop_oldest(segments)?,
        }

        let rolling = self
            .segments
            .back()
            .is_some_and(|s| s.bytes > 0 && s.bytes + needed > self.segment_bytes);
        if rolling {
            self.roll_now()?;
        }
        if self.active.is_none() {
            self.start_segment(seq)?;
        }
        self.frame_buf.clear();
        frame::encode(&mut self.frame_buf, seq, payload);
        let Some(seg) = self.segments.back_mut() else {
            // start_segment always leaves a segment behind.
            return Err(SpoolError::Io {
                path: self.config.dir.clone(),
                source: std::io::Error::other("no active segment"),
            });
        };
        let Some(file) = &mut self.active else {
            return Err(io(&seg.path, std::io::Error::other("no active segment")));
        };
        if let Err(e) = file.write_all(&self.frame_buf) {
            // Cut off whatever part of the frame made it, so the file stays a clean prefix.
            let _ = file.set_len(seg.bytes);
            return Err(io(&seg.path, e));
        }
        self.index.push_back(Entry {
            seq,
            segment: seg.name_seq,
            offset: seg.bytes,
            frame_bytes: needed as u32,
        });
        seg.bytes += needed;
        seg.last_seq = Some(seq);
        self.last_seq = Some(seq);
        self.counters.appended_total += 1;
        self.counters.appended_bytes_total += needed;
        self.unsynced_appends += 1;
        if self
            .config
            .fsync
            .due_after_append(self.unsynced_appends, self.last_sync.elapsed())
        {
            self.sync()?;
            appended.synced = true;
        }
        Ok(appended)
    }

    /// Closes the active segment, fsyncing it first unless the policy never syncs, so that at
    /// most the active segment holds unsynced records.
    fn roll_now(&mut self) -> Result<(), SpoolError> {
        if let Some(old) = self.active.take()
            && self.config.fsync.syncs_metadata()
            && self.unsynced_appends > 0
        {
            let path = self
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            old.sync_data().map_err(|e| io(&path, e))?;
            self.counters.fsyncs_total += 1;
            self.unsynced_appends = 0;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.config.dir.join(segment::file_name(first_seq));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if self.config.fsync.syncs_metadata() {
            sync_dir(&self.config.dir)?;
        }
        debug!(path = %path.display(), "Started a spool segment.");
        self.segments.push_back(Segment {
            name_seq: first_seq,
            path,
            bytes: 0,
            last_seq: None,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Deletes the oldest `n` segments and forgets their records.
    fn drop_oldest(&mut self, n: usize) -> Result<Option<Dropped>, SpoolError> {
        let mut dropped: Option<Dropped> = None;
        for _ in 0..n {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.active = None;
            }
            while let Some(e) = self.index.front().copied()
                && e.segment == seg.name_seq
            {
                self.index.pop_front();
                let d = dropped.get_or_insert(Dropped {
                    records: 0,
                    first_seq: e.seq,
                    last_seq: e.seq,
                    bytes: 0,
                });
                d.records += 1;
                d.last_seq = e.seq;
                d.bytes += u64::from(e.frame_bytes);
            }
            std::fs::remove_file(&seg.path).map_err(|e| io(&seg.path, e))?;
        }
        if let Some(d) = dropped {
            self.counters.dropped_records_total += d.records;
            warn!(
                dir = %self.config.dir.display(),
                records = d.records,
                first_seq = d.first_seq,
                last_seq = d.last_seq,
                "The spool is full; dropped its oldest unacked records."
            );
        }
        Ok(dropped)
    }

    /// Fsyncs the active segment now, if anything is unsynced.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced_appends == 0 {
            return Ok(());
        }
        if let (Some(file), Some(seg)) = (&self.active, self.segments.back()) {
            file.sync_data().map_err(|e| io(&seg.path, e))?;
            self.counters.fsyncs_total += 1;
        }
        self.unsynced_appends = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Releases every record with a seq up to `up_to_seq`: persists the ack point (so a
    /// restart does not replay them), then deletes the segments holding only acked records.
    /// Acking at or below the current ack point does nothing.
    pub fn ack(&mut self, up_to_seq: u64) -> Result<(), SpoolError> {
        if self.acked_seq.is_some_and(|a| up_to_seq <= a) {
            return Ok(());
        }
        self.write_ack(up_to_seq)?;
        self.acked_seq = Some(up_to_seq);
        self.last_seq = self.last_seq.max(Some(up_to_seq));
        while self.index.front().is_some_and(|e| e.seq <= up_to_seq) {
            self.index.pop_front();
            self.counters.acked_records_total += 1;
        }
        while let Some(seg) = self.segments.front()
            && seg.last_seq.is_none_or(|l| l <= up_to_seq)
        {
            if self.segments.len() == 1 {
                // Its unsynced records are acked; nothing left to sync.
                self.active = None;
                self.unsynced_appends = 0;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            std::fs::remove_file(&seg.path).map_err(|e| io(&seg.path, e))?;
            debug!(path = %seg.path.display(), "Deleted a fully acked spool segment.");
        }
        Ok(())
    }

    fn write_ack(&self, seq: u64) -> Result<(), SpoolError> {
        let tmp = self.config.dir.join(ack::TMP_FILE_NAME);
        let path = self.config.dir.join(ack::FILE_NAME);
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&ack::encode(seq)).map_err(|e| io(&tmp, e))?;
        if self.config.fsync.syncs_metadata() {
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        if self.config.fsync.syncs_metadata() {
            sync_dir(&self.config.dir)?;
        }
        Ok(())
    }

    /// The unacked records, oldest first, read from disk (each CRC-checked again).
    pub fn iter(&self) -> Replay<'_> {
        self.replay_from(0)
    }

    /// The unacked records with a seq of at least `from_seq`, oldest first.
    pub fn replay_from(&self, from_seq: u64) -> Replay<'_> {
        let start = self.index.partition_point(|e| e.seq < from_seq);
        Replay {
            spool: self,
            next: start,
            open: None,
        }
    }

    /// The oldest unacked record.
    pub fn oldest(&self) -> Result<Option<Record>, SpoolError> {
        self.iter().next().transpose()
    }

    /// Unacked records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Seqs of the oldest and newest unacked records.
    pub fn unacked_range(&self) -> Option<(u64, u64)> {
        Some((self.index.front()?.seq, self.index.back()?.seq))
    }

    /// The persisted ack point.
    pub fn acked_seq(&self) -> Option<u64> {
        self.acked_seq
    }

    /// Highest seq appended or acked; the next append must exceed it.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Bytes the segment files take (acked records in a partly acked segment included).
    pub fn used_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Frame bytes of the unacked records.
    pub fn unacked_bytes(&self) -> u64 {
        self.index.iter().map(|e| u64::from(e.frame_bytes)).sum()
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    fn read_entry(&self, e: &Entry, file: &File) -> Result<Record, SpoolError> {
        let path = self.config.dir.join(segment::file_name(e.segment));
        let mut buf = vec![0u8; e.frame_bytes as usize];
        file.read_exact_at(&mut buf, e.offset)
            .map_err(|err| io(&path, err))?;
        match frame::decode(&buf) {
            Decoded::Record { seq, payload, .. } if seq == e.seq => Ok(Record {
                seq,
                payload: payload.to_vec(),
            }),
            _ => Err(SpoolError::Corrupt {
                path,
                seq: e.seq,
                offset: e.offset,
            }),
        }
    }
}

/// Iterator over unacked records, oldest first; see [`Spool::iter`].
#[derive(Debug)]
pub struct Replay<'a> {
    spool: &'a Spool,
    next: usize,
    /// The segment file being read, by `name_seq`.
    open: Option<(u64, File)>,
}

impl Iterator for Replay<'_> {
    type Item = Result<Record, SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let e = *self.spool.index.get(self.next)?;
        self.next += 1;
        if self.open.as_ref().is_none_or(|(s, _)| *s != e.segment) {
            let path = self.spool.config.dir.join(segment::file_name(e.segment));
            match File::open(&path) {
                Ok(f) => self.open = Some((e.segment, f)),
                Err(err) => return Some(Err(io(&path, err))),
            }
        }
        let (_, file) = self.open.as_ref()?;
        Some(self.spool.read_entry(&e, file))
    }
}
