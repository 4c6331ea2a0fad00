//! Acceptance test for direct velocity feedback (DVF) on the simulated rig: with the inertial
//! actuator on floor 3 and band-limited noise on floor 1, switching DVF on at half its
//! critical gain lowers the top floor's RMS acceleration in the mode-1 band, and the measured
//! reduction agrees with the frequency-domain prediction of `dtop_dynamics::control`; once
//! with the twin's estimator velocity, once with the sampled controller the edge runs
//! (`dtop_dynamics::control::sampled`, as pushed in `ControllerParams`).
//!
//! Owns only the comparison. The rig is the real `Rig` (ZOH plant at 1 kHz, excitation,
//! sensor noise and 24-bit quantisation); the velocity the loop feeds back is the
//! `StructuralEstimator`'s, from the quantised accelerations and the measured force, as the
//! edge would have it. Both runs use the same seed, so the excitation and sensor-noise
//! sequences are identical and the reduction is a paired comparison.
//!
//! The baseline is the coil left open (actuator force 0): the proof mass rides its
//! suspension as a passive absorber. That is the "passive" baseline of `dynamics/CONTROL.md`,
//! and the prediction uses it too (`close_loop` with no controller).

// Tests panic on broken preconditions; that is how they fail.
#![allow(clippy::expect_used)]

use std::f64::consts::TAU;

use dtop_dynamics::control::analysis::close_loop;
use dtop_dynamics::control::compensator::Compensator;
use dtop_dynamics::control::laws::dvf_controller;
use dtop_dynamics::control::plant::ActuatedPlant;
use dtop_dynamics::control::{SampledLaw, SampledLoop, design_sampled};
use dtop_dynamics::frf::{C64, omega, state_response};
use dtop_dynamics::kalman::structural::DEFAULT_GROUND_ACCEL_RMS_M_S2;
use dtop_dynamics::{
    ControlLaw, ControlStudy, GainSchedule, ShearBuilding, StructuralEstimator, StructuralNoise,
};
use dtop_rig_sim::rig::{FLOORS, Rig};
use dtop_rig_sim::sensor::{RAW_MAX, RAW_MIN};
use dtop_rig_sim::{ExcitationConfig, SimConfig};

/// Host floor of the actuator; the top floor, whose acceleration is judged.
const ACTUATOR_FLOOR: usize = 3;
/// Half the critical gain: a 6 dB gain margin, the design point of CONTROL.md's tables.
const CRITICAL_FRACTION: f64 = 0.5;
/// Discarded at the start of each run: the structure starts at rest and the filter from
/// zero; the slowest closed-loop pole decays in well under a second.
const SETTLING_S: f64 = 2.0;
/// Judged record after settling.
const RECORD_S: f64 = 60.0;
/// Excitation on floor 1: band-limited noise (4th-order Butterworth band), N RMS and Hz.
const FORCE_RMS_N: f64 = 5.0;
const FORCE_LOW_HZ: f64 = 1.0;
const FORCE_HIGH_HZ: f64 = 50.0;
const SEED: u64 = 31;
/// Largest accepted |measured − predicted| reduction, dB; see the assertion.
const MAX_DISAGREEMENT_DB: f64 = 0.5;
/// Trapezoid steps for the predicted band integrals; refining tenfold moves them < 1e-4 dB.
const PREDICTION_STEPS: usize = 20_000;

/// What one run of the rig produced after settling.
struct Run {
    /// Measured (noisy, quantised) floor-3 acceleration, m/s², one value per sample.
    top_accel_m_s2: Vec<f64>,
    /// RMS force the actuator applied, N.
    actuator_rms_n: f64,
    /// Largest |raw count| on any accelerometer channel, over the whole run.
    peak_raw: i32,
}

/// What closes the loop in a run.
enum Control {
    /// The coil left open: the passive baseline.
    Open,
    /// The twin's way: the `StructuralEstimator`'s floor-3 velocity times Bl·h.
    Estimated { gain_a_per_m_s: f64 },
    /// The edge's way: the realized sampled controller (Kalman predictor + DVF row) that the
    /// twin pushes as `ControllerParams`, fed the measured channels and the applied force.
    Sampled(Box<SampledLoop>),
}

