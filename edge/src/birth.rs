//! Builds the `RigBirth` announcement from the firmware's `Manifest` and the edge config: channel
//! names, units, scales and actuator limits, and the polled Modbus channels after them. Pure; publishing it is `publisher.rs`'s job.

use dtop_firmware::{ChannelDesc, ChannelKind, Manifest};
use dtop_proto::RigId;
use dtop_proto::v1::{self, ActuatorLimits, Channel, RigBirth};

use crate::config::ActuatorConfig;

/// Stream carrying the firmware's channels.
pub const FIRMWARE_STREAM_ID: u32 = 0;

/// Everything a birth needs besides the manifest.
#[derive(Debug, Clone, Copy)]
pub struct BirthContext<'a> {
    pub rig_id: &'a RigId,
    pub actuator: &'a ActuatorConfig,
    /// MQTT session this birth opens.
    pub session: u64,
    /// Wall clock now, ns since the Unix epoch.
    pub now_ns: u64,
}

/// The birth for `manifest`.
pub fn build_birth(manifest: &Manifest, ctx: BirthContext<'_>) -> RigBirth {
    let descs = manifest.channels();
    let sample_rate_hz = f64::from(manifest.sample_rate_mhz) / 1000.0;
    let channels = descs
        .iter()
        .zip(channel_names(descs))
        .map(|(desc, name)| Channel {
            id: u32::from(desc.id),
            name,
            kind: proto_kind(desc.kind) as i32,
            unit: unit(desc.kind).to_owned(),
            scale: f32_as_written(desc.scale),
            offset: 0.0,
            sample_rate_hz,
            floor: u32::from(desc.floor),
            stream_id: FIRMWARE_STREAM_ID,
        })
        .collect();
    RigBirth {
        rig_id: ctx.rig_id.to_string(),
        session: ctx.session,
        edge_version: env!("CARGO_PKG_VERSION").to_owned(),
        firmware_protocol_version: u32::from(dtop_firmware::PROTOCOL_VERSION),
        firmware_version: manifest.version_str().to_owned(),
        channels,
        actuator: Some(actuator_limits(manifest, ctx.actuator)),
        floors: u32::from(manifest.floors),
        timestamp_ns: ctx.now_ns,
        // The publisher fills in the envelope's state at publication.
        safety_state: String::new(),
        // The publisher fills in its spool's oldest block at publication.
        oldest_unconfirmed_seq: None,
    }
}

/// The birth for `manifest` plus the polled Modbus channels (`crate::modbus::birth_channels`),
/// after the firmware's. A polled name that a firmware channel already uses gets a `_ch{id}`
/// suffix, so every name in the birth stays unique.
pub fn build_birth_with_polled(
    manifest: &Manifest,
    ctx: BirthContext<'_>,
    polled: &[Channel],
) -> RigBirth {
    let mut birth = build_birth(manifest, ctx);
    let firmware_names: Vec<String> = birth.channels.iter().map(|c| c.name.clone()).collect();
    birth.channels.extend(polled.iter().map(|c| {
        let mut c = c.clone();
        if firmware_names.contains(&c.name) {
            c.name = format!("{}_ch{}", c.name, c.id);
        }
        c
    }));
    birth
}

/// The limits the edge enforces: the config's, tightened to the firmware's own force limit when
/// the firmware reports a sane one (the firmware would clamp anyway; announcing the looser value
/// would mislead controllers).
pub fn actuator_limits(manifest: &Manifest, config: &ActuatorConfig) -> ActuatorLimits {
    let firmware_max = f64::from(manifest.actuator_max_force_n);
    let max_force_n = if firmware_max.is_finite() && firmware_max > 0.0 {
        config
            .max_force_n
            .min(f32_as_written(manifest.actuator_max_force_n))
    } else {
        config.max_force_n
    };
    ActuatorLimits {
        max_force_n,
        max_slew_n_per_s: config.max_slew_n_per_s,
        floor: u32::from(manifest.actuator_floor),
    }
}

