//! The real `dtop` binary's exit statuses for `dtop study`/`dtop model` that need no server:
//! bad input is 64 with every problem named, an unreachable server is 2, and `--model` on the
//! computations reads a ModelSpec file.

use std::process::{Command, Output};

fn dtop(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dtop"));
    command
        .args(args)
        .env_remove("DTOP_SERVER")
        .env_remove("DTOP_USER")
        .env_remove("DTOP_PASSWORD");
    for (k, v) in envs {
        command.env(k, v);
    }
    match command.output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run dtop: {e}"),
    }
}

/// A loopback port with nothing listening: bound, then released.
fn closed_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind a loopback port: {e}"),
    }
}

#[test]
fn bad_submit_input_exits_64_and_names_every_problem_before_any_request() {
    let out = dtop(
        &[
            "study", "submit", "nope", "--model", "Bad Name", "--param", "x", "--user", "a",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["kind \"nope\"", "--model \"Bad Name\"", "--param \"x\""] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[test]
fn an_unreachable_server_exits_2_and_a_missing_user_exits_64() {
    let server = format!("http://127.0.0.1:{}", closed_port());
    let out = dtop(
        &["study", "list", "--server", &server, "--user", "a"],
        &[("DTOP_PASSWORD", "not-a-real-one")],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dtop(&["model", "list", "--server", &server], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user"));
}

#[test]
fn modal_takes_a_model_file_and_refuses_an_unknown_one() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("sdof.json");
    // One floor: f = sqrt(k/m)/2π = sqrt(400/1)/2π = 20/2π Hz.
    let spec = r#"{"structure": {"floor_masses_kg": [1.0], "storey_stiffness_n_per_m": [400.0],
                   "damping": {"kind": "modal", "zetas": [0.02]}}}"#;
    if let Err(e) = std::fs::write(&path, spec) {
        panic!("{e}");
    }
    let out = dtop(&["modal", "--model", &path.display().to_string()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    let f_hz = value["modes"][0]["frequency_hz"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let expected_hz = 20.0 / (2.0 * std::f64::consts::PI);
    assert!((f_hz - expected_hz).abs() < 1e-9 * expected_hz, "{f_hz}");
    let out = dtop(&["modal", "--model", "./missing.toml"], &[]);
    assert_eq!(out.status.code(), Some(64));
}
