//! Pure InfluxDB line-protocol encoder for sample blocks and estimated states: escaping, number
//! formatting, timestamps.
//!
//! No I/O, no clocks, no validation of manifests (see `ingest`): same input, same bytes.
//!
//! # Storage schema
//!
//! ```text
//! dtop_samples,rig=<rig>,stream=<stream_id> <channel>=<float>[,<channel>=<float>...] <t_k>
//!     one point per sample instant k of a block;
//!     one float field per channel, named by the channel's manifest name,
//!     value = raw * scale + offset (SI unit of the channel kind);
//!     t_k = first_timestamp_ns + k * sample_period_ns.
//!
//! dtop_blocks,rig=<rig>,stream=<stream_id> seq=<i>i,first_sample_index=<i>i,samples=<i>i,sample_period_ns=<i>i,session=<i>i,backfill=<bool> <t_0>
//!     one point per stored block, at the block's first sample time; lets an audit find holes
//!     (missing seq) and overlaps without reading the samples.
//!
//! dtop_samples_overlap,rig=<rig>,stream=<stream_id>,timeline=<session>/<origin_ns>/<period_ns> ...
//! dtop_blocks_overlap,rig=<rig>,stream=<stream_id>,timeline=<...> ...
//!     the same lines for a block whose times `dtop_samples` already holds from another edge
//!     clock (see `crate::overlap`): stored apart, never over the stored samples.
//!
//! dtop_twin_state,rig=<rig> floor<n>_displacement_m=<float>,floor<n>_velocity_m_s=<float>[,...],nis=<float> <t>
//!     the Kalman filter's estimate, `model.state_publish_hz` points per second of live stream-0
//!     samples (only for rigs whose manifest fits the configured model);
//!     one displacement (m) and one velocity (m/s) field per floor n = 1..N, relative to the
//!     ground; nis = mean normalised innovation squared per measured channel over about the
//!     last second (≈ 1 when the filter is consistent; absent before any measurement);
//!     t = time of the sample the estimate refers to. Non-finite values are left out.
//!
//! dtop_twin_modes,rig=<rig>,mode=<n> start_s=<float>,end_s=<float>,identified=true,frequency_hz=<float>[,damping_ratio=<float>][,mac=<float>][,reference_hz=<float>],in_band=<bool>,alarm=<bool> <t>
//! dtop_twin_modes,rig=<rig>,mode=none start_s=<float>,end_s=<float>,identified=false,reason="<string>" <t>
//!     the parameter history (`[tracking]`, encoded by `crate::tracking::encode_history`): per
//!     identified window, one point per model mode found (mode = its 1-based number; start_s,
//!     end_s = the window in sample time, s; reference_hz = its band's centre; alarm = its drift
//!     alarm after this window), or one point with the reason when nothing was identified;
//!     t = the window's end.
//!
//! dtop_twin_stiffness,rig=<rig>,storey=<n> start_s=<float>,end_s=<float>,stiffness_n_per_m=<float>,stiffness_std_n_per_m=<float>[,reference_n_per_m=<float>],model_stiffness_n_per_m=<float>,in_band=<bool>,alarm=<bool> <t>
//!     the storey stiffnesses fitted to each identified window's modes
//!     (`crate::tracking::stiffness::encode_stiffness`; none when they could not be fitted):
//!     reference = its band's centre, model = the running model's; t = the window's end.
//!
//! dtop_twin_drift,rig=<rig>,mode=<n> raised=<bool>,frequency_hz=<float>,reference_hz=<float>,band_low_hz=<float>,band_high_hz=<float>,since_s=<float> <t>
//! dtop_twin_drift,rig=<rig>,storey=<n> raised=<bool>,stiffness_n_per_m=<float>,reference_n_per_m=<float>,band_low_n_per_m=<float>,band_high_n_per_m=<float>,since_s=<float> <t>
//!     one point per drift alarm raised (raised=true) or cleared, of a mode's frequency
//!     (`crate::tracking::encode_drift`) or a storey's stiffness
//!     (`crate::tracking::stiffness::encode_stiffness_drift`); since_s = sample time it was
//!     raised at; t = the deciding window's end.
//!
//! dtop_twin_model,rig=<rig>,run=<run> name="<name>",version=<i>i,first_sample_index=<i>i,carried="kept|restarted",building="<JSON>" <t>
//!     a switch of the rig's running estimator to a catalogue model version, at the time of the
//!     first block estimated on it (`crate::adopt::ModelRecord`; the replay records are in
//!     `crate::replay::record`).
//! ```
//!
//! Floats are written without the `i` suffix, so `1` is the float 1.0 to InfluxDB; integers carry
//! `i`. Timestamps are written in the configured [`Precision`]; microseconds truncate towards
//! the past, which is exact when the block start and period are whole microseconds.

