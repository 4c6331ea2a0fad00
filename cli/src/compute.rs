//! `dtop modal | frf | control | dvf-critical-gain`: offline computations on a model (the
//! Southampton building unless `--model` names another). Owns only the command-line shape of
//! these subcommands, their cross-checks of the options (every problem reported at once) and the
//! JSON they print; all the numerics live in `dtop_dynamics::{frf, control}`. Finding the model
//! (built-in, file or catalogue) is [`crate::model_source`]'s job.

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use dtop_dynamics::control::{Compensator, ControlLaw, ControlStudy, LqgWeights, TmdTuning};
use dtop_dynamics::frf::{
    self, FrequencyGrid, FrfInput, FrfKind, FrfMethod, FrfRequest, default_df_hz, default_f_max_hz,
    default_f_min_hz,
};
use dtop_dynamics::{ControlError, FrfError, InertialActuator, ShearBuilding, ShearBuildingConfig};

/// Why a computation printed nothing.
#[derive(Debug)]
pub enum ComputeError {
    /// Bad command-line input; every problem, for exit status 64.
    Usage(Vec<String>),
    /// Valid input that the numerics could not handle.
    Failed(String),
}

impl From<FrfError> for ComputeError {
    fn from(e: FrfError) -> Self {
        match e {
            FrfError::Invalid(problems) => Self::Usage(problems),
            FrfError::Numerical(_) => Self::Failed(e.to_string()),
        }
    }
}

impl From<ControlError> for ComputeError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(problems) => Self::Usage(problems),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<dtop_dynamics::ModelError> for ComputeError {
    fn from(e: dtop_dynamics::ModelError) -> Self {
        match e {
            dtop_dynamics::ModelError::Invalid(problems) => Self::Usage(problems),
            other => Self::Failed(other.to_string()),
        }
    }
}

/// The sweep options shared by `frf` and `control`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Lowest frequency, Hz.
    #[arg(long, default_value_t = default_f_min_hz(), allow_hyphen_values = true)]
    pub f_min: f64,
    /// Highest frequency, Hz.
    #[arg(long, default_value_t = default_f_max_hz(), allow_hyphen_values = true)]
    pub f_max: f64,
    /// Frequency step, Hz.
    #[arg(long, default_value_t = default_df_hz(), allow_hyphen_values = true)]
    pub df: f64,
}

impl SweepArgs {
    fn grid(&self) -> FrequencyGrid {
        FrequencyGrid {
            f_min_hz: self.f_min,
            f_max_hz: self.f_max,
            df_hz: self.df,
        }
    }
}

/// Options of `dtop modal`.
#[derive(Debug, Clone, Args)]
pub struct ModalArgs {
    /// Fit the default inertial actuator on this floor (1-based); bare building if absent.
    #[arg(long)]
    pub actuator_floor: Option<usize>,
}

/// Which motion an FRF measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Displacement per force, m/N.
    Receptance,
    /// Velocity per force, (m/s)/N.
    Mobility,
    /// Absolute acceleration per force, (m/s²)/N.
    Accelerance,
}

/// How an FRF is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// C·(jωI − A)⁻¹·B + D.
    StateSpace,
    /// (K − ω²M + jωC)⁻¹.
    SecondOrder,
    /// Sum over modes (exact for the bare building only).
    Modal,
}

/// Options of `dtop frf`.
#[derive(Debug, Clone, Args)]
pub struct FrfArgs {
    /// Excitation: `floorN` (force on floor N) or `actuator` (coil force; needs
    /// --actuator-floor).
    #[arg(long)]
    pub input: String,
    /// Output: `floorN`.
    #[arg(long)]
    pub output: String,
    /// Receptance, mobility or accelerance.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Fit the default inertial actuator on this floor (1-based).
    #[arg(long)]
    pub actuator_floor: Option<usize>,
    /// Evaluation method; the output also reports the largest difference against the
    /// second-order form as a self-check.
    #[arg(long, value_enum, default_value = "state-space")]
    pub method: MethodArg,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// A control law on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LawArg {
    /// Passive tuned-mass damper (coil open).
    Tmd,
    /// Direct velocity feedback of the host floor's velocity.
    Dvf,
    /// LQR + Kalman filter on the floor accelerations.
    Lqg,
}

