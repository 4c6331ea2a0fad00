//! The `dtop-edge` binary under a (simulated) systemd `Type=notify` supervisor: a Unix datagram
//! socket as `NOTIFY_SOCKET` and `WATCHDOG_USEC` in its environment, exactly what systemd
//! passes. The edge must say READY=1 once its serial port is open and then keep pinging
//! WATCHDOG=1 while its loop runs, and STOPPING=1 on SIGTERM.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dtop_firmware::{ChannelDesc, ChannelKind, Manifest};
use tokio::sync::mpsc;

use crate::common;
use common::{Broker, Killed, PtyPair, fake_firmware, tools};

fn manifest() -> Manifest {
    let channels = [ChannelDesc {
        id: 0,
        kind: ChannelKind::Acceleration,
        floor: 1,
        scale: 0.001,
    }];
    Manifest::new("fake-fw-0.1", 1_000_000, 3, 0, 0.0, &channels)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Every datagram received within `window`.
fn collect(
    socket: &UnixDatagram,
    window: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < end && !until(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_ready_after_opening_the_port_then_pings_the_watchdog() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let pty = PtyPair::new(&socat, dir.path(), "pty");
    let (commands_tx, _commands) = mpsc::unbounded_channel();
    let (_samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_firmware(
        pty.b.clone(),
        manifest(),
        samples_rx,
        commands_tx,
    ));
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "rig_id = \"notify\"\nstate_dir = \"{}\"\n[serial]\npath = \"{}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[actuator]\nmax_force_n = 1.0\nmax_slew_n_per_s = 10.0\n",
            dir.path().join("state").display(),
            pty.a.display(),
            broker.port
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // systemd names the watched process in WATCHDOG_PID; `exec` keeps the shell's PID.
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_dtop-edge"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        // 2 s: the edge pings at half of it; heartbeats turn its loop every second.
        .env("WATCHDOG_USEC", "2000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let mut child = Killed(child);

    let got = collect(&socket, Duration::from_secs(15), |g| {
        g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    let ready = got.iter().position(|m| m.contains("READY=1"));
    let pings: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(i, _)| i)
        .collect();
    assert!(ready.is_some(), "no READY=1 in {got:?}");
    assert!(
        pings.len() >= 3,
        "fewer than 3 watchdog pings in 15 s: {got:?}"
    );
    assert!(
        pings.iter().all(|&p| Some(p) > ready),
        "a ping before READY: {got:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let got = collect(&socket, Duration::from_secs(10), |g| {
        g.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    let exit = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(exit.success(), "{exit:?}");
}
