//! Acceptance test for the live twin's state estimator (issue "Live twin", part 2): on the
//! simulated Southampton rig under band-limited noise, the Kalman filter fed only what the
//! rig's ADC reports (quantised floor accelerations and the measured force) tracks every
//! floor's true velocity to within 5 % RMS.
//!
//! `Rig` keeps its state private, so the test runs a replica of `Rig::step` built from the
//! same public pieces (`dtop_dynamics` model, `Excitation`, `SensorBank`) and, in lock-step,
//! the real `Rig`, asserting that both produce bit-identical raw samples: the truth read
//! from the replica is the truth of the rig.

// Tests (and their helpers) panic on broken preconditions; that is how they fail.
#![allow(clippy::expect_used)]

use dtop_dynamics::kalman::structural::DEFAULT_GROUND_ACCEL_RMS_M_S2;
use dtop_dynamics::{GainSchedule, ShearBuilding, StructuralEstimator, StructuralNoise};
use dtop_rig_sim::excitation::Excitation;
use dtop_rig_sim::rig::{FLOORS, Rig};
use dtop_rig_sim::sensor::SensorBank;
use dtop_rig_sim::{ExcitationConfig, SimConfig};
use nalgebra::DVector;

/// At least 20 s at 1 kHz, as the issue asks.
const DURATION_S: f64 = 20.0;
/// Estimates before this are discarded: the filter starts from rest with no knowledge of
/// the state, and its error decays with a time constant of ~0.15 s.
const BURN_IN_S: f64 = 1.0;
/// The bar: RMS velocity error below 5 % of the RMS true velocity, every floor.
const MAX_RELATIVE_ERROR: f64 = 0.05;

/// Achieved relative RMS velocity errors, floors 1..=3, and the proof mass's if fitted.
struct Tracking {
    floors: [f64; FLOORS],
    /// RMS true velocity of each floor after burn-in, m/s, for scale.
    truth_rms_m_s: [f64; FLOORS],
    proof_mass: Option<f64>,
    mean_nis: f64,
}

/// Runs the rig (default sensors: 0.002 m/s² and 0.005 N RMS noise, 24-bit ADC) under
/// `config.excitation` on floor 1, with the actuator (if `config.actuator_floor` ≠ 0)
/// commanded by `actuator_force_n(k)`, and the filter alongside.
fn track(config: &SimConfig, actuator_force_n: impl Fn(usize) -> f64) -> Tracking {
    config.validate().expect("valid simulator config");
    let fs = config.sample_rate_hz;
    let building = match config.actuator_floor {
        0 => ShearBuilding::southampton(),
        floor => ShearBuilding::southampton_with_actuator(usize::from(floor)).expect("valid"),
    };
    let plant = building
        .state_space()
        .discretize_zoh(1.0 / fs)
        .expect("valid step");
    let layout = plant.io_layout();
    let dofs = plant.n_states() / 2;

    // The replica of the rig's physics and sensor chain, and the rig itself.
    let mut excitation = Excitation::new(&config.excitation, fs, config.seed);
    let mut sensors = SensorBank::new(
        config.excitation_target,
        config.accel_noise_rms_m_s2,
        config.force_noise_rms_n,
        config.seed,
    );
    let mut rig = Rig::new(config).expect("rig builds");
    let mut x = DVector::zeros(plant.n_states());
    let mut u = DVector::zeros(plant.n_inputs());
    let mut y = DVector::zeros(plant.n_outputs());

    // The filter knows the sensors' datasheet figures, nothing the simulation drew.
    let channels = *sensors.channels();
    let force_lsb_n = channels[3].scale();
    let mut noise = StructuralNoise::defaults(layout);
    noise.accel_noise_rms_m_s2 = config.accel_noise_rms_m_s2;
    noise.accel_lsb_m_s2 = channels[0].scale();
    noise.input_uncertainty_rms[layout.input_floor_force(1)] =
        (config.force_noise_rms_n.powi(2) + force_lsb_n.powi(2) / 12.0).sqrt();
    // A real lab floor shakes a little; the twin does not know the simulator's is still.
    noise.input_uncertainty_rms[layout.input_ground_accel()] = DEFAULT_GROUND_ACCEL_RMS_M_S2;
    let mut estimator =
        StructuralEstimator::new(&plant, &noise, GainSchedule::Auto).expect("valid design");
    assert!(estimator.filter().is_steady_state());

    let steps = (DURATION_S * fs).round() as usize;
    let burn_in = (BURN_IN_S * fs).round() as usize;
    let tracked = dofs; // floors, then the proof mass if fitted
    let mut sum_sq_truth = vec![0.0; tracked];
    let mut sum_sq_error = vec![0.0; tracked];
    let mut nis_sum = 0.0;
    let mut u_measured = vec![0.0; plant.n_inputs()];
    for k in 0..steps {
        // Replica of `Rig::step` (floor-1 force excitation).
        let force_n = excitation.next_value();
        let actuator_n = actuator_force_n(k);
        u.fill(0.0);
        u[layout.input_floor_force(1)] = force_n;
        if let Some(a) = layout.input_actuator() {
            u[a] = actuator_n;
        }
        let truth_velocity: Vec<f64> = (0..tracked).map(|dof| x[dofs + dof]).collect();
        plant.step(&mut x, &u, &mut y);
        let physical = [
            y[layout.output_floor_accel(1)],
            y[layout.output_floor_accel(2)],
            y[layout.output_floor_accel(3)],
            force_n,
        ];
        let raw = sensors.measure(&physical);
        assert_eq!(
            raw,
            rig.step(actuator_n).raw,
            "replica left the rig at sample {k}"
        );

        // The twin's view: ADC counts times the manifest scale, plus the actuator command.
        let si: Vec<f64> = (0..4)
            .map(|c| f64::from(raw[c]) * channels[c].scale())
            .collect();
        u_measured[layout.input_floor_force(1)] = si[3];
        if let Some(a) = layout.input_actuator() {
            u_measured[a] = actuator_n;
        }
        let report = estimator.step(&u_measured, &[Some(si[0]), Some(si[1]), Some(si[2])]);

        if k >= burn_in {
            nis_sum += report.nis;
            for dof in 0..tracked {
                let estimate = if dof < FLOORS {
                    estimator.floor_velocity_m_s(dof + 1)
                } else {
                    estimator.proof_mass_velocity_m_s().expect("fitted")
                };
                sum_sq_truth[dof] += truth_velocity[dof].powi(2);
                sum_sq_error[dof] += (estimate - truth_velocity[dof]).powi(2);
            }
        }
    }
    let relative: Vec<f64> = (0..tracked)
        .map(|dof| (sum_sq_error[dof] / sum_sq_truth[dof]).sqrt())
        .collect();
    Tracking {
        floors: std::array::from_fn(|f| relative[f]),
        truth_rms_m_s: std::array::from_fn(|f| (sum_sq_truth[f] / (steps - burn_in) as f64).sqrt()),
        proof_mass: relative.get(FLOORS).copied(),
        mean_nis: nis_sum / (steps - burn_in) as f64,
    }
}

