//! The `fea` study: the rig as a 3D frame (`dtop_fe`): natural frequencies, mode classes
//! (sway, torsion, vertical) and shapes by the built-in beam model, their stabilisation against
//! mesh refinement, optionally CalculiX on the same geometry through the worker's
//! [`crate::ExternalSolvers`], and the frame condensed to the shear chain, proposed as a model
//! version. One chunk per (solver, mesh); the numerics and the deck are `dtop_fe`'s, running
//! `ccx` is the worker's.

use dtop_fe::calculix::{BeamElementType, CalculixError, DeckOptions, LegMesh, write_deck};
use dtop_fe::{
    BeamTheory, FloorMotion, FrameConfig, FrameModel, ModeClass, ShearCondensation,
    frame::MAX_BUILTIN_DOFS,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, ProposedModel, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the frame's geometry alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Most modes one study may ask for.
pub const MAX_MODES: usize = 50;
/// Most meshes in the refinement list.
pub const MAX_MESHES: usize = 8;
/// Finest mesh CalculiX is given, elements per leg: a 3-storey deck of 100 elements per leg
/// takes ~7 s of ccx; 200 keeps a run within a minute.
pub const MAX_CALCULIX_ELEMENTS_PER_LEG: usize = 200;
/// Modes shown in `mesh_convergence` (its columns `f1_hz`..`f6_hz`).
pub const CONVERGENCE_MODES: usize = 6;

/// Which frame to solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The Southampton rig from its published facts (`FrameConfig::southampton`).
    Southampton,
    /// Cristallo's FEA defaults (TOOLS.md §7, `FrameConfig::cristallo_defaults`).
    Cristallo,
    /// The frame in `params.frame`, as given.
    Custom,
}

/// Which solver computes the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// The built-in beam-and-rigid-floor model.
    Builtin,
    /// CalculiX (`ccx`) on the same geometry, beside the built-in model.
    Calculix,
}

/// How CalculiX meshes each leg (the built-in model always uses equal elements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalculixLegMesh {
    /// The built-in model's mesh, node for node: the two compare at the same discretisation.
    #[default]
    Shared,
    /// The same number of elements, denser towards the joints (`dtop_fe::LegMesh::Graded`):
    /// ccx's expanded beams converge faster that way (0.61–0.92 % from the built-in model
    /// on the rig's first six modes at 96 graded elements per leg, BENCHMARKS § FE).
    Graded,
}

/// Parameters of `fea`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The frame: `southampton`, `cristallo` (Cristallo's FEA defaults) or `custom` (then
    /// `frame` is used).
    pub preset: Preset,
    /// The frame solved when `preset` is `custom` (its `elements_per_leg` is replaced by each
    /// mesh of `elements_per_leg`); shows the Southampton rig by default, to edit.
    pub frame: FrameConfig,
    /// `builtin`, or `calculix` (run by the worker, beside the built-in model).
    pub solver: Solver,
    /// Number of lowest modes, 1 to 50.
    pub modes: usize,
    /// The mesh refinement list, beam elements per leg, increasing, 1 to 8 meshes: one run
    /// per mesh, for the stabilisation of the frequencies. The built-in model runs on the
    /// meshes within its size limit, CalculiX on all of them.
    pub elements_per_leg: Vec<usize>,
    /// `shared` (default) or `graded`: how CalculiX meshes each leg of each mesh.
    #[serde(default)]
    pub calculix_leg_mesh: CalculixLegMesh,
}

impl Params {
    /// The defaults: the Southampton rig, built-in solver, 6 modes, meshes of 2, 4 and 8
    /// elements per leg.
    pub fn defaults_for(_model: &ModelSpec) -> Self {
        Self {
            preset: Preset::Southampton,
            frame: FrameConfig::southampton(),
            solver: Solver::Builtin,
            modes: 6,
            elements_per_leg: vec![2, 4, 8],
            calculix_leg_mesh: CalculixLegMesh::Shared,
        }
    }

    /// The frame these parameters name, at its own mesh.
    pub fn frame_config(&self) -> FrameConfig {
        match self.preset {
            Preset::Southampton => FrameConfig::southampton(),
            Preset::Cristallo => FrameConfig::cristallo_defaults(),
            Preset::Custom => self.frame.clone(),
        }
    }

    fn at_mesh(&self, elements_per_leg: usize) -> FrameConfig {
        FrameConfig {
            elements_per_leg,
            ..self.frame_config()
        }
    }
}

