//! Benchmark: the edge daemon's CPU and memory at 8 channels × 1 kHz, as a process.
//!
//! A fake firmware on one end of a socat pty pair streams 8 channels at 1 kHz (10 samples per
//! frame, PROTOCOL.md §4.3) to a real `dtop-edge` process on the other end, which publishes
//! 100-sample blocks at QoS 1 to a real Mosquitto. After a warm-up, CPU time (utime + stime
//! from /proc/PID/stat) and peak RSS (VmHWM) are read for the edge and, for comparison, for
//! Mosquitto carrying the same traffic. The edge runs as deployed: its block spool is always
//! on (there is no switch; defaults, `fsync = "interval"`) and block seqs come from the
//! reservation (`seq_reservation`), so the figures include spooling.
//!
//! Run: `cargo build --release -p dtop-edge && cargo run --release -p dtop-edge --example
//! edge_footprint -- [SECONDS]` (default 30). Needs `socat` and `mosquitto`. Bounded: the
//! firmware stops after SECONDS + warm-up, and every process is killed by PID at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dtop_firmware::{ChannelDesc, ChannelKind, Manifest, Samples};
use tokio::sync::mpsc;

const CHANNELS: u8 = 8;
const WARM_UP: Duration = Duration::from_secs(5);

fn manifest() -> Manifest {
    let channels: Vec<ChannelDesc> = (0..CHANNELS)
        .map(|id| ChannelDesc {
            id,
            kind: ChannelKind::Acceleration,
            floor: id % 3 + 1,
            scale: 1e-5,
        })
        .collect();
    Manifest::new("footprint-fw", 1_000_000, 3, 0, 0.0, &channels)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// (utime + stime) in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    field(11) + field(12)
}

/// A /proc/PID/status field in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_s() -> f64 {
    // POSIX sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; `getconf` says for sure.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn edge_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("DTOP_BIN_DIR") {
        return PathBuf::from(dir).join("dtop-edge");
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // target/release/examples/edge_footprint → target/release/dtop-edge
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("dtop-edge"))
        .unwrap_or_else(|| panic!("cannot find dtop-edge"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (Some(socat), Some(mosquitto)) = (
        common::find_program("socat"),
        common::find_program("mosquitto"),
    ) else {
        panic!("socat and mosquitto are needed");
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A private Mosquitto, so its CPU is this traffic's alone (the Broker helper would reuse
    // the one scripts/test.sh exports).
    assert!(
        std::env::var_os("DTOP_TEST_MOSQUITTO_PORT").is_none(),
        "unset DTOP_TEST_MOSQUITTO_PORT: the benchmark needs a Mosquitto of its own"
    );
    let broker = common::Broker::start(&mosquitto, dir.path());
    let mosquitto_pid = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ss -ltnpH 'sport = :{}' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2",
            broker.port
        ))
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        });
    let pty = common::PtyPair::new(&socat, dir.path(), "pty");
    let (commands_tx, _commands) = mpsc::unbounded_channel();
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(common::fake_firmware(
        pty.b.clone(),
        manifest(),
        samples_rx,
        commands_tx,
    ));
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "rig_id = \"footprint\"\nstate_dir = \"{}\"\n[serial]\npath = \"{}\"\n[acquisition]\nblock_samples = 100\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[actuator]\nmax_force_n = 1.0\nmax_slew_n_per_s = 10.0\n",
            dir.path().join("state").display(),
            pty.a.display(),
            broker.port
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let edge = Command::new(edge_binary())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting dtop-edge: {e}"));
    let pid = edge.id();
    let mut edge = common::Killed(edge);

    // 10 samples per frame every 10 ms, like PROTOCOL.md recommends at 1 kHz.
    let total = WARM_UP + Duration::from_secs(seconds) + Duration::from_secs(1);
    let feeder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let started = Instant::now();
        let mut index = 0u64;
        while started.elapsed() < total {
            tick.tick().await;
            let raw: Vec<i32> = (0..10 * i32::from(CHANNELS))
                .map(|v| v * 37 - 1000)
                .collect();
            let frame = Samples::new(index, CHANNELS, raw).unwrap_or_else(|e| panic!("{e:?}"));
            index += 10;
            if samples_tx.send(frame).is_err() {
                break;
            }
        }
        index
    });
    tokio::time::sleep(WARM_UP).await;
    let (edge0, mosq0, t0) = (cpu_ticks(pid), mosquitto_pid.map(cpu_ticks), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (edge1, mosq1, elapsed) = (cpu_ticks(pid), mosquitto_pid.map(cpu_ticks), t0.elapsed());
    let hz = clock_ticks_per_s();
    let share = |ticks: u64| 100.0 * ticks as f64 / hz / elapsed.as_secs_f64();
    println!(
        "edge footprint: 8 channels × 1 kHz, 100-sample blocks at QoS 1 to Mosquitto, {seconds} s after a {} s warm-up",
        WARM_UP.as_secs()
    );
    println!(
        "  dtop-edge:  CPU {:.2} % of one core, RSS now {:.1} MB, peak {:.1} MB",
        share(edge1 - edge0),
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0
    );
    if let (Some(p), Some(a), Some(b)) = (mosquitto_pid, mosq0, mosq1) {
        println!(
            "  mosquitto (same traffic, for scale): CPU {:.2} % of one core, RSS {:.1} MB",
            share(b - a),
            status_kb(p, "VmRSS:") as f64 / 1024.0
        );
    }
    let sent = feeder.await.unwrap_or(0);
    println!("  samples streamed: {sent}");
    let _ = edge.0.kill();
}