/// Database names for the channels, in manifest order: `floor{n}_accel`, `floor{n}_disp`,
/// `floor{n}_vel` for floor-bound sensors; `force` / `current` (numbered `force1`, `force2`, ...
/// when there are several); `ch{id}` for anything else. Names that would still collide get a
/// `_ch{id}` suffix on every member, so no name depends on manifest order.
pub fn channel_names(descs: &[ChannelDesc]) -> Vec<String> {
    let count = |kind: ChannelKind| descs.iter().filter(|d| d.kind == kind).count();
    let (forces, currents) = (count(ChannelKind::Force), count(ChannelKind::Current));
    let mut ordinal = [0usize; 2];
    let base: Vec<String> = descs
        .iter()
        .map(|d| match d.kind {
            ChannelKind::Acceleration => format!("floor{}_accel", d.floor),
            ChannelKind::Displacement => format!("floor{}_disp", d.floor),
            ChannelKind::Velocity => format!("floor{}_vel", d.floor),
            ChannelKind::Force => numbered("force", forces, &mut ordinal[0]),
            ChannelKind::Current => numbered("current", currents, &mut ordinal[1]),
            ChannelKind::Other => format!("ch{}", d.id),
        })
        .collect();
    base.iter()
        .zip(descs)
        .map(|(name, d)| {
            if base.iter().filter(|n| *n == name).count() > 1 {
                format!("{name}_ch{}", d.id)
            } else {
                name.clone()
            }
        })
        .collect()
}

fn numbered(stem: &str, of: usize, ordinal: &mut usize) -> String {
    *ordinal += 1;
    if of == 1 {
        stem.to_owned()
    } else {
        format!("{stem}{ordinal}")
    }
}

/// SI unit of a channel kind's scaled value.
pub fn unit(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Acceleration => "m/s^2",
        ChannelKind::Force => "N",
        ChannelKind::Displacement => "m",
        ChannelKind::Velocity => "m/s",
        ChannelKind::Current => "A",
        ChannelKind::Other => "",
    }
}

fn proto_kind(kind: ChannelKind) -> v1::ChannelKind {
    match kind {
        ChannelKind::Acceleration => v1::ChannelKind::Acceleration,
        ChannelKind::Force => v1::ChannelKind::Force,
        ChannelKind::Displacement => v1::ChannelKind::Displacement,
        ChannelKind::Velocity => v1::ChannelKind::Velocity,
        ChannelKind::Current => v1::ChannelKind::Current,
        ChannelKind::Other => v1::ChannelKind::Other,
    }
}

