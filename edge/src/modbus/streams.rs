//! How polled devices appear downstream: one stream per polled device, its channels' ids, names,
//! units and raw encodings for the birth manifest, and the samples a bus task hands to the
//! acquisition task. Pure: derived from the config alone, so every task agrees on the ids.

use dtop_proto::v1::{self, Channel};

use crate::batcher::StreamLayout;
use crate::modbus::config::{
    ChannelKindConfig, DeviceConfig, FIRST_POLLED_CHANNEL_ID, FIRST_POLLED_STREAM_ID, ModbusConfig,
};
use crate::modbus::decode::{carried_range, raw_encoding};

/// One polled sample of every register of a device, in register-config order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledSample {
    pub stream_id: u32,
    /// Poll periods since the device's schedule started; a missed poll leaves a gap.
    pub sample_index: u64,
    /// Scheduled time of the poll, ns since the Unix epoch (a whole number of periods).
    pub timestamp_ns: u64,
    /// One raw integer per register (see [`crate::modbus::decode::to_raw`]).
    pub raw: Vec<i32>,
}

/// A polled device's stream: its id and channels.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledStream {
    /// Index of the device in `modbus.devices`.
    pub device: usize,
    pub stream_id: u32,
    /// The channels as announced in the birth, in register-config order.
    pub channels: Vec<Channel>,
    pub sample_period_ns: u64,
}

impl PolledStream {
    /// The batcher's view of the stream.
    pub fn layout(&self) -> StreamLayout {
        StreamLayout {
            channel_ids: self.channels.iter().map(|c| c.id).collect(),
            sample_period_ns: self.sample_period_ns,
        }
    }
}

/// The streams of every device that polls registers, in config order. Stream ids count from
/// [`FIRST_POLLED_STREAM_ID`] and channel ids from [`FIRST_POLLED_CHANNEL_ID`], over polled
/// devices only, so they change only when the register map does.
pub fn polled_streams(config: &ModbusConfig) -> Vec<PolledStream> {
    let mut channel_id = FIRST_POLLED_CHANNEL_ID;
    config
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| polls(d))
        .zip(FIRST_POLLED_STREAM_ID..)
        .map(|((device, d), stream_id)| {
            let sample_rate_hz = 1000.0 / d.poll_period_ms as f64;
            let channels = d
                .registers
                .iter()
                .map(|r| {
                    let enc = raw_encoding(r);
                    let id = channel_id;
                    channel_id += 1;
                    Channel {
                        id,
                        name: r.channel.clone(),
                        kind: proto_kind(r.kind) as i32,
                        unit: r.unit.clone(),
                        scale: enc.scale,
                        offset: enc.offset,
                        sample_rate_hz,
                        floor: r.floor,
                        stream_id,
                    }
                })
                .collect();
            PolledStream {
                device,
                stream_id,
                channels,
                sample_period_ns: d.poll_period_ms * 1_000_000,
            }
        })
        .collect()
}

/// True for a device with registers to poll (the others only host an actuator).
pub fn polls(device: &DeviceConfig) -> bool {
    device.poll_period_ms > 0 && !device.registers.is_empty()
}

/// The birth-manifest channels of every polled stream.
pub fn birth_channels(config: &ModbusConfig) -> Vec<Channel> {
    polled_streams(config)
        .into_iter()
        .flat_map(|s| s.channels)
        .collect()
}

/// One sentence per polled channel whose register can hold values a `SampleBlock`'s i32 cannot
/// carry at the channel's scale (a u32 from 2³¹ up, a float beyond ±2³¹ × resolution). Such a
/// value is published as missing (`RAW_NO_VALUE`) and counted, never wrapped. Warnings, not
/// errors: every such channel also has values that fit, and a counter that never reaches 2³¹
/// is fine. Logged at start and printed by `dtop-edge --check`.
pub fn overflow_warnings(config: &ModbusConfig) -> Vec<String> {
    config
        .devices
        .iter()
        .filter(|d| polls(d))
        .flat_map(|d| {
            d.registers.iter().filter_map(move |r| {
                let (lo, hi) = carried_range(r)?;
                Some(format!(
                    "modbus device {:?} channel {:?} ({:?}): values outside [{lo:.6e}, {hi:.6e}]{} do not fit a SampleBlock's i32 and are published as missing and counted; a wider range needs a coarser scale or resolution",
                    d.name,
                    r.channel,
                    r.data_type(),
                    if r.unit.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", r.unit)
                    }
                ))
            })
        })
        .collect()
}

fn proto_kind(kind: ChannelKindConfig) -> v1::ChannelKind {
    match kind {
        ChannelKindConfig::Acceleration => v1::ChannelKind::Acceleration,
        ChannelKindConfig::Force => v1::ChannelKind::Force,
        ChannelKindConfig::Displacement => v1::ChannelKind::Displacement,
        ChannelKindConfig::Velocity => v1::ChannelKind::Velocity,
        ChannelKindConfig::Current => v1::ChannelKind::Current,
        ChannelKindConfig::Other => v1::ChannelKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_streams_and_channels_after_the_firmware_ones() {
        let config: ModbusConfig = toml::from_str(
            r#"
            [[devices]]
            name = "a"
            tcp = { addr = "127.0.0.1:502" }
            poll_period_ms = 20
            [[devices.registers]]
            channel = "a_acc"
            table = "input"
            address = 0
            data_type = "f32"
            resolution = 0.001
            unit = "m/s^2"
            kind = "acceleration"
            floor = 2
            [[devices.registers]]
            channel = "a_temp"
            table = "holding"
            address = 0
            data_type = "i16"
            scale = 0.1
            offset = -40.0

            [[devices]]
            name = "drive_only"
            tcp = { addr = "127.0.0.1:503" }
            poll_period_ms = 0

            [[devices]]
            name = "b"
            tcp = { addr = "127.0.0.1:504" }
            [[devices.registers]]
            channel = "b_on"
            table = "coil"
            address = 7
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let streams = polled_streams(&config);
        let ids: Vec<_> = streams
            .iter()
            .map(|s| {
                (
                    s.device,
                    s.stream_id,
                    s.layout().channel_ids,
                    s.sample_period_ns,
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                (0, 1, vec![256, 257], 20_000_000),
                (2, 2, vec![258], 100_000_000)
            ]
        );
        let acc = &streams[0].channels[0];
        assert_eq!(
            (
                acc.name.as_str(),
                acc.kind,
                acc.unit.as_str(),
                acc.scale,
                acc.offset
            ),
            (
                "a_acc",
                v1::ChannelKind::Acceleration as i32,
                "m/s^2",
                0.001,
                0.0
            )
        );
        assert_eq!((acc.sample_rate_hz, acc.floor, acc.stream_id), (50.0, 2, 1));
        let temp = &streams[0].channels[1];
        assert_eq!((temp.scale, temp.offset), (0.1, -40.0));
        assert_eq!(birth_channels(&config).len(), 3);
        // Only the f32 can leave the i32 range (the i16 and the coil cannot).
        let warnings = overflow_warnings(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"a_acc\""), "{warnings:?}");
    }
}
