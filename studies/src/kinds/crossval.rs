//! The `crossval` study: the study's model against one measurement (an `frf` input, or a
//! shaker test's `acceleration` with `force`), in numbers: per mode the frequency error and
//! the MAC of the modes identified from the measurement (rational-fraction fit) with the
//! model's, the FRAC of every channel, and the measured and model FRFs side by side for overlay
//! plots. A magnitude-only (dB) measurement gets the magnitude FRAC and the frequency errors of
//! its peaks (no MAC: no phase, no shapes). One chunk; no randomness. The comparison itself is
//! `dtop_calibrate::crossvalidate`.

use dtop_calibrate::crossval::{CrossValParams, model_accelerance};
use dtop_calibrate::rfp::{MAX_DENOMINATOR_ORDER, default_max_damping_ratio};
use dtop_calibrate::{
    IdentifiedMode, MeasuredFrf, PeakSearch, RationalFitParams, crossvalidate, find_mode_windows,
    rational_fraction_fit,
};
use serde::{Deserialize, Serialize};

use super::ema::{
    DEFAULT_OVERLAP, DEFAULT_SEGMENT_S, MAX_MODES, band_lines, band_problems, calibrate_error,
    default_band_hz, mode_json, welch_problems,
};
use crate::measured::{self, H1Settings, Source};
use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// The measurement to compare with: exactly one of them.
pub const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "frf",
        required: false,
        description: "a measured FRF (give this or acceleration): frequency_hz, then per measured floor k floor{k}_re and floor{k}_im (accelerance, (m/s²)/N) or floor{k}_db (dB re 1 (m/s²)/N)",
    },
    InputSpec {
        name: "acceleration",
        required: false,
        description: "a stored shaker test (give this or frf): time_s, floor{k}_accel (m/s²) per floor and force (N); H1 and its coherence per floor are computed by Welch's method",
    },
];

/// Parameters of `crossval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Floor (1-based) where the force entered: the model's force gauge floor by default.
    pub input_floor: usize,
    /// Lower end of the compared band, in Hz (> 0).
    pub f_min_hz: f64,
    /// Upper end of the compared band, in Hz.
    pub f_max_hz: f64,
    /// Modes to identify from the measurement (rational-fraction fit) for frequency errors and
    /// MAC; at most the model's number of modes.
    pub modes: usize,
    /// Degree of the rational fit's common denominator; `null` for 2·modes + 2.
    pub rfp_denominator_order: Option<usize>,
    /// Welch segment length for a shaker test, in s.
    pub segment_s: f64,
    /// Overlap of consecutive Welch segments, fraction in [0, 1).
    pub overlap: f64,
}