/// The decimal the firmware author wrote: the shortest decimal that rounds to this `f32`, as an
/// `f64`. A plain widening would turn a scale of 0.1 into 0.10000000149011612.
fn f32_as_written(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u8, kind: ChannelKind, floor: u8) -> ChannelDesc {
        ChannelDesc {
            id,
            kind,
            floor,
            scale: 0.001,
        }
    }

    fn southampton() -> Manifest {
        let channels = [
            desc(0, ChannelKind::Acceleration, 0),
            desc(1, ChannelKind::Acceleration, 1),
            desc(2, ChannelKind::Acceleration, 2),
            desc(3, ChannelKind::Acceleration, 3),
            ChannelDesc {
                id: 4,
                kind: ChannelKind::Force,
                floor: 3,
                scale: 0.01,
            },
        ];
        Manifest::new("sim-1.2.3", 1_000_000, 3, 3, 15.0, &channels)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn names_units_and_scales_follow_the_manifest() {
        let rig = RigId::new("so-3s").unwrap_or_else(|e| panic!("{e}"));
        let actuator = ActuatorConfig {
            max_force_n: 20.0,
            max_slew_n_per_s: 2000.0,
            drive_timeout_periods: 250,
        };
        let birth = build_birth(
            &southampton(),
            BirthContext {
                rig_id: &rig,
                actuator: &actuator,
                session: 4,
                now_ns: 99,
            },
        );
        let channel =
            |id: u32, name: &str, kind: v1::ChannelKind, unit: &str, scale: f64, floor: u32| {
                Channel {
                    id,
                    name: name.into(),
                    kind: kind as i32,
                    unit: unit.into(),
                    scale,
                    offset: 0.0,
                    sample_rate_hz: 1000.0,
                    floor,
                    stream_id: 0,
                }
            };
        let acc = v1::ChannelKind::Acceleration;
        assert_eq!(
            birth,
            RigBirth {
                rig_id: "so-3s".into(),
                session: 4,
                edge_version: env!("CARGO_PKG_VERSION").into(),
                firmware_protocol_version: u32::from(dtop_firmware::PROTOCOL_VERSION),
                firmware_version: "sim-1.2.3".into(),
                channels: vec![
                    channel(0, "floor0_accel", acc, "m/s^2", 0.001, 0),
                    channel(1, "floor1_accel", acc, "m/s^2", 0.001, 1),
                    channel(2, "floor2_accel", acc, "m/s^2", 0.001, 2),
                    channel(3, "floor3_accel", acc, "m/s^2", 0.001, 3),
                    channel(4, "force", v1::ChannelKind::Force, "N", 0.01, 3),
                ],
                // The firmware's 15 N is tighter than the config's 20 N.
                actuator: Some(ActuatorLimits {
                    max_force_n: 15.0,
                    max_slew_n_per_s: 2000.0,
                    floor: 3
                }),
                floors: 3,
                timestamp_ns: 99,
                safety_state: String::new(),
                oldest_unconfirmed_seq: None,
            }
        );
    }

    #[test]
    fn numbers_repeated_kinds_and_disambiguates_collisions() {
        let descs = [
            desc(0, ChannelKind::Force, 0),
            desc(1, ChannelKind::Force, 3),
            desc(2, ChannelKind::Acceleration, 1),
            desc(3, ChannelKind::Acceleration, 1),
            desc(4, ChannelKind::Current, 3),
            desc(5, ChannelKind::Other, 0),
            desc(6, ChannelKind::Velocity, 2),
            desc(7, ChannelKind::Displacement, 2),
        ];
        assert_eq!(
            channel_names(&descs),
            [
                "force1",
                "force2",
                "floor1_accel_ch2",
                "floor1_accel_ch3",
                "current",
                "ch5",
                "floor2_vel",
                "floor2_disp"
            ]
        );
    }

    #[test]
    fn polled_channels_follow_the_firmware_ones_with_unique_names() {
        let rig = RigId::new("so-3s").unwrap_or_else(|e| panic!("{e}"));
        let actuator = ActuatorConfig {
            max_force_n: 20.0,
            max_slew_n_per_s: 2000.0,
            drive_timeout_periods: 250,
        };
        let ctx = BirthContext {
            rig_id: &rig,
            actuator: &actuator,
            session: 1,
            now_ns: 0,
        };
        let polled = |id: u32, name: &str| Channel {
            id,
            name: name.into(),
            kind: v1::ChannelKind::Other as i32,
            unit: "degC".into(),
            scale: 0.1,
            offset: -40.0,
            sample_rate_hz: 10.0,
            floor: 0,
            stream_id: 1,
        };
        let birth = build_birth_with_polled(
            &southampton(),
            ctx,
            &[polled(256, "amp_temp"), polled(257, "force")],
        );
        let names: Vec<_> = birth.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "floor0_accel",
                "floor1_accel",
                "floor2_accel",
                "floor3_accel",
                "force",
                "amp_temp",
                "force_ch257"
            ]
        );
        assert_eq!(birth.channels[5], polled(256, "amp_temp"));
    }

    #[test]
    fn keeps_the_config_force_limit_when_the_firmware_reports_none() {
        let mut manifest = southampton();
        manifest.actuator_max_force_n = 0.0;
        let config = ActuatorConfig {
            max_force_n: 20.0,
            max_slew_n_per_s: 5.0,
            drive_timeout_periods: 250,
        };
        assert_eq!(actuator_limits(&manifest, &config).max_force_n, 20.0);
    }
}
