//! The Modbus actuator output: what to write for a setpoint (pure), and the write schedule a bus
//! task follows (on every change, and at least every `refresh_period_ms` while enabled, so the
//! device's watchdog stays fed). Safety limits are not applied here: setpoints arrive already
//! through the edge's safety envelope.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::modbus::config::{DeviceConfig, ModbusActuatorConfig};
use crate::modbus::decode::encode_value;

/// What the actuator should do. The safe state is the default: disabled at 0 N.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModbusSetpoint {
    pub enable: bool,
    pub force_n: f64,
    /// The sample the force was computed from, written to `origin_address` when configured
    /// (the rig simulator measures the loop latency from it); [`Self::NO_ORIGIN`] otherwise.
    pub origin_sample_index: u64,
}

impl ModbusSetpoint {
    /// `origin_sample_index` of a setpoint not computed from any sample.
    pub const NO_ORIGIN: u64 = u64::MAX;
    pub const SAFE: Self = Self {
        enable: false,
        force_n: 0.0,
        origin_sample_index: Self::NO_ORIGIN,
    };
}

impl Default for ModbusSetpoint {
    fn default() -> Self {
        Self::SAFE
    }
}

/// One holding-register write (0x10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterWrite {
    pub address: u16,
    pub words: Vec<u16>,
}

/// Why a setpoint cannot be written as asked.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("drive force {force_n} N does not fit the configured register type and scale")]
pub struct UnencodableForce {
    pub force_n: f64,
}

/// The writes that apply `setpoint`, in order. Enable and force go in one request when their
/// registers are adjacent (so they change together); otherwise the force is written before an
/// enable, and the disable before the force, so the actuator never runs on a stale force.
pub fn setpoint_writes(
    cfg: &ModbusActuatorConfig,
    setpoint: ModbusSetpoint,
) -> Result<Vec<RegisterWrite>, UnencodableForce> {
    let force_n = if setpoint.enable {
        setpoint.force_n
    } else {
        0.0
    };
    let register_value = force_n * cfg.force_scale + cfg.force_offset;
    let force = encode_value(
        register_value,
        cfg.force_data_type,
        cfg.word_order,
        cfg.byte_order,
    )
    .ok_or(UnencodableForce { force_n })?;
    let enable = if setpoint.enable {
        cfg.enable_on_value
    } else {
        cfg.enable_off_value
    };
    let force_words = force.len() as u32;
    let (e, f) = (u32::from(cfg.enable_address), u32::from(cfg.force_address));
    let mut writes = if e + 1 == f {
        let mut words = vec![enable];
        words.extend(force);
        vec![RegisterWrite {
            address: cfg.enable_address,
            words,
        }]
    } else if f + force_words == e {
        let mut words = force;
        words.push(enable);
        vec![RegisterWrite {
            address: cfg.force_address,
            words,
        }]
    } else {
        let enable = RegisterWrite {
            address: cfg.enable_address,
            words: vec![enable],
        };
        let force = RegisterWrite {
            address: cfg.force_address,
            words: force,
        };
        if setpoint.enable {
            vec![force, enable]
        } else {
            vec![enable, force]
        }
    };
    if let Some(origin_address) = cfg.origin_address {
        let words = u64_words(setpoint.origin_sample_index);
        match writes.last_mut() {
            // Adjacent: one request, so the origin lands with the force it describes.
            Some(last)
                if u32::from(last.address) + last.words.len() as u32
                    == u32::from(origin_address) =>
            {
                last.words.extend(words);
            }
            _ => writes.push(RegisterWrite {
                address: origin_address,
                words: words.to_vec(),
            }),
        }
    }
    Ok(writes)
}

/// A u64 as four registers, most significant first.
fn u64_words(value: u64) -> [u16; 4] {
    [48, 32, 16, 0].map(|shift| (value >> shift) as u16)
}

/// The actuator as a bus task drives it: its config, setpoint source and write schedule.
#[derive(Debug)]
pub struct ActuatorOutput {
    pub cfg: ModbusActuatorConfig,
    pub unit_id: u8,
    pub request_timeout: Duration,
    pub setpoint_rx: watch::Receiver<ModbusSetpoint>,
    /// The setpoint last attempted and whether every write of it was acknowledged; `None`
    /// before the first attempt.
    pub attempted: Option<(ModbusSetpoint, bool)>,
    /// When an enabled setpoint is refreshed, or a failed one retried.
    pub next_write: Instant,
}

impl ActuatorOutput {
    pub fn new(
        cfg: ModbusActuatorConfig,
        device: &DeviceConfig,
        setpoint_rx: watch::Receiver<ModbusSetpoint>,
    ) -> Self {
        Self {
            cfg,
            unit_id: device.unit_id,
            request_timeout: device.request_timeout(),
            setpoint_rx,
            attempted: None,
            next_write: Instant::now(),
        }
    }

    pub fn refresh_period(&self) -> Duration {
        Duration::from_millis(self.cfg.refresh_period_ms)
    }

    /// The setpoint to write now, if one is due: it changed, or an enabled (or failed) one is
    /// due for its refresh (or retry).
    pub fn due(&mut self, now: Instant) -> Option<ModbusSetpoint> {
        let wanted = *self.setpoint_rx.borrow_and_update();
        match self.attempted {
            Some((s, ok)) if s == wanted && ((ok && !s.enable) || now < self.next_write) => None,
            _ => Some(wanted),
        }
    }

