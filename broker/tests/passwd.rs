//! `dtop-broker passwd` as an operator uses it: add users with passwords from stdin or a file,
//! remove them, and get exit code 64 for mistakes; and a config naming a broken credentials
//! file is refused with 64 before anything binds.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use dtop_broker::credentials::Credentials;
use dtop_broker::{RigScope, Role};

const BINARY: &str = env!("CARGO_BIN_EXE_dtop-broker");

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dtop-broker");
    // The binary may exit before reading stdin (e.g. an unknown role); a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn adds_and_removes_users_with_argon2id_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();

    let out = run(
        &["passwd", "--file", f, "add", "so-3s", "--role", "rig"],
        "from stdin\n",
    );
    assert!(out.status.success(), "{out:?}");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "from a file\n").unwrap();
    let out = run(
        &[
            "passwd",
            "--file",
            f,
            "add",
            "alice",
            "--role",
            "operator",
            "--rigs",
            "so-3s,so-5s",
            "--password-file",
            pw_file.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("so-3s:rig:-:$argon2id$"), "{text}");
    assert!(
        !text.contains("from stdin") && !text.contains("from a file"),
        "no plain passwords"
    );
    let creds = Credentials::load(&file).unwrap();
    let rig = creds.verify("so-3s", b"from stdin").unwrap();
    assert_eq!(
        (rig.role, rig.rigs),
        (Role::Rig, RigScope::Only(vec!["so-3s".into()]))
    );
    assert!(creds.verify("alice", b"from a file").is_some());
    assert!(creds.verify("alice", b"from stdin").is_none());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert!(
        run(&["passwd", "--file", f, "remove", "so-3s"], "")
            .status
            .success()
    );
    assert_eq!(
        run(&["passwd", "--file", f, "remove", "so-3s"], "")
            .status
            .code(),
        Some(64)
    );
    assert_eq!(Credentials::load(&file).unwrap().len(), 1);
}

#[test]
fn refuses_unknown_roles_and_empty_passwords_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwd");
    let f = f.to_str().unwrap();
    assert_eq!(
        run(
            &["passwd", "--file", f, "add", "x", "--role", "wizard"],
            "pw\n"
        )
        .status
        .code(),
        Some(64)
    );
    assert_eq!(
        run(
            &["passwd", "--file", f, "add", "x", "--role", "admin"],
            "\n"
        )
        .status
        .code(),
        Some(64)
    );
    assert_eq!(
        run(
            &[
                "passwd", "--file", f, "add", "x", "--role", "admin", "--rigs", "a/b"
            ],
            "pw\n"
        )
        .status
        .code(),
        Some(64)
    );
}

#[test]
fn check_refuses_a_config_whose_credentials_file_is_broken() {
    let stderr = check_refused("bob:wizard:-:-\n", "");
    assert!(stderr.contains("unknown role \"wizard\""), "{stderr}");
}

#[test]
fn refuses_rig_user_names_that_are_not_rig_ids() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwd");
    let f = f.to_str().unwrap();
    for bad in ["+", "a/b", "a#b", "so 3s"] {
        let out = run(
            &["passwd", "--file", f, "add", bad, "--role", "rig"],
            "pw\n",
        );
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not a valid rig id"), "{bad:?}: {stderr}");
    }
    assert!(
        !dir.path().join("passwd").exists(),
        "nothing was written for a refused user"
    );
    // Other roles address rigs through `--rigs`, so their names are free.
    let out = run(
        &["passwd", "--file", f, "add", "a/b", "--role", "operator"],
        "pw\n",
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn check_lists_every_user_name_that_cannot_stand_in_a_topic() {
    // Two rig names break `{rig}`; with `{username}` in the operator rules, `a+b` breaks too.
    let stderr = check_refused("+:rig:-:-\na/b:rig:-:-\nso-3s:rig:-:-\n", "");
    assert!(
        stderr.contains("line 1") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("line 3"), "{stderr}");

    let stderr = check_refused(
        "a+b:operator:-:-\nbob:operator:-:-\n",
        "[auth.roles.operator]\npublish = [\"home/{username}/#\"]\nsubscribe = []\n",
    );
    assert!(
        stderr.contains("\"a+b\"") && !stderr.contains("\"bob\""),
        "{stderr}"
    );
}

/// Runs `dtop-broker --check` on a config whose credentials file holds `credentials` (and
/// whose `[auth]` is followed by `auth_toml`), asserts it is refused with exit 64, and returns
/// what it printed on stderr.
fn check_refused(credentials: &str, auth_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("passwd");
    std::fs::write(&creds, credentials).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\ncredentials_file = {:?}\n{auth_toml}",
            creds.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run(&["--check", "--config", config.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
