//! The real `dtop-edge` binary given a config with five parse-level mistakes: it lists all five
//! with their TOML paths, exits 64, and opens nothing (no state directory, no serial port).

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use dtop_daemon::testing::{LISTED, assert_refuses_config};

const BINARY: &str = env!("CARGO_BIN_EXE_dtop-edge");

/// The five mistakes, each of a kind serde stops at: a rig id its type refuses, an unknown key,
/// a wrong type, an unknown enum variant and an out-of-range integer.
const FIVE_PATHS: [&str; 5] = [
    "rig_id",
    "colour",
    "mqtt.port",
    "modbus.devices[0].registers[0].table",
    "modbus.devices[0].registers[1].address",
];

fn five_mistakes(dir: &Path) -> String {
    format!(
        r#"rig_id = "rig/1"
state_dir = "{state}"
colour = "blue"

[serial]
path = "{serial}"

[mqtt]
host = "127.0.0.1"
port = "1883"

[actuator]
max_force_n = 10.0
max_slew_n_per_s = 1000.0

[[modbus.devices]]
name = "sim"
tcp = {{ addr = "127.0.0.1:9" }}
unit_id = 1

[[modbus.devices.registers]]
channel = "a"
table = "inputs"
address = 0
data_type = "u16"

[[modbus.devices.registers]]
channel = "b"
table = "input"
address = 70000
data_type = "u16"
"#,
        state = dir.join("state").display(),
        serial = dir.join("no-such-tty").display(),
    )
}

#[test]
fn lists_all_five_parse_errors_with_paths_and_exits_64_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, five_mistakes(dir.path())).unwrap();
    assert_refuses_config(
        || Command::new(BINARY),
        &config,
        LISTED,
        &FIVE_PATHS,
        |run| {
            assert!(run.stderr.contains("5 problems"), "{run}");
            assert!(
                !dir.path().join("state").exists(),
                "{:?}: the state directory was created",
                run.args
            );
        },
    );
}

#[test]
fn parse_errors_are_listed_with_the_validation_errors_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    // One parse-level mistake (unknown key) and one range mistake (baud 0) in the same file.
    let text = format!(
        "rig_id = \"r1\"\nstate_dir = {state:?}\ncolour = 1\n[serial]\npath = \"/dev/null\"\nbaud = 0\n\
         [mqtt]\nhost = \"127.0.0.1\"\n[actuator]\nmax_force_n = 10.0\nmax_slew_n_per_s = 1000.0\n",
        state = dir.path().join("state").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let output = Command::new(BINARY)
        .args(["--check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("  - colour (line 3)"), "{stderr}");
    assert!(
        stderr.contains("  - serial.baud: must be positive"),
        "{stderr}"
    );
}
