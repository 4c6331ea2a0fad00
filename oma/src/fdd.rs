//! Owns frequency-domain decomposition (FDD, Brincker et al. 2001): the Welch estimate of the
//! output cross-spectral density matrix, its singular values per frequency line, automatic
//! peak picking on the first singular value, and the first singular vector as the mode shape.
//! The cross-check of SSI; it gives no damping.

use nalgebra::{DMatrix, SVD};
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;

use crate::efdd::{EfddEstimate, EfddParams, efdd_estimate};
use crate::error::{OmaError, into_result};
use crate::pole::{C64, real_normalised, shape_quality};
use crate::record::record_problems;

/// Default Welch segment length, samples: 4096 (0.24 Hz lines at 1 kHz).
pub const fn default_segment_samples() -> usize {
    4096
}
/// Default overlap of consecutive segments: half a segment.
pub const fn default_overlap() -> f64 {
    0.5
}
/// Default smallest distance between two picked peaks, Hz.
pub const fn default_min_peak_separation_hz() -> f64 {
    1.0
}
/// Default smallest prominence of a picked peak, dB. A Welch average of K segments scatters
/// by about 1/√K per line, so estimation ripple makes small local peaks: up to 8 dB proud with
/// K = 6 (measured on Cristallo's 60 s noise record). 10 dB (a factor 10) keeps those out;
/// lightly damped modes stand 30–60 dB proud. With fewer averages, raise it.
pub const fn default_min_prominence_db() -> f64 {
    10.0
}
/// Default depth below the highest line of the band under which no peak is picked, dB:
/// 60 dB is a factor 1000 in amplitude, below any mode worth reporting and above rounding
/// and quantisation noise.
pub const fn default_dynamic_range_db() -> f64 {
    60.0
}

/// Parameters of a frequency-domain decomposition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FddParams {
    /// Welch segment length, samples; at least 16 and at most the record's length. The line
    /// spacing is sample_rate / segment_samples.
    #[serde(default = "default_segment_samples")]
    pub segment_samples: usize,
    /// Overlap of consecutive segments, fraction of a segment; in [0, 0.95].
    #[serde(default = "default_overlap")]
    pub overlap: f64,
    /// Lowest frequency searched for peaks, Hz; the 0 Hz line is never a peak.
    #[serde(default)]
    pub min_frequency_hz: f64,
    /// Highest frequency searched for peaks, Hz. Absent: the Nyquist frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frequency_hz: Option<f64>,
    /// Smallest distance between two picked peaks, Hz; at least zero.
    #[serde(default = "default_min_peak_separation_hz")]
    pub min_peak_separation_hz: f64,
    /// Smallest prominence of a picked peak above the higher of its two bases, dB; positive.
    #[serde(default = "default_min_prominence_db")]
    pub min_prominence_db: f64,
    /// Peaks lower than the band's highest line by more than this are not picked, dB;
    /// positive.
    #[serde(default = "default_dynamic_range_db")]
    pub dynamic_range_db: f64,
    /// Most peaks to pick, highest first. Absent: every peak that qualifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_peaks: Option<usize>,
    /// EFDD damping (and frequency) of every peak; absent: not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efdd: Option<EfddParams>,
}

impl Default for FddParams {
    fn default() -> Self {
        Self {
            segment_samples: default_segment_samples(),
            overlap: default_overlap(),
            min_frequency_hz: 0.0,
            max_frequency_hz: None,
            min_peak_separation_hz: default_min_peak_separation_hz(),
            min_prominence_db: default_min_prominence_db(),
            dynamic_range_db: default_dynamic_range_db(),
            max_peaks: None,
            efdd: None,
        }
    }
}

