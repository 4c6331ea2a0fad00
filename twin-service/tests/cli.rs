//! The `dtop-twin` binary: config checking, exit codes, and a graceful stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dtop-twin");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dtop-twin.example.toml");

#[test]
fn check_accepts_the_example_config_and_names_the_storage() {
    let out = Command::new(BIN)
        .args(["--config", EXAMPLE, "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("line-protocol files in ./dtop-data/lines (no InfluxDB configured"),
        "{stdout}"
    );
}

#[test]
fn print_default_config_prints_the_example_file() {
    let out = Command::new(BIN)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(EXAMPLE).unwrap()
    );
}

#[test]
fn a_bad_config_exits_64_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nport = 0\n[storage.influx_v2]\nurl = \"nope\"\norg = \"o\"\nbucket = \"\"\ntoken_file = \"/nonexistent\"\n[batch]\nmax_lines = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "mqtt.port",
        "storage.influx_v2.url",
        "storage.influx_v2.bucket",
        "storage.influx_v2.token_file",
        "batch.max_lines",
    ] {
        assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
    }
}

#[test]
fn a_bad_coordinator_exits_64_with_every_problem_and_a_good_one_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.toml");
    std::fs::write(
        &path,
        "[batch]\nmax_lines = 0\n[coordinator]\ntwin_id = \"a b\"\n\
         database_url_file = \"/nonexistent/lease-db-url\"\n[coordinator.lease]\nttl_ms = 100\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "batch.max_lines",
        "coordinator.twin_id",
        "coordinator.database_url_file",
        "coordinator.lease.ttl_ms",
    ] {
        assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
    }

    std::fs::write(
        &path,
        "[coordinator]\ntwin_id = \"twin-a\"\ndatabase_url = \"postgres://dtop:s3cret@127.0.0.1:1/dtop\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("coordinator: twin twin-a on postgres://dtop:***@127.0.0.1:1/dtop"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

#[test]
fn unknown_fields_and_missing_files_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[mqtt]\nhots = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hots"));
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/dtop-twin.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn serves_metrics_then_drains_and_exits_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twin.toml");
    let metrics_port = support::free_port();
    // No broker listens on this port; the twin keeps retrying until it is told to stop.
    std::fs::write(
        &path,
        format!(
            "[mqtt]\nport = {}\n[storage.file]\ndir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            support::free_port(),
            dir.path().join("lines").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    // The signal handlers are installed before storage is set up, so this line means "ready".
    while !log.iter().any(|l: &String| l.contains("Storage ready.")) {
        match line_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("dtop-twin never became ready; log:\n{}", log.join("\n"));
            }
        }
    }
    let metrics = {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    for line in [
        "dtop_twin_mqtt_connected 0",
        "# TYPE dtop_twin_storage_lines_written_total counter",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in\n{metrics}"
        );
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dtop-twin did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    log.extend(line_rx.try_iter());
    while let Ok(line) = line_rx.recv_timeout(Duration::from_secs(1)) {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(log.contains("Shutdown was graceful."), "{log}");
}
