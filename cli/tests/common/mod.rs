//! What the `dtop-cli` integration tests share: the real `dtop up` binary as a child process on
//! free ports (stopped by its PID), the address and first-run admin password it prints, and the
//! server crate's browser harness (`server/tests/common/browser.rs`, included by path, not
//! copied) with the few items that harness takes from its parent module.

// Helpers fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[path = "../../../server/tests/common/browser.rs"]
pub mod browser;

/// Upper bound on every wait; generous for a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// The password rule of the server harness's test users (`dtop up` has one user, `admin`,
/// whose password it prints; see [`Up::admin_password`]).
pub fn password(user: &str) -> String {
    format!("pw-{user}-correct-horse")
}

/// Whether missing services fail the test instead of being skipped.
pub fn services_required() -> bool {
    std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A server the browser harness can visit.
pub struct Server {
    pub base: String,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `dtop up`, stopped with SIGTERM by its PID when dropped.
pub struct Up {
    child: Child,
    /// Where the API and the pages listen (`127.0.0.1:PORT`).
    pub http: String,
    /// The embedded broker's port.
    pub mqtt_port: u16,
    /// The first-run admin password, as printed.
    pub admin_password: String,
    /// Every line printed before the login line.
    pub printed: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Up {
    /// Starts `dtop up --data-dir DIR` on free ports with `extra` flags, and reads its output
    /// up to the first-run login line.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let mqtt_port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtop"))
            .args(["up", "--data-dir"])
            .arg(dir)
            .args(["--mqtt-port", &mqtt_port.to_string(), "--http", &http])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut up = Up {
            child,
            http,
            mqtt_port,
            admin_password: String::new(),
            printed: Vec::new(),
        };
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        up.admin_password = loop {
            let line = line_rx.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!("no login line from dtop up; printed: {:?}", up.printed)
            });
            if let Some(rest) = line.strip_prefix("login:   user admin, password ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            up.printed.push(line);
        };
        // Keep draining the status lines so `dtop up` never blocks on a full pipe.
        std::thread::spawn(move || while line_rx.recv().is_ok() {});
        up
    }

    /// The base URL of the API and pages.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }
}
