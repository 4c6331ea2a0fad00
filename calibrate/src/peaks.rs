//! Owns finding resonances in measured FRFs and the frequency window around each one that the
//! circle fit uses. Replaces Cristallo's hard-coded 5.9–7, 17–19, 25–27.5 Hz windows
//! (TOOLS.md § 8.2). Works on magnitudes only, so dB files can be searched too.

use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};
use crate::measured::MeasuredFrf;

/// A frequency band around one mode, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeWindow {
    /// Lower end, in Hz.
    pub f_lo_hz: f64,
    /// Upper end, in Hz.
    pub f_hi_hz: f64,
}

/// Default number of resonances to look for.
pub const fn default_max_modes() -> usize {
    3
}
/// Default least prominence of a resonance, in dB of summed mobility power: a 6 dB peak
/// stands twice above the higher of its two flanking valleys; noise ripples rarely do.
pub const fn default_min_prominence_db() -> f64 {
    6.0
}
/// Default window half-width, in half-power bandwidths (2ζf) either side of the peak: a
/// point k bandwidths from resonance sits at tan(θ/2) ≈ 2k, so the window covers about
/// ±169° of the circle, leaving out only the crowded stretch near its far point.
pub const fn default_window_half_bandwidths() -> f64 {
    5.0
}
/// Default least number of lines either side of a peak: a circle needs points on both
/// flanks even when the half-power band is narrower than one line (lightly damped modes).
pub const fn default_min_lines_per_side() -> usize {
    5
}

/// How to search for resonances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakSearch {
    /// Lowest frequency searched, in Hz.
    pub f_min_hz: f64,
    /// Highest frequency searched, in Hz.
    pub f_max_hz: f64,
    /// At most this many resonances are returned, the most prominent ones.
    #[serde(default = "default_max_modes")]
    pub max_modes: usize,
    /// Least prominence of a peak over its higher flanking valley, in dB.
    #[serde(default = "default_min_prominence_db")]
    pub min_prominence_db: f64,
    /// Window half-width in half-power bandwidths (see [`default_window_half_bandwidths`]).
    #[serde(default = "default_window_half_bandwidths")]
    pub window_half_bandwidths: f64,
    /// Least number of frequency lines either side of the peak in a window.
    #[serde(default = "default_min_lines_per_side")]
    pub min_lines_per_side: usize,
}

impl PeakSearch {
    /// A search of `f_min_hz..=f_max_hz` with the default settings.
    pub fn band(f_min_hz: f64, f_max_hz: f64) -> Self {
        Self {
            f_min_hz,
            f_max_hz,
            max_modes: default_max_modes(),
            min_prominence_db: default_min_prominence_db(),
            window_half_bandwidths: default_window_half_bandwidths(),
            min_lines_per_side: default_min_lines_per_side(),
        }
    }

    /// Every rule these settings break.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.f_min_hz.is_finite() && self.f_min_hz > 0.0) {
            problems.push(format!(
                "f_min_hz = {} must be positive and finite (mobility is undefined at 0 Hz)",
                self.f_min_hz
            ));
        }
        if !(self.f_max_hz.is_finite() && self.f_max_hz > self.f_min_hz) {
            problems.push(format!(
                "f_max_hz = {} must be finite and above f_min_hz = {}",
                self.f_max_hz, self.f_min_hz
            ));
        }
        if self.max_modes == 0 {
            problems.push("max_modes must be at least 1".into());
        }
        if !(self.min_prominence_db.is_finite() && self.min_prominence_db >= 0.0) {
            problems.push(format!(
                "min_prominence_db = {} must be zero or positive",
                self.min_prominence_db
            ));
        }
        if !(self.window_half_bandwidths.is_finite() && self.window_half_bandwidths > 0.0) {
            problems.push(format!(
                "window_half_bandwidths = {} must be positive",
                self.window_half_bandwidths
            ));
        }
        if self.min_lines_per_side < 2 {
            problems.push(format!(
                "min_lines_per_side = {} must be at least 2",
                self.min_lines_per_side
            ));
        }
        problems
    }
}

/// One resonance found in the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedPeak {
    /// Frequency line of the peak, in Hz.
    pub peak_hz: f64,
    /// Prominence over the higher flanking valley, in dB.
    pub prominence_db: f64,
    /// Half-power bandwidth from linear interpolation of the summed mobility power, in Hz;
    /// about 2·ζ·f for a lightly damped mode. One line spacing when the peak is narrower.
    pub half_power_bandwidth_hz: f64,
    /// The window the circle fit will use.
    pub window: ModeWindow,
}

