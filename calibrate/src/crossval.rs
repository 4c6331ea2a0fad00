//! Owns the comparison of a model with measured FRFs, in numbers: the MAC matrix of
//! identified against model shapes, frequency errors of MAC-paired modes, and the FRAC of
//! each channel. Cristallo's cross-validation pages only overlaid curves (TOOLS.md § 6.1).
//! Knows nothing of how the modes were identified.

use std::f64::consts::TAU;

use dtop_dynamics::frf::{input_load, modal_damping_ratios, second_order_response};
use dtop_dynamics::{FrfInput, ShearBuilding, mac};
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};
use crate::identified::IdentifiedMode;
use crate::measured::{C64, MeasuredFrf};
use crate::update::pair_by_mac;

/// The frequency band over which FRFs are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossValParams {
    /// Lower end, in Hz (positive).
    pub f_min_hz: f64,
    /// Upper end, in Hz.
    pub f_max_hz: f64,
}

/// Whether a FRAC used the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FracKind {
    /// |Σ X*·A|² / (Σ|X|²·Σ|A|²): shape and phase of the FRF must agree.
    Complex,
    /// (Σ|X|·|A|)² / (Σ|X|²·Σ|A|²): magnitudes only (dB files have no phase); it is never
    /// below the complex FRAC of the same data, so the two are not comparable.
    Magnitude,
}

/// An identified mode paired with a model mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModePair {
    /// Index of the identified mode, 0-based, in the order given.
    pub identified: usize,
    /// Model mode, 1-based, ascending in frequency.
    pub model_mode: usize,
    /// Identified natural frequency, in Hz.
    pub identified_hz: f64,
    /// Model natural frequency, in Hz.
    pub model_hz: f64,
    /// (model − identified) / identified, in percent.
    pub error_percent: f64,
    /// MAC of the pair.
    pub mac: f64,
    /// Identified damping ratio.
    pub identified_damping_ratio: f64,
    /// Model damping ratio (Φᵀ·C·Φ)_rr/(2ω_r), exact for classical damping.
    pub model_damping_ratio: f64,
}

/// The FRAC of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelFrac {
    /// Floor of the channel, 1-based.
    pub output_floor: usize,
    /// Complex or magnitude-only.
    pub kind: FracKind,
    /// Frequency response assurance criterion, 0..=1 (1 = proportional FRFs).
    pub frac: f64,
}

/// Headline numbers of a cross-validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValSummary {
    /// Mean |frequency error| over the pairs, in percent; `None` without identified modes.
    pub mean_abs_frequency_error_percent: Option<f64>,
    /// Largest |frequency error|, in percent.
    pub max_abs_frequency_error_percent: Option<f64>,
    /// Smallest MAC of a pair.
    pub min_pair_mac: Option<f64>,
    /// Mean FRAC over the channels.
    pub mean_frac: f64,
    /// Whether the FRACs used the phase.
    pub frac_kind: FracKind,
}

/// A model compared with measured FRFs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// `mac_matrix[i][r]`: MAC of identified mode i with model mode r + 1, over the measured
    /// floors.
    pub mac_matrix: Vec<Vec<f64>>,
    /// Each identified mode with its best-MAC model mode (distinct, greedy by MAC).
    pub pairs: Vec<ModePair>,
    /// One FRAC per channel.
    pub frac: Vec<ChannelFrac>,
    /// Frequency lines compared.
    pub lines: usize,
    /// The summary.
    pub summary: CrossValSummary,
}

/// The model's accelerance, in (m/s²)/N, from a force at `input_floor` to `output_floor`,
/// at each frequency, by the second-order solve (K − ω²M + jωC)x = f.
///
/// # Errors
/// [`CalibrateError::Frf`] for a floor the model lacks or a singular system.
pub fn model_accelerance(
    model: &ShearBuilding,
    input_floor: usize,
    output_floor: usize,
    frequencies_hz: &[f64],
) -> Result<Vec<C64>, CalibrateError> {
    if output_floor == 0 || output_floor > model.floors() {
        return Err(CalibrateError::Invalid(vec![format!(
            "output floor {output_floor} is not within 1..={}",
            model.floors()
        )]));
    }
    let load = input_load(model, FrfInput::FloorForce { floor: input_floor })?;
    frequencies_hz
        .iter()
        .map(|&f| {
            let w = TAU * f;
            let x = second_order_response(
                model.mass_matrix(),
                model.damping_matrix(),
                model.stiffness_matrix(),
                &load,
                w,
            )?;
            Ok(x[output_floor - 1] * (-w * w))
        })
        .collect()
}

/// Complex FRAC of two FRFs on the same lines; `None` if either is zero or lengths differ.
#[must_use]
pub fn frac_complex(x: &[C64], a: &[C64]) -> Option<f64> {
    if x.len() != a.len() {
        return None;
    }
    let cross: C64 = x.iter().zip(a).map(|(p, q)| p.conj() * q).sum();
    let norms =
        x.iter().map(|p| p.norm_sqr()).sum::<f64>() * a.iter().map(|q| q.norm_sqr()).sum::<f64>();
    (norms > 0.0).then(|| cross.norm_sqr() / norms)
}

/// Magnitude-only FRAC of two FRF magnitudes; `None` if either is zero or lengths differ.
#[must_use]
pub fn frac_magnitude(x: &[f64], a: &[f64]) -> Option<f64> {
    if x.len() != a.len() {
        return None;
    }
    let cross: f64 = x.iter().zip(a).map(|(p, q)| p.abs() * q.abs()).sum();
    let norms = x.iter().map(|p| p * p).sum::<f64>() * a.iter().map(|q| q * q).sum::<f64>();
    (norms > 0.0).then(|| cross * cross / norms)
}

