//! The `ema` study: experimental modal analysis of one measurement (an `frf` input, or a shaker
//! test's `acceleration` with `force`, turned into H1 and coherence) by `dtop-calibrate`'s
//! least-squares rational-fraction fit and circle fit, with the fit quality, the measured and
//! synthesised FRFs, and the spatial model rebuilt from the modes when they make one. One
//! chunk; no randomness. The numerics are `dtop-calibrate`'s; this module only wires them.

use std::f64::consts::TAU;

use dtop_calibrate::measured::C64;
use dtop_calibrate::rfp::{MAX_DENOMINATOR_ORDER, default_max_damping_ratio};
use dtop_calibrate::{
    CalibrateError, CircleFitParams, IdentifiedMode, MeasuredFrf, PeakSearch, RationalFitParams,
    WindowChoice, circle_fit, model_from_modes, rational_fraction_fit,
};
use serde::{Deserialize, Serialize};

use crate::measured::{self, H1Settings, Source};
use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// A measured FRF, or a shaker test to compute one from: exactly one of them.
pub const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "frf",
        required: false,
        description: "a measured FRF (give this or acceleration): frequency_hz, then per measured floor k floor{k}_re and floor{k}_im, accelerance in (m/s²)/N, optionally floor{k}_coherence; e.g. Cristallo's Experimental.csv as the CLI uploads it",
    },
    InputSpec {
        name: "acceleration",
        required: false,
        description: "a stored shaker test (give this or frf): time_s, floor{k}_accel (m/s²) per floor and force (N); H1 and its coherence per floor are computed by Welch's method",
    },
];

/// Most modes one study may ask for: far above the storeys of any rig the platform models.
pub const MAX_MODES: usize = 20;

/// Which fits to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The global rational-fraction fit (all channels, one denominator).
    Rfp,
    /// The circle fit, mode by mode, around peaks found by prominence.
    Circle,
    /// Both; the summary's `modes` are the rational fit's, each method's are beside them.
    Both,
}

/// Parameters of `ema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `rfp`, `circle` or `both`.
    pub method: Method,
    /// Floor (1-based) where the force entered: the model's force gauge floor by default.
    pub input_floor: usize,
    /// Lower end of the fitted band, in Hz (> 0).
    pub f_min_hz: f64,
    /// Upper end of the fitted band, in Hz.
    pub f_max_hz: f64,
    /// Number of modes to identify in the band.
    pub modes: usize,
    /// Degree of the rational fit's common denominator; `null` for 2·modes + 2.
    pub rfp_denominator_order: Option<usize>,
    /// Lines whose coherence γ² is below this are left out of the circle fit (shaker tests).
    pub min_coherence: f64,
    /// Welch segment length for a shaker test, in s; the FRF's line spacing is 1/segment_s.
    pub segment_s: f64,
    /// Overlap of consecutive Welch segments, fraction in [0, 1).
    pub overlap: f64,
}

/// The default band of `model`: from half its lowest natural frequency (down to 0.1 Hz) to
/// 1.25 times its highest, rounded up to a whole Hz; 2–50 Hz for a model without modes.
pub(crate) fn default_band_hz(model: &ModelSpec) -> (f64, f64) {
    let f = model
        .building()
        .map(|b| b.natural_frequencies_hz())
        .unwrap_or_default();
    let lo = f.first().copied().unwrap_or(4.0);
    let hi = f.last().copied().unwrap_or(40.0);
    let f_min_hz = ((5.0 * lo).floor() / 10.0).max(0.1);
    (f_min_hz, (1.25 * hi).ceil().max(f_min_hz + 1.0))
}

/// Default Welch segment of a shaker test, in s: 0.05 Hz lines.
pub(crate) const DEFAULT_SEGMENT_S: f64 = 20.0;
/// Default Welch overlap: half a segment, the usual choice for a Hann window.
pub(crate) const DEFAULT_OVERLAP: f64 = 0.5;

impl Params {
    /// The defaults for `model`: both methods, the force at the model's force gauge (floor 1
    /// without one), the band of [`default_band_hz`], one mode per floor, 20 s segments
    /// overlapping by half.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let (f_min_hz, f_max_hz) = default_band_hz(model);
        Self {
            method: Method::Both,
            input_floor: model.sensors.force_gauge_floor.unwrap_or(1),
            f_min_hz,
            f_max_hz,
            modes: model.floors().clamp(1, MAX_MODES),
            rfp_denominator_order: None,
            min_coherence: 0.0,
            segment_s: DEFAULT_SEGMENT_S,
            overlap: DEFAULT_OVERLAP,
        }
    }

    fn h1(&self) -> H1Settings {
        H1Settings {
            segment_s: self.segment_s,
            overlap: self.overlap,
            f_min_hz: self.f_min_hz,
            f_max_hz: self.f_max_hz,
        }
    }

    fn order(&self) -> usize {
        self.rfp_denominator_order.unwrap_or(2 * self.modes + 2)
    }
}

