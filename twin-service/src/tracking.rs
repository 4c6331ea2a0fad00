//! Owns the tracking of one rig's modes over its life (issue 14, item 4): the sliding window of
//! floor accelerations in sample time, when a window falls due, its identification with
//! dtop-oma, the matching of identified modes to the model's, and the drift alarms with their
//! hysteresis (on each mode's frequency here; on each storey's fitted stiffness in
//! [`stiffness`]). Pure: no I/O, no clocks (time is sample index / sample rate), no logging. The
//! shell (`crate::service`) runs [`identify_window`] off the ingest path and publishes,
//! stores and counts what [`DriftTracker::decide`] returns.

use std::collections::VecDeque;
use std::fmt::Write as _;

use dtop_dynamics::{ShearBuilding, ShearBuildingConfig};
use dtop_oma::{ModePicking, OmaParams, SsiParams};
use serde::Serialize;

use crate::config::{TrackingConfig, TrackingReference};
use crate::lineproto::{escape_key, write_float};

pub mod stiffness;

use stiffness::{
    StiffnessRecord, StiffnessTracker, encode_stiffness, encode_stiffness_drift,
    stiffness_drift_json,
};

/// Measurement holding one point per identified mode of each identification, or one point
/// per failed identification.
pub const MODES_MEASUREMENT: &str = "dtop_twin_modes";
/// Measurement holding one point per drift alarm raised or cleared.
pub const DRIFT_MEASUREMENT: &str = "dtop_twin_drift";

/// An identified mode matches a model mode only within this relative frequency distance: far
/// beyond any band an operator would set, so a drifted mode is still recognised as itself, yet
/// narrow enough that the three Southampton modes (≈ 7, 20, 29 Hz) never swap.
pub const MATCH_RANGE_REL: f64 = 0.25;

/// The modes a rig's identified modes are matched to: the structural model's, restricted to
/// the measured floors.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceModes {
    /// Natural frequency of each model mode, Hz, ascending.
    pub frequencies_hz: Vec<f64>,
    /// Each model mode's shape at the measured floors, one value per tracked channel.
    pub shapes: Vec<Vec<f64>>,
}

impl ReferenceModes {
    /// The modes of `building`, each shape read at `floors` (1-based floor numbers, one per
    /// tracked channel, in channel order). Floors the model does not have read as 0.
    pub fn from_building(building: &ShearBuilding, floors: &[usize]) -> Self {
        let modes = building.modes();
        let frequencies_hz = modes.frequencies_hz();
        let shapes = (0..frequencies_hz.len())
            .map(|m| {
                floors
                    .iter()
                    .map(|&floor| {
                        floor
                            .checked_sub(1)
                            .and_then(|row| modes.shapes.get((row, m)))
                            .copied()
                            .unwrap_or(0.0)
                    })
                    .collect()
            })
            .collect();
        Self {
            frequencies_hz,
            shapes,
        }
    }
}

/// A window of floor accelerations due for identification.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowJob {
    /// Index of the window's first sample in the rig's sample stream.
    pub first_sample_index: u64,
    /// Sample rate, Hz.
    pub sample_rate_hz: f64,
    /// One record per tracked channel, all of the same length.
    pub channels: Vec<Vec<f64>>,
}

impl WindowJob {
    /// Sample time of the first sample, s.
    pub fn start_s(&self) -> f64 {
        self.first_sample_index as f64 / self.sample_rate_hz
    }

    /// Sample time just after the last sample, s.
    pub fn end_s(&self) -> f64 {
        (self.first_sample_index + self.channels.first().map_or(0, Vec::len) as u64) as f64
            / self.sample_rate_hz
    }
}

/// The sliding window of one rig's floor accelerations and its schedule.
#[derive(Debug, Clone)]
pub struct TrackingWindow {
    window_samples: usize,
    interval_samples: u64,
    sample_rate_hz: f64,
    channels: Vec<VecDeque<f64>>,
    /// The sample index the next pushed sample must have to continue the window.
    next_index: Option<u64>,
    /// A window is due once the sample just before this index has been pushed.
    due_at: u64,
    /// Gaps that restarted the window, for the shell's counters.
    restarts: u64,
}

