//! Test support shared by the edge's integration tests: the external programs they need
//! (socat for pty pairs, Mosquitto as the broker), started by us and killed by PID on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{ActuatorCommand, ActuatorStatus, Frame, Manifest, Samples};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::codec::Framed;

// ---------------------------------------------------------------------------------------------
// External programs, started by us and killed by PID.

pub fn services_required() -> bool {
    std::env::var("CI").is_ok() || std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// `name` on PATH or in the sbin directories Debian puts daemons in.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tools, or `None` when the test may be skipped.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    match (find_program("socat"), find_program("mosquitto")) {
        (Some(socat), Some(mosquitto)) => Some((socat, mosquitto)),
        _ => {
            assert!(
                !services_required(),
                "socat and mosquitto are required (CI / DTOP_REQUIRE_SERVICES) but missing"
            );
            eprintln!("SKIPPED: socat or mosquitto is not installed");
            None
        }
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A socat-made pty pair: `a` for the edge, `b` for the fake firmware.
pub struct PtyPair {
    _socat: Killed,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl PtyPair {
    pub fn new(socat: &Path, dir: &Path, tag: &str) -> Self {
        let (a, b) = (dir.join(format!("{tag}-a")), dir.join(format!("{tag}-b")));
        let child = Command::new(socat)
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting socat: {e}"));
        let socat = Killed(child);
        wait_until("socat's pty links", || a.exists() && b.exists());
        Self {
            _socat: socat,
            a,
            b,
        }
    }
}

/// A Mosquitto on loopback: the one `scripts/test.sh` started, or a private one on a reserved
/// port.
pub struct Broker {
    _mosquitto: Option<Killed>,
    pub port: u16,
}

impl Broker {
    pub fn start(program: &Path, dir: &Path) -> Self {
        if let Some(port) = std::env::var("DTOP_TEST_MOSQUITTO_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            return Self {
                _mosquitto: None,
                port,
            };
        }
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("reserving a port: {e}"));
            listener
                .local_addr()
                .unwrap_or_else(|e| panic!("{e}"))
                .port()
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let log =
            std::fs::File::create(dir.join("mosquitto.log")).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting mosquitto: {e}"));
        let mosquitto = Killed(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("mosquitto to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
        Self {
            _mosquitto: Some(mosquitto),
            port,
        }
    }
}

pub async fn fake_firmware(
    path: PathBuf,
    manifest: Manifest,
    mut samples_rx: mpsc::UnboundedReceiver<Samples>,
    commands_tx: mpsc::UnboundedSender<ActuatorCommand>,
) {
    let port = tokio_serial::new(path.to_string_lossy(), 921_600)
        .open_native_async()
        .unwrap_or_else(|e| panic!("firmware end {}: {e}", path.display()));
    let mut framed = Framed::new(port, FirmwareCodec::new());
    let mut streaming = false;
    loop {
        tokio::select! {
            frame = framed.next() => match frame {
                Some(Ok(Frame::Hello)) => {
                    framed.send(Frame::Manifest(manifest)).await.unwrap_or_else(|e| panic!("{e}"));
                    streaming = true;
                }
                Some(Ok(Frame::ActuatorCommand(cmd))) => {
                    let status = ActuatorStatus {
                        seq: cmd.seq,
                        enabled: cmd.enable,
                        force_n: if cmd.enable { cmd.force_n } else { 0.0 },
                        applied_at_sample_index: 0,
                    };
                    let _ = framed.send(Frame::ActuatorStatus(status)).await;
                    let _ = commands_tx.send(cmd);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            Some(samples) = samples_rx.recv(), if streaming => {
                framed.send(Frame::Samples(samples)).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fake rig the actuator and command tests drive.

/// 1 Hz, so `max_slew_n_per_s = 2` is exactly 2 N per period, and the edge's wall-clock guard
/// against stalled samples (the drive timeout's duration) never fires however slowly a loaded
/// machine runs a test. Actuator on floor 3; the firmware's own limit, 10 N, is tighter than
/// the config's 20 N.
pub fn slow_actuator_manifest() -> Manifest {
    let channels = [dtop_firmware::ChannelDesc {
        id: 0,
        kind: dtop_firmware::ChannelKind::Acceleration,
        floor: 3,
        scale: 0.001,
    }];
    Manifest::new("fake-fw-0.1", 1_000, 3, 3, 10.0, &channels).unwrap_or_else(|e| panic!("{e:?}"))
}

/// An edge on `serial` publishing to Mosquitto on `mqtt_port`, with fast reconnects, a 20 N
/// and 2 N/s actuator limit and a `drive_timeout_periods` drive timeout.
pub fn actuator_edge_config(
    rig: &dtop_proto::RigId,
    dir: &Path,
    serial: &Path,
    mqtt_port: u16,
    drive_timeout_periods: u64,
) -> dtop_edge::EdgeConfig {
    let config = dtop_edge::EdgeConfig::from_toml(&format!(
        r#"
        rig_id = "{rig}"
        state_dir = "{state}"
        [serial]
        path = "{serial}"
        hello_timeout_ms = 1000
        read_timeout_ms = 60000
        [mqtt]
        host = "127.0.0.1"
        port = {mqtt_port}
        keepalive_s = 5
        reconnect_backoff_min_ms = 50
        reconnect_backoff_max_ms = 500
        [actuator]
        max_force_n = 20.0
        max_slew_n_per_s = 2.0
        drive_timeout_periods = {drive_timeout_periods}
        "#,
        state = dir.join("state").display(),
        serial = serial.display(),
    ))
    .unwrap_or_else(|e| panic!("test config: {e}"));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    config
}

// ---------------------------------------------------------------------------------------------
// An MQTT subscriber standing in for the twin or a dashboard.

/// How long [`subscribe_decoded`] and [`next_decoded`] wait.
pub const SUBSCRIBER_WAIT: Duration = Duration::from_secs(30);

/// Subscribes (QoS 1) to `topics` on the broker at `port` as `client_id`, waits for every SUBACK,
/// and hands on each publish that `decode(topic, payload)` turns into a value.
pub async fn subscribe_decoded<T: Send + 'static>(
    port: u16,
    client_id: String,
    topics: Vec<String>,
    decode: impl Fn(&str, bytes::Bytes) -> Option<T> + Send + 'static,
) -> (rumqttc::AsyncClient, mpsc::UnboundedReceiver<T>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_max_packet_size(
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
    );
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    for t in &topics {
        client
            .subscribe(t.clone(), QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let expected = topics.len();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut subacks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == expected
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(value) = decode(&p.topic, p.payload)
                        && tx.send(value).is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(SUBSCRIBER_WAIT, subscribed_rx)
        .await
        .unwrap_or_else(|_| panic!("no SUBACK"))
        .unwrap_or_else(|e| panic!("{e}"));
    (client, rx)
}

/// The next value from a [`subscribe_decoded`] receiver; panics after [`SUBSCRIBER_WAIT`].
pub async fn next_decoded<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(SUBSCRIBER_WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("subscriber ended while waiting for {what}"))
}

/// How long [`Edge`] waits for a stats condition or for the edge to stop.
pub const EDGE_WAIT: Duration = Duration::from_secs(15);

/// One in-process edge run (`dtop_edge::run_with_stats`) and its stats.
pub struct Edge {
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), dtop_edge::EdgeError>>,
    stats: tokio::sync::watch::Receiver<dtop_edge::EdgeStats>,
}

impl Edge {
    pub fn start(config: dtop_edge::EdgeConfig) -> Self {
        let (stats_tx, stats) = tokio::sync::watch::channel(dtop_edge::EdgeStats::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(dtop_edge::run_with_stats(
            config,
            shutdown.clone(),
            stats_tx,
        ));
        Self {
            shutdown,
            task,
            stats,
        }
    }

    /// The stats now.
    pub fn stats(&self) -> dtop_edge::EdgeStats {
        self.stats.borrow().clone()
    }

    /// The stats once `ready` holds, within [`EDGE_WAIT`].
    pub async fn wait(
        &self,
        what: &str,
        ready: impl FnMut(&dtop_edge::EdgeStats) -> bool,
    ) -> dtop_edge::EdgeStats {
        let mut stats = self.stats.clone();
        match tokio::time::timeout(EDGE_WAIT, stats.wait_for(ready)).await {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!(
                "timed out waiting for {what}; stats: {:?}",
                *self.stats.borrow()
            ),
        }
    }

    /// Cancels and waits for a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(EDGE_WAIT, self.task)
            .await
            .unwrap_or_else(|_| panic!("edge did not stop"))
            .unwrap_or_else(|e| panic!("edge panicked: {e}"))
            .unwrap_or_else(|e| panic!("edge failed: {e}"));
    }
}