/// Runs the rig for settling + record with `control`; the force computed at one sample is
/// applied from the next.
fn run(config: &SimConfig, mut control: Control, force_factor_n_per_a: f64) -> Run {
    let fs = config.sample_rate_hz;
    let building =
        ShearBuilding::southampton_with_actuator(ACTUATOR_FLOOR).expect("valid building");
    let model = building
        .state_space()
        .discretize_zoh(1.0 / fs)
        .expect("valid step");
    let layout = model.io_layout();
    let actuator_input = layout.input_actuator().expect("actuator fitted");

    let mut rig = Rig::new(config).expect("rig builds");
    // The filter knows the datasheet figures, as in kalman_tracks_truth.rs.
    let channels = *rig.sensors().channels();
    let mut noise = StructuralNoise::defaults(layout);
    noise.accel_noise_rms_m_s2 = config.accel_noise_rms_m_s2;
    noise.accel_lsb_m_s2 = channels[0].scale();
    noise.input_uncertainty_rms[layout.input_floor_force(1)] =
        (config.force_noise_rms_n.powi(2) + channels[3].scale().powi(2) / 12.0).sqrt();
    noise.input_uncertainty_rms[layout.input_ground_accel()] = DEFAULT_GROUND_ACCEL_RMS_M_S2;
    let mut estimator =
        StructuralEstimator::new(&model, &noise, GainSchedule::Auto).expect("valid design");

    let settling = (SETTLING_S * fs).round() as usize;
    let steps = settling + (RECORD_S * fs).round() as usize;
    let mut u = vec![0.0; model.n_inputs()];
    let mut top_accel_m_s2 = Vec::with_capacity(steps - settling);
    let mut actuator_sum_sq = 0.0;
    let mut peak_raw = 0;
    // Force computed at the previous sample: the controller needs one sample to compute.
    let mut pending_n = 0.0;
    for k in 0..steps {
        let applied_n = pending_n;
        let sample = rig.step(applied_n);
        peak_raw = sample.raw[..FLOORS]
            .iter()
            .fold(peak_raw, |m, r| m.max(r.saturating_abs()));
        u[layout.input_floor_force(1)] = sample.value_si[3];
        u[actuator_input] = applied_n;
        let accel: Vec<Option<f64>> = sample.value_si[..FLOORS].iter().map(|&a| Some(a)).collect();
        estimator.step(&u, &accel);
        // The rig's actuator input pushes + on the proof mass and − on the host floor, so a
        // command of +Bl·h·v̂ is the coil current i = h·v̂ of CONTROL.md: the floor feels
        // −Bl·h·v̂, a skyhook damper.
        pending_n = match &mut control {
            Control::Open => 0.0,
            Control::Estimated { gain_a_per_m_s } => {
                force_factor_n_per_a
                    * *gain_a_per_m_s
                    * estimator.floor_velocity_m_s(ACTUATOR_FLOOR)
            }
            Control::Sampled(sampled) => {
                let w = [
                    sample.value_si[0],
                    sample.value_si[1],
                    sample.value_si[2],
                    sample.value_si[3],
                ];
                let force_n = sampled.output(&w);
                sampled.advance(&w, force_n);
                force_n
            }
        };
        if k >= settling {
            top_accel_m_s2.push(sample.value_si[ACTUATOR_FLOOR - 1]);
            actuator_sum_sq += applied_n * applied_n;
        }
    }
    Run {
        actuator_rms_n: (actuator_sum_sq / top_accel_m_s2.len() as f64).sqrt(),
        top_accel_m_s2,
        peak_raw,
    }
}

/// Mean square of `x` within `lo_hz..=hi_hz`: the one-sided sum of its DFT bins in the band
/// (Parseval), i.e. the power of an ideal band-pass of the record. Rectangular window: the
/// nearest strong out-of-band line (mode 2, ~8 Hz past the band edge, ~500 bins) leaks
/// ~1e-6 of its power per bin, negligible. A plain O(bins·N) DFT: deterministic, no FFT
/// dependency, well under a second for 60 000 samples and ~700 bins.
fn band_mean_square(x: &[f64], sample_rate_hz: f64, lo_hz: f64, hi_hz: f64) -> f64 {
    let n = x.len();
    let df = sample_rate_hz / n as f64;
    // Twiddles indexed by (k·m) mod N, so no phase error accumulates along the record.
    let twiddle: Vec<(f64, f64)> = (0..n)
        .map(|m| (TAU * m as f64 / n as f64).sin_cos())
        .collect();
    let first = (lo_hz / df).ceil() as usize;
    let last = (hi_hz / df).floor() as usize;
    let mut sum = 0.0;
    for k in first.max(1)..=last {
        let (mut re, mut im) = (0.0, 0.0);
        let mut index = 0usize;
        for &value in x {
            let (s, c) = twiddle[index];
            re += value * c;
            im -= value * s;
            index += k;
            if index >= n {
                index -= n;
            }
        }
        sum += 2.0 * (re * re + im * im);
    }
    sum / (n as f64 * n as f64)
}

/// Relative power spectral density of the excitation: the analog 4th-order Butterworth band
/// the noise is shaped with. The simulator's digital filter is its bilinear transform,
/// pre-warped at the corners; below 12 Hz at 1 kHz the two differ by < 1e-3 in power.
fn excitation_shape(f_hz: f64) -> f64 {
    let high = (f_hz / FORCE_LOW_HZ).powi(8);
    high / (1.0 + high) / (1.0 + (f_hz / FORCE_HIGH_HZ).powi(8))
}