    /// When a write falls due without a setpoint change, if ever.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        match self.attempted {
            None => Some(now),
            Some((s, ok)) if s.enable || !ok => Some(self.next_write),
            Some(_) => None,
        }
    }

    /// Records the outcome of writing `setpoint` at `now`.
    pub fn record(&mut self, setpoint: ModbusSetpoint, ok: bool, now: Instant) {
        self.attempted = Some((setpoint, ok));
        self.next_write = now + self.refresh_period();
    }

    /// True once the safe state has been written and acknowledged.
    pub fn is_safe(&self) -> bool {
        self.attempted == Some((ModbusSetpoint::SAFE, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::{ByteOrder, DataType, WordOrder};

    /// The rig simulator's map (MODBUS.md): enable at 0, f32 force at 1–2, high word first.
    fn rig_sim() -> ModbusActuatorConfig {
        ModbusActuatorConfig {
            device: "sim".into(),
            enable_address: 0,
            enable_on_value: 1,
            enable_off_value: 0,
            force_address: 1,
            force_data_type: DataType::F32,
            word_order: WordOrder::Big,
            byte_order: ByteOrder::Big,
            force_scale: 1.0,
            force_offset: 0.0,
            refresh_period_ms: 200,
            origin_address: None,
        }
    }

    #[test]
    fn writes_enable_and_force_together_when_adjacent() {
        let writes = setpoint_writes(
            &rig_sim(),
            ModbusSetpoint {
                enable: true,
                force_n: 10.0,
                origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            },
        );
        assert_eq!(
            writes,
            Ok(vec![RegisterWrite {
                address: 0,
                // enable = 1, then 10.0 f32 = 0x4120 0x0000.
                words: vec![1, 0x4120, 0x0000]
            }])
        );
        // Disabled means 0 N, whatever force was asked.
        let off = setpoint_writes(
            &rig_sim(),
            ModbusSetpoint {
                enable: false,
                force_n: 5.0,
                origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            },
        );
        assert_eq!(
            off,
            Ok(vec![RegisterWrite {
                address: 0,
                words: vec![0, 0, 0]
            }])
        );
    }

    #[test]
    fn orders_separate_writes_so_the_force_is_never_stale() {
        // A drive taking i16 tenths of a newton at 10, enable at 20.
        let cfg = ModbusActuatorConfig {
            enable_address: 20,
            force_address: 10,
            force_data_type: DataType::I16,
            force_scale: 10.0,
            ..rig_sim()
        };
        let on = setpoint_writes(
            &cfg,
            ModbusSetpoint {
                enable: true,
                force_n: -1.5,
                origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            },
        );
        assert_eq!(
            on,
            Ok(vec![
                RegisterWrite {
                    address: 10,
                    words: vec![(-15i16) as u16]
                },
                RegisterWrite {
                    address: 20,
                    words: vec![1]
                },
            ])
        );
        let off = setpoint_writes(&cfg, ModbusSetpoint::SAFE);
        assert_eq!(
            off.map(|w| w.iter().map(|w| w.address).collect::<Vec<_>>()),
            Ok(vec![20, 10])
        );
        let too_big = setpoint_writes(
            &cfg,
            ModbusSetpoint {
                enable: true,
                force_n: 4000.0,
                origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            },
        );
        assert_eq!(too_big, Err(UnencodableForce { force_n: 4000.0 }));
    }

    #[test]
    fn force_after_enable_joins_into_one_write_too() {
        let cfg = ModbusActuatorConfig {
            enable_address: 2,
            force_address: 0,
            ..rig_sim()
        };
        let w = setpoint_writes(
            &cfg,
            ModbusSetpoint {
                enable: true,
                force_n: 10.0,
                origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            },
        );
        assert_eq!(
            w,
            Ok(vec![RegisterWrite {
                address: 0,
                words: vec![0x4120, 0, 1]
            }])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_on_change_and_refreshes_only_while_enabled() {
        let (tx, rx) = watch::channel(ModbusSetpoint::SAFE);
        let device: DeviceConfig = toml::from_str(
            r#"
            name = "sim"
            tcp = { addr = "127.0.0.1:502" }
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut out = ActuatorOutput::new(rig_sim(), &device, rx);
        let t0 = Instant::now();
        // The safe state is written first.
        assert_eq!(out.due(t0), Some(ModbusSetpoint::SAFE));
        out.record(ModbusSetpoint::SAFE, true, t0);
        assert_eq!(out.due(t0 + Duration::from_secs(5)), None);
        let on = ModbusSetpoint {
            enable: true,
            force_n: 2.0,
            origin_sample_index: ModbusSetpoint::NO_ORIGIN,
        };
        tx.send_replace(on);
        assert_eq!(out.due(t0), Some(on));
        out.record(on, true, t0);
        assert_eq!(out.due(t0 + Duration::from_millis(199)), None);
        assert_eq!(out.due(t0 + Duration::from_millis(200)), Some(on));
        // A failed write is retried after one refresh period, not in a tight loop.
        out.record(on, false, t0);
        assert_eq!(out.due(t0 + Duration::from_millis(10)), None);
        assert_eq!(out.next_due(t0), Some(t0 + Duration::from_millis(200)));
        assert_eq!(out.due(t0 + Duration::from_millis(200)), Some(on));
    }
}
