//! Owns enhanced FDD (EFDD; Brincker, Ventura & Andersen 2001): the damping and frequency of
//! one FDD peak from the free decay hidden in its spectral bell. Takes the first singular
//! value and vectors that `fdd.rs` computed; knows nothing of peak picking.
//!
//! The bell is the run of lines around the peak whose first singular vector has a MAC of at
//! least `bell_min_mac` with the peak's. Its first singular value, zero elsewhere, is taken
//! back to the lag domain by an inverse FFT: the auto-correlation of the mode's SDOF response,
//! a decaying cosine. Welch's estimate multiplies every correlation by the Hann window's own
//! normalised auto-correlation c_w(τ) (the expected periodogram is the transform of R(τ)·c_w(τ)),
//! which would add decay of its own; we divide it back out, and only use lags where
//! c_w(τ) ≥ 0.2. From the normalised correlation, the extrema between `max_correlation` and
//! `min_correlation` give the logarithmic decrement δ (a straight-line fit of ln|ρ| against
//! half-cycles), ζ = δ/√(4π² + δ²), and the zero crossings in the same span give the damped
//! frequency f_d; the natural frequency is f_d/√(1 − ζ²).

use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};
use std::f64::consts::{PI, TAU};

use crate::pole::{C64, complex_mac};

/// Smallest value of the window's normalised auto-correlation at a lag used in the fit: below
/// it, dividing by c_w amplifies the estimate's noise more than it removes bias.
const MIN_WINDOW_CORRELATION: f64 = 0.2;

/// Default smallest MAC between a line's first singular vector and the peak's for the line
/// to belong to the bell (Brincker et al. use 0.8).
pub const fn default_bell_min_mac() -> f64 {
    0.8
}
/// Default largest normalised correlation used in the fit: the first extrema are shaped by
/// the bell's edges, so they are skipped.
pub const fn default_max_correlation() -> f64 {
    0.9
}
/// Default smallest normalised correlation used in the fit: below it the estimate's noise
/// dominates the decay.
pub const fn default_min_correlation() -> f64 {
    0.3
}

/// Settings of the EFDD damping estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfddParams {
    /// Smallest MAC with the peak's singular vector for a line to join the bell; in (0, 1].
    #[serde(default = "default_bell_min_mac")]
    pub bell_min_mac: f64,
    /// Largest |normalised correlation| of an extremum used in the fit; in (0, 1].
    #[serde(default = "default_max_correlation")]
    pub max_correlation: f64,
    /// Smallest |normalised correlation| of an extremum used in the fit; in (0, max).
    #[serde(default = "default_min_correlation")]
    pub min_correlation: f64,
}

impl Default for EfddParams {
    fn default() -> Self {
        Self {
            bell_min_mac: default_bell_min_mac(),
            max_correlation: default_max_correlation(),
            min_correlation: default_min_correlation(),
        }
    }
}

impl EfddParams {
    /// Every rule these settings break, each field named under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let m = self.bell_min_mac;
        if !(m > 0.0 && m <= 1.0) {
            problems.push(format!("{prefix}bell_min_mac = {m} must be in (0, 1]"));
        }
        let (hi, lo) = (self.max_correlation, self.min_correlation);
        if !(hi > 0.0 && hi <= 1.0) {
            problems.push(format!("{prefix}max_correlation = {hi} must be in (0, 1]"));
        }
        if !(lo > 0.0 && lo < hi) {
            problems.push(format!(
                "{prefix}min_correlation = {lo} must be positive and below max_correlation"
            ));
        }
        problems
    }
}

/// The EFDD estimate of one peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfddEstimate {
    /// Natural frequency f_d/√(1 − ζ²), Hz.
    pub frequency_hz: f64,
    /// Damping ratio from the logarithmic decrement, fraction of critical.
    pub damping_ratio: f64,
    /// First and last line of the bell.
    pub bell_lines: (usize, usize),
    /// Extrema of the correlation used in the fit.
    pub extrema_used: usize,
}

