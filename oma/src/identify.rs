//! Owns the one-call operational modal analysis a study runs: SSI-cov over the orders, modes
//! picked from the stabilisation diagram, optionally their spread across data segments and
//! the FDD cross-check, all from one parameter set.

use serde::{Deserialize, Serialize};

use crate::cluster::{IdentifiedMode, ModePicking, pick_modes};
use crate::error::{OmaError, into_result};
use crate::fdd::{FddParams, FddResult, fdd};
use crate::record::record_problems;
use crate::segments::{SegmentParams, SegmentUncertainty, segment_uncertainty};
use crate::ssi::{MIN_SAMPLES_PER_BLOCK_ROW, SsiParams, SsiResult, ssi_cov};

/// Everything an operational modal analysis needs besides the data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmaParams {
    /// SSI-cov settings and the stability criteria.
    #[serde(default)]
    pub ssi: SsiParams,
    /// How stable poles become modes.
    #[serde(default)]
    pub picking: ModePicking,
    /// Spread across data segments; absent: not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentParams>,
    /// FDD cross-check; absent: not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdd: Option<FddParams>,
}

/// The result of [`identify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmaResult {
    /// The stabilisation diagram and what produced it.
    pub ssi: SsiResult,
    /// Modes picked from it, ascending in frequency, with their spread across orders.
    pub modes: Vec<IdentifiedMode>,
    /// Their spread across data segments, if asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentUncertainty>,
    /// The FDD cross-check, if asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdd: Option<FddResult>,
}

/// Identifies the modes of `channels` (one `Vec` per output channel) sampled at
/// `sample_rate_hz`.
///
/// # Errors
/// [`OmaError::Invalid`] listing every problem with the record and every parameter group at
/// once; [`OmaError::Numerical`] if a decomposition fails.
pub fn identify(
    channels: &[Vec<f64>],
    sample_rate_hz: f64,
    params: &OmaParams,
) -> Result<OmaResult, OmaError> {
    let samples = channels.first().map_or(0, Vec::len);
    let mut problems = record_problems(channels, sample_rate_hz);
    let prefixed = |prefix: &str, list: Vec<String>| -> Vec<String> {
        list.into_iter().map(|p| format!("{prefix}{p}")).collect()
    };
    problems.extend(prefixed(
        "ssi.",
        params.ssi.problems(channels.len(), samples),
    ));
    problems.extend(params.picking.problems("picking."));
    if let Some(segments) = &params.segments {
        problems.extend(segments.problems("segments."));
        let each = samples / segments.segments.max(1);
        let needed = MIN_SAMPLES_PER_BLOCK_ROW * params.ssi.block_rows;
        if segments.segments >= 2 && each < needed {
            problems.push(format!(
                "segments.segments = {} leaves {each} samples per segment but {} block rows \
                 need at least {needed}: use fewer segments or a longer record",
                segments.segments, params.ssi.block_rows
            ));
        }
    }
    if let Some(fdd_params) = &params.fdd {
        problems.extend(prefixed(
            "fdd.",
            fdd_params.problems(samples, sample_rate_hz),
        ));
    }
    into_result(problems)?;

    let ssi = ssi_cov(channels, sample_rate_hz, &params.ssi)?;
    let modes = pick_modes(&ssi.poles, &ssi.orders, &params.picking);
    let segments = params
        .segments
        .as_ref()
        .map(|segment_params| {
            segment_uncertainty(
                channels,
                sample_rate_hz,
                &modes,
                &params.ssi,
                &params.picking,
                segment_params,
            )
        })
        .transpose()?;
    let fdd = params
        .fdd
        .as_ref()
        .map(|fdd_params| fdd(channels, sample_rate_hz, fdd_params))
        .transpose()?;
    Ok(OmaResult {
        ssi,
        modes,
        segments,
        fdd,
    })
}
