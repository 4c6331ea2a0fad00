//! The `control` study: a vibration-control law (passive TMD, direct velocity feedback, LQG)
//! assessed on any model with an inertial actuator, or on a model without one to which the
//! default actuator is fitted on `actuator_floor`. The numerics are
//! `dtop_dynamics::ControlStudy::run` (definitions in dynamics/CONTROL.md), as the CLI's
//! `control` command drives it. One chunk; no randomness.

use dtop_dynamics::control::laws::MAX_DVF_GAIN_A_PER_M_S;
use dtop_dynamics::control::{
    ActuatorElectrics, Compensator, ControlError, ControlLaw, ControlStudy, LqgWeights, TmdTuning,
};
use dtop_dynamics::{FrequencyGrid, InertialActuator, ShearBuildingConfig};
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// The law's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LawName {
    /// Passive tuned-mass damper: the proof mass on its suspension, no current.
    Tmd,
    /// Direct velocity feedback of the host floor, i = h·C(s)·v.
    Dvf,
    /// LQR plus a Kalman estimator on the floor accelerations.
    Lqg,
}

/// Parameters of `control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The law: `tmd`, `dvf` or `lqg`.
    pub law: LawName,
    /// Floor (1-based) on which the default actuator is fitted when the model has none. Must
    /// be absent when the model has its own actuator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator_floor: Option<usize>,
    /// DVF only: the gain h, in A/(m/s), within 0..=50. Give this or `critical_fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_a_per_m_s: Option<f64>,
    /// DVF only: h as a fraction of the critical gain of this position and compensator,
    /// zero or positive (1 is the stability limit). Give this or `gain_a_per_m_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_fraction: Option<f64>,
    /// DVF only: the compensator C(s); unity by default.
    #[serde(default)]
    pub compensator: Compensator,
    /// TMD only: re-tune the suspension by Den Hartog's rules for this mode (1-based);
    /// absent keeps the actuator's own spring and damper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub den_hartog_mode: Option<usize>,
    /// LQG only: the design weights (defaults in dynamics/CONTROL.md).
    #[serde(default)]
    pub lqg_weights: LqgWeights,
    /// The coil: force factor Bl (N/A, default 10) and resistance (Ω).
    #[serde(default)]
    pub electrics: ActuatorElectrics,
    /// Floor (1-based) carrying the unit harmonic excitation force.
    pub excitation_floor: usize,
    /// The frequency sweep, Hz (default 1–100 Hz by 0.01 Hz).
    #[serde(default)]
    pub grid: FrequencyGrid,
}

impl Params {
    /// The defaults for `model`: the passive law (TMD, as built), which every model accepts
    /// (half the DVF critical gain is above the 50 A/(m/s) limit on heavy models such as
    /// `cristallo-msd3`); the default actuator on the top floor if the model has none; the excitation on the force gauge's floor (floor 1
    /// without one); 1–100 Hz by 0.01 Hz.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        Self {
            law: LawName::Tmd,
            actuator_floor: model
                .structure
                .actuator
                .is_none()
                .then(|| model.floors().max(1)),
            gain_a_per_m_s: None,
            critical_fraction: None,
            compensator: Compensator::default(),
            den_hartog_mode: None,
            lqg_weights: LqgWeights::default(),
            electrics: ActuatorElectrics::default(),
            excitation_floor: model.sensors.force_gauge_floor.unwrap_or(1),
            grid: FrequencyGrid::default(),
        }
    }
}