/// Summed mobility power Σ_c γ_c²·|H_c|²/ω² per line (γ² = 1 without coherence; 0 at 0 Hz,
/// where mobility is undefined). Weighting by the coherence makes the power the part of the
/// response explained by the force, so lines of noise or leakage do not pose as peaks.
pub(crate) fn mobility_power(frf: &MeasuredFrf) -> Vec<f64> {
    let mut power = vec![0.0; frf.frequencies_hz.len()];
    for c in 0..frf.channels() {
        let coherence = frf.coherence.as_ref().and_then(|g| g.get(c));
        for (i, ((p, m), f)) in power
            .iter_mut()
            .zip(frf.magnitude(c))
            .zip(&frf.frequencies_hz)
            .enumerate()
        {
            if *f > 0.0 {
                let w = std::f64::consts::TAU * f;
                let gamma2 = coherence.and_then(|g| g.get(i)).copied().unwrap_or(1.0);
                *p += gamma2 * (m / w).powi(2);
            }
        }
    }
    power
}

/// Finds the `max_modes` most prominent resonances in the search band and a window for each.
///
/// A peak is a line above its left neighbour and not below its right one; its prominence is
/// its height over the higher of the lowest points between it and a higher line (or the band
/// edge) on either side. Windows reach `window_half_bandwidths` half-power bandwidths, at
/// least `min_lines_per_side` lines, either side, and stop halfway to a neighbouring peak.
///
/// # Errors
/// [`CalibrateError::Invalid`] for bad settings or data, [`CalibrateError::NoPeak`] when no
/// peak in the band is prominent enough.
pub fn find_mode_windows(
    frf: &MeasuredFrf,
    search: &PeakSearch,
) -> Result<Vec<DetectedPeak>, CalibrateError> {
    let mut problems = frf.problems();
    problems.extend(search.problems());
    check(problems)?;
    let f = &frf.frequencies_hz;
    let power = mobility_power(frf);
    let band: Vec<usize> = (0..f.len())
        .filter(|&i| f[i] >= search.f_min_hz && f[i] <= search.f_max_hz && f[i] > 0.0)
        .collect();
    let (Some(&first), Some(&last)) = (band.first(), band.last()) else {
        return Err(CalibrateError::NoPeak(format!(
            "no frequency line lies in {}..={} Hz",
            search.f_min_hz, search.f_max_hz
        )));
    };
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for i in first + 1..last {
        if !(power[i] > power[i - 1] && power[i] >= power[i + 1]) {
            continue;
        }
        let valley = |range: &mut dyn Iterator<Item = usize>| {
            let mut low = power[i];
            for j in range {
                if power[j] > power[i] {
                    break;
                }
                low = low.min(power[j]);
            }
            low
        };
        let left = valley(&mut (first..i).rev());
        let right = valley(&mut (i + 1..=last));
        let reference = left.max(right);
        let prominence_db = if reference > 0.0 {
            10.0 * (power[i] / reference).log10()
        } else {
            f64::INFINITY
        };
        if prominence_db >= search.min_prominence_db {
            candidates.push((i, prominence_db));
        }
    }
    if candidates.is_empty() {
        return Err(CalibrateError::NoPeak(format!(
            "no peak in {}..={} Hz stands {} dB above its flanks; widen the band or lower \
             min_prominence_db",
            search.f_min_hz, search.f_max_hz, search.min_prominence_db
        )));
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    candidates.truncate(search.max_modes);
    candidates.sort_by_key(|c| c.0);

    let spacing_hz = (f[last] - f[first]) / (last - first).max(1) as f64;
    let mut peaks = Vec::with_capacity(candidates.len());
    for (k, &(i, prominence_db)) in candidates.iter().enumerate() {
        let half = power[i] / 2.0;
        let crossing = |range: &mut dyn Iterator<Item = usize>, step_back: isize| {
            for j in range {
                if power[j] <= half {
                    let inner = j.checked_add_signed(step_back).unwrap_or(j);
                    let (p0, p1) = (power[j], power[inner]);
                    let t = if p1 > p0 {
                        (half - p0) / (p1 - p0)
                    } else {
                        0.0
                    };
                    return Some(f[j] + t * (f[inner] - f[j]));
                }
            }
            None
        };
        let lo = crossing(&mut (first..i).rev(), 1).unwrap_or(f[first]);
        let hi = crossing(&mut (i + 1..=last), -1).unwrap_or(f[last]);
        let bandwidth_hz = (hi - lo).max(spacing_hz);
        let reach_hz = (search.window_half_bandwidths * bandwidth_hz)
            .max(search.min_lines_per_side as f64 * spacing_hz);
        let mut f_lo = (f[i] - reach_hz).max(f[first]);
        let mut f_hi = (f[i] + reach_hz).min(f[last]);
        if k > 0 {
            f_lo = f_lo.max(0.5 * (f[candidates[k - 1].0] + f[i]));
        }
        if let Some(next) = candidates.get(k + 1) {
            f_hi = f_hi.min(0.5 * (f[next.0] + f[i]));
        }
        peaks.push(DetectedPeak {
            peak_hz: f[i],
            prominence_db,
            half_power_bandwidth_hz: bandwidth_hz,
            window: ModeWindow {
                f_lo_hz: f_lo,
                f_hi_hz: f_hi,
            },
        });
    }
    Ok(peaks)
}