impl TrackingWindow {
    /// A window of `config.window_s` over `channel_count` channels at `sample_rate_hz`, due
    /// every `config.interval_s` (both rounded to whole samples, at least one).
    pub fn new(config: &TrackingConfig, sample_rate_hz: f64, channel_count: usize) -> Self {
        let samples = |s: f64| ((s * sample_rate_hz).round() as u64).max(1);
        let window_samples = usize::try_from(samples(config.window_s)).unwrap_or(usize::MAX);
        Self {
            window_samples,
            interval_samples: samples(config.interval_s),
            sample_rate_hz,
            channels: vec![VecDeque::new(); channel_count],
            next_index: None,
            due_at: 0,
            restarts: 0,
        }
    }

    /// Gaps (or restarts of the sample count) that emptied the window so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Adds a block whose first sample has index `first_sample_index`, one slice per channel
    /// (equal lengths), and returns the windows that fell due inside it. A block that does not
    /// continue the previous one empties the window: nothing is identified across a gap.
    pub fn push(&mut self, first_sample_index: u64, block: &[&[f64]]) -> Vec<WindowJob> {
        let mut jobs = Vec::new();
        let len = block.iter().map(|c| c.len()).min().unwrap_or(0);
        if block.len() != self.channels.len() || len == 0 {
            return jobs;
        }
        if self.next_index != Some(first_sample_index) {
            if self.next_index.is_some() {
                self.restarts += 1;
            }
            self.channels.iter_mut().for_each(VecDeque::clear);
            self.due_at = first_sample_index + self.window_samples as u64;
        }
        for k in 0..len {
            for (window, channel) in self.channels.iter_mut().zip(block) {
                if window.len() == self.window_samples {
                    window.pop_front();
                }
                window.push_back(channel.get(k).copied().unwrap_or(0.0));
            }
            let index = first_sample_index + k as u64 + 1;
            if index == self.due_at {
                self.due_at += self.interval_samples;
                jobs.push(WindowJob {
                    first_sample_index: index - self.window_samples as u64,
                    sample_rate_hz: self.sample_rate_hz,
                    channels: self
                        .channels
                        .iter()
                        .map(|w| w.iter().copied().collect())
                        .collect(),
                });
            }
        }
        self.next_index = Some(first_sample_index + len as u64);
        jobs
    }
}

/// One mode an identification found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundMode {
    /// Natural frequency, Hz.
    pub frequency_hz: f64,
    /// Damping ratio, fraction of critical.
    pub damping_ratio: f64,
    /// Real shape, one value per tracked channel, unit peak.
    pub shape: Vec<f64>,
}

/// What the identification of one window gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Identification {
    /// The stable modes, ascending in frequency (at least one).
    Modes(Vec<FoundMode>),
    /// Nothing could be identified, and why (with what to do about it).
    Failed(String),
}

/// The dtop-oma parameters of `config`.
pub fn oma_params(config: &TrackingConfig) -> OmaParams {
    OmaParams {
        ssi: SsiParams {
            block_rows: config.block_rows,
            min_order: config.min_order,
            max_order: config.max_order,
            ..SsiParams::default()
        },
        picking: ModePicking::default(),
        segments: None,
        fdd: None,
    }
}

/// Identifies the modes of one window (the expensive step: run it off the ingest path).
pub fn identify_window(job: &WindowJob, config: &TrackingConfig) -> Identification {
    match dtop_oma::identify(&job.channels, job.sample_rate_hz, &oma_params(config)) {
        Err(e) => Identification::Failed(format!("identification failed: {e}")),
        Ok(result) if result.modes.is_empty() => Identification::Failed(
            "no stable modes: too little excitation or too short a window; excite the rig \
             (shaker noise or ambient) or raise tracking.window_s"
                .to_owned(),
        ),
        Ok(result) => Identification::Modes(
            result
                .modes
                .into_iter()
                .map(|m| FoundMode {
                    frequency_hz: m.frequency_hz,
                    damping_ratio: m.damping_ratio,
                    shape: m.shape,
                })
                .collect(),
        ),
    }
}

