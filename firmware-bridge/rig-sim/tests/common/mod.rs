//! Test-side edge: opens the simulator's pty like the real edge does (tokio-serial +
//! FirmwareCodec) and offers waits with timeouts. Shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{Frame, Manifest, Samples};
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::codec::{Encoder, FramedRead};

/// Longest wait for any one frame; generous because CI machines stall.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Edge {
    frames: FramedRead<ReadHalf<SerialStream>, FirmwareCodec>,
    writer: WriteHalf<SerialStream>,
}

impl Edge {
    pub fn open(path: &Path) -> Self {
        let port = tokio_serial::new(path.to_string_lossy(), 921_600)
            .open_native_async()
            .expect("open the pty slave");
        let (reader, writer) = tokio::io::split(port);
        Self {
            frames: FramedRead::new(reader, FirmwareCodec::new()),
            writer,
        }
    }

    /// Writes a frame without flush(): on a tty that is a tcdrain.
    pub async fn send(&mut self, frame: Frame) {
        let mut buf = bytes::BytesMut::new();
        FirmwareCodec::new().encode(&frame, &mut buf).unwrap();
        tokio::time::timeout(FRAME_TIMEOUT, self.writer.write_all(&buf))
            .await
            .expect("write timed out")
            .unwrap();
    }

    pub async fn next(&mut self) -> Frame {
        tokio::time::timeout(FRAME_TIMEOUT, self.frames.next())
            .await
            .expect("no frame from the simulator")
            .expect("pty closed")
            .expect("pty read failed")
    }

    /// The next frame `pick` accepts; other frames are skipped.
    pub async fn next_where<T>(&mut self, mut pick: impl FnMut(Frame) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.next().await) {
                return found;
            }
        }
    }

    /// Sends Hello and returns the Manifest.
    pub async fn hello(&mut self) -> Manifest {
        self.send(Frame::Hello).await;
        self.next_where(|f| match f {
            Frame::Manifest(m) => Some(m),
            _ => None,
        })
        .await
    }

    /// Samples frames until at least `samples` samples arrived.
    pub async fn samples(&mut self, samples: usize) -> Vec<Samples> {
        let mut frames = Vec::new();
        let mut count = 0;
        while count < samples {
            let frame = self
                .next_where(|f| match f {
                    Frame::Samples(s) => Some(s),
                    _ => None,
                })
                .await;
            count += frame.sample_count();
            frames.push(frame);
        }
        frames
    }
}

/// Frames flattened to (index, raw row) pairs.
pub fn rows(frames: &[Samples]) -> Vec<(u64, Vec<i32>)> {
    frames
        .iter()
        .flat_map(|f| {
            let c = usize::from(f.channel_count);
            f.raw
                .chunks(c)
                .enumerate()
                .map(move |(s, row)| (f.first_sample_index + s as u64, row.to_vec()))
        })
        .collect()
}

/// A rig at rest and without sensor noise, so every value it reports is exactly what the test
/// put in; with a Modbus server on a free loopback port if `modbus`.
pub fn still_rig(modbus: bool) -> dtop_rig_sim::SimConfig {
    dtop_rig_sim::SimConfig {
        speed: 1.0,
        modbus_listen: modbus.then(|| "127.0.0.1:0".parse().unwrap()),
        excitation: dtop_rig_sim::ExcitationConfig::None,
        accel_noise_rms_m_s2: 0.0,
        force_noise_rms_n: 0.0,
        ..dtop_rig_sim::SimConfig::default()
    }
}

/// Starts the simulator with `config` and an edge that said Hello and took 20 samples, so the
/// simulated ADC runs.
pub async fn streaming(
    config: dtop_rig_sim::SimConfig,
) -> (
    dtop_rig_sim::SimHandle,
    Edge,
    tokio_util::sync::CancellationToken,
) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sim = dtop_rig_sim::start(config, shutdown.clone()).await.unwrap();
    let mut edge = Edge::open(sim.pty_path());
    edge.hello().await;
    edge.samples(20).await;
    (sim, edge, shutdown)
}