impl Params {
    /// The defaults for `model`: as `ema`'s (force gauge floor, band from half the lowest to
    /// 1.25 times the highest natural frequency, one mode per floor, 20 s half-overlapping
    /// segments).
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let (f_min_hz, f_max_hz) = default_band_hz(model);
        Self {
            input_floor: model.sensors.force_gauge_floor.unwrap_or(1),
            f_min_hz,
            f_max_hz,
            modes: model.floors().clamp(1, MAX_MODES),
            rfp_denominator_order: None,
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
}

fn validate(
    model: &ModelSpec,
    params: &Params,
    inputs: &Inputs,
) -> Result<(MeasuredFrf, Source), StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let mut problems = band_problems(params.f_min_hz, params.f_max_hz);
    problems.extend(welch_problems(params.segment_s, params.overlap));
    let most = building.dofs().min(MAX_MODES);
    if !(1..=most).contains(&params.modes) {
        problems.push(FieldProblem::new(
            "params.modes",
            format!(
                "{} must lie in 1..={most} (the model has {} modes)",
                params.modes,
                building.dofs()
            ),
        ));
    }
    let order = params.rfp_denominator_order.unwrap_or(2 * params.modes + 2);
    if order < 2 * params.modes || order > MAX_DENOMINATOR_ORDER {
        problems.push(FieldProblem::new(
            "params.rfp_denominator_order",
            format!(
                "{order} must lie in {}..={MAX_DENOMINATOR_ORDER}",
                2 * params.modes
            ),
        ));
    }
    let settings = if problems.is_empty() {
        params.h1()
    } else {
        H1Settings::lenient()
    };
    match measured::measurement(inputs, &settings, params.input_floor) {
        Ok((frf, source)) => {
            problems.extend(measured::floor_problems(&frf, source, model.floors()));
            let lines = band_lines(&frf, params.f_min_hz, params.f_max_hz).len();
            if problems.is_empty() && lines < 2 {
                problems.push(FieldProblem::new(
                    "params.f_min_hz",
                    format!(
                        "the band {}..={} Hz holds {lines} measured lines; give a band inside the measurement ({}..={} Hz)",
                        params.f_min_hz,
                        params.f_max_hz,
                        frf.frequencies_hz.first().copied().unwrap_or(0.0),
                        frf.frequencies_hz.last().copied().unwrap_or(0.0),
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

/// One chunk; work = lines in the band × channels × DOFs² (one complex solve per line).
///
/// # Errors
/// Every problem of the model, the parameters and the measurement; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let (frf, _) = validate(model, params, inputs)?;
    let dofs = model.building().map_or(1, |b| b.dofs()) as u64;
    let work_units = (band_lines(&frf, params.f_min_hz, params.f_max_hz).len() as u64)
        .saturating_mul(frf.channels() as u64)
        .saturating_mul(dofs * dofs);
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

/// The comparison, as the study's output in JSON.
///
/// # Errors
/// [`StudyError::Invalid`] as in [`check`]; [`StudyError::Numerics`] when the model FRF
/// cannot be evaluated; [`StudyError::Cancelled`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    _chunk: u32,
    ctx: &ChunkCtx<'_>,
    inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let (frf, source) = validate(model, params, inputs)?;
    let building = model.building().map_err(StudyError::Invalid)?;
    let floors = model.floors();
    let model_hz = building.natural_frequencies_hz();
    // Identified modes for frequency errors and MAC: a failed identification is reported,
    // not hidden, and the FRAC still stands.
    let mut identification = serde_json::json!({});
    let mut identified: Vec<IdentifiedMode> = Vec::new();
    if frf.has_phase() {
        ctx.check()?;
        let rfp = RationalFitParams {
            f_min_hz: params.f_min_hz,
            f_max_hz: params.f_max_hz,
            modes: params.modes,
            denominator_order: params.rfp_denominator_order,
            max_damping_ratio: default_max_damping_ratio(),
        };
        match rational_fraction_fit(&frf, &rfp) {
            Ok(fit) => {
                identification = serde_json::json!({
                    "method": "rfp",
                    "misfit_relative_with_residual_terms": fit.misfit_relative,
                });
                identified = fit.modes;
            }
            Err(e) => {
                identification = serde_json::json!({
                    "method": "rfp",
                    "error": calibrate_error("the rational-fraction fit failed, so there are no frequency errors or MAC", &e).to_string(),
                });
            }
        }
    } else {
        // No phase: the peaks of the magnitude, paired with the model's modes by rank.
        let search = PeakSearch {
            max_modes: params.modes,
            ..PeakSearch::band(params.f_min_hz, params.f_max_hz)
        };
        identification = match find_mode_windows(&frf, &search) {
            Ok(peaks) => {
                let mut found: Vec<f64> = peaks.iter().map(|p| p.peak_hz).collect();
                found.sort_by(f64::total_cmp);
                let pairs: Vec<serde_json::Value> = found
                    .iter()
                    .zip(&model_hz)
                    .enumerate()
                    .map(|(r, (peak, model))| {
                        serde_json::json!({
                            "model_mode": r + 1,
                            "peak_hz": peak,
                            "model_hz": model,
                            "error_percent": 100.0 * (model - peak) / peak,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "method": "peaks",
                    "note": "magnitude-only data: frequency errors are of the magnitude peaks (to a line), paired with the model's modes by rank; no MAC without phase",
                    "peak_pairs": pairs,
                })
            }
            Err(e) => serde_json::json!({
                "method": "peaks",
                "error": calibrate_error("no peak found", &e).to_string(),
            }),
        };
    }
    ctx.check()?;
    let band = CrossValParams {
        f_min_hz: params.f_min_hz,
        f_max_hz: params.f_max_hz,
    };
    let comparison = crossvalidate(&building, &frf, &identified, &band)
        .map_err(|e| calibrate_error("the comparison failed", &e))?;
    let lines = band_lines(&frf, params.f_min_hz, params.f_max_hz);
    let band_hz: Vec<f64> = lines.iter().map(|&i| frf.frequencies_hz[i]).collect();
    let mut columns = vec![Column {
        name: "frequency_hz".into(),
        values: band_hz.clone(),
    }];
    for (c, &floor) in frf.output_floors.iter().enumerate() {
        ctx.check()?;
        let model_h = model_accelerance(&building, frf.input_floor, floor, &band_hz)
            .map_err(|e| calibrate_error("the model FRF failed", &e))?;
        let measured_m = frf.magnitude(c);
        columns.push(Column {
            name: format!("floor{floor}_measured_m_per_s2_per_n"),
            values: lines.iter().map(|&i| measured_m[i]).collect(),
        });
        columns.push(Column {
            name: format!("floor{floor}_model_m_per_s2_per_n"),
            values: model_h.iter().map(|h| h.norm()).collect(),
        });
        if let Some(data) = frf.complex() {
            columns.push(Column {
                name: format!("floor{floor}_measured_phase_deg"),
                values: lines
                    .iter()
                    .map(|&i| data[c][i].arg().to_degrees())
                    .collect(),
            });
            columns.push(Column {
                name: format!("floor{floor}_model_phase_deg"),
                values: model_h.iter().map(|h| h.arg().to_degrees()).collect(),
            });
        }
    }
    let summary = serde_json::json!({
        "source": source.input_name(),
        "input_floor": frf.input_floor,
        "output_floors": frf.output_floors,
        "band_hz": [params.f_min_hz, params.f_max_hz],
        "lines": comparison.lines,
        "model_frequencies_hz": model_hz,
        "identification": identification,
        "identified_modes": identified
            .iter()
            .map(|m| mode_json(m, &frf.output_floors, floors, "rfp"))
            .collect::<Vec<_>>(),
        "pairs": comparison.pairs,
        "mac_matrix": comparison.mac_matrix,
        "frac": comparison.frac,
        "mean_abs_frequency_error_percent": comparison.summary.mean_abs_frequency_error_percent,
        "max_abs_frequency_error_percent": comparison.summary.max_abs_frequency_error_percent,
        "min_pair_mac": comparison.summary.min_pair_mac,
        "mean_frac": comparison.summary.mean_frac,
        "frac_kind": comparison.summary.frac_kind,
    });
    let output = StudyOutput::new(
        summary,
        vec![NamedArray {
            name: "frf".into(),
            columns,
        }],
    );
    serde_json::to_value(&output).map_err(|e| StudyError::Numerics(e.to_string()))
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
    super::single_output(crate::StudyKind::Crossval, chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use dtop_calibrate::FrfValues;
    use serde_json::json;

    use super::*;
    use crate::StudyKind;
    use crate::kinds::run_study;
    use crate::measured::frf_table;
    use crate::model::builtin_model;

    /// The model's own accelerance from floor 1 on a 0.01 Hz grid, by dtop-dynamics' direct
    /// solve, as a measurement.
    fn own_frf(model: &ModelSpec, magnitude_only: bool) -> Inputs {
        let building = model.building().unwrap();
        let f: Vec<f64> = (1..=4000).map(|i| f64::from(i) * 0.01).collect();
        let channels: Vec<Vec<_>> = (1..=model.floors())
            .map(|floor| model_accelerance(&building, 1, floor, &f).unwrap())
            .collect();
        let frf = MeasuredFrf {
            frequencies_hz: f,
            input_floor: 1,
            output_floors: (1..=model.floors()).collect(),
            accelerance_m_s2_per_n: if magnitude_only {
                FrfValues::Magnitude {
                    channels: channels
                        .iter()
                        .map(|c| c.iter().map(|h| h.norm()).collect())
                        .collect(),
                }
            } else {
                FrfValues::Complex { channels }
            },
            coherence: None,
        };
        Inputs::new(vec![frf_table(&frf)]).unwrap()
    }

    #[test]
    fn a_model_against_its_own_frf_scores_full_frac_mac_and_no_frequency_error() {
        let model = builtin_model("southampton").unwrap();
        let out = run_study(
            StudyKind::Crossval,
            &model,
            &json!({}),
            &own_frf(&model, false),
        )
        .unwrap();
        // The RFP is exact on noise-free modal sums up to its conditioning (~1e-8 here), so
        // frequencies agree to 1e-4 % and MAC to 1e-6; the FRAC compares the model with
        // itself, 1 to rounding.
        assert!(
            out.summary["max_abs_frequency_error_percent"]
                .as_f64()
                .unwrap()
                < 1e-4
        );
        assert!(out.summary["min_pair_mac"].as_f64().unwrap() > 1.0 - 1e-6);
        for f in out.summary["frac"].as_array().unwrap() {
            assert!(f["frac"].as_f64().unwrap() > 1.0 - 1e-12, "{f}");
        }
        assert_eq!(out.summary["frac_kind"], json!("complex"));
        let frf = &out.arrays[0];
        assert_eq!(frf.name, "frf");
        assert_eq!(frf.columns.len(), 1 + 3 * 4);
        assert!(
            frf.columns
                .iter()
                .any(|c| c.name == "floor2_model_phase_deg")
        );

        // Magnitudes only: the magnitude FRAC, and peaks within a line of the modes.
        let out = run_study(
            StudyKind::Crossval,
            &model,
            &json!({}),
            &own_frf(&model, true),
        )
        .unwrap();
        assert_eq!(out.summary["frac_kind"], json!("magnitude"));
        assert_eq!(out.summary["identification"]["method"], json!("peaks"));
        for p in out.summary["identification"]["peak_pairs"]
            .as_array()
            .unwrap()
        {
            let (peak, f) = (
                p["peak_hz"].as_f64().unwrap(),
                p["model_hz"].as_f64().unwrap(),
            );
            assert!((peak - f).abs() <= 0.01, "{p}");
        }
        assert_eq!(out.arrays[0].columns.len(), 1 + 3 * 2);
    }

    #[test]
    fn a_model_against_its_own_shaker_test_scores_high_frac_and_mac_from_h1() {
        use crate::kinds::ema::tests::{damped_chain, shaker_test};
        let model = damped_chain();
        let inputs = Inputs::new(vec![shaker_test(&model, 160.0, 200.0)]).unwrap();
        let out = run_study(
            StudyKind::Crossval,
            &model,
            &json!({ "segment_s": 16.0 }),
            &inputs,
        )
        .unwrap();
        assert_eq!(out.summary["source"], json!("acceleration"));
        // H1 of 1 %-noisy responses through a Hann window: the FRF is the model's up to the
        // window's smoothing of the peaks (a few per cent of their height, see the ema test),
        // so FRAC and MAC stay above 0.95 and the frequencies within half a line (0.5 %).
        for f in out.summary["frac"].as_array().unwrap() {
            assert!(f["frac"].as_f64().unwrap() > 0.95, "{f}");
        }
        assert!(out.summary["min_pair_mac"].as_f64().unwrap() > 0.95);
        assert!(
            out.summary["max_abs_frequency_error_percent"]
                .as_f64()
                .unwrap()
                < 0.5
        );
    }

    #[test]
    fn crossval_refuses_no_measurement_and_floors_or_modes_the_model_lacks() {
        let model = builtin_model("southampton").unwrap();
        let Err(StudyError::Invalid(p)) =
            run_study(StudyKind::Crossval, &model, &json!({}), &Inputs::none())
        else {
            panic!("a crossval without a measurement must be refused");
        };
        assert_eq!(p[0].field, "inputs");
        assert!(p[0].message.contains("give an frf input"), "{p:?}");
        let Err(StudyError::Invalid(p)) = run_study(
            StudyKind::Crossval,
            &model,
            &json!({ "modes": 4, "input_floor": 5 }),
            &own_frf(&model, false),
        ) else {
            panic!("bad params must be refused");
        };
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["params.modes", "params.input_floor"], "{p:?}");
    }
}
