//! Configuration as an operator meets it: the shipped example, a file with several mistakes,
//! and the real `dtop-broker` binary's exit codes and messages.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dtop_broker::{BrokerConfig, ConfigError, load_config, parse_config};
use dtop_daemon::testing::{LISTED, assert_refuses_config};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BINARY: &str = env!("CARGO_BIN_EXE_dtop-broker");

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dtop-broker.example.toml")
}

fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create temp config");
    file.write_all(text.as_bytes()).expect("write temp config");
    file
}

fn run_binary(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run dtop-broker")
}

/// One unknown key and two out-of-range values.
const THREE_MISTAKES: &str = r#"
[mqtt]
listen = "127.0.0.1:1883"
tls = true

[limits]
max_connections = 0

[metrics]
listen = "127.0.0.1:1883"
"#;

#[test]
fn example_config_parses_validates_and_equals_the_defaults() {
    let config = load_config(&example_path()).expect("example config loads");
    assert_eq!(config, BrokerConfig::default());
}

#[test]
fn example_config_with_optional_sections_uncommented_is_valid() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    // A setting is `# [section]` or `# key = value`; prose comments stay comments.
    let is_setting = |rest: &str| {
        rest.starts_with('[')
            || rest
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = parse_config(&uncommented).expect("uncommented example is valid");
    assert!(config.mqtt_v5.is_some());
    assert!(
        config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some())
    );
    assert!(config.websocket.is_some());
    assert!(config.metrics.is_some());
    let auth = config.auth.expect("auth section");
    assert_eq!(
        auth.roles,
        dtop_broker::RolesConfig::default(),
        "the documented role rules must be exactly the built-in ones"
    );
}

#[test]
fn reports_an_unknown_key_and_two_bad_values_together() {
    let file = temp_config(THREE_MISTAKES);
    let error = load_config(file.path()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = error else {
        panic!("expected Invalid, got {error:?}");
    };
    assert_eq!(
        problems.paths(),
        ["mqtt.tls", "metrics.listen", "limits.max_connections"]
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let error = load_config(Path::new("/nonexistent/dtop-broker.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
}

#[test]
fn binary_exits_64_and_prints_every_problem_for_a_bad_config() {
    let file = temp_config(THREE_MISTAKES);
    let path = file.path().to_str().unwrap();
    for args in [vec!["--config", path], vec!["--check", "--config", path]] {
        let output = run_binary(&args);
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for key in ["mqtt.tls", "metrics.listen", "limits.max_connections"] {
            assert!(
                stderr.contains(key),
                "{args:?}: {key} missing from:\n{stderr}"
            );
        }
        assert!(stderr.contains("3 problems"), "{stderr}");
    }
}

#[test]
fn binary_exits_64_when_the_config_file_is_missing() {
    let output = run_binary(&["--config", "/nonexistent/dtop-broker.toml"]);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/dtop-broker.toml"), "{stderr}");
}

#[test]
fn binary_check_accepts_the_example_and_the_built_in_defaults() {
    let example = example_path();
    for args in [
        vec!["--check", "--config", example.to_str().unwrap()],
        vec!["--check"],
    ] {
        let output = run_binary(&args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));
    }
}

#[test]
fn binary_prints_a_default_config_that_parses_to_the_defaults() {
    let output = run_binary(&["--print-default-config"]);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(parse_config(&printed).unwrap(), BrokerConfig::default());
}

#[test]
fn binary_serves_mqtt_and_exits_0_on_sigterm() {
    use std::io::{BufRead as _, BufReader};
    use std::sync::mpsc;

    let addr = dtop_broker::reserve_loopback_addr().unwrap();
    let file = temp_config(&format!("[mqtt]\nlisten = \"{addr}\"\n"));
    let mut child = Command::new(BINARY)
        .args(["--config", file.path().to_str().unwrap(), "--log", "info"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dtop-broker");
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());

    // Forward stderr lines through a channel so every wait below has a timeout.
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |needle: &str, seen: &mut Vec<String>| loop {
        match line_rx.recv_timeout(common::WAIT) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Err(_) => return false,
        }
    };

    if !wait_for("Broker is accepting connections.", &mut seen) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        panic!("dtop-broker (pid {pid}) never became ready; stderr: {seen:#?}");
    }

    // A real client handshake proves the process serves MQTT on the configured port.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_client, mut eventloop) = common::client("sigterm-probe", addr);
        common::poll_until(&mut eventloop, "CONNACK", |p| {
            matches!(p, rumqttc::Packet::ConnAck(_)).then_some(())
        })
        .await;
    });

    // Wait for the exit on a thread so the wait has a timeout and no polling loop.
    let (status_tx, status_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    kill(pid, Signal::SIGTERM).expect("signal dtop-broker by its pid");
    let shutdown_logged = wait_for("Shutting down", &mut seen);
    let status = match status_rx.recv_timeout(common::WAIT) {
        Ok(status) => status.expect("wait for dtop-broker"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("dtop-broker (pid {pid}) ignored SIGTERM; stderr: {seen:#?}");
        }
    };
    waiter.join().unwrap();
    reader.join().unwrap();
    assert!(shutdown_logged, "no shutdown log line; stderr: {seen:#?}");
    assert_eq!(status.code(), Some(0), "stderr: {seen:#?}");
}

/// Five mistakes of kinds serde stops at: an unknown key, a value its type refuses, a wrong type,
/// an out-of-range integer, and a string where a list belongs.
const FIVE_PARSE_MISTAKES: &str = r#"
colour = "blue"

[mqtt]
listen = "not-an-address"

[limits]
max_connections = "many"
connection_timeout_ms = -5

[auth]
credentials_file = "/nonexistent/dtop-broker.passwd"

[auth.roles.rig]
publish = "dtop/#"
subscribe = []
"#;

#[test]
fn binary_lists_all_five_parse_errors_with_paths_and_exits_64_before_binding() {
    let file = temp_config(FIVE_PARSE_MISTAKES);
    let paths = [
        "colour",
        "mqtt.listen",
        "limits.max_connections",
        "limits.connection_timeout_ms",
        "auth.roles.rig.publish",
    ];
    assert_refuses_config(
        || Command::new(BINARY),
        file.path(),
        LISTED,
        &paths,
        |run| {
            let stderr = &run.stderr;
            assert!(stderr.contains("5 problems"), "{run}");
            // Neither a listener nor the credentials file was reached.
            assert!(!stderr.contains("accepting connections"), "{stderr}");
            assert!(!stderr.contains("credentials_file"), "{stderr}");
        },
    );
}