impl FddParams {
    /// Every rule these parameters break for a record of `samples` samples at
    /// `sample_rate_hz`.
    pub fn problems(&self, samples: usize, sample_rate_hz: f64) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.segment_samples;
        if n < 16 {
            problems.push(format!("segment_samples = {n} must be at least 16"));
        } else if samples > 0 && n > samples {
            problems.push(format!(
                "segment_samples = {n} is longer than the record ({samples} samples): give a \
                 longer record or shorter segments"
            ));
        }
        if !(0.0..=0.95).contains(&self.overlap) {
            problems.push(format!(
                "overlap = {} must be within [0, 0.95]",
                self.overlap
            ));
        }
        if !(self.min_frequency_hz.is_finite() && self.min_frequency_hz >= 0.0) {
            problems.push(format!(
                "min_frequency_hz = {} must be zero or positive and finite",
                self.min_frequency_hz
            ));
        }
        if let Some(max) = self.max_frequency_hz {
            let nyquist = 0.5 * sample_rate_hz;
            if !(max.is_finite() && max > self.min_frequency_hz) {
                problems.push(format!(
                    "max_frequency_hz = {max} must be finite and above min_frequency_hz = {}",
                    self.min_frequency_hz
                ));
            } else if nyquist.is_finite() && max > nyquist {
                problems.push(format!(
                    "max_frequency_hz = {max} is above the Nyquist frequency {nyquist} Hz"
                ));
            }
        }
        if !(self.min_peak_separation_hz.is_finite() && self.min_peak_separation_hz >= 0.0) {
            problems.push(format!(
                "min_peak_separation_hz = {} must be zero or positive and finite",
                self.min_peak_separation_hz
            ));
        }
        if !(self.min_prominence_db.is_finite() && self.min_prominence_db > 0.0) {
            problems.push(format!(
                "min_prominence_db = {} must be positive and finite",
                self.min_prominence_db
            ));
        }
        if !(self.dynamic_range_db.is_finite() && self.dynamic_range_db > 0.0) {
            problems.push(format!(
                "dynamic_range_db = {} must be positive and finite",
                self.dynamic_range_db
            ));
        }
        if self.max_peaks == Some(0) {
            problems.push("max_peaks = 0 picks nothing: leave it out or give at least 1".into());
        }
        if let Some(efdd) = &self.efdd {
            problems.extend(efdd.problems("efdd."));
        }
        problems
    }

    /// Samples between the starts of consecutive segments.
    fn hop(&self) -> usize {
        let overlap = (self.segment_samples as f64 * self.overlap).floor() as usize;
        (self.segment_samples - overlap.min(self.segment_samples - 1)).max(1)
    }
}

/// One peak of the first singular value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FddPeak {
    /// Frequency of the peak's line, Hz (no interpolation: within half a line of the true
    /// maximum of the estimate).
    pub frequency_hz: f64,
    /// Index of the line in the spectra.
    pub line: usize,
    /// First singular value at the line, (channel unit)²/Hz.
    pub singular_value: f64,
    /// Height above the higher of the peak's two bases, dB.
    pub prominence_db: f64,
    /// First singular vector, real-normalised (largest-magnitude entry +1).
    pub shape: Vec<f64>,
    /// Modal phase collinearity of the complex singular vector, 0 to 1.
    pub mpc: f64,
    /// The EFDD estimate, when asked for and the bell allowed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efdd: Option<EfddEstimate>,
}

/// A frequency-domain decomposition: singular-value spectra for plotting and picked peaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FddResult {
    /// Frequencies of the lines, Hz: k·fs/segment_samples, 0 to Nyquist.
    pub frequencies_hz: Vec<f64>,
    /// Singular values of the cross-spectral density matrix, `[k][line]` for the k-th largest
    /// (as many as channels), (channel unit)²/Hz, one-sided.
    pub singular_values: Vec<Vec<f64>>,
    /// Number of segments averaged.
    pub segments_averaged: usize,
    /// Line spacing, Hz.
    pub frequency_resolution_hz: f64,
    /// Picked peaks, ascending in frequency.
    pub peaks: Vec<FddPeak>,
}