/// The EFDD estimate of the peak at `peak_line`, from the first singular value `s1` and
/// vectors `vectors` of every line (0 Hz to Nyquist) of a Welch estimate with a Hann window of
/// `segment_samples` samples at `sample_rate_hz`. `None` when the correlation does not hold
/// at least three usable extrema (a bell too narrow, or too few cycles between the bounds).
pub fn efdd_estimate(
    s1: &[f64],
    vectors: &[Vec<C64>],
    peak_line: usize,
    segment_samples: usize,
    sample_rate_hz: f64,
    params: &EfddParams,
) -> Option<EfddEstimate> {
    let n = segment_samples;
    let lines = s1.len();
    if peak_line == 0 || peak_line >= lines || vectors.len() != lines || lines != n / 2 + 1 {
        return None;
    }
    let in_bell = |line: usize| {
        complex_mac(&vectors[line], &vectors[peak_line]).is_some_and(|m| m >= params.bell_min_mac)
    };
    let mut lo = peak_line;
    while lo > 1 && in_bell(lo - 1) {
        lo -= 1;
    }
    let mut hi = peak_line;
    while hi + 1 < lines && in_bell(hi + 1) {
        hi += 1;
    }
    let mut spectrum = vec![C64::new(0.0, 0.0); n];
    for line in lo..=hi {
        spectrum[line] = C64::new(s1[line], 0.0);
        if line != n - line {
            spectrum[n - line] = C64::new(s1[line], 0.0);
        }
    }
    FftPlanner::<f64>::new()
        .plan_fft_inverse(n)
        .process(&mut spectrum);
    let window: Vec<f64> = (0..n)
        .map(|k| 0.5 - 0.5 * (TAU * k as f64 / n as f64).cos())
        .collect();
    let power: f64 = window.iter().map(|w| w * w).sum();
    let window_correlation = |lag: usize| -> f64 {
        window
            .iter()
            .zip(&window[lag..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / power
    };
    let r0 = spectrum[0].re;
    if r0.is_nan() || r0 <= 0.0 {
        return None;
    }
    let mut rho = Vec::new();
    for (lag, value) in spectrum.iter().enumerate().take(n / 2) {
        let c = window_correlation(lag);
        if c < MIN_WINDOW_CORRELATION {
            break;
        }
        rho.push(value.re / r0 / c);
    }
    fit_decay(&rho, sample_rate_hz, params).map(|(frequency_hz, damping_ratio, extrema_used)| {
        EfddEstimate {
            frequency_hz,
            damping_ratio,
            bell_lines: (lo, hi),
            extrema_used,
        }
    })
}

/// (natural frequency, damping ratio, extrema used) of a decaying cosine ρ sampled at
/// `sample_rate_hz`, ρ(0) = 1.
fn fit_decay(rho: &[f64], sample_rate_hz: f64, params: &EfddParams) -> Option<(f64, f64, usize)> {
    // Zero crossings by linear interpolation, in samples.
    let crossings: Vec<f64> = rho
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] != 0.0 && (w[0] > 0.0) != (w[1] > 0.0))
        .map(|(k, w)| k as f64 + w[0] / (w[0] - w[1]))
        .collect();
    // One extremum between each pair of crossings: half-cycle j has index j + 1.
    let mut extrema = Vec::new();
    for (j, pair) in crossings.windows(2).enumerate() {
        let (a, b) = (pair[0].ceil() as usize, pair[1].floor() as usize);
        let peak = rho.get(a..=b)?.iter().map(|x| x.abs()).fold(0.0, f64::max);
        if peak < params.min_correlation {
            break;
        }
        if peak <= params.max_correlation {
            extrema.push(((j + 1) as f64, peak.ln(), pair[0], pair[1]));
        }
    }
    if extrema.len() < 3 {
        return None;
    }
    let half_cycles: Vec<f64> = extrema.iter().map(|e| e.0).collect();
    let logs: Vec<f64> = extrema.iter().map(|e| e.1).collect();
    let slope = line_slope(&half_cycles, &logs)?;
    let delta = -2.0 * slope;
    let zeta = delta / (4.0 * PI * PI + delta * delta).sqrt();
    // Crossing j sits at t₀ + j·T_d/2: fit the crossings of the half-cycles used.
    let first = extrema.first()?.2;
    let last = extrema.last()?.3;
    let (index, times): (Vec<f64>, Vec<f64>) = crossings
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t >= first && t <= last)
        .map(|(j, &t)| (j as f64, t / sample_rate_hz))
        .unzip();
    let half_period_s = line_slope(&index, &times)?;
    let damped_hz = 0.5 / half_period_s;
    let natural_hz = damped_hz / (1.0 - zeta * zeta).sqrt();
    (zeta.is_finite() && natural_hz.is_finite() && zeta > 0.0).then_some((
        natural_hz,
        zeta,
        extrema.len(),
    ))
}

/// Least-squares slope of y against x; `None` for fewer than two distinct x.
fn line_slope(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampled_decaying_cosine_gives_back_its_frequency_and_damping() {
        // ρ(τ) = e^{−ζωτ}·cos(ω_d·τ): the extrema of |ρ| fall near (not exactly at) the
        // cosine's, so the decrement is exact only between extrema at equal phase offsets,
        // which they are for a pure exponential; sampling at 1 kHz moves each extremum by at
        // most half a sample (0.1 % of a 5 Hz half-period).
        let (fs, f, zeta) = (1000.0, 5.0_f64, 0.01_f64);
        let w = TAU * f;
        let wd = w * (1.0 - zeta * zeta).sqrt();
        let rho: Vec<f64> = (0..4000)
            .map(|k| {
                let t = k as f64 / fs;
                (-zeta * w * t).exp() * (wd * t).cos()
            })
            .collect();
        let (fn_hz, z, used) = fit_decay(&rho, fs, &EfddParams::default()).expect("fits");
        assert!((fn_hz / f - 1.0).abs() < 1e-4, "{fn_hz}");
        assert!((z / zeta - 1.0).abs() < 0.01, "{z}");
        // |ρ| from 0.9 down to 0.3: ln 3 / (ζ·ω·T_d/2) ≈ 35 half-cycles.
        assert!((33..=37).contains(&used), "{used}");
    }

    #[test]
    fn too_few_cycles_give_no_estimate() {
        let fs = 100.0;
        let rho: Vec<f64> = (0..100)
            .map(|k| {
                let t = k as f64 / fs;
                (-20.0 * t).exp() * (TAU * 3.0 * t).cos()
            })
            .collect();
        assert!(fit_decay(&rho, fs, &EfddParams::default()).is_none());
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let bad = EfddParams {
            bell_min_mac: 0.0,
            max_correlation: 1.5,
            min_correlation: 2.0,
        };
        assert_eq!(bad.problems("efdd.").len(), 3);
    }
}
