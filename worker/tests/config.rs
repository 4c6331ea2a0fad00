//! The `dtop-worker` binary refuses a bad config with exit 64 and every problem, before it
//! connects to anything.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn refuses_a_bad_config_with_every_problem_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    // Unknown keys and wrong types in three sections; the URL points nowhere, so reaching the
    // database would hang or fail differently.
    std::fs::write(
        &config,
        "[engine]\ndatabase_url = \"postgres://u:pw@127.0.0.1:1/x\"\nresult_dir = \"/tmp/r\"\ncolour = 1\n\
         [worker]\nconcurrency = \"many\"\n[metrics]\nlisten = 5\n",
    )
    .unwrap();
    dtop_daemon::testing::assert_refuses_config(
        || Command::new(env!("CARGO_BIN_EXE_dtop-worker")),
        &config,
        dtop_daemon::testing::LISTED,
        &["engine.colour", "worker.concurrency", "metrics.listen"],
        |run| assert!(!run.stderr.contains("pw@"), "{run}"),
    );
}

#[test]
fn prints_an_example_config_that_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_dtop-worker"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, &out.stdout).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_dtop-worker"))
        .args(["--check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
