//! Owns the global rational-fraction fit: every channel's receptance over a band is fitted
//! by N_c(x)/D(x) with one common denominator, in Chebyshev polynomials of the band-mapped
//! frequency x ∈ [−1, 1]; the poles are the roots of D, the residues come from a second
//! linear least-squares fit (LSFD) with those poles. Knows nothing of windows or circles.
//!
//! The idea is Richardson & Formenti's (IMAC 1982): a rational FRF is linear in its
//! coefficients once multiplied out, N − H·D = 0, and an orthogonal basis keeps the linear
//! algebra well conditioned. They used Forsythe polynomials per channel; a common
//! denominator over several channels needs one basis for all, so this fit uses Chebyshev
//! polynomials in x (well conditioned on [−1, 1], where the power basis' conditioning
//! degrades exponentially with the order) with complex coefficients, eliminates each
//! channel's numerator by projection, and takes D as the least singular vector of the
//! stacked residual operator (total least squares, no coefficient forced to 1). A real
//! system's receptance is rational in s = jω = j(ω_c + ω_h·x) of degree 2m over at most
//! 2m − 2 for m modes, so with a denominator degree of at least 2m (all the structure's
//! modes, in the band or not) the fit of noise-free data is exact; with fewer, the spare
//! poles and the residual terms absorb the out-of-band modes approximately.

use std::f64::consts::TAU;

use nalgebra::{DMatrix, DVector, Schur};
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};
use crate::identified::IdentifiedMode;
use crate::measured::{C64, MeasuredFrf};

/// Default largest damping ratio of a pole accepted as a mode: structural modes of a
/// shear frame are damped far below 20 %; computational poles that soak up noise or
/// out-of-band residues are often damped more.
pub const fn default_max_damping_ratio() -> f64 {
    0.2
}

/// Highest denominator degree accepted: far beyond any band of a few storeys' modes, and the
/// colleague matrix' eigenvalues stay accurate well past it.
pub const MAX_DENOMINATOR_ORDER: usize = 60;

/// Parameters of the rational-fraction fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RationalFitParams {
    /// Lower end of the band, in Hz (positive).
    pub f_min_hz: f64,
    /// Upper end of the band, in Hz.
    pub f_max_hz: f64,
    /// Number of modes to report: the physical poles in the band with the largest modal
    /// contributions.
    pub modes: usize,
    /// Degree of the common denominator; 2·modes + 2 when absent (two spare poles to absorb
    /// the out-of-band modes' tails and noise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_order: Option<usize>,
    /// Poles damped more than this are not modes.
    #[serde(default = "default_max_damping_ratio")]
    pub max_damping_ratio: f64,
}

impl RationalFitParams {
    /// A fit of `modes` modes in `f_min_hz..=f_max_hz` with the defaults.
    pub fn band(f_min_hz: f64, f_max_hz: f64, modes: usize) -> Self {
        Self {
            f_min_hz,
            f_max_hz,
            modes,
            denominator_order: None,
            max_damping_ratio: default_max_damping_ratio(),
        }
    }

    fn order(&self) -> usize {
        self.denominator_order.unwrap_or(2 * self.modes + 2)
    }

    /// Every rule these parameters break.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.f_min_hz.is_finite() && self.f_min_hz > 0.0) {
            problems.push(format!(
                "f_min_hz = {} must be positive and finite",
                self.f_min_hz
            ));
        }
        if !(self.f_max_hz.is_finite() && self.f_max_hz > self.f_min_hz) {
            problems.push(format!(
                "f_max_hz = {} must be finite and above f_min_hz = {}",
                self.f_max_hz, self.f_min_hz
            ));
        }
        if self.modes == 0 {
            problems.push("modes must be at least 1".into());
        }
        let order = self.order();
        if order < 2 * self.modes {
            problems.push(format!(
                "denominator_order = {order} cannot hold {} modes: each needs a conjugate pair, \
                 so the order must be at least {}",
                self.modes,
                2 * self.modes
            ));
        }
        if order > MAX_DENOMINATOR_ORDER {
            problems.push(format!(
                "denominator_order = {order} is above {MAX_DENOMINATOR_ORDER}"
            ));
        }
        if !(self.max_damping_ratio > 0.0 && self.max_damping_ratio < 1.0) {
            problems.push(format!(
                "max_damping_ratio = {} must lie in (0, 1)",
                self.max_damping_ratio
            ));
        }
        problems
    }
}

