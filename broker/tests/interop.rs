//! Interop with standard clients beyond rumqttc: the Mosquitto command-line clients in MQTT
//! 3.1.1 and 5 (QoS 0/1/2, retained, wills, shared subscriptions, persistent sessions), and
//! the Eclipse Paho Python client (`tests/peers/paho_interop.py`, run as a subprocess).
//!
//! Missing tools skip with a notice, except with `CI` or `DTOP_REQUIRE_SERVICES=1`, where they
//! fail: CI must never pass without having run them.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{WAIT, require_python, require_tool, start_broker};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running mosquitto client whose stdout we read line by line, killed on drop.
struct Tool {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Tool {
    /// Runs `program args` with line-buffered stdout (`stdbuf -oL`) so `-d` handshake lines
    /// arrive as they happen.
    fn spawn(stdbuf: &Path, program: &Path, args: &[String]) -> Self {
        let mut child = Command::new(stdbuf)
            .arg("-oL")
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto client");
        let stdout = child.stdout.take().expect("stdout is piped");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    async fn line_matching(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let outcome = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                self.seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match outcome {
            Ok(Some(line)) => line,
            _ => {
                let pid = self.child.id();
                let _ = self.child.kill().await;
                panic!(
                    "no {what} within {WAIT:?} (killed pid {pid:?}); output: {:#?}",
                    self.seen
                )
            }
        }
    }

    /// Payload lines (not `-d` debug lines) until `n` arrived, including any that came before
    /// the SUBACK line (a resumed session's queue is sent right after CONNACK).
    async fn payloads(&mut self, n: usize) -> Vec<String> {
        let mut got: Vec<String> = self.seen.iter().filter(|l| !is_debug(l)).cloned().collect();
        self.seen.retain(|l| is_debug(l));
        while got.len() < n {
            let line = self.line_matching("a payload", |l| !is_debug(l)).await;
            self.seen.pop();
            got.push(line);
        }
        got
    }

    /// Payload lines until none arrives for half a second (bounded by 1000 lines).
    async fn drain(&mut self) -> Vec<String> {
        let mut got: Vec<String> = self.seen.iter().filter(|l| !is_debug(l)).cloned().collect();
        self.seen.retain(|l| is_debug(l));
        for _ in 0..1000 {
            match tokio::time::timeout(
                std::time::Duration::from_millis(500),
                self.lines.next_line(),
            )
            .await
            {
                Ok(Ok(Some(line))) if !is_debug(&line) => got.push(line),
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
        }
        got
    }

    async fn kill(mut self) {
        // `Child::kill` sends SIGKILL to this child's PID only: the client vanishes without a
        // DISCONNECT, as a crashed device would.
        let _ = self.child.kill().await;
    }
}

fn is_debug(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed") || line.contains("received ")
}

struct Mosquitto {
    sub: PathBuf,
    publ: PathBuf,
    stdbuf: PathBuf,
    port: String,
}

impl Mosquitto {
    fn find(addr: SocketAddr) -> Option<Self> {
        Some(Self {
            sub: require_tool("mosquitto_sub")?,
            publ: require_tool("mosquitto_pub")?,
            stdbuf: require_tool("stdbuf")?,
            port: addr.port().to_string(),
        })
    }

    fn args(&self, version: &str, extra: &[&str]) -> Vec<String> {
        ["-h", "127.0.0.1", "-p", &self.port, "-V", version]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Starts mosquitto_sub and waits until its subscription is acknowledged.
    async fn subscribed(&self, version: &str, extra: &[&str]) -> Tool {
        let mut args = self.args(version, extra);
        args.push("-d".into());
        let mut tool = Tool::spawn(&self.stdbuf, &self.sub, &args);
        tool.line_matching("SUBACK", |l| l.contains("received SUBACK"))
            .await;
        tool
    }

    async fn publish(&self, version: &str, extra: &[&str]) {
        let mut child = Command::new(&self.publ)
            .args(self.args(version, extra))
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto_pub");
        match tokio::time::timeout(WAIT, child.wait()).await {
            Ok(status) => assert!(status.unwrap().success(), "mosquitto_pub {extra:?} failed"),
            Err(_) => {
                let _ = child.kill().await;
                panic!("mosquitto_pub {extra:?} did not finish within {WAIT:?}");
            }
        }
    }
}

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_exchange_qos_0_1_and_2_in_both_versions() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let Some(m) = Mosquitto::find(broker.mqtt_addr()) else {
        return;
    };
    for version in VERSIONS {
        let topic = format!("interop/qos/{version}");
        let mut sub = m
            .subscribed(version, &["-t", &topic, "-q", "2", "-F", "%q|%p"])
            .await;
        for qos in ["0", "1", "2"] {
            m.publish(
                version,
                &["-t", &topic, "-q", qos, "-m", &format!("q{qos}")],
            )
            .await;
        }
        let mut got = sub.payloads(3).await;
        got.sort();
        assert_eq!(got, ["0|q0", "1|q1", "2|q2"], "{version}");
        sub.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_get_retained_messages_and_wills_in_both_versions() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let Some(m) = Mosquitto::find(broker.mqtt_addr()) else {
        return;
    };
    for version in VERSIONS {
        let retained = format!("interop/retained/{version}");
        m.publish(version, &["-t", &retained, "-q", "1", "-r", "-m", "held"])
            .await;
        let mut late = m
            .subscribed(version, &["-t", &retained, "-q", "1", "-F", "%r|%p"])
            .await;
        assert_eq!(late.payloads(1).await, ["1|held"], "{version}");
        late.kill().await;

        let will = format!("interop/will/{version}");
        let mut watcher = m.subscribed(version, &["-t", &will, "-q", "1"]).await;
        let victim = m
            .subscribed(
                version,
                &[
                    "-t",
                    "interop/unused",
                    "--will-topic",
                    &will,
                    "--will-payload",
                    "gone",
                    "--will-qos",
                    "1",
                ],
            )
            .await;
        victim.kill().await;
        assert_eq!(watcher.payloads(1).await, ["gone"], "{version}");
        watcher.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_shared_subscribers_split_the_messages_in_both_versions() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let Some(m) = Mosquitto::find(broker.mqtt_addr()) else {
        return;
    };
    for version in VERSIONS {
        let topic = format!("interop/shared/{version}");
        let share = format!("$share/workers/{topic}");
        let mut a = m.subscribed(version, &["-t", &share, "-q", "1"]).await;
        let mut b = m.subscribed(version, &["-t", &share, "-q", "1"]).await;
        for i in 0..10 {
            m.publish(version, &["-t", &topic, "-q", "1", "-m", &format!("m{i}")])
                .await;
        }
        // Each message goes to exactly one member; together they get all ten.
        let (got_a, got_b) = tokio::join!(a.drain(), b.drain());
        assert!(
            !got_a.is_empty() && !got_b.is_empty(),
            "{version}: {got_a:?} / {got_b:?}"
        );
        let mut got: Vec<String> = got_a.into_iter().chain(got_b).collect();
        got.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(got, want, "{version}");
        a.kill().await;
        b.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_persistent_session_receives_what_was_sent_while_away() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let Some(m) = Mosquitto::find(broker.mqtt_addr()) else {
        return;
    };
    for version in VERSIONS {
        let topic = format!("interop/persistent/{version}");
        let id = format!("persist-{version}");
        let mut session = vec!["-t", topic.as_str(), "-q", "1", "-c", "-i", id.as_str()];
        if version == "mqttv5" {
            session.extend(["-x", "60"]);
        }
        let first = m.subscribed(version, &session).await;
        first.kill().await;
        m.publish(version, &["-t", &topic, "-q", "1", "-m", "while away"])
            .await;
        let mut again = m.subscribed(version, &session).await;
        assert_eq!(again.payloads(1).await, ["while away"], "{version}");
        again.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_python_client_passes_keepalive0_qos_retained_will_shared_and_persistent_checks() {
    let Some(python) = require_python() else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/paho_interop.py");
    let child = Command::new(&python)
        .arg(&script)
        .arg("127.0.0.1")
        .arg(broker.mqtt_addr().port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the paho script");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("the paho script finishes within 120 s (killed on drop otherwise)")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all ok"),
        "paho checks failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        12,
        "{stdout}"
    );
}