/// The study as `dtop-dynamics` takes it, and the law with a DVF gain still to resolve
/// (a critical fraction needs the critical gain, which needs a valid study).
fn study(model: &ModelSpec, params: &Params) -> Result<ControlStudy, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let floors = model.floors();
    let mut building: ShearBuildingConfig = model.structure.clone();
    match (building.actuator.is_some(), params.actuator_floor) {
        (true, Some(_)) => problems.push(FieldProblem::new(
            "params.actuator_floor",
            "the model has its own actuator; actuator_floor only fits the default actuator \
             to a model without one",
        )),
        (false, None) => problems.push(FieldProblem::new(
            "params.actuator_floor",
            format!("the model has no actuator: give the floor (1..={floors}) to fit one on"),
        )),
        (false, Some(floor)) if !(1..=floors).contains(&floor) => {
            problems.push(FieldProblem::new(
                "params.actuator_floor",
                format!("floor {floor} does not exist; floors are 1..={floors}"),
            ));
        }
        (false, Some(floor)) => {
            building.actuator = Some(InertialActuator {
                floor,
                ..InertialActuator::default()
            });
        }
        (true, None) => {}
    }
    if !(1..=floors).contains(&params.excitation_floor) {
        problems.push(FieldProblem::new(
            "params.excitation_floor",
            format!(
                "floor {} does not exist; floors are 1..={floors}",
                params.excitation_floor
            ),
        ));
    }
    for p in params.electrics.problems() {
        problems.push(FieldProblem::new("params.electrics", p));
    }
    for p in params.grid.problems() {
        problems.push(FieldProblem::new("params.grid", p));
    }
    let law_only = [
        (
            "params.gain_a_per_m_s",
            params.gain_a_per_m_s.is_some(),
            LawName::Dvf,
        ),
        (
            "params.critical_fraction",
            params.critical_fraction.is_some(),
            LawName::Dvf,
        ),
        (
            "params.den_hartog_mode",
            params.den_hartog_mode.is_some(),
            LawName::Tmd,
        ),
    ];
    for (field, given, law) in law_only {
        if given && params.law != law {
            problems.push(FieldProblem::new(
                field,
                format!("applies only to law {law:?}").to_lowercase(),
            ));
        }
    }
    if params.law == LawName::Dvf {
        match (params.gain_a_per_m_s, params.critical_fraction) {
            (Some(_), None) => {}
            (None, Some(fraction)) if !(fraction.is_finite() && fraction >= 0.0) => {
                problems.push(FieldProblem::new(
                    "params.critical_fraction",
                    format!("{fraction} must be zero or positive and finite"),
                ));
            }
            (None, Some(_)) => {}
            _ => problems.push(FieldProblem::new(
                "params.gain_a_per_m_s",
                "law dvf needs exactly one of gain_a_per_m_s or critical_fraction",
            )),
        }
        for p in params.compensator.problems() {
            problems.push(FieldProblem::new("params.compensator", p));
        }
    }
    // The law's own checks (gain range, Den Hartog mode, LQG weights), with a placeholder
    // gain when it is still a fraction.
    let law = law_with_gain(params, params.gain_a_per_m_s.unwrap_or(0.0));
    for p in law.problems(floors) {
        problems.push(FieldProblem::new("params", p));
    }
    if problems.is_empty() {
        Ok(ControlStudy {
            building,
            electrics: params.electrics,
            excitation_floor: params.excitation_floor,
            grid: params.grid,
        })
    } else {
        Err(problems)
    }
}

fn law_with_gain(params: &Params, gain_a_per_m_s: f64) -> ControlLaw {
    match params.law {
        LawName::Tmd => ControlLaw::Tmd {
            tuning: params
                .den_hartog_mode
                .map_or(TmdTuning::AsBuilt, |mode| TmdTuning::DenHartog { mode }),
        },
        LawName::Dvf => ControlLaw::Dvf {
            gain_a_per_m_s,
            compensator: params.compensator.clone(),
        },
        LawName::Lqg => ControlLaw::Lqg {
            weights: params.lqg_weights,
        },
    }
}

fn from_control(e: ControlError) -> StudyError {
    match e {
        ControlError::Invalid(problems) => StudyError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldProblem::new("params", p))
                .collect(),
        ),
        ControlError::Model(e) => {
            StudyError::Invalid(vec![FieldProblem::new("model.structure", e.to_string())])
        }
        ControlError::Numerical(what) => StudyError::Numerics(what.to_owned()),
    }
}

/// One chunk; work = frequencies × DOFs (the actuated model's).
///
/// # Errors
/// Every problem of the model and the parameters; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    model.building().map_err(StudyError::Invalid)?;
    let study = study(model, params).map_err(StudyError::Invalid)?;
    let dofs = study.building.floors() as u64 + 1;
    let work_units = (study.grid.len() as u64).saturating_mul(dofs);
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

