//! Tests of the tracking core: windows in sample time, identification of the simulated rig
//! (dtop-rig-sim's plant, driven in simulation time), drift decisions and their encodings.

use super::stiffness::*;
use super::*;
use dtop_dynamics::ShearBuildingConfig;
use dtop_rig_sim::SimConfig;
use dtop_rig_sim::config::DamageConfig;
use dtop_rig_sim::rig::Rig;

const FS_HZ: f64 = 1000.0;

fn config(window_s: f64, interval_s: f64) -> TrackingConfig {
    TrackingConfig {
        enabled: true,
        window_s,
        interval_s,
        ..TrackingConfig::default()
    }
}

fn southampton_reference() -> ReferenceModes {
    let building = ShearBuilding::new(ShearBuildingConfig::southampton()).unwrap();
    ReferenceModes::from_building(&building, &[1, 2, 3])
}

/// `seconds` of the simulated rig's three floor accelerations at 1 kHz (noise on floor 1,
/// sensor noise and ADC quantisation as configured by default), no actuator.
fn simulate(seconds: usize, damage: Vec<DamageConfig>) -> Vec<Vec<f64>> {
    let config = SimConfig {
        actuator_floor: 0,
        damage,
        ..SimConfig::default()
    };
    config.validate().unwrap();
    let mut rig = Rig::new(&config).unwrap();
    let n = seconds * FS_HZ as usize;
    let mut floors: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
    for _ in 0..n {
        let m = rig.step(0.0);
        for (floor, v) in floors.iter_mut().zip(m.value_si) {
            floor.push(v);
        }
    }
    floors
}

/// Feeds `floors` from sample `first` on in blocks of `block` samples, and returns the due
/// windows.
fn feed(
    window: &mut TrackingWindow,
    first: u64,
    floors: &[Vec<f64>],
    block: usize,
) -> Vec<WindowJob> {
    let n = floors[0].len();
    let mut jobs = Vec::new();
    let mut k = 0;
    while k < n {
        let end = (k + block).min(n);
        let slices: Vec<&[f64]> = floors.iter().map(|f| &f[k..end]).collect();
        jobs.extend(window.push(first + k as u64, &slices));
        k = end;
    }
    jobs
}