/// ∫ |A₃(f)/F₁(f)|²·S(f) df over the band, for the coil open (`None`) or DVF at gain h:
/// floor-3 acceleration per unit floor-1 force, from the closed loop of the control study.
/// The ground is at rest, so the absolute acceleration is jω times the floor velocity.
fn predicted_band_power(
    plant: &ActuatedPlant,
    gain_a_per_m_s: Option<f64>,
    lo_hz: f64,
    hi_hz: f64,
) -> f64 {
    let controller =
        gain_a_per_m_s.map(|h| dvf_controller(h, &Compensator::unity()).expect("valid law"));
    let closed = close_loop(plant, controller.as_ref(), 1.0, 1).expect("loop closes");
    let velocity_row = closed.c_floor_velocity.row(ACTUATOR_FLOOR - 1);
    let df = (hi_hz - lo_hz) / PREDICTION_STEPS as f64;
    (0..=PREDICTION_STEPS)
        .map(|i| {
            let f_hz = lo_hz + df * i as f64;
            let w = omega(f_hz);
            let x = state_response(&closed.a, &closed.b_excitation, w).expect("no undamped pole");
            let v: C64 = velocity_row
                .iter()
                .zip(x.iter())
                .map(|(c, xi)| xi * *c)
                .sum();
            let weight = if i == 0 || i == PREDICTION_STEPS {
                0.5
            } else {
                1.0
            };
            weight * (v.norm() * w).powi(2) * excitation_shape(f_hz) * df
        })
        .sum()
}

#[test]
fn dvf_at_half_critical_gain_lowers_top_floor_mode_1_acceleration_as_predicted() {
    check_dvf_reduction("twin-hosted (estimator velocity)", |gain, _, _| {
        Control::Estimated {
            gain_a_per_m_s: gain,
        }
    });
}

#[test]
fn edge_sampled_dvf_at_half_critical_gain_lowers_mode_1_acceleration_as_predicted() {
    check_dvf_reduction("edge-hosted (sampled controller)", |gain, bl, config| {
        let building =
            ShearBuilding::southampton_with_actuator(ACTUATOR_FLOOR).expect("valid building");
        let dt_s = 1.0 / config.sample_rate_hz;
        let layout = building
            .state_space()
            .discretize_zoh(dt_s)
            .expect("valid step")
            .io_layout();
        let channels = *Rig::new(config).expect("rig").sensors().channels();
        let mut noise = StructuralNoise::defaults(layout);
        noise.accel_noise_rms_m_s2 = config.accel_noise_rms_m_s2;
        noise.accel_lsb_m_s2 = channels[0].scale();
        noise.input_uncertainty_rms[layout.input_floor_force(1)] =
            (config.force_noise_rms_n.powi(2) + channels[3].scale().powi(2) / 12.0).sqrt();
        noise.input_uncertainty_rms[layout.input_ground_accel()] = DEFAULT_GROUND_ACCEL_RMS_M_S2;
        let design = design_sampled(
            &building,
            dt_s,
            &noise,
            SampledLaw::Dvf {
                gain_n_s_per_m: bl * gain,
            },
        )
        .expect("design");
        assert!(design.is_stable(), "{design:?}");
        Control::Sampled(Box::new(
            SampledLoop::new(design.controller).expect("valid controller"),
        ))
    });
}

