//! Owns the excitation signal generators: band-limited noise, sine and chirp, one value per
//! sample, deterministic for a seed. Pure: knows nothing about time, I/O or the structure.

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::ExcitationConfig;

/// ChaCha stream reserved for the excitation, so that changing the sensor noise never moves
/// the excitation sequence (and vice versa).
pub const EXCITATION_RNG_STREAM: u64 = 1;

/// Q factors of the two biquads of a 4th-order Butterworth filter: 1 / (2 cos(θ)),
/// θ = π/8 and 3π/8 (the pole angles).
const BUTTERWORTH4_Q: [f64; 2] = [0.541_196_100_146_197, 1.306_562_964_876_376_7];

/// Impulse-response energy below this fraction of the running total means the sum has
/// converged for noise normalisation.
const ENERGY_TOLERANCE: f64 = 1e-12;

/// Hard cap on the impulse-response length used for normalisation, samples. With the
/// config's smallest high-pass corner (0.1 Hz) and 100 kHz this is ~10 decay times.
const MAX_IMPULSE_SAMPLES: usize = 20_000_000;

/// A source of one excitation value per sample.
#[derive(Debug, Clone)]
pub struct Excitation {
    kind: Kind,
    sample_rate_hz: f64,
    /// Index of the next value; the signal is a function of this for sine and chirp.
    next_index: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    None,
    /// Boxed: the ChaCha state is large next to the other variants.
    Noise(Box<NoiseSource>),
    Sine {
        amplitude: f64,
        frequency_hz: f64,
    },
    Chirp {
        amplitude: f64,
        f0_hz: f64,
        f1_hz: f64,
        period_samples: u64,
    },
}

impl Excitation {
    /// Builds the generator. `config` must have passed `SimConfig::validate()`.
    pub fn new(config: &ExcitationConfig, sample_rate_hz: f64, seed: u64) -> Self {
        let kind = match *config {
            ExcitationConfig::None => Kind::None,
            ExcitationConfig::Noise {
                rms,
                low_hz,
                high_hz,
            } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(EXCITATION_RNG_STREAM);
                let filter = BiquadCascade::butterworth4_band(low_hz, high_hz, sample_rate_hz);
                let energy = filter.impulse_energy();
                let gain = if energy > 0.0 {
                    rms / energy.sqrt()
                } else {
                    0.0
                };
                Kind::Noise(Box::new(NoiseSource { rng, filter, gain }))
            }
            ExcitationConfig::Sine {
                amplitude,
                frequency_hz,
            } => Kind::Sine {
                amplitude,
                frequency_hz,
            },
            ExcitationConfig::Chirp {
                amplitude,
                f0_hz,
                f1_hz,
                period_s,
            } => Kind::Chirp {
                amplitude,
                f0_hz,
                f1_hz,
                // validate() guarantees at least one sample per period.
                period_samples: ((period_s * sample_rate_hz).round() as u64).max(1),
            },
        };
        Self {
            kind,
            sample_rate_hz,
            next_index: 0,
        }
    }

    /// The value for the next sample.
    pub fn next_value(&mut self) -> f64 {
        let n = self.next_index;
        self.next_index += 1;
        let fs = self.sample_rate_hz;
        match &mut self.kind {
            Kind::None => 0.0,
            Kind::Noise(noise) => {
                let white: f64 = noise.rng.sample(StandardNormal);
                noise.gain * noise.filter.process(white)
            }
            Kind::Sine {
                amplitude,
                frequency_hz,
            } => sine_value(*amplitude, *frequency_hz, fs, n),
            Kind::Chirp {
                amplitude,
                f0_hz,
                f1_hz,
                period_samples,
            } => {
                let t_s = (n % *period_samples) as f64 / fs;
                let period_s = *period_samples as f64 / fs;
                let phase =
                    2.0 * PI * (*f0_hz * t_s + (*f1_hz - *f0_hz) * t_s * t_s / (2.0 * period_s));
                *amplitude * phase.sin()
            }
        }
    }
}

