//! Runs the real pipeline as processes — `dtop-rig-sim` → pty → `dtop-edge` → MQTT broker →
//! `dtop-twin` → storage — and checks storage against the simulator's ground truth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::RigBirth;
use dtop_proto::{Message, RigId};

use crate::truth::Truth;
use crate::{Proc, Services, bin, free_port, wait_for, wait_tcp};

/// Which MQTT broker carries the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `dtop-broker` as a process.
    Dtop,
    /// A real Mosquitto, proving edge and twin speak standard MQTT.
    Mosquitto,
    /// A three-node NATS cluster (JetStream, MQTT 3.1.1 gateway, no authentication), the
    /// test's [`Services::nats_cluster`]: the edge lists the nodes' MQTT gateways from node 1,
    /// the twin from node 2 (unless [`EdgeOptions::brokers`] / [`EdgeOptions::twin_brokers`]
    /// say otherwise), so every block crosses the cluster's routes; [`Pipeline::mqtt_port`] is
    /// the twin's first node. NATS speaks MQTT 3.1.1 only, QoS 0 and 1, without shared
    /// subscriptions.
    Nats,
    /// Brokers the caller runs (a [`crate::nats::NatsCluster`]): the edge and the twin connect
    /// to their failover lists, [`EdgeOptions::brokers`] and [`EdgeOptions::twin_brokers`].
    External,
}

impl BrokerKind {
    /// Whether this broker can run here: `Ok(false)`, after saying the test is skipped, only
    /// for [`BrokerKind::Nats`] without a `nats-server` when services are optional (see
    /// [`crate::nats::server_binary`]); under `CI` or `DTOP_REQUIRE_SERVICES=1` an error.
    pub fn available(self) -> Result<bool> {
        match self {
            BrokerKind::Nats => Ok(crate::nats::server_binary()?.is_some()),
            BrokerKind::Dtop | BrokerKind::Mosquitto | BrokerKind::External => Ok(true),
        }
    }
}

/// `nodes` rotated to start at `first`: one node's failover list.
fn from_node(nodes: &[SocketAddr], first: usize) -> Vec<SocketAddr> {
    nodes
        .iter()
        .cycle()
        .skip(first)
        .take(nodes.len())
        .copied()
        .collect()
}

/// Where the twin stores.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// InfluxDB 1.x, v1 API, into `database`.
    InfluxV1 { url: String, database: String },
    /// An InfluxDB v2 write API (VictoriaMetrics here).
    InfluxV2 { url: String },
    /// Several InfluxDB 1.x servers as `[[storage.nodes]]` (`(name, url)`), each into
    /// `database`.
    InfluxV1Nodes {
        nodes: Vec<(String, String)>,
        database: String,
    },
    /// Line-protocol files in the run's directory (benchmarks that do not look at storage).
    Files,
}

/// One pipeline run's settings.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub rig: String,
    pub broker: BrokerKind,
    pub store: StoreKind,
    /// Samples the simulator sends before it stops streaming.
    pub samples: u64,
    /// Simulator speed factor (1 = real time).
    pub speed: f64,
    pub seed: u64,
    /// Samples per published block.
    pub block_samples: u32,
    /// Extra `dtop-rig-sim` arguments; `{dir}` stands for the run's directory.
    pub sim_args: Vec<String>,
    /// Extra TOML appended to the twin's configuration.
    pub twin_toml: String,
    /// Edge and broker knobs the fault tests turn.
    pub edge: EdgeOptions,
}

/// What the fault tests change about the edge and its broker.
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// Extra TOML appended to the edge's configuration (after its last table, so it may add
    /// tables such as `[spool]` or `[metrics]`).
    pub toml: String,
    /// The `dtop-broker` port (default: a free one), so a proxy can point at it beforehand.
    pub broker_port: Option<u16>,
    /// The port the edge connects to instead of the broker's (a [`crate::proxy`]).
    pub mqtt_port: Option<u16>,
    /// The edge's `[actuator]` table instead of the default (20 N, 2000 N/s).
    pub actuator_toml: Option<String>,
    /// With [`BrokerKind::External`] (or to override [`BrokerKind::Nats`]'s): the edge's
    /// `[mqtt] brokers`, tried in this order.
    pub brokers: Vec<SocketAddr>,
    /// With [`BrokerKind::External`] (or to override [`BrokerKind::Nats`]'s): the twin's
    /// `[mqtt] brokers`; the first one is also [`Pipeline::mqtt_port`], where
    /// [`Pipeline::read_birth`] reads.
    pub twin_brokers: Vec<SocketAddr>,
}

