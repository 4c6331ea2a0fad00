//! Owns the second drift measure of issue 14, item 4: the storey stiffnesses updated to each
//! window's identified modes, and their drift alarms with hysteresis. Pure: the rig's
//! reference building, the fit (dtop-calibrate's sensitivity-based update, the same one the
//! `update` study runs), the bands and the raised alarms; no I/O, no clocks, no logging.
//!
//! Why a second measure beside the frequencies: a frequency says *that* the structure
//! changed, a storey stiffness says *where* and *by how much*, in the model's own terms, and is
//! what an operator approves as a new model version. A 10 % loss of storey 2 moves the
//! Southampton modes by 1.9 %, 0.6 % and 2.7 %, but the fitted storey 2 by the whole 10 %.

use std::fmt::Write as _;

use dtop_calibrate::{TargetMode, UpdateParams, update_storey_stiffness};
use dtop_dynamics::ShearBuildingConfig;
use serde::Serialize;

use super::{AlarmState, BandAlarm, HistoryRecord};
use crate::config::{TrackingConfig, TrackingReference};
use crate::lineproto::{escape_key, write_float};

/// Measurement holding one point per storey of each window whose stiffnesses were fitted.
pub const STIFFNESS_MEASUREMENT: &str = "dtop_twin_stiffness";

/// The standard deviation given to each identified frequency in the fit, relative: the
/// scatter of a 120–600 s window's SSI frequencies on the simulated rig (below 0.1 %). It
/// weights the modes alike and scales the reported stiffness std; the band, not this, decides
/// the alarm.
pub const FREQUENCY_RELATIVE_STD: f64 = 1e-3;

/// One storey in one history record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackedStorey {
    /// Storey number, 1-based (storey k joins floor k to the one below).
    pub storey: usize,
    /// The model's stiffness of this storey, N/m.
    pub model_stiffness_n_per_m: f64,
    /// The centre of its band, N/m (absent until a `first_window` reference is known).
    pub reference_n_per_m: Option<f64>,
    /// Fitted stiffness, N/m.
    pub stiffness_n_per_m: f64,
    /// Its standard deviation from the fit, N/m.
    pub stiffness_std_n_per_m: f64,
    /// Whether the fitted stiffness lies in the band.
    pub in_band: bool,
    /// Whether this storey's drift alarm is raised after this record.
    pub alarm: bool,
}

/// The stiffness part of one history record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StiffnessRecord {
    /// Whether the storeys could be fitted to this window's modes.
    pub fitted: bool,
    /// Why not, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per storey, what was fitted (empty when nothing was).
    pub storeys: Vec<TrackedStorey>,
}

/// A stiffness drift alarm raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StiffnessEvent {
    /// Raised or cleared.
    pub state: AlarmState,
    /// Storey number, 1-based.
    pub storey: usize,
    /// The fitted stiffness that decided it, N/m.
    pub stiffness_n_per_m: f64,
    /// The band's centre, N/m.
    pub reference_n_per_m: f64,
    /// The band's lower edge, N/m.
    pub band_low_n_per_m: f64,
    /// The band's upper edge, N/m.
    pub band_high_n_per_m: f64,
    /// Sample time (end of the window) the alarm was raised at, s.
    pub since_s: f64,
    /// Sample time of the decision (end of this window), s.
    pub at_s: f64,
}

#[derive(Debug, Clone, Default)]
struct StoreyAlarm {
    reference_n_per_m: Option<f64>,
    band: BandAlarm,
}

/// One rig's stiffness decisions: the reference building, the bands and the raised alarms.
#[derive(Debug, Clone)]
pub struct StiffnessTracker {
    building: ShearBuildingConfig,
    /// Whether the tracked channels are floors 1..=N in order, so identified shapes can join
    /// the fit.
    shapes_cover_floors: bool,
    band_percent: f64,
    clear_windows: u32,
    storeys: Vec<StoreyAlarm>,
}

impl StiffnessTracker {
    /// Decisions on `building`'s storeys with the stiffness band, reference and hysteresis of
    /// `config`; `None` when `config.stiffness_band_percent` is 0 (no stiffness tracking).
    /// `floors` are the tracked channels' floors (1-based, channel order).
    pub fn new(
        config: &TrackingConfig,
        building: ShearBuildingConfig,
        floors: &[usize],
    ) -> Option<Self> {
        if config.stiffness_band_percent <= 0.0 {
            return None;
        }
        let storeys = building
            .storey_stiffness_n_per_m
            .iter()
            .map(|&k| StoreyAlarm {
                reference_n_per_m: (config.reference == TrackingReference::Model).then_some(k),
                ..StoreyAlarm::default()
            })
            .collect();
        let shapes_cover_floors = floors.iter().copied().eq(1..=building.floors());
        Some(Self {
            building,
            shapes_cover_floors,
            band_percent: config.stiffness_band_percent,
            clear_windows: config.clear_windows,
            storeys,
        })
    }

