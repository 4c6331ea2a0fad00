//! Benchmark: sample blocks per second through a 3-node NATS cluster's MQTT gateway, against
//! dtop-broker and Mosquitto in the same run (issue 16; BENCHMARKS.md, "Brokers: a 3-node NATS
//! cluster against dtop-broker and Mosquitto").
//!
//! Run: `cargo build --release --workspace --bins` (dtop-broker), then
//! `DTOP_TEST_NATS_SERVER=target/py-peers/bin/nats-server cargo run --release -p dtop-e2e --bin
//! broker_cluster_bench -- [--blocks N] [--rounds R] [--inflight K] [--qos 0|1] [--publishers P]`
//! (the pinned nats-server from `scripts/test.sh`'s venv). Each broker is started here as a process on loopback and
//! stopped by PID; Mosquitto is Debian's `/usr/sbin/mosquitto`.
//!
//! What one phase is: P publishers (1 by default, each its own connection and topic, as P edges)
//! and one subscriber to all their topics (as one twin; rumqttc), QoS 1 both ways (or 0 with
//! `--qos 0`: no acknowledgement, and on NATS no JetStream on the path), a real encoded
//! `SampleBlock` of 4 channels × 100 samples as the payload (what an edge sends 10 of a second at
//! 1 kHz), N blocks in all, split evenly, each publisher as fast as its K in-flight PUBACKs
//! allow. On NATS publisher k talks to node k mod 3 + 1 and the subscriber to node 2, so most
//! blocks cross a cluster route, and every QoS 1 block goes through JetStream (stored in the
//! replicated `$MQTT_msgs` stream, delivered by a durable consumer). The time runs from the
//! first publish to the last block received. Bounded: each phase gives up after 120 s, or 3 s
//! without a block, and reports what arrived.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_e2e::nats::{self, NatsCluster};
use dtop_e2e::pipeline::spawn_broker;
use dtop_e2e::{Proc, free_port, wait_tcp};
use dtop_proto::Message;
use dtop_proto::v1::{ChannelSamples, SampleBlock};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

/// A phase that has not finished after this stops and reports what arrived.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// A subscriber that hears nothing for this long has everything it will get.
const QUIET: Duration = Duration::from_secs(3);
/// Sample instants per block, as the edge's default `block_samples`.
const BLOCK_SAMPLES: u64 = 100;
/// Channels per block, as the rig: three accelerometers and a force gauge.
const CHANNELS: u64 = 4;

struct Args {
    blocks: u64,
    rounds: u32,
    inflight: u16,
    qos: QoS,
    publishers: u64,
}

/// Most publishers one phase may start (two threads each).
const MAX_PUBLISHERS: u64 = 500;

fn parse_args() -> Result<Args> {
    let mut a = Args {
        blocks: 20_000,
        rounds: 3,
        inflight: 100,
        qos: QoS::AtLeastOnce,
        publishers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--blocks" => a.blocks = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--inflight" => a.inflight = value()?.parse()?,
            "--qos" => {
                a.qos = match value()?.as_str() {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    other => bail!("--qos {other}: 0 or 1 (NATS has no QoS 2)"),
                }
            }
            "--publishers" => a.publishers = value()?.parse()?,
            other => bail!(
                "unknown flag {other} (--blocks N --rounds R --inflight K --qos 0|1 --publishers P)"
            ),
        }
    }
    let mut problems = Vec::new();
    if a.blocks == 0 || a.rounds == 0 || a.inflight == 0 {
        problems.push("--blocks, --rounds and --inflight must be at least 1".to_owned());
    }
    if !(1..=MAX_PUBLISHERS).contains(&a.publishers) {
        problems.push(format!("--publishers must be 1 to {MAX_PUBLISHERS}"));
    }
    if a.publishers > a.blocks {
        problems.push("--publishers must not exceed --blocks".to_owned());
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(a)
}

