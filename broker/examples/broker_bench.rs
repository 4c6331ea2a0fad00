//! Benchmarks dtop-broker (authorization on) against Mosquitto (password file + ACL file), in
//! the same run on the same machine, with the same client (rumqttc): 1 publisher → 1
//! subscriber, 256 B payloads, at QoS 0 and at QoS 1 with 100 in flight (messages/s), and
//! one-hop latency at 1 kHz (p50/p99): QoS 0 on a quiet machine, and QoS 1 while two threads
//! busy-spin (as many as the 2-core machines DTOP targets have cores: an oversubscribed CPU).
//! Prints figures; asserts nothing.
//!
//! Run: `cargo run --release -p dtop-broker --example broker_bench -- [--front-threads N]
//! [--latency-only]` (`--front-threads` sets dtop-broker's `runtime.front_threads`).
//!
//! dtop-broker runs in this process (its own runtime and router thread); Mosquitto runs as a
//! child process on a free loopback port and is killed by PID at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dtop_broker::{
    AuthConfig, BrokerConfig, LimitsConfig, ListenerConfig, Role, RolesConfig, RuntimeConfig,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const PAYLOAD_BYTES: usize = 256;
const THROUGHPUT_MESSAGES: u32 = 100_000;
const LATENCY_SAMPLES: u32 = 3_000;
/// Messages queued per subscriber beyond those in flight, in both brokers.
const MAX_QUEUED_MESSAGES: usize = 100_000;
/// Busy-spinning threads during the loaded latency phase: one per core of a 2-core machine.
const SPINNERS: usize = 2;
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

/// Threads that busy-spin until dropped, each bounded by `PHASE_TIMEOUT`.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + PHASE_TIMEOUT;
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One-hop latency at 1 kHz (publish → subscriber receive): `(p50, p99)` in microseconds.
/// With `loaded`, [`SPINNERS`] threads busy-spin for the whole phase.
async fn latency(port: u16, tag: &str, qos: QoS, loaded: bool) -> (f64, f64) {
    let (sub, mut sub_loop) = connected(&format!("{tag}-lsub"), port, "bench").await;
    sub.subscribe(TOPIC, qos).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_loop) = connected(&format!("{tag}-lpub"), port, "twin").await;
    let spinners = loaded.then(|| Spinners::start(SPINNERS));
    let epoch = Instant::now();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..LATENCY_SAMPLES {
            tick.tick().await;
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            let sent_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
            payload[..8].copy_from_slice(&sent_ns.to_le_bytes());
            publisher.publish(TOPIC, qos, false, payload).await.unwrap();
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
    drop(spinners);
    driver.abort();
    sender.abort();
    samples_us.sort_by(f64::total_cmp);
    let at = |q: f64| samples_us[((samples_us.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

#[derive(Default)]
struct Figures {
    qos0: (f64, u32),
    qos1: (f64, u32),
    latency_us: (f64, f64),
    loaded_qos1_latency_us: (f64, f64),
}

async fn measure(port: u16, tag: &str, latency_only: bool) -> Figures {
    let mut figures = Figures::default();
    if !latency_only {
        figures.qos0 = throughput(port, QoS::AtMostOnce, &format!("{tag}-q0")).await;
        figures.qos1 = throughput(port, QoS::AtLeastOnce, &format!("{tag}-q1")).await;
    }
    figures.latency_us = latency(port, tag, QoS::AtMostOnce, false).await;
    figures.loaded_qos1_latency_us =
        latency(port, &format!("{tag}-loaded"), QoS::AtLeastOnce, true).await;
    figures
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
             max_inflight_messages 100\nmax_queued_messages {MAX_QUEUED_MESSAGES}\npersistence false\n",
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let latency_only = args.iter().any(|a| a == "--latency-only");
    let front_threads = args
        .iter()
        .position(|a| a == "--front-threads")
        .map(|i| args[i + 1].parse::<usize>().expect("--front-threads N"));
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
        // The same queue bound as the Mosquitto config below (`max_queued_messages 100000`): with
        // dtop-broker's default of 1000, a subscriber more than 1000 QoS 1 messages behind a
        // publisher that never waits loses the oldest, which would measure the limit, not speed.
        limits: LimitsConfig {
            max_queued_messages: MAX_QUEUED_MESSAGES,
            ..LimitsConfig::default()
        },
        runtime: RuntimeConfig {
            front_threads: front_threads.unwrap_or_else(dtop_broker::config::default_front_threads),
        },
        ..BrokerConfig::default()
    };
    let front_threads = config.runtime.front_threads;
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let (mut mosquitto, mosquitto_port) = start_mosquitto(dir.path());
    wait_for_port(mosquitto_port).await;

    println!(
        "1 publisher -> 1 subscriber, {PAYLOAD_BYTES} B payloads, {THROUGHPUT_MESSAGES} messages; authorization on in both brokers; dtop-broker front_threads = {front_threads}"
    );
    let dtop = measure(broker.mqtt_addr().port(), "dtop", latency_only).await;
    let mosq = measure(mosquitto_port, "mosq", latency_only).await;
    let pid = mosquitto.id();
    let _ = mosquitto.kill().await;
    println!("  (mosquitto pid {pid:?} stopped)");

    let row = |name: &str, f: &Figures| {
        println!(
            "  {name:<12} QoS 0: {:>9.0} msg/s ({} delivered)   QoS 1 (100 in flight): {:>9.0} msg/s ({} delivered)   1 kHz latency p50 {:>7.0} us  p99 {:>7.0} us   loaded, QoS 1: p50 {:>7.0} us  p99 {:>7.0} us",
            f.qos0.0,
            f.qos0.1,
            f.qos1.0,
            f.qos1.1,
            f.latency_us.0,
            f.latency_us.1,
            f.loaded_qos1_latency_us.0,
            f.loaded_qos1_latency_us.1
        );
    };
    row("dtop-broker", &dtop);
    row("mosquitto", &mosq);
    println!(
        "  ratio dtop/mosquitto: QoS 0 {:.2}x   QoS 1 {:.2}x   latency p50 {:.2}x  p99 {:.2}x   loaded p50 {:.2}x  p99 {:.2}x (lower is better for latency)",
        dtop.qos0.0 / mosq.qos0.0,
        dtop.qos1.0 / mosq.qos1.0,
        dtop.latency_us.0 / mosq.latency_us.0,
        dtop.latency_us.1 / mosq.latency_us.1,
        dtop.loaded_qos1_latency_us.0 / mosq.loaded_qos1_latency_us.0,
        dtop.loaded_qos1_latency_us.1 / mosq.loaded_qos1_latency_us.1,
    );
}