use std::fmt::Write as _;

use dtop_proto::v1::TwinState;
use serde::{Deserialize, Serialize};

/// Measurement holding one point per sample instant.
pub const SAMPLES_MEASUREMENT: &str = "dtop_samples";
/// Measurement holding one audit point per stored block.
pub const BLOCKS_MEASUREMENT: &str = "dtop_blocks";
/// Measurements of blocks stored apart: their times would have replaced stored samples of
/// another edge clock (see [`crate::overlap`]). Same fields, plus a `timeline` tag.
pub const SAMPLES_OVERLAP_MEASUREMENT: &str = "dtop_samples_overlap";
pub const BLOCKS_OVERLAP_MEASUREMENT: &str = "dtop_blocks_overlap";
/// Measurement holding one point per loss declaration the twin accounted (`dtop-twin audit`
/// lists them beside the holes).
pub const SEQ_LOSSES_MEASUREMENT: &str = "dtop_seq_losses";
/// Measurement holding the estimated state at the state publication rate.
pub const TWIN_STATE_MEASUREMENT: &str = "dtop_twin_state";

/// Timestamp precision of written lines, as named in the config (`"us"`, `"ns"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Us,
    Ns,
}

impl Precision {
    /// Length of one timestamp unit, ns.
    pub const fn unit_ns(self) -> u64 {
        match self {
            Precision::Us => 1_000,
            Precision::Ns => 1,
        }
    }

    /// Converts a Unix timestamp in ns to this precision, truncating towards the past.
    /// `None` when it does not fit the signed 64-bit nanosecond range InfluxDB stores.
    pub fn from_ns(self, ts_ns: u64) -> Option<i64> {
        let ts = i64::try_from(ts_ns).ok()?;
        Some(ts / self.unit_ns() as i64)
    }

    /// The `precision=` value of InfluxDB 1.x `/write` (1.x does not know `us`).
    pub const fn v1_param(self) -> &'static str {
        match self {
            Precision::Us => "u",
            Precision::Ns => "n",
        }
    }

    /// The `precision=` value of InfluxDB 2.x `/api/v2/write`.
    pub const fn v2_param(self) -> &'static str {
        match self {
            Precision::Us => "us",
            Precision::Ns => "ns",
        }
    }

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        self.v2_param()
    }
}

/// One channel's samples of a block, with the manifest data needed to scale them.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    /// Field key: the channel's manifest name.
    pub name: &'a str,
    pub scale: f64,
    pub offset: f64,
    /// Raw counts, one per sample instant.
    pub raw: &'a [i32],
}

impl Column<'_> {
    /// Scaled value of sample `k`, SI units; `None` past the end and for
    /// [`RAW_NO_VALUE`](dtop_proto::RAW_NO_VALUE), the edge's mark of a sample its device gave
    /// no value for (a refused register, a value beyond the i32 range).
    pub fn value(&self, k: usize) -> Option<f64> {
        self.raw
            .get(k)
            .filter(|&&r| r != dtop_proto::RAW_NO_VALUE)
            .map(|&r| f64::from(r) * self.scale + self.offset)
    }

    /// Whether sample `k` carries the edge's no-value mark.
    fn is_no_value(&self, k: usize) -> bool {
        self.raw.get(k) == Some(&dtop_proto::RAW_NO_VALUE)
    }
}

