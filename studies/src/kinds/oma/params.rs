//! Owns the `oma` study's parameters: the flat, form-friendly set a user submits, its defaults
//! for a model, and its translation into `dtop-oma`'s nested [`OmaParams`] (whose own checks
//! are reused, their messages renamed to this flat set's fields). Knows nothing of the record.

use dtop_oma::cluster::{
    default_cluster_frequency_tolerance, default_cluster_min_mac, default_min_mpc,
    default_min_order_fraction,
};
use dtop_oma::fdd::{
    default_dynamic_range_db, default_min_peak_separation_hz, default_min_prominence_db,
    default_overlap, default_segment_samples,
};
use dtop_oma::segments::{
    default_match_frequency_tolerance, default_match_min_mac, default_segments,
};
use dtop_oma::ssi::default_min_order;
use dtop_oma::stabilisation::{
    default_damping_tolerance, default_frequency_tolerance, default_max_damping_ratio,
    default_min_mac,
};
use dtop_oma::{
    EfddParams, FddParams, ModePicking, OmaParams, SegmentParams, SsiParams, StabilityCriteria,
};
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::problems::FieldProblem;

/// The sample rate the defaults are sized for, Hz: a rig's usual acquisition rate. Other rates
/// work with the same defaults; the block rows then cover a different span of lags.
const NOMINAL_SAMPLE_RATE_HZ: f64 = 1000.0;
/// Block rows are never defaulted below this: lags up to 39 samples.
const MIN_DEFAULT_BLOCK_ROWS: usize = 20;
/// Nor above this: the Toeplitz matrix stays at most 200 × channels square.
const MAX_DEFAULT_BLOCK_ROWS: usize = 200;
/// Block rows used when the model has no computable first mode.
const FALLBACK_BLOCK_ROWS: usize = 80;
/// States allowed per floor in the default highest order: a mode takes two, so five times the
/// modes the model has, which leaves room for noise modes (the dtop-oma tests use 30 for the
/// three-storey rig and 40 for four storeys).
const DEFAULT_ORDER_PER_FLOOR: usize = 10;

/// Default share of the segments a mode must be found in: half. Over nine simulated
/// 10-minute records of the Southampton rig every true mode was found in 4 of 4 segments and
/// every one of the three noise modes picked in 0 of 4.
const DEFAULT_MIN_SEGMENT_FRACTION: f64 = 0.5;

/// Parameters of `oma`. Every field has a default for the model (see
/// [`Params::defaults_for`]), so `{}` runs on a 10-minute 1 kHz record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Columns of `inputs.acceleration` to identify from, each named `floor{k}_accel`; null:
    /// every `floor{k}_accel` column. The `force` column is never used (OMA is output only).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Lowest frequency of a reported mode and of an FDD peak, Hz; at least 0.
    pub min_frequency_hz: f64,
    /// Highest frequency of a reported mode and of an FDD peak, Hz; null: the Nyquist
    /// frequency.
    #[serde(default)]
    pub max_frequency_hz: Option<f64>,
    /// Block rows i of SSI-cov's Toeplitz matrix (lags 1 to 2i − 1); 2i/fs should span about
    /// one period of the lowest mode. At least 2; the record needs 20 samples per block row.
    pub block_rows: usize,
    /// Lowest model order (state dimension); at least 1.
    pub min_order: usize,
    /// Highest model order; orders run from `min_order` in steps of 2 (a mode takes two
    /// states). At most channels × (block_rows − 1).
    pub max_order: usize,
    /// A pole is stable when its frequency changes by at most this fraction from the next
    /// lower order's; in (0, 1).
    pub stable_frequency_tolerance: f64,
    /// ...its damping ratio by at most this fraction; in (0, 1].
    pub stable_damping_tolerance: f64,
    /// ...and its shape has at least this MAC with that pole's; in (0, 1].
    pub stable_min_mac: f64,
    /// Largest damping ratio of a physical pole, fraction of critical; in (0, 1].
    pub max_damping_ratio: f64,
    /// Mode picking: a stable pole joins a cluster within this relative frequency distance
    /// of its mean; in (0, 1).
    pub pick_frequency_tolerance: f64,
    /// ...and with at least this MAC with the cluster's first pole; in (0, 1].
    pub pick_min_mac: f64,
    /// A cluster is a mode when it spans at least this share of the orders; in (0, 1].
    pub pick_min_order_fraction: f64,
    /// ...and its poles' mean MPC is at least this (noise modes are complex); in [0, 1].
    pub pick_min_mpc: f64,
    /// Consecutive segments the record is cut into for the modes' statistical spread; at
    /// least 2, or 0 for none.
    pub segments: usize,
    /// A segment's mode matches a record mode within this relative frequency distance;
    /// in (0, 1).
    pub segment_match_frequency_tolerance: f64,
    /// ...and with at least this MAC; in (0, 1].
    pub segment_match_min_mac: f64,
    /// A mode of the whole record is reported in `modes` only when found again in at least
    /// this share of the segments; the others are listed as `unconfirmed_modes` (on
    /// simulated records they were noise modes, found in no segment and with no FDD peak).
    /// In [0, 1]; 0 reports every mode. Ignored without segments.
    pub min_segment_fraction: f64,
    /// Whether to run the frequency-domain decomposition cross-check.
    pub fdd: bool,
    /// FDD's Welch segment length, samples (line spacing fs / this); at least 16.
    pub fdd_segment_samples: usize,
    /// Overlap of FDD's Welch segments, fraction; in [0, 0.95].
    pub fdd_overlap: f64,
    /// Smallest prominence of an FDD peak above its bases, dB; positive.
    pub fdd_min_prominence_db: f64,
    /// Smallest distance between two FDD peaks, Hz; at least 0.
    pub fdd_min_peak_separation_hz: f64,
    /// Whether to estimate each FDD peak's damping by enhanced FDD (EFDD).
    pub efdd: bool,
}