/// The issue's acceptance test for tracking: ten minutes of the simulated rig with a 10 %
/// storey-2 stiffness loss at 300 s. Truth: dtop-dynamics' modes of the intact and damaged
/// buildings; the tracker sees only the noisy, quantised readings.
#[test]
fn a_ten_percent_storey_two_loss_raises_the_alarm_within_two_windows_and_not_before() {
    let damage_at_s = 300.0;
    let (window_s, interval_s) = (120.0, 60.0);
    // 600 s of samples: windows end every 60 s from 120 s on.
    let floors = simulate(
        600,
        vec![DamageConfig {
            storey: 2,
            stiffness_factor: 0.9,
            damping_factor: 1.0,
            at_s: damage_at_s,
            ramp_s: 0.0,
        }],
    );
    let reference = southampton_reference();
    let mut damaged = ShearBuildingConfig::southampton();
    damaged.storey_stiffness_n_per_m[1] *= 0.9;
    let damaged_hz = ShearBuilding::new(damaged)
        .unwrap()
        .modes()
        .frequencies_hz();
    let shift: Vec<f64> = damaged_hz
        .iter()
        .zip(&reference.frequencies_hz)
        .map(|(d, f)| (d / f - 1.0).abs() * 100.0)
        .collect();
    // A 1 % band (the default): the loss moves modes 1 and 3 by 1.9 % and 2.7 % (outside)
    // and mode 2 by 0.6 % (inside). Windows of 120 s every 60 s: 60 s windows lost mode 1 in
    // some windows (too few stable orders); over 120 s the intact windows' frequencies were
    // measured within 0.06 % of the model's, far inside the band.
    let cfg = TrackingConfig {
        band_percent: 1.0,
        ..config(window_s, interval_s)
    };
    // The damage must move some mode well outside the band, or the test could not tell.
    assert!(
        shift.iter().any(|s| *s > 1.5 * cfg.band_percent),
        "shifts {shift:?} %"
    );
    let mut window = TrackingWindow::new(&cfg, FS_HZ, 3);
    // Blocks of 100 samples, as an edge sends them: windows span block boundaries.
    let jobs = feed(&mut window, 0, &floors, 100);
    assert_eq!(jobs.len(), 9);
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    let mut stiffness =
        StiffnessTracker::new(&cfg, ShearBuildingConfig::southampton(), &[1, 2, 3]).unwrap();
    let k_model = ShearBuildingConfig::southampton().storey_stiffness_n_per_m;
    let mut first_raised_at_s = None;
    let mut first_storey_raised_at_s = None;
    for job in &jobs {
        let identification = identify_window(job, &cfg);
        let (record, events) = tracker.decide(job.start_s(), job.end_s(), &identification);
        assert!(record.identified, "{:?}", record.reason);
        let (fit, storey_events) = stiffness.decide(&record);
        // A window across the damage may lose a smeared mode, and then fits nothing.
        let whole = job.end_s() <= damage_at_s || job.start_s() >= damage_at_s;
        assert!(fit.fitted || !whole, "{:?}", fit.reason);
        for s in &fit.storeys {
            // Before the damage every storey within 2 % of the model, after it every storey
            // within 2 % of the truth (the issue's update accuracy): storey 2 at 0.9 k.
            let truth = if job.start_s() >= damage_at_s && s.storey == 2 {
                0.9 * k_model[1]
            } else {
                k_model[s.storey - 1]
            };
            if whole {
                assert!(
                    (s.stiffness_n_per_m / truth - 1.0).abs() < 0.02,
                    "window ending {} s, storey {}: {} N/m against {truth}",
                    job.end_s(),
                    s.storey,
                    s.stiffness_n_per_m
                );
            }
        }
        for e in &storey_events {
            assert_eq!((e.storey, e.state), (2, AlarmState::Raised), "{e:?}");
            first_storey_raised_at_s.get_or_insert(e.at_s);
        }
        if job.end_s() <= damage_at_s {
            // In-band noise: every mode found, inside its band, no alarm.
            assert!(events.is_empty(), "alarm before the damage: {events:?}");
            for m in &record.modes {
                assert_eq!(m.in_band, Some(true), "{m:?}");
                assert!(m.mac.unwrap() > 0.95, "{m:?}");
            }
        }
        if job.start_s() >= damage_at_s {
            // A whole window of the damaged rig: every mode where the damaged model puts it,
            // within 0.5 % (the issue's OMA accuracy; 120 s hold about 3.4 half-power
            // bandwidths of the 0.2 %-damped mode 1, so it scatters by about 0.2 %).
            for m in &record.modes {
                let f = m.frequency_hz.unwrap();
                let truth = damaged_hz[m.mode - 1];
                assert!(
                    (f / truth - 1.0).abs() < 0.005,
                    "mode {}: {f} against {truth}",
                    m.mode
                );
            }
        }
        for e in &events {
            assert_eq!(e.state, AlarmState::Raised);
            first_raised_at_s.get_or_insert(e.at_s);
        }
    }
    let raised_at_s = first_raised_at_s.expect("no drift alarm raised");
    assert!(raised_at_s > damage_at_s && raised_at_s <= damage_at_s + 2.0 * window_s);
    // The default 5 % stiffness band: storey 2 (and only it) raised within two windows.
    let storey_raised_at_s = first_storey_raised_at_s.expect("no stiffness alarm raised");
    assert!(
        storey_raised_at_s > damage_at_s && storey_raised_at_s <= damage_at_s + 2.0 * window_s,
        "raised at {storey_raised_at_s} s"
    );
    assert_eq!(stiffness.raised(), vec![2]);
    // Exactly the modes moved beyond the band are raised at the end.
    let expected: Vec<usize> = (1..)
        .zip(&shift)
        .filter(|(_, s)| **s > cfg.band_percent)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(tracker.raised(), expected, "shifts {shift:?} %");
}