/// Real modal assurance criterion of two shapes, 0 to 1 (0 when either is zero).
pub fn mac(a: &[f64], b: &[f64]) -> f64 {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let den = dot(a, a) * dot(b, b);
    if den > 0.0 {
        dot(a, b).powi(2) / den
    } else {
        0.0
    }
}

/// One model mode in one history record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackedMode {
    /// Model mode number, 1-based.
    pub mode: usize,
    /// The model's frequency of this mode, Hz.
    pub model_frequency_hz: f64,
    /// The centre of its band, Hz (absent until a `first_window` reference is known).
    pub reference_hz: Option<f64>,
    /// Identified frequency, Hz (absent: not found in this window).
    pub frequency_hz: Option<f64>,
    /// Identified damping ratio.
    pub damping_ratio: Option<f64>,
    /// MAC of the identified shape with the model's.
    pub mac: Option<f64>,
    /// Whether the identified frequency lies in the band (absent when not found).
    pub in_band: Option<bool>,
    /// Whether this mode's drift alarm is raised after this record.
    pub alarm: bool,
    /// The identified shape, one value per tracked channel, unit peak (absent when not
    /// found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<f64>>,
}

/// One record of the parameter history: one identification of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRecord {
    /// Sample time of the window's first sample, s.
    pub start_s: f64,
    /// Sample time just after its last sample, s.
    pub end_s: f64,
    /// Whether anything was identified.
    pub identified: bool,
    /// Why not, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per model mode, what was found.
    pub modes: Vec<TrackedMode>,
    /// Identified modes no model mode matched.
    pub unmatched: Vec<FoundMode>,
    /// The storey stiffnesses fitted to the matched modes (absent when stiffness tracking is
    /// off: `tracking.stiffness_band_percent = 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stiffness: Option<StiffnessRecord>,
}

/// Whether a drift alarm went up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    /// The mode left its band.
    Raised,
    /// The mode has been back in band for `clear_windows` identifications.
    Cleared,
}

/// A drift alarm raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftEvent {
    /// Raised or cleared.
    pub state: AlarmState,
    /// Model mode number, 1-based.
    pub mode: usize,
    /// The identified frequency that decided it, Hz.
    pub frequency_hz: f64,
    /// The band's centre, Hz.
    pub reference_hz: f64,
    /// The band's lower edge, Hz.
    pub band_low_hz: f64,
    /// The band's upper edge, Hz.
    pub band_high_hz: f64,
    /// Sample time (end of the window) the alarm was raised at, s.
    pub since_s: f64,
    /// Sample time of the decision (end of this window), s.
    pub at_s: f64,
}

/// One band alarm and its hysteresis: raised when its value leaves the band, cleared after
/// `clear_windows` consecutive decisions back in band. The frequency alarms here and the
/// stiffness alarms in [`stiffness`] both run on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BandAlarm {
    raised_since_s: Option<f64>,
    in_band_streak: u32,
}

impl BandAlarm {
    /// Sample time it was raised at, while it is raised.
    pub(crate) fn raised_since_s(&self) -> Option<f64> {
        self.raised_since_s
    }

