//! Owns the sensor chain: transducer sensitivity, additive Gaussian noise and the 24-bit ADC,
//! plus the channel table the manifest advertises. Pure: physical values in, raw counts out.

use dtop_firmware::{ChannelDesc, ChannelKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::ExcitationTarget;

/// Accelerometer sensitivity, V per m/s² (10.2 mV/(m/s²), a typical ICP accelerometer).
pub const ACCEL_SENSITIVITY_V_PER_M_S2: f64 = 0.0102;
/// Force gauge sensitivity, V per N (11.2 mV/N).
pub const FORCE_SENSITIVITY_V_PER_N: f64 = 0.0112;

/// ADC input span is ±10 V.
pub const ADC_FULL_SCALE_V: f64 = 10.0;
/// ADC resolution, bits.
pub const ADC_BITS: u32 = 24;
/// One ADC count, V: 20 V / 2²⁴.
pub const ADC_LSB_V: f64 = 2.0 * ADC_FULL_SCALE_V / (1u64 << ADC_BITS) as f64;
/// Smallest raw count (−2²³).
pub const RAW_MIN: i32 = -(1 << (ADC_BITS - 1));
/// Largest raw count (2²³ − 1).
pub const RAW_MAX: i32 = (1 << (ADC_BITS - 1)) - 1;

pub use crate::config::CHANNEL_COUNT;

/// ChaCha stream reserved for sensor noise (see `excitation::EXCITATION_RNG_STREAM`).
pub const SENSOR_NOISE_RNG_STREAM: u64 = 2;

/// Converts a transducer voltage to ADC counts: rounded to the nearest count and clamped to
/// the 24-bit range, as a saturating ADC does. NaN reads as 0.
pub fn quantise_v(volts: f64) -> i32 {
    let counts = (volts / ADC_LSB_V).round();
    if counts.is_nan() {
        0
    } else {
        // Clamped to the i24 range first, so the cast cannot truncate.
        counts.clamp(f64::from(RAW_MIN), f64::from(RAW_MAX)) as i32
    }
}

/// One transducer + ADC channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorChannel {
    /// Transducer output per SI unit, V/unit.
    pub sensitivity_v_per_unit: f64,
    /// Noise at the ADC input, RMS, V.
    pub noise_rms_v: f64,
    /// What the manifest says about this channel.
    pub desc: ChannelDesc,
}

impl SensorChannel {
    fn new(id: u8, kind: ChannelKind, floor: u8, sensitivity: f64, noise_rms_si: f64) -> Self {
        Self {
            sensitivity_v_per_unit: sensitivity,
            noise_rms_v: noise_rms_si * sensitivity,
            desc: ChannelDesc {
                id,
                kind,
                floor,
                scale: (ADC_LSB_V / sensitivity) as f32,
            },
        }
    }

    /// SI units per count.
    pub fn scale(&self) -> f64 {
        ADC_LSB_V / self.sensitivity_v_per_unit
    }

    /// Raw count for a physical value and a noise voltage.
    pub fn raw(&self, value_si: f64, noise_v: f64) -> i32 {
        quantise_v(value_si * self.sensitivity_v_per_unit + noise_v)
    }
}

/// The rig's four sensor channels and their noise source.
#[derive(Debug, Clone)]
pub struct SensorBank {
    channels: [SensorChannel; CHANNEL_COUNT],
    rng: ChaCha8Rng,
}

