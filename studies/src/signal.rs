//! Owns spectral estimation of sampled signals: the Hann window, one-sided power and cross
//! spectral densities by Welch's method and by the plain periodogram, the H1 estimator with
//! its coherence, and percentiles across samples. Any kind may use it; it knows nothing of
//! models or studies.
//!
//! Scaling (both estimators, like SciPy's `scaling='density'`): for a segment x of n samples
//! at rate fs with window w, X_k = Σ w_i·x_i·e^{−2πjik/n} and the one-sided density is
//! P_k = c_k·|X_k|² / (fs·Σw_i²), c_k = 2 except at 0 Hz and (n even) at fs/2, where c_k = 1.
//! Units are the signal's squared per Hz, and Σ_k P_k·fs/n equals the mean square of the
//! windowed segment (Parseval). Cristallo's |FFT|²/(2·N²) has no 1/df and is not a density.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Complex double.
pub type C64 = Complex<f64>;

/// The periodic Hann window of length `n`, w_i = sin²(π·i/n) (SciPy's `hann(n, sym=False)`,
/// its default for spectral estimation).
pub fn hann(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let s = (std::f64::consts::PI * i as f64 / n as f64).sin();
            s * s
        })
        .collect()
}

/// Frequencies of the one-sided bins of an n-point transform at rate fs, in Hz.
pub fn bin_frequencies_hz(n: usize, sample_rate_hz: f64) -> Vec<f64> {
    (0..=n / 2)
        .map(|k| k as f64 * sample_rate_hz / n as f64)
        .collect()
}

/// The windowed one-sided spectra of every Welch segment of one signal: `segments[s][k]`,
/// already scaled so that conj(A)·B averaged over segments is the cross density.
#[derive(Debug, Clone)]
pub struct SegmentSpectra {
    segments: Vec<Vec<C64>>,
}

/// Segment starts of Welch's method: every `nperseg − noverlap` samples while a whole segment
/// fits (trailing samples that do not fill one are dropped, as SciPy does).
fn segment_starts(len: usize, nperseg: usize, noverlap: usize) -> Vec<usize> {
    let step = nperseg.saturating_sub(noverlap).max(1);
    if nperseg == 0 || len < nperseg {
        return Vec::new();
    }
    (0..=(len - nperseg) / step).map(|s| s * step).collect()
}

impl SegmentSpectra {
    /// Cuts `x` into segments of `nperseg` overlapping by `noverlap`, windows each with
    /// `window` (its length must be `nperseg`) and transforms it.
    pub fn new(
        x: &[f64],
        window: &[f64],
        noverlap: usize,
        sample_rate_hz: f64,
        planner: &mut FftPlanner<f64>,
    ) -> Self {
        let n = window.len();
        let fft = planner.plan_fft_forward(n);
        let power: f64 = window.iter().map(|w| w * w).sum();
        let bins = n / 2 + 1;
        let segments = segment_starts(x.len(), n, noverlap)
            .into_iter()
            .map(|start| {
                let mut buf: Vec<C64> = x[start..start + n]
                    .iter()
                    .zip(window)
                    .map(|(x, w)| C64::new(x * w, 0.0))
                    .collect();
                fft.process(&mut buf);
                buf.truncate(bins);
                for (k, v) in buf.iter_mut().enumerate() {
                    let edge = k == 0 || (n.is_multiple_of(2) && k == n / 2);
                    let c = if edge { 1.0 } else { 2.0 };
                    *v *= (c / (sample_rate_hz * power)).sqrt();
                }
                buf
            })
            .collect();
        Self { segments }
    }

