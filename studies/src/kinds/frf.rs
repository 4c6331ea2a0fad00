//! The `frf` study: frequency response functions of a model (receptance, mobility or
//! accelerance) from a floor force, the actuator's coil force or a ground acceleration to any
//! floors, on a uniform frequency grid, by direct solution of the second-order equations
//! (`dtop_dynamics::frf::second_order_response`). One chunk; no randomness.

use dtop_dynamics::frf::{C64, input_load, omega, second_order_response};
use dtop_dynamics::{FrequencyGrid, FrfInput, FrfKind, ShearBuilding};
use nalgebra::DVector;
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Most responses one study may ask for.
pub const MAX_RESPONSES: usize = 32;
/// Frequencies computed between two looks at the cancel flag.
const FREQUENCIES_PER_CHECK: usize = 256;

/// Parameters of `frf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The frequency grid, Hz: `f_min_hz` (≥ 0), `f_max_hz` (> f_min), `df_hz` (> 0).
    pub grid: FrequencyGrid,
    /// The responses to compute, 1 to 32.
    pub responses: Vec<Response>,
}

/// One excitation and the floors whose response to it is wanted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Where the excitation enters.
    pub input: Input,
    /// Output floors, 1-based; empty means every floor.
    #[serde(default)]
    pub output_floors: Vec<usize>,
    /// Displacement, velocity or acceleration per unit input.
    pub kind: FrfKind,
}

/// The excitation of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case", deny_unknown_fields)]
pub enum Input {
    /// A force on one floor, per N.
    Floor {
        /// Floor, 1-based.
        floor: usize,
    },
    /// The actuator's coil force (+f on the proof mass, −f on the host floor), per N.
    Actuator,
    /// A ground acceleration, per m/s². Outputs are then relative displacement and velocity
    /// (receptance in s², mobility in s) and absolute acceleration (accelerance, the
    /// dimensionless transmissibility).
    Ground,
}

impl Input {
    fn label(self) -> String {
        match self {
            Input::Floor { floor } => format!("floor{floor}"),
            Input::Actuator => "actuator".to_owned(),
            Input::Ground => "ground".to_owned(),
        }
    }
}

/// Units of a response, spelled for column names.
fn unit_suffix(input: Input, kind: FrfKind) -> &'static str {
    match (input, kind) {
        (Input::Ground, FrfKind::Receptance) => "s2",
        (Input::Ground, FrfKind::Mobility) => "s",
        (Input::Ground, FrfKind::Accelerance) => "ratio",
        (_, FrfKind::Receptance) => "m_per_n",
        (_, FrfKind::Mobility) => "m_per_s_per_n",
        (_, FrfKind::Accelerance) => "m_per_s2_per_n",
    }
}

impl Params {
    /// The defaults for `model`: from 0 Hz to 1.5 times its highest natural frequency
    /// (rounded up to a whole Hz) by 0.01 Hz, or by 1/10 000 of the band for very stiff
    /// models; the receptance from the force gauge's floor (floor 1 without one) to every
    /// floor.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let top_hz = model
            .building()
            .ok()
            .and_then(|b| b.natural_frequencies_hz().last().copied())
            .unwrap_or(100.0);
        let f_max_hz = (1.5 * top_hz).ceil().max(1.0);
        Self {
            grid: FrequencyGrid {
                f_min_hz: 0.0,
                f_max_hz,
                df_hz: if f_max_hz <= 100.0 {
                    0.01
                } else {
                    f_max_hz / 10_000.0
                },
            },
            responses: vec![Response {
                input: Input::Floor {
                    floor: model.sensors.force_gauge_floor.unwrap_or(1),
                },
                output_floors: Vec::new(),
                kind: FrfKind::Receptance,
            }],
        }
    }
}

/// Every problem of `params` on `building`, each under `params.`.
fn problems(building: &ShearBuilding, params: &Params) -> Vec<FieldProblem> {
    let floors = building.floors();
    let mut problems: Vec<FieldProblem> = params
        .grid
        .problems()
        .into_iter()
        .map(|p| FieldProblem::new("params.grid", p))
        .collect();
    if params.responses.is_empty() || params.responses.len() > MAX_RESPONSES {
        problems.push(FieldProblem::new(
            "params.responses",
            format!(
                "{} responses asked for; allowed 1 to {MAX_RESPONSES}",
                params.responses.len()
            ),
        ));
    }
    for (i, r) in params.responses.iter().enumerate() {
        match r.input {
            Input::Floor { floor } if !(1..=floors).contains(&floor) => {
                problems.push(FieldProblem::new(
                    format!("params.responses[{i}].input.floor"),
                    format!("floor {floor} does not exist; floors are 1..={floors}"),
                ));
            }
            Input::Actuator if !building.has_actuator() => {
                problems.push(FieldProblem::new(
                    format!("params.responses[{i}].input"),
                    "this model has no actuator; use a model with one or input a floor",
                ));
            }
            _ => {}
        }
        for (j, &f) in r.output_floors.iter().enumerate() {
            if !(1..=floors).contains(&f) {
                problems.push(FieldProblem::new(
                    format!("params.responses[{i}].output_floors[{j}]"),
                    format!("floor {f} does not exist; floors are 1..={floors}"),
                ));
            }
        }
    }
    problems
}