    /// The building whose storeys are fitted.
    pub fn building(&self) -> &ShearBuildingConfig {
        &self.building
    }

    /// Storeys whose stiffness alarm is raised now, 1-based.
    pub fn raised(&self) -> Vec<usize> {
        (1..)
            .zip(&self.storeys)
            .filter(|(_, s)| s.band.raised_since_s().is_some())
            .map(|(n, _)| n)
            .collect()
    }

    /// Fits the storeys to the modes `record` matched, moves the alarms, and returns the
    /// stiffness record and the alarms raised or cleared. A window whose modes cannot
    /// determine the storeys changes no alarm and says why.
    pub fn decide(&mut self, record: &HistoryRecord) -> (StiffnessRecord, Vec<StiffnessEvent>) {
        let fit = if record.identified {
            self.fit(record)
        } else {
            Err("nothing was identified in this window".to_owned())
        };
        let (fitted, std) = match fit {
            Ok(fit) => fit,
            Err(reason) => {
                let record = StiffnessRecord {
                    fitted: false,
                    reason: Some(reason),
                    storeys: Vec::new(),
                };
                return (record, Vec::new());
            }
        };
        let band = self.band_percent / 100.0;
        let end_s = record.end_s;
        let mut events = Vec::new();
        let mut storeys = Vec::with_capacity(self.storeys.len());
        for (i, alarm) in self.storeys.iter_mut().enumerate() {
            let k = fitted.get(i).copied().unwrap_or(f64::NAN);
            let reference = *alarm.reference_n_per_m.get_or_insert(k);
            let inside = (k - reference).abs() <= band * reference;
            let event = |state, since_s| StiffnessEvent {
                state,
                storey: i + 1,
                stiffness_n_per_m: k,
                reference_n_per_m: reference,
                band_low_n_per_m: reference * (1.0 - band),
                band_high_n_per_m: reference * (1.0 + band),
                since_s,
                at_s: end_s,
            };
            if let Some((state, since_s)) = alarm.band.decide(inside, end_s, self.clear_windows) {
                events.push(event(state, since_s));
            }
            storeys.push(TrackedStorey {
                storey: i + 1,
                model_stiffness_n_per_m: self
                    .building
                    .storey_stiffness_n_per_m
                    .get(i)
                    .copied()
                    .unwrap_or(f64::NAN),
                reference_n_per_m: alarm.reference_n_per_m,
                stiffness_n_per_m: k,
                stiffness_std_n_per_m: std.get(i).copied().unwrap_or(f64::NAN),
                in_band: inside,
                alarm: alarm.band.raised_since_s().is_some(),
            });
        }
        let record = StiffnessRecord {
            fitted: true,
            reason: None,
            storeys,
        };
        (record, events)
    }

    /// The rig switched to `building` (an adopted version): every raised alarm clears as of
    /// `at_s`, and the bands start again from its storeys (or, with a `first_window`
    /// reference, from the next fit).
    pub fn rebase(
        &mut self,
        config: &TrackingConfig,
        building: ShearBuildingConfig,
        floors: &[usize],
        at_s: f64,
    ) -> Vec<StiffnessEvent> {
        let band = self.band_percent / 100.0;
        let events = (1..)
            .zip(&self.storeys)
            .filter_map(|(storey, alarm)| {
                let since_s = alarm.band.raised_since_s()?;
                let reference = alarm.reference_n_per_m.unwrap_or_default();
                let k = building
                    .storey_stiffness_n_per_m
                    .get(storey - 1)
                    .copied()
                    .unwrap_or(reference);
                Some(StiffnessEvent {
                    state: AlarmState::Cleared,
                    storey,
                    stiffness_n_per_m: k,
                    reference_n_per_m: reference,
                    band_low_n_per_m: reference * (1.0 - band),
                    band_high_n_per_m: reference * (1.0 + band),
                    since_s,
                    at_s,
                })
            })
            .collect();
        if let Some(fresh) = Self::new(config, building, floors) {
            *self = fresh;
        }
        events
    }

