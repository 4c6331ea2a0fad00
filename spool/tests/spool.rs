//! The spool through its public API on a real directory: order, acks across reopen, capacity
//! policies, the directory lock, and recovery from a tail cut or corrupted at every byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dtop_spool::segment;
use dtop_spool::{Dropped, FsyncPolicy, FullPolicy, Spool, SpoolConfig, SpoolError};

fn payload(seq: u64) -> Vec<u8> {
    // Varying lengths, content tied to the seq.
    let len = 10 + (seq as usize * 7) % 50;
    (0..len).map(|i| (seq as usize + i) as u8).collect()
}

fn seqs(spool: &Spool) -> Vec<u64> {
    spool
        .iter()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.payload, payload(r.seq), "payload of {}", r.seq);
            r.seq
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment::parse_file_name)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn replays_records_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig::new(dir.path(), 1 << 20).with_segment_bytes(200);
    {
        let mut s = Spool::open(config.clone()).unwrap();
        for seq in [3, 4, 10, 11, 12, 40] {
            let a = s.append(seq, &payload(seq)).unwrap();
            assert_eq!(a.dropped, None);
        }
        assert_eq!(seqs(&s), [3, 4, 10, 11, 12, 40]);
        assert_eq!(s.unacked_range(), Some((3, 40)));
    }
    let s = Spool::open(config).unwrap();
    assert_eq!(seqs(&s), [3, 4, 10, 11, 12, 40]);
    assert_eq!(s.recovery().truncated_bytes, 0);
    assert!(segment_files(dir.path()).len() > 1, "rolled segments");
    let from: Vec<_> = s.replay_from(11).map(|r| r.unwrap().seq).collect();
    assert_eq!(from, [11, 12, 40]);
    assert_eq!(s.oldest().unwrap().unwrap().seq, 3);
}

#[test]
fn acks_survive_reopen_and_delete_fully_acked_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig::new(dir.path(), 1 << 20)
        .with_segment_bytes(100)
        .with_fsync(FsyncPolicy::Always);
    {
        let mut s = Spool::open(config.clone()).unwrap();
        for seq in 1..=20 {
            let _ = s.append(seq, &payload(seq)).unwrap();
        }
        let before = segment_files(dir.path()).len();
        s.ack(12).unwrap();
        assert_eq!(seqs(&s), (13..=20).collect::<Vec<_>>());
        assert!(segment_files(dir.path()).len() < before);
        // Acking backwards does nothing.
        s.ack(5).unwrap();
        assert_eq!(s.acked_seq(), Some(12));
    }
    let mut s = Spool::open(config.clone()).unwrap();
    assert_eq!(seqs(&s), (13..=20).collect::<Vec<_>>());
    assert_eq!(s.acked_seq(), Some(12));
    s.ack(20).unwrap();
    assert!(s.is_empty());
    assert!(segment_files(dir.path()).is_empty());
    drop(s);
    // Everything acked and deleted: the ack point still keeps seqs increasing.
    let mut s = Spool::open(config).unwrap();
    assert_eq!(s.last_seq(), Some(20));
    assert!(matches!(
        s.append(20, b"x"),
        Err(SpoolError::SeqNotIncreasing { seq: 20, last: 20 })
    ));
    let _ = s.append(21, &payload(21)).unwrap();
    assert_eq!(seqs(&s), [21]);
}

#[test]
fn refuses_a_seq_that_does_not_increase() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(SpoolConfig::new(dir.path(), 1 << 20)).unwrap();
    let _ = s.append(5, b"a").unwrap();
    assert!(matches!(
        s.append(5, b"b"),
        Err(SpoolError::SeqNotIncreasing { seq: 5, last: 5 })
    ));
    assert!(matches!(
        s.append(4, b"b"),
        Err(SpoolError::SeqNotIncreasing { .. })
    ));
    assert_eq!(s.len(), 1);
}

/// A 4 KiB spool of 1 KiB segments.
fn full_config(dir: &Path, full: FullPolicy) -> SpoolConfig {
    SpoolConfig::new(dir, 4096)
        .with_segment_bytes(1024)
        .with_full(full)
}

#[test]
fn drop_oldest_reports_exactly_the_unacked_records_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(full_config(dir.path(), FullPolicy::DropOldest)).unwrap();
    let body = [7u8; 112]; // 128-byte frames: 8 per segment, 32 fill the spool.
    for seq in 1..=32 {
        let a = s.append(seq, &body).unwrap();
        assert_eq!(a.dropped, None, "seq {seq}");
    }
    assert_eq!(s.used_bytes(), 4096);
    s.ack(3).unwrap();
    let a = s.append(33, &body).unwrap();
    assert_eq!(
        a.dropped,
        Some(Dropped {
            records: 5,
            first_seq: 4,
            last_seq: 8,
            bytes: 5 * 128
        })
    );
    assert_eq!(s.counters().dropped_records_total, 5);
    assert_eq!(s.unacked_range(), Some((9, 33)));
    let replayed: Vec<_> = s.iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(replayed, (9..=33).collect::<Vec<_>>());
    assert!(s.used_bytes() <= 4096);
}