/// A block like the rig's: a ±20 000-count sine with a little deterministic noise per channel.
fn sample_block() -> Vec<u8> {
    let channels = (0..CHANNELS as u32)
        .map(|c| ChannelSamples {
            channel_id: c,
            raw: (0..BLOCK_SAMPLES)
                .map(|i| {
                    let phase = i as f64 * 0.05 + f64::from(c);
                    (20_000.0 * phase.sin()) as i32 + ((i * 7919 + u64::from(c)) % 61) as i32
                })
                .collect(),
        })
        .collect();
    SampleBlock {
        rig_id: "bench-cluster-01".into(),
        session: 3,
        seq: 123_456,
        first_sample_index: 12_345_600,
        sample_period_ns: 1_000_000,
        first_timestamp_ns: 1_796_600_000_000_000_000,
        channels,
        ..Default::default()
    }
    .encode_to_vec()
}

/// What one phase measured.
struct Phase {
    received: u64,
    elapsed: Duration,
}

impl Phase {
    fn blocks_per_s(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
}

fn options(id: &str, port: u16, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(inflight);
    o.set_max_packet_size(
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
    );
    o
}

/// One phase: a subscriber on `sub_port` to every publisher's topic, then `args.publishers`
/// publishers, publisher k on `pub_ports[k % len]`.
fn phase(
    tag: &str,
    pub_ports: &[u16],
    sub_port: u16,
    args: &Args,
    payload: &[u8],
) -> Result<Phase> {
    let filter = format!("dtop/v1/rig/bench-{tag}/samples/+");
    let id = std::process::id();
    let (sub, mut sub_conn) = Client::new(options(&format!("sub-{tag}-{id}"), sub_port, 100), 64);
    sub.subscribe(&filter, args.qos)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The SUBACK first, so no block is published before the subscription exists.
    for event in sub_conn.iter() {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => bail!("{tag}: subscriber: {e}"),
        }
        if Instant::now() > deadline {
            bail!("{tag}: no SUBACK within 30 s");
        }
    }
    let (first_tx, first_rx) = mpsc::channel::<Instant>();
    let n = args.blocks;
    let qos = args.qos;
    let receiver = thread::spawn(move || -> Result<(u64, Option<Instant>)> {
        let started = first_rx.recv().context("the publisher never started")?;
        let until = started + PHASE_LIMIT;
        let (mut received, mut last) = (0, None);
        // At QoS 0 a broker may drop blocks: quiet for QUIET ends the phase with what came.
        while Instant::now() < until {
            match sub_conn.recv_timeout(QUIET) {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    received += 1;
                    last = Some(Instant::now());
                    if received == n {
                        break;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("subscriber: {e}"),
                Err(_) => break,
            }
        }
        Ok((received, last))
    });

    let p = args.publishers;
    let mut publishers = Vec::new();
    for k in 0..p {
        // N split evenly; the first N mod P publishers send one more.
        let blocks = n / p + u64::from(k < n % p);
        let port = pub_ports[(k as usize) % pub_ports.len()];
        let topic = format!("dtop/v1/rig/bench-{tag}/samples/{k}");
        let (publisher, pub_conn) = Client::new(
            options(&format!("pub-{tag}-{k}-{id}"), port, args.inflight),
            1024,
        );
        let sender = {
            let payload = payload.to_vec();
            thread::spawn(move || -> Result<()> {
                for _ in 0..blocks {
                    publisher.publish(&topic, qos, false, payload.clone())?;
                }
                Ok(())
            })
        };
        let first_tx = first_tx.clone();
        let tag = tag.to_owned();
        let acks = thread::spawn(move || -> Result<Option<Instant>> {
            acknowledged(&tag, k, pub_conn, blocks, qos, &first_tx)
        });
        publishers.push((sender, acks));
    }
    drop(first_tx);
    let mut started: Option<Instant> = None;
    for (sender, acks) in publishers {
        // The connection's error first: a sender fails only because its connection ended.
        let first = acks
            .join()
            .map_err(|_| anyhow::anyhow!("publisher connection thread panicked"))??;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("publisher thread panicked"))??;
        started = match (started, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let (received, last) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("subscriber thread panicked"))??;
    let started = started.context("nothing was published")?;
    let elapsed = last.context("no block arrived")? - started;
    Ok(Phase { received, elapsed })
}

/// Drives publisher `k`'s connection until its `blocks` are sent (QoS 0) or acknowledged
/// (QoS 1), or the phase limit; tells `first_tx` when its first block went out and returns it.
fn acknowledged(
    tag: &str,
    k: u64,
    mut conn: rumqttc::Connection,
    blocks: u64,
    qos: QoS,
    first_tx: &mpsc::Sender<Instant>,
) -> Result<Option<Instant>> {
    let mut started = None;
    let mut done = 0;
    let until = Instant::now() + PHASE_LIMIT;
    for event in conn.iter() {
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                if started.is_none() {
                    let t = Instant::now();
                    started = Some(t);
                    let _ = first_tx.send(t);
                }
                if qos == QoS::AtMostOnce {
                    done += 1;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => done += 1,
            Ok(_) => {}
            Err(e) => bail!("{tag}: publisher {k}: {e}"),
        }
        if done == blocks || Instant::now() > until {
            break;
        }
    }
    Ok(started)
}

fn start_dtop_broker(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let conf = dir.join("broker.toml");
    // Queues deep enough for the whole phase, as the Mosquitto peer's.
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[limits]\nmax_queued_messages = {}\n",
            200_000
        ),
    )?;
    Ok((spawn_broker(dir, "dtop-broker", port)?, port))
}