/// Compensator options shared by `control` and `dvf-critical-gain`.
#[derive(Debug, Clone, Args)]
pub struct CompensatorArgs {
    /// DVF compensator numerator, comma-separated, highest power of s first (e.g. `251.3`).
    #[arg(long, allow_hyphen_values = true)]
    pub compensator_num: Option<String>,
    /// DVF compensator denominator, comma-separated, highest power of s first (e.g. `1,251.3`).
    #[arg(long, allow_hyphen_values = true)]
    pub compensator_den: Option<String>,
}

impl CompensatorArgs {
    fn is_given(&self) -> bool {
        self.compensator_num.is_some() || self.compensator_den.is_some()
    }

    fn compensator(&self, problems: &mut Vec<String>) -> Compensator {
        let parse = |name: &str, text: &Option<String>, problems: &mut Vec<String>| match text {
            None => vec![1.0],
            Some(text) => {
                let parsed: Result<Vec<f64>, _> =
                    text.split(',').map(|x| x.trim().parse::<f64>()).collect();
                parsed.unwrap_or_else(|e| {
                    problems.push(format!("--{name} {text:?}: {e}"));
                    vec![1.0]
                })
            }
        };
        Compensator {
            numerator: parse("compensator-num", &self.compensator_num, problems),
            denominator: parse("compensator-den", &self.compensator_den, problems),
        }
    }
}

/// Options of `dtop control`.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// Host floor of the actuator and of the collocated velocity sensor (1-based).
    #[arg(long)]
    pub floor: usize,
    /// The control law.
    #[arg(long, value_enum)]
    pub law: LawArg,
    /// DVF gain h, A/(m/s), within 0..=50: coil current = h·C(s)·host velocity.
    #[arg(long, allow_hyphen_values = true)]
    pub gain: Option<f64>,
    /// DVF gain as a fraction of this floor's critical gain (instead of --gain).
    #[arg(long, allow_hyphen_values = true)]
    pub critical_fraction: Option<f64>,
    #[command(flatten)]
    pub compensator: CompensatorArgs,
    /// TMD: re-tune the suspension by Den Hartog for this mode (default: as built).
    #[arg(long)]
    pub den_hartog_mode: Option<usize>,
    /// LQG: weight ρ on the coil current in the LQR cost, J/A².
    #[arg(long, allow_hyphen_values = true)]
    pub lqr_current_weight: Option<f64>,
    /// LQG: intensity of the white force noise on every floor, N²·s.
    #[arg(long, allow_hyphen_values = true)]
    pub force_noise: Option<f64>,
    /// LQG: intensity of each accelerometer's noise, (m/s²)²·s.
    #[arg(long, allow_hyphen_values = true)]
    pub accel_noise: Option<f64>,
    /// Floor carrying the unit harmonic excitation force.
    #[arg(long, default_value_t = 1)]
    pub excitation_floor: usize,
    /// Include the per-frequency spectra (KE, baselines, actuator force, Nyquist locus).
    #[arg(long)]
    pub spectra: bool,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// Options of `dtop dvf-critical-gain`.
#[derive(Debug, Clone, Args)]
pub struct CriticalGainArgs {
    /// Only this host floor (default: every floor).
    #[arg(long)]
    pub floor: Option<usize>,
    #[command(flatten)]
    pub compensator: CompensatorArgs,
}

/// One of the offline computations.
#[derive(Debug, Clone)]
pub enum Computation {
    /// `dtop modal`.
    Modal(ModalArgs),
    /// `dtop frf`.
    Frf(FrfArgs),
    /// `dtop control`.
    Control(ControlArgs),
    /// `dtop dvf-critical-gain`.
    DvfCriticalGain(CriticalGainArgs),
}

