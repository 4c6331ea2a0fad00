//! Measures `FirmwareCodec` throughput on the typical stream (4 channels × 10 samples per
//! frame): encodes a bounded number of frames, then decodes them in serial-sized reads.
//! A rough figure for capacity planning, not a benchmark harness.
//!
//! Run: `cargo run --release -p dtop-firmware --example codec_throughput [frames]`

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{Frame, Samples};
use tokio_util::codec::{Decoder, Encoder};

const CHANNELS: u8 = 4;
const SAMPLES_PER_FRAME: usize = 10;
const DEFAULT_FRAMES: usize = 200_000;
/// Bytes handed to the decoder per call, like one read from a serial port.
const READ_CHUNK_BYTES: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => DEFAULT_FRAMES,
    };
    let values_per_frame = usize::from(CHANNELS) * SAMPLES_PER_FRAME;
    // Realistic ADC-like values: small signed numbers with some zero bytes for COBS to stuff.
    let templates: Vec<Samples> = (0..64u64)
        .map(|t| {
            let raw = (0..values_per_frame)
                .map(|i| ((t as i32 * 7919 + i as i32 * 104_729) % 65_536) - 32_768)
                .collect();
            Samples::new(0, CHANNELS, raw)
        })
        .collect::<Result<_, _>>()?;

    let mut codec = FirmwareCodec::new();
    let mut wire = BytesMut::with_capacity(frames * 200);
    let started = Instant::now();
    for n in 0..frames {
        let mut samples = templates[n % templates.len()].clone();
        samples.first_sample_index = (n * SAMPLES_PER_FRAME) as u64;
        codec.encode(Frame::Samples(samples), &mut wire)?;
    }
    let encode_s = started.elapsed().as_secs_f64();
    let wire_bytes = wire.len();

    let mut decoded = 0usize;
    let started = Instant::now();
    let mut input = wire.freeze();
    let mut src = BytesMut::with_capacity(READ_CHUNK_BYTES);
    while !input.is_empty() {
        let chunk = input.split_to(READ_CHUNK_BYTES.min(input.len()));
        src.extend_from_slice(&chunk);
        while let Some(frame) = codec.decode(&mut src)? {
            black_box(&frame);
            decoded += 1;
        }
    }
    let decode_s = started.elapsed().as_secs_f64();

    if decoded != frames || codec.bad_frames_total() != 0 {
        return Err(format!(
            "decoded {decoded} of {frames} frames, {} bad",
            codec.bad_frames_total()
        )
        .into());
    }
    let samples = (frames * SAMPLES_PER_FRAME) as f64;
    let mb = wire_bytes as f64 / 1e6;
    println!(
        "{frames} frames of {CHANNELS} channels x {SAMPLES_PER_FRAME} samples, {wire_bytes} wire bytes ({:.1} B/frame)",
        wire_bytes as f64 / frames as f64
    );
    for (what, secs) in [("encode", encode_s), ("decode", decode_s)] {
        println!(
            "{what}: {:>8.1} MB/s  {:>6.2} M samples/s  {:>6.2} M values/s  {:>6.2} M frames/s  ({:.3} s)",
            mb / secs,
            samples / secs / 1e6,
            samples * f64::from(CHANNELS) / secs / 1e6,
            frames as f64 / secs / 1e6,
            secs
        );
    }
    Ok(())
}
