//! The `dtop-rig-sim` binary: flag validation (exit 64), the `pty:`/`modbus:` lines on stdout,
//! and `--exit-after-max`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Edge;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dtop-rig-sim");

#[tokio::test]
async fn bad_flags_exit_64_listing_every_problem() {
    let output = Command::new(BIN)
        .args([
            "--speed=-1",
            "--samples-per-frame",
            "0",
            "--excitation",
            "bogus",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in ["speed", "samples_per_frame", "--excitation"] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    assert!(output.stdout.is_empty(), "nothing may be opened or printed");
}

#[tokio::test]
async fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/dtop-rig-sim.example.toml");
    let output = Command::new(BIN)
        .args(["--check", "--config", example])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn prints_the_pty_and_exits_after_max_samples() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.csv");
    let mut child = Command::new(BIN)
        .args([
            "--speed",
            "0",
            "--max-samples",
            "200",
            "--exit-after-max",
            "--exit-grace-ms",
            "50",
        ])
        .args(["--modbus-listen", "127.0.0.1:0", "--truth-log"])
        .arg(&truth)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let pty = next_line().await;
    let pty = PathBuf::from(pty.strip_prefix("pty: ").expect("pty line"));
    let modbus = next_line().await;
    let modbus: std::net::SocketAddr = modbus
        .strip_prefix("modbus: ")
        .expect("modbus line")
        .parse()
        .unwrap();
    assert_ne!(modbus.port(), 0);

    let mut edge = Edge::open(&pty);
    edge.hello().await;
    let frames = edge.samples(200).await;
    assert_eq!(common::rows(&frames).len(), 200);

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not exit")
        .unwrap();
    assert!(status.success());
    let csv = std::fs::read_to_string(&truth).unwrap();
    assert_eq!(csv.lines().count(), 201);
}