/// The band's problems, under `params.f_min_hz` / `params.f_max_hz`.
pub(crate) fn band_problems(f_min_hz: f64, f_max_hz: f64) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if !(f_min_hz.is_finite() && f_min_hz > 0.0) {
        problems.push(FieldProblem::new(
            "params.f_min_hz",
            format!("{f_min_hz} must be positive and finite (mobility is undefined at 0 Hz)"),
        ));
    }
    if !(f_max_hz.is_finite() && f_max_hz > f_min_hz) {
        problems.push(FieldProblem::new(
            "params.f_max_hz",
            format!("{f_max_hz} must be finite and above f_min_hz = {f_min_hz}"),
        ));
    }
    problems
}

/// Welch settings' problems, under `params.segment_s` / `params.overlap`.
pub(crate) fn welch_problems(segment_s: f64, overlap: f64) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if !(segment_s.is_finite() && segment_s > 0.0) {
        problems.push(FieldProblem::new(
            "params.segment_s",
            format!("{segment_s} must be positive and finite"),
        ));
    }
    if !(0.0..0.95).contains(&overlap) {
        problems.push(FieldProblem::new(
            "params.overlap",
            format!("{overlap} must lie in [0, 0.95)"),
        ));
    }
    problems
}

/// Lines of `frf` inside the band.
pub(crate) fn band_lines(frf: &MeasuredFrf, f_min_hz: f64, f_max_hz: f64) -> Vec<usize> {
    (0..frf.frequencies_hz.len())
        .filter(|&i| {
            let f = frf.frequencies_hz[i];
            f > 0.0 && f >= f_min_hz && f <= f_max_hz
        })
        .collect()
}

/// Everything `check` and `run_chunk` both need: the parameters and the measurement checked
/// against the model, every problem at once.
fn validate(
    model: &ModelSpec,
    params: &Params,
    inputs: &Inputs,
) -> Result<(MeasuredFrf, Source), StudyError> {
    let floors = model.floors();
    let mut problems = band_problems(params.f_min_hz, params.f_max_hz);
    problems.extend(welch_problems(params.segment_s, params.overlap));
    if !(1..=MAX_MODES).contains(&params.modes) {
        problems.push(FieldProblem::new(
            "params.modes",
            format!("{} must lie in 1..={MAX_MODES}", params.modes),
        ));
    }
    let order = params.order();
    if order < 2 * params.modes || order > MAX_DENOMINATOR_ORDER {
        problems.push(FieldProblem::new(
            "params.rfp_denominator_order",
            format!(
                "{order} must lie in {}..={MAX_DENOMINATOR_ORDER}: each mode needs a conjugate pair of poles",
                2 * params.modes
            ),
        ));
    }
    if !(0.0..1.0).contains(&params.min_coherence) {
        problems.push(FieldProblem::new(
            "params.min_coherence",
            format!("{} must lie in [0, 1)", params.min_coherence),
        ));
    }
    // Welch settings that are wrong would only add noise to the input's problems.
    let settings = if problems.is_empty() {
        params.h1()
    } else {
        H1Settings::lenient()
    };
    let measured = measured::measurement(inputs, &settings, params.input_floor);
    match measured {
        Ok((frf, source)) => {
            problems.extend(measured::floor_problems(&frf, source, floors));
            if !frf.has_phase() {
                problems.push(FieldProblem::new(
                    "inputs.frf",
                    "has magnitudes only (floor{k}_db): both fits need the phase; give floor{k}_re and floor{k}_im, or a shaker test as acceleration (a crossval study compares a model with dB data)",
                ));
            }
            let lines = band_lines(&frf, params.f_min_hz, params.f_max_hz).len();
            let needed = 2 * (order + 1) + 1;
            if problems.is_empty() && lines < needed {
                problems.push(FieldProblem::new(
                    "params.f_min_hz",
                    format!(
                        "the band {}..={} Hz holds {lines} measured lines; {} modes need at least {needed}: widen the band, lower params.modes, or (shaker test) lengthen params.segment_s",
                        params.f_min_hz, params.f_max_hz, params.modes
                    ),
                ));
            }
            if problems.is_empty() {
                Ok((frf, source))
            } else {
                Err(StudyError::Invalid(problems))
            }
        }
        Err(p) => {
            problems.extend(p);
            Err(StudyError::Invalid(problems))
        }
    }
}