/// DOFs of the built-in model of `config` (as `dtop_fe` counts them: six per inner leg node,
/// per elastic foot and per floor).
fn builtin_dofs(config: &FrameConfig) -> usize {
    let storeys = config.storeys();
    let feet = match config.feet {
        dtop_fe::Feet::Fixed => 0,
        dtop_fe::Feet::Elastic { .. } => 4,
    };
    6 * (4 * storeys * config.elements_per_leg.saturating_sub(1) + feet + storeys)
}

/// The runs of a study, in chunk order: the built-in model on every mesh within its limit,
/// then (for `calculix`) CalculiX on every mesh.
pub fn runs(params: &Params) -> Vec<(Solver, usize)> {
    let mut runs: Vec<(Solver, usize)> = params
        .elements_per_leg
        .iter()
        .filter(|&&e| builtin_dofs(&params.at_mesh(e)) <= MAX_BUILTIN_DOFS)
        .map(|&e| (Solver::Builtin, e))
        .collect();
    if params.solver == Solver::Calculix {
        runs.extend(
            params
                .elements_per_leg
                .iter()
                .map(|&e| (Solver::Calculix, e)),
        );
    }
    runs
}

fn problems(params: &Params) -> Vec<FieldProblem> {
    let mut problems: Vec<FieldProblem> = params
        .frame_config()
        .problems()
        .into_iter()
        .map(|p| FieldProblem::new("params.frame", p))
        .collect();
    if !(1..=MAX_MODES).contains(&params.modes) {
        problems.push(FieldProblem::new(
            "params.modes",
            format!("{} must be within 1..={MAX_MODES}", params.modes),
        ));
    }
    let meshes = &params.elements_per_leg;
    if meshes.is_empty() || meshes.len() > MAX_MESHES {
        problems.push(FieldProblem::new(
            "params.elements_per_leg",
            format!(
                "{} meshes given; give 1 to {MAX_MESHES}, e.g. [2, 4, 8]",
                meshes.len()
            ),
        ));
    }
    if meshes.windows(2).any(|w| w[0] >= w[1]) {
        problems.push(FieldProblem::new(
            "params.elements_per_leg",
            "must increase (a refinement list), e.g. [2, 4, 8]",
        ));
    }
    for (i, &e) in meshes.iter().enumerate() {
        let field = format!("params.elements_per_leg[{i}]");
        let dofs = builtin_dofs(&params.at_mesh(e));
        if e == 0 {
            problems.push(FieldProblem::new(
                field,
                "0: each leg needs at least one element",
            ));
        } else if dofs < params.modes {
            problems.push(FieldProblem::new(
                field,
                format!(
                    "{e} elements per leg give {dofs} DOFs, too coarse for {} modes: refine the \
                     mesh or ask for fewer modes",
                    params.modes
                ),
            ));
        } else if params.solver == Solver::Builtin && dofs > MAX_BUILTIN_DOFS {
            problems.push(FieldProblem::new(
                field,
                format!(
                    "{e} elements per leg give {dofs} DOFs, more than the built-in solver's \
                     {MAX_BUILTIN_DOFS}: use fewer elements, or solver = calculix"
                ),
            ));
        } else if params.solver == Solver::Calculix && e > MAX_CALCULIX_ELEMENTS_PER_LEG {
            problems.push(FieldProblem::new(
                field,
                format!(
                    "{e} elements per leg is finer than CalculiX is run for here \
                     ({MAX_CALCULIX_ELEMENTS_PER_LEG}): use fewer"
                ),
            ));
        }
    }
    if problems.is_empty() && !runs(params).iter().any(|(s, _)| *s == Solver::Builtin) {
        problems.push(FieldProblem::new(
            "params.elements_per_leg",
            format!(
                "no mesh is within the built-in solver's {MAX_BUILTIN_DOFS} DOFs, which the \
                 condensation and the comparison need: add a coarser mesh, e.g. 8"
            ),
        ));
    }
    if params.solver == Solver::Calculix
        && let dtop_fe::Feet::Elastic { .. } = params.frame_config().feet
    {
        problems.push(FieldProblem::new(
            "params.solver",
            "the CalculiX deck has fixed feet only: use feet = fixed or solver = builtin",
        ));
    }
    problems
}