    /// The fitted stiffness and its std per storey, N/m, or why the window's modes cannot
    /// give them.
    fn fit(&self, record: &HistoryRecord) -> Result<(Vec<f64>, Vec<f64>), String> {
        let targets: Vec<TargetMode> = record
            .modes
            .iter()
            .filter_map(|m| {
                let frequency_hz = m.frequency_hz.filter(|f| f.is_finite() && *f > 0.0)?;
                Some(TargetMode {
                    frequency_hz,
                    frequency_std_hz: frequency_hz * FREQUENCY_RELATIVE_STD,
                    damping_ratio: None,
                    shape: self.shapes_cover_floors.then(|| m.shape.clone()).flatten(),
                    model_mode: Some(m.mode),
                })
            })
            .collect();
        let storeys = self.building.storey_stiffness_n_per_m.len();
        // Shapes join the fit only when every target has one (dtop-calibrate's rule). With
        // shapes, two modes give 2·(1 + N) data for N storeys (on `dtop up`'s rig the pair of
        // mode 1 and the proof mass is often lost in a window while modes 3 and 4 are not);
        // without, each storey needs a frequency of its own.
        let with_shapes = targets.iter().all(|t| t.shape.is_some());
        let needed = if with_shapes { 2.min(storeys) } else { storeys };
        if targets.len() < needed {
            return Err(format!(
                "{} of the model's modes identified; fitting {storeys} storeys needs {needed}: \
                 lengthen tracking.window_s or excite the rig more broadly",
                targets.len()
            ));
        }
        let targets = if with_shapes {
            targets
        } else {
            targets
                .into_iter()
                .map(|t| TargetMode { shape: None, ..t })
                .collect()
        };
        let result = update_storey_stiffness(&self.building, &UpdateParams::new(targets))
            .map_err(|e| format!("the storey stiffnesses could not be fitted: {e}"))?;
        if !result.storeys_at_bounds.is_empty() {
            return Err(format!(
                "the fit ran into its bounds on storeys {:?}: the modes and the chain model \
                 disagree there; check the model the rig runs on",
                result.storeys_at_bounds
            ));
        }
        let mut std = vec![0.0; storeys];
        for (&storey, &s) in result.storeys.iter().zip(&result.stiffness_std_n_per_m) {
            if let Some(slot) = storey.checked_sub(1).and_then(|i| std.get_mut(i)) {
                *slot = s;
            }
        }
        Ok((result.fitted_stiffness_n_per_m, std))
    }
}

/// Appends the `dtop_twin_stiffness` lines of one fitted window at Unix time `t_ns` (the
/// window's end): one point per storey, tagged `storey=<n>`. Nothing when nothing was fitted
/// (the window's `dtop_twin_modes` point carries the identification; the stiffness reason is
/// in the published record). Non-finite values are left out.
pub fn encode_stiffness(
    out: &mut String,
    rig: &str,
    start_s: f64,
    end_s: f64,
    record: &StiffnessRecord,
    t_ns: i64,
) {
    for s in &record.storeys {
        out.push_str(STIFFNESS_MEASUREMENT);
        out.push_str(",rig=");
        escape_key(out, rig);
        let _ = write!(out, ",storey={} start_s=", s.storey);
        write_float(out, start_s);
        out.push_str(",end_s=");
        write_float(out, end_s);
        for (name, value) in [
            ("stiffness_n_per_m", Some(s.stiffness_n_per_m)),
            ("stiffness_std_n_per_m", Some(s.stiffness_std_n_per_m)),
            ("reference_n_per_m", s.reference_n_per_m),
            ("model_stiffness_n_per_m", Some(s.model_stiffness_n_per_m)),
        ] {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                let _ = write!(out, ",{name}=");
                write_float(out, v);
            }
        }
        let _ = writeln!(out, ",in_band={},alarm={} {t_ns}", s.in_band, s.alarm);
    }
}

/// Appends the `dtop_twin_drift` line of one stiffness alarm raised or cleared (tagged
/// `storey=<n>`, where a frequency alarm is tagged `mode=<n>`), at Unix time `t_ns`.
pub fn encode_stiffness_drift(out: &mut String, rig: &str, event: &StiffnessEvent, t_ns: i64) {
    super::encode_drift_line(
        out,
        rig,
        ("storey", event.storey),
        event.state,
        &[
            ("stiffness_n_per_m", event.stiffness_n_per_m),
            ("reference_n_per_m", event.reference_n_per_m),
            ("band_low_n_per_m", event.band_low_n_per_m),
            ("band_high_n_per_m", event.band_high_n_per_m),
            ("since_s", event.since_s),
        ],
        t_ns,
    );
}

/// The JSON published, retained, on `dtop/v1/twin/<rig>/alarm/drift` for one stiffness alarm
/// raised or cleared, with every mode and storey whose alarm is raised after it.
pub fn stiffness_drift_json(
    rig: &str,
    event: &StiffnessEvent,
    raised_modes: &[usize],
    raised_storeys: &[usize],
) -> serde_json::Value {
    serde_json::json!({
        "rig": rig,
        "state": event.state,
        "storey": event.storey,
        "stiffness_n_per_m": event.stiffness_n_per_m,
        "reference_n_per_m": event.reference_n_per_m,
        "band_n_per_m": [event.band_low_n_per_m, event.band_high_n_per_m],
        "since_s": event.since_s,
        "at_s": event.at_s,
        "raised_modes": raised_modes,
        "raised_storeys": raised_storeys,
    })
}