/// One chunk; work = lines in the band × channels × denominator order².
///
/// # Errors
/// Every problem of the model, the parameters and the measurement; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    inputs: &Inputs,
) -> Result<Plan, StudyError> {
    model.building().map_err(StudyError::Invalid)?;
    let (frf, _) = validate(model, params, inputs)?;
    let order = params.order() as u64;
    let work_units = (band_lines(&frf, params.f_min_hz, params.f_max_hz).len() as u64)
        .saturating_mul(frf.channels() as u64)
        .saturating_mul((order + 1) * (order + 1));
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    Ok(Plan {
        chunks: 1,
        work_units,
    })
}

/// A failure of `dtop-calibrate` as a study error, with what to try.
pub(crate) fn calibrate_error(what: &str, e: &CalibrateError) -> StudyError {
    let hint = match e {
        CalibrateError::NoPeak(_) => {
            "; widen the band (params.f_min_hz, params.f_max_hz) or check that the measurement shows resonances"
        }
        CalibrateError::NotIdentifiable(_) | CalibrateError::Invalid(_) => {
            "; try params.modes lower, a band around the resonances only, or the other method (params.method)"
        }
        _ => "",
    };
    StudyError::Numerics(format!("{what}: {e}{hint}"))
}

/// A mode in the shared summary convention: `frequency_hz`, `damping_ratio`, `shape` (one
/// real value per floor 1..=`floors`, unit peak, `null` where no channel measures the floor),
/// plus the estimate's spreads, its complexity (largest |Im A|/|A|) and the method.
pub(crate) fn mode_json(
    mode: &IdentifiedMode,
    output_floors: &[usize],
    floors: usize,
    method: &str,
) -> serde_json::Value {
    let mut shape: Vec<Option<f64>> = vec![None; floors];
    for (a, &floor) in mode.modal_constants_per_kg.iter().zip(output_floors) {
        if let Some(slot) = floor.checked_sub(1).and_then(|i| shape.get_mut(i)) {
            *slot = Some(a[0]);
        }
    }
    let peak = shape
        .iter()
        .flatten()
        .copied()
        .fold(0.0_f64, |p, x| if x.abs() > p.abs() { x } else { p });
    if peak != 0.0 {
        for x in shape.iter_mut().flatten() {
            *x /= peak;
        }
    }
    serde_json::json!({
        "frequency_hz": mode.natural_frequency_hz,
        "damping_ratio": mode.damping_ratio,
        "shape": shape,
        "frequency_std_hz": mode.natural_frequency_std_hz,
        "damping_ratio_std": mode.damping_ratio_std,
        "complexity": mode.complexity(),
        "method": method,
    })
}

/// Accelerance of the modal model −ω²·Σ_r A_r/(ω_r² − ω² + 2jζ_rω_rω) of channel `channel`
/// at `frequencies_hz` (no residual terms).
pub(crate) fn synthesise(
    modes: &[IdentifiedMode],
    channel: usize,
    frequencies_hz: &[f64],
) -> Vec<C64> {
    frequencies_hz
        .iter()
        .map(|&f| {
            let w = TAU * f;
            let receptance: C64 = modes
                .iter()
                .filter_map(|m| {
                    let a = m.modal_constants_per_kg.get(channel)?;
                    let wr = TAU * m.natural_frequency_hz;
                    Some(
                        C64::new(a[0], a[1])
                            / C64::new(wr * wr - w * w, 2.0 * m.damping_ratio * wr * w),
                    )
                })
                .sum();
            receptance * (-w * w)
        })
        .collect()
}

/// ‖H − Ĥ‖/‖H‖ of each channel over `lines`, and over all channels together.
fn residuals(
    frf: &MeasuredFrf,
    modes: &[IdentifiedMode],
    lines: &[usize],
) -> (Vec<f64>, f64, Vec<Vec<f64>>) {
    let band: Vec<f64> = lines.iter().map(|&i| frf.frequencies_hz[i]).collect();
    let data = frf.complex().unwrap_or_default();
    let (mut misfit, mut total) = (0.0, 0.0);
    let mut per_channel = Vec::new();
    let mut magnitudes = Vec::new();
    for (c, channel) in data.iter().enumerate() {
        let fit = synthesise(modes, c, &band);
        let (mut m, mut t) = (0.0, 0.0);
        for (&i, h) in lines.iter().zip(&fit) {
            m += (channel[i] - h).norm_sqr();
            t += channel[i].norm_sqr();
        }
        misfit += m;
        total += t;
        per_channel.push(if t > 0.0 { (m / t).sqrt() } else { f64::NAN });
        magnitudes.push(fit.iter().map(|h| h.norm()).collect());
    }
    let overall = if total > 0.0 {
        (misfit / total).sqrt()
    } else {
        f64::NAN
    };
    (per_channel, overall, magnitudes)
}

