//! The real `dtop-rig-sim` binary given a config with five parse-level mistakes: it lists all
//! five with their TOML paths, exits 64, and opens nothing (no pty link, no truth log).

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use dtop_daemon::testing::assert_refuses_config;

const BINARY: &str = env!("CARGO_BIN_EXE_dtop-rig-sim");

/// A wrong type, an out-of-range integer, an unknown enum variant, an unknown key and a value
/// its type refuses (not a socket address).
const FIVE_PATHS: [&str; 5] = [
    "seed",
    "actuator_floor",
    "excitation_target",
    "colour",
    "modbus_listen",
];

fn five_mistakes(dir: &Path) -> String {
    format!(
        r#"seed = "forty-two"
actuator_floor = 300
excitation_target = "roof"
colour = "blue"
modbus_listen = "not-an-address"
pty_link = "{link}"
truth_log = "{truth}"
"#,
        link = dir.join("pty").display(),
        truth = dir.join("truth.csv").display(),
    )
}

#[test]
fn lists_all_five_parse_errors_with_paths_and_exits_64_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, five_mistakes(dir.path())).unwrap();
    // The sim puts the file name before each path: `  - FILE: PATH (line N): ...`.
    assert_refuses_config(
        || Command::new(BINARY),
        &config,
        ": ",
        &FIVE_PATHS,
        |run| {
            assert!(
                !dir.path().join("pty").exists(),
                "{:?}: pty link made",
                run.args
            );
            assert!(
                !dir.path().join("truth.csv").exists(),
                "{:?}: truth log made",
                run.args
            );
        },
    );
}