#[test]
fn refuse_keeps_everything_and_says_how_much_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(full_config(dir.path(), FullPolicy::Refuse)).unwrap();
    let body = [7u8; 112];
    for seq in 1..=32 {
        let _ = s.append(seq, &body).unwrap();
    }
    match s.append(33, &body) {
        Err(SpoolError::Full {
            needed_bytes: 128,
            free_bytes: 0,
        }) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(s.counters().refused_total, 1);
    // Acking frees whole segments; then it fits.
    s.ack(8).unwrap();
    let _ = s.append(33, &body).unwrap();
    assert_eq!(s.unacked_range(), Some((9, 33)));
}

#[test]
fn a_record_larger_than_the_capacity_is_refused_under_either_policy() {
    for full in [FullPolicy::DropOldest, FullPolicy::Refuse] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(full_config(dir.path(), full)).unwrap();
        let _ = s.append(1, b"keep").unwrap();
        assert!(matches!(
            s.append(2, &[0u8; 4096]),
            Err(SpoolError::RecordTooLarge { .. })
        ));
        assert_eq!(s.len(), 1);
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig::new(dir.path(), 1 << 20);
    let first = Spool::open(config.clone()).unwrap();
    assert!(matches!(
        Spool::open(config.clone()),
        Err(SpoolError::Locked { .. })
    ));
    drop(first);
    Spool::open(config).unwrap();
}

#[test]
fn rejects_a_config_with_every_problem_listed() {
    let c = SpoolConfig::new("", 10)
        .with_segment_bytes(0)
        .with_fsync(FsyncPolicy::EveryN(0));
    let problems = c.validate().unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:?}");
}

/// Writes records 1..=n into one segment and returns the segment's bytes and each record's end
/// offset.
fn one_segment(n: u64) -> (Vec<u8>, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(SpoolConfig::new(dir.path(), 1 << 20)).unwrap();
    let mut ends = Vec::new();
    let mut end = 0;
    for seq in 1..=n {
        let _ = s.append(seq, &payload(seq)).unwrap();
        end += 16 + payload(seq).len();
        ends.push(end);
    }
    drop(s);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    (std::fs::read(&files[0]).unwrap(), ends)
}

fn reopen_with_segment(bytes: &[u8]) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(segment::file_name(1)), bytes).unwrap();
    let s = Spool::open(SpoolConfig::new(dir.path(), 1 << 20)).unwrap();
    (dir, s)
}

#[test]
fn a_tail_cut_at_every_byte_keeps_exactly_the_whole_records_before_it() {
    let (bytes, ends) = one_segment(8);
    for cut in 0..=bytes.len() {
        let (dir, mut s) = reopen_with_segment(&bytes[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count() as u64;
        assert_eq!(seqs(&s), (1..=whole).collect::<Vec<_>>(), "cut at {cut}");
        let clean = cut == 0 || ends.contains(&cut);
        assert_eq!(s.recovery().torn_tails, u64::from(!clean), "cut at {cut}");
        // The spool carries on appending after the repaired tail.
        let _ = s.append(100, &payload(100)).unwrap();
        drop(s);
        let s = Spool::open(SpoolConfig::new(dir.path(), 1 << 20)).unwrap();
        let mut expected: Vec<u64> = (1..=whole).collect();
        expected.push(100);
        assert_eq!(seqs(&s), expected, "cut at {cut}, after an append");
        assert_eq!(s.recovery().truncated_bytes, 0);
    }
}

#[test]
fn a_corrupt_byte_anywhere_keeps_the_records_before_it_and_never_returns_garbage() {
    let (bytes, ends) = one_segment(6);
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        let (_dir, s) = reopen_with_segment(&damaged);
        let before = ends.iter().filter(|&&e| e <= at).count() as u64;
        // seqs() also checks every payload it returns.
        let kept = seqs(&s);
        assert_eq!(kept, (1..=before).collect::<Vec<_>>(), "byte {at}");
        let r = s.recovery();
        assert_eq!(r.torn_tails + r.corrupt_segments, 1, "byte {at}");
        let kept_end = if before == 0 {
            0
        } else {
            ends[before as usize - 1]
        };
        assert_eq!(
            r.truncated_bytes as usize,
            bytes.len() - kept_end,
            "byte {at}"
        );
    }
}

#[test]
fn a_zero_filled_tail_after_power_loss_is_cut_off() {
    let (mut bytes, ends) = one_segment(3);
    bytes.extend_from_slice(&[0u8; 4096]);
    let (_dir, s) = reopen_with_segment(&bytes);
    assert_eq!(seqs(&s), [1, 2, 3]);
    assert_eq!(s.recovery().truncated_bytes, 4096);
    assert_eq!(ends.len(), 3);
}