/// The `[mqtt]` keys that say where to connect: `brokers = [...]` for a list, else one
/// `host`/`port`.
fn broker_keys(brokers: &[SocketAddr], port: u16) -> String {
    if brokers.is_empty() {
        return format!("host = \"127.0.0.1\"\nport = {port}\n");
    }
    let list: Vec<String> = brokers.iter().map(|b| format!("\"{b}\"")).collect();
    format!("brokers = [{}]\n", list.join(", "))
}

/// The edge's `[actuator]` table unless a test gives its own.
const DEFAULT_ACTUATOR_TOML: &str = "[actuator]\nmax_force_n = 20.0\nmax_slew_n_per_s = 2000.0\n";

/// A running pipeline. Processes are killed by PID when this is dropped.
#[derive(Debug)]
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub spec: PipelineSpec,
    pub mqtt_port: u16,
    pub broker: Option<Proc>,
    pub twin: Proc,
    pub sim: Proc,
    pub edge: Proc,
    /// Wall clock when the pipeline started, ns since the epoch.
    pub started_ns: i64,
    /// Starts of each process, to name their logs.
    restarts: u32,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Pipeline {
    /// Starts the broker (a dtop-broker process, or the test's NATS cluster unless it runs
    /// already; Mosquitto is the shared one), twin, simulator and edge, in that order, each
    /// only once the previous one is ready.
    pub fn start(mut spec: PipelineSpec, services: &mut Services) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let started_ns = now_ns();
        if spec.broker == BrokerKind::Nats {
            let cluster = services.nats_cluster()?;
            let nodes: Vec<SocketAddr> = (0..crate::nats::NODES)
                .map(|i| cluster.mqtt_addr(i))
                .collect();
            if spec.edge.brokers.is_empty() {
                spec.edge.brokers = from_node(&nodes, 0);
            }
            if spec.edge.twin_brokers.is_empty() {
                spec.edge.twin_brokers = from_node(&nodes, 1);
            }
        }
        let (mqtt_port, broker) = match spec.broker {
            BrokerKind::Mosquitto => (services.mosquitto_port()?, None),
            BrokerKind::Nats | BrokerKind::External => (
                spec.edge
                    .twin_brokers
                    .first()
                    .context("BrokerKind::External needs edge.twin_brokers")?
                    .port(),
                None,
            ),
            BrokerKind::Dtop => {
                let port = match spec.edge.broker_port {
                    Some(p) => p,
                    None => free_port()?,
                };
                let conf = dir.path().join("broker.toml");
                std::fs::write(&conf, format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n"))?;
                (port, Some(spawn_broker(dir.path(), "broker", port)?))
            }
        };

        let storage = match &spec.store {
            StoreKind::InfluxV1 { url, database } => {
                crate::query::influx_create_db(url, database)?;
                format!(
                    "[storage.influx_v1]\nurl = \"{url}\"\ndatabase = \"{database}\"\nprecision = \"us\"\n"
                )
            }
            StoreKind::InfluxV1Nodes { nodes, database } => {
                let mut out = String::new();
                for (name, url) in nodes {
                    crate::query::influx_create_db(url, database)?;
                    out.push_str(&format!(
                        "[[storage.nodes]]\nname = \"{name}\"\ninflux_v1 = {{ url = \"{url}\", database = \"{database}\", precision = \"us\" }}\n\n"
                    ));
                }
                out
            }
            StoreKind::Files => format!(
                "[storage.file]\ndir = \"{}\"\n",
                dir.path().join("lines").display()
            ),
            StoreKind::InfluxV2 { url } => {
                let token = dir.path().join("token");
                std::fs::write(&token, "unused-by-victoria-metrics\n")?;
                format!(
                    "[storage.influx_v2]\nurl = \"{url}\"\norg = \"dtop\"\nbucket = \"dtop\"\ntoken_file = \"{}\"\nprecision = \"us\"\n",
                    token.display()
                )
            }
        };
        let twin_conf = dir.path().join("twin.toml");
        std::fs::write(
            &twin_conf,
            format!(
                "[mqtt]\n{}client_id = \"dtop-twin-{}\"\n\n{storage}\n{}",
                broker_keys(&spec.edge.twin_brokers, mqtt_port),
                spec.rig,
                spec.twin_toml
            ),
        )?;
        let twin = spawn_twin(dir.path(), "twin")?;

        let pty = dir.path().join("rig.pty");
        let truth = dir.path().join("truth.csv");
        let (seed, speed, max) = (
            spec.seed.to_string(),
            spec.speed.to_string(),
            spec.samples.to_string(),
        );
        let (truth_arg, pty_arg) = (path_str(&truth), path_str(&pty));
        let mut sim_args = vec![
            "--seed",
            &seed,
            "--speed",
            &speed,
            "--max-samples",
            &max,
            "--truth-log",
            &truth_arg,
            "--pty-link",
            &pty_arg,
        ];
        let dir_str = path_str(dir.path());
        let extra: Vec<String> = spec
            .sim_args
            .iter()
            .map(|a| a.replace("{dir}", &dir_str))
            .collect();
        sim_args.extend(extra.iter().map(String::as_str));
        let sim = Proc::spawn("rig-sim", &bin("dtop-rig-sim")?, &sim_args, dir.path())?;
        wait_for("the simulator's pty", Duration::from_secs(15), || {
            Ok(pty.exists().then_some(()))
        })
        .with_context(|| format!("rig-sim log:\n{}", sim.log()))?;

        let state = dir.path().join("edge-state");
        let edge_conf = dir.path().join("edge.toml");
        std::fs::write(
            &edge_conf,
            format!(
                "rig_id = \"{rig}\"\nstate_dir = \"{state}\"\n\n[serial]\npath = \"{pty}\"\n\n\
                 [acquisition]\nblock_samples = {block}\n\n[mqtt]\n{edge_broker}\
                 reconnect_backoff_max_ms = 1000\n\n{actuator}\n{extra}\n",
                rig = spec.rig,
                state = state.display(),
                pty = pty.display(),
                block = spec.block_samples,
                edge_broker =
                    broker_keys(&spec.edge.brokers, spec.edge.mqtt_port.unwrap_or(mqtt_port)),
                actuator = spec
                    .edge
                    .actuator_toml
                    .as_deref()
                    .unwrap_or(DEFAULT_ACTUATOR_TOML),
                extra = spec.edge.toml,
            ),
        )?;
        let edge = Proc::spawn(
            "edge",
            &bin("dtop-edge")?,
            &["--config", &path_str(&edge_conf)],
            dir.path(),
        )?;
        Ok(Self {
            restarts: 0,
            dir,
            spec,
            mqtt_port,
            broker,
            twin,
            sim,
            edge,
            started_ns,
        })
    }

    fn next_name(&mut self, what: &str) -> String {
        self.restarts += 1;
        format!("{what}-{}", self.restarts)
    }

    /// SIGKILLs the broker (`BrokerKind::Dtop` only): everything it held in memory is gone.
    pub fn kill_broker(&mut self) -> Result<()> {
        let broker = self
            .broker
            .as_mut()
            .context("only a dtop-broker can be killed")?;
        broker.kill()
    }

    /// Starts the broker again on the same port.
    pub fn start_broker(&mut self) -> Result<()> {
        let name = self.next_name("broker");
        self.broker = Some(spawn_broker(self.dir.path(), &name, self.mqtt_port)?);
        Ok(())
    }

    /// SIGKILLs the twin: batches it held only in memory are gone.
    pub fn kill_twin(&mut self) -> Result<()> {
        self.twin.kill()
    }

    /// Starts the twin again with the same configuration (and spool directory, if any).
    pub fn start_twin(&mut self) -> Result<()> {
        let name = self.next_name("twin");
        self.twin = spawn_twin(self.dir.path(), &name)?;
        Ok(())
    }

    /// SIGKILLs the edge: it gets no chance to flush anything.
    pub fn kill_edge(&mut self) -> Result<()> {
        self.edge.kill()
    }

    /// Starts the edge again with the same configuration and state directory.
    pub fn start_edge(&mut self) -> Result<()> {
        let name = self.next_name("edge");
        let conf = path_str(&self.dir.path().join("edge.toml"));
        self.edge = Proc::spawn(
            &name,
            &bin("dtop-edge")?,
            &["--config", &conf],
            self.dir.path(),
        )?;
        Ok(())
    }

    /// The edge's `next_seq` counter: every seq it numbered is below it.
    pub fn edge_next_seq(&self) -> Result<u64> {
        let path = self.dir.path().join("edge-state").join("next_seq");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim().parse().context("parsing next_seq")
    }

    pub fn truth_path(&self) -> PathBuf {
        self.dir.path().join("truth.csv")
    }

    /// Fails with every process's log if any of them died.
    pub fn ensure_running(&mut self) -> Result<()> {
        let mut dead = Vec::new();
        for p in [
            Some(&mut self.twin),
            Some(&mut self.sim),
            Some(&mut self.edge),
            self.broker.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = p.ensure_running() {
                dead.push(format!("{e:#}"));
            }
        }
        if !dead.is_empty() {
            bail!("{}\n{}", dead.join("\n"), self.logs());
        }
        Ok(())
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in [
            Some(&self.sim),
            Some(&self.edge),
            Some(&self.twin),
            self.broker.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let log = p.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("----- {p:?} (last 40 lines)\n", p = p.pid()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The ground truth, once the simulator has sent all its samples.
    pub fn wait_truth(&mut self, within: Duration) -> Result<Truth> {
        let expected = self.spec.samples as usize;
        let path = self.truth_path();
        wait_for("the simulator to send every sample", within, || {
            self.ensure_running()?;
            let truth = Truth::read(&path).unwrap_or(Truth {
                indices: Vec::new(),
                raw: Vec::new(),
            });
            Ok((truth.len() >= expected).then_some(truth))
        })
    }

    /// Waits until the simulator has sent every sample or stopped sending: under load it drops
    /// frames nobody read in time, as firmware would, so a test that only needs what was stored
    /// waits for the stream to end rather than for every sample. Returns the samples sent.
    pub fn wait_stream_end(&mut self, within: Duration) -> Result<usize> {
        let expected = self.spec.samples as usize;
        let path = self.truth_path();
        let mut sent = 0;
        wait_for("the simulator to stop streaming", within, || {
            std::thread::sleep(Duration::from_secs(1));
            self.ensure_running()?;
            let now = Truth::read(&path).map_or(0, |t| t.len());
            let done = now >= expected || (now > 0 && now == sent);
            sent = now;
            Ok(done.then_some(now))
        })
    }

    /// Stops the edge with SIGTERM (it flushes its last partial block) and checks it exits 0.
    pub fn stop_edge(&mut self) -> Result<()> {
        let code = self.edge.terminate(Duration::from_secs(20))?;
        ensure!(
            code == Some(0),
            "edge exited with {code:?}; log:\n{}",
            self.edge.log()
        );
        Ok(())
    }

    /// The rig's retained birth, read from the broker like any dashboard would.
    pub fn read_birth(&self) -> Result<RigBirth> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(read_retained_birth(self.mqtt_port, &self.spec.rig))
    }
}

/// `dtop-broker` on `dir`/broker.toml, once it listens on `port`.
pub fn spawn_broker(dir: &Path, name: &str, port: u16) -> Result<Proc> {
    let conf = dir.join("broker.toml");
    let proc = Proc::spawn(
        name,
        &bin("dtop-broker")?,
        &["--config", &path_str(&conf)],
        dir,
    )?;
    wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(15))
        .with_context(|| format!("broker log:\n{}", proc.log()))?;
    Ok(proc)
}

/// `dtop-twin` on `dir`/twin.toml, once it has subscribed to the rig topics.
pub fn spawn_twin(dir: &Path, name: &str) -> Result<Proc> {
    let conf = dir.join("twin.toml");
    let mut twin = Proc::spawn(
        name,
        &bin("dtop-twin")?,
        &["--config", &path_str(&conf)],
        dir,
    )?;
    wait_for("the twin to subscribe", Duration::from_secs(20), || {
        twin.ensure_running()?;
        Ok(twin
            .log()
            .contains("Subscribed to rig topics.")
            .then_some(()))
    })?;
    Ok(twin)
}

async fn read_retained_birth(port: u16, rig: &str) -> Result<RigBirth> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let rig_id = RigId::new(rig)?;
    let mut opts = MqttOptions::new(
        format!("e2e-birth-{rig}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_max_packet_size(
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
    );
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    // QoS 0: the retained birth comes with the SUBACK either way, and on NATS a QoS 1
    // subscription is a JetStream consumer a loaded cluster may refuse.
    client
        .subscribe(topic::rig(&rig_id, RigTopic::Birth), QoS::AtMostOnce)
        .await?;
    let birth = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? {
                return anyhow::Ok(RigBirth::decode(p.payload)?);
            }
        }
    })
    .await
    .context("no retained birth within 10 s")??;
    let _ = client.disconnect().await;
    Ok(birth)
}

/// What one stored channel should hold: the truth, scaled by the birth manifest.
pub fn expected_values(truth: &Truth, birth: &RigBirth, channel_position: usize) -> Vec<f64> {
    let ch = &birth.channels[channel_position];
    truth
        .raw
        .iter()
        .map(|row| f64::from(row[channel_position]) * ch.scale + ch.offset)
        .collect()
}
