//! Owns the `oma` study's result: the summary (the record's facts; each mode with its shape
//! per model floor, its spread across segments and orders, the FDD peak and EFDD estimate of
//! the same mode, and the model's nearest mode beside it; the FDD peaks) and the arrays (the
//! stabilisation diagram, the singular-value spectra, the mode shapes). Pure reshaping of one
//! chunk's identification plus the model's modal analysis; identifies nothing itself.

use dtop_dynamics::frf::{ModeSummary, modal_analysis};
use dtop_oma::{EfddEstimate, FddPeak, FddResult, IdentifiedMode, SegmentedMode};
use serde_json::{Value, json};

use crate::StudyError;
use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};

use super::ChunkOutput;
use super::params::Params;

/// An FDD peak is the same mode as an SSI mode when their frequencies differ by at most this
/// fraction (or by one spectral line, whichever is more). FDD's frequency is a line of the
/// Welch grid, off by up to half a line; the modes of a shear chain are tens of percent apart.
const FDD_MATCH_TOLERANCE: f64 = 0.05;

/// The study's result from the chunk's identification.
///
/// # Errors
/// [`StudyError::Invalid`] for a bad model; [`StudyError::Numerics`] if its modes cannot be
/// computed.
pub fn output(
    model: &ModelSpec,
    params: &Params,
    chunk: &ChunkOutput,
) -> Result<StudyOutput, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let analysis = modal_analysis(&building).map_err(|e| StudyError::Numerics(e.to_string()))?;
    let result = &chunk.result;
    let facts = &chunk.record;
    if result
        .modes
        .iter()
        .any(|m| m.shape.len() != facts.floors.len())
    {
        return Err(StudyError::BadChunk(
            "a mode shape does not have one entry per channel".into(),
        ));
    }
    let segment_seconds = params.fdd_segment_samples as f64 / facts.sample_rate_hz;
    let segments = result.segments.as_ref().map_or(0, |s| s.segments);
    let mut notes = Vec::new();
    let (mut confirmed, mut unconfirmed) = (Vec::new(), Vec::new());
    for (k, mode) in result.modes.iter().enumerate() {
        let segment = result
            .segments
            .as_ref()
            .and_then(|s| s.modes.iter().find(|m| m.mode == k));
        let peak = result.fdd.as_ref().and_then(|f| fdd_peak_of(mode, f));
        let efdd = peak.and_then(|p| p.efdd);
        let resolved = efdd.filter(|e| efdd_resolves(e, segment_seconds));
        if let (Some(e), None) = (efdd, resolved) {
            notes.push(format!(
                "EFDD's damping ratio {:.3e} at {:.3} Hz is left out: a decay from correlation \
                 {EFDD_FROM} to {EFDD_TO} at that damping takes longer than the \
                 {segment_seconds} s FDD segments, so the estimate is noise; raise \
                 params.fdd_segment_samples, or rely on SSI's damping",
                e.damping_ratio, e.frequency_hz
            ));
        }
        let found = segment.map_or(0, |s| s.found_in);
        let confirm =
            segments == 0 || found as f64 >= params.min_segment_fraction * segments as f64;
        if !confirm {
            notes.push(format!(
                "the mode at {:.3} Hz (damping ratio {:.3e}) was found in {found} of {segments} \
                 segments and is listed in unconfirmed_modes, not modes: a noise or \
                 computational mode, or one too weak for a segment; give a longer record, or \
                 lower params.min_segment_fraction to keep it",
                mode.frequency_hz, mode.damping_ratio
            ));
        } else if segments > 0 && found < 2 {
            notes.push(format!(
                "mode {} was found in {found} of {segments} segments, so its spread is \
                 unknown: give a longer record or fewer params.segments",
                confirmed.len() + 1
            ));
        }
        let list = if confirm {
            &mut confirmed
        } else {
            &mut unconfirmed
        };
        let json = mode_json(
            list.len() + 1,
            mode,
            segment,
            peak.map(|p| (p, resolved)),
            &facts.floors,
            model.floors(),
            &analysis.modes,
        );
        list.push((mode.clone(), json));
    }
    if confirmed.is_empty() {
        notes.push(
            "no mode was picked: give a longer record, raise params.max_order, or lower \
             params.pick_min_order_fraction (the stabilisation array shows every pole)"
                .to_owned(),
        );
    }
    let (confirmed_modes, modes): (Vec<IdentifiedMode>, Vec<Value>) = confirmed.into_iter().unzip();
    let unconfirmed_modes: Vec<Value> = unconfirmed.into_iter().map(|(_, j)| j).collect();
    let summary = json!({
        "record": facts,
        "modes": modes,
        "unconfirmed_modes": unconfirmed_modes,
        "fdd_peaks": result.fdd.as_ref().map(|f| f.peaks.iter().map(|p| peak_json(p, segment_seconds)).collect::<Vec<_>>()),
        "fdd_frequency_resolution_hz": result.fdd.as_ref().map(|f| f.frequency_resolution_hz),
        "fdd_segments_averaged": result.fdd.as_ref().map(|f| f.segments_averaged),
        "block_rows": result.ssi.block_rows,
        "orders": result.ssi.orders,
        "poles": result.ssi.poles.len(),
        "stable_poles": result.ssi.poles.iter().filter(|p| p.is_stable()).count(),
        "segments": result.segments.as_ref().map(|s| s.segments),
        "samples_per_segment": result.segments.as_ref().map(|s| s.samples_per_segment),
        "band_hz": [params.min_frequency_hz, params.max_frequency_hz.unwrap_or(0.5 * facts.sample_rate_hz)],
        "notes": notes,
    });
    let mut arrays = vec![stabilisation_array(result)];
    if let Some(fdd) = &result.fdd {
        arrays.push(fdd_array(fdd));
    }
    arrays.push(mode_shapes_array(&confirmed_modes, &facts.floors));
    Ok(StudyOutput::new(summary, arrays))
}