/// A pole of the fitted denominator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoleEstimate {
    /// Undamped natural frequency |λ|/2π, in Hz.
    pub natural_frequency_hz: f64,
    /// −Re λ / |λ|.
    pub damping_ratio: f64,
}

/// Result of the rational-fraction fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RationalFitResult {
    /// The modes, ascending in frequency.
    pub modes: Vec<IdentifiedMode>,
    /// Every stable, lightly damped pole found in the band (modes and computational poles).
    pub candidate_poles: Vec<PoleEstimate>,
    /// Denominator degree used.
    pub denominator_order: usize,
    /// Frequency lines fitted.
    pub lines: usize,
    /// ‖α − α̂‖/‖α‖ over all channels (lines weighted by coherence when the data has it) of
    /// the receptance rebuilt from the reported modes and the residual terms: the share of
    /// the data the modal model does not explain.
    pub misfit_relative: f64,
}

/// Rational-fraction fit of every channel of `frf` together over a band.
///
/// # Errors
/// [`CalibrateError::Invalid`] for bad parameters, data without phase, or fewer lines in the
/// band than unknowns; [`CalibrateError::NotIdentifiable`] when fewer physical poles than
/// `modes` are found; [`CalibrateError::Numerical`] when a decomposition fails.
pub fn rational_fraction_fit(
    frf: &MeasuredFrf,
    params: &RationalFitParams,
) -> Result<RationalFitResult, CalibrateError> {
    let mut problems = frf.problems();
    problems.extend(params.problems());
    let Some(data) = frf.complex() else {
        problems.push(
            "the rational-fraction fit needs complex FRFs; a magnitude-only (dB) file has no \
             phase"
                .into(),
        );
        return Err(CalibrateError::Invalid(problems));
    };
    check(problems)?;
    let order = params.order();
    let lines: Vec<usize> = (0..frf.frequencies_hz.len())
        .filter(|&i| {
            let f = frf.frequencies_hz[i];
            f > 0.0 && f >= params.f_min_hz && f <= params.f_max_hz
        })
        .collect();
    // Unknowns per channel: order + 1 numerator coefficients, plus the shared denominator.
    let needed = 2 * (order + 1) + 1;
    if lines.len() < needed {
        return Err(CalibrateError::Invalid(vec![format!(
            "the band {}..={} Hz holds {} lines; a denominator of order {order} needs at \
             least {needed}: widen the band or lower the order",
            params.f_min_hz,
            params.f_max_hz,
            lines.len()
        )]));
    }
    let omegas: Vec<f64> = lines.iter().map(|&i| TAU * frf.frequencies_hz[i]).collect();
    // Receptance α = −H/ω², scaled per channel to unit RMS so each channel weighs the same.
    let mut receptance: Vec<Vec<C64>> = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(data.len());
    for channel in data {
        let alpha: Vec<C64> = lines
            .iter()
            .zip(&omegas)
            .map(|(&i, w)| -channel[i] / (w * w))
            .collect();
        let rms = (alpha.iter().map(|a| a.norm_sqr()).sum::<f64>() / alpha.len() as f64).sqrt();
        if rms.is_nan() || rms <= 0.0 {
            return Err(CalibrateError::NotIdentifiable(
                "a channel is zero over the whole band".into(),
            ));
        }
        scales.push(rms);
        receptance.push(alpha.iter().map(|a| a / rms).collect());
    }
    let (w_lo, w_hi) = (omegas[0], omegas[omegas.len() - 1]);
    let (w_c, w_h) = (0.5 * (w_lo + w_hi), 0.5 * (w_hi - w_lo));
    let x: Vec<f64> = omegas.iter().map(|w| (w - w_c) / w_h).collect();
    let weights = line_weights(frf, &lines);
    let denominator = common_denominator(&x, &receptance, &weights, order)?;
    let roots = chebyshev_roots(&denominator)?;

    let mut candidates: Vec<C64> = roots
        .iter()
        .map(|r| {
            // x = (ω − ω_c)/ω_h at the complex ω = −jλ, so λ = j(ω_c + ω_h·x).
            C64::new(0.0, 1.0) * (r * w_h + w_c)
        })
        .filter(|l| {
            let zeta = -l.re / l.norm();
            l.im >= w_lo && l.im <= w_hi && zeta > 0.0 && zeta < params.max_damping_ratio
        })
        .collect();
    candidates.sort_by(|a, b| a.im.total_cmp(&b.im));
    let candidate_poles: Vec<PoleEstimate> = candidates.iter().map(|l| pole_estimate(*l)).collect();
    if candidates.len() < params.modes {
        return Err(CalibrateError::NotIdentifiable(format!(
            "found {} stable poles with ζ < {} in {}..={} Hz, fewer than the {} modes asked \
             for: raise denominator_order, widen the band or ask for fewer modes (data in \
             the e^{{−jωt}} convention has its poles mirrored: use MeasuredFrf::conjugated)",
            candidates.len(),
            params.max_damping_ratio,
            params.f_min_hz,
            params.f_max_hz,
            params.modes
        )));
    }
    // Rank the candidates by their peak contribution |A|/(2ζω²) summed over the (unit-RMS)
    // channels; computational poles get small residues.
    let all = residues(&omegas, &receptance, &weights, &candidates)?;
    let mut score: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(r, l)| {
            let p = pole_estimate(*l);
            let w = TAU * p.natural_frequency_hz;
            let peak: f64 = all
                .constants
                .iter()
                .map(|c| c[r].norm() / (2.0 * p.damping_ratio * w * w))
                .sum();
            (peak, r)
        })
        .collect();
    score.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<C64> = score
        .iter()
        .take(params.modes)
        .map(|&(_, r)| candidates[r])
        .collect();
    chosen.sort_by(|a, b| a.im.total_cmp(&b.im));
    let fit = residues(&omegas, &receptance, &weights, &chosen)?;
    let modes = chosen
        .iter()
        .enumerate()
        .map(|(r, l)| {
            let p = pole_estimate(*l);
            IdentifiedMode {
                natural_frequency_hz: p.natural_frequency_hz,
                natural_frequency_std_hz: None,
                damping_ratio: p.damping_ratio,
                damping_ratio_std: None,
                modal_constants_per_kg: fit
                    .constants
                    .iter()
                    .zip(&scales)
                    .map(|(c, s)| [c[r].re * s, c[r].im * s])
                    .collect(),
            }
        })
        .collect::<Vec<_>>();
    crate::identified::ensure_finite(&modes, "the rational-fraction fit")?;
    Ok(RationalFitResult {
        modes,
        candidate_poles,
        denominator_order: order,
        lines: lines.len(),
        misfit_relative: fit.misfit_relative,
    })
}