fn output_floors(response: &Response, floors: usize) -> Vec<usize> {
    if response.output_floors.is_empty() {
        (1..=floors).collect()
    } else {
        response.output_floors.clone()
    }
}

/// One chunk; work = frequencies × DOFs × responses.
///
/// # Errors
/// Every problem of the model and the parameters; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(&building, params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let work_units = (params.grid.len() as u64)
        .saturating_mul(building.dofs() as u64)
        .saturating_mul(params.responses.len() as u64);
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

/// The complex response of every output floor of `response` at every grid frequency:
/// `values[floor index][frequency index]`.
///
/// # Errors
/// [`StudyError::Numerics`] on a singular dynamic stiffness or a non-finite value;
/// [`StudyError::Cancelled`].
pub fn responses(
    building: &ShearBuilding,
    response: &Response,
    frequencies_hz: &[f64],
    ctx: &ChunkCtx<'_>,
) -> Result<Vec<Vec<C64>>, StudyError> {
    let numerics = |e: dtop_dynamics::FrfError| StudyError::Numerics(e.to_string());
    let load = match response.input {
        Input::Floor { floor } => input_load(building, FrfInput::FloorForce { floor }),
        Input::Actuator => input_load(building, FrfInput::ActuatorForce),
        // Relative coordinates: the ground acceleration loads every DOF with −m·a_g.
        Input::Ground => Ok(-building.mass_matrix() * DVector::from_element(building.dofs(), 1.0)),
    }
    .map_err(numerics)?;
    let outputs = output_floors(response, building.floors());
    let mut values = vec![Vec::with_capacity(frequencies_hz.len()); outputs.len()];
    for (i, &f_hz) in frequencies_hz.iter().enumerate() {
        if i % FREQUENCIES_PER_CHECK == 0 {
            ctx.check()?;
        }
        let w = omega(f_hz);
        let x = second_order_response(
            building.mass_matrix(),
            building.damping_matrix(),
            building.stiffness_matrix(),
            &load,
            w,
        )
        .map_err(numerics)?;
        let jw = C64::new(0.0, w);
        for (column, &floor) in values.iter_mut().zip(&outputs) {
            let xr = x[floor - 1];
            let v = match response.kind {
                FrfKind::Receptance => xr,
                FrfKind::Mobility => jw * xr,
                // Absolute acceleration: the ground's own unit acceleration is added back.
                FrfKind::Accelerance => {
                    jw * jw * xr
                        + if response.input == Input::Ground {
                            C64::new(1.0, 0.0)
                        } else {
                            C64::new(0.0, 0.0)
                        }
                }
            };
            if !(v.re.is_finite() && v.im.is_finite()) {
                return Err(StudyError::Numerics(format!(
                    "the response of floor {floor} at {f_hz} Hz is not finite"
                )));
            }
            column.push(v);
        }
    }
    Ok(values)
}

/// What the one chunk returns: the output itself.
///
/// # Errors
/// [`StudyError::Invalid`], [`StudyError::Numerics`], [`StudyError::Cancelled`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    _chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(&building, params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let frequencies_hz = params.grid.frequencies_hz();
    let mut arrays = Vec::new();
    let mut summaries = Vec::new();
    for response in &params.responses {
        let values = responses(&building, response, &frequencies_hz, ctx)?;
        let unit = unit_suffix(response.input, response.kind);
        let outputs = output_floors(response, building.floors());
        let mut columns = vec![Column {
            name: "frequency_hz".into(),
            values: frequencies_hz.clone(),
        }];
        let mut peaks = Vec::new();
        for (floor, v) in outputs.iter().zip(&values) {
            let magnitude: Vec<f64> = v.iter().map(|z| z.norm()).collect();
            let (peak_index, peak) =
                magnitude
                    .iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |m, (i, x)| if x > m.1 { (i, x) } else { m },
                    );
            peaks.push(serde_json::json!({
                "floor": floor,
                "peak_magnitude": peak,
                "peak_frequency_hz": frequencies_hz.get(peak_index),
            }));
            columns.push(Column {
                name: format!("floor{floor}_magnitude_{unit}"),
                values: magnitude,
            });
            columns.push(Column {
                name: format!("floor{floor}_phase_deg"),
                values: v.iter().map(|z| z.arg().to_degrees()).collect(),
            });
            columns.push(Column {
                name: format!("floor{floor}_re_{unit}"),
                values: v.iter().map(|z| z.re).collect(),
            });
            columns.push(Column {
                name: format!("floor{floor}_im_{unit}"),
                values: v.iter().map(|z| z.im).collect(),
            });
        }
        let name = format!(
            "frf-{}-{}",
            response.input.label(),
            serde_json::to_value(response.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
        summaries.push(serde_json::json!({
            "array": name,
            "input": response.input,
            "kind": response.kind,
            "units": unit,
            "output_floors": outputs,
            "peaks": peaks,
        }));
        arrays.push(NamedArray { name, columns });
    }
    let output = StudyOutput {
        summary: serde_json::json!({
            "natural_frequencies_hz": building.natural_frequencies_hz(),
            "frequencies": frequencies_hz.len(),
            "responses": summaries,
        }),
        arrays: dedup_names(arrays),
        proposed_model: None,
    };
    serde_json::to_value(&output).map_err(|e| StudyError::Numerics(e.to_string()))
}