impl Params {
    /// The defaults for `model`: block rows so that 2i lags at 1 kHz span one period of the
    /// model's first mode (⌈1000 / (2·f₁)⌉ rounded up to a multiple of 10, within 20..=200;
    /// 80 when the model has no modes), orders 2 to 10 × floors, `dtop-oma`'s stability,
    /// picking, segment (4 segments) and FDD (4096-sample segments, EFDD on) defaults, every
    /// floor accelerometer, no band limits.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let block_rows = model
            .building()
            .ok()
            .and_then(|b| b.natural_frequencies_hz().first().copied())
            .filter(|f| f.is_finite() && *f > 0.0)
            .map_or(FALLBACK_BLOCK_ROWS, |f1_hz| {
                let rows = (NOMINAL_SAMPLE_RATE_HZ / (2.0 * f1_hz)).ceil();
                let rows = if rows.is_finite() && rows < MAX_DEFAULT_BLOCK_ROWS as f64 {
                    rows as usize
                } else {
                    MAX_DEFAULT_BLOCK_ROWS
                };
                rows.div_ceil(10)
                    .saturating_mul(10)
                    .clamp(MIN_DEFAULT_BLOCK_ROWS, MAX_DEFAULT_BLOCK_ROWS)
            });
        Self {
            channels: None,
            min_frequency_hz: 0.0,
            max_frequency_hz: None,
            block_rows,
            min_order: default_min_order(),
            max_order: (DEFAULT_ORDER_PER_FLOOR * model.floors()).max(2 * default_min_order()),
            stable_frequency_tolerance: default_frequency_tolerance(),
            stable_damping_tolerance: default_damping_tolerance(),
            stable_min_mac: default_min_mac(),
            max_damping_ratio: default_max_damping_ratio(),
            pick_frequency_tolerance: default_cluster_frequency_tolerance(),
            pick_min_mac: default_cluster_min_mac(),
            pick_min_order_fraction: default_min_order_fraction(),
            pick_min_mpc: default_min_mpc(),
            segments: default_segments(),
            segment_match_frequency_tolerance: default_match_frequency_tolerance(),
            segment_match_min_mac: default_match_min_mac(),
            min_segment_fraction: DEFAULT_MIN_SEGMENT_FRACTION,
            fdd: true,
            fdd_segment_samples: default_segment_samples(),
            fdd_overlap: default_overlap(),
            fdd_min_prominence_db: default_min_prominence_db(),
            fdd_min_peak_separation_hz: default_min_peak_separation_hz(),
            efdd: true,
        }
    }

    /// The same settings as `dtop-oma` takes them.
    pub fn oma_params(&self) -> OmaParams {
        OmaParams {
            ssi: SsiParams {
                reference_channels: None,
                block_rows: self.block_rows,
                min_order: self.min_order,
                max_order: self.max_order,
                stability: StabilityCriteria {
                    frequency_tolerance: self.stable_frequency_tolerance,
                    damping_tolerance: self.stable_damping_tolerance,
                    min_mac: self.stable_min_mac,
                    max_damping_ratio: self.max_damping_ratio,
                },
            },
            picking: ModePicking {
                frequency_tolerance: self.pick_frequency_tolerance,
                min_mac: self.pick_min_mac,
                min_order_fraction: self.pick_min_order_fraction,
                min_mpc: self.pick_min_mpc,
            },
            segments: (self.segments > 0).then_some(SegmentParams {
                segments: self.segments,
                match_frequency_tolerance: self.segment_match_frequency_tolerance,
                match_min_mac: self.segment_match_min_mac,
            }),
            fdd: self.fdd.then_some(FddParams {
                segment_samples: self.fdd_segment_samples,
                overlap: self.fdd_overlap,
                min_frequency_hz: self.min_frequency_hz,
                max_frequency_hz: self.max_frequency_hz,
                min_peak_separation_hz: self.fdd_min_peak_separation_hz,
                min_prominence_db: self.fdd_min_prominence_db,
                dynamic_range_db: default_dynamic_range_db(),
                max_peaks: None,
                efdd: self.efdd.then_some(EfddParams::default()),
            }),
        }
    }

    /// Whether a mode at `frequency_hz` lies in the band asked for.
    pub fn in_band(&self, frequency_hz: f64) -> bool {
        frequency_hz >= self.min_frequency_hz
            && self.max_frequency_hz.is_none_or(|max| frequency_hz <= max)
    }

    /// Every rule these parameters break on their own or against a record of `channels`
    /// channels at `sample_rate_hz` (0 and NaN when the record is unknown), each under
    /// `params.<field>`. The record's length is checked by the caller, in seconds.
    pub fn problems(&self, channels: usize, sample_rate_hz: f64) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let oma = self.oma_params();
        // An unbounded sample count leaves the record's length out of dtop-oma's checks.
        for p in oma.ssi.problems(channels, usize::MAX) {
            problems.push(renamed(&p));
        }
        for p in oma.picking.problems("pick_") {
            problems.push(renamed(&p));
        }
        if let Some(segments) = &oma.segments {
            for p in segments.problems("segment_") {
                problems.push(renamed(&p));
            }
        }
        if let Some(fdd) = &oma.fdd {
            // The band is checked below whether or not FDD runs; 0 samples skips the length.
            for p in fdd.problems(0, f64::NAN) {
                if !p.starts_with("min_frequency_hz") && !p.starts_with("max_frequency_hz") {
                    problems.push(renamed(&p));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.min_segment_fraction) {
            problems.push(FieldProblem::new(
                "params.min_segment_fraction",
                format!(
                    "min_segment_fraction = {} must be in [0, 1]",
                    self.min_segment_fraction
                ),
            ));
        }
        if !(self.min_frequency_hz.is_finite() && self.min_frequency_hz >= 0.0) {
            problems.push(FieldProblem::new(
                "params.min_frequency_hz",
                format!(
                    "min_frequency_hz = {} must be zero or positive and finite",
                    self.min_frequency_hz
                ),
            ));
        }
        if let Some(max) = self.max_frequency_hz {
            let nyquist_hz = 0.5 * sample_rate_hz;
            if !(max.is_finite() && max > self.min_frequency_hz) {
                problems.push(FieldProblem::new(
                    "params.max_frequency_hz",
                    format!(
                        "max_frequency_hz = {max} must be finite and above min_frequency_hz = {}",
                        self.min_frequency_hz
                    ),
                ));
            } else if nyquist_hz.is_finite() && max > nyquist_hz {
                problems.push(FieldProblem::new(
                    "params.max_frequency_hz",
                    format!(
                        "max_frequency_hz = {max} is above the record's Nyquist frequency \
                         {nyquist_hz} Hz: lower it or leave it null"
                    ),
                ));
            }
        }
        problems
    }
}

