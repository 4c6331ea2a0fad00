//! Owns the emulated firmware's state machine (PROTOCOL.md §7): link state, sample index,
//! actuator, watchdog and the Modbus holding registers. Decides what to send; never sends.
//! Time is passed in as uptime, so every decision is reproducible in tests.

use std::time::Duration;

use dtop_firmware::{ActuatorStatus, Fault, Frame, Heartbeat, Manifest, Samples};
use tokio_modbus::ExceptionCode;

use crate::config::{ExcitationConfig, SimConfig};
use crate::error::SimError;
use crate::registers::{self, HOLDING_COUNT, HOLDING_ENABLE, RegisterReply, RegisterRequest};
use crate::rig::{FLOORS, Measurement, Rig};
use crate::sensor::CHANNEL_COUNT;

/// Fault codes (PROTOCOL.md §4.7).
pub mod fault_code {
    /// The firmware lost samples (buffer overrun); `sample_index` = first lost.
    pub const SAMPLES_DROPPED: u16 = 0x0001;
    /// The actuator was put in its safe state because the edge went silent (§7.4).
    pub const ACTUATOR_WATCHDOG: u16 = 0x0003;
    /// An `ActuatorCommand` could not be applied (no actuator fitted).
    pub const COMMAND_REJECTED: u16 = 0x0005;
}

/// The actuator as the firmware drives it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Actuator {
    /// `seq` of the last `ActuatorCommand` applied (0 before any).
    seq: u16,
    enabled: bool,
    /// Demanded force as last commanded, N, before clamping. Kept while disabled so a Modbus
    /// enable resumes it; zeroed by the watchdog (safe state).
    demand_n: f32,
    /// First sample index with this state in effect.
    applied_at: u64,
    /// Holding registers 3–6 as last written: the sample the drive came from (`u64::MAX` =
    /// none). Modbus only; the pty's command carries its own.
    origin_sample_index: u64,
}

/// The emulated firmware.
#[derive(Debug)]
pub struct Firmware {
    rig: Rig,
    manifest: Manifest,
    samples_per_frame: u16,
    max_samples: Option<u64>,
    watchdog_timeout: Duration,
    max_force_n: f32,
    has_actuator: bool,
    /// Index of the next sample the ADC will take.
    next_sample_index: u64,
    /// Set by the first Hello. The simulated ADC starts then, so index 0 is the first sample
    /// the edge sees and the stream does not depend on how late the edge opened the pty.
    streaming: bool,
    actuator: Actuator,
    /// Last Heartbeat/ActuatorCommand from the edge, or Modbus holding write (uptime).
    last_contact: Duration,
    /// Latest measurement, for the Modbus input registers.
    latest: Measurement,
    /// The shaker registers as last written (MODBUS.md): waveform code, amplitude, frequency,
    /// end frequency.
    shaker: (u16, [f32; 3]),
    /// The simulator's config, to check shaker settings the way the command line's are.
    config: SimConfig,
}

impl Firmware {
    /// Builds the firmware and its rig. `config` must have passed `validate()`.
    pub fn new(config: &SimConfig) -> Result<Self, SimError> {
        let rig = Rig::new(config)?;
        let descriptors = rig.sensors().descriptors();
        let manifest = Manifest::new(
            &config.firmware_version,
            config.sample_rate_mhz(),
            FLOORS as u8,
            config.actuator_floor,
            config.actuator_max_force_n,
            &descriptors,
        )?;
        Ok(Self {
            rig,
            manifest,
            samples_per_frame: config.samples_per_frame,
            max_samples: config.max_samples,
            watchdog_timeout: Duration::from_millis(config.watchdog_timeout_ms),
            max_force_n: config.actuator_max_force_n,
            has_actuator: config.actuator_floor != 0,
            next_sample_index: 0,
            streaming: false,
            actuator: Actuator {
                seq: 0,
                enabled: false,
                demand_n: 0.0,
                applied_at: 0,
                origin_sample_index: u64::MAX,
            },
            last_contact: Duration::ZERO,
            latest: Measurement {
                raw: [0; CHANNEL_COUNT],
                value_si: [0.0; CHANNEL_COUNT],
            },
            shaker: excitation_shaker(&config.excitation),
            config: config.clone(),
        })
    }