fn pole_estimate(lambda: C64) -> PoleEstimate {
    let magnitude = lambda.norm();
    PoleEstimate {
        natural_frequency_hz: magnitude / TAU,
        damping_ratio: -lambda.re / magnitude,
    }
}

/// Chebyshev polynomials T_0..T_n at every x, as an F × (n + 1) matrix.
fn chebyshev_basis(x: &[f64], n: usize) -> DMatrix<f64> {
    let mut p = DMatrix::zeros(x.len(), n + 1);
    for (i, &xi) in x.iter().enumerate() {
        p[(i, 0)] = 1.0;
        if n >= 1 {
            p[(i, 1)] = xi;
        }
        for k in 2..=n {
            p[(i, k)] = 2.0 * xi * p[(i, k - 1)] - p[(i, k - 2)];
        }
    }
    p
}

/// Largest coherence used in a weight: γ² = 1 would give an infinite weight.
const MAX_WEIGHTED_COHERENCE: f64 = 0.9999;

/// Weight of each channel's line: √(γ²/(1 − γ²)), the inverse of the relative standard
/// deviation of an H1 estimate (Bendat & Piersol, *Random Data*, § 9.2: var|H1|/|H1|² ∝
/// (1 − γ²)/γ²) up to the number of averages, which is common to all lines; 1 without
/// coherence.
fn line_weights(frf: &MeasuredFrf, lines: &[usize]) -> Vec<Vec<f64>> {
    (0..frf.channels())
        .map(|c| {
            lines
                .iter()
                .map(|&i| match &frf.coherence {
                    Some(g) => {
                        let g = g[c][i].clamp(0.0, MAX_WEIGHTED_COHERENCE);
                        (g / (1.0 - g)).sqrt()
                    }
                    None => 1.0,
                })
                .collect()
        })
        .collect()
}