/// `dtop-oma`'s names of the settings (as its problem messages begin) and this kind's flat
/// names for them.
const RENAMES: &[(&str, &str)] = &[
    ("block_rows", "block_rows"),
    ("min_order", "min_order"),
    ("max_order", "max_order"),
    (
        "stability.frequency_tolerance",
        "stable_frequency_tolerance",
    ),
    ("stability.damping_tolerance", "stable_damping_tolerance"),
    ("stability.min_mac", "stable_min_mac"),
    ("stability.max_damping_ratio", "max_damping_ratio"),
    ("pick_frequency_tolerance", "pick_frequency_tolerance"),
    ("pick_min_mac", "pick_min_mac"),
    ("pick_min_order_fraction", "pick_min_order_fraction"),
    ("pick_min_mpc", "pick_min_mpc"),
    ("segment_segments", "segments"),
    (
        "segment_match_frequency_tolerance",
        "segment_match_frequency_tolerance",
    ),
    ("segment_match_min_mac", "segment_match_min_mac"),
    ("segment_samples", "fdd_segment_samples"),
    ("overlap", "fdd_overlap"),
    ("min_peak_separation_hz", "fdd_min_peak_separation_hz"),
    ("min_prominence_db", "fdd_min_prominence_db"),
];

/// A `dtop-oma` problem sentence ("block_rows = 1 must be at least 2") as a problem of this
/// kind's field, the sentence's leading name replaced by the field's.
fn renamed(message: &str) -> FieldProblem {
    let (name, rest) = message.split_once(' ').unwrap_or((message, ""));
    match RENAMES.iter().find(|(theirs, _)| *theirs == name) {
        Some((_, ours)) => {
            let mut text = format!("{ours} {rest}");
            if *ours == "segments" {
                text.push_str(", or 0 for none");
            }
            FieldProblem::new(format!("params.{ours}"), text)
        }
        None => FieldProblem::new("params", message),
    }
}