fn start_mosquitto(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\n\
             max_queued_messages 200000\npersistence false\n"
        ),
    )?;
    let program = dtop_e2e::find_program("mosquitto").context("mosquitto is not installed")?;
    let conf = conf.to_string_lossy().into_owned();
    let proc = Proc::spawn("mosquitto", &program, &["-c", &conf], dir)?;
    wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(15))?;
    Ok((proc, port))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let nats_binary = nats::server_binary()?.context("no nats-server")?;
    let payload = sample_block();
    let dir = tempfile::tempdir()?;
    println!(
        "payload: SampleBlock of {CHANNELS} channels x {BLOCK_SAMPLES} samples, {} B; {} blocks per phase from {} publisher(s), QoS {}, {} in flight each",
        payload.len(),
        args.blocks,
        args.publishers,
        args.qos as u8,
        args.inflight
    );
    let (mut dtop, dtop_port) = start_dtop_broker(dir.path())?;
    let (mut mosquitto, mosquitto_port) = start_mosquitto(dir.path())?;
    let cluster = NatsCluster::start(&nats_binary, None)?;
    // One publisher: on node 1 (its blocks cross a route to the subscriber on node 2). More:
    // spread over the three nodes, as edges are.
    let nats_pub: Vec<u16> = if args.publishers == 1 {
        vec![cluster.mqtt_addr(0).port()]
    } else {
        (0..3).map(|i| cluster.mqtt_addr(i).port()).collect()
    };
    let nats_sub = cluster.mqtt_addr(1).port();
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 1..=args.rounds {
        for (i, (name, p, s)) in [
            ("nats-3-node", nats_pub.clone(), nats_sub),
            ("dtop-broker", vec![dtop_port], dtop_port),
            ("mosquitto", vec![mosquitto_port], mosquitto_port),
        ]
        .into_iter()
        .enumerate()
        {
            let tag = format!("{name}-{round}");
            let r = phase(&tag, &p, s, &args, &payload)?;
            let rate = r.blocks_per_s();
            println!(
                "round={round} broker={name} received={} of {} elapsed_s={:.3} blocks_per_s={rate:.0} \
                 sample_instants_per_s={:.0} channel_samples_per_s={:.0} rigs_at_1khz={:.0}",
                r.received,
                args.blocks,
                r.elapsed.as_secs_f64(),
                rate * BLOCK_SAMPLES as f64,
                rate * (BLOCK_SAMPLES * CHANNELS) as f64,
                rate / 10.0,
            );
            if r.received < args.blocks {
                println!(
                    "  (incomplete: {} blocks dropped, or the phase hit its {PHASE_LIMIT:?} limit; the rate counts what arrived)",
                    args.blocks - r.received
                );
            }
            rates[i].push(rate);
        }
    }
    let [nats, dtop_rates, mosq] = &mut rates;
    let (n, d, m) = (median(nats), median(dtop_rates), median(mosq));
    println!(
        "median blocks/s: nats-3-node {n:.0}, dtop-broker {d:.0}, mosquitto {m:.0}; \
         nats / dtop-broker {:.2}x, nats / mosquitto {:.2}x",
        n / d,
        n / m
    );
    drop(cluster);
    dtop.kill()?;
    mosquitto.kill()?;
    Ok(())
}
