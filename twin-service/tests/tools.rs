//! The off-line tools of the `dtop-twin` binary: `audit` against a real InfluxDB 1.x (holes in
//! the stored block seqs, exit 1 while any missing seq is not declared lost; declared losses
//! listed apart with their reasons), and `replay`/`audit` refusing bad
//! arguments all at once with exit 64 before touching storage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::InfluxD;

const BIN: &str = env!("CARGO_BIN_EXE_dtop-twin");

#[test]
fn replay_refuses_bad_arguments_all_at_once_with_exit_64() {
    // The default config stores to files, which cannot be read back: a third problem.
    let out = Command::new(BIN)
        .args([
            "replay",
            "--rig",
            "no spaces!",
            "--from",
            "yesterday",
            "--to",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for problem in ["--rig", "--from", "InfluxDB 1.x's /query API"] {
        assert!(
            stderr.contains(problem),
            "{problem:?} not reported: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["replay", "--rig", "r1", "--from", "2026-11-24T08:00:00Z"])
        .args(["--to", "2026-11-24T07:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is after --to"));
}

async fn write(influx: &InfluxD, database: &str, lines: String) {
    let url = format!("{}/write?db={database}&precision=n", influx.url);
    let response = reqwest::Client::new()
        .post(url)
        .body(lines)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

/// Block `seq` of `rig` as the twin stores it in `dtop_blocks`: ten samples at 1 kHz, session 1.
fn block_line(seq: u64, rig: &str) -> String {
    format!(
        "dtop_blocks,rig={rig},stream=0 seq={seq}i,first_sample_index={}i,samples=10i,\
         sample_period_ns=1000000i,session=1i,backfill=false {}\n",
        seq * 10,
        1_700_000_000_000_000_000 + seq * 10_000_000
    )
}

/// Writes `twin.toml` in `dir`, pointing `audit` at `database` of `influx`, and returns its path.
fn write_audit_config(dir: &Path, influx: &InfluxD, database: &str) -> PathBuf {
    let config = dir.join("twin.toml");
    std::fs::write(
        &config,
        format!(
            "[storage.influx_v1]\nurl = \"{}\"\ndatabase = \"{database}\"\n",
            influx.url
        ),
    )
    .unwrap();
    config
}

fn audit(config: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("audit")
        .arg("--config")
        .arg(config)
        .args(["--rig", "rig-a"])
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_the_holes_in_the_stored_seqs_until_they_are_filled() {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    let database = "audit";
    influx.create_database(database).await;
    let stored: String = (0..10)
        .filter(|s| ![4, 5].contains(s))
        .map(|s| block_line(s, "rig-a"))
        .chain((0..3).map(|s| block_line(s + 100, "rig-b")))
        .collect();
    write(&influx, database, stored).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_audit_config(dir.path(), &influx, database);

    let (code, report) = audit(&config, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["expected"], serde_json::json!([0, 9]));
    assert_eq!(report["report"]["holes"], serde_json::json!([[4, 5]]));
    assert_eq!(report["report"]["missing"], 2);
    // Another rig's seqs are not this rig's.
    assert_eq!(report["report"]["outside"], 0);
    let (code, report) = audit(&config, &["--to-seq", "12"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        report["report"]["holes"],
        serde_json::json!([[4, 5], [10, 12]])
    );

    write(
        &influx,
        database,
        block_line(4, "rig-a") + &block_line(5, "rig-a"),
    )
    .await;
    let (code, report) = audit(&config, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["report"]["present"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_declared_losses_apart_and_exits_0_only_when_every_missing_seq_is_declared() {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    let database = "audit_declared";
    influx.create_database(database).await;
    let block = |seq: u64| block_line(seq, "rig-a");
    // As the twin records them (`lineproto::encode_seq_loss`), at the edge's detection time.
    let loss = |first: u64, last: u64, reason: &str| {
        format!(
            "dtop_seq_losses,rig=rig-a,reason={reason},seqs={first}-{last} first_seq={first}i,\
             last_seq={last}i,blocks={}i,samples=0i {}\n",
            last - first + 1,
            1_700_000_001_000_000_000 + first
        )
    };
    // Seqs 4 and 5 were skipped by a restarted edge; 7 is missing without a word; 8 was stored
    // apart (its times were taken).
    let stored: String = (0..10)
        .filter(|s| ![4, 5, 7, 8].contains(s))
        .map(block)
        .chain([
            loss(4, 5, "skipped"),
            // Another rig's declaration is not this rig's.
            loss(7, 7, "spool_full").replace("rig-a", "rig-b"),
            block(8)
                .replace("dtop_blocks,", "dtop_blocks_overlap,")
                .replace("stream=0", "stream=0,timeline=5/1000000"),
        ])
        .collect();
    write(&influx, database, stored).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_audit_config(dir.path(), &influx, database);

    let (code, report) = audit(&config, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["report"]["holes"], serde_json::json!([[7, 7]]));
    assert_eq!(report["report"]["missing"], 1);
    assert_eq!(
        report["report"]["declared"],
        serde_json::json!([{"first_seq": 4, "last_seq": 5, "reason": "skipped"}])
    );
    assert_eq!(report["report"]["declared_missing"], 2);
    assert_eq!(report["report"]["present"], 7);

    write(&influx, database, loss(7, 7, "spool_full")).await;
    let (code, report) = audit(&config, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["report"]["holes"], serde_json::json!([]));
    assert_eq!(
        report["report"]["declared"],
        serde_json::json!([
            {"first_seq": 4, "last_seq": 5, "reason": "skipped"},
            {"first_seq": 7, "last_seq": 7, "reason": "spool_full"},
        ])
    );
}