/// Runs the rig with the coil open and with `control(h, Bl, config)` at half the critical
/// gain, and checks the measured mode-1 reduction against the frequency-domain prediction.
fn check_dvf_reduction(label: &str, control: impl Fn(f64, f64, &SimConfig) -> Control) {
    let started = std::time::Instant::now();
    let study = ControlStudy::southampton(ACTUATOR_FLOOR);
    // The rig and the study must be the same structure, or the comparison means nothing.
    let rig_building =
        ShearBuilding::southampton_with_actuator(ACTUATOR_FLOOR).expect("valid building");
    assert_eq!(rig_building.config(), &study.building);
    let force_factor_n_per_a = study.electrics.force_factor_n_per_a;

    let critical = study
        .dvf_critical_gain(&Compensator::unity())
        .expect("study is valid")
        .expect("DVF on an inertial actuator has a critical gain");
    let gain = CRITICAL_FRACTION * critical.gain_a_per_m_s;
    let report = study
        .run(&ControlLaw::Dvf {
            gain_a_per_m_s: gain,
            compensator: Compensator::unity(),
        })
        .expect("study runs");
    assert!(report.stability.stable, "design must be stable");
    // Band 1 of CONTROL.md: from the sweep start to the geometric mean of the bare
    // building's first two frequencies. It holds both peaks mode 1 splits into with the
    // proof mass (5.7 and 7.8 Hz).
    let (lo_hz, hi_hz) = (
        report.kinetic_energy.mode_band_edges_hz[0],
        report.kinetic_energy.mode_band_edges_hz[1],
    );

    let plant = ActuatedPlant::inertial(&rig_building, study.electrics).expect("plant");
    let predicted_db = 10.0
        * (predicted_band_power(&plant, None, lo_hz, hi_hz)
            / predicted_band_power(&plant, Some(gain), lo_hz, hi_hz))
        .log10();

    let config = SimConfig {
        actuator_floor: ACTUATOR_FLOOR as u8,
        excitation: ExcitationConfig::Noise {
            rms: FORCE_RMS_N,
            low_hz: FORCE_LOW_HZ,
            high_hz: FORCE_HIGH_HZ,
        },
        seed: SEED,
        ..SimConfig::default()
    };
    config.validate().expect("valid simulator config");
    let off = run(&config, Control::Open, force_factor_n_per_a);
    let on = run(
        &config,
        control(gain, force_factor_n_per_a, &config),
        force_factor_n_per_a,
    );

    // Bounded: every accelerometer under a quarter of ADC full scale (the passive rig peaks
    // near 3 %), and the controlled mode-1 power in the last fifth of the record less than
    // twice that in the first (a slowly growing oscillation would show there long before it
    // saturated anything).
    let fs = config.sample_rate_hz;
    for (label, r) in [("off", &off), ("on", &on)] {
        assert!(
            r.top_accel_m_s2.iter().all(|a| a.is_finite()) && r.peak_raw < RAW_MAX / 4,
            "{label}: response unbounded (peak raw {} of {RAW_MAX}, min {RAW_MIN})",
            r.peak_raw
        );
    }
    let fifth = on.top_accel_m_s2.len() / 5;
    let early = band_mean_square(&on.top_accel_m_s2[..fifth], fs, lo_hz, hi_hz);
    let late = band_mean_square(&on.top_accel_m_s2[4 * fifth..], fs, lo_hz, hi_hz);
    assert!(
        late < 2.0 * early,
        "controlled mode-1 response grows: {early:.3e} then {late:.3e} (m/s²)²"
    );

    let rms_off = band_mean_square(&off.top_accel_m_s2, fs, lo_hz, hi_hz).sqrt();
    let rms_on = band_mean_square(&on.top_accel_m_s2, fs, lo_hz, hi_hz).sqrt();
    let measured_db = 20.0 * (rms_off / rms_on).log10();
    eprintln!(
        "{label} DVF on floor {ACTUATOR_FLOOR}: h = {gain:.4} A/(m/s) ({CRITICAL_FRACTION} × h_crit = \
         {:.4}), Bl·h = {:.3} N·s/m; band {lo_hz:.2}–{hi_hz:.2} Hz; floor-{ACTUATOR_FLOOR} \
         acceleration RMS in band: off {rms_off:.5} m/s², on {rms_on:.5} m/s²; reduction \
         measured {measured_db:.3} dB, predicted {predicted_db:.3} dB; actuator force RMS \
         {:.4} N; {RECORD_S} s records; {:.1} s wall",
        critical.gain_a_per_m_s,
        force_factor_n_per_a * gain,
        on.actuator_rms_n,
        started.elapsed().as_secs_f64(),
    );

    assert!(
        off.actuator_rms_n == 0.0,
        "baseline must leave the coil open"
    );
    // Not the 3 dB the acceptance item hoped for: against the passive absorber, plain DVF on
    // floor 3 is capped by the suspension-resonance instability (h_crit = 1.79 A/(m/s)) and
    // buys only 0.6 dB of top-floor acceleration in band 1 at half of it (CONTROL.md §6).
    // What the rig can show is the sign, and that the prediction holds.
    assert!(
        measured_db > 0.0,
        "DVF did not lower the mode-1 acceleration: {measured_db:.3} dB"
    );
    // Tolerance 0.5 dB rather than the 1.5 dB first proposed, which is larger than the whole
    // effect and could not tell agreement from no effect. What separates the two numbers:
    // finite records (seeds 1–5 and 31 give 0.39–0.78 dB against 0.60, a spread of about
    // ±0.2 dB, although both runs share one excitation), the loop's 1.5-sample delay (ZOH
    // plus one sample of compute) and the estimator's lag, which the continuous prediction
    // leaves out, and sensor noise, ~3e-4 m/s² RMS in the band against ~0.35 m/s².
    assert!(
        (measured_db - predicted_db).abs() < MAX_DISAGREEMENT_DB,
        "measured {measured_db:.3} dB vs predicted {predicted_db:.3} dB"
    );
}