impl SensorBank {
    /// Channels 0..=2 are the floor 1..3 accelerometers; channel 3 is the force gauge on
    /// floor 1, or a base accelerometer (floor 0) when the excitation is ground acceleration.
    pub fn new(
        target: ExcitationTarget,
        accel_noise_rms_m_s2: f64,
        force_noise_rms_n: f64,
        seed: u64,
    ) -> Self {
        let accel = |id: u8, floor: u8| {
            SensorChannel::new(
                id,
                ChannelKind::Acceleration,
                floor,
                ACCEL_SENSITIVITY_V_PER_M_S2,
                accel_noise_rms_m_s2,
            )
        };
        let excitation_channel = match target {
            ExcitationTarget::Floor1Force => SensorChannel::new(
                3,
                ChannelKind::Force,
                1,
                FORCE_SENSITIVITY_V_PER_N,
                force_noise_rms_n,
            ),
            ExcitationTarget::GroundAccel => accel(3, 0),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(SENSOR_NOISE_RNG_STREAM);
        Self {
            channels: [accel(0, 1), accel(1, 2), accel(2, 3), excitation_channel],
            rng,
        }
    }

    /// The channel table, in stream order.
    pub fn channels(&self) -> &[SensorChannel; CHANNEL_COUNT] {
        &self.channels
    }

    /// Manifest descriptors, in stream order.
    pub fn descriptors(&self) -> [ChannelDesc; CHANNEL_COUNT] {
        self.channels.map(|c| c.desc)
    }

    /// Measures one sample of physical values, drawing one noise value per channel in
    /// channel order (the draw order is part of the determinism contract).
    pub fn measure(&mut self, values_si: &[f64; CHANNEL_COUNT]) -> [i32; CHANNEL_COUNT] {
        let mut raw = [0; CHANNEL_COUNT];
        for (c, channel) in self.channels.iter().enumerate() {
            let unit: f64 = self.rng.sample(StandardNormal);
            raw[c] = channel.raw(values_si[c], unit * channel.noise_rms_v);
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsb_is_twenty_volts_over_two_to_the_twenty_four() {
        assert_eq!(ADC_LSB_V, 20.0 / 16_777_216.0);
        assert_eq!(RAW_MIN, -8_388_608);
        assert_eq!(RAW_MAX, 8_388_607);
    }

    #[test]
    fn quantisation_round_trips_within_half_a_count() {
        let bank = SensorBank::new(ExcitationTarget::Floor1Force, 0.0, 0.0, 1);
        for channel in bank.channels() {
            let scale = channel.scale();
            for value in [-123.456, -1.0, -1e-4, 0.0, 3e-5, 0.5, 7.25, 400.0] {
                let raw = channel.raw(value, 0.0);
                let back = f64::from(raw) * scale;
                assert!(
                    (back - value).abs() <= 0.5 * scale * (1.0 + 1e-9),
                    "{value} -> {raw} -> {back}"
                );
            }
            // Values on the count grid come back exactly.
            for raw in [-1000, -1, 0, 1, 12_345] {
                assert_eq!(channel.raw(f64::from(raw) * scale, 0.0), raw);
            }
        }
    }

    #[test]
    fn quantisation_saturates_at_the_adc_range() {
        assert_eq!(quantise_v(11.0), RAW_MAX);
        assert_eq!(quantise_v(-11.0), RAW_MIN);
        assert_eq!(quantise_v(f64::INFINITY), RAW_MAX);
        assert_eq!(quantise_v(f64::NAN), 0);
        assert_eq!(quantise_v(ADC_LSB_V * 0.49), 0);
        assert_eq!(quantise_v(ADC_LSB_V * 0.51), 1);
    }

    #[test]
    fn manifest_scale_is_lsb_over_sensitivity() {
        let bank = SensorBank::new(ExcitationTarget::Floor1Force, 0.0, 0.0, 1);
        let d = bank.descriptors();
        assert_eq!(d.map(|c| c.id), [0, 1, 2, 3]);
        assert_eq!(d.map(|c| c.floor), [1, 2, 3, 1]);
        assert_eq!(d[3].kind, ChannelKind::Force);
        assert_eq!(d[0].scale, (ADC_LSB_V / 0.0102) as f32);
        assert_eq!(d[3].scale, (ADC_LSB_V / 0.0112) as f32);
        let ground = SensorBank::new(ExcitationTarget::GroundAccel, 0.0, 0.0, 1).descriptors();
        assert_eq!(
            (ground[3].kind, ground[3].floor),
            (ChannelKind::Acceleration, 0)
        );
    }

    #[test]
    fn noise_has_the_configured_rms_in_si_units() {
        // 100 000 draws: the RMS estimate's relative standard error is ~0.2 %; quantisation
        // adds LSB²/12, negligible against ~17 counts of noise.
        let mut bank = SensorBank::new(ExcitationTarget::Floor1Force, 0.002, 0.005, 9);
        let n = 100_000;
        let mut sum_sq = [0.0f64; CHANNEL_COUNT];
        for _ in 0..n {
            let raw = bank.measure(&[0.0; CHANNEL_COUNT]);
            for c in 0..CHANNEL_COUNT {
                let v = f64::from(raw[c]) * bank.channels()[c].scale();
                sum_sq[c] += v * v;
            }
        }
        let rms = sum_sq.map(|s| (s / f64::from(n)).sqrt());
        for (c, expected) in [0.002, 0.002, 0.002, 0.005].iter().enumerate() {
            assert!(
                (rms[c] - expected).abs() < 0.02 * expected,
                "channel {c}: {}",
                rms[c]
            );
        }
    }
}