    /// What the firmware says about itself.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// True once a Hello has arrived.
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// True while `next_samples()` would produce a frame.
    pub fn can_stream(&self) -> bool {
        self.streaming && self.remaining_samples() > 0
    }

    /// True once `max_samples` samples have been taken.
    pub fn max_samples_reached(&self) -> bool {
        self.max_samples
            .is_some_and(|max| self.next_sample_index >= max)
    }

    /// Schedules a storey change while running (the run-time command; see
    /// [`Rig::schedule`]): it begins at its `at_s`, or at the next sample if that is later.
    ///
    /// # Errors
    /// Every problem with `change`.
    pub fn schedule_damage(
        &mut self,
        change: crate::config::DamageConfig,
    ) -> Result<crate::config::DamageConfig, Vec<String>> {
        self.rig.schedule(change)
    }

    /// The simulated rig.
    pub fn rig(&self) -> &Rig {
        &self.rig
    }

    /// Index of the next sample the ADC will take.
    pub fn next_sample_index(&self) -> u64 {
        self.next_sample_index
    }

    /// Force the actuator applies to the next sample, N.
    pub fn applied_force_n(&self) -> f32 {
        if self.actuator.enabled {
            self.actuator
                .demand_n
                .clamp(-self.max_force_n, self.max_force_n)
        } else {
            0.0
        }
    }

    fn remaining_samples(&self) -> u64 {
        self.max_samples
            .map_or(u64::MAX, |max| max.saturating_sub(self.next_sample_index))
    }

    /// Reacts to a valid frame from the edge, appending replies to `out`.
    pub fn handle_frame(&mut self, frame: Frame, now: Duration, out: &mut Vec<Frame>) {
        match frame {
            Frame::Hello => {
                self.streaming = true;
                out.push(Frame::Manifest(self.manifest));
            }
            Frame::Heartbeat(_) => self.last_contact = now,
            Frame::ActuatorCommand(command) => {
                self.last_contact = now;
                self.actuator.seq = command.seq;
                if command.enable && !self.has_actuator {
                    self.actuator.enabled = false;
                    self.actuator.applied_at = self.next_sample_index;
                    out.push(self.fault(fault_code::COMMAND_REJECTED));
                } else {
                    // The codec guarantees a finite force (PROTOCOL.md §4); clamping happens
                    // at application time so the demand survives a later limit check.
                    self.actuator.enabled = command.enable;
                    self.actuator.demand_n = if command.enable { command.force_n } else { 0.0 };
                    self.actuator.applied_at = self.next_sample_index;
                }
                out.push(self.status());
            }
            // Firmware → edge messages arriving here are a confused peer; PROTOCOL.md gives
            // them no meaning in this direction, so they are ignored.
            Frame::Manifest(_) | Frame::Samples(_) | Frame::ActuatorStatus(_) | Frame::Fault(_) => {
            }
        }
    }