/// The denominator coefficients d (Chebyshev, complex, unit norm after column scaling) that
/// minimise Σ_c ‖(I − Q_cQ_cᵀ)·W_c·diag(α_c)·P·d‖², W_c the channel's line weights and Q_c an
/// orthonormal basis of its weighted numerator space W_c·P.
fn common_denominator(
    x: &[f64],
    receptance: &[Vec<C64>],
    weights: &[Vec<f64>],
    order: usize,
) -> Result<Vec<C64>, CalibrateError> {
    let f = x.len();
    let p = chebyshev_basis(x, order);
    let mut stacked = DMatrix::<C64>::zeros(f * receptance.len(), order + 1);
    for (c, (alpha, weight)) in receptance.iter().zip(weights).enumerate() {
        let mut pw = p.clone();
        for (i, wi) in weight.iter().enumerate() {
            pw.row_mut(i).scale_mut(*wi);
        }
        let qc = pw.clone().qr().q().map(C64::from);
        let mut w = pw.map(C64::from);
        for (i, a) in alpha.iter().enumerate() {
            for k in 0..=order {
                w[(i, k)] *= a;
            }
        }
        let projected = &w - &qc * (qc.adjoint() * &w);
        stacked
            .view_mut((c * f, 0), (f, order + 1))
            .copy_from(&projected);
    }
    let column_scale: Vec<f64> = (0..=order)
        .map(|k| {
            let n = stacked.column(k).norm();
            if n > 0.0 { 1.0 / n } else { 1.0 }
        })
        .collect();
    for (k, s) in column_scale.iter().enumerate() {
        stacked.column_mut(k).scale_mut(*s);
    }
    let svd = stacked.svd(false, true);
    let v_t = svd
        .v_t
        .ok_or_else(|| CalibrateError::Numerical("SVD without V".into()))?;
    let smallest = svd
        .singular_values
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .ok_or_else(|| CalibrateError::Numerical("empty SVD".into()))?;
    // Rows of Vᴴ are the conjugated right singular vectors.
    Ok((0..=order)
        .map(|k| v_t[(smallest, k)].conj() * column_scale[k])
        .collect())
}