/// The FDD peak nearest `mode` in frequency, if within the match tolerance.
fn fdd_peak_of<'a>(mode: &IdentifiedMode, fdd: &'a FddResult) -> Option<&'a FddPeak> {
    let tolerance_hz = (FDD_MATCH_TOLERANCE * mode.frequency_hz).max(fdd.frequency_resolution_hz);
    fdd.peaks
        .iter()
        .filter(|p| (p.frequency_hz - mode.frequency_hz).abs() <= tolerance_hz)
        .min_by(|a, b| {
            (a.frequency_hz - mode.frequency_hz)
                .abs()
                .total_cmp(&(b.frequency_hz - mode.frequency_hz).abs())
        })
}

/// The correlation span EFDD fits its decay over (dtop-oma's defaults).
const EFDD_FROM: f64 = dtop_oma::efdd::default_max_correlation();
/// See [`EFDD_FROM`].
const EFDD_TO: f64 = dtop_oma::efdd::default_min_correlation();

/// Whether an EFDD estimate is consistent with its own premise: EFDD fits the decay of the
/// correlation from 0.9 to 0.3 within one Welch segment, so a damping ratio whose decay over
/// a whole segment, ζ·2πf·T, is less than ln(0.9/0.3) cannot have produced that drop, and the
/// extrema it fitted were shaped by the estimate's noise. A floor against nonsense, not a
/// guarantee of accuracy.
fn efdd_resolves(estimate: &EfddEstimate, segment_seconds: f64) -> bool {
    let decay =
        estimate.damping_ratio * std::f64::consts::TAU * estimate.frequency_hz * segment_seconds;
    decay >= (EFDD_FROM / EFDD_TO).ln()
}