fn assert_tracks(label: &str, tracking: &Tracking) {
    eprintln!(
        "{label}: RMS velocity error / RMS true velocity = {} (proof mass: {}), mean NIS {:.2} \
         (3 expected for a perfectly matched noise model)",
        tracking
            .floors
            .iter()
            .enumerate()
            .map(|(f, e)| format!(
                "floor {} {:.3} % of {:.4} m/s",
                f + 1,
                100.0 * e,
                tracking.truth_rms_m_s[f]
            ))
            .collect::<Vec<_>>()
            .join(", "),
        tracking
            .proof_mass
            .map_or("not fitted".to_owned(), |e| format!("{:.3} %", 100.0 * e)),
        tracking.mean_nis,
    );
    // The design assumes disturbances the simulator does not have (ground shake, forces
    // on floors 2 and 3), so it is conservative and the NIS sits below its χ² mean of 3
    // (≈ 1.9 observed). Far above 3 would mean an overconfident or wrong model.
    assert!(
        tracking.mean_nis < 4.0,
        "{label}: mean NIS {:.2} exceeds what 3 channels allow",
        tracking.mean_nis
    );
    for (f, error) in tracking.floors.iter().enumerate() {
        assert!(
            *error < MAX_RELATIVE_ERROR,
            "{label}: floor {} velocity error is {:.2} % of its RMS",
            f + 1,
            100.0 * error
        );
    }
}

#[test]
fn kalman_filter_tracks_the_bare_rigs_floor_velocities_within_five_percent() {
    let config = SimConfig {
        actuator_floor: 0,
        // Band-limited noise on floor 1: 5 N RMS, 0–50 Hz, covering all three modes.
        excitation: ExcitationConfig::Noise {
            rms: 5.0,
            low_hz: 0.0,
            high_hz: 50.0,
        },
        seed: 7,
        ..SimConfig::default()
    };
    let tracking = track(&config, |_| 0.0);
    assert_tracks("bare rig", &tracking);
}

#[test]
fn kalman_filter_tracks_the_rig_with_a_driven_actuator_within_five_percent() {
    // The default rig: actuator on floor 3, here commanded with its own band-limited noise
    // (2 N RMS, 0–20 Hz), which the filter is told as a known input.
    let config = SimConfig {
        excitation: ExcitationConfig::Noise {
            rms: 5.0,
            low_hz: 0.0,
            high_hz: 50.0,
        },
        seed: 8,
        ..SimConfig::default()
    };
    assert_eq!(config.actuator_floor, 3);
    let mut command = Excitation::new(
        &ExcitationConfig::Noise {
            rms: 2.0,
            low_hz: 0.0,
            high_hz: 20.0,
        },
        config.sample_rate_hz,
        1234,
    );
    let commands: Vec<f64> = (0..(DURATION_S * config.sample_rate_hz) as usize)
        .map(|_| command.next_value())
        .collect();
    let tracking = track(&config, |k| commands[k]);
    assert_tracks("rig with actuator on floor 3", &tracking);
    // The proof mass is estimated too; it is not in the bar, but it must track.
    let proof = tracking.proof_mass.expect("fitted");
    assert!(
        proof < MAX_RELATIVE_ERROR,
        "proof mass: {:.2} %",
        100.0 * proof
    );
}