/// The summary of one method's fit, and its synthesised magnitudes per channel.
fn method_summary(
    frf: &MeasuredFrf,
    modes: &[IdentifiedMode],
    lines: &[usize],
    floors: usize,
    method: &str,
    extra: serde_json::Value,
) -> (serde_json::Value, Vec<Vec<f64>>) {
    let (per_channel, overall, magnitudes) = residuals(frf, modes, lines);
    let mut summary = serde_json::json!({
        "modes": modes
            .iter()
            .map(|m| mode_json(m, &frf.output_floors, floors, method))
            .collect::<Vec<_>>(),
        "residual_relative": overall,
        "residual_relative_per_floor": frf
            .output_floors
            .iter()
            .zip(&per_channel)
            .map(|(f, r)| serde_json::json!({ "floor": f, "residual_relative": r }))
            .collect::<Vec<_>>(),
    });
    if let (Some(s), serde_json::Value::Object(e)) = (summary.as_object_mut(), extra) {
        s.extend(e);
    }
    (summary, magnitudes)
}

/// The spatial model of `modes` when they make a complete set (one mode per floor, every floor
/// measured, the driving point among them), or why not.
fn spatial(modes: &[IdentifiedMode], frf: &MeasuredFrf, floors: usize) -> serde_json::Value {
    if modes.len() != floors {
        return serde_json::json!({
            "built": false,
            "reason": format!("{} modes identified for a {floors}-floor model: a spatial model needs one per floor", modes.len()),
        });
    }
    match model_from_modes(modes, frf.input_floor, &frf.output_floors) {
        Ok(s) => serde_json::json!({
            "built": true,
            "floor_masses_kg": s.config.floor_masses_kg,
            "storey_stiffness_n_per_m": s.config.storey_stiffness_n_per_m,
            "damping": s.config.damping,
            "mass_off_diagonal_ratio": s.mass_off_diagonal_ratio,
            "stiffness_chain_misfit": s.stiffness_chain_misfit,
            "mass_kg": s.mass_kg,
            "stiffness_n_per_m": s.stiffness_n_per_m,
            "damping_n_s_per_m": s.damping_n_s_per_m,
        }),
        Err(e) => serde_json::json!({ "built": false, "reason": e.to_string() }),
    }
}