/// MAC of every shape in `a` with every shape in `b` (0 where undefined).
#[must_use]
pub fn mac_matrix(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|x| b.iter().map(|y| mac(x, y).unwrap_or(0.0)).collect())
        .collect()
}

/// Compares `model` with `measured` over a band, and with `identified` modes (from any EMA
/// of `measured`, modal constants in channel order; may be empty).
///
/// # Errors
/// [`CalibrateError::Invalid`] listing every mismatch between the model, the data, the modes
/// and the band; [`CalibrateError::Frf`] if the model FRF cannot be evaluated.
pub fn crossvalidate(
    model: &ShearBuilding,
    measured: &MeasuredFrf,
    identified: &[IdentifiedMode],
    params: &CrossValParams,
) -> Result<CrossValidation, CalibrateError> {
    let mut problems = measured.problems();
    if !(params.f_min_hz.is_finite()
        && params.f_min_hz > 0.0
        && params.f_max_hz > params.f_min_hz
        && params.f_max_hz.is_finite())
    {
        problems.push(format!(
            "band {}..{} Hz must be finite with 0 < f_min_hz < f_max_hz",
            params.f_min_hz, params.f_max_hz
        ));
    }
    let floors = model.floors();
    if measured.input_floor > floors {
        problems.push(format!(
            "the measured input floor {} is not a floor of the {floors}-floor model",
            measured.input_floor
        ));
    }
    for &f in &measured.output_floors {
        if f > floors {
            problems.push(format!(
                "the measured output floor {f} is not a floor of the {floors}-floor model"
            ));
        }
    }
    if identified.len() > model.dofs() {
        problems.push(format!(
            "{} identified modes but the model has {} modes",
            identified.len(),
            model.dofs()
        ));
    }
    for (i, m) in identified.iter().enumerate() {
        if m.modal_constants_per_kg.len() != measured.channels() {
            problems.push(format!(
                "identified mode {i} has {} modal constants for {} channels",
                m.modal_constants_per_kg.len(),
                measured.channels()
            ));
        }
    }
    check(problems)?;
    let lines: Vec<usize> = (0..measured.frequencies_hz.len())
        .filter(|&i| {
            let f = measured.frequencies_hz[i];
            f > 0.0 && f >= params.f_min_hz && f <= params.f_max_hz
        })
        .collect();
    if lines.len() < 2 {
        return Err(CalibrateError::Invalid(vec![format!(
            "the band {}..={} Hz holds {} measured lines; at least 2 are needed",
            params.f_min_hz,
            params.f_max_hz,
            lines.len()
        )]));
    }
    let band_hz: Vec<f64> = lines.iter().map(|&i| measured.frequencies_hz[i]).collect();
    let kind = if measured.has_phase() {
        FracKind::Complex
    } else {
        FracKind::Magnitude
    };
    let mut frac = Vec::with_capacity(measured.channels());
    for (c, &floor) in measured.output_floors.iter().enumerate() {
        let x = model_accelerance(model, measured.input_floor, floor, &band_hz)?;
        let value = match measured.complex() {
            Some(data) => {
                let a: Vec<C64> = lines.iter().map(|&i| data[c][i]).collect();
                frac_complex(&x, &a)
            }
            None => {
                let magnitude = measured.magnitude(c);
                let a: Vec<f64> = lines.iter().map(|&i| magnitude[i]).collect();
                let xm: Vec<f64> = x.iter().map(|z| z.norm()).collect();
                frac_magnitude(&xm, &a)
            }
        };
        frac.push(ChannelFrac {
            output_floor: floor,
            kind,
            frac: value.unwrap_or(0.0),
        });
    }
    let modes = model.modes();
    let model_zetas = modal_damping_ratios(modes, model.damping_matrix());
    let model_shapes: Vec<Vec<f64>> = (0..modes.len())
        .map(|r| {
            measured
                .output_floors
                .iter()
                .map(|&f| modes.shapes[(f - 1, r)])
                .collect()
        })
        .collect();
    let identified_shapes: Vec<Vec<f64>> =
        identified.iter().map(IdentifiedMode::real_shape).collect();
    let matrix = mac_matrix(&identified_shapes, &model_shapes);
    let pairing = pair_by_mac(identified_shapes, model_shapes);
    let pairs: Vec<ModePair> = identified
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let r = pairing[i];
            let model_hz = modes.omegas_rad_s[r] / TAU;
            ModePair {
                identified: i,
                model_mode: r + 1,
                identified_hz: m.natural_frequency_hz,
                model_hz,
                error_percent: 100.0 * (model_hz - m.natural_frequency_hz) / m.natural_frequency_hz,
                mac: matrix[i][r],
                identified_damping_ratio: m.damping_ratio,
                model_damping_ratio: model_zetas[r],
            }
        })
        .collect();
    let errors: Vec<f64> = pairs.iter().map(|p| p.error_percent.abs()).collect();
    let summary = CrossValSummary {
        mean_abs_frequency_error_percent: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
        max_abs_frequency_error_percent: errors.iter().copied().reduce(f64::max),
        min_pair_mac: pairs.iter().map(|p| p.mac).reduce(f64::min),
        mean_frac: frac.iter().map(|f| f.frac).sum::<f64>() / frac.len() as f64,
        frac_kind: kind,
    };
    Ok(CrossValidation {
        mac_matrix: matrix,
        pairs,
        frac,
        lines: lines.len(),
        summary,
    })
}