/// Runs `computation` and returns its pretty-printed JSON.
///
/// # Errors
/// [`ComputeError::Usage`] with every problem of the options; [`ComputeError::Failed`] if the
/// numerics fail.
pub fn run(computation: &Computation) -> Result<String, ComputeError> {
    run_on(computation, &ShearBuildingConfig::southampton())
}

/// Runs `computation` on `model` (the structure; `--actuator-floor` and the control floors fit
/// an actuator to it: the model's own actuator constants if it has one, else the default
/// actuator) and returns its pretty-printed JSON.
///
/// # Errors
/// As [`run`].
pub fn run_on(
    computation: &Computation,
    model: &ShearBuildingConfig,
) -> Result<String, ComputeError> {
    let value = match computation {
        Computation::Modal(args) => modal(args, model)?,
        Computation::Frf(args) => frequency_response(args, model)?,
        Computation::Control(args) => control(args, model)?,
        Computation::DvfCriticalGain(args) => critical_gain(args, model)?,
    };
    serde_json::to_string_pretty(&value).map_err(|e| ComputeError::Failed(e.to_string()))
}

fn usage_unless_empty(problems: Vec<String>) -> Result<(), ComputeError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ComputeError::Usage(problems))
    }
}

/// `model` with an actuator on `floor`: the model's own actuator constants if it has one, the
/// default actuator otherwise.
fn with_actuator(model: &ShearBuildingConfig, floor: usize) -> ShearBuildingConfig {
    let actuator = model.actuator.unwrap_or_default();
    ShearBuildingConfig {
        actuator: Some(InertialActuator { floor, ..actuator }),
        ..model.clone()
    }
}

/// The building: `model` as it is without `actuator_floor`, else with the actuator there.
fn building(
    model: &ShearBuildingConfig,
    actuator_floor: Option<usize>,
) -> Result<ShearBuilding, ComputeError> {
    Ok(match actuator_floor {
        Some(floor) => ShearBuilding::new(with_actuator(model, floor))?,
        None => ShearBuilding::new(model.clone())?,
    })
}

/// The control study on `model` with the actuator on `floor`; otherwise as
/// [`ControlStudy::southampton`] sets it up.
fn control_study(model: &ShearBuildingConfig, floor: usize) -> ControlStudy {
    ControlStudy {
        building: with_actuator(model, floor),
        ..ControlStudy::southampton(floor)
    }
}

fn modal(args: &ModalArgs, model: &ShearBuildingConfig) -> Result<serde_json::Value, ComputeError> {
    let building =
        building(model, args.actuator_floor).map_err(|e| prefix(e, "--actuator-floor"))?;
    to_value(&frf::modal_analysis(&building)?)
}

/// Parses `floorN` (or a bare `N`) into N.
fn parse_floor(text: &str) -> Option<usize> {
    text.strip_prefix("floor").unwrap_or(text).parse().ok()
}

