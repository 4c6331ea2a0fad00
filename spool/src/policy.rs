//! The spool's policies and the pure decisions behind them: when to fsync, and what to do when
//! an append does not fit. Knows nothing of files; the spool feeds in its numbers.

use std::time::Duration;

/// What [`crate::Spool::append`] does when the record does not fit in the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Delete the oldest segments (acked or not) until the record fits. The unacked records
    /// deleted are lost; [`crate::Appended::dropped`] says which, and the spool counts them.
    #[default]
    DropOldest,
    /// Keep everything and refuse the record ([`crate::SpoolError::Full`]); the caller pauses
    /// its producer or drops the new record itself.
    Refuse,
}

/// When appended records are forced to stable storage (`fdatasync`).
///
/// Every append is one `write(2)` straight to the segment file, with no buffering in this
/// process. So, whatever the policy, a record is safe from a crash of the process (SIGKILL,
/// panic, OOM kill) as soon as `append` returns. What the policy decides is what survives a
/// power loss or kernel crash: only records appended before the last fsync are guaranteed; the
/// ones after it may be missing (never garbled: a torn tail is found and cut off at open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Fsync after every append: a record survives power loss once `append` returns. Costs one
    /// device flush per record.
    Always,
    /// Fsync after every `n` appends: at most `n - 1` records lost on power loss.
    EveryN(u32),
    /// Fsync on the first append at least this long after the previous fsync, and whenever the
    /// caller calls [`crate::Spool::sync`] (call it from a timer so a quiet spool is flushed
    /// too): at most about this much data lost on power loss.
    IntervalMs(u64),
    /// Never fsync records; the kernel writes them back when it likes (typically within 30 s
    /// on Linux). Segment rolls and acks are not fsynced either.
    #[default]
    Never,
}

impl FsyncPolicy {
    /// Whether the append just made must be followed by an fsync, given the appends since the
    /// last fsync (this one included) and the time since it.
    pub fn due_after_append(self, unsynced_appends: u64, since_last_sync: Duration) -> bool {
        match self {
            FsyncPolicy::Always => true,
            FsyncPolicy::EveryN(n) => unsynced_appends >= u64::from(n.max(1)),
            FsyncPolicy::IntervalMs(ms) => since_last_sync >= Duration::from_millis(ms),
            FsyncPolicy::Never => false,
        }
    }

    /// Whether metadata changes (new segment files, the ack point) are fsynced.
    pub const fn syncs_metadata(self) -> bool {
        !matches!(self, FsyncPolicy::Never)
    }
}

/// One segment as the room decision sees it: its size, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize {
    pub bytes: u64,
}

/// What to do before appending `needed` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// It fits as things are.
    Fits,
    /// Delete the oldest `segments` segments first.
    DropOldest { segments: usize },
    /// Refuse the record: only `free_bytes` are free.
    Refuse { free_bytes: u64 },
    /// The record is larger than the whole capacity.
    TooLarge,
}

/// Decides how to make room for `needed` bytes in a spool of `capacity` bytes whose segments
/// (oldest first) are `segments`.
pub fn plan_room(segments: &[SegmentSize], capacity: u64, needed: u64, policy: FullPolicy) -> Room {
    if needed > capacity {
        return Room::TooLarge;
    }
    let used: u64 = segments.iter().map(|s| s.bytes).sum();
    if used.saturating_add(needed) <= capacity {
        return Room::Fits;
    }
    match policy {
        FullPolicy::Refuse => Room::Refuse {
            free_bytes: capacity.saturating_sub(used),
        },
        FullPolicy::DropOldest => {
            let mut remaining = used;
            for (i, s) in segments.iter().enumerate() {
                remaining -= s.bytes;
                if remaining + needed <= capacity {
                    return Room::DropOldest { segments: i + 1 };
                }
            }
            // Dropping everything leaves 0 used, and needed <= capacity.
            Room::DropOldest {
                segments: segments.len(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(bytes: &[u64]) -> Vec<SegmentSize> {
        bytes.iter().map(|&bytes| SegmentSize { bytes }).collect()
    }

    #[test]
    fn a_record_that_fits_needs_nothing() {
        assert_eq!(
            plan_room(&sizes(&[40, 40]), 100, 20, FullPolicy::Refuse),
            Room::Fits
        );
        assert_eq!(plan_room(&[], 100, 100, FullPolicy::Refuse), Room::Fits);
    }

    #[test]
    fn refuse_reports_the_free_bytes() {
        assert_eq!(
            plan_room(&sizes(&[40, 40]), 100, 21, FullPolicy::Refuse),
            Room::Refuse { free_bytes: 20 }
        );
    }

    #[test]
    fn drop_oldest_drops_just_enough_segments() {
        let s = sizes(&[30, 30, 30]);
        assert_eq!(
            plan_room(&s, 100, 20, FullPolicy::DropOldest),
            Room::DropOldest { segments: 1 }
        );
        assert_eq!(
            plan_room(&s, 100, 69, FullPolicy::DropOldest),
            Room::DropOldest { segments: 2 }
        );
        assert_eq!(
            plan_room(&s, 100, 100, FullPolicy::DropOldest),
            Room::DropOldest { segments: 3 }
        );
    }

    #[test]
    fn a_record_above_capacity_is_too_large_under_either_policy() {
        for p in [FullPolicy::DropOldest, FullPolicy::Refuse] {
            assert_eq!(plan_room(&[], 100, 101, p), Room::TooLarge);
        }
    }

    #[test]
    fn fsync_is_due_per_policy() {
        let ms = Duration::from_millis;
        assert!(FsyncPolicy::Always.due_after_append(1, ms(0)));
        assert!(!FsyncPolicy::EveryN(3).due_after_append(2, ms(999)));
        assert!(FsyncPolicy::EveryN(3).due_after_append(3, ms(0)));
        // 0 behaves like 1 rather than never syncing.
        assert!(FsyncPolicy::EveryN(0).due_after_append(1, ms(0)));
        assert!(!FsyncPolicy::IntervalMs(100).due_after_append(50, ms(99)));
        assert!(FsyncPolicy::IntervalMs(100).due_after_append(1, ms(100)));
        assert!(!FsyncPolicy::Never.due_after_append(u64::MAX, ms(u64::MAX)));
        assert!(!FsyncPolicy::Never.syncs_metadata());
        assert!(FsyncPolicy::EveryN(5).syncs_metadata());
    }
}