/// One mode of the summary (see the module's doc), numbered `number` in its list; `peak` is
/// the FDD peak of the same mode with its EFDD estimate when that one is resolved.
fn mode_json(
    number: usize,
    mode: &IdentifiedMode,
    segment: Option<&SegmentedMode>,
    peak: Option<(&FddPeak, Option<EfddEstimate>)>,

    channel_floors: &[usize],
    model_floors: usize,
    model_modes: &[ModeSummary],
) -> Value {
    let mut shape: Vec<Option<f64>> = vec![None; model_floors];
    for (&floor, &value) in channel_floors.iter().zip(&mode.shape) {
        if let Some(slot) = shape.get_mut(floor.wrapping_sub(1)) {
            *slot = Some(value);
        }
    }
    let spread = segment.filter(|s| s.found_in >= 2);
    let nearest = model_modes.iter().min_by(|a, b| {
        (a.frequency_hz - mode.frequency_hz)
            .abs()
            .total_cmp(&(b.frequency_hz - mode.frequency_hz).abs())
    });
    let model = nearest.map(|m| {
        let at_sensors: Vec<f64> = channel_floors
            .iter()
            .map(|&f| m.shape.get(f.wrapping_sub(1)).copied().unwrap_or(0.0))
            .collect();
        json!({
            "model_mode": m.mode,
            "model_frequency_hz": m.frequency_hz,
            "model_damping_ratio": m.modal_damping_ratio,
            "frequency_error_percent": 100.0 * (mode.frequency_hz - m.frequency_hz) / m.frequency_hz,
            "damping_error_percent": (m.modal_damping_ratio > 0.0)
                .then(|| 100.0 * (mode.damping_ratio - m.modal_damping_ratio) / m.modal_damping_ratio),
            "mac": dtop_dynamics::mac(&mode.shape, &at_sensors),
        })
    });
    let efdd = peak.and_then(|(_, e)| e);
    let peak = peak.map(|(p, _)| p);
    let mut out = json!({
        "mode": number,
        "frequency_hz": mode.frequency_hz,
        "damping_ratio": mode.damping_ratio,
        "shape": shape,
        "mpc": mode.mpc,
        "frequency_std_hz": spread.map(|s| s.frequency_std_hz),
        "damping_ratio_std": spread.map(|s| s.damping_ratio_std),
        "found_in_segments": segment.map(|s| s.found_in),
        "frequency_std_across_orders_hz": mode.frequency_std_hz,
        "damping_ratio_std_across_orders": mode.damping_ratio_std,
        "orders_in_cluster": mode.orders.len(),
        "fdd_frequency_hz": peak.map(|p| p.frequency_hz),
        "fdd_mac": peak.and_then(|p| dtop_dynamics::mac(&mode.shape, &p.shape)),
        "efdd_frequency_hz": efdd.map(|e| e.frequency_hz),
        "fdd_damping_ratio": efdd.map(|e| e.damping_ratio),
    });
    if let (Some(Value::Object(extra)), Value::Object(map)) = (model, &mut out) {
        map.extend(extra);
    }
    out
}

/// One FDD peak of the summary, its EFDD estimate only when resolved (see
/// [`efdd_resolves`]).
fn peak_json(peak: &FddPeak, segment_seconds: f64) -> Value {
    let efdd = peak.efdd.filter(|e| efdd_resolves(e, segment_seconds));
    json!({
        "frequency_hz": peak.frequency_hz,
        "prominence_db": peak.prominence_db,
        "mpc": peak.mpc,
        "efdd_frequency_hz": efdd.map(|e| e.frequency_hz),
        "efdd_damping_ratio": efdd.map(|e| e.damping_ratio),
    })
}

fn column(name: impl Into<String>, values: Vec<f64>) -> Column {
    Column {
        name: name.into(),
        values,
    }
}

/// Every pole of every order: `order`, `frequency_hz`, `damping_ratio`, `stable` (1 when
/// stable in frequency, damping and shape).
fn stabilisation_array(result: &dtop_oma::OmaResult) -> NamedArray {
    let poles = &result.ssi.poles;
    NamedArray {
        name: "stabilisation".into(),
        columns: vec![
            column("order", poles.iter().map(|p| p.order as f64).collect()),
            column(
                "frequency_hz",
                poles.iter().map(|p| p.frequency_hz).collect(),
            ),
            column(
                "damping_ratio",
                poles.iter().map(|p| p.damping_ratio).collect(),
            ),
            column(
                "stable",
                poles
                    .iter()
                    .map(|p| if p.is_stable() { 1.0 } else { 0.0 })
                    .collect(),
            ),
        ],
    }
}

/// `frequency_hz`, then `sv1`, `sv2`, ... the singular values of the cross-spectral matrix,
/// (m/s²)²/Hz.
fn fdd_array(fdd: &FddResult) -> NamedArray {
    let mut columns = vec![column("frequency_hz", fdd.frequencies_hz.clone())];
    for (k, values) in fdd.singular_values.iter().enumerate() {
        columns.push(column(format!("sv{}", k + 1), values.clone()));
    }
    NamedArray {
        name: "fdd".into(),
        columns,
    }
}

/// `floor` (each floor with a sensor, ascending), then `mode1`, `mode2`, ... the unit-peak
/// shapes.
fn mode_shapes_array(modes: &[IdentifiedMode], channel_floors: &[usize]) -> NamedArray {
    let mut order: Vec<usize> = (0..channel_floors.len()).collect();
    order.sort_by_key(|&c| channel_floors[c]);
    let mut columns = vec![column(
        "floor",
        order.iter().map(|&c| channel_floors[c] as f64).collect(),
    )];
    for (k, mode) in modes.iter().enumerate() {
        columns.push(column(
            format!("mode{}", k + 1),
            order
                .iter()
                .map(|&c| mode.shape.get(c).copied().unwrap_or(0.0))
                .collect(),
        ));
    }
    NamedArray {
        name: "mode_shapes".into(),
        columns,
    }
}