/// The identification, as the study's output in JSON.
///
/// # Errors
/// [`StudyError::Invalid`] as in [`check`]; [`StudyError::Numerics`] when no method
/// identifies the modes (with the reason and what to try); [`StudyError::Cancelled`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    _chunk: u32,
    ctx: &ChunkCtx<'_>,
    inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let (frf, source) = validate(model, params, inputs)?;
    let floors = model.floors();
    let lines = band_lines(&frf, params.f_min_hz, params.f_max_hz);
    let band: Vec<f64> = lines.iter().map(|&i| frf.frequencies_hz[i]).collect();
    let mut fit_columns = vec![Column {
        name: "frequency_hz".into(),
        values: band.clone(),
    }];
    for (c, floor) in frf.output_floors.iter().enumerate() {
        let m = frf.magnitude(c);
        fit_columns.push(Column {
            name: format!("floor{floor}_measured_m_per_s2_per_n"),
            values: lines.iter().map(|&i| m[i]).collect(),
        });
    }
    let mut summary = serde_json::json!({
        "source": source.input_name(),
        "method": params.method,
        "input_floor": frf.input_floor,
        "output_floors": frf.output_floors,
        "band_hz": [params.f_min_hz, params.f_max_hz],
        "lines": lines.len(),
    });
    let mut primary: Option<(Vec<IdentifiedMode>, &str)> = None;
    let mut failures = Vec::new();
    if matches!(params.method, Method::Rfp | Method::Both) {
        ctx.check()?;
        let rfp_params = RationalFitParams {
            f_min_hz: params.f_min_hz,
            f_max_hz: params.f_max_hz,
            modes: params.modes,
            denominator_order: params.rfp_denominator_order,
            max_damping_ratio: default_max_damping_ratio(),
        };
        match rational_fraction_fit(&frf, &rfp_params) {
            Ok(fit) => {
                let (s, magnitudes) = method_summary(
                    &frf,
                    &fit.modes,
                    &lines,
                    floors,
                    "rfp",
                    serde_json::json!({
                        "misfit_relative_with_residual_terms": fit.misfit_relative,
                        "denominator_order": fit.denominator_order,
                        "candidate_poles": fit.candidate_poles,
                    }),
                );
                summary["rfp"] = s;
                push_fit(&mut fit_columns, &frf, "rfp", magnitudes);
                primary = Some((fit.modes, "rfp"));
            }
            Err(e) => {
                let e = calibrate_error("the rational-fraction fit failed", &e);
                summary["rfp"] = serde_json::json!({ "error": e.to_string() });
                failures.push(e);
            }
        }
    }
    if matches!(params.method, Method::Circle | Method::Both) {
        ctx.check()?;
        let circle_params = CircleFitParams {
            windows: WindowChoice::Search(PeakSearch {
                max_modes: params.modes,
                ..PeakSearch::band(params.f_min_hz, params.f_max_hz)
            }),
            pair_angle_min_deg: dtop_calibrate::circle::default_pair_angle_min_deg(),
            pair_angle_max_deg: dtop_calibrate::circle::default_pair_angle_max_deg(),
            geometric_refinement: true,
            min_coherence: params.min_coherence,
        };
        match circle_fit(&frf, &circle_params) {
            Ok(fit) => {
                let modes: Vec<IdentifiedMode> = fit.modes.iter().map(|m| m.mode.clone()).collect();
                let (s, magnitudes) = method_summary(
                    &frf,
                    &modes,
                    &lines,
                    floors,
                    "circle",
                    serde_json::json!({
                        "peaks": fit.peaks,
                        "windows": fit.modes.iter().map(|m| m.window).collect::<Vec<_>>(),
                        "channels": fit.modes.iter().map(|m| &m.channels).collect::<Vec<_>>(),
                    }),
                );
                summary["circle"] = s;
                push_fit(&mut fit_columns, &frf, "circle", magnitudes);
                if primary.is_none() {
                    primary = Some((modes, "circle"));
                }
            }
            Err(e) => {
                let e = calibrate_error("the circle fit failed", &e);
                summary["circle"] = serde_json::json!({ "error": e.to_string() });
                failures.push(e);
            }
        }
    }
    let Some((modes, method)) = primary else {
        return Err(failures
            .into_iter()
            .reduce(|a, b| StudyError::Numerics(format!("{a}; {b}")))
            .unwrap_or_else(|| StudyError::Numerics("no method was run".into())));
    };
    summary["modes_from"] = serde_json::json!(method);
    summary["modes"] = serde_json::json!(
        modes
            .iter()
            .map(|m| mode_json(m, &frf.output_floors, floors, method))
            .collect::<Vec<_>>()
    );
    summary["spatial_model"] = spatial(&modes, &frf, floors);
    let mut arrays = vec![NamedArray {
        name: "fit".into(),
        columns: fit_columns,
    }];
    if let Some(coherence) = &frf.coherence {
        let mut columns = vec![Column {
            name: "frequency_hz".into(),
            values: frf.frequencies_hz.clone(),
        }];
        for (floor, gamma) in frf.output_floors.iter().zip(coherence) {
            columns.push(Column {
                name: format!("floor{floor}_coherence"),
                values: gamma.clone(),
            });
        }
        arrays.push(NamedArray {
            name: "coherence".into(),
            columns,
        });
    }
    let output = StudyOutput::new(summary, arrays);
    serde_json::to_value(&output).map_err(|e| StudyError::Numerics(e.to_string()))
}

fn push_fit(columns: &mut Vec<Column>, frf: &MeasuredFrf, method: &str, magnitudes: Vec<Vec<f64>>) {
    for (floor, values) in frf.output_floors.iter().zip(magnitudes) {
        columns.push(Column {
            name: format!("floor{floor}_{method}_m_per_s2_per_n"),
            values,
        });
    }
}

