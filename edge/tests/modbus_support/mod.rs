//! Test support for the Modbus tests: pymodbus (a third-party Modbus server) run as a child
//! process over TCP or RTU, killed on drop, and small waiting helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dtop_edge::EdgeStats;
use dtop_edge::modbus::ModbusDeviceStats;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// A pymodbus server: every slave holds the same register map, with slave id `s` added to the
/// counting input registers (`ir[k] = 1000 * s + k`) and to holding register 11:
/// - hr 0–1: π as f32, ABCD; hr 2–3: π as f32, CDAB; hr 4: -200 as i16;
///   hr 5–6: 0x12345678 as u32, ABCD; hr 7–10: π as f64, ABCD (0x400921FB54442D18);
///   hr 11: slave id; hr 12–13: π as f32, BADC; hr 14–15: π as f32, DCBA;
///   hr 16–17: 0x80000000 as u32, ABCD (2³¹, one past i32); hr 18–19: 1e30 as f32, ABCD.
/// - ir 0–249: `1000 * s + k`; coils 0–63: odd addresses on; discrete 0–63: multiples of 3 on.
///
/// Anything outside those blocks is answered with IllegalDataAddress; an unknown slave id is
/// ignored (no answer), as on a real multi-drop line.
const PEER_PY: &str = r#"
import asyncio, math, socket, struct, sys
from pymodbus.server import ModbusTcpServer, ModbusSerialServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
from pymodbus.framer import FramerType

def words(fmt, value):
    b = struct.pack('>' + fmt, value)
    return [int.from_bytes(b[i:i + 2], 'big') for i in range(0, len(b), 2)]

def slave(s):
    pi32 = words('f', math.pi)
    hr = (pi32 + pi32[::-1] + words('h', -200) + words('I', 0x12345678) + words('d', math.pi)
          + [s]
          + [((w & 0xFF) << 8) | (w >> 8) for w in pi32]
          + [((w & 0xFF) << 8) | (w >> 8) for w in pi32[::-1]]
          + words('I', 0x80000000) + words('f', 1e30)
          + [0] * 12)
    # pymodbus adds 1 to every PDU address: blocks start at 1 so that PDU address 0 is value 0.
    return ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(1, hr),
        ir=ModbusSequentialDataBlock(1, [1000 * s + k for k in range(250)]),
        co=ModbusSequentialDataBlock(1, [k % 2 == 1 for k in range(64)]),
        di=ModbusSequentialDataBlock(1, [k % 3 == 0 for k in range(64)]),
    )