    /// Moves the alarm on one decision at sample time `at_s`: the change, if any, with the
    /// time the alarm was raised at.
    pub(crate) fn decide(
        &mut self,
        inside: bool,
        at_s: f64,
        clear_windows: u32,
    ) -> Option<(AlarmState, f64)> {
        match (inside, self.raised_since_s) {
            (false, None) => {
                *self = Self {
                    raised_since_s: Some(at_s),
                    in_band_streak: 0,
                };
                Some((AlarmState::Raised, at_s))
            }
            (false, Some(_)) => {
                self.in_band_streak = 0;
                None
            }
            (true, Some(since_s)) => {
                self.in_band_streak += 1;
                (self.in_band_streak >= clear_windows).then(|| {
                    *self = Self::default();
                    (AlarmState::Cleared, since_s)
                })
            }
            (true, None) => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ModeAlarm {
    reference_hz: Option<f64>,
    band: BandAlarm,
}

/// One rig's drift decisions: references, raised alarms and their hysteresis.
#[derive(Debug, Clone)]
pub struct DriftTracker {
    model: ReferenceModes,
    band_percent: f64,
    clear_windows: u32,
    min_mac: f64,
    modes: Vec<ModeAlarm>,
}

impl DriftTracker {
    /// Decisions against `model` with the band, reference and hysteresis of `config`.
    pub fn new(config: &TrackingConfig, model: ReferenceModes) -> Self {
        let modes = model
            .frequencies_hz
            .iter()
            .map(|&f| ModeAlarm {
                reference_hz: (config.reference == TrackingReference::Model).then_some(f),
                ..ModeAlarm::default()
            })
            .collect();
        Self {
            model,
            band_percent: config.band_percent,
            clear_windows: config.clear_windows,
            min_mac: config.min_mac,
            modes,
        }
    }

    /// Takes `model` as the new reference (the rig switched to an adopted model version, which
    /// is what its structure is now): every raised alarm clears, as of `at_s` (sample time),
    /// and the bands start again from the new model's modes (or, with a `first_window`
    /// reference, from the next identification).
    pub fn rebase(
        &mut self,
        config: &TrackingConfig,
        model: ReferenceModes,
        at_s: f64,
    ) -> Vec<DriftEvent> {
        let band = self.band_percent / 100.0;
        let events = (1..)
            .zip(&self.modes)
            .filter_map(|(mode, alarm)| {
                let since_s = alarm.band.raised_since_s()?;
                let reference_hz = alarm.reference_hz.unwrap_or_default();
                let frequency_hz = model
                    .frequencies_hz
                    .get(mode - 1)
                    .copied()
                    .unwrap_or(reference_hz);
                Some(DriftEvent {
                    state: AlarmState::Cleared,
                    mode,
                    frequency_hz,
                    reference_hz,
                    band_low_hz: reference_hz * (1.0 - band),
                    band_high_hz: reference_hz * (1.0 + band),
                    since_s,
                    at_s,
                })
            })
            .collect();
        *self = Self::new(config, model);
        events
    }

    /// Model modes whose drift alarm is raised now, 1-based.
    pub fn raised(&self) -> Vec<usize> {
        (1..)
            .zip(&self.modes)
            .filter(|(_, m)| m.band.raised_since_s().is_some())
            .map(|(n, _)| n)
            .collect()
    }

    /// Matches `identification` of the window `[start_s, end_s)` to the model's modes, moves
    /// the alarms, and returns the history record and the alarms raised or cleared. A failed
    /// identification changes no alarm.
    pub fn decide(
        &mut self,
        start_s: f64,
        end_s: f64,
        identification: &Identification,
    ) -> (HistoryRecord, Vec<DriftEvent>) {
        let found: &[FoundMode] = match identification {
            Identification::Modes(modes) => modes,
            Identification::Failed(_) => &[],
        };
        let matches = self.match_modes(found);
        let mut events = Vec::new();
        let mut tracked = Vec::with_capacity(self.modes.len());
        let band = self.band_percent / 100.0;
        for (i, alarm) in self.modes.iter_mut().enumerate() {
            let model_frequency_hz = self.model.frequencies_hz.get(i).copied().unwrap_or(0.0);
            let hit = matches
                .get(i)
                .copied()
                .flatten()
                .and_then(|(j, mac)| found.get(j).map(|m| (m, mac)));
            let mut in_band = None;
            if let Some((m, _)) = hit {
                let reference_hz = *alarm.reference_hz.get_or_insert(m.frequency_hz);
                let inside = (m.frequency_hz - reference_hz).abs() <= band * reference_hz;
                in_band = Some(inside);
                let event = |state, since_s| DriftEvent {
                    state,
                    mode: i + 1,
                    frequency_hz: m.frequency_hz,
                    reference_hz,
                    band_low_hz: reference_hz * (1.0 - band),
                    band_high_hz: reference_hz * (1.0 + band),
                    since_s,
                    at_s: end_s,
                };
                if let Some((state, since_s)) = alarm.band.decide(inside, end_s, self.clear_windows)
                {
                    events.push(event(state, since_s));
                }
            }
            tracked.push(TrackedMode {
                mode: i + 1,
                model_frequency_hz,
                reference_hz: alarm.reference_hz,
                frequency_hz: hit.map(|(m, _)| m.frequency_hz),
                damping_ratio: hit.map(|(m, _)| m.damping_ratio),
                mac: hit.map(|(_, mac)| mac),
                in_band,
                alarm: alarm.band.raised_since_s().is_some(),
                shape: hit.map(|(m, _)| m.shape.clone()),
            });
        }
        let unmatched = found
            .iter()
            .enumerate()
            .filter(|(j, _)| !matches.iter().flatten().any(|(k, _)| k == j))
            .map(|(_, m)| m.clone())
            .collect();
        let record = HistoryRecord {
            start_s,
            end_s,
            identified: matches!(identification, Identification::Modes(_)),
            reason: match identification {
                Identification::Failed(reason) => Some(reason.clone()),
                Identification::Modes(_) => None,
            },
            modes: tracked,
            unmatched,
            stiffness: None,
        };
        (record, events)
    }

    /// For each model mode, the identified mode (index, MAC) it is: among those within
    /// [`MATCH_RANGE_REL`] of its model frequency with MAC ≥ `min_mac`, the highest MAC; each
    /// identified mode is given to one model mode at most (the pairs with the highest MAC
    /// first).
    fn match_modes(&self, found: &[FoundMode]) -> Vec<Option<(usize, f64)>> {
        let mut pairs = Vec::new();
        for (i, (f_model, shape)) in self
            .model
            .frequencies_hz
            .iter()
            .zip(&self.model.shapes)
            .enumerate()
        {
            for (j, m) in found.iter().enumerate() {
                let mac = mac(shape, &m.shape);
                if (m.frequency_hz / f_model - 1.0).abs() <= MATCH_RANGE_REL && mac >= self.min_mac
                {
                    pairs.push((mac, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut matched = vec![None; self.model.frequencies_hz.len()];
        let mut taken = vec![false; found.len()];
        for (mac, i, j) in pairs {
            if let (Some(slot), Some(t)) = (matched.get_mut(i), taken.get_mut(j))
                && slot.is_none()
                && !*t
            {
                *slot = Some((j, mac));
                *t = true;
            }
        }
        matched
    }
}

/// The JSON published on `dtop/v1/twin/<rig>/modes` for one history record.
pub fn modes_json(rig: &str, record: &HistoryRecord) -> serde_json::Value {
    let mut value = serde_json::json!({ "rig": rig });
    if let (Some(map), Ok(serde_json::Value::Object(fields))) =
        (value.as_object_mut(), serde_json::to_value(record))
    {
        map.extend(fields);
    }
    value
}

/// The JSON published, retained, on `dtop/v1/twin/<rig>/alarm/drift` for one frequency alarm
/// raised or cleared: the event, plus every mode and storey whose alarm is raised after it
/// (`raised_modes`, `raised_storeys`), so the retained message alone tells a new subscriber
/// the rig's whole drift state.
pub fn drift_json(
    rig: &str,
    event: &DriftEvent,
    raised_modes: &[usize],
    raised_storeys: &[usize],
) -> serde_json::Value {
    serde_json::json!({
        "rig": rig,
        "state": event.state,
        "mode": event.mode,
        "frequency_hz": event.frequency_hz,
        "reference_hz": event.reference_hz,
        "band_hz": [event.band_low_hz, event.band_high_hz],
        "since_s": event.since_s,
        "at_s": event.at_s,
        "raised_modes": raised_modes,
        "raised_storeys": raised_storeys,
    })
}

/// Appends the line-protocol lines of one history record (see `crate::lineproto`'s storage
/// schema) at Unix time `t_ns` (the window's end): one `dtop_twin_modes` point per model mode
/// found, tagged `mode=<n>`, or one point tagged `mode=none` with the reason when the
/// identification failed. Non-finite values are left out.
pub fn encode_history(out: &mut String, rig: &str, record: &HistoryRecord, t_ns: i64) {
    let head = |out: &mut String, mode: &str| {
        out.push_str(MODES_MEASUREMENT);
        out.push_str(",rig=");
        escape_key(out, rig);
        out.push_str(",mode=");
        escape_key(out, mode);
        out.push(' ');
        out.push_str("start_s=");
        write_float(out, record.start_s);
        out.push_str(",end_s=");
        write_float(out, record.end_s);
    };
    if let Some(reason) = &record.reason {
        head(out, "none");
        out.push_str(",identified=false,reason=\"");
        // Line protocol has no newline inside a value: a multi-line reason is joined by "; ".
        for c in reason.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("; "),
                '\r' => {}
                _ => out.push(c),
            }
        }
        let _ = writeln!(out, "\" {t_ns}");
        return;
    }
    for m in &record.modes {
        let Some(frequency_hz) = m.frequency_hz.filter(|f| f.is_finite()) else {
            continue;
        };
        head(out, &m.mode.to_string());
        out.push_str(",identified=true,frequency_hz=");
        write_float(out, frequency_hz);
        let optional = [
            ("damping_ratio", m.damping_ratio),
            ("mac", m.mac),
            ("reference_hz", m.reference_hz),
        ];
        for (name, value) in optional {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                let _ = write!(out, ",{name}=");
                write_float(out, v);
            }
        }
        let _ = writeln!(
            out,
            ",in_band={},alarm={} {t_ns}",
            m.in_band.unwrap_or(true),
            m.alarm
        );
    }
}

/// Appends the `dtop_twin_drift` line of one alarm raised or cleared, at Unix time `t_ns`.
pub fn encode_drift(out: &mut String, rig: &str, event: &DriftEvent, t_ns: i64) {
    encode_drift_line(
        out,
        rig,
        ("mode", event.mode),
        event.state,
        &[
            ("frequency_hz", event.frequency_hz),
            ("reference_hz", event.reference_hz),
            ("band_low_hz", event.band_low_hz),
            ("band_high_hz", event.band_high_hz),
            ("since_s", event.since_s),
        ],
        t_ns,
    );
}

/// Appends one `dtop_twin_drift` line: the alarm's subject as a tag (`mode=<n>` or
/// `storey=<n>`), `raised`, then each finite field, at Unix time `t_ns`.
pub(crate) fn encode_drift_line(
    out: &mut String,
    rig: &str,
    (tag, number): (&str, usize),
    state: AlarmState,
    fields: &[(&str, f64)],
    t_ns: i64,
) {
    out.push_str(DRIFT_MEASUREMENT);
    out.push_str(",rig=");
    escape_key(out, rig);
    let _ = write!(
        out,
        ",{tag}={number} raised={}",
        state == AlarmState::Raised
    );
    for &(name, v) in fields {
        if v.is_finite() {
            let _ = write!(out, ",{name}=");
            write_float(out, v);
        }
    }
    let _ = writeln!(out, " {t_ns}");
}

/// A window due for identification, with the Unix time of its end (for its stored lines).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingJob {
    /// The window.
    pub job: WindowJob,
    /// Unix time of the sample just after the window, ns.
    pub end_timestamp_ns: u64,
}

/// What the decision on one identification gives the shell to store and publish.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingOutput {
    /// `dtop_twin_modes` and `dtop_twin_drift` lines.
    pub lines: String,
    /// How many lines `lines` holds.
    pub line_count: usize,
    /// The history record as JSON, for `dtop/v1/twin/<rig>/modes`.
    pub modes_json: Vec<u8>,
    /// One JSON message per alarm raised or cleared, for `.../alarm/drift` (retained).
    pub drift_json: Vec<Vec<u8>>,
}

/// What a rig's tracking has done so far, for `RigStats` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TrackingCounters {
    /// Windows whose identification found modes.
    pub windows_identified_total: u64,
    /// Windows whose identification failed (each a history record with its reason).
    pub windows_failed_total: u64,
    /// Windows not identified because the previous identifications were still running.
    pub windows_skipped_total: u64,
    /// Gaps in the samples that restarted the window.
    pub window_restarts_total: u64,
    /// Drift alarms raised.
    pub drift_alarms_raised_total: u64,
    /// Drift alarms raised now.
    pub drift_alarms_active: u64,
}

/// One rig's tracking as its actor runs it: which channels, the window, the decisions and
/// the counters. Pure; the actor runs [`identify_window`] on each [`TrackingJob`] off its
/// path and hands the result back to [`RigTracking::on_identified`].
#[derive(Debug, Clone)]
pub struct RigTracking {
    config: TrackingConfig,
    /// Manifest names of the tracked channels (`floor{k}_accel`), in window channel order.
    channels: Vec<String>,
    /// The tracked channels' floors (1-based, window order).
    floors: Vec<usize>,
    window: TrackingWindow,
    drift: DriftTracker,
    /// `None` when stiffness tracking is off.
    stiffness: Option<StiffnessTracker>,
    counters: TrackingCounters,
}

impl RigTracking {
    /// Tracking of the channels named `channels` (the accelerometers of `floors`, 1-based,
    /// same order) sampled at `sample_rate_hz` against `reference`, the modes of `building`,
    /// whose storeys are fitted to each window.
    pub fn new(
        config: &TrackingConfig,
        channels: Vec<String>,
        floors: Vec<usize>,
        sample_rate_hz: f64,
        reference: ReferenceModes,
        building: ShearBuildingConfig,
    ) -> Self {
        Self {
            window: TrackingWindow::new(config, sample_rate_hz, channels.len()),
            drift: DriftTracker::new(config, reference),
            stiffness: StiffnessTracker::new(config, building, &floors),
            config: config.clone(),
            channels,
            floors,
            counters: TrackingCounters::default(),
        }
    }

    /// Modes and storeys whose drift alarm is raised now, 1-based.
    fn raised(&self) -> (Vec<usize>, Vec<usize>) {
        (
            self.drift.raised(),
            self.stiffness
                .as_ref()
                .map(StiffnessTracker::raised)
                .unwrap_or_default(),
        )
    }

    /// The tracked channels' manifest names, in window order.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The modes identified ones are matched to.
    pub fn reference(&self) -> &ReferenceModes {
        &self.drift.model
    }

    /// Sample rate of the tracked channels, Hz.
    pub fn sample_rate_hz(&self) -> f64 {
        self.window.sample_rate_hz
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &TrackingConfig {
        &self.config
    }

    /// Counts so far.
    pub fn counters(&self) -> TrackingCounters {
        TrackingCounters {
            window_restarts_total: self.window.restarts(),
            drift_alarms_active: (self.drift.raised().len()
                + self.stiffness.as_ref().map_or(0, |s| s.raised().len()))
                as u64,
            ..self.counters
        }
    }

    /// Counts a due window the shell had no room to identify.
    pub fn count_skipped(&mut self) {
        self.counters.windows_skipped_total += 1;
    }

    /// Adds one block (one `Vec` per tracked channel) of a stream whose sample `k` of this
    /// block has index `first_sample_index + k` and Unix time `first_timestamp_ns + k ·
    /// sample_period_ns`; returns the windows due.
    pub fn push_block(
        &mut self,
        first_sample_index: u64,
        first_timestamp_ns: u64,
        sample_period_ns: u64,
        block: &[Vec<f64>],
    ) -> Vec<TrackingJob> {
        let slices: Vec<&[f64]> = block.iter().map(Vec::as_slice).collect();
        self.window
            .push(first_sample_index, &slices)
            .into_iter()
            .map(|job| {
                let end_index =
                    job.first_sample_index + job.channels.first().map_or(0, Vec::len) as u64;
                let offset = end_index.saturating_sub(first_sample_index);
                TrackingJob {
                    end_timestamp_ns: first_timestamp_ns
                        .saturating_add(offset.saturating_mul(sample_period_ns)),
                    job,
                }
            })
            .collect()
    }

    /// Decides on `identification` of `job`: the lines to store (timestamps in `precision`)
    /// and the messages to publish.
    pub fn on_identified(
        &mut self,
        rig: &str,
        job: &TrackingJob,
        identification: &Identification,
        precision: crate::lineproto::Precision,
    ) -> TrackingOutput {
        let (mut record, events) =
            self.drift
                .decide(job.job.start_s(), job.job.end_s(), identification);
        let stiffness_events = match &mut self.stiffness {
            Some(stiffness) => {
                let (stiffness_record, events) = stiffness.decide(&record);
                record.stiffness = Some(stiffness_record);
                events
            }
            None => Vec::new(),
        };
        if record.identified {
            self.counters.windows_identified_total += 1;
        } else {
            self.counters.windows_failed_total += 1;
        }
        let (raised_modes, raised_storeys) = self.raised();
        let mut lines = String::new();
        // A time beyond InfluxDB's range cannot be stored; the messages still go out.
        if let Some(t) = precision.from_ns(job.end_timestamp_ns) {
            encode_history(&mut lines, rig, &record, t);
            if let Some(stiffness) = &record.stiffness {
                encode_stiffness(&mut lines, rig, record.start_s, record.end_s, stiffness, t);
            }
            for event in &events {
                encode_drift(&mut lines, rig, event, t);
            }
            for event in &stiffness_events {
                encode_stiffness_drift(&mut lines, rig, event, t);
            }
        }
        let mut drift_messages = Vec::with_capacity(events.len() + stiffness_events.len());
        for event in &events {
            if event.state == AlarmState::Raised {
                self.counters.drift_alarms_raised_total += 1;
            }
            drift_messages.push(
                drift_json(rig, event, &raised_modes, &raised_storeys)
                    .to_string()
                    .into_bytes(),
            );
        }
        for event in &stiffness_events {
            if event.state == AlarmState::Raised {
                self.counters.drift_alarms_raised_total += 1;
            }
            drift_messages.push(
                stiffness_drift_json(rig, event, &raised_modes, &raised_storeys)
                    .to_string()
                    .into_bytes(),
            );
        }
        TrackingOutput {
            line_count: lines.lines().count(),
            lines,
            modes_json: modes_json(rig, &record).to_string().into_bytes(),
            drift_json: drift_messages,
        }
    }
}

impl RigTracking {
    /// The rig now runs on an adopted model, `building`, whose modes are `reference`: they
    /// become the reference, every raised alarm clears (stored at `t_ns` and published like
    /// any other change), and the window keeps filling. The lines, their count and the drift
    /// messages.
    pub fn rebase(
        &mut self,
        rig: &str,
        reference: ReferenceModes,
        building: ShearBuildingConfig,
        at_s: f64,
        t_ns: u64,
        precision: crate::lineproto::Precision,
    ) -> (String, usize, Vec<Vec<u8>>) {
        let events = self.drift.rebase(&self.config, reference, at_s);
        let stiffness_events = match &mut self.stiffness {
            Some(s) => s.rebase(&self.config, building, &self.floors, at_s),
            None => Vec::new(),
        };
        let mut lines = String::new();
        if let Some(t) = precision.from_ns(t_ns) {
            for event in &events {
                encode_drift(&mut lines, rig, event, t);
            }
            for event in &stiffness_events {
                encode_stiffness_drift(&mut lines, rig, event, t);
            }
        }
        let json = events
            .iter()
            .map(|e| drift_json(rig, e, &[], &[]).to_string().into_bytes())
            .chain(stiffness_events.iter().map(|e| {
                stiffness_drift_json(rig, e, &[], &[])
                    .to_string()
                    .into_bytes()
            }))
            .collect();
        let count = lines.lines().count();
        (lines, count, json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