/// Two responses with the same input and kind would share a name; later ones get `-2`, `-3`.
fn dedup_names(mut arrays: Vec<NamedArray>) -> Vec<NamedArray> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for a in &mut arrays {
        let n = seen.entry(a.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            a.name = format!("{}-{n}", a.name);
        }
    }
    arrays
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
    super::single_output(crate::StudyKind::Frf, chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use dtop_dynamics::{Damping, ShearBuildingConfig};

    use super::*;
    use crate::StudyKind;
    use crate::kinds;
    use crate::model::SensorLayout;

    fn chain(m: Vec<f64>, k: Vec<f64>, c: Vec<f64>) -> ModelSpec {
        ModelSpec {
            description: String::new(),
            structure: ShearBuildingConfig {
                floor_masses_kg: m,
                storey_stiffness_n_per_m: k,
                damping: Damping::StoreyDampers {
                    storey_damping_n_s_per_m: c,
                },
                actuator: None,
            },
            sensors: SensorLayout::default(),
        }
    }

    fn run(model: &ModelSpec, params: serde_json::Value) -> StudyOutput {
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let plan = kinds::plan(
            StudyKind::Frf,
            model,
            &params,
            &crate::Inputs::none(),
            &Budget::default(),
        )
        .unwrap();
        let chunks: Vec<_> = (0..plan.chunks)
            .map(|i| {
                kinds::run_chunk(
                    StudyKind::Frf,
                    model,
                    &params,
                    7,
                    i,
                    &ctx,
                    &crate::Inputs::none(),
                )
                .unwrap()
            })
            .collect();
        kinds::reduce(
            StudyKind::Frf,
            model,
            &params,
            7,
            &chunks,
            &crate::Inputs::none(),
        )
        .unwrap()
    }

    fn column<'a>(out: &'a StudyOutput, array: &str, name: &str) -> &'a [f64] {
        let a = out.arrays.iter().find(|a| a.name == array).unwrap();
        &a.columns.iter().find(|c| c.name == name).unwrap().values
    }

    fn assert_complex_close(re: &[f64], im: &[f64], want: &[C64], tolerance: f64) {
        for ((r, i), w) in re.iter().zip(im).zip(want) {
            let err = (C64::new(*r, *i) - w).norm() / w.norm();
            assert!(err < tolerance, "got {r}+{i}j, want {w}");
        }
    }

    #[test]
    fn sdof_receptance_mobility_and_accelerance_match_the_closed_form() {
        let (m, k, c) = (2.0, 8000.0, 3.0);
        let model = chain(vec![m], vec![k], vec![c]);
        let params = serde_json::json!({
            "grid": { "f_min_hz": 0.0, "f_max_hz": 20.0, "df_hz": 0.05 },
            "responses": [
                { "input": { "at": "floor", "floor": 1 }, "kind": "receptance" },
                { "input": { "at": "floor", "floor": 1 }, "kind": "mobility" },
                { "input": { "at": "floor", "floor": 1 }, "kind": "accelerance" },
                { "input": { "at": "ground" }, "kind": "accelerance" },
            ]
        });
        let out = run(&model, params);
        let f = column(&out, "frf-floor1-receptance", "frequency_hz").to_vec();
        assert_eq!(f.len(), 401);
        let h: Vec<C64> = f
            .iter()
            .map(|f| {
                let w = std::f64::consts::TAU * f;
                C64::new(1.0, 0.0) / C64::new(k - m * w * w, c * w)
            })
            .collect();
        let jw = |f: f64| C64::new(0.0, std::f64::consts::TAU * f);
        let cases: [(&str, &str, Vec<C64>); 4] = [
            ("frf-floor1-receptance", "m_per_n", h.clone()),
            (
                "frf-floor1-mobility",
                "m_per_s_per_n",
                h.iter().zip(&f).map(|(h, f)| h * jw(*f)).collect(),
            ),
            (
                "frf-floor1-accelerance",
                "m_per_s2_per_n",
                h.iter().zip(&f).map(|(h, f)| h * jw(*f) * jw(*f)).collect(),
            ),
            // Transmissibility (k + jωc)/(k − mω² + jωc).
            (
                "frf-ground-accelerance",
                "ratio",
                h.iter()
                    .zip(&f)
                    .map(|(h, f)| h * C64::new(k, c * std::f64::consts::TAU * f))
                    .collect(),
            ),
        ];
        for (array, unit, want) in cases {
            let re = column(&out, array, &format!("floor1_re_{unit}"));
            let im = column(&out, array, &format!("floor1_im_{unit}"));
            // One 1×1 complex LU against one complex division: a few ulps apart. At 0 Hz
            // the mobility and accelerance are exactly 0, so skip that row.
            assert_complex_close(&re[1..], &im[1..], &want[1..], 1e-12);
        }
    }

    #[test]
    fn two_dof_receptances_match_the_inverse_of_the_dynamic_stiffness() {
        let (m1, m2, k1, k2, c1, c2) = (3.0, 1.5, 9000.0, 4000.0, 2.0, 1.0);
        let model = chain(vec![m1, m2], vec![k1, k2], vec![c1, c2]);
        let params = serde_json::json!({
            "grid": { "f_min_hz": 1.0, "f_max_hz": 20.0, "df_hz": 0.01 },
            "responses": [{ "input": { "at": "floor", "floor": 1 }, "kind": "receptance" }]
        });
        let out = run(&model, params);
        let f = column(&out, "frf-floor1-receptance", "frequency_hz");
        let (mut h11, mut h21) = (Vec::new(), Vec::new());
        for f in f {
            let w = std::f64::consts::TAU * f;
            // D = [[k1+k2 − m1ω² + jω(c1+c2), −(k2+jωc2)], [−(k2+jωc2), k2 − m2ω² + jωc2]];
            // D⁻¹ by the 2×2 adjugate.
            let d11 = C64::new(k1 + k2 - m1 * w * w, w * (c1 + c2));
            let d12 = -C64::new(k2, w * c2);
            let d22 = C64::new(k2 - m2 * w * w, w * c2);
            let det = d11 * d22 - d12 * d12;
            h11.push(d22 / det);
            h21.push(-d12 / det);
        }
        let a = "frf-floor1-receptance";
        // Near the anti-resonance of H11 cancellation costs digits; 1e-9 still pins it.
        assert_complex_close(
            column(&out, a, "floor1_re_m_per_n"),
            column(&out, a, "floor1_im_m_per_n"),
            &h11,
            1e-9,
        );
        assert_complex_close(
            column(&out, a, "floor2_re_m_per_n"),
            column(&out, a, "floor2_im_m_per_n"),
            &h21,
            1e-9,
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let model = crate::model::builtin_model("southampton").unwrap();
        let params = serde_json::json!({
            "grid": { "f_min_hz": 5.0, "f_max_hz": 1.0, "df_hz": 0.1 },
            "responses": [
                { "input": { "at": "floor", "floor": 9 }, "output_floors": [0, 2], "kind": "receptance" },
                { "input": { "at": "actuator" }, "kind": "mobility" }
            ]
        });
        let Err(StudyError::Invalid(problems)) = kinds::plan(
            StudyKind::Frf,
            &model,
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
                "params.grid",
                "params.responses[0].input.floor",
                "params.responses[0].output_floors[0]",
                "params.responses[1].input",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn a_study_above_the_budget_is_refused() {
        let model = crate::model::builtin_model("southampton").unwrap();
        let params = serde_json::to_value(Params::defaults_for(&model)).unwrap();
        let budget = Budget {
            max_work_units: 10,
            chunk_work_units: 10,
        };
        assert!(matches!(
            kinds::plan(
                StudyKind::Frf,
                &model,
                &params,
                &crate::Inputs::none(),
                &budget
            ),
            Err(StudyError::TooLarge { .. })
        ));
    }

    #[test]
    fn defaults_plan_for_every_builtin() {
        for (name, model) in crate::model::builtin_models() {
            let params = kinds::defaults(StudyKind::Frf, &model);
            let plan = kinds::plan(
                StudyKind::Frf,
                &model,
                &params,
                &crate::Inputs::none(),
                &Budget::default(),
            );
            assert!(plan.is_ok(), "{name}: {plan:?}");
        }
    }
}