async def main():
    mode, where, ids = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(',')]
    context = ModbusServerContext(slaves={i: slave(i) for i in ids}, single=False)
    if mode == 'tcp':
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
        server = ModbusTcpServer(context, framer=FramerType.SOCKET, address=('127.0.0.1', port),
                                 ignore_missing_slaves=True)
        await server.serve_forever(background=True)
        print(f'listening 127.0.0.1:{port}', flush=True)
    else:
        server = ModbusSerialServer(context, framer=FramerType.RTU, port=where, baudrate=int(sys.argv[4]),
                                    parity='N', stopbits=1, bytesize=8, ignore_missing_slaves=True)
        await server.serve_forever(background=True)
        print(f'listening {where}', flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// A pymodbus actuator drive on `127.0.0.1:PORT` (`argv[1]`, 0 for a free port): holding
/// registers 0–15 (0 enable, 1–2 force as f32 ABCD, 3–6 origin), all zero at start. Every write
/// it accepts is appended to the log file `argv[2]` as `address word word ...` before it is
/// answered: the log is what the device acknowledged.
const ACTUATOR_PY: &str = r#"
import asyncio, socket, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
from pymodbus.framer import FramerType

class Logged(ModbusSequentialDataBlock):
    def setValues(self, address, values):
        super().setValues(address, values)
        words = values if isinstance(values, list) else [values]
        with open(sys.argv[2], 'a') as log:
            # pymodbus adds 1 to every PDU address (the block starts at 1).
            log.write(' '.join(str(int(w)) for w in [address - 1] + words) + '\n')

async def main():
    port = int(sys.argv[1])
    if port == 0:
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
    context = ModbusServerContext(slaves=ModbusSlaveContext(hr=Logged(1, [0] * 16)), single=True)
    server = ModbusTcpServer(context, framer=FramerType.SOCKET, address=('127.0.0.1', port))
    await server.serve_forever(background=True)
    print(f'listening 127.0.0.1:{port}', flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// True when CI (or the developer) demands every peer be present.
pub fn services_required() -> bool {
    std::env::var("CI").is_ok() || std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The Python with pymodbus: `DTOP_TEST_PYTHON`, else the repository's venv; `None` (after a
/// printed notice) when missing and not required.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("DTOP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-peers/bin/python")
        });
    let works = std::process::Command::new(&candidate)
        .args(["-c", "import pymodbus, serial"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(candidate);
    }
    assert!(
        !services_required(),
        "a Python with pymodbus is required (CI / DTOP_REQUIRE_SERVICES) but {} has none",
        candidate.display()
    );
    eprintln!(
        "SKIPPED: no Python with pymodbus at {}",
        candidate.display()
    );
    None
}

/// A running pymodbus server, killed when dropped.
pub struct PyPeer {
    pub child: Child,
    /// `127.0.0.1:PORT` for TCP, the pty path for RTU.
    pub address: String,
    _script_dir: tempfile::TempDir,
}

impl PyPeer {
    /// Starts pymodbus over TCP on a free loopback port, serving `slave_ids`.
    pub async fn tcp(python: &Path, slave_ids: &[u8]) -> Self {
        let addr = Self::start(python, &["tcp", "-", &ids(slave_ids)]).await;
        let (child, address, dir) = addr;
        Self {
            child,
            address: address.trim_start_matches("listening ").to_owned(),
            _script_dir: dir,
        }
    }

    /// Starts a pymodbus actuator drive ([`ACTUATOR_PY`]) on `port` (0: a free one), logging
    /// the writes it acknowledges to `log`.
    pub async fn actuator(python: &Path, port: u16, log: &Path) -> Self {
        let log_text = log.to_string_lossy().into_owned();
        let (child, address, dir) =
            Self::start_script(python, ACTUATOR_PY, &[&port.to_string(), &log_text]).await;
        Self {
            child,
            address: address.trim_start_matches("listening ").to_owned(),
            _script_dir: dir,
        }
    }

    /// Starts pymodbus as an RTU server on the serial device `path`, serving `slave_ids`.
    pub async fn rtu(python: &Path, path: &Path, baud: u32, slave_ids: &[u8]) -> Self {
        let path_text = path.to_string_lossy().into_owned();
        let (child, _, dir) = Self::start(
            python,
            &["rtu", &path_text, &ids(slave_ids), &baud.to_string()],
        )
        .await;
        Self {
            child,
            address: path_text,
            _script_dir: dir,
        }
    }

    async fn start(python: &Path, args: &[&str]) -> (Child, String, tempfile::TempDir) {
        Self::start_script(python, PEER_PY, args).await
    }

    async fn start_script(
        python: &Path,
        text: &str,
        args: &[&str],
    ) -> (Child, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let script = dir.path().join("peer.py");
        std::fs::write(&script, text).unwrap_or_else(|e| panic!("{e}"));
        // pymodbus logs every refused or unanswered request on stderr; keep that out of the
        // test output, but show it if the server does not come up.
        let log_path = dir.path().join("peer.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting pymodbus: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("pymodbus did not start within 20 s"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("pymodbus exited before listening:\n{log}")
            });
        assert!(line.starts_with("listening "), "pymodbus said {line:?}");
        (child, line, dir)
    }

    /// The process id, for SIGSTOP/SIGCONT.
    pub fn pid(&self) -> u32 {
        self.child
            .id()
            .unwrap_or_else(|| panic!("pymodbus already reaped"))
    }

    /// Freezes (`true`) or thaws the server with SIGSTOP / SIGCONT: a device that stops
    /// answering while its socket stays open.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = std::process::Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {} failed", self.pid());
    }

    /// Kills the server and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn ids(slave_ids: &[u8]) -> String {
    slave_ids
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits (at most 15 s) until `ready` holds for the stats, and returns them.
pub async fn wait_stats(
    rx: &mut watch::Receiver<EdgeStats>,
    what: &str,
    mut ready: impl FnMut(&EdgeStats) -> bool,
) -> EdgeStats {
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            {
                let s = rx.borrow_and_update();
                if ready(&s) {
                    return s.clone();
                }
            }
            if rx.changed().await.is_err() {
                panic!("stats sender gone while waiting for {what}");
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:#?}", rx.borrow().modbus))
}

/// The counters of `device` (default ones if it has none yet).
pub fn device(stats: &EdgeStats, name: &str) -> ModbusDeviceStats {
    stats.modbus.get(name).cloned().unwrap_or_default()
}