#[test]
fn a_gap_in_the_samples_restarts_the_window() {
    let cfg = config(1.0, 0.5);
    let mut window = TrackingWindow::new(&cfg, FS_HZ, 2);
    let ones = vec![vec![1.0; 800], vec![2.0; 800]];
    // 800 samples: not yet a whole window.
    assert!(feed(&mut window, 0, &ones, 100).is_empty());
    // The next block starts at 900, not 800: the 800 samples before are dropped.
    let jobs = feed(&mut window, 900, &ones, 100);
    assert!(jobs.is_empty(), "identified across the gap");
    assert_eq!(window.restarts(), 1);
    let jobs = feed(&mut window, 1700, &ones, 100);
    // Due at 900 + 1000 and 900 + 1500 samples.
    let starts: Vec<u64> = jobs.iter().map(|j| j.first_sample_index).collect();
    assert_eq!(starts, vec![900, 1400]);
    for job in &jobs {
        assert_eq!(job.channels[0].len(), 1000);
        assert!((job.end_s() - job.start_s() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn a_window_is_due_every_interval_across_block_boundaries() {
    let cfg = config(0.3, 0.1);
    let mut window = TrackingWindow::new(&cfg, FS_HZ, 1);
    let ramp = vec![(0..1000).map(f64::from).collect::<Vec<f64>>()];
    let jobs = feed(&mut window, 0, &ramp, 70);
    let starts: Vec<u64> = jobs.iter().map(|j| j.first_sample_index).collect();
    assert_eq!(starts, (0..8).map(|k| 100 * k).collect::<Vec<u64>>());
    // Each window holds exactly its samples, in order.
    for job in &jobs {
        let first = job.first_sample_index as f64;
        assert_eq!(
            job.channels[0],
            (0..300).map(|k| first + f64::from(k)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_failed_identification_is_a_record_with_its_reason_and_never_an_alarm() {
    let cfg = config(10.0, 10.0);
    let job = WindowJob {
        first_sample_index: 0,
        sample_rate_hz: FS_HZ,
        channels: vec![vec![0.0; 10_000]; 3],
    };
    let identification = identify_window(&job, &cfg);
    let Identification::Failed(reason) = &identification else {
        panic!("a silent record identified modes: {identification:?}");
    };
    assert!(!reason.is_empty());
    let mut tracker = DriftTracker::new(&cfg, southampton_reference());
    let (record, events) = tracker.decide(0.0, 10.0, &identification);
    assert!(!record.identified);
    assert_eq!(record.reason.as_deref(), Some(reason.as_str()));
    assert!(events.is_empty());
    assert!(
        record
            .modes
            .iter()
            .all(|m| m.frequency_hz.is_none() && !m.alarm)
    );
}

fn found(frequencies_hz: &[f64], reference: &ReferenceModes) -> Identification {
    Identification::Modes(
        frequencies_hz
            .iter()
            .zip(&reference.shapes)
            .map(|(f, shape)| FoundMode {
                frequency_hz: *f,
                damping_ratio: 0.002,
                shape: shape.clone(),
            })
            .collect(),
    )
}

#[test]
fn an_alarm_clears_only_after_clear_windows_back_in_band() {
    let reference = southampton_reference();
    let f = reference.frequencies_hz.clone();
    let cfg = TrackingConfig {
        clear_windows: 2,
        band_percent: 2.0,
        ..config(10.0, 10.0)
    };
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    let low = [f[0] * 0.97, f[1], f[2]];
    let ok = [f[0] * 1.01, f[1], f[2]];
    let mut states = Vec::new();
    for (k, freqs) in [ok, low, low, ok, low, ok, ok, ok].iter().enumerate() {
        let end_s = 10.0 * (k + 1) as f64;
        let (record, events) = tracker.decide(end_s - 10.0, end_s, &found(freqs, &reference));
        states.push((
            record.modes[0].alarm,
            events.iter().map(|e| e.state).collect::<Vec<_>>(),
        ));
        for e in &events {
            assert_eq!(e.mode, 1);
            assert!(
                (e.band_low_hz - 0.98 * f[0]).abs() < 1e-9
                    && (e.band_high_hz - 1.02 * f[0]).abs() < 1e-9
            );
            // Raised at window 2 (ending at 20 s), and that is its `since` when it clears.
            assert_eq!(e.since_s, 20.0);
        }
    }
    use AlarmState::{Cleared, Raised};
    assert_eq!(
        states,
        vec![
            (false, vec![]),
            (true, vec![Raised]),
            (true, vec![]),
            (true, vec![]),
            // Out again: the count of windows back in band starts over.
            (true, vec![]),
            (true, vec![]),
            (false, vec![Cleared]),
            (false, vec![]),
        ]
    );
}

#[test]
fn the_first_window_reference_takes_each_modes_first_identified_frequency() {
    let reference = southampton_reference();
    let f = reference.frequencies_hz.clone();
    let cfg = TrackingConfig {
        reference: TrackingReference::FirstWindow,
        ..config(10.0, 10.0)
    };
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    // 5 % below the model, but that is where tracking began: in band.
    let start = [f[0] * 0.95, f[1] * 0.95, f[2] * 0.95];
    let (record, events) = tracker.decide(0.0, 10.0, &found(&start, &reference));
    assert!(events.is_empty());
    assert!(record.modes.iter().all(|m| m.in_band == Some(true)));
    assert!((record.modes[0].reference_hz.unwrap() - start[0]).abs() < 1e-12);
    let moved = [start[0] * 0.97, start[1], start[2]];
    let (_, events) = tracker.decide(10.0, 20.0, &found(&moved, &reference));
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].mode, events[0].state), (1, AlarmState::Raised));
}

#[test]
fn a_mode_with_the_wrong_shape_is_not_matched() {
    let reference = southampton_reference();
    let cfg = config(10.0, 10.0);
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    // Mode 2's shape at mode 1's frequency: MAC with mode 1 is 0 (orthogonal in a uniform-mass
    // building), so mode 1 is not found and mode 2 is out of its ±25 % match range.
    let wrong = Identification::Modes(vec![FoundMode {
        frequency_hz: reference.frequencies_hz[0],
        damping_ratio: 0.002,
        shape: reference.shapes[1].clone(),
    }]);
    let (record, events) = tracker.decide(0.0, 10.0, &wrong);
    assert!(events.is_empty());
    assert!(record.modes.iter().all(|m| m.frequency_hz.is_none()));
    assert_eq!(record.unmatched.len(), 1);
}

fn drift_event() -> DriftEvent {
    DriftEvent {
        state: AlarmState::Raised,
        mode: 1,
        frequency_hz: 6.9,
        reference_hz: 7.1,
        band_low_hz: 6.958,
        band_high_hz: 7.242,
        since_s: 420.0,
        at_s: 420.0,
    }
}

#[test]
fn the_drift_alarm_json_names_state_mode_frequency_band_and_since() {
    let json = drift_json("rig-1", &drift_event(), &[1, 3], &[2]);
    assert_eq!(
        json,
        serde_json::json!({
            "rig": "rig-1",
            "state": "raised",
            "mode": 1,
            "frequency_hz": 6.9,
            "reference_hz": 7.1,
            "band_hz": [6.958, 7.242],
            "since_s": 420.0,
            "at_s": 420.0,
            "raised_modes": [1, 3],
            "raised_storeys": [2],
        })
    );
}

#[test]
fn the_modes_json_carries_the_window_and_each_mode() {
    let reference = southampton_reference();
    let cfg = config(10.0, 10.0);
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    let (record, _) = tracker.decide(0.0, 10.0, &found(&reference.frequencies_hz, &reference));
    let json = modes_json("rig-1", &record);
    assert_eq!(json["rig"], "rig-1");
    assert_eq!(json["start_s"], 0.0);
    assert_eq!(json["end_s"], 10.0);
    assert_eq!(json["identified"], true);
    assert!(json.get("reason").is_none());
    let modes = json["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 3);
    assert_eq!(modes[0]["mode"], 1);
    assert_eq!(modes[0]["in_band"], true);
    assert_eq!(modes[0]["alarm"], false);
    assert!((modes[0]["mac"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    let failed = tracker
        .decide(
            10.0,
            20.0,
            &Identification::Failed("no stable modes".into()),
        )
        .0;
    let json = modes_json("rig-1", &failed);
    assert_eq!(json["identified"], false);
    assert_eq!(json["reason"], "no stable modes");
    assert!(json["modes"][0]["frequency_hz"].is_null());
}

#[test]
fn history_and_drift_lines_follow_the_storage_schema() {
    let reference = ReferenceModes {
        frequencies_hz: vec![7.0],
        shapes: vec![vec![1.0]],
    };
    let cfg = config(10.0, 10.0);
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    let (record, _) = tracker.decide(0.0, 10.0, &found(&[7.0], &reference));
    let mut out = String::new();
    encode_history(&mut out, "rig 1", &record, 5);
    assert_eq!(
        out,
        "dtop_twin_modes,rig=rig\\ 1,mode=1 start_s=0,end_s=10,identified=true,frequency_hz=7,\
         damping_ratio=0.002,mac=1,reference_hz=7,in_band=true,alarm=false 5\n"
    );
    let failed = tracker
        .decide(
            10.0,
            20.0,
            &Identification::Failed("too \"quiet\"\nraise it".into()),
        )
        .0;
    out.clear();
    encode_history(&mut out, "r", &failed, 6);
    assert_eq!(
        out,
        "dtop_twin_modes,rig=r,mode=none start_s=10,end_s=20,identified=false,\
         reason=\"too \\\"quiet\\\"; raise it\" 6\n"
    );
    out.clear();
    encode_drift(&mut out, "r", &drift_event(), 7);
    assert_eq!(
        out,
        "dtop_twin_drift,rig=r,mode=1 raised=true,frequency_hz=6.9,reference_hz=7.1,\
         band_low_hz=6.958,band_high_hz=7.242,since_s=420 7\n"
    );
}

#[test]
fn adopting_the_damaged_model_clears_the_alarm_and_its_modes_become_the_reference() {
    let reference = southampton_reference();
    let f = reference.frequencies_hz.clone();
    let cfg = config(10.0, 10.0);
    let mut tracker = DriftTracker::new(&cfg, reference.clone());
    let damaged = [f[0] * 0.97, f[1], f[2] * 0.98];
    let (_, events) = tracker.decide(0.0, 10.0, &found(&damaged, &reference));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(tracker.raised(), vec![1, 3]);
    // The adopted model is the damaged structure: its modes are the new reference.
    let adopted = ReferenceModes {
        frequencies_hz: damaged.to_vec(),
        ..reference.clone()
    };
    let cleared = tracker.rebase(&cfg, adopted.clone(), 12.0);
    assert_eq!(
        cleared
            .iter()
            .map(|e| (e.mode, e.state))
            .collect::<Vec<_>>(),
        vec![(1, AlarmState::Cleared), (3, AlarmState::Cleared)]
    );
    assert!(cleared.iter().all(|e| e.since_s == 10.0 && e.at_s == 12.0));
    assert!(tracker.raised().is_empty());
    // The damaged structure is now in band; the undamaged one would raise again.
    let (record, events) = tracker.decide(10.0, 20.0, &found(&damaged, &adopted));
    assert!(events.is_empty(), "{events:?}");
    assert!(
        record.modes.iter().all(|m| m.in_band == Some(true)),
        "{record:?}"
    );
    let (_, events) = tracker.decide(20.0, 30.0, &found(&f, &adopted));
    assert_eq!(events.len(), 2, "{events:?}");
}

/// The exact modes of `building` as an identification of floors 1..=3.
fn modes_of(building: ShearBuildingConfig) -> Identification {
    let reference =
        ReferenceModes::from_building(&ShearBuilding::new(building).unwrap(), &[1, 2, 3]);
    found(&reference.frequencies_hz, &reference)
}

#[test]
fn the_exact_modes_of_a_damaged_model_give_its_storeys_and_raise_only_the_damaged_one() {
    let intact = ShearBuildingConfig::southampton();
    let mut damaged = intact.clone();
    damaged.storey_stiffness_n_per_m[1] *= 0.9;
    let cfg = config(10.0, 10.0);
    let mut drift = DriftTracker::new(&cfg, southampton_reference());
    let mut stiffness = StiffnessTracker::new(&cfg, intact.clone(), &[1, 2, 3]).unwrap();
    let (record, _) = drift.decide(0.0, 10.0, &modes_of(intact.clone()));
    let (fit, events) = stiffness.decide(&record);
    assert!(events.is_empty(), "{events:?}");
    for (s, k) in fit.storeys.iter().zip(&intact.storey_stiffness_n_per_m) {
        assert!((s.stiffness_n_per_m / k - 1.0).abs() < 1e-6, "{s:?}");
        assert!(s.in_band && !s.alarm);
    }
    let (record, _) = drift.decide(10.0, 20.0, &modes_of(damaged.clone()));
    let (fit, events) = stiffness.decide(&record);
    // Independent truth: the damaged config's own storeys, recovered from its modes alone.
    for (s, k) in fit.storeys.iter().zip(&damaged.storey_stiffness_n_per_m) {
        assert!((s.stiffness_n_per_m / k - 1.0).abs() < 1e-6, "{s:?}");
    }
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!((e.storey, e.state, e.at_s), (2, AlarmState::Raised, 20.0));
    let k2 = intact.storey_stiffness_n_per_m[1];
    assert!((e.band_low_n_per_m - 0.95 * k2).abs() < 1e-6 * k2);
    assert_eq!(stiffness.raised(), vec![2]);
    // Adopting the damaged model clears it, and the damaged structure is then in band.
    let cleared = stiffness.rebase(&cfg, damaged.clone(), &[1, 2, 3], 25.0);
    assert_eq!(cleared.len(), 1);
    assert_eq!(
        (cleared[0].storey, cleared[0].state),
        (2, AlarmState::Cleared)
    );
    assert_eq!((cleared[0].since_s, cleared[0].at_s), (20.0, 25.0));
    let (record, _) = drift.decide(20.0, 30.0, &modes_of(damaged));
    let (fit, events) = stiffness.decide(&record);
    assert!(
        events.is_empty() && fit.storeys.iter().all(|s| s.in_band),
        "{fit:?}"
    );
}

#[test]
fn too_few_modes_for_the_storeys_fit_nothing_and_say_why() {
    let reference = southampton_reference();
    let cfg = config(10.0, 10.0);
    let mut drift = DriftTracker::new(&cfg, reference.clone());
    let mut stiffness =
        StiffnessTracker::new(&cfg, ShearBuildingConfig::southampton(), &[1, 2, 3]).unwrap();
    // With shapes two modes determine three storeys; one does not.
    let one = found(&reference.frequencies_hz[..1], &reference);
    let (record, _) = drift.decide(0.0, 10.0, &one);
    let (fit, events) = stiffness.decide(&record);
    assert!(!fit.fitted && fit.storeys.is_empty() && events.is_empty());
    let reason = fit.reason.unwrap();
    assert!(
        reason.contains("1 of the model's modes")
            && reason.contains("needs 2")
            && reason.contains("window_s"),
        "{reason}"
    );
    // Modes 2 and 3 alone (as on `dtop up`'s rig when the pair of mode 1 is lost).
    let two = Identification::Modes(
        (1..3)
            .map(|m| FoundMode {
                frequency_hz: reference.frequencies_hz[m],
                damping_ratio: 0.002,
                shape: reference.shapes[m].clone(),
            })
            .collect(),
    );
    let (record, _) = drift.decide(10.0, 20.0, &two);
    let (fit, _) = stiffness.decide(&record);
    assert!(fit.fitted, "{:?}", fit.reason);
    for (s, k) in fit
        .storeys
        .iter()
        .zip(&ShearBuildingConfig::southampton().storey_stiffness_n_per_m)
    {
        assert!((s.stiffness_n_per_m / k - 1.0).abs() < 1e-6, "{s:?}");
    }
    // A band of 0 switches the fit off.
    let off = TrackingConfig {
        stiffness_band_percent: 0.0,
        ..cfg
    };
    assert!(StiffnessTracker::new(&off, ShearBuildingConfig::southampton(), &[1, 2, 3]).is_none());
}

#[test]
fn stiffness_lines_and_alarm_json_follow_the_storage_schema() {
    let record = StiffnessRecord {
        fitted: true,
        reason: None,
        storeys: vec![TrackedStorey {
            storey: 2,
            model_stiffness_n_per_m: 1000.0,
            reference_n_per_m: Some(1000.0),
            stiffness_n_per_m: 900.0,
            stiffness_std_n_per_m: 2.5,
            in_band: false,
            alarm: true,
        }],
    };
    let mut out = String::new();
    encode_stiffness(&mut out, "r", 0.0, 10.0, &record, 5);
    assert_eq!(
        out,
        "dtop_twin_stiffness,rig=r,storey=2 start_s=0,end_s=10,stiffness_n_per_m=900,\
         stiffness_std_n_per_m=2.5,reference_n_per_m=1000,model_stiffness_n_per_m=1000,\
         in_band=false,alarm=true 5\n"
    );
    let event = StiffnessEvent {
        state: AlarmState::Raised,
        storey: 2,
        stiffness_n_per_m: 900.0,
        reference_n_per_m: 1000.0,
        band_low_n_per_m: 950.0,
        band_high_n_per_m: 1050.0,
        since_s: 10.0,
        at_s: 10.0,
    };
    out.clear();
    encode_stiffness_drift(&mut out, "r", &event, 6);
    assert_eq!(
        out,
        "dtop_twin_drift,rig=r,storey=2 raised=true,stiffness_n_per_m=900,\
         reference_n_per_m=1000,band_low_n_per_m=950,band_high_n_per_m=1050,since_s=10 6\n"
    );
    let json = stiffness_drift_json("r", &event, &[1], &[2]);
    assert_eq!(json["storey"], 2);
    assert_eq!(json["band_n_per_m"], serde_json::json!([950.0, 1050.0]));
    assert_eq!(json["raised_modes"], serde_json::json!([1]));
    assert_eq!(json["raised_storeys"], serde_json::json!([2]));
}