fn frequency_response(
    args: &FrfArgs,
    model: &ShearBuildingConfig,
) -> Result<serde_json::Value, ComputeError> {
    let mut problems = Vec::new();
    let input = if args.input == "actuator" {
        if args.actuator_floor.is_none() {
            problems.push("--input actuator needs --actuator-floor N".to_owned());
        }
        Some(FrfInput::ActuatorForce)
    } else if let Some(floor) = parse_floor(&args.input) {
        Some(FrfInput::FloorForce { floor })
    } else {
        problems.push(format!(
            "--input {:?} must be floorN or actuator",
            args.input
        ));
        None
    };
    let output_floor = parse_floor(&args.output);
    if output_floor.is_none() {
        problems.push(format!("--output {:?} must be floorN", args.output));
    }
    let grid = args.sweep.grid();
    problems.extend(grid.problems().into_iter().map(|p| format!("sweep: {p}")));
    let building = match building(model, args.actuator_floor) {
        Ok(b) => Some(b),
        Err(ComputeError::Usage(p)) => {
            problems.extend(p.into_iter().map(|p| format!("--actuator-floor: {p}")));
            None
        }
        Err(e) => return Err(e),
    };
    let (Some(input), Some(output_floor), Some(building)) = (input, output_floor, building) else {
        return Err(ComputeError::Usage(problems));
    };
    let kind = match args.kind {
        KindArg::Receptance => FrfKind::Receptance,
        KindArg::Mobility => FrfKind::Mobility,
        KindArg::Accelerance => FrfKind::Accelerance,
    };
    let request = FrfRequest {
        input,
        output_floor,
        kind,
    };
    problems.extend(request.problems(&building));
    usage_unless_empty(problems)?;
    let method = match args.method {
        MethodArg::StateSpace => FrfMethod::StateSpace,
        MethodArg::SecondOrder => FrfMethod::SecondOrder,
        MethodArg::Modal => FrfMethod::ModalSuperposition,
    };
    let response = frf::frequency_response(&building, &request, &grid, method)?;
    let check = frf::frequency_response(&building, &request, &grid, FrfMethod::SecondOrder)?;
    let max_relative_difference = response
        .values
        .iter()
        .zip(&check.values)
        .map(|(a, b)| (a - b).norm() / b.norm().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    Ok(json!({
        "actuator_floor": args.actuator_floor,
        "request": request,
        "units": kind.units(),
        "method": method,
        "max_relative_difference_vs_second_order": max_relative_difference,
        "frequency_hz": response.frequencies_hz,
        "re": response.values.iter().map(|v| v.re).collect::<Vec<_>>(),
        "im": response.values.iter().map(|v| v.im).collect::<Vec<_>>(),
        "magnitude": response.values.iter().map(|v| v.norm()).collect::<Vec<_>>(),
        "phase_deg": response.values.iter().map(|v| v.arg().to_degrees()).collect::<Vec<_>>(),
    }))
}

fn control(
    args: &ControlArgs,
    model: &ShearBuildingConfig,
) -> Result<serde_json::Value, ComputeError> {
    let mut problems = Vec::new();
    let mut study = control_study(model, args.floor);
    study.excitation_floor = args.excitation_floor;
    study.grid = args.sweep.grid();
    let dvf_only = [
        ("--gain", args.gain.is_some()),
        ("--critical-fraction", args.critical_fraction.is_some()),
        (
            "--compensator-num/--compensator-den",
            args.compensator.is_given(),
        ),
    ];
    let lqg_only = [
        ("--lqr-current-weight", args.lqr_current_weight.is_some()),
        ("--force-noise", args.force_noise.is_some()),
        ("--accel-noise", args.accel_noise.is_some()),
    ];
    let tmd_only = [("--den-hartog-mode", args.den_hartog_mode.is_some())];
    for (law, options) in [
        (LawArg::Dvf, &dvf_only[..]),
        (LawArg::Lqg, &lqg_only[..]),
        (LawArg::Tmd, &tmd_only[..]),
    ] {
        for (name, given) in options {
            if *given && args.law != law {
                problems.push(format!("{name} applies only to --law {law:?}").to_lowercase());
            }
        }
    }
    let law = match args.law {
        LawArg::Tmd => ControlLaw::Tmd {
            tuning: args
                .den_hartog_mode
                .map_or(TmdTuning::AsBuilt, |mode| TmdTuning::DenHartog { mode }),
        },
        LawArg::Lqg => {
            let defaults = LqgWeights::default();
            ControlLaw::Lqg {
                weights: LqgWeights {
                    current_weight_j_per_a2: args
                        .lqr_current_weight
                        .unwrap_or(defaults.current_weight_j_per_a2),
                    force_noise_n2_s: args.force_noise.unwrap_or(defaults.force_noise_n2_s),
                    accel_noise_m2_s3: args.accel_noise.unwrap_or(defaults.accel_noise_m2_s3),
                },
            }
        }
        LawArg::Dvf => {
            let compensator = args.compensator.compensator(&mut problems);
            let gain = match (args.gain, args.critical_fraction) {
                (Some(gain), None) => gain,
                (None, Some(fraction)) => {
                    if !(fraction.is_finite() && fraction >= 0.0) {
                        problems.push(format!(
                            "--critical-fraction {fraction} must be zero or positive"
                        ));
                    }
                    let mut study_problems = study.problems();
                    if study_problems.is_empty() && compensator.problems().is_empty() {
                        match study.dvf_critical_gain(&compensator)? {
                            Some(critical) => fraction * critical.gain_a_per_m_s,
                            None => {
                                problems.push(
                                    "--critical-fraction: this loop has no critical gain".into(),
                                );
                                0.0
                            }
                        }
                    } else {
                        problems.append(&mut study_problems);
                        0.0
                    }
                }
                _ => {
                    problems.push(
                        "--law dvf needs exactly one of --gain or --critical-fraction".into(),
                    );
                    0.0
                }
            };
            ControlLaw::Dvf {
                gain_a_per_m_s: gain,
                compensator,
            }
        }
    };
    problems.extend(study.problems());
    problems.extend(law.problems(study.building.floors()));
    problems.sort();
    problems.dedup();
    usage_unless_empty(problems)?;
    let mut report = study.run(&law)?;
    if !args.spectra {
        report.spectra = None;
    }
    to_value(&report)
}

fn critical_gain(
    args: &CriticalGainArgs,
    model: &ShearBuildingConfig,
) -> Result<serde_json::Value, ComputeError> {
    let mut problems = Vec::new();
    let compensator = args.compensator.compensator(&mut problems);
    problems.extend(compensator.problems());
    let floors: Vec<usize> = match args.floor {
        Some(floor) => vec![floor],
        None => (1..=model.floors()).collect(),
    };
    for &floor in &floors {
        problems.extend(control_study(model, floor).problems());
    }
    usage_unless_empty(problems)?;
    let mut results = Vec::new();
    for floor in floors {
        let critical = control_study(model, floor).dvf_critical_gain(&compensator)?;
        results.push(json!({ "floor": floor, "critical": critical }));
    }
    Ok(json!({ "compensator": compensator, "floors": results }))
}

fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value, ComputeError> {
    serde_json::to_value(value).map_err(|e| ComputeError::Failed(e.to_string()))
}

fn prefix(e: ComputeError, option: &str) -> ComputeError {
    match e {
        ComputeError::Usage(problems) => ComputeError::Usage(
            problems
                .into_iter()
                .map(|p| format!("{option}: {p}"))
                .collect(),
        ),
        other => other,
    }
}

// Tests fail by panicking; this crate has no clippy.toml that allows it in tests.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn sweep() -> SweepArgs {
        SweepArgs {
            f_min: default_f_min_hz(),
            f_max: default_f_max_hz(),
            df: default_df_hz(),
        }
    }

    fn no_compensator() -> CompensatorArgs {
        CompensatorArgs {
            compensator_num: None,
            compensator_den: None,
        }
    }

    fn control_args(floor: usize, law: LawArg) -> ControlArgs {
        ControlArgs {
            floor,
            law,
            gain: None,
            critical_fraction: None,
            compensator: no_compensator(),
            den_hartog_mode: None,
            lqr_current_weight: None,
            force_noise: None,
            accel_noise: None,
            excitation_floor: 1,
            spectra: false,
            sweep: sweep(),
        }
    }

    fn usage_problems(computation: &Computation) -> Vec<String> {
        match run(computation) {
            Err(ComputeError::Usage(problems)) => problems,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn control_reports_every_bad_option_at_once() {
        let mut args = control_args(4, LawArg::Tmd);
        args.gain = Some(3.0);
        args.lqr_current_weight = Some(1.0);
        args.sweep.df = -1.0;
        let problems = usage_problems(&Computation::Control(args));
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for needle in [
            "--gain",
            "--lqr-current-weight",
            "actuator.floor = 4",
            "df_hz",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:#?}"
            );
        }
    }

    #[test]
    fn dvf_needs_exactly_one_gain_and_a_gain_in_range() {
        let problems = usage_problems(&Computation::Control(control_args(2, LawArg::Dvf)));
        assert!(
            problems.iter().any(|p| p.contains("exactly one")),
            "{problems:#?}"
        );
        let mut args = control_args(2, LawArg::Dvf);
        args.gain = Some(60.0);
        args.compensator.compensator_den = Some("1,-2".into());
        let problems = usage_problems(&Computation::Control(args));
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }

    #[test]
    fn frf_lists_bad_input_output_and_missing_actuator_floor() {
        let args = FrfArgs {
            input: "actuator".into(),
            output: "roof".into(),
            kind: KindArg::Mobility,
            actuator_floor: None,
            method: MethodArg::StateSpace,
            sweep: sweep(),
        };
        let problems = usage_problems(&Computation::Frf(args));
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }

    #[test]
    fn critical_gain_prints_one_entry_per_floor_with_agreeing_methods() {
        let json = run(&Computation::DvfCriticalGain(CriticalGainArgs {
            floor: None,
            compensator: no_compensator(),
        }))
        .expect("runs");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let floors = value["floors"].as_array().expect("array");
        assert_eq!(floors.len(), 3);
        for entry in floors {
            let critical = &entry["critical"];
            assert!(critical["gain_a_per_m_s"].as_f64().expect("number") > 0.0);
            assert!(critical["relative_difference"].as_f64().expect("number") < 1e-3);
        }
    }

    #[test]
    fn modal_prints_four_modes_with_the_actuator() {
        let json = run(&Computation::Modal(ModalArgs {
            actuator_floor: Some(3),
        }))
        .expect("runs");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["modes"].as_array().map(Vec::len), Some(4));
        let problems = usage_problems(&Computation::Modal(ModalArgs {
            actuator_floor: Some(0),
        }));
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn modal_on_another_model_matches_the_closed_form_two_storey_chain() {
        // m = diag(2, 1) kg, K = [[k1 + k2, -k2], [-k2, k2]] with k1 = 800, k2 = 400 N/m:
        // det(K - λM) = 2λ² - 2000λ + 320000 = 0 gives λ = 200 and 800 (rad/s)².
        let model = ShearBuildingConfig {
            floor_masses_kg: vec![2.0, 1.0],
            storey_stiffness_n_per_m: vec![800.0, 400.0],
            damping: dtop_dynamics::Damping::Modal {
                zetas: vec![0.01, 0.01],
            },
            actuator: None,
        };
        let json = run_on(
            &Computation::Modal(ModalArgs {
                actuator_floor: None,
            }),
            &model,
        )
        .expect("runs");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let modes = value["modes"].as_array().expect("modes");
        assert_eq!(modes.len(), 2);
        for (mode, lambda) in modes.iter().zip([200.0_f64, 800.0]) {
            let expected_hz = lambda.sqrt() / (2.0 * std::f64::consts::PI);
            let f_hz = mode["frequency_hz"].as_f64().expect("number");
            // An eigen-solve of a 2x2 matrix: agreement to rounding, far inside 1e-9.
            assert!(
                (f_hz - expected_hz).abs() < 1e-9 * expected_hz,
                "{f_hz} vs {expected_hz}"
            );
        }
        // The actuator is fitted to this model too: one more degree of freedom.
        let json = run_on(
            &Computation::Modal(ModalArgs {
                actuator_floor: Some(2),
            }),
            &model,
        )
        .expect("runs");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["dofs"].as_u64(), Some(3));
    }

    #[test]
    fn floor_names_parse_with_or_without_prefix() {
        assert_eq!(parse_floor("floor3"), Some(3));
        assert_eq!(parse_floor("2"), Some(2));
        assert_eq!(parse_floor("roof"), None);
    }
}