/// Runs the law: the report's scalars as the summary, its spectra and Nyquist locus as
/// arrays.
///
/// # Errors
/// [`StudyError::Invalid`] (including a DVF loop that has no critical gain when a fraction of
/// it is asked for), [`StudyError::Numerics`], [`StudyError::Cancelled`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    _chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let study = study(model, params).map_err(StudyError::Invalid)?;
    ctx.check()?;
    let gain = match (params.law, params.critical_fraction) {
        (LawName::Dvf, Some(fraction)) => {
            match study
                .dvf_critical_gain(&params.compensator)
                .map_err(from_control)?
            {
                Some(critical) if fraction * critical.gain_a_per_m_s > MAX_DVF_GAIN_A_PER_M_S => {
                    return Err(StudyError::Invalid(vec![FieldProblem::new(
                        "params.critical_fraction",
                        format!(
                            "{fraction} of the critical gain {:.4} A/(m/s) is above the \
                             {MAX_DVF_GAIN_A_PER_M_S} A/(m/s) allowed: lower the fraction to at \
                             most {:.4}",
                            critical.gain_a_per_m_s,
                            MAX_DVF_GAIN_A_PER_M_S / critical.gain_a_per_m_s
                        ),
                    )]));
                }
                Some(critical) => fraction * critical.gain_a_per_m_s,
                None => {
                    return Err(StudyError::Invalid(vec![FieldProblem::new(
                        "params.critical_fraction",
                        "this loop has no critical gain (it stays stable at every gain); give \
                         gain_a_per_m_s instead",
                    )]));
                }
            }
        }
        _ => params.gain_a_per_m_s.unwrap_or(0.0),
    };
    ctx.check()?;
    let mut report = study
        .run(&law_with_gain(params, gain))
        .map_err(from_control)?;
    let mut arrays = Vec::new();
    if let Some(s) = report.spectra.take() {
        let frequency = Column {
            name: "frequency_hz".into(),
            values: s.frequency_hz,
        };
        if let (Some(re), Some(im)) = (s.nyquist_re, s.nyquist_im) {
            arrays.push(NamedArray {
                name: "nyquist".into(),
                columns: vec![
                    frequency.clone(),
                    Column {
                        name: "loop_re".into(),
                        values: re,
                    },
                    Column {
                        name: "loop_im".into(),
                        values: im,
                    },
                ],
            });
        }
        arrays.insert(
            0,
            NamedArray {
                name: "spectra".into(),
                columns: vec![
                    frequency,
                    Column {
                        name: "kinetic_energy_j_per_n2".into(),
                        values: s.kinetic_energy_j_per_n2,
                    },
                    Column {
                        name: "locked_kinetic_energy_j_per_n2".into(),
                        values: s.locked_kinetic_energy_j_per_n2,
                    },
                    Column {
                        name: "passive_kinetic_energy_j_per_n2".into(),
                        values: s.passive_kinetic_energy_j_per_n2,
                    },
                    Column {
                        name: "bare_kinetic_energy_j_per_n2".into(),
                        values: s.bare_kinetic_energy_j_per_n2,
                    },
                    Column {
                        name: "actuator_force_n_per_n".into(),
                        values: s.actuator_force_n_per_n,
                    },
                ],
            },
        );
    }
    let output = StudyOutput {
        summary: serde_json::to_value(&report).map_err(|e| StudyError::Numerics(e.to_string()))?,
        arrays,
        proposed_model: None,
    };
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
    super::single_output(crate::StudyKind::Control, chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::StudyKind;
    use crate::kinds;
    use crate::model::builtin_model;

    fn run(model: &ModelSpec, params: &serde_json::Value) -> StudyOutput {
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let plan = kinds::plan(
            StudyKind::Control,
            model,
            params,
            &crate::Inputs::none(),
            &Budget::default(),
        )
        .unwrap();
        assert_eq!(plan.chunks, 1);
        let chunk = kinds::run_chunk(
            StudyKind::Control,
            model,
            params,
            1,
            0,
            &ctx,
            &crate::Inputs::none(),
        )
        .unwrap();
        kinds::reduce(
            StudyKind::Control,
            model,
            params,
            1,
            &[chunk],
            &crate::Inputs::none(),
        )
        .unwrap()
    }

    #[test]
    fn dvf_at_the_critical_fraction_one_sits_on_cristallos_true_stability_limit() {
        // TOOLS.md §2.5: a closed-loop eigenvalue check gives h_crit = 5.449 A/(m/s) on floor 1
        // and 1.795 on floor 3 (Cristallo's page, with its wrong output index, says ~167).
        let bare = builtin_model("southampton").unwrap();
        for (floor, want) in [(1, 5.449), (3, 1.795)] {
            let params = serde_json::json!({
                "law": "dvf", "actuator_floor": floor, "critical_fraction": 1.0,
                "excitation_floor": 1, "grid": { "f_min_hz": 1.0, "f_max_hz": 50.0, "df_hz": 0.5 }
            });
            let out = run(&bare, &params);
            let h = out.summary["dvf"]["gain_a_per_m_s"].as_f64().unwrap();
            assert!((h - want).abs() < 0.001, "floor {floor}: h_crit = {h}");
        }
    }

    #[test]
    fn half_the_critical_gain_is_stable_and_reduces_the_energy_on_the_actuated_builtin() {
        let model = builtin_model("southampton-actuator").unwrap();
        let mut params = kinds::defaults(StudyKind::Control, &model);
        params["law"] = "dvf".into();
        params["critical_fraction"] = 0.5.into();
        let out = run(&model, &params);
        assert_eq!(out.summary["stability"]["stable"], true);
        let reduction = out.summary["kinetic_energy"]["reduction_db_vs_locked"]["full_band_db"]
            .as_f64()
            .unwrap();
        assert!(reduction > 0.0, "{reduction}");
        let names: Vec<&str> = out.arrays.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["spectra", "nyquist"]);
        assert_eq!(out.arrays[0].rows(), FrequencyGrid::default().len());
    }

    #[test]
    fn the_passive_law_has_spectra_but_no_nyquist_locus() {
        let model = builtin_model("cristallo-design").unwrap();
        let params = serde_json::json!({
            "law": "tmd", "actuator_floor": 3, "den_hartog_mode": 1, "excitation_floor": 1,
            "grid": { "f_min_hz": 0.5, "f_max_hz": 10.0, "df_hz": 0.01 }
        });
        let out = run(&model, &params);
        assert_eq!(out.summary["law"]["law"], "tmd");
        assert!(out.summary["tmd"]["den_hartog"].is_object());
        let names: Vec<&str> = out.arrays.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["spectra"]);
    }

    #[test]
    fn a_fraction_above_the_gain_limit_is_refused_with_the_largest_allowed() {
        let heavy = builtin_model("cristallo-msd3").unwrap();
        let params = serde_json::json!({
            "law": "dvf", "actuator_floor": 3, "critical_fraction": 0.5, "excitation_floor": 3,
            "grid": { "f_min_hz": 1.0, "f_max_hz": 30.0, "df_hz": 0.5 }
        });
        let flag = AtomicBool::new(false);
        let got = kinds::run_chunk(
            StudyKind::Control,
            &heavy,
            &params,
            1,
            0,
            &ChunkCtx::new(&flag),
            &crate::Inputs::none(),
        );
        let Err(StudyError::Invalid(problems)) = got else {
            panic!("{got:?}");
        };
        assert_eq!(problems[0].field, "params.critical_fraction");
        assert!(
            problems[0].message.contains("lower the fraction"),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_run_on_every_builtin() {
        for (name, model) in crate::model::builtin_models() {
            let params = kinds::defaults(StudyKind::Control, &model);
            let flag = AtomicBool::new(false);
            let got = kinds::run_chunk(
                StudyKind::Control,
                &model,
                &params,
                1,
                0,
                &ChunkCtx::new(&flag),
                &crate::Inputs::none(),
            );
            assert!(got.is_ok(), "{name}: {got:?}");
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let actuated = builtin_model("southampton-actuator").unwrap();
        let params = serde_json::json!({
            "law": "tmd", "actuator_floor": 2, "gain_a_per_m_s": 3.0, "excitation_floor": 7,
            "grid": { "f_min_hz": 1.0, "f_max_hz": 10.0, "df_hz": -1.0 }
        });
        let Err(StudyError::Invalid(problems)) = kinds::plan(
            StudyKind::Control,
            &actuated,
            &params,
            &crate::Inputs::none(),
            &Budget::default(),
        ) else {
            panic!("invalid params were planned");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "params.actuator_floor",
                "params.excitation_floor",
                "params.grid",
                "params.gain_a_per_m_s",
            ],
            "{problems:#?}"
        );
        let bare = builtin_model("southampton").unwrap();
        // `null` overrides the default actuator floor, so the bare model has none.
        let params =
            serde_json::json!({ "law": "dvf", "excitation_floor": 1, "actuator_floor": null });
        let Err(StudyError::Invalid(problems)) = kinds::plan(
            StudyKind::Control,
            &bare,
            &params,
            &crate::Inputs::none(),
            &Budget::default(),
        ) else {
            panic!("a bare model without actuator_floor was planned");
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }
}
