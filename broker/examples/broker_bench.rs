//! Benchmarks dtop-broker (authorization on) against Mosquitto (password file + ACL file), in
//! the same run on the same machine, with the same client (rumqttc): 1 publisher → 1
//! subscriber, 256 B payloads, at QoS 0 and at QoS 1 with 100 in flight (messages/s), and
//! one-hop latency at 1 kHz (p50/p99). Prints figures; asserts nothing.
//!
//! Run: `cargo run --release -p dtop-broker --example broker_bench`
//!
//! dtop-broker runs in this process (its own runtime and router thread); Mosquitto runs as a
//! child process on a free loopback port and is killed by PID at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dtop_broker::{AuthConfig, BrokerConfig, ListenerConfig, Role, RolesConfig};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const PAYLOAD_BYTES: usize = 256;
const THROUGHPUT_MESSAGES: u32 = 100_000;
const LATENCY_SAMPLES: u32 = 3_000;
const TOPIC: &str = "dtop/v1/rig/bench/drive";
/// Upper bound on any one phase, so a broker that loses messages cannot hang the bench.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

fn options(id: &str, port: u16, user: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(user, "bench-password");
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

async fn connected(id: &str, port: u16, user: &str) -> (AsyncClient, EventLoop) {
    let (c, mut l) = AsyncClient::new(options(id, port, user), 1000);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), l.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return (c, l),
            Ok(Ok(_)) => {}
            other => panic!("{id} could not connect: {other:?}"),
        }
    }
}

/// Messages/s from one publisher to one subscriber; `(rate, delivered)`.
async fn throughput(port: u16, qos: QoS, tag: &str) -> (f64, u32) {
    let (sub, mut sub_loop) = connected(&format!("{tag}-sub"), port, "bench").await;
    sub.subscribe(TOPIC, qos).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_loop) = connected(&format!("{tag}-pub"), port, "twin").await;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let payload = vec![0x5au8; PAYLOAD_BYTES];
        for _ in 0..THROUGHPUT_MESSAGES {
            publisher
                .publish(TOPIC, qos, false, payload.clone())
                .await
                .unwrap();
        }
        publisher
    });
    let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut received = 0u32;
    let mut last = started;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while received < THROUGHPUT_MESSAGES {
        // A quiet second after the publisher finished means the rest was dropped.
        let quiet = if sender.is_finished() {
            Duration::from_secs(1)
        } else {
            PHASE_TIMEOUT
        };
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + quiet),
            sub_loop.poll(),
        )
        .await
        {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                received += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber failed: {e}"),
            Err(_) => break,
        }
    }
    driver.abort();
    sender.abort();
    let rate = f64::from(received) / last.duration_since(started).as_secs_f64();
    (rate, received)
}

/// One-hop latency at 1 kHz: `(p50, p99)` in microseconds.
async fn latency(port: u16, tag: &str) -> (f64, f64) {
    let (sub, mut sub_loop) = connected(&format!("{tag}-lsub"), port, "bench").await;
    sub.subscribe(TOPIC, QoS::AtMostOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_loop) = connected(&format!("{tag}-lpub"), port, "twin").await;
    let epoch = Instant::now();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..LATENCY_SAMPLES {
            tick.tick().await;
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            let sent_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
            payload[..8].copy_from_slice(&sent_ns.to_le_bytes());
            publisher
                .publish(TOPIC, QoS::AtMostOnce, false, payload)
                .await
                .unwrap();
        }
        publisher
    });
    let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut samples_us = Vec::with_capacity(LATENCY_SAMPLES as usize);
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while samples_us.len() < LATENCY_SAMPLES as usize {
        match tokio::time::timeout_at(deadline, sub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let sent_ns = u64::from_le_bytes(p.payload[..8].try_into().unwrap());
                let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
                samples_us.push((now_ns - sent_ns) as f64 / 1000.0);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("latency subscriber failed: {e}"),
            Err(_) => break,
        }
    }
    driver.abort();
    sender.abort();
    samples_us.sort_by(f64::total_cmp);
    let at = |q: f64| samples_us[((samples_us.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

struct Figures {
    qos0: (f64, u32),
    qos1: (f64, u32),
    latency_us: (f64, f64),
}

async fn measure(port: u16, tag: &str) -> Figures {
    Figures {
        qos0: throughput(port, QoS::AtMostOnce, &format!("{tag}-q0")).await,
        qos1: throughput(port, QoS::AtLeastOnce, &format!("{tag}-q1")).await,
        latency_us: latency(port, tag).await,
    }
}

fn start_mosquitto(dir: &Path) -> (tokio::process::Child, u16) {
    let passwd = dir.join("mosquitto.passwd");
    for user in ["twin", "bench"] {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if !passwd.exists() {
            cmd.arg("-c");
        }
        let status = cmd.arg(&passwd).args([user, "bench-password"]).status();
        assert!(status.is_ok_and(|s| s.success()), "mosquitto_passwd failed");
    }
    let acl = dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        format!("user twin\ntopic write {TOPIC}\n\nuser bench\ntopic read {TOPIC}\n"),
    )
    .unwrap();
    let port = dtop_broker::reserve_loopback_addr().unwrap().port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             max_inflight_messages 100\nmax_queued_messages 100000\npersistence false\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mosquitto (is it installed?)");
    (child, port)
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();

    let credentials_file = dir.path().join("dtop.passwd");
    let password = dtop_broker::Secret::new("bench-password".to_owned());
    dtop_broker::credentials::add_user(
        &credentials_file,
        "twin",
        Role::Twin,
        dtop_broker::credentials::RigSpec::All,
        Some(&password),
    )
    .unwrap();
    dtop_broker::credentials::add_user(
        &credentials_file,
        "bench",
        Role::Rig,
        dtop_broker::credentials::RigSpec::Default,
        Some(&password),
    )
    .unwrap();
    let config = BrokerConfig {
        mqtt: ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        auth: Some(AuthConfig {
            credentials_file,
            roles: RolesConfig::default(),
        }),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let (mut mosquitto, mosquitto_port) = start_mosquitto(dir.path());
    wait_for_port(mosquitto_port).await;

    println!(
        "1 publisher -> 1 subscriber, {PAYLOAD_BYTES} B payloads, {THROUGHPUT_MESSAGES} messages; authorization on in both brokers"
    );
    let dtop = measure(broker.mqtt_addr().port(), "dtop").await;
    let mosq = measure(mosquitto_port, "mosq").await;
    let pid = mosquitto.id();
    let _ = mosquitto.kill().await;
    println!("  (mosquitto pid {pid:?} stopped)");

    let row = |name: &str, f: &Figures| {
        println!(
            "  {name:<12} QoS 0: {:>9.0} msg/s ({} delivered)   QoS 1 (100 in flight): {:>9.0} msg/s ({} delivered)   1 kHz latency p50 {:>7.0} us  p99 {:>7.0} us",
            f.qos0.0, f.qos0.1, f.qos1.0, f.qos1.1, f.latency_us.0, f.latency_us.1
        );
    };
    row("dtop-broker", &dtop);
    row("mosquitto", &mosq);
    println!(
        "  ratio dtop/mosquitto: QoS 0 {:.2}x   QoS 1 {:.2}x   latency p50 {:.2}x  p99 {:.2}x (lower is better for latency)",
        dtop.qos0.0 / mosq.qos0.0,
        dtop.qos1.0 / mosq.qos1.0,
        dtop.latency_us.0 / mosq.latency_us.0,
        dtop.latency_us.1 / mosq.latency_us.1,
    );
}
