//! Benchmark: Modbus RTU poll rate as a fraction of the wire-limited rate, over a socat pty pair
//! at 115200 bit/s (8N1) against pymodbus's RTU server: back-to-back polls of two slaves on one
//! line through the edge's bus shell, which keeps the t3.5 silence between frames.
//!
//! The wire limit of one poll is request + t3.5 + response + t3.5 on the line, each frame
//! taking (bytes × 10 bits) / 115200 s. A pty moves bytes without the line's character time, so
//! the fraction can exceed 100 %; what it measures is whether the edge (and the server) add
//! less than the character time they are spared.
//!
//! Needs socat and a Python with pymodbus (`DTOP_TEST_PYTHON`, else `target/py-peers`).
//! Run: `cargo run --release -p dtop-edge --example modbus_rtu_rate [-- POLLS [REGISTERS]]`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/modbus_support/mod.rs"]
mod modbus_support;

use std::time::{Duration, Instant};

use dtop_edge::modbus::bus::{Bus, Transport, char_time, inter_frame_silence};
use dtop_edge::modbus::config::{Parity, RtuConfig, Table};

const BAUD: u32 = 115_200;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let polls: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let registers: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let python = modbus_support::python().ok_or_else(|| anyhow::anyhow!("no pymodbus"))?;
    let socat = common::find_program("socat").ok_or_else(|| anyhow::anyhow!("no socat"))?;
    let dir = tempfile::tempdir()?;
    let pair = common::PtyPair::new(&socat, dir.path(), "bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let peer = modbus_support::PyPeer::rtu(&python, &pair.b, BAUD, &[1, 2]).await;
        let line = RtuConfig {
            path: pair.a.clone(),
            baud: BAUD,
            parity: Parity::None,
            stop_bits: 1,
            data_bits: 8,
            turnaround_delay_ms: 100,
            reopen_delay_ms: 1_000,
        };
        let (char_t, silence) = (char_time(&line), inter_frame_silence(&line));
        let mut bus = Bus::new(Transport::Rtu(line));
        // Request: slave, function, address (2), count (2), CRC (2). Response: slave,
        // function, byte count, 2 bytes per register, CRC (2).
        let (request_bytes, response_bytes) = (8u32, 5 + 2 * u32::from(registers));
        let wire = char_t * (request_bytes + response_bytes) + silence * 2;
        let wire_rate_hz = 1.0 / wire.as_secs_f64();
        for _ in 0..50 {
            let _ = bus.read(1, Table::Input, 0, registers, Duration::from_millis(200)).await;
        }
        let (mut failures, mut latencies) = (0usize, Vec::with_capacity(polls));
        let start = Instant::now();
        for k in 0..polls {
            let unit = 1 + (k % 2) as u8;
            let t = Instant::now();
            match bus.read(unit, Table::Input, 0, registers, Duration::from_millis(200)).await {
                Ok(words) if words[0] == 1000 * u16::from(unit) => {}
                _ => failures += 1,
            }
            latencies.push(t.elapsed());
        }
        let elapsed = start.elapsed();
        let rate_hz = polls as f64 / elapsed.as_secs_f64();
        latencies.sort_unstable();
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "Modbus RTU over a pty at {BAUD} bit/s 8N1, read {registers} input registers, \
             slaves 1 and 2 alternating, {polls} polls ({failures} failed)"
        );
        println!(
            "wire limit: ({request_bytes} + {response_bytes}) chars × {:.1} µs + 2 × t3.5 {:.2} ms = {:.3} ms per poll = {wire_rate_hz:.1} polls/s",
            char_t.as_secs_f64() * 1e6,
            silence.as_secs_f64() * 1e3,
            wire.as_secs_f64() * 1e3
        );
        println!(
            "achieved:   {rate_hz:.1} polls/s = {:.1} % of the wire limit (poll incl. silence: p50 {:.3} ms, p99 {:.3} ms)",
            100.0 * rate_hz / wire_rate_hz,
            p(0.5),
            p(0.99)
        );
        // On a real line the frames take their character time; count everything this run spent
        // outside the one silence the edge keeps (pymodbus's Python, the pty, the edge) as extra.
        let mean = elapsed / polls as u32;
        let extra = mean.saturating_sub(silence);
        println!(
            "real-line projection (conservative): wire / (wire + {:.3} ms measured beyond t3.5) = {:.1} %",
            extra.as_secs_f64() * 1e3,
            100.0 * wire.as_secs_f64() / (wire + extra).as_secs_f64()
        );
        // The edge's own share: how far past t3.5 its silence actually runs.
        let mut over = Vec::with_capacity(500);
        for _ in 0..500 {
            let deadline = tokio::time::Instant::now() + silence;
            dtop_edge::modbus::bus::wait_precisely_until(deadline).await;
            over.push(tokio::time::Instant::now() - deadline);
        }
        over.sort_unstable();
        let over_mean = over.iter().sum::<Duration>() / over.len() as u32;
        println!(
            "edge-only projection: t3.5 overshoot mean {:.0} µs (p99 {:.0} µs) -> wire / (wire + overshoot) = {:.1} %",
            over_mean.as_secs_f64() * 1e6,
            over[over.len() * 99 / 100].as_secs_f64() * 1e6,
            100.0 * wire.as_secs_f64() / (wire + over_mean).as_secs_f64()
        );
        peer.kill().await;
        anyhow::Ok(())
    })
}
