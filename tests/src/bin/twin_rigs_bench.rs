//! Benchmark: rigs per dtop-twin process per core at 1 kHz × 4 channels with the Kalman filter
//! on, MQTT in and storage out included (issue 16; BENCHMARKS.md, "Twin: rigs per core").
//!
//! Run: `cargo build --release --workspace --bins`, then
//! `target/release/twin_rigs_bench [--rigs 50,100,200,400] [--seconds S]`. For each rig count
//! it starts dtop-broker and one dtop-twin (the Southampton model, `[storage.file]` in a temp
//! dir, states at 10 Hz) as processes on loopback, publishes each rig's birth and then one
//! 100-sample block of 4 channels per rig every 100 ms (the rate of a rig at 1 kHz) for S
//! seconds, and reads the twin's CPU time from `/proc/{pid}/stat` over the loaded window. The
//! twin kept up when every rig's persisted watermark reaches its last block within 15 s of
//! the end. Rigs per core = rigs ÷ (twin CPU seconds ÷ wall seconds). Bounded: S seconds per
//! rig count plus the waits; every process is stopped by PID.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_e2e::free_port;
use dtop_e2e::pipeline::{spawn_broker, spawn_twin};
use dtop_proto::Message;
use dtop_proto::v1::{
    Channel, ChannelKind, ChannelSamples, PersistedWatermark, RigBirth, SampleBlock,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const BLOCK_SAMPLES: u64 = 100;
/// Seconds of load before the CPU window opens (births, the filters' first blocks).
const WARM_UP: Duration = Duration::from_secs(3);

struct Args {
    rigs: Vec<usize>,
    seconds: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rigs: vec![50, 100, 200, 400],
        seconds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rigs" => {
                a.rigs = value()?
                    .split(',')
                    .map(|n| n.trim().parse().context("--rigs: a list like 50,100"))
                    .collect::<Result<_>>()?
            }
            "--seconds" => a.seconds = value()?.parse()?,
            other => bail!("unknown flag {other} (--rigs N,M,... --seconds S)"),
        }
    }
    if a.rigs.is_empty() || a.rigs.contains(&0) || a.seconds == 0 {
        bail!("--rigs needs counts of at least 1 and --seconds at least 1");
    }
    Ok(a)
}

fn rig_name(i: usize) -> String {
    format!("bench-rig-{i:04}")
}

/// The Southampton rig's layout: three floor accelerometers and the shaker's force gauge.
fn birth(rig: &str) -> RigBirth {
    let channel = |id: u32, kind: ChannelKind, floor: u32, name: String| Channel {
        id,
        name,
        kind: kind as i32,
        unit: String::new(),
        scale: 1.17e-4,
        offset: 0.0,
        sample_rate_hz: 1000.0,
        floor,
        stream_id: 0,
    };
    let mut channels: Vec<Channel> = (1..=3)
        .map(|f| channel(f, ChannelKind::Acceleration, f, format!("floor{f}_accel")))
        .collect();
    channels.push(channel(4, ChannelKind::Force, 1, "shaker_force".to_owned()));
    RigBirth {
        rig_id: rig.to_owned(),
        session: 1,
        channels,
        floors: 3,
        ..RigBirth::default()
    }
}

fn block(rig: &str, seq: u64, t0_ns: i64) -> Vec<u8> {
    let first = seq * BLOCK_SAMPLES;
    SampleBlock {
        rig_id: rig.to_owned(),
        session: 1,
        seq,
        first_sample_index: first,
        sample_period_ns: 1_000_000,
        first_timestamp_ns: t0_ns as u64 + first * 1_000_000,
        channels: (1..=4u32)
            .map(|c| ChannelSamples {
                channel_id: c,
                raw: (0..BLOCK_SAMPLES as i32)
                    .map(|k| ((k * 7919 + c as i32 * 104_729 + seq as i32) % 4_000) - 2_000)
                    .collect(),
            })
            .collect(),
        ..SampleBlock::default()
    }
    .encode_to_vec()
}

/// User + system CPU seconds of a process so far.
fn cpu_s(pid: u32, ticks_per_s: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / ticks_per_s)
}

fn clock_ticks_per_s() -> Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

struct Outcome {
    twin_cores: f64,
    kept_up: bool,
    behind: usize,
    /// `dtop_twin_state` lines stored: the proof that the filters ran.
    states: usize,
}

/// Estimated states the twin stored (line protocol files in `dir`).
fn stored_states(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let text = std::fs::read_to_string(entry?.path())?;
        n += text
            .lines()
            .filter(|l| l.starts_with("dtop_twin_state,"))
            .count();
    }
    Ok(n)
}

