//! A writer process SIGKILLed mid-append: every record it reported as appended is there after
//! reopening, in order, with no garbage, and no record it reported as acked comes back.
//!
//! The writer is this test binary run again with `DTOP_SPOOL_CHILD_DIR` set (see
//! [`child_writer`]); it prints `appended <seq>` after each append returns and `acked <seq>`
//! after each ack returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dtop_spool::{FsyncPolicy, Spool, SpoolConfig};

const CHILD_DIR: &str = "DTOP_SPOOL_CHILD_DIR";
const CHILD_FSYNC: &str = "DTOP_SPOOL_CHILD_FSYNC";
/// Upper bound on records one writer appends, so a missed kill still ends.
const MAX_RECORDS: u64 = 2_000_000;

fn payload(seq: u64) -> Vec<u8> {
    // About one SampleBlock: 100 samples x 8 channels x 3 bytes, varied so lengths differ.
    let len = 2400 + (seq % 97) as usize;
    (0..len)
        .map(|i| (seq.wrapping_mul(31) as usize + i) as u8)
        .collect()
}

fn config(dir: &std::path::Path, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig::new(dir, 256 << 20)
        .with_segment_bytes(256 * 1024)
        .with_fsync(fsync)
}

fn fsync_from(name: &str) -> FsyncPolicy {
    match name {
        "always" => FsyncPolicy::Always,
        "every_16" => FsyncPolicy::EveryN(16),
        "interval_5" => FsyncPolicy::IntervalMs(5),
        _ => FsyncPolicy::Never,
    }
}

/// The writer side; a no-op unless run as the child.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let fsync = fsync_from(&std::env::var(CHILD_FSYNC).unwrap());
    let mut spool = Spool::open(config(std::path::Path::new(&dir), fsync)).unwrap();
    let start = spool.last_seq().map_or(1, |s| s + 1);
    for seq in start..start + MAX_RECORDS {
        let _ = spool.append(seq, &payload(seq)).unwrap();
        println!("appended {seq}");
        if seq % 64 == 0 {
            spool.ack(seq - 32).unwrap();
            println!("acked {}", seq - 32);
        }
    }
}

struct Reported {
    last_appended: Option<u64>,
    last_acked: Option<u64>,
}

/// Runs the writer until it reported `kill_after` appends, SIGKILLs it, and collects what it
/// reported.
fn run_and_kill(dir: &std::path::Path, fsync: &str, kill_after: u64) -> Reported {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_FSYNC, fsync)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut reported = Reported {
        last_appended: None,
        last_acked: None,
    };
    let mut appends = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let note = |line: &str, r: &mut Reported| {
        if let Some(s) = line.strip_prefix("appended ") {
            r.last_appended = Some(s.parse().unwrap());
            true
        } else if let Some(s) = line.strip_prefix("acked ") {
            r.last_acked = Some(s.parse().unwrap());
            false
        } else {
            false
        }
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        if note(&line, &mut reported) {
            appends += 1;
        }
        if appends >= kill_after {
            break;
        }
        assert!(Instant::now() < deadline, "the writer is too slow");
    }
    // std's kill is SIGKILL on Unix, by PID.
    child.kill().unwrap();
    // Whatever the writer printed before dying is still in the pipe.
    for line in lines {
        let Ok(line) = line else { break };
        note(&line, &mut reported);
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    reported
}

fn check_after_kill(fsync: &str, kills: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let mut last_appended_overall = 0;
    for &kill_after in kills {
        let reported = run_and_kill(dir.path(), fsync, kill_after);
        let last_appended = reported.last_appended.unwrap();
        assert!(last_appended > last_appended_overall);
        last_appended_overall = last_appended;
        let spool = Spool::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
        let records: Vec<_> = spool.iter().map(|r| r.unwrap()).collect();
        for r in &records {
            assert_eq!(r.payload, payload(r.seq), "garbage in record {}", r.seq);
        }
        let got: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let first = *got.first().unwrap();
        let last = *got.last().unwrap();
        // In order, no holes.
        assert_eq!(got, (first..=last).collect::<Vec<_>>());
        // Everything reported as appended is there; at most one more append (killed between
        // its write and its report) may be too.
        assert!(
            last == last_appended || last == last_appended + 1,
            "{fsync}: last record {last}, last reported {last_appended}"
        );
        // Nothing reported as acked comes back; an ack killed before its report may have
        // landed, which releases at most up to the next multiple of 64 minus 32.
        let acked = reported.last_acked.unwrap_or(0);
        assert!(
            first > acked,
            "{fsync}: record {first} was acked up to {acked}"
        );
        assert!(first <= acked + 65, "{fsync}: first {first}, acked {acked}");
        drop(spool);
        eprintln!(
            "{fsync}: killed after {last_appended} appended, {} unacked kept, recovery {:?}",
            got.len(),
            Spool::open(config(dir.path(), FsyncPolicy::Never))
                .unwrap()
                .recovery()
        );
    }
}

#[test]
fn sigkill_loses_nothing_appended_without_fsync() {
    check_after_kill("never", &[300, 1500, 4000]);
}

#[test]
fn sigkill_loses_nothing_appended_with_fsync_every_16() {
    check_after_kill("every_16", &[200, 700]);
}

#[test]
fn sigkill_loses_nothing_appended_with_fsync_always() {
    check_after_kill("always", &[50, 150]);
}

#[test]
fn sigkill_loses_nothing_appended_with_fsync_on_an_interval() {
    check_after_kill("interval_5", &[300, 900]);
}