/// One chunk per (solver, mesh) run; work = DOFs³ of each built-in run and DOFs² × modes of
/// each CalculiX run.
///
/// # Errors
/// Every problem of the parameters; [`StudyError::TooLarge`].
pub fn check(
    _model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let problems = problems(params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let runs = runs(params);
    let work_units = runs.iter().fold(0_u64, |sum, &(solver, e)| {
        let dofs = builtin_dofs(&params.at_mesh(e)) as u64;
        sum.saturating_add(match solver {
            Solver::Builtin => dofs.saturating_pow(3),
            Solver::Calculix => dofs
                .saturating_mul(dofs)
                .saturating_mul(params.modes as u64),
        })
    });
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    Ok(Plan {
        chunks: runs.len() as u32,
        work_units,
    })
}

/// One mode as a chunk carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeOut {
    frequency_hz: f64,
    /// `None` when ccx printed no effective masses.
    class: Option<ModeClass>,
    /// Effective mass fractions x, y, z, torsion; `None` as for `class`.
    fractions: Option<[f64; 4]>,
    /// (u_x, u_y, θ_z) of each floor's centroid, mass-normalised (built-in only).
    floors: Vec<[f64; 3]>,
}

/// What one run returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunOut {
    solver: Solver,
    elements_per_leg: usize,
    modes: Vec<ModeOut>,
    /// Built-in runs: the condensation with the floors held to translation, and free.
    held: Option<ShearCondensation>,
    free: Option<ShearCondensation>,
    /// Why a CalculiX run gave nothing (its own message).
    failure: Option<String>,
}

fn numerics(e: impl std::fmt::Display) -> StudyError {
    StudyError::Numerics(e.to_string())
}

/// What a worker without CalculiX says.
pub const NO_CALCULIX: &str = "this worker runs no CalculiX: install calculix-ccx \
     (apt-get install -y calculix-ccx) and set [engine.solvers] calculix = \"ccx\" in the worker's config, or \
     submit with solver = builtin";