    /// Number of segments averaged.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// True when the signal was shorter than one segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The one-sided cross density S_ab(f) = mean over segments of conj(A)·B.
    pub fn cross(&self, other: &SegmentSpectra) -> Vec<C64> {
        let bins = self.segments.first().map_or(0, Vec::len);
        let count = self.segments.len().min(other.segments.len()).max(1) as f64;
        let mut out = vec![C64::new(0.0, 0.0); bins];
        for (a, b) in self.segments.iter().zip(&other.segments) {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o += a.conj() * b;
            }
        }
        for o in &mut out {
            *o /= count;
        }
        out
    }

    /// The one-sided power density S_aa(f).
    pub fn power(&self) -> Vec<f64> {
        self.cross(self).iter().map(|v| v.re).collect()
    }
}

/// Welch's one-sided PSD of `x` with a Hann window of `nperseg` and `noverlap` overlap.
pub fn welch_psd(x: &[f64], sample_rate_hz: f64, nperseg: usize, noverlap: usize) -> Vec<f64> {
    let mut planner = FftPlanner::new();
    SegmentSpectra::new(x, &hann(nperseg), noverlap, sample_rate_hz, &mut planner).power()
}

/// The plain periodogram: one segment, the whole signal, rectangular window.
pub fn periodogram(x: &[f64], sample_rate_hz: f64) -> Vec<f64> {
    let mut planner = FftPlanner::new();
    SegmentSpectra::new(x, &vec![1.0; x.len()], 0, sample_rate_hz, &mut planner).power()
}

/// H1 = S_fx / S_ff and the coherence γ² = |S_fx|² / (S_ff·S_xx), bin by bin. Bins where
/// the force has no power give H1 = 0 and γ² = 0.
pub fn h1_and_coherence(force: &SegmentSpectra, response: &SegmentSpectra) -> (Vec<C64>, Vec<f64>) {
    let s_ff = force.power();
    let s_xx = response.power();
    let s_fx = force.cross(response);
    s_fx.iter()
        .zip(&s_ff)
        .zip(&s_xx)
        .map(|((fx, ff), xx)| {
            if *ff > 0.0 && *xx > 0.0 {
                (fx / ff, fx.norm_sqr() / (ff * xx))
            } else {
                (C64::new(0.0, 0.0), 0.0)
            }
        })
        .unzip()
}

/// The `p`-th percentile (0–100) of `values` by linear interpolation between order
/// statistics (NumPy's default); NaN for no values.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodogram_integrates_to_the_mean_square_parseval() {
        let fs = 250.0;
        let x: Vec<f64> = (0..1000)
            .map(|i| {
                let t = i as f64 / fs;
                0.3 + (2.0 * std::f64::consts::PI * 17.0 * t).sin() + 0.1 * ((i * 7919) % 13) as f64
            })
            .collect();
        let p = periodogram(&x, fs);
        let df = fs / x.len() as f64;
        let integral: f64 = p.iter().sum::<f64>() * df;
        let mean_square = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        assert!(
            (integral - mean_square).abs() < 1e-12 * mean_square,
            "{integral} vs {mean_square}"
        );
    }

    #[test]
    fn welch_of_a_sine_holds_its_mean_square_in_its_bins() {
        // A sine of amplitude A has mean square A²/2; the Hann-windowed density spreads it over
        // three bins whose sum times df returns it exactly when the sine sits on a bin.
        let (fs, n, a) = (1000.0, 500, 2.0);
        let f0 = 40.0; // bin 20 of a 500-point segment.
        let x: Vec<f64> = (0..5000)
            .map(|i| a * (2.0 * std::f64::consts::PI * f0 * i as f64 / fs).sin())
            .collect();
        let p = welch_psd(&x, fs, n, n / 2);
        let df = fs / n as f64;
        let total: f64 = p.iter().sum::<f64>() * df;
        assert!((total - a * a / 2.0).abs() < 1e-9, "{total}");
        let peak = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, _)| k);
        assert_eq!(peak, Some(20));
    }

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 25.0), 2.0);
        assert_eq!(percentile(&mut v, 95.0), 4.8);
        assert!(percentile(&mut [], 5.0).is_nan());
    }
}