/// The one chunk's output is the result.
///
/// # Errors
/// [`StudyError::BadChunk`] unless there is exactly one chunk holding a [`StudyOutput`].
pub fn reduce(
    _model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    super::single_output(crate::StudyKind::Ema, chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use dtop_calibrate::crossval::model_accelerance;
    use dtop_calibrate::{AccelerationUnit, parse_complex_accelerance, parse_db_accelerance};
    use dtop_dynamics::{Damping as ModelDamping, ShearBuildingConfig};
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    use rustfft::FftPlanner;
    use serde_json::json;

    use super::*;
    use crate::StudyKind;
    use crate::kinds::run_study;
    use crate::measured::frf_table;
    use crate::measured::tests::cristallo_file;
    use crate::model::{SensorLayout, builtin_model};

    /// The Southampton rig's measured FRF, `Experimental.csv`, read in (m/s²)/N: its
    /// driving-point modal masses match the published 5.201 kg floors that way (see
    /// `dtop_calibrate::AccelerationUnit`).
    fn southampton_frf() -> Inputs {
        let frf = parse_complex_accelerance(
            &cristallo_file("Experimental.csv"),
            AccelerationUnit::MetrePerSecondSquared,
        )
        .unwrap();
        Inputs::new(vec![frf_table(&frf)]).unwrap()
    }

    fn frequencies(modes: &serde_json::Value) -> Vec<f64> {
        modes
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["frequency_hz"].as_f64().unwrap())
            .collect()
    }

    fn fracs(out: &StudyOutput) -> Vec<f64> {
        out.summary["frac"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["frac"].as_f64().unwrap())
            .collect()
    }

    #[test]
    fn ema_of_the_southampton_frfs_finds_their_peaks_and_a_model_updated_to_them_fits_them_better()
    {
        let model = builtin_model("southampton").unwrap();
        let inputs = southampton_frf();
        let ema = run_study(StudyKind::Ema, &model, &json!({}), &inputs).unwrap();
        // The peaks of the same measurement's magnitude (ExpDataSo.csv, TOOLS.md § 6.2), on
        // lines 0.03125 Hz apart. A mode damped ~0.2 % peaks within ζ²·f_n (< 1e-4 Hz) of
        // f_n, so f_n lies within half a line of its peak line; one line allows for the
        // neighbouring modes' tails, which shift a peak by a fraction of a line.
        let peaks_hz = [6.5, 17.469, 26.5];
        let line_hz = 0.03125;
        for method in ["rfp", "circle"] {
            let f = frequencies(&ema.summary[method]["modes"]);
            assert_eq!(f.len(), 3, "{method}: {:#}", ema.summary[method]);
            for (f, peak) in f.iter().zip(peaks_hz) {
                assert!(
                    (f - peak).abs() <= line_hz,
                    "{method}: {f} Hz vs the peak {peak} Hz"
                );
            }
            // A modal model of three modes explains the band to a few per cent (the rest is
            // noise and the modes outside it).
            let residual = ema.summary[method]["residual_relative"].as_f64().unwrap();
            assert!(residual < 0.5, "{method}: residual {residual}");
        }
        assert_eq!(ema.summary["modes"], ema.summary["rfp"]["modes"]);
        let shape = &ema.summary["modes"][0]["shape"];
        assert_eq!(shape.as_array().unwrap().len(), 3);
        assert_eq!(
            ema.summary["spatial_model"]["built"],
            json!(true),
            "{:#}",
            ema.summary["spatial_model"]
        );
        let fit = ema.arrays.iter().find(|a| a.name == "fit").unwrap();
        let names: Vec<&str> = fit.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[0], "frequency_hz");
        assert!(names.contains(&"floor3_circle_m_per_s2_per_n"), "{names:?}");

        // The test: update the model to the identified modes (pasted unchanged, with
        // modal damping from them), then compare it and the nominal model with the measurement
        // over the same band.
        let update = run_study(
            StudyKind::Update,
            &model,
            &json!({ "targets": ema.summary["modes"], "damping": "modal" }),
            &Inputs::none(),
        )
        .unwrap();
        let updated = update.proposed_model.unwrap().spec;
        let band =
            json!({ "f_min_hz": ema.summary["band_hz"][0], "f_max_hz": ema.summary["band_hz"][1] });
        let nominal = run_study(StudyKind::Crossval, &model, &band, &inputs).unwrap();
        let after = run_study(StudyKind::Crossval, &updated, &band, &inputs).unwrap();
        println!(
            "EMA {:?} Hz; updated storeys {}; FRAC nominal {:?}, updated {:?}",
            frequencies(&ema.summary["modes"]),
            update.summary["fitted_stiffness_n_per_m"],
            fracs(&nominal),
            fracs(&after)
        );
        for (n, u) in fracs(&nominal).iter().zip(fracs(&after)) {
            assert!(u > *n, "FRAC updated {u} vs nominal {n}");
        }
        assert!(
            after.summary["max_abs_frequency_error_percent"]
                .as_f64()
                .unwrap()
                < nominal.summary["max_abs_frequency_error_percent"]
                    .as_f64()
                    .unwrap()
        );
    }

    #[test]
    fn ema_and_crossval_plan_from_an_empty_submission_to_params_that_plan_to_themselves() {
        let model = builtin_model("southampton").unwrap();
        let inputs = southampton_frf();
        for kind in [StudyKind::Ema, StudyKind::Crossval] {
            let budget = Budget::default();
            let first = crate::plan(kind, &model, &json!({}), &inputs, &budget).unwrap();
            let again = crate::plan(kind, &model, &first.params, &inputs, &budget).unwrap();
            assert_eq!(first, again, "{kind}");
            assert_eq!(first.chunks, 1);
        }
        // One method alone: its modes are the summary's, the other is not run.
        let out = run_study(
            StudyKind::Ema,
            &model,
            &json!({ "method": "circle" }),
            &inputs,
        )
        .unwrap();
        assert_eq!(out.summary["modes_from"], json!("circle"));
        assert_eq!(out.summary["modes"], out.summary["circle"]["modes"]);
        assert!(out.summary.get("rfp").is_none());
    }

    /// A 3-floor chain damped about 1.5 %, so a short record resolves its modes.
    pub(crate) fn damped_chain() -> ModelSpec {
        ModelSpec {
            description: "test chain".into(),
            structure: ShearBuildingConfig {
                floor_masses_kg: vec![2.0, 1.5, 1.0],
                storey_stiffness_n_per_m: vec![12_000.0, 9_000.0, 6_000.0],
                damping: ModelDamping::Rayleigh {
                    alpha_per_s: 1.0,
                    beta_s: 2.0e-4,
                },
                actuator: None,
            },
            sensors: SensorLayout {
                force_gauge_floor: Some(1),
                ..SensorLayout::default()
            },
        }
    }

    /// A shaker test of `model`: periodic random force at floor 1 (flat spectrum up to 40 Hz,
    /// random phases), every floor's acceleration by the model's accelerance
    /// (`dtop_calibrate::crossval::model_accelerance`, a direct solve) line by line, which is
    /// exact for a periodic record, plus 1 % white noise on each accelerometer.
    pub(crate) fn shaker_test(model: &ModelSpec, seconds: f64, rate_hz: f64) -> NamedArray {
        let n = (seconds * rate_hz).round() as usize;
        let building = model.building().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let freqs: Vec<f64> = (0..=n / 2).map(|k| k as f64 * rate_hz / n as f64).collect();
        let force: Vec<C64> = freqs
            .iter()
            .map(|&f| {
                if f > 0.0 && f <= 40.0 {
                    C64::from_polar(1.0, rand::Rng::random_range(&mut rng, 0.0..TAU))
                } else {
                    C64::new(0.0, 0.0)
                }
            })
            .collect();
        let mut planner = FftPlanner::new();
        let inverse = planner.plan_fft_inverse(n);
        let to_time = |half: &[C64]| -> Vec<f64> {
            let mut full = vec![C64::new(0.0, 0.0); n];
            for (k, v) in half.iter().enumerate() {
                full[k] = *v;
                if k > 0 && k < n - k {
                    full[n - k] = v.conj();
                }
            }
            inverse.process(&mut full);
            full.iter().map(|z| z.re / n as f64).collect()
        };
        let time: Vec<f64> = (0..n).map(|i| i as f64 / rate_hz).collect();
        let mut columns = vec![Column {
            name: "time_s".into(),
            values: time,
        }];
        for floor in 1..=model.floors() {
            let h = model_accelerance(&building, 1, floor, &freqs).unwrap();
            let spectrum: Vec<C64> = h.iter().zip(&force).map(|(h, f)| h * f).collect();
            let mut x = to_time(&spectrum);
            let rms = (x.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
            let noise = Normal::new(0.0, 0.01 * rms).unwrap();
            for v in &mut x {
                *v += noise.sample(&mut rng);
            }
            columns.push(Column {
                name: format!("floor{floor}_accel"),
                values: x,
            });
        }
        columns.push(Column {
            name: "force".into(),
            values: to_time(&force),
        });
        NamedArray {
            name: "acceleration".into(),
            columns,
        }
    }

    #[test]
    fn ema_of_a_shaker_test_identifies_the_models_modes_from_h1_with_coherence() {
        let model = damped_chain();
        let building = model.building().unwrap();
        let truth_hz = building.natural_frequencies_hz();
        let truth_zeta = modal_damping_ratios_of(&building);
        let inputs = Inputs::new(vec![shaker_test(&model, 160.0, 200.0)]).unwrap();
        let out = run_study(
            StudyKind::Ema,
            &model,
            &json!({ "segment_s": 16.0 }),
            &inputs,
        )
        .unwrap();
        assert_eq!(out.summary["source"], json!("acceleration"));
        let coherence = out.arrays.iter().find(|a| a.name == "coherence").unwrap();
        assert_eq!(coherence.columns.len(), 4);
        // 1 % noise on the response: γ² = 1/(1 + noise/signal power) is near 1 at the modes.
        for floor in &coherence.columns[1..] {
            let f = &coherence.columns[0].values;
            for truth in &truth_hz {
                let line = f.iter().position(|x| x >= truth).unwrap();
                assert!(floor.values[line] > 0.9, "{} at {truth} Hz", floor.name);
            }
        }
        for method in ["rfp", "circle"] {
            let modes = out.summary[method]["modes"].as_array().unwrap();
            assert_eq!(modes.len(), 3, "{method}");
            for ((m, f), z) in modes.iter().zip(&truth_hz).zip(&truth_zeta) {
                let got = m["frequency_hz"].as_f64().unwrap();
                let zeta = m["damping_ratio"].as_f64().unwrap();
                // Lines are 0.0625 Hz apart (16 s segments), 1 % of mode 1; the fits
                // interpolate between lines, so half a line (0.5 %, the OMA bound)
                // holds. ζ: the Hann window smooths the spectrum over its noise bandwidth,
                // 1.5 lines = 0.094 Hz, against a half-power band 2ζf of only 0.21 Hz for
                // mode 1, which widens the fitted resonance and biases ζ upwards by a fraction
                // of that ratio (< 0.45); 25 % is the damping bound for identification.
                assert!((got / f - 1.0).abs() < 0.005, "{method}: {got} vs {f} Hz");
                assert!((zeta / z - 1.0).abs() < 0.25, "{method}: ζ {zeta} vs {z}");
            }
        }
    }

    fn modal_damping_ratios_of(b: &dtop_dynamics::ShearBuilding) -> Vec<f64> {
        dtop_dynamics::frf::modal_damping_ratios(b.modes(), b.damping_matrix())
    }

    #[test]
    fn ema_refuses_a_missing_or_doubled_measurement_dbs_and_a_malformed_table_with_reasons() {
        let model = builtin_model("southampton").unwrap();
        let fields = |inputs: &Inputs, params: serde_json::Value| -> Vec<String> {
            match run_study(StudyKind::Ema, &model, &params, inputs) {
                Err(StudyError::Invalid(p)) => p.into_iter().map(|p| p.field).collect(),
                other => panic!("expected Invalid, got {other:?}"),
            }
        };
        assert_eq!(fields(&Inputs::none(), json!({})), ["inputs"]);
        let frf = southampton_frf().arrays()[0].clone();
        let both =
            Inputs::new(vec![frf.clone(), shaker_test(&damped_chain(), 10.0, 100.0)]).unwrap();
        assert_eq!(fields(&both, json!({})), ["inputs"]);
        let db = parse_db_accelerance(
            &cristallo_file("ExpDataSo.csv"),
            AccelerationUnit::MetrePerSecondSquared,
        )
        .unwrap();
        let db = Inputs::new(vec![frf_table(&db)]).unwrap();
        assert_eq!(fields(&db, json!({})), ["inputs.frf"]);
        // A malformed table, bad parameters and a band without lines, all at once where they
        // can be told apart.
        let mut broken = frf.clone();
        broken.columns[2].name = "floor1_imag".into();
        let broken = Inputs::new(vec![broken]).unwrap();
        assert_eq!(
            fields(&broken, json!({ "modes": 0, "overlap": 1.0 })),
            [
                "params.overlap",
                "params.modes",
                "inputs.frf.floor1_imag",
                "inputs.frf.floor1"
            ]
        );
        let short = Inputs::new(vec![shaker_test(&damped_chain(), 10.0, 100.0)]).unwrap();
        let f = fields(&short, json!({ "segment_s": 8.0 }));
        assert_eq!(f, ["inputs.acceleration"]);
        assert_eq!(
            fields(
                &southampton_frf(),
                json!({ "f_min_hz": 200.0, "f_max_hz": 300.0 })
            ),
            ["params.f_min_hz"]
        );
        // A measured floor the model lacks.
        let mut four = frf.clone();
        four.columns[5].name = "floor4_re".into();
        four.columns[6].name = "floor4_im".into();
        let four = Inputs::new(vec![four]).unwrap();
        assert_eq!(fields(&four, json!({})), ["inputs.frf.floor4"]);
    }
}