/// Frequency-domain decomposition of `channels` sampled at `sample_rate_hz`.
///
/// The cross-spectral density matrix is Welch's estimate: Hann (periodic) window, each
/// segment's mean removed, G(f) = 2·Σ_seg X(f)·X(f)ᴴ / (K·fs·Σw²), one-sided (the 0 Hz and
/// Nyquist lines not doubled), so that its trace integrates to the channels' variances.
///
/// # Errors
/// [`OmaError::Invalid`] listing every problem with the record and the parameters;
/// [`OmaError::Numerical`] if an SVD does not converge.
pub fn fdd(
    channels: &[Vec<f64>],
    sample_rate_hz: f64,
    params: &FddParams,
) -> Result<FddResult, OmaError> {
    let samples = channels.first().map_or(0, Vec::len);
    let mut problems = record_problems(channels, sample_rate_hz);
    problems.extend(params.problems(samples, sample_rate_hz));
    into_result(problems)?;

    let spectral = cross_spectral_density(channels, sample_rate_hz, params)?;
    let l = channels.len();
    let lines = spectral.matrices.len();
    let mut singular_values = vec![Vec::with_capacity(lines); l];
    let mut first_vectors = Vec::with_capacity(lines);
    for matrix in &spectral.matrices {
        let svd = SVD::try_new(matrix.clone(), true, false, f64::EPSILON, 1_000 * l.max(1))
            .ok_or_else(|| {
                OmaError::Numerical("SVD of a spectral matrix did not converge".into())
            })?;
        for (k, values) in singular_values.iter_mut().enumerate() {
            values.push(svd.singular_values[k]);
        }
        let u = svd
            .u
            .ok_or_else(|| OmaError::Numerical("SVD returned no singular vectors".into()))?;
        first_vectors.push(u.column(0).iter().copied().collect::<Vec<C64>>());
    }
    let resolution = sample_rate_hz / params.segment_samples as f64;
    let frequencies_hz: Vec<f64> = (0..lines).map(|k| k as f64 * resolution).collect();
    let peaks = pick_peaks(&frequencies_hz, &singular_values[0], params)
        .into_iter()
        .filter_map(|(line, prominence_db)| {
            let vector = &first_vectors[line];
            Some(FddPeak {
                frequency_hz: frequencies_hz[line],
                line,
                singular_value: singular_values[0][line],
                prominence_db,
                shape: real_normalised(vector)?,
                mpc: shape_quality(vector)?.mpc,
                efdd: params.efdd.as_ref().and_then(|efdd| {
                    efdd_estimate(
                        &singular_values[0],
                        &first_vectors,
                        line,
                        params.segment_samples,
                        sample_rate_hz,
                        efdd,
                    )
                }),
            })
        })
        .collect();
    Ok(FddResult {
        frequencies_hz,
        singular_values,
        segments_averaged: spectral.segments,
        frequency_resolution_hz: resolution,
        peaks,
    })
}

/// Welch's cross-spectral density matrices, one per line from 0 Hz to Nyquist.
pub struct SpectralMatrices {
    /// G(f_k), l × l Hermitian, one-sided, (unit)²/Hz.
    pub matrices: Vec<DMatrix<C64>>,
    /// Number of segments averaged.
    pub segments: usize,
}

impl std::fmt::Debug for SpectralMatrices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpectralMatrices")
            .field("lines", &self.matrices.len())
            .field("segments", &self.segments)
            .finish()
    }
}

/// Welch's estimate of the one-sided cross-spectral density matrix of `channels`, as in
/// [`fdd`].
///
/// # Errors
/// [`OmaError::Invalid`] listing every problem with the record and the parameters.
pub fn cross_spectral_density(
    channels: &[Vec<f64>],
    sample_rate_hz: f64,
    params: &FddParams,
) -> Result<SpectralMatrices, OmaError> {
    let samples = channels.first().map_or(0, Vec::len);
    let mut problems = record_problems(channels, sample_rate_hz);
    problems.extend(params.problems(samples, sample_rate_hz));
    into_result(problems)?;
    let n = params.segment_samples;
    let l = channels.len();
    let window: Vec<f64> = (0..n)
        .map(|k| 0.5 - 0.5 * (TAU * k as f64 / n as f64).cos())
        .collect();
    let window_power: f64 = window.iter().map(|w| w * w).sum();
    let lines = n / 2 + 1;
    let mut matrices = vec![DMatrix::<C64>::zeros(l, l); lines];
    let fft = FftPlanner::<f64>::new().plan_fft_forward(n);
    let hop = params.hop();
    let mut spectra = vec![vec![C64::new(0.0, 0.0); n]; l];
    let mut segments = 0;
    let mut start = 0;
    while start + n <= samples {
        for (channel, spectrum) in channels.iter().zip(spectra.iter_mut()) {
            let segment = &channel[start..start + n];
            let mean = segment.iter().sum::<f64>() / n as f64;
            for ((z, x), w) in spectrum.iter_mut().zip(segment).zip(&window) {
                *z = C64::new((x - mean) * w, 0.0);
            }
            fft.process(spectrum);
        }
        for (line, matrix) in matrices.iter_mut().enumerate() {
            for a in 0..l {
                for b in 0..l {
                    matrix[(a, b)] += spectra[a][line] * spectra[b][line].conj();
                }
            }
        }
        segments += 1;
        start += hop;
    }
    let scale = 1.0 / (segments.max(1) as f64 * sample_rate_hz * window_power);
    for (line, matrix) in matrices.iter_mut().enumerate() {
        let one_sided = if line == 0 || (n.is_multiple_of(2) && line == n / 2) {
            1.0
        } else {
            2.0
        };
        *matrix *= C64::from(one_sided * scale);
    }
    Ok(SpectralMatrices { matrices, segments })
}

