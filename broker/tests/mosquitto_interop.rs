//! Proves third-party MQTT clients interoperate with our broker: Mosquitto's command-line
//! clients against rumqttc, live and retained, on both the 3.1.1 and the MQTT 5 listener.
//!
//! When `mosquitto_sub`/`mosquitto_pub` are missing these tests skip with a notice, except
//! with `CI` set, where they fail: CI must never pass without having run them.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Stdio;

use common::{WAIT, client, poll_until, require_tool, start_broker};
use dtop_broker::{BrokerConfig, ListenerConfig};
use rumqttc::{Packet, QoS};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running `mosquitto_sub` whose stdout we read line by line.
struct MosquittoSub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl MosquittoSub {
    /// Starts `program args`; with `stdbuf`, stdout is line-buffered so `-d` handshake lines
    /// arrive as they happen (libc fully buffers a piped stdout; only payloads are flushed).
    fn spawn(stdbuf: Option<&Path>, program: &Path, args: &[&str]) -> Self {
        let mut command = match stdbuf {
            Some(stdbuf) => {
                let mut command = Command::new(stdbuf);
                command.arg("-oL").arg(program);
                command
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout is piped");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `want`; on timeout kills the process by its PID and
    /// fails with everything it printed.
    async fn line_matching(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let outcome = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
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
            Ok(None) => {
                let status = self.child.wait().await;
                panic!(
                    "mosquitto_sub exited ({status:?}) before {what}; output: {:#?}",
                    self.seen
                )
            }
            Err(_) => self.kill_and_fail(what).await,
        }
    }

    /// Waits for a clean exit (`-C 1` exits after one message).
    async fn exits_successfully(mut self) {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for mosquitto_sub");
                assert!(
                    status.success(),
                    "mosquitto_sub failed: {status}; {:#?}",
                    self.seen
                );
            }
            Err(_) => self.kill_and_fail("exit").await,
        }
    }

    async fn kill_and_fail(&mut self, what: &str) -> ! {
        let pid = self.child.id();
        // `Child::kill` signals this child's own PID only.
        let _ = self.child.kill().await;
        panic!(
            "timed out after {WAIT:?} waiting for {what}; killed mosquitto_sub (pid {pid:?}); \
             output: {:#?}",
            self.seen
        )
    }
}

/// Publishes one QoS 1 message with rumqttc and waits until the broker acknowledged it.
async fn publish_with_rumqttc(
    addr: std::net::SocketAddr,
    id: &str,
    topic: &str,
    payload: &str,
    retain: bool,
) {
    let (publisher, mut eventloop) = client(id, addr);
    publisher
        .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .unwrap();
    poll_until(&mut eventloop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    publisher.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_receives_a_message_published_by_rumqttc() {
    let (Some(mosquitto_sub), Some(stdbuf)) =
        (require_tool("mosquitto_sub"), require_tool("stdbuf"))
    else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let topic = "dtop/test/interop/live";
    let port = addr.port().to_string();

    let mut sub = MosquittoSub::spawn(
        Some(&stdbuf),
        &mosquitto_sub,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            "1",
            "-d",
            "-i",
            "mosq-live",
        ],
    );
    // `-d` prints the handshake, so we publish only once the subscription is in place.
    sub.line_matching("SUBACK", |line| line.contains("received SUBACK"))
        .await;

    publish_with_rumqttc(addr, "rumqttc-live", topic, "hello from rumqttc", false).await;

    sub.line_matching("the payload", |line| line == "hello from rumqttc")
        .await;
    sub.exits_successfully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_mosquitto_sub_receives_the_retained_message() {
    let Some(mosquitto_sub) = require_tool("mosquitto_sub") else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let topic = "dtop/test/interop/retained";
    publish_with_rumqttc(addr, "rumqttc-retain", topic, "birth certificate", true).await;

    let port = addr.port().to_string();
    let mut sub = MosquittoSub::spawn(
        None,
        &mosquitto_sub,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            "1",
            "-i",
            "mosq-retained",
            "-F",
            "%r|%t|%p",
        ],
    );
    let line = sub
        .line_matching("the retained message", |line| {
            line.ends_with("|birth certificate")
        })
        .await;
    assert_eq!(
        line,
        format!("1|{topic}|birth certificate"),
        "retain flag and topic"
    );
    sub.exits_successfully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_receives_a_message_published_by_mosquitto_pub() {
    let Some(mosquitto_pub) = require_tool("mosquitto_pub") else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let topic = "dtop/test/interop/from-mosquitto";

    let (subscriber, mut sub_loop) = client("rumqttc-sub", addr);
    subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut sub_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let port = addr.port().to_string();
    let mut child = Command::new(&mosquitto_pub)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            topic,
            "-q",
            "1",
            "-m",
            "hello from mosquitto",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("start mosquitto_pub");
    match tokio::time::timeout(WAIT, child.wait()).await {
        Ok(status) => assert!(status.expect("wait for mosquitto_pub").success()),
        Err(_) => {
            let pid = child.id();
            let _ = child.kill().await;
            panic!("mosquitto_pub (pid {pid:?}) did not finish within {WAIT:?}; killed it");
        }
    }

    let received = poll_until(&mut sub_loop, "PUBLISH", |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(received.topic, topic);
    assert_eq!(&received.payload[..], b"hello from mosquitto");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_listener_serves_mosquitto_sub_messages_from_a_311_client() {
    let Some(mosquitto_sub) = require_tool("mosquitto_sub") else {
        return;
    };
    let config = BrokerConfig {
        mqtt: ListenerConfig {
            listen: dtop_broker::reserve_loopback_addr().unwrap(),
        },
        mqtt_v5: Some(ListenerConfig {
            listen: dtop_broker::reserve_loopback_addr().unwrap(),
        }),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .expect("broker with two listeners starts");
    let v5_addr = broker.mqtt_v5_addr().expect("v5 listener configured");
    let topic = "dtop/test/interop/v5";
    publish_with_rumqttc(
        broker.mqtt_addr(),
        "rumqttc-v311",
        topic,
        "across versions",
        true,
    )
    .await;

    let port = v5_addr.port().to_string();
    let mut sub = MosquittoSub::spawn(
        None,
        &mosquitto_sub,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            "1",
            "-i",
            "mosq-v5",
        ],
    );
    sub.line_matching("the retained message", |line| line == "across versions")
        .await;
    sub.exits_successfully().await;
}
