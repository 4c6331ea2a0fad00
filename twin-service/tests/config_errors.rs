//! The real `dtop-twin` binary given a config with five parse-level mistakes: it lists all five
//! with their TOML paths, exits 64, and opens nothing (no storage directory, no MQTT connection).

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use dtop_daemon::testing::{LISTED, assert_refuses_config};

const BINARY: &str = env!("CARGO_BIN_EXE_dtop-twin");

/// An out-of-range integer, a wrong type, an unknown key and two unknown enum variants.
const FIVE_PATHS: [&str; 5] = [
    "mqtt.port",
    "mqtt.keepalive_s",
    "mqtt.colour",
    "storage.file.precision",
    "spool.fsync",
];

fn five_mistakes(dir: &Path) -> String {
    format!(
        r#"[mqtt]
host = "127.0.0.1"
port = 70000
keepalive_s = "30"
colour = "blue"

[storage.file]
dir = "{lines}"
precision = "minutes"

[spool]
fsync = "sometimes"
"#,
        lines = dir.join("lines").display(),
    )
}

#[test]
fn lists_all_five_parse_errors_with_paths_and_exits_64_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twin.toml");
    std::fs::write(&config, five_mistakes(dir.path())).unwrap();
    let in_dir = || {
        let mut command = Command::new(BINARY);
        command.current_dir(dir.path());
        command
    };
    assert_refuses_config(in_dir, &config, LISTED, &FIVE_PATHS, |run| {
        assert!(run.stderr.contains("5 problems"), "{run}");
        let created: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != "twin.toml")
            .collect();
        assert!(created.is_empty(), "{:?}: created {created:?}", run.args);
    });
}
