//! Owns the uncertainty of identified modes across data segments: the record cut into K
//! consecutive segments, each identified on its own, each segment's modes matched to the
//! full record's, and the spread of frequency and damping across segments reported.

use serde::{Deserialize, Serialize};

use crate::cluster::{IdentifiedMode, ModePicking, mean_and_std, pick_modes};
use crate::error::{OmaError, into_result};
use crate::record::record_problems;
use crate::ssi::{SsiParams, ssi_cov};

/// Default number of segments.
pub const fn default_segments() -> usize {
    4
}
/// Default relative frequency distance within which a segment's mode matches a reference one.
pub const fn default_match_frequency_tolerance() -> f64 {
    0.05
}
/// Default smallest MAC between a segment's mode and the reference one it matches.
pub const fn default_match_min_mac() -> f64 {
    0.9
}

/// How the record is cut and segment modes are matched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentParams {
    /// Number of consecutive, non-overlapping segments K; at least 2. A remainder of fewer
    /// than K samples at the end is left out.
    #[serde(default = "default_segments")]
    pub segments: usize,
    /// A segment's mode matches a reference mode within this relative frequency distance;
    /// in (0, 1).
    #[serde(default = "default_match_frequency_tolerance")]
    pub match_frequency_tolerance: f64,
    /// ...and with at least this MAC between their real shapes; in (0, 1].
    #[serde(default = "default_match_min_mac")]
    pub match_min_mac: f64,
}

impl Default for SegmentParams {
    fn default() -> Self {
        Self {
            segments: default_segments(),
            match_frequency_tolerance: default_match_frequency_tolerance(),
            match_min_mac: default_match_min_mac(),
        }
    }
}

impl SegmentParams {
    /// Every rule these settings break, each field named under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.segments < 2 {
            problems.push(format!(
                "{prefix}segments = {} must be at least 2 to measure a spread",
                self.segments
            ));
        }
        let f = self.match_frequency_tolerance;
        if !(f > 0.0 && f < 1.0) {
            problems.push(format!(
                "{prefix}match_frequency_tolerance = {f} must be in (0, 1)"
            ));
        }
        let m = self.match_min_mac;
        if !(m > 0.0 && m <= 1.0) {
            problems.push(format!("{prefix}match_min_mac = {m} must be in (0, 1]"));
        }
        problems
    }
}

/// One reference mode and its spread across segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentedMode {
    /// Index of the reference mode this row is about.
    pub mode: usize,
    /// Number of segments in which the mode was found.
    pub found_in: usize,
    /// Mean frequency over those segments, Hz.
    pub frequency_hz: f64,
    /// Sample standard deviation of the frequency over those segments, Hz (0 when found in
    /// fewer than two).
    pub frequency_std_hz: f64,
    /// Mean damping ratio over those segments.
    pub damping_ratio: f64,
    /// Sample standard deviation of the damping ratio over those segments.
    pub damping_ratio_std: f64,
}

/// The spread of the reference modes across segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentUncertainty {
    /// Number of segments K.
    pub segments: usize,
    /// Samples in each segment.
    pub samples_per_segment: usize,
    /// One row per reference mode, in the reference's order.
    pub modes: Vec<SegmentedMode>,
    /// The modes picked in each segment, `[segment][mode]`.
    pub per_segment: Vec<Vec<IdentifiedMode>>,
}

/// Cuts `channels` into `params.segments` segments, identifies each with `ssi` and `picking`,
/// and reports, for each of `reference` (usually the full record's modes), the spread of the
/// segments' matching modes.
///
/// # Errors
/// [`OmaError::Invalid`] listing every problem (including parameters that no longer fit a
/// segment, e.g. too few samples for the block rows); [`OmaError::Numerical`] as
/// [`ssi_cov`].
pub fn segment_uncertainty(
    channels: &[Vec<f64>],
    sample_rate_hz: f64,
    reference: &[IdentifiedMode],
    ssi: &SsiParams,
    picking: &ModePicking,
    params: &SegmentParams,
) -> Result<SegmentUncertainty, OmaError> {
    let mut problems = record_problems(channels, sample_rate_hz);
    problems.extend(params.problems("segments."));
    problems.extend(picking.problems("picking."));
    let samples = channels.first().map_or(0, Vec::len);
    let per_segment_samples = samples / params.segments.max(1);
    if params.segments >= 2 {
        problems.extend(
            ssi.problems(channels.len(), per_segment_samples)
                .into_iter()
                .map(|p| format!("in each of {} segments: {p}", params.segments)),
        );
    }
    into_result(problems)?;

    let mut per_segment = Vec::with_capacity(params.segments);
    for k in 0..params.segments {
        let range = k * per_segment_samples..(k + 1) * per_segment_samples;
        let segment: Vec<Vec<f64>> = channels.iter().map(|c| c[range.clone()].to_vec()).collect();
        let result = ssi_cov(&segment, sample_rate_hz, ssi)?;
        per_segment.push(pick_modes(&result.poles, &result.orders, picking));
    }
    let modes = reference
        .iter()
        .enumerate()
        .map(|(index, mode)| {
            let matches: Vec<&IdentifiedMode> = per_segment
                .iter()
                .filter_map(|modes| best_match(mode, modes, params))
                .collect();
            let (frequency_hz, frequency_std_hz) =
                mean_and_std(matches.iter().map(|m| m.frequency_hz));
            let (damping_ratio, damping_ratio_std) =
                mean_and_std(matches.iter().map(|m| m.damping_ratio));
            SegmentedMode {
                mode: index,
                found_in: matches.len(),
                frequency_hz,
                frequency_std_hz,
                damping_ratio,
                damping_ratio_std,
            }
        })
        .collect();
    Ok(SegmentUncertainty {
        segments: params.segments,
        samples_per_segment: per_segment_samples,
        modes,
        per_segment,
    })
}

/// The mode of `candidates` nearest in frequency to `reference` among those within the
/// frequency tolerance and MAC bound.
fn best_match<'a>(
    reference: &IdentifiedMode,
    candidates: &'a [IdentifiedMode],
    params: &SegmentParams,
) -> Option<&'a IdentifiedMode> {
    candidates
        .iter()
        .filter(|m| {
            let distance = (m.frequency_hz - reference.frequency_hz).abs() / reference.frequency_hz;
            let mac = real_mac(&m.shape, &reference.shape);
            distance <= params.match_frequency_tolerance && mac >= params.match_min_mac
        })
        .min_by(|a, b| {
            (a.frequency_hz - reference.frequency_hz)
                .abs()
                .total_cmp(&(b.frequency_hz - reference.frequency_hz).abs())
        })
}

/// MAC of two real shapes; 0 when undefined.
fn real_mac(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let norms = dot(a, a) * dot(b, b);
    if norms > 0.0 {
        dot(a, b).powi(2) / norms
    } else {
        0.0
    }
}