/// Roots of Σ c_k·T_k(x) as the eigenvalues of the colleague matrix (Good 1961), after
/// dropping leading coefficients that are zero to rounding.
fn chebyshev_roots(coefficients: &[C64]) -> Result<Vec<C64>, CalibrateError> {
    let largest = coefficients.iter().map(|c| c.norm()).fold(0.0, f64::max);
    let mut n = coefficients.len() - 1;
    while n > 0 && coefficients[n].norm() <= 1e-13 * largest {
        n -= 1;
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let lead = coefficients[n];
    let mut colleague = DMatrix::<C64>::zeros(n, n);
    if n == 1 {
        colleague[(0, 0)] = -coefficients[0] / lead;
    } else {
        colleague[(0, 1)] = C64::from(1.0);
        for k in 1..n - 1 {
            colleague[(k, k - 1)] = C64::from(0.5);
            colleague[(k, k + 1)] = C64::from(0.5);
        }
        // x·T_{n−1} = (T_{n−2} + T_n)/2 with T_n = −Σ_{j<n} c_j T_j / c_n.
        for j in 0..n {
            colleague[(n - 1, j)] = -coefficients[j] / (lead * 2.0);
        }
        colleague[(n - 1, n - 2)] += C64::from(0.5);
    }
    let schur = Schur::try_new(colleague, f64::EPSILON, 1000 * n).ok_or_else(|| {
        CalibrateError::Numerical("colleague-matrix Schur did not converge".into())
    })?;
    let (_, t) = schur.unpack();
    Ok((0..n).map(|i| t[(i, i)]).collect())
}

struct Residues {
    /// constants[c][r]: modal constant A = 2jω_d·R of pole r at channel c (unit-RMS scale).
    constants: Vec<Vec<C64>>,
    misfit_relative: f64,
}

/// Least-squares residues of fixed poles: per channel,
/// α(ω) ≈ Σ_r [R_r/(jω − λ_r) + R_r*/(jω − λ_r*)] + u + l/ω², with R_r complex and the
/// upper (u) and lower (l/ω²) residual terms real: the form of a real system's receptance
/// with modes above and below the band.
fn residues(
    omegas: &[f64],
    receptance: &[Vec<C64>],
    weights: &[Vec<f64>],
    poles: &[C64],
) -> Result<Residues, CalibrateError> {
    let f = omegas.len();
    let m = poles.len();
    let unknowns = 2 * m + 2;
    let mut basis = DMatrix::<f64>::zeros(2 * f, unknowns);
    for (i, &w) in omegas.iter().enumerate() {
        let s = C64::new(0.0, w);
        for (r, l) in poles.iter().enumerate() {
            let a = C64::from(1.0) / (s - l);
            let b = C64::from(1.0) / (s - l.conj());
            // R = u + jv: R·a + R*·b = u·(a + b) + v·j(a − b).
            let cu = a + b;
            let cv = C64::new(0.0, 1.0) * (a - b);
            basis[(2 * i, 2 * r)] = cu.re;
            basis[(2 * i + 1, 2 * r)] = cu.im;
            basis[(2 * i, 2 * r + 1)] = cv.re;
            basis[(2 * i + 1, 2 * r + 1)] = cv.im;
        }
        basis[(2 * i, 2 * m)] = 1.0;
        basis[(2 * i, 2 * m + 1)] = 1.0 / (w * w);
    }
    let mut constants = Vec::with_capacity(receptance.len());
    let (mut misfit, mut total) = (0.0, 0.0);
    for (alpha, weight) in receptance.iter().zip(weights) {
        let mut weighted = basis.clone();
        for (i, wi) in weight.iter().enumerate() {
            weighted.row_mut(2 * i).scale_mut(*wi);
            weighted.row_mut(2 * i + 1).scale_mut(*wi);
        }
        let column_scale: Vec<f64> = (0..unknowns)
            .map(|k| {
                let n = weighted.column(k).norm();
                if n > 0.0 { 1.0 / n } else { 1.0 }
            })
            .collect();
        for (k, s) in column_scale.iter().enumerate() {
            weighted.column_mut(k).scale_mut(*s);
        }
        let rhs = DVector::from_iterator(
            2 * f,
            alpha
                .iter()
                .zip(weight)
                .flat_map(|(a, wi)| [a.re * wi, a.im * wi]),
        );
        let solution = weighted
            .clone()
            .svd(true, true)
            .solve(&rhs, 1e-14)
            .map_err(|e| CalibrateError::Numerical(format!("residue fit: {e}")))?;
        misfit += (&weighted * &solution - &rhs).norm_squared();
        total += rhs.norm_squared();
        let coefficient = |k: usize| solution[k] * column_scale[k];
        constants.push(
            poles
                .iter()
                .enumerate()
                .map(|(r, l)| {
                    let residue = C64::new(coefficient(2 * r), coefficient(2 * r + 1));
                    C64::new(0.0, 2.0 * l.im) * residue
                })
                .collect(),
        );
    }
    Ok(Residues {
        constants,
        misfit_relative: (misfit / total).sqrt(),
    })
}
