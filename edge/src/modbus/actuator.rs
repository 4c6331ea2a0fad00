//! The Modbus actuator output: what to write for a setpoint (pure), and the write schedule a bus
//! task follows (on every change, and at least every `refresh_period_ms` while enabled, so the
//! device's watchdog stays fed). Safety limits are not applied here: setpoints arrive already
//! through the edge's safety envelope.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::modbus::config::{DeviceConfig, ModbusActuatorConfig};
use crate::modbus::decode::encode_value;

/// What the actuator should do, as the safety envelope (serial task) says. The safe state is
/// the default: disabled at 0 N.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModbusSetpoint {
    pub enable: bool,
    pub force_n: f64,
    /// The sample the force was computed from, written to `origin_address` when configured
    /// (the rig simulator measures the loop latency from it); [`Self::NO_ORIGIN`] otherwise.
    pub origin_sample_index: u64,
    /// The envelope's drive timeout: writes unacknowledged for this long mean the link was
    /// lost ([`ActuatorGuard`]).
    pub link_timeout: Duration,
    /// Link losses the envelope has taken in (and latched for): the bus task writes no enabled
    /// setpoint while it has declared more ([`ModbusLinkReport::link_losses_n`]).
    pub link_losses_seen_n: u64,
}

impl ModbusSetpoint {
    /// `origin_sample_index` of a setpoint not computed from any sample.
    pub const NO_ORIGIN: u64 = u64::MAX;
    pub const SAFE: Self = Self {
        enable: false,
        force_n: 0.0,
        origin_sample_index: Self::NO_ORIGIN,
        link_timeout: Duration::ZERO,
        link_losses_seen_n: 0,
    };

    /// This setpoint switched off, whatever it asked for.
    pub const fn disabled(self) -> Self {
        Self {
            enable: false,
            force_n: 0.0,
            origin_sample_index: Self::NO_ORIGIN,
            ..self
        }
    }
}

/// What a bus task tells the safety envelope about its actuator's link (a `watch`, bus task →
/// serial task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModbusLinkReport {
    /// Times the actuator acknowledged no write for longer than [`ModbusSetpoint::link_timeout`]
    /// while an enabled setpoint was wanted. The envelope latches on each new one.
    pub link_losses_n: u64,
}

/// Prevention of unexpected start-up (IEC 60204-1 §7.5) on the bus task's side. Pure: keeps the
/// time of the first unacknowledged write, declares a link loss once writes have failed for
/// the setpoint's `link_timeout` while it asks to drive, and from then on turns every enabled
/// setpoint into the safe state until the envelope has taken the loss in. The device coming
/// back can therefore never receive the held setpoint, however the two tasks interleave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActuatorGuard {
    /// When the current run of failed writes began; `None` after an acknowledged one.
    failing_since: Option<Instant>,
    /// Losses declared so far.
    pub link_losses_n: u64,
}

impl ActuatorGuard {
    /// The setpoint to write instead of `wanted` at `now`, and whether a loss was declared
    /// just now.
    pub fn filter(&mut self, wanted: ModbusSetpoint, now: Instant) -> (ModbusSetpoint, bool) {
        if !wanted.enable {
            return (wanted, false);
        }
        let mut declared = false;
        if let Some(since) = self.failing_since
            && now.saturating_duration_since(since) >= wanted.link_timeout
            && self.link_losses_n <= wanted.link_losses_seen_n
        {
            self.link_losses_n += 1;
            declared = true;
        }
        if self.link_losses_n > wanted.link_losses_seen_n {
            (wanted.disabled(), declared)
        } else {
            (wanted, declared)
        }
    }

    /// Records a write attempted at `at`: acknowledged or not.
    pub fn record(&mut self, acknowledged: bool, at: Instant) {
        if acknowledged {
            self.failing_since = None;
        } else {
            self.failing_since.get_or_insert(at);
        }
    }
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
    /// Keeps a device that comes back after a long outage from picking up the drive.
    pub guard: ActuatorGuard,
    /// Where declared link losses go (the safety envelope); `None` when nobody listens.
    pub link_tx: Option<watch::Sender<ModbusLinkReport>>,
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
            guard: ActuatorGuard::default(),
            link_tx: None,
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

    /// Records the outcome of writing `setpoint` (what was wanted; the guard may have written
    /// the safe state instead), attempted at `at`, finished at `now`.
    pub fn record(&mut self, setpoint: ModbusSetpoint, ok: bool, at: Instant, now: Instant) {
        self.attempted = Some((setpoint, ok));
        self.guard.record(ok, at);
        self.next_write = now + self.refresh_period();
    }

    /// True once a disabled setpoint has been written and acknowledged.
    pub fn is_safe(&self) -> bool {
        matches!(self.attempted, Some((s, true)) if !s.enable)
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
                ..ModbusSetpoint::SAFE
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
                ..ModbusSetpoint::SAFE
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
                ..ModbusSetpoint::SAFE
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
                ..ModbusSetpoint::SAFE
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
                ..ModbusSetpoint::SAFE
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
        out.record(ModbusSetpoint::SAFE, true, t0, t0);
        assert_eq!(out.due(t0 + Duration::from_secs(5)), None);
        let on = ModbusSetpoint {
            enable: true,
            force_n: 2.0,
            origin_sample_index: ModbusSetpoint::NO_ORIGIN,
            ..ModbusSetpoint::SAFE
        };
        tx.send_replace(on);
        assert_eq!(out.due(t0), Some(on));
        out.record(on, true, t0, t0);
        assert_eq!(out.due(t0 + Duration::from_millis(199)), None);
        assert_eq!(out.due(t0 + Duration::from_millis(200)), Some(on));
        // A failed write is retried after one refresh period, not in a tight loop.
        out.record(on, false, t0, t0);
        assert_eq!(out.due(t0 + Duration::from_millis(10)), None);
        assert_eq!(out.next_due(t0), Some(t0 + Duration::from_millis(200)));
        assert_eq!(out.due(t0 + Duration::from_millis(200)), Some(on));
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_back_after_the_drive_timeout_gets_the_safe_state_until_the_envelope_knows() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let on = ModbusSetpoint {
            enable: true,
            force_n: 3.0,
            origin_sample_index: 7,
            link_timeout: ms(250),
            link_losses_seen_n: 0,
        };
        let mut g = ActuatorGuard::default();
        assert_eq!(g.filter(on, t0), (on, false));
        g.record(true, t0);
        // A short outage (200 ms < 250 ms): the drive resumes.
        g.record(false, t0 + ms(200));
        assert_eq!(g.filter(on, t0 + ms(400)), (on, false));
        g.record(true, t0 + ms(400));
        // A long one: declared once, and the held setpoint is never written again.
        g.record(false, t0 + ms(600));
        g.record(false, t0 + ms(800));
        assert_eq!(g.filter(on, t0 + ms(850)), (on.disabled(), true));
        g.record(true, t0 + ms(850));
        assert_eq!(g.filter(on, t0 + ms(1_000)), (on.disabled(), false));
        assert_eq!(g.link_losses_n, 1);
        // Disabled setpoints pass untouched; once the envelope has taken the loss in (and an
        // operator reset it), its drives pass again.
        assert_eq!(
            g.filter(ModbusSetpoint::SAFE, t0),
            (ModbusSetpoint::SAFE, false)
        );
        let reset = ModbusSetpoint {
            link_losses_seen_n: 1,
            ..on
        };
        assert_eq!(g.filter(reset, t0 + ms(1_200)), (reset, false));
    }
}