/// Runs chunk `chunk`: the built-in model or CalculiX on one mesh.
///
/// # Errors
/// [`StudyError::Numerics`] when CalculiX is asked for and the worker offers none, or the
/// built-in solver fails; [`StudyError::Cancelled`].
pub fn run_chunk(
    _model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    ctx.check()?;
    let runs = runs(params);
    let &(solver, elements_per_leg) = runs.get(chunk as usize).ok_or_else(|| {
        StudyError::Invalid(vec![FieldProblem::new(
            "chunk",
            format!("fea has {} chunks, not {chunk}", runs.len()),
        )])
    })?;
    let config = params.at_mesh(elements_per_leg);
    let out = match solver {
        Solver::Builtin => {
            let frame = FrameModel::new(config.clone()).map_err(numerics)?;
            let modes = frame.modes(params.modes).map_err(numerics)?;
            ctx.check()?;
            let axis = config.leg.thickness_along;
            RunOut {
                solver,
                elements_per_leg,
                modes: modes
                    .modes
                    .iter()
                    .map(|m| ModeOut {
                        frequency_hz: m.frequency_hz,
                        class: Some(m.class),
                        fractions: Some([
                            m.effective_mass.x,
                            m.effective_mass.y,
                            m.effective_mass.z,
                            m.effective_mass.torsion,
                        ]),
                        floors: m.floor_motions.iter().map(|f| [f[0], f[1], f[5]]).collect(),
                    })
                    .collect(),
                held: Some(
                    frame
                        .condense_to_shear_chain(axis, FloorMotion::TranslationOnly)
                        .map_err(numerics)?,
                ),
                free: Some(
                    frame
                        .condense_to_shear_chain(axis, FloorMotion::Free)
                        .map_err(numerics)?,
                ),
                failure: None,
            }
        }
        Solver::Calculix => {
            let solvers = ctx
                .solvers()
                .ok_or_else(|| StudyError::Numerics(NO_CALCULIX.to_owned()))?;
            let deck = write_deck(
                &config,
                &DeckOptions {
                    element: BeamElementType::B31,
                    modes: params.modes,
                    leg_mesh: match params.calculix_leg_mesh {
                        CalculixLegMesh::Shared => LegMesh::Shared,
                        CalculixLegMesh::Graded => LegMesh::Graded { elements_per_leg },
                    },
                },
            )
            .map_err(numerics)?;
            let (modes, failure) = match solvers.calculix(&deck, ctx.cancel_flag()) {
                Ok(run) => (
                    run.modes
                        .iter()
                        .map(|m| ModeOut {
                            frequency_hz: m.frequency_hz,
                            class: m.effective_mass.map(|f| f.class()),
                            fractions: m.effective_mass.map(|f| [f.x, f.y, f.z, f.torsion]),
                            floors: Vec::new(),
                        })
                        .collect(),
                    None,
                ),
                Err(CalculixError::Cancelled) => return Err(StudyError::Cancelled),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            RunOut {
                solver,
                elements_per_leg,
                modes,
                held: None,
                free: None,
                failure,
            }
        }
    };
    serde_json::to_value(&out).map_err(numerics)
}

fn column(name: impl Into<String>, values: Vec<f64>) -> Column {
    Column {
        name: name.into(),
        values,
    }
}

/// The number a mode class has in the `class_code` column.
pub fn class_code(class: ModeClass) -> f64 {
    match class {
        ModeClass::SwayX => 0.0,
        ModeClass::SwayY => 1.0,
        ModeClass::Torsion => 2.0,
        ModeClass::Vertical => 3.0,
        ModeClass::Other => 4.0,
    }
}

fn class_name(class: Option<ModeClass>) -> serde_json::Value {
    class.map_or(serde_json::Value::Null, |c| json!(c))
}

/// The shear chain's storey stiffness by beam theory: four legs clamped–guided over their
/// free length l, each 12·E·J/(l³·(1 + Φ)) in the weak direction (J = b·t³/12), with
/// Φ = 12·E·J/(κ·G·A·l²) for Timoshenko legs (κ the config's, Cowper's by default) and 0 for
/// Euler–Bernoulli ones.
pub fn storey_stiffness_closed_form_n_per_m(config: &FrameConfig) -> Vec<f64> {
    let leg = &config.leg;
    let (b, t, e) = (leg.width_m, leg.thickness_m, leg.youngs_modulus_pa);
    let j = b * t.powi(3) / 12.0;
    let kappa_ga = config.leg_shear_coefficient() * config.shear_modulus_pa() * b * t;
    config
        .storey_leg_lengths_m
        .iter()
        .map(|&l| {
            let phi = match config.beam_theory {
                BeamTheory::EulerBernoulli => 0.0,
                BeamTheory::Timoshenko => 12.0 * e * j / (kappa_ga * l * l),
            };
            4.0 * 12.0 * e * j / (l.powi(3) * (1.0 + phi))
        })
        .collect()
}

/// Arrays, summary and the proposed shear chain from the runs.
///
/// # Errors
/// [`StudyError::BadChunk`] for outputs that are not this kind's.
pub fn reduce(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let expected = runs(params);
    if chunks.len() != expected.len() {
        return Err(StudyError::BadChunk(format!(
            "fea has {} chunks, got {}",
            expected.len(),
            chunks.len()
        )));
    }
    let outs: Vec<RunOut> = chunks
        .iter()
        .map(|c| {
            serde_json::from_value(c.clone())
                .map_err(|e| StudyError::BadChunk(format!("fea chunk: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let builtin: Vec<&RunOut> = outs
        .iter()
        .filter(|o| o.solver == Solver::Builtin)
        .collect();
    let calculix: Vec<&RunOut> = outs
        .iter()
        .filter(|o| o.solver == Solver::Calculix)
        .collect();
    let Some(finest) = builtin.last() else {
        return Err(StudyError::BadChunk("fea has no built-in run".to_owned()));
    };
    let mut arrays = Vec::new();
    let modes = &finest.modes;
    let fraction = |i: usize| -> Vec<f64> {
        modes
            .iter()
            .map(|m| m.fractions.map_or(0.0, |f| f[i]))
            .collect()
    };
    arrays.push(NamedArray {
        name: "modes".to_owned(),
        columns: vec![
            column("mode", (1..=modes.len()).map(|r| r as f64).collect()),
            column(
                "frequency_hz",
                modes.iter().map(|m| m.frequency_hz).collect(),
            ),
            column(
                "class_code",
                modes
                    .iter()
                    .map(|m| m.class.map_or(4.0, class_code))
                    .collect(),
            ),
            column("mass_fraction_x", fraction(0)),
            column("mass_fraction_y", fraction(1)),
            column("mass_fraction_z", fraction(2)),
            column("mass_fraction_torsion", fraction(3)),
        ],
    });
    let shown = params.modes.min(CONVERGENCE_MODES);
    let convergence = |runs: &[&RunOut], name: &str| -> Option<NamedArray> {
        let ok: Vec<&&RunOut> = runs.iter().filter(|r| r.modes.len() >= shown).collect();
        (!ok.is_empty()).then(|| {
            let mut columns = vec![column(
                "elements_per_leg",
                ok.iter().map(|r| r.elements_per_leg as f64).collect(),
            )];
            for r in 0..shown {
                columns.push(column(
                    format!("f{}_hz", r + 1),
                    ok.iter().map(|run| run.modes[r].frequency_hz).collect(),
                ));
            }
            NamedArray {
                name: name.to_owned(),
                columns,
            }
        })
    };
    arrays.extend(convergence(&builtin, "mesh_convergence"));
    arrays.extend(convergence(&calculix, "calculix_mesh_convergence"));
    let floors = finest.modes.first().map_or(0, |m| m.floors.len());
    let mut shape_columns = vec![column("floor", (1..=floors).map(|f| f as f64).collect())];
    for (r, m) in modes.iter().enumerate() {
        for (i, unit) in ["x_m", "y_m", "rotation_rad"].iter().enumerate() {
            shape_columns.push(column(
                format!("mode{}_{unit}", r + 1),
                m.floors.iter().map(|f| f[i]).collect(),
            ));
        }
    }
    arrays.push(NamedArray {
        name: "mode_shapes".to_owned(),
        columns: shape_columns,
    });

    let config = params.at_mesh(finest.elements_per_leg);
    let mut summary = serde_json::Map::new();
    summary.insert(
        "modes".into(),
        json!(
            modes
                .iter()
                .enumerate()
                .map(|(r, m)| json!({
                    "mode": r + 1,
                    "frequency_hz": m.frequency_hz,
                    "class": class_name(m.class),
                }))
                .collect::<Vec<_>>()
        ),
    );
    summary.insert("elements_per_leg".into(), json!(finest.elements_per_leg));
    let closed = storey_stiffness_closed_form_n_per_m(&config);
    if let (Some(held), Some(free)) = (&finest.held, &finest.free) {
        summary.insert(
            "condensation".into(),
            json!({
                "storey_stiffness_n_per_m": held.storey_stiffness_n_per_m,
                "closed_form_n_per_m": closed,
                "closed_form": "4 legs × 12·E·J/(l³·(1 + Φ)) per storey, J = b·t³/12, Φ = 0 for Euler–Bernoulli legs",
                "relative_differences": held.storey_stiffness_n_per_m.iter().zip(&closed)
                    .map(|(k, c)| (k - c) / c).collect::<Vec<_>>(),
                "free_storey_stiffness_n_per_m": free.storey_stiffness_n_per_m,
                "free_non_chain_fraction": free.non_chain_fraction,
                "floor_masses_kg": free.floor_masses_kg,
            }),
        );
    }
    if params.solver == Solver::Calculix {
        let reference: Vec<f64> = modes.iter().map(|m| m.frequency_hz).collect();
        let mut runs_json = Vec::new();
        for run in &calculix {
            if let Some(reason) = &run.failure {
                runs_json.push(json!({
                    "elements_per_leg": run.elements_per_leg,
                    "failure": reason,
                }));
                continue;
            }
            let rows: Vec<_> = run
                .modes
                .iter()
                .zip(&reference)
                .enumerate()
                .map(|(r, (m, b))| {
                    json!({
                        "mode": r + 1,
                        "calculix_hz": m.frequency_hz,
                        "builtin_hz": b,
                        "difference_ratio": m.frequency_hz / b - 1.0,
                        "calculix_class": class_name(m.class),
                        "builtin_class": class_name(modes[r].class),
                    })
                })
                .collect();
            runs_json.push(json!({ "elements_per_leg": run.elements_per_leg, "modes": rows }));
        }
        summary.insert(
            "calculix".into(),
            json!({
                "against_builtin_elements_per_leg": finest.elements_per_leg,
                "runs": runs_json,
            }),
        );
    }
    // The frame condensed with its floors free (rocking included, as in the frame), with
    // the study model's damping when it fits the chain.
    let mut proposed_model = None;
    if let Some(free) = &finest.free {
        let spec = ModelSpec {
            description: format!(
                "{:?} frame condensed to a shear chain by the fea study ({} elements per leg)",
                params.preset, finest.elements_per_leg
            ),
            structure: free.shear_building_config(model.structure.damping.clone()),
            sensors: model.sensors.clone(),
        };
        let problems = spec.problems();
        if problems.is_empty() {
            proposed_model = Some(ProposedModel {
                name: "fea".to_owned(),
                spec,
                method: format!(
                    "static condensation of the {}-DOF built-in frame ({} elements per leg) \
                     onto the floors' sway, floors free; floor masses from the frame, damping \
                     from the study's model",
                    builtin_dofs(&config),
                    finest.elements_per_leg
                ),
            });
        } else {
            summary.insert(
                "proposed_model".into(),
                json!(format!(
                    "none: the study model's damping does not fit the condensed chain ({}); \
                     run on a model with as many floors as the frame",
                    crate::problems::join(&problems)
                )),
            );
        }
    }
    Ok(StudyOutput {
        summary: serde_json::Value::Object(summary),
        arrays,
        proposed_model,
    })
}

#[cfg(test)]
mod tests;