/// White Gaussian noise shaped by a filter and scaled to the requested RMS.
#[derive(Debug, Clone)]
struct NoiseSource {
    rng: ChaCha8Rng,
    filter: BiquadCascade,
    /// requested RMS / sqrt(Σ h²), so the filtered output has the requested RMS.
    gain: f64,
}

/// `amplitude · sin(2π f n / fs)`. Public so tests (and users) can compute expected values.
pub fn sine_value(amplitude: f64, frequency_hz: f64, sample_rate_hz: f64, n: u64) -> f64 {
    amplitude * (2.0 * PI * frequency_hz * n as f64 / sample_rate_hz).sin()
}

/// Cascade of direct-form-I biquads, normalised so a0 = 1.
#[derive(Debug, Clone)]
struct BiquadCascade {
    sections: Vec<Biquad>,
}

#[derive(Debug, Clone, Copy)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    /// RBJ audio-EQ-cookbook low/high-pass: with Butterworth Qs the cascade is the bilinear
    /// transform of a Butterworth filter pre-warped at `corner_hz`.
    fn rbj(corner_hz: f64, q: f64, sample_rate_hz: f64, high_pass: bool) -> Self {
        let w0 = 2.0 * PI * corner_hz / sample_rate_hz;
        let (sin_w0, cos_w0) = w0.sin_cos();
        let alpha = sin_w0 / (2.0 * q);
        let a0 = 1.0 + alpha;
        let b = if high_pass {
            [(1.0 + cos_w0) / 2.0, -(1.0 + cos_w0), (1.0 + cos_w0) / 2.0]
        } else {
            [(1.0 - cos_w0) / 2.0, 1.0 - cos_w0, (1.0 - cos_w0) / 2.0]
        };
        Self {
            b: [b[0] / a0, b[1] / a0, b[2] / a0],
            a: [-2.0 * cos_w0 / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn process(&mut self, x0: f64) -> f64 {
        let y0 = self.b[0] * x0 + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [x0, self.x[0]];
        self.y = [y0, self.y[0]];
        y0
    }
}

impl BiquadCascade {
    /// 4th-order Butterworth low-pass at `high_hz`, plus a 4th-order high-pass at `low_hz`
    /// when `low_hz > 0`.
    fn butterworth4_band(low_hz: f64, high_hz: f64, sample_rate_hz: f64) -> Self {
        let mut sections: Vec<Biquad> = BUTTERWORTH4_Q
            .iter()
            .map(|&q| Biquad::rbj(high_hz, q, sample_rate_hz, false))
            .collect();
        if low_hz > 0.0 {
            sections.extend(
                BUTTERWORTH4_Q
                    .iter()
                    .map(|&q| Biquad::rbj(low_hz, q, sample_rate_hz, true)),
            );
        }
        Self { sections }
    }

    fn process(&mut self, x: f64) -> f64 {
        self.sections.iter_mut().fold(x, |v, s| s.process(v))
    }

    /// Σ h[n]²: the output variance for unit-variance white input.
    fn impulse_energy(&self) -> f64 {
        let mut probe = self.clone();
        let mut energy = 0.0;
        let mut quiet_run = 0usize;
        for n in 0..MAX_IMPULSE_SAMPLES {
            let h = probe.process(if n == 0 { 1.0 } else { 0.0 });
            let e = h * h;
            energy += e;
            // Butterworth responses ring through zero, so one small value proves nothing;
            // a long run of negligible ones does.
            if e <= ENERGY_TOLERANCE * energy {
                quiet_run += 1;
                if quiet_run > 10_000 {
                    break;
                }
            } else {
                quiet_run = 0;
            }
        }
        energy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(excitation: &mut Excitation, n: usize) -> Vec<f64> {
        (0..n).map(|_| excitation.next_value()).collect()
    }

    fn rms(values: &[f64]) -> f64 {
        (values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64).sqrt()
    }

    #[test]
    fn same_seed_gives_identical_noise() {
        let config = ExcitationConfig::default();
        let a = take(&mut Excitation::new(&config, 1000.0, 7), 5000);
        let b = take(&mut Excitation::new(&config, 1000.0, 7), 5000);
        assert_eq!(a, b);
        let c = take(&mut Excitation::new(&config, 1000.0, 8), 5000);
        assert_ne!(a, c);
    }

    #[test]
    fn band_limited_noise_has_the_requested_rms() {
        // 400 s at 1 kHz: the RMS estimate of noise with ~100 Hz of bandwidth has a relative
        // standard error of about 1/sqrt(2·B·T) ≈ 0.25 %, so 3 % is a generous bound.
        let config = ExcitationConfig::Noise {
            rms: 5.0,
            low_hz: 0.0,
            high_hz: 50.0,
        };
        let values = take(&mut Excitation::new(&config, 1000.0, 1), 400_000);
        let measured = rms(&values);
        assert!((measured - 5.0).abs() < 0.15, "rms = {measured}");
    }

    #[test]
    fn band_pass_noise_has_the_requested_rms_and_no_dc() {
        let config = ExcitationConfig::Noise {
            rms: 2.0,
            low_hz: 5.0,
            high_hz: 40.0,
        };
        let values = take(&mut Excitation::new(&config, 1000.0, 3), 400_000);
        let measured = rms(&values);
        assert!((measured - 2.0).abs() < 0.06, "rms = {measured}");
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.01, "mean = {mean}");
    }

    #[test]
    fn low_pass_noise_loses_power_above_the_corner() {
        // Lag-1 correlation of noise band-limited to 50 Hz at 1 kHz is close to 1; of white
        // noise it is close to 0. This catches a filter that does nothing.
        let config = ExcitationConfig::Noise {
            rms: 1.0,
            low_hz: 0.0,
            high_hz: 50.0,
        };
        let v = take(&mut Excitation::new(&config, 1000.0, 1), 100_000);
        let lag1: f64 =
            v.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / v.iter().map(|x| x * x).sum::<f64>();
        assert!(lag1 > 0.9, "lag-1 correlation {lag1}");
    }

    #[test]
    fn sine_values_are_exact() {
        let config = ExcitationConfig::Sine {
            amplitude: 3.0,
            frequency_hz: 12.5,
        };
        let values = take(&mut Excitation::new(&config, 1000.0, 1), 100);
        for (n, v) in values.iter().enumerate() {
            let expected = 3.0 * (2.0 * PI * 12.5 * n as f64 / 1000.0).sin();
            assert_eq!(*v, expected, "sample {n}");
        }
        // 12.5 Hz at 1 kHz: a quarter period is 20 samples.
        assert_eq!(values[0], 0.0);
        assert!((values[20] - 3.0).abs() < 1e-12);
        assert!((values[60] + 3.0).abs() < 1e-12);
    }

    #[test]
    fn chirp_repeats_each_period_and_starts_at_f0() {
        let config = ExcitationConfig::Chirp {
            amplitude: 1.0,
            f0_hz: 10.0,
            f1_hz: 100.0,
            period_s: 0.5,
        };
        let values = take(&mut Excitation::new(&config, 1000.0, 1), 1500);
        assert_eq!(values[0..500], values[500..1000]);
        assert_eq!(values[0..500], values[1000..1500]);
        // At the start the instantaneous frequency is f0: the first samples follow a 10 Hz sine
        // to within the tiny sweep term (90 Hz/s · t² / 2 rad·2π at t ≤ 3 ms).
        for (n, v) in values.iter().enumerate().take(4) {
            let expected = sine_value(1.0, 10.0, 1000.0, n as u64);
            assert!((v - expected).abs() < 1e-2, "sample {n}: {v} vs {expected}");
        }
        assert!(values.iter().all(|v| v.abs() <= 1.0));
    }

    #[test]
    fn no_excitation_is_zero() {
        let values = take(&mut Excitation::new(&ExcitationConfig::None, 1000.0, 1), 10);
        assert!(values.iter().all(|v| *v == 0.0));
    }
}
