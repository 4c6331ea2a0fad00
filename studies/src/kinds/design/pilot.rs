//! Owns `design`'s pilot: what is fixed before sampling, from the model at the inputs' means
//! (the nominal outputs, their delta-method spread, the histogram bins and the default
//! failure thresholds). Deterministic; draws nothing.

use super::eval::outputs;
use super::{Dist, Params};
use crate::StudyError;
use crate::chain::Scratch;

/// What is fixed before sampling, per output.
#[derive(Debug, Clone, PartialEq)]
pub struct Pilot {
    /// Output at the inputs' means.
    pub nominal: Vec<f64>,
    /// First-order (delta-method) standard deviation from the inputs' stds.
    pub std_lin: Vec<f64>,
    /// Left edge of the first histogram bin.
    pub lower: Vec<f64>,
    /// Bin width.
    pub width: Vec<f64>,
    /// Bins per output.
    pub bins: usize,
    /// Failure threshold.
    pub threshold: Vec<f64>,
}

/// The pilot: outputs at the means, their delta-method std by central differences (step
/// 1e-4·std of each random input), bins over nominal ± 6·std_lin (clamped at 0, since every
/// output is a magnitude), thresholds from the params or nominal + 3·std_lin.
///
/// # Errors
/// [`StudyError::Numerics`] if the nominal system cannot be solved.
pub fn pilot(floors: usize, params: &Params) -> Result<Pilot, StudyError> {
    let inputs = params.inputs();
    let o = params.outputs.len();
    let omega = std::f64::consts::TAU * params.frequency_hz;
    let mut u = Vec::new();
    let mut scratch = Scratch::default();
    let x0: Vec<f64> = inputs.iter().map(Dist::mean).collect();
    let mut nominal = vec![0.0; o];
    outputs(
        floors,
        &params.outputs,
        omega,
        &x0,
        &mut nominal,
        &mut u,
        &mut scratch,
    )?;
    let mut var = vec![0.0; o];
    let (mut yp, mut ym) = (vec![0.0; o], vec![0.0; o]);
    for (j, d) in inputs.iter().enumerate() {
        let sd = d.std();
        if sd <= 0.0 {
            continue;
        }
        let h = 1e-4 * sd;
        let mut x = x0.clone();
        x[j] = x0[j] + h;
        outputs(
            floors,
            &params.outputs,
            omega,
            &x,
            &mut yp,
            &mut u,
            &mut scratch,
        )?;
        x[j] = x0[j] - h;
        outputs(
            floors,
            &params.outputs,
            omega,
            &x,
            &mut ym,
            &mut u,
            &mut scratch,
        )?;
        for a in 0..o {
            let d = (yp[a] - ym[a]) / (2.0 * h) * sd;
            var[a] += d * d;
        }
    }
    let std_lin: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
    let bins = params.bins;
    let mut lower = Vec::with_capacity(o);
    let mut width = Vec::with_capacity(o);
    for a in 0..o {
        let lo = (nominal[a] - 6.0 * std_lin[a]).max(0.0);
        let mut hi = nominal[a] + 6.0 * std_lin[a];
        if hi.is_nan() || hi <= lo {
            hi = lo + (1e-9 * nominal[a].abs()).max(f64::MIN_POSITIVE * 1e3);
        }
        lower.push(lo);
        width.push((hi - lo) / bins as f64);
    }
    let threshold = match &params.thresholds {
        Some(t) => t.clone(),
        None => (0..o).map(|a| nominal[a] + 3.0 * std_lin[a]).collect(),
    };
    Ok(Pilot {
        nominal,
        std_lin,
        lower,
        width,
        bins,
        threshold,
    })
}