/// Lines of the peaks of `values` within the band, with their prominence in dB: local maxima,
/// taken highest first, kept when prominent enough and far enough from every kept one.
fn pick_peaks(frequencies_hz: &[f64], values: &[f64], params: &FddParams) -> Vec<(usize, f64)> {
    let max_f = params.max_frequency_hz.unwrap_or(f64::INFINITY);
    let in_band: Vec<usize> = (1..values.len())
        .filter(|&k| frequencies_hz[k] >= params.min_frequency_hz && frequencies_hz[k] <= max_f)
        .collect();
    let (Some(&first), Some(&last)) = (in_band.first(), in_band.last()) else {
        return Vec::new();
    };
    let highest = in_band.iter().map(|&k| values[k]).fold(0.0, f64::max);
    let floor = highest * 10f64.powf(-params.dynamic_range_db / 10.0);
    let mut candidates: Vec<(usize, f64)> = (first..=last)
        .filter(|&k| {
            let left = k == first || values[k] > values[k - 1];
            let right = k == last || values[k] >= values[k + 1];
            left && right && k != first && k != last && values[k] >= floor
        })
        .map(|k| (k, prominence_db(values, k, first, last)))
        .filter(|&(_, p)| p >= params.min_prominence_db)
        .collect();
    candidates.sort_by(|a, b| values[b.0].total_cmp(&values[a.0]));
    let mut kept: Vec<(usize, f64)> = Vec::new();
    for (k, p) in candidates {
        let far = kept.iter().all(|&(j, _)| {
            (frequencies_hz[j] - frequencies_hz[k]).abs() >= params.min_peak_separation_hz
        });
        if far {
            kept.push((k, p));
        }
        if params.max_peaks.is_some_and(|m| kept.len() >= m) {
            break;
        }
    }
    kept.sort_by_key(|&(k, _)| k);
    kept
}