async fn run(rigs: usize, seconds: u64, dir: &Path, ticks: f64) -> Result<Outcome> {
    let port = free_port()?;
    let broker_conf = dir.join("broker.toml");
    std::fs::write(
        &broker_conf,
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[limits]\nmax_queued_messages = 100000\n"),
    )?;
    let mut broker = spawn_broker(dir, "broker", port)?;
    let twin_conf = dir.join("twin.toml");
    std::fs::write(
        &twin_conf,
        format!(
            "[mqtt]\nport = {port}\nclient_id = \"bench-twin\"\n\
             [storage.file]\ndir = \"{}\"\n[model]\nstate_publish_hz = 10.0\n",
            dir.join("lines").display()
        ),
    )?;
    let mut twin = spawn_twin(dir, "twin")?;

    let mut opts = MqttOptions::new(
        format!("bench-rigs-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    opts.set_max_packet_size(
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
        dtop_proto::limits::MAX_MQTT_PACKET_BYTES,
    );
    let (client, mut eventloop) = AsyncClient::new(opts, 20_000);
    client
        .subscribe("dtop/v1/rig/+/persisted", QoS::AtLeastOnce)
        .await?;
    let (wm_tx, mut wm_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64)>();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(w) = PersistedWatermark::decode(p.payload) {
                        let _ = wm_tx.send((w.rig_id, w.seq));
                    }
                }
                Ok(_) => {}
                Err(e) => return format!("load generator's MQTT connection: {e}"),
            }
        }
    });
    let names: Vec<String> = (0..rigs).map(rig_name).collect();
    for rig in &names {
        let topic = format!("dtop/v1/rig/{rig}/birth");
        client
            .publish(topic, QoS::AtLeastOnce, true, birth(rig).encode_to_vec())
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0_ns = dtop_e2e::pipeline::now_ns();
    let total = WARM_UP + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut seq, mut window) = (0u64, None);
    while started.elapsed() < total {
        tick.tick().await;
        if window.is_none() && started.elapsed() >= WARM_UP {
            window = Some((Instant::now(), cpu_s(twin.pid(), ticks)?));
        }
        for rig in &names {
            let topic = format!("dtop/v1/rig/{rig}/samples");
            client
                .publish(topic, QoS::AtLeastOnce, false, block(rig, seq, t0_ns))
                .await?;
        }
        seq += 1;
    }
    let (w_start, cpu_start) = window.context("the run was shorter than the warm-up")?;
    let (wall, cpu) = (
        w_start.elapsed().as_secs_f64(),
        cpu_s(twin.pid(), ticks)? - cpu_start,
    );
    // Kept up: every rig's watermark reaches the last block within 15 s.
    let last = seq - 1;
    let mut marks: BTreeMap<String, u64> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        while let Ok((rig, s)) = wm_rx.try_recv() {
            let e = marks.entry(rig).or_default();
            *e = (*e).max(s);
        }
        let behind = names
            .iter()
            .filter(|r| marks.get(*r).is_none_or(|&s| s < last))
            .count();
        if behind == 0 || Instant::now() > until {
            poller.abort();
            twin.terminate(Duration::from_secs(10))?;
            broker.kill()?;
            return Ok(Outcome {
                twin_cores: cpu / wall,
                kept_up: behind == 0,
                behind,
                states: stored_states(&dir.join("lines"))?,
            });
        }
        if poller.is_finished() {
            bail!("{}", poller.await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let ticks = clock_ticks_per_s()?;
    println!(
        "dtop-twin, Southampton model (Kalman filter on), 4 channels at 1 kHz per rig in 100-sample blocks, \
         file storage, {} s loaded window after {} s warm-up",
        args.seconds,
        WARM_UP.as_secs()
    );
    for &rigs in &args.rigs {
        let dir = tempfile::tempdir()?;
        let o = run(rigs, args.seconds, dir.path(), ticks).await?;
        if o.states == 0 {
            bail!("rigs={rigs}: the twin stored no estimated state; the Kalman filter did not run");
        }
        println!(
            "rigs={rigs} twin_cpu_cores={:.3} rigs_per_core={:.0} kept_up={} states_stored={}{}",
            o.twin_cores,
            rigs as f64 / o.twin_cores,
            o.kept_up,
            o.states,
            if o.kept_up {
                String::new()
            } else {
                format!(
                    " ({} rigs' watermarks behind the last block 15 s after the end)",
                    o.behind
                )
            }
        );
    }
    Ok(())
}