    /// Serves a Modbus register request. Holding writes count as controller contact for the
    /// watchdog and, once streaming, are reported to the edge with an `ActuatorStatus`.
    pub fn handle_register_request(
        &mut self,
        request: RegisterRequest,
        now: Duration,
        out: &mut Vec<Frame>,
    ) -> Result<RegisterReply, ExceptionCode> {
        match request {
            RegisterRequest::ReadInput { address, quantity } => {
                let bank = registers::input_bank(&self.latest.value_si, self.next_sample_index);
                registers::read_range(&bank, address, quantity).map(RegisterReply::InputWords)
            }
            RegisterRequest::ReadHolding { address, quantity } => {
                registers::read_range(&self.holding_bank(), address, quantity)
                    .map(RegisterReply::HoldingWords)
            }
            RegisterRequest::WriteHolding {
                address,
                words,
                single,
            } => {
                let next = registers::write_range(&self.holding_bank(), address, &words)?;
                let enable = next[usize::from(HOLDING_ENABLE)] == 1;
                if enable && !self.has_actuator {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                if registers::writes_shaker(address, words.len()) {
                    let shaker = registers::shaker(&next);
                    let excitation = shaker_excitation(shaker, self.config.sample_rate_hz);
                    let check = SimConfig {
                        excitation: excitation.clone(),
                        ..self.config.clone()
                    };
                    if let Err(e) = check.validate() {
                        tracing::warn!(error = %e, "Refused shaker settings over Modbus.");
                        return Err(ExceptionCode::IllegalDataValue);
                    }
                    tracing::info!(?excitation, "Shaker settings changed over Modbus.");
                    self.rig.set_excitation(&excitation);
                    self.shaker = shaker;
                }
                self.last_contact = now;
                self.actuator.enabled = enable;
                self.actuator.demand_n =
                    registers::words_to_f32(registers::holding_force_words(&next));
                self.actuator.origin_sample_index = registers::holding_origin(&next);
                self.actuator.applied_at = self.next_sample_index;
                if self.streaming {
                    out.push(self.status());
                }
                Ok(if single {
                    RegisterReply::WroteSingle {
                        address,
                        value: words.first().copied().unwrap_or(0),
                    }
                } else {
                    // write_range refused more than 123 words, so this fits in u16.
                    RegisterReply::WroteMultiple {
                        address,
                        quantity: words.len() as u16,
                    }
                })
            }
        }
    }

    fn holding_bank(&self) -> [u16; HOLDING_COUNT] {
        let force = registers::f32_to_words(self.actuator.demand_n);
        let origin = registers::u64_to_words(self.actuator.origin_sample_index);
        let (waveform, [amplitude, f0, f1]) = self.shaker;
        let [a0, a1] = registers::f32_to_words(amplitude);
        let [b0, b1] = registers::f32_to_words(f0);
        let [c0, c1] = registers::f32_to_words(f1);
        [
            u16::from(self.actuator.enabled),
            force[0],
            force[1],
            origin[0],
            origin[1],
            origin[2],
            origin[3],
            waveform,
            a0,
            a1,
            b0,
            b1,
            c0,
            c1,
        ]
    }

    /// The sample the current drive was computed from, as the last holding write said
    /// (`u64::MAX` = none).
    pub fn actuator_origin(&self) -> u64 {
        self.actuator.origin_sample_index
    }

    /// When the watchdog expires, if it is armed (actuator enabled).
    pub fn watchdog_deadline(&self) -> Option<Duration> {
        self.actuator
            .enabled
            .then(|| self.last_contact + self.watchdog_timeout)
    }

    /// Puts the actuator in its safe state if the edge has been silent too long
    /// (PROTOCOL.md §7.4): ActuatorStatus first, then the Fault.
    pub fn check_watchdog(&mut self, now: Duration, out: &mut Vec<Frame>) -> bool {
        match self.watchdog_deadline() {
            Some(deadline) if now >= deadline => {
                self.actuator.enabled = false;
                self.actuator.demand_n = 0.0;
                self.actuator.applied_at = self.next_sample_index;
                out.push(self.status());
                out.push(self.fault(fault_code::ACTUATOR_WATCHDOG));
                true
            }
            _ => false,
        }
    }

    /// The periodic heartbeat (PROTOCOL.md §4.6).
    pub fn heartbeat(&self, now: Duration) -> Frame {
        Frame::Heartbeat(Heartbeat {
            // Uptime wraps by design (PROTOCOL.md §4.6).
            uptime_ms: now.as_millis() as u32,
            sample_index: self.next_sample_index,
        })
    }

    /// A SAMPLES_DROPPED fault for a run of lost frames starting at `first_lost`.
    pub fn samples_dropped_fault(first_lost: u64) -> Frame {
        Frame::Fault(Fault {
            code: fault_code::SAMPLES_DROPPED,
            sample_index: first_lost,
        })
    }

    /// Takes the next frame's worth of samples, or None when not streaming or `max_samples`
    /// is reached. The last frame before `max_samples` may be short.
    pub fn next_samples(&mut self) -> Option<Samples> {
        if !self.can_stream() {
            return None;
        }
        let count = u64::from(self.samples_per_frame).min(self.remaining_samples());
        let first_sample_index = self.next_sample_index;
        // count <= samples_per_frame, a u16.
        let mut raw = Vec::with_capacity(count as usize * CHANNEL_COUNT);
        for _ in 0..count {
            let measurement = self.rig.step(f64::from(self.applied_force_n()));
            raw.extend_from_slice(&measurement.raw);
            self.latest = measurement;
            self.next_sample_index += 1;
        }
        Some(Samples {
            first_sample_index,
            channel_count: CHANNEL_COUNT as u8,
            raw,
        })
    }

    fn status(&self) -> Frame {
        Frame::ActuatorStatus(ActuatorStatus {
            seq: self.actuator.seq,
            enabled: self.actuator.enabled,
            force_n: self.applied_force_n(),
            applied_at_sample_index: self.actuator.applied_at,
        })
    }

    fn fault(&self, code: u16) -> Frame {
        Frame::Fault(Fault {
            code,
            sample_index: self.next_sample_index,
        })
    }
}

/// The excitation the shaker registers describe (MODBUS.md): noise uses the frequencies as
/// its band (an end frequency of 0 means 0.45 × the sample rate), a chirp sweeps for 10 s.
fn shaker_excitation(
    (waveform, [amplitude, f0, f1]): (u16, [f32; 3]),
    sample_rate_hz: f64,
) -> ExcitationConfig {
    let (amplitude, f0, f1) = (f64::from(amplitude), f64::from(f0), f64::from(f1));
    match waveform {
        registers::SHAKER_NOISE => ExcitationConfig::Noise {
            rms: amplitude,
            low_hz: f0,
            high_hz: if f1 > 0.0 { f1 } else { 0.45 * sample_rate_hz },
        },
        registers::SHAKER_SINE => ExcitationConfig::Sine {
            amplitude,
            frequency_hz: f0,
        },
        registers::SHAKER_CHIRP => ExcitationConfig::Chirp {
            amplitude,
            f0_hz: f0,
            f1_hz: f1,
            period_s: SHAKER_CHIRP_PERIOD_S,
        },
        _ => ExcitationConfig::None,
    }
}

/// Duration of one sweep of a chirp started over Modbus, s.
const SHAKER_CHIRP_PERIOD_S: f64 = 10.0;

/// The shaker registers that describe `excitation`, for reads before any write.
fn excitation_shaker(excitation: &ExcitationConfig) -> (u16, [f32; 3]) {
    match *excitation {
        ExcitationConfig::None => (registers::SHAKER_OFF, [0.0; 3]),
        ExcitationConfig::Noise {
            rms,
            low_hz,
            high_hz,
        } => (
            registers::SHAKER_NOISE,
            [rms as f32, low_hz as f32, high_hz as f32],
        ),
        ExcitationConfig::Sine {
            amplitude,
            frequency_hz,
        } => (
            registers::SHAKER_SINE,
            [amplitude as f32, frequency_hz as f32, 0.0],
        ),
        ExcitationConfig::Chirp {
            amplitude,
            f0_hz,
            f1_hz,
            ..
        } => (
            registers::SHAKER_CHIRP,
            [amplitude as f32, f0_hz as f32, f1_hz as f32],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExcitationConfig;
    use dtop_firmware::ActuatorCommand;

    const MS: Duration = Duration::from_millis(1);

    fn firmware(config: SimConfig) -> Firmware {
        Firmware::new(&config).unwrap()
    }

    fn hello(fw: &mut Firmware) -> Vec<Frame> {
        let mut out = Vec::new();
        fw.handle_frame(Frame::Hello, Duration::ZERO, &mut out);
        out
    }

    fn command(seq: u16, enable: bool, force_n: f32) -> Frame {
        Frame::ActuatorCommand(ActuatorCommand {
            seq,
            enable,
            force_n,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        })
    }

    #[test]
    fn streams_nothing_before_hello() {
        let mut fw = firmware(SimConfig::default());
        assert!(fw.next_samples().is_none());
        assert_eq!(fw.next_sample_index(), 0);
    }

    #[test]
    fn answers_hello_with_the_manifest_and_then_streams_contiguous_frames() {
        let mut fw = firmware(SimConfig::default());
        let out = hello(&mut fw);
        let [Frame::Manifest(m)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(m.channels().len(), 4);
        assert_eq!(m.actuator_floor, 3);
        assert_eq!(m.sample_rate_mhz, 1_000_000);
        let a = fw.next_samples().unwrap();
        let b = fw.next_samples().unwrap();
        assert_eq!((a.first_sample_index, b.first_sample_index), (0, 10));
        assert_eq!(a.raw.len(), 40);
    }

    #[test]
    fn a_second_hello_resends_the_manifest_without_resetting_the_index() {
        let mut fw = firmware(SimConfig::default());
        hello(&mut fw);
        fw.next_samples().unwrap();
        let out = hello(&mut fw);
        assert!(matches!(out.as_slice(), [Frame::Manifest(_)]));
        assert_eq!(fw.next_samples().unwrap().first_sample_index, 10);
    }

    #[test]
    fn stops_at_max_samples_with_a_short_last_frame() {
        let mut fw = firmware(SimConfig {
            max_samples: Some(25),
            ..SimConfig::default()
        });
        hello(&mut fw);
        let counts: Vec<usize> = std::iter::from_fn(|| fw.next_samples())
            .map(|s| s.raw.len() / 4)
            .collect();
        assert_eq!(counts, [10, 10, 5]);
        assert!(fw.max_samples_reached());
        assert!(!fw.can_stream());
    }

    #[test]
    fn clamps_commands_and_echoes_seq() {
        let mut fw = firmware(SimConfig::default());
        hello(&mut fw);
        fw.next_samples();
        let mut out = Vec::new();
        fw.handle_frame(command(7, true, 1000.0), 5 * MS, &mut out);
        let [Frame::ActuatorStatus(s)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            (s.seq, s.enabled, s.force_n, s.applied_at_sample_index),
            (7, true, 20.0, 10)
        );
        out.clear();
        fw.handle_frame(command(8, true, -1000.0), 6 * MS, &mut out);
        assert_eq!(fw.applied_force_n(), -20.0);
        out.clear();
        fw.handle_frame(command(9, false, 5.0), 7 * MS, &mut out);
        let [Frame::ActuatorStatus(s)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((s.seq, s.enabled, s.force_n), (9, false, 0.0));
    }

    #[test]
    fn rejects_enable_without_an_actuator() {
        let mut fw = firmware(SimConfig {
            actuator_floor: 0,
            ..SimConfig::default()
        });
        let mut out = Vec::new();
        fw.handle_frame(command(3, true, 1.0), MS, &mut out);
        assert!(matches!(
            out.as_slice(),
            [Frame::Fault(Fault { code: fault_code::COMMAND_REJECTED, .. }), Frame::ActuatorStatus(s)]
                if !s.enabled && s.seq == 3
        ));
        assert_eq!(fw.applied_force_n(), 0.0);
    }

    #[test]
    fn watchdog_trips_after_silence_and_stays_safe() {
        let mut fw = firmware(SimConfig::default());
        hello(&mut fw);
        let mut out = Vec::new();
        fw.handle_frame(command(1, true, 5.0), 100 * MS, &mut out);
        assert_eq!(fw.watchdog_deadline(), Some(600 * MS));
        fw.handle_frame(
            Frame::Heartbeat(Heartbeat {
                uptime_ms: 0,
                sample_index: 0,
            }),
            400 * MS,
            &mut out,
        );
        assert_eq!(fw.watchdog_deadline(), Some(900 * MS));
        out.clear();
        assert!(!fw.check_watchdog(899 * MS, &mut out));
        assert!(out.is_empty());
        assert!(fw.check_watchdog(900 * MS, &mut out));
        assert!(matches!(
            out.as_slice(),
            [Frame::ActuatorStatus(s), Frame::Fault(Fault { code: fault_code::ACTUATOR_WATCHDOG, .. })]
                if !s.enabled && s.force_n == 0.0 && s.seq == 1
        ));
        assert_eq!(fw.applied_force_n(), 0.0);
        assert_eq!(fw.watchdog_deadline(), None);
        // A heartbeat alone never re-enables (§7.4).
        out.clear();
        fw.handle_frame(
            Frame::Heartbeat(Heartbeat {
                uptime_ms: 0,
                sample_index: 0,
            }),
            950 * MS,
            &mut out,
        );
        assert_eq!(fw.applied_force_n(), 0.0);
        assert!(out.is_empty());
    }

    #[test]
    fn watchdog_is_disarmed_while_the_actuator_is_off() {
        let mut fw = firmware(SimConfig::default());
        let mut out = Vec::new();
        assert!(!fw.check_watchdog(Duration::from_secs(100), &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn modbus_reads_latest_values_and_sample_count() {
        let mut fw = firmware(SimConfig {
            excitation: ExcitationConfig::Sine {
                amplitude: 4.0,
                frequency_hz: 10.0,
            },
            ..SimConfig::default()
        });
        hello(&mut fw);
        let samples = fw.next_samples().unwrap();
        let mut out = Vec::new();
        let reply = fw
            .handle_register_request(
                RegisterRequest::ReadInput {
                    address: 0,
                    quantity: 12,
                },
                MS,
                &mut out,
            )
            .unwrap();
        let RegisterReply::InputWords(words) = reply else {
            panic!("{reply:?}")
        };
        let force = registers::words_to_f32([words[6], words[7]]);
        let last_raw_force = samples.raw[9 * 4 + 3];
        let scale = fw.manifest().channels()[3].scale;
        assert!((f64::from(force) - f64::from(last_raw_force) * f64::from(scale)).abs() < 1e-4);
        assert_eq!(
            registers::words_to_u64([words[8], words[9], words[10], words[11]]),
            10
        );
    }

    #[test]
    fn modbus_writes_drive_the_actuator_and_report_status() {
        let mut fw = firmware(SimConfig::default());
        hello(&mut fw);
        let mut out = Vec::new();
        let force = registers::f32_to_words(7.5);
        let reply = fw.handle_register_request(
            RegisterRequest::WriteHolding {
                address: 0,
                words: vec![1, force[0], force[1]],
                single: false,
            },
            MS,
            &mut out,
        );
        assert_eq!(
            reply,
            Ok(RegisterReply::WroteMultiple {
                address: 0,
                quantity: 3
            })
        );
        assert_eq!(fw.applied_force_n(), 7.5);
        assert!(
            matches!(out.as_slice(), [Frame::ActuatorStatus(s)] if s.enabled && s.force_n == 7.5)
        );
        let read = fw.handle_register_request(
            RegisterRequest::ReadHolding {
                address: 0,
                quantity: 3,
            },
            MS,
            &mut out,
        );
        assert_eq!(
            read,
            Ok(RegisterReply::HoldingWords(vec![1, force[0], force[1]]))
        );
        let refused = fw.handle_register_request(
            RegisterRequest::WriteHolding {
                address: 0,
                words: vec![5],
                single: true,
            },
            MS,
            &mut out,
        );
        assert_eq!(refused, Err(ExceptionCode::IllegalDataValue));
        assert_eq!(fw.applied_force_n(), 7.5);
    }
}