/// What identifies and places a block in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader<'a> {
    pub rig: &'a str,
    pub stream_id: u32,
    pub session: u64,
    pub seq: u64,
    pub first_sample_index: u64,
    /// Unix time of sample 0, ns.
    pub first_timestamp_ns: u64,
    pub sample_period_ns: u64,
    pub backfill: bool,
}

/// Why a block cannot be encoded. The output buffer is left unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("block has no channels or no samples")]
    Empty,
    #[error("channel {name:?} has {len} samples, the first channel has {expected}")]
    Ragged {
        name: String,
        len: usize,
        expected: usize,
    },
    #[error("sample {sample} at {ts_ns} ns is beyond the year-2262 limit of InfluxDB timestamps")]
    TimestampOutOfRange { sample: usize, ts_ns: u128 },
    #[error("channel {name:?} sample {sample} scales to a non-finite value")]
    NonFinite { name: String, sample: usize },
}

/// Appends the `dtop_samples` lines of a block, then its `dtop_blocks` line, to `out`.
/// Returns the number of lines appended. On error `out` is left as it was.
pub fn encode_block(
    out: &mut String,
    header: &BlockHeader<'_>,
    columns: &[Column<'_>],
    precision: Precision,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let result = encode_block_inner(out, header, columns, precision, None);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Like [`encode_block`], but into `dtop_samples_overlap` and `dtop_blocks_overlap` with the
/// extra tag `timeline=<timeline>`, for a block whose times are already stored from another
/// clock: it can neither replace those samples nor collide with another clock's block.
pub fn encode_block_apart(
    out: &mut String,
    header: &BlockHeader<'_>,
    columns: &[Column<'_>],
    precision: Precision,
    timeline: &str,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let result = encode_block_inner(out, header, columns, precision, Some(timeline));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_block_inner(
    out: &mut String,
    header: &BlockHeader<'_>,
    columns: &[Column<'_>],
    precision: Precision,
    apart: Option<&str>,
) -> Result<usize, EncodeError> {
    let samples = columns.first().map_or(0, |c| c.raw.len());
    if samples == 0 {
        return Err(EncodeError::Empty);
    }
    if let Some(c) = columns.iter().find(|c| c.raw.len() != samples) {
        return Err(EncodeError::Ragged {
            name: c.name.to_owned(),
            len: c.raw.len(),
            expected: samples,
        });
    }
    let mut series_key = String::new();
    let measurement = match apart {
        None => SAMPLES_MEASUREMENT,
        Some(_) => SAMPLES_OVERLAP_MEASUREMENT,
    };
    write_series_key(&mut series_key, measurement, header.rig, header.stream_id);
    push_timeline_tag(&mut series_key, apart);
    let mut lines = 0;
    for k in 0..samples {
        let ts_ns =
            u128::from(header.first_timestamp_ns) + k as u128 * u128::from(header.sample_period_ns);
        let ts = u64::try_from(ts_ns)
            .ok()
            .and_then(|t| precision.from_ns(t))
            .ok_or(EncodeError::TimestampOutOfRange { sample: k, ts_ns })?;
        // A sample the edge marked as having no value is left out as a field, never stored as
        // a number; an instant where no channel has a value is no line at all.
        if columns.iter().all(|c| c.is_no_value(k)) {
            continue;
        }
        out.push_str(&series_key);
        let mut fields = 0;
        for column in columns {
            if column.is_no_value(k) {
                continue;
            }
            let value = column.value(k).filter(|v| v.is_finite());
            let Some(value) = value else {
                return Err(EncodeError::NonFinite {
                    name: column.name.to_owned(),
                    sample: k,
                });
            };
            out.push(if fields == 0 { ' ' } else { ',' });
            escape_key(out, column.name);
            out.push('=');
            write_float(out, value);
            fields += 1;
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, " {ts}");
        lines += 1;
    }
    encode_audit_line(out, header, samples, precision, apart)?;
    Ok(lines + 1)
}

fn push_timeline_tag(out: &mut String, apart: Option<&str>) {
    if let Some(timeline) = apart {
        out.push_str(",timeline=");
        escape_key(out, timeline);
    }
}

/// Appends the `dtop_blocks` audit line of a block of `samples` sample instants.
pub fn encode_block_audit(
    out: &mut String,
    header: &BlockHeader<'_>,
    samples: usize,
    precision: Precision,
) -> Result<(), EncodeError> {
    encode_audit_line(out, header, samples, precision, None)
}

fn encode_audit_line(
    out: &mut String,
    header: &BlockHeader<'_>,
    samples: usize,
    precision: Precision,
    apart: Option<&str>,
) -> Result<(), EncodeError> {
    let ts =
        precision
            .from_ns(header.first_timestamp_ns)
            .ok_or(EncodeError::TimestampOutOfRange {
                sample: 0,
                ts_ns: u128::from(header.first_timestamp_ns),
            })?;
    let measurement = match apart {
        None => BLOCKS_MEASUREMENT,
        Some(_) => BLOCKS_OVERLAP_MEASUREMENT,
    };
    write_series_key(out, measurement, header.rig, header.stream_id);
    push_timeline_tag(out, apart);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        " seq={}i,first_sample_index={}i,samples={}i,sample_period_ns={}i,session={}i,backfill={} {ts}",
        // InfluxDB integers are signed 64-bit; these counters cannot realistically reach 2^63,
        // and clamping keeps a hostile value from producing an unparsable line.
        clamp_i64(header.seq),
        clamp_i64(header.first_sample_index),
        samples,
        clamp_i64(header.sample_period_ns),
        clamp_i64(header.session),
        header.backfill,
    );
    Ok(())
}

/// Appends the `dtop_twin_state` line of an estimated state to `out`; returns the number of
/// lines appended (0 when no value is finite). On error `out` is left as it was.
pub fn encode_twin_state(
    out: &mut String,
    state: &TwinState,
    precision: Precision,
) -> Result<usize, EncodeError> {
    let ts = precision
        .from_ns(state.timestamp_ns)
        .ok_or(EncodeError::TimestampOutOfRange {
            sample: 0,
            ts_ns: u128::from(state.timestamp_ns),
        })?;
    let start = out.len();
    escape_measurement(out, TWIN_STATE_MEASUREMENT);
    out.push_str(",rig=");
    escape_key(out, &state.rig_id);
    let mut fields = 0;
    let mut field = |out: &mut String, name: std::fmt::Arguments<'_>, value: f64| {
        if !value.is_finite() {
            return;
        }
        out.push(if fields == 0 { ' ' } else { ',' });
        // Writing to a String cannot fail.
        let _ = out.write_fmt(name);
        out.push('=');
        write_float(out, value);
        fields += 1;
    };
    for f in &state.floors {
        let n = f.floor;
        field(
            out,
            format_args!("floor{n}_displacement_m"),
            f.displacement_m,
        );
        field(out, format_args!("floor{n}_velocity_m_s"), f.velocity_m_s);
    }
    if state.innovation_nis > 0.0 {
        field(out, format_args!("nis"), state.innovation_nis);
    }
    if fields == 0 {
        out.truncate(start);
        return Ok(0);
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {ts}");
    Ok(1)
}

/// A loss declaration the twin accounted: seqs `first_seq..=last_seq` the edge lost for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqLossRecord<'a> {
    pub rig: &'a str,
    pub first_seq: u64,
    pub last_seq: u64,
    pub blocks: u64,
    pub samples: u64,
    /// Metric label of the reason (`skipped`, `spool_full`, ...): no escaping needed.
    pub reason: &'a str,
    /// When the edge detected it, ns since the Unix epoch: the point's time.
    pub detected_at_ns: u64,
}

/// Appends the `dtop_seq_losses` line of a loss declaration. The `seqs` tag makes each range
/// its own series, so two ranges detected in the same instant never overwrite each other, and
/// a repeated declaration rewrites the same point.
pub fn encode_seq_loss(
    out: &mut String,
    record: &SeqLossRecord<'_>,
    precision: Precision,
) -> Result<usize, EncodeError> {
    let ts = precision
        .from_ns(record.detected_at_ns)
        .ok_or(EncodeError::TimestampOutOfRange {
            sample: 0,
            ts_ns: u128::from(record.detected_at_ns),
        })?;
    escape_measurement(out, SEQ_LOSSES_MEASUREMENT);
    out.push_str(",rig=");
    escape_key(out, record.rig);
    out.push_str(",reason=");
    escape_key(out, record.reason);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        ",seqs={first}-{last} first_seq={first}i,last_seq={last}i,blocks={}i,samples={}i {ts}",
        clamp_i64(record.blocks),
        clamp_i64(record.samples),
        first = clamp_i64(record.first_seq),
        last = clamp_i64(record.last_seq),
    );
    Ok(1)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn write_series_key(out: &mut String, measurement: &str, rig: &str, stream_id: u32) {
    escape_measurement(out, measurement);
    out.push_str(",rig=");
    escape_key(out, rig);
    // Writing to a String cannot fail.
    let _ = write!(out, ",stream={stream_id}");
}

/// Appends a measurement name, escaping commas and spaces.
pub fn escape_measurement(out: &mut String, name: &str) {
    for c in name.chars() {
        if matches!(c, ',' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a tag key, tag value or field key, escaping commas, equals signs and spaces.
///
/// Backslashes and newlines cannot be escaped reliably across InfluxDB versions; `ingest`
/// refuses channel names containing them, and rig ids cannot contain them.
pub fn escape_key(out: &mut String, key: &str) {
    for c in key.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a float field value that parses back to exactly `v`.
///
/// Rust's `{}` is the shortest round-trip form but never uses an exponent, so 1e300 would take
/// 301 digits; very large and very small magnitudes use `{:e}` (`1e300`, `1.5e-8`), which
/// InfluxDB and VictoriaMetrics both accept. Integral values print as `1`, a float to InfluxDB.
pub fn write_float(out: &mut String, v: f64) {
    let a = v.abs();
    // Writing to a String cannot fail.
    let _ = if a != 0.0 && !(1e-5..1e16).contains(&a) {
        write!(out, "{v:e}")
    } else {
        write!(out, "{v}")
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn header() -> BlockHeader<'static> {
        BlockHeader {
            rig: "so-3s",
            stream_id: 0,
            session: 7,
            seq: 42,
            first_sample_index: 1000,
            first_timestamp_ns: 1_700_000_000_000_000_000,
            sample_period_ns: 1_000_000,
            backfill: false,
        }
    }

    /// `floor1_accel` (0.01 per count) and `shaker_force` (0.5 per count, offset 1): one plain
    /// and one offset scaling, so the expected lines show both applied.
    fn make_columns<'a>(accel: &'a [i32], force: &'a [i32]) -> [Column<'a>; 2] {
        [
            Column {
                name: "floor1_accel",
                scale: 0.01,
                offset: 0.0,
                raw: accel,
            },
            Column {
                name: "shaker_force",
                scale: 0.5,
                offset: 1.0,
                raw: force,
            },
        ]
    }

    #[test]
    fn encodes_one_line_per_sample_and_one_audit_line() {
        let a = [100, -200, 0];
        let f = [1, 2, 3];
        let columns = make_columns(&a, &f);
        let mut out = String::new();
        let lines = encode_block(&mut out, &header(), &columns, Precision::Us).unwrap();
        assert_eq!(lines, 4);
        assert_eq!(
            out,
            "dtop_samples,rig=so-3s,stream=0 floor1_accel=1,shaker_force=1.5 1700000000000000\n\
             dtop_samples,rig=so-3s,stream=0 floor1_accel=-2,shaker_force=2 1700000000001000\n\
             dtop_samples,rig=so-3s,stream=0 floor1_accel=0,shaker_force=2.5 1700000000002000\n\
             dtop_blocks,rig=so-3s,stream=0 seq=42i,first_sample_index=1000i,samples=3i,sample_period_ns=1000000i,session=7i,backfill=false 1700000000000000\n"
        );
    }

    #[test]
    fn leaves_out_samples_the_edge_marked_as_having_no_value() {
        let no = dtop_proto::RAW_NO_VALUE;
        let a = [100, no, no];
        let f = [1, 2, no];
        let columns = make_columns(&a, &f);
        assert_eq!(columns[0].value(1), None);
        let mut out = String::new();
        let lines = encode_block(&mut out, &header(), &columns, Precision::Us).unwrap();
        assert_eq!(lines, 3);
        assert_eq!(
            out,
            "dtop_samples,rig=so-3s,stream=0 floor1_accel=1,shaker_force=1.5 1700000000000000\n\
             dtop_samples,rig=so-3s,stream=0 shaker_force=2 1700000000001000\n\
             dtop_blocks,rig=so-3s,stream=0 seq=42i,first_sample_index=1000i,samples=3i,sample_period_ns=1000000i,session=7i,backfill=false 1700000000000000\n"
        );
    }

    #[test]
    fn writes_nanosecond_timestamps_exactly() {
        let raw = [1, 2];
        let mut h = header();
        h.first_timestamp_ns = 1_700_000_000_000_000_123;
        h.sample_period_ns = 333;
        h.backfill = true;
        let mut out = String::new();
        encode_block(
            &mut out,
            &h,
            &[Column {
                name: "x",
                scale: 1.0,
                offset: 0.0,
                raw: &raw,
            }],
            Precision::Ns,
        )
        .unwrap();
        assert_eq!(
            out,
            "dtop_samples,rig=so-3s,stream=0 x=1 1700000000000000123\n\
             dtop_samples,rig=so-3s,stream=0 x=2 1700000000000000456\n\
             dtop_blocks,rig=so-3s,stream=0 seq=42i,first_sample_index=1000i,samples=2i,sample_period_ns=333i,session=7i,backfill=true 1700000000000000123\n"
        );
    }

    #[test]
    fn encodes_one_twin_state_line_per_state_and_skips_non_finite_values() {
        use dtop_proto::v1::FloorState;
        let floor = |floor, displacement_m, velocity_m_s| FloorState {
            floor,
            displacement_m,
            velocity_m_s,
            accel_rms_m_s2: 3.0,
        };
        let mut state = TwinState {
            rig_id: "so 3s".into(),
            timestamp_ns: 1_700_000_000_000_001_999,
            floors: vec![floor(1, 0.5, -0.25), floor(2, f64::NAN, 1.0)],
            innovation_nis: 1.5,
            ..Default::default()
        };
        let mut out = String::new();
        assert_eq!(encode_twin_state(&mut out, &state, Precision::Us), Ok(1));
        assert_eq!(
            out,
            "dtop_twin_state,rig=so\\ 3s floor1_displacement_m=0.5,floor1_velocity_m_s=-0.25,floor2_velocity_m_s=1,nis=1.5 1700000000000001\n"
        );
        state.floors.clear();
        state.innovation_nis = 0.0;
        let mut out = String::from("keep");
        assert_eq!(encode_twin_state(&mut out, &state, Precision::Ns), Ok(0));
        assert_eq!(out, "keep");
    }

    #[test]
    fn microsecond_precision_truncates_towards_the_past() {
        assert_eq!(Precision::Us.from_ns(1_999), Some(1));
        assert_eq!(Precision::Ns.from_ns(1_999), Some(1_999));
        assert_eq!(Precision::Ns.from_ns(u64::MAX), None);
    }

    #[test]
    fn escapes_commas_spaces_and_equals_in_keys() {
        let mut out = String::new();
        escape_key(&mut out, "a,b c=d");
        assert_eq!(out, r"a\,b\ c\=d");
        let mut out = String::new();
        escape_measurement(&mut out, "m e,a=s");
        assert_eq!(out, r"m\ e\,a=s");
        let raw = [1];
        let mut out = String::new();
        let mut h = header();
        h.rig = "r 1";
        encode_block(
            &mut out,
            &h,
            &[Column {
                name: "acc x,=",
                scale: 1.0,
                offset: 0.0,
                raw: &raw,
            }],
            Precision::Ns,
        )
        .unwrap();
        assert!(
            out.starts_with(
                "dtop_samples,rig=r\\ 1,stream=0 acc\\ x\\,\\==1 1700000000000000000\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn floats_round_trip_and_never_carry_the_integer_suffix() {
        let cases: [(f64, &str); 9] = [
            (1.0, "1"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (0.0, "0"),
            (1e300, "1e300"),
            (1.5e-8, "1.5e-8"),
            (123456.789, "123456.789"),
            (1e16, "1e16"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ];
        for (v, expected) in cases {
            let mut out = String::new();
            write_float(&mut out, v);
            assert_eq!(out, expected);
            assert!(!out.ends_with('i'));
            assert_eq!(out.parse::<f64>().unwrap(), v, "{out} does not round-trip");
        }
    }

    #[test]
    fn every_float_round_trips_through_its_text() {
        // Deterministic sweep over bit patterns, including subnormals and extremes.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            bits = bits
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = f64::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            let mut out = String::new();
            write_float(&mut out, v);
            assert_eq!(out.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{out}");
        }
    }

    #[test]
    fn refuses_ragged_empty_and_non_finite_blocks_without_touching_output() {
        let a = [1, 2];
        let b = [1];
        let mut out = String::from("keep\n");
        let ragged = [
            Column {
                name: "a",
                scale: 1.0,
                offset: 0.0,
                raw: &a,
            },
            Column {
                name: "b",
                scale: 1.0,
                offset: 0.0,
                raw: &b,
            },
        ];
        assert!(matches!(
            encode_block(&mut out, &header(), &ragged, Precision::Us),
            Err(EncodeError::Ragged {
                len: 1,
                expected: 2,
                ..
            })
        ));
        assert_eq!(
            encode_block(&mut out, &header(), &[], Precision::Us),
            Err(EncodeError::Empty)
        );
        let huge = [Column {
            name: "a",
            scale: f64::MAX,
            offset: 0.0,
            raw: &a,
        }];
        assert!(matches!(
            encode_block(&mut out, &header(), &huge, Precision::Us),
            Err(EncodeError::NonFinite { sample: 1, .. })
        ));
        assert_eq!(out, "keep\n");
    }

    #[test]
    fn refuses_timestamps_beyond_influxdb_range() {
        let a = [1, 2];
        let mut h = header();
        h.first_timestamp_ns = i64::MAX as u64;
        let mut out = String::new();
        assert!(matches!(
            encode_block(
                &mut out,
                &h,
                &[Column {
                    name: "a",
                    scale: 1.0,
                    offset: 0.0,
                    raw: &a
                }],
                Precision::Ns
            ),
            Err(EncodeError::TimestampOutOfRange { sample: 1, .. })
        ));
        assert!(out.is_empty());
    }
}