/// Topographic prominence of the peak at `k` within [first, last], in dB: walk each way
/// until a higher value or the band's edge, take the lowest value passed on each side, and
/// compare the peak with the higher of the two.
fn prominence_db(values: &[f64], k: usize, first: usize, last: usize) -> f64 {
    let peak = values[k];
    let mut left_base = peak;
    for j in (first..k).rev() {
        if values[j] > peak {
            break;
        }
        left_base = left_base.min(values[j]);
    }
    let mut right_base = peak;
    for &v in &values[k + 1..=last] {
        if v > peak {
            break;
        }
        right_base = right_base.min(v);
    }
    // A base of exactly zero (noise-free synthetic data) would give an infinite prominence,
    // which JSON cannot carry; the smallest positive double caps it near 3000 dB.
    let base = left_base.max(right_base).max(f64::MIN_POSITIVE);
    10.0 * (peak / base).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spectral_density_of_white_noise_integrates_to_its_variance() {
        // A deterministic white sequence: xorshift64 uniforms scaled to unit variance. By
        // Parseval and the one-sided scaling, Σ_k G(f_k)·Δf is the mean power of the windowed
        // segments over the window's mean square: the sequence's variance, to the scatter of
        // the segment powers.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let x: Vec<f64> = (0..65_536)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 12f64.sqrt()
            })
            .collect();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let variance = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        let params = FddParams {
            segment_samples: 1024,
            ..FddParams::default()
        };
        let fs = 100.0;
        let spectral =
            cross_spectral_density(std::slice::from_ref(&x), fs, &params).expect("valid");
        let df = fs / 1024.0;
        let total: f64 = spectral.matrices.iter().map(|m| m[(0, 0)].re * df).sum();
        // 127 segments: each line scatters by ~1/√127 but the sum over 513 lines is within a
        // percent.
        assert!(
            (total / variance - 1.0).abs() < 0.01,
            "{total} vs {variance}"
        );
        assert_eq!(spectral.segments, 127);
        // Flat: every line within ±35 % of the mean level 2·variance/fs (127 averages, so
        // about 4 standard deviations of one line).
        for m in &spectral.matrices[1..512] {
            let level = m[(0, 0)].re * fs / (2.0 * variance);
            assert!((level - 1.0).abs() < 0.35, "{level}");
        }
    }

    #[test]
    fn a_sine_in_two_channels_is_one_peak_with_their_amplitude_ratio_as_shape() {
        // Two channels in phase, amplitudes 1 and −0.5, at exactly line 40 of 0.1 Hz lines,
        // plus a weaker sine at 25 Hz: rank one per line, so the first singular vector is the
        // amplitude pattern exactly and the peaks sit on those lines.
        let fs = 102.4;
        let n = 1024;
        let f1 = 40.0 * fs / n as f64;
        let f2 = 250.0 * fs / n as f64;
        let t = |k: usize| k as f64 / fs;
        let a: Vec<f64> = (0..16 * n)
            .map(|k| (TAU * f1 * t(k)).sin() + 0.1 * (TAU * f2 * t(k)).sin())
            .collect();
        let b: Vec<f64> = (0..16 * n)
            .map(|k| -0.5 * (TAU * f1 * t(k)).sin() + 0.1 * (TAU * f2 * t(k)).sin())
            .collect();
        let params = FddParams {
            segment_samples: n,
            ..FddParams::default()
        };
        let result = fdd(&[a, b], fs, &params).expect("valid");
        assert_eq!(result.peaks.len(), 2, "{:?}", result.peaks);
        assert_eq!(result.peaks[0].line, 40);
        assert_eq!(result.peaks[1].line, 250);
        assert!((result.peaks[0].shape[0] - 1.0).abs() < 1e-9);
        assert!(
            (result.peaks[0].shape[1] + 0.5).abs() < 1e-9,
            "{:?}",
            result.peaks[0]
        );
        assert!((result.peaks[1].shape[1] - 1.0).abs() < 1e-9);
        assert!((result.peaks[0].mpc - 1.0).abs() < 1e-9);
        // A Hann-windowed sine on a line: power A²/2 split over three lines in the ratio
        // 1/4 : 1 : 1/4 of the window's shape; the peak line holds (A²/2)·(Σw)²/(N·Σw²)/Δf
        // with (Σw)² = N²/4 and Σw² = 3N/8, i.e. (A²/2)·(2/3)/Δf. The second singular value
        // is zero up to rounding.
        let df = fs / n as f64;
        let want = 1.25 / 2.0 * (2.0 / 3.0) / df;
        assert!(
            (result.peaks[0].singular_value - want).abs() < 1e-9 * want,
            "{}",
            result.peaks[0].singular_value
        );
        assert!(result.singular_values[1][40] < 1e-12 * want);
    }

    #[test]
    fn parameters_report_every_problem() {
        let params = FddParams {
            segment_samples: 8,
            overlap: 0.99,
            min_frequency_hz: -1.0,
            max_frequency_hz: Some(600.0),
            min_peak_separation_hz: f64::NAN,
            min_prominence_db: 0.0,
            dynamic_range_db: -3.0,
            max_peaks: Some(0),
            efdd: Some(EfddParams {
                bell_min_mac: 2.0,
                ..EfddParams::default()
            }),
        };
        let problems = params.problems(1000, 1000.0);
        assert_eq!(problems.len(), 9, "{problems:#?}");
        let long = FddParams::default().problems(1000, 1000.0);
        assert_eq!(long.len(), 1);
        assert!(long[0].contains("longer than the record (1000 samples)"));
    }
}
