//! Owns covariance-driven stochastic subspace identification (SSI-cov): output correlations,
//! their block Toeplitz matrix, its SVD, and per model order the state matrix A and output
//! matrix C, whose eigenvalues and eigenvectors give poles and complex mode shapes. Picking
//! modes out of the resulting stabilisation diagram is `cluster.rs`.
//!
//! Method (Peeters & De Roeck 1999; Reynders 2012, § 4): with y_t the centred outputs (l
//! channels) and r reference channels, R_k = E[y_{t+k} y_ref,tᵀ] (l × r) is estimated without
//! bias as (1/(N−k))·Σ_t y_{t+k} y_ref,tᵀ. The block Toeplitz matrix of i block rows,
//! T = [R_{i+p−q}] for p, q = 0..i−1 (lags 1 to 2i−1; R_0, which carries the measurement
//! noise, is never used), factors as O_i·C_ref with O_i = [C; CA; …; CA^{i−1}]. Its SVD
//! T = U·S·Vᵀ truncated at order n gives O = U_n·S_n^{1/2}, C = the first l rows of O, and
//! A = O↑⁺·O↓ (O without its last, resp. first, block row; least squares by SVD). Each
//! eigenpair (μ, ψ) of A gives λ = ln(μ)/Δt and the shape φ = C·ψ.

use nalgebra::{DMatrix, DVector, Schur};
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

use crate::error::{OmaError, into_result};
use crate::pole::{C64, continuous_pole, damping_ratio, natural_frequency_hz, shape_quality};
use crate::record::{centred, record_problems};
use crate::stabilisation::{StabilisedPole, StabilityCriteria, flag_stability};

/// A record must hold at least this many samples per block row: every correlation up to the
/// largest lag 2i−1 is then an average over at least 18·i + 1 products. It is a floor against
/// nonsense, not a guarantee of accuracy (that needs many periods of the slowest mode).
pub const MIN_SAMPLES_PER_BLOCK_ROW: usize = 20;

/// Iteration budget of each SVD and Schur decomposition, per row of the matrix; it only turns
/// a pathological matrix into an error instead of an endless loop.
const ITERATIONS_PER_ROW: usize = 1_000;

/// Default number of block rows i: lags up to 2i − 1 = 79 samples.
pub const fn default_block_rows() -> usize {
    40
}
/// Default lowest model order.
pub const fn default_min_order() -> usize {
    2
}
/// Default highest model order.
pub const fn default_max_order() -> usize {
    40
}

/// Parameters of an SSI-cov identification.
///
/// Choose `block_rows` so that 2i/fs covers at least about one period of the lowest mode of
/// interest (i ≥ fs / (2·f_min)), and `max_order` at least twice the number of modes expected
/// in the band, with margin for noise modes (orders are state dimensions: a mode takes two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsiParams {
    /// Channels (0-based indices) used as references: the columns of the correlations.
    /// Absent: all channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_channels: Option<Vec<usize>>,
    /// Number of block rows i of the Toeplitz matrix; at least 2.
    #[serde(default = "default_block_rows")]
    pub block_rows: usize,
    /// Lowest model order n (state dimension); at least 1.
    #[serde(default = "default_min_order")]
    pub min_order: usize,
    /// Highest model order; orders run from `min_order` in steps of 2 up to this one. At most
    /// min(r·i, l·(i−1)), the rank of the Toeplitz matrix and the rows of O↑.
    #[serde(default = "default_max_order")]
    pub max_order: usize,
    /// When a pole is physical and stable.
    #[serde(default)]
    pub stability: StabilityCriteria,
}

impl Default for SsiParams {
    fn default() -> Self {
        Self {
            reference_channels: None,
            block_rows: default_block_rows(),
            min_order: default_min_order(),
            max_order: default_max_order(),
            stability: StabilityCriteria::default(),
        }
    }
}

impl SsiParams {
    /// Every rule these parameters break on a record of `channels` channels and `samples`
    /// samples, as sentences with a suggestion.
    pub fn problems(&self, channels: usize, samples: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let i = self.block_rows;
        if i < 2 {
            problems.push(format!("block_rows = {i} must be at least 2"));
        }
        let references = self.references(channels);
        if let Some(list) = &self.reference_channels {
            if list.is_empty() {
                problems
                    .push("reference_channels is empty: leave it out to use all channels".into());
            }
            for (k, &c) in list.iter().enumerate() {
                if c >= channels {
                    problems.push(format!(
                        "reference_channels[{k}] = {c} is not a channel of a record with \
                         {channels} channels (0-based)"
                    ));
                }
                if list[..k].contains(&c) {
                    problems.push(format!("reference_channels lists channel {c} twice"));
                }
            }
        }
        if self.min_order < 1 {
            problems.push("min_order = 0 must be at least 1".into());
        }
        if self.max_order < self.min_order {
            problems.push(format!(
                "max_order = {} is below min_order = {}",
                self.max_order, self.min_order
            ));
        }
        let largest = (references.len() * i).min(channels * i.saturating_sub(1));
        if i >= 2 && channels > 0 && self.max_order > largest {
            problems.push(format!(
                "max_order = {} is above the Hankel size: with {channels} channels, {} \
                 references and {i} block rows the largest order is min(r·i, l·(i−1)) = \
                 {largest}; raise block_rows to at least {} or lower max_order",
                self.max_order,
                references.len(),
                self.max_order
                    .div_ceil(references.len().max(1))
                    .max(self.max_order.div_ceil(channels) + 1)
            ));
        }
        let needed = MIN_SAMPLES_PER_BLOCK_ROW * i;
        if channels > 0 && samples < needed {
            problems.push(format!(
                "block_rows = {i} needs at least {needed} samples \
                 ({MIN_SAMPLES_PER_BLOCK_ROW} per block row) but the record has {samples}: \
                 give a longer record or fewer block rows"
            ));
        }
        problems.extend(self.stability.problems("stability."));
        problems
    }

    /// The reference channels: the list given, or all `channels`.
    fn references(&self, channels: usize) -> Vec<usize> {
        self.reference_channels
            .clone()
            .unwrap_or_else(|| (0..channels).collect())
    }

    /// The model orders to evaluate.
    pub fn orders(&self) -> Vec<usize> {
        (self.min_order.max(1)..=self.max_order)
            .step_by(2)
            .collect()
    }
}

/// An SSI-cov identification: the stabilisation diagram's poles and what produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsiResult {
    /// Sample rate of the record, Hz.
    pub sample_rate_hz: f64,
    /// Number of channels l.
    pub channels: usize,
    /// Number of samples N per channel.
    pub samples: usize,
    /// Reference channels used, 0-based.
    pub reference_channels: Vec<usize>,
    /// Block rows i.
    pub block_rows: usize,
    /// Model orders evaluated, ascending.
    pub orders: Vec<usize>,
    /// Singular values of the block Toeplitz matrix, descending: a gap after 2·modes shows the
    /// system order.
    pub toeplitz_singular_values: Vec<f64>,
    /// Every pole of every order (one of each conjugate pair, Im μ > 0), by order then
    /// frequency, with its physical and stability flags.
    pub poles: Vec<StabilisedPole>,
}

/// Identifies poles and complex shapes of `channels` (one `Vec` per output channel, all of
/// equal length) sampled at `sample_rate_hz`, for every order of `params`, and flags them for
/// the stabilisation diagram.
///
/// # Errors
/// [`OmaError::Invalid`] listing every problem with the record and the parameters;
/// [`OmaError::Numerical`] if a decomposition does not converge.
pub fn ssi_cov(
    channels: &[Vec<f64>],
    sample_rate_hz: f64,
    params: &SsiParams,
) -> Result<SsiResult, OmaError> {
    let samples = channels.first().map_or(0, Vec::len);
    let mut problems = record_problems(channels, sample_rate_hz);
    problems.extend(params.problems(channels.len(), samples));
    into_result(problems)?;

    let l = channels.len();
    let i = params.block_rows;
    let references = params.references(l);
    let data = centred(channels);
    let toeplitz = block_toeplitz(&data, &references, i);
    let svd = toeplitz
        .try_svd(true, false, f64::EPSILON, ITERATIONS_PER_ROW * l * i)
        .ok_or_else(|| {
            OmaError::Numerical("SVD of the block Toeplitz matrix did not converge".into())
        })?;
    let u = svd
        .u
        .ok_or_else(|| OmaError::Numerical("SVD returned no left singular vectors".into()))?;
    let singular_values: Vec<f64> = svd.singular_values.iter().copied().collect();

    let dt_s = 1.0 / sample_rate_hz;
    let orders = params.orders();
    let mut poles = Vec::new();
    for &n in &orders {
        let (a, c) = system_matrices(&u, &singular_values, l, i, n)?;
        poles.extend(poles_of(&a, &c, n, dt_s)?);
    }
    flag_stability(&mut poles, &params.stability);
    Ok(SsiResult {
        sample_rate_hz,
        channels: l,
        samples,
        reference_channels: references,
        block_rows: i,
        orders,
        toeplitz_singular_values: singular_values,
        poles,
    })
}

/// Unbiased correlations R_k = (1/(N−k))·Σ_t y_{t+k}·y_ref,tᵀ for k = 0..=max_lag; entry
/// `[k][a * r + b]` is channel a against reference b.
///
/// Computed by FFT over blocks: for each block of B reference samples, the spectra of the
/// block and of the B + max_lag channel samples from the same start are multiplied and
/// summed; one inverse FFT per pair at the end gives every lag. The FFT length M ≥ B + max_lag
/// means no product wraps around, so the sums are the exact lagged products up to rounding;
/// it costs O(N·log M) per channel instead of O(N·max_lag) per pair.
pub(crate) fn output_correlations(
    data: &[Vec<f64>],
    references: &[usize],
    max_lag: usize,
) -> Vec<Vec<f64>> {
    let n = data.first().map_or(0, Vec::len);
    let l = data.len();
    let r = references.len();
    let mut out = vec![vec![0.0; l * r]; max_lag + 1];
    if n == 0 || r == 0 {
        return out;
    }
    let m = (8 * (max_lag + 1)).next_power_of_two().max(256);
    let block = m - max_lag;
    let mut planner = FftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(m);
    let inverse = planner.plan_fft_inverse(m);
    let zero = C64::new(0.0, 0.0);
    let mut sums = vec![vec![zero; m]; l * r];
    let mut long = vec![vec![zero; m]; l];
    let mut short = vec![vec![zero; m]; r];
    let fill = |buffer: &mut [C64], samples: &[f64]| {
        for (z, x) in buffer.iter_mut().zip(samples) {
            *z = C64::new(*x, 0.0);
        }
        for z in buffer.iter_mut().skip(samples.len()) {
            *z = zero;
        }
    };
    let mut start = 0;
    while start < n {
        let end_short = (start + block).min(n);
        let end_long = (start + block + max_lag).min(n);
        for (buffer, channel) in long.iter_mut().zip(data) {
            fill(buffer, &channel[start..end_long]);
            forward.process(buffer);
        }
        for (buffer, &reference) in short.iter_mut().zip(references) {
            fill(buffer, &data[reference][start..end_short]);
            forward.process(buffer);
        }
        for (a, x) in long.iter().enumerate() {
            for (b, y) in short.iter().enumerate() {
                for ((sum, p), q) in sums[a * r + b].iter_mut().zip(x).zip(y) {
                    *sum += p * q.conj();
                }
            }
        }
        start += block;
    }
    for (pair, sum) in sums.iter_mut().enumerate() {
        inverse.process(sum);
        for (k, row) in out.iter_mut().enumerate().take(n) {
            row[pair] = sum[k].re / (m as f64 * (n - k) as f64);
        }
    }
    out
}

/// The block Toeplitz matrix [R_{i+p−q}] (p, q = 0..i−1) of l·i rows and r·i columns.
fn block_toeplitz(data: &[Vec<f64>], references: &[usize], i: usize) -> DMatrix<f64> {
    let l = data.len();
    let r = references.len();
    let correlations = output_correlations(data, references, 2 * i - 1);
    DMatrix::from_fn(l * i, r * i, |row, col| {
        let (p, a) = (row / l, row % l);
        let (q, b) = (col / r, col % r);
        correlations[i + p - q][a * r + b]
    })
}

/// A (n × n) and C (l × n) of order n from the left singular vectors and singular values of
/// the Toeplitz matrix.
fn system_matrices(
    u: &DMatrix<f64>,
    singular_values: &[f64],
    l: usize,
    i: usize,
    n: usize,
) -> Result<(DMatrix<f64>, DMatrix<f64>), OmaError> {
    let mut observability = u.columns(0, n).into_owned();
    for (k, mut column) in observability.column_iter_mut().enumerate() {
        column *= singular_values[k].sqrt();
    }
    let c = observability.rows(0, l).into_owned();
    let upper = observability.rows(0, l * (i - 1)).into_owned();
    let lower = observability.rows(l, l * (i - 1)).into_owned();
    let svd = upper
        .try_svd(true, true, f64::EPSILON, ITERATIONS_PER_ROW * l * i)
        .ok_or_else(|| OmaError::Numerical(format!("SVD of O↑ at order {n} did not converge")))?;
    // Singular values below this are rounding noise of a rank-deficient O↑; treating them as
    // zero keeps A finite (the poles they would carry are noise anyway).
    let eps = svd.singular_values.max() * 1e-12;
    let a = svd
        .solve(&lower, eps)
        .map_err(|e| OmaError::Numerical(format!("least squares for A at order {n}: {e}")))?;
    Ok((a, c))
}

/// The poles of (A, C) with Im μ > 0, by ascending frequency, with unscaled flags.
fn poles_of(
    a: &DMatrix<f64>,
    c: &DMatrix<f64>,
    order: usize,
    dt_s: f64,
) -> Result<Vec<StabilisedPole>, OmaError> {
    if a.iter().any(|x| !x.is_finite()) {
        return Err(OmaError::Numerical(format!(
            "state matrix of order {order} has non-finite entries"
        )));
    }
    let schur = Schur::try_new(a.clone(), f64::EPSILON, ITERATIONS_PER_ROW * a.nrows())
        .ok_or_else(|| {
            OmaError::Numerical(format!("Schur form at order {order} did not converge"))
        })?;
    let complex_a = a.map(C64::from);
    let complex_c = c.map(C64::from);
    let mut poles = Vec::new();
    for mu in schur.complex_eigenvalues().iter().copied() {
        if mu.im <= 0.0 || mu.norm() == 0.0 {
            continue;
        }
        let Some(psi) = eigenvector(&complex_a, mu) else {
            continue;
        };
        let phi = &complex_c * psi;
        let Some(shape) = unit_peak(phi.as_slice()) else {
            continue;
        };
        let lambda = continuous_pole(mu, dt_s);
        let quality = shape_quality(&shape);
        poles.push(StabilisedPole {
            order,
            frequency_hz: natural_frequency_hz(lambda),
            damping_ratio: damping_ratio(lambda),
            shape_re: shape.iter().map(|z| z.re).collect(),
            shape_im: shape.iter().map(|z| z.im).collect(),
            mpc: quality.map_or(0.0, |q| q.mpc),
            mpd_deg: quality.map_or(90.0, |q| q.mpd_deg),
            physical: false,
            stable_frequency: false,
            stable_damping: false,
            stable_shape: false,
        });
    }
    poles.sort_by(|x, y| x.frequency_hz.total_cmp(&y.frequency_hz));
    Ok(poles)
}

/// The eigenvector of `a` for its eigenvalue `mu`, by two steps of inverse iteration with a
/// shift a hair off μ (so the solve is regular); `None` if the solves fail.
fn eigenvector(a: &DMatrix<C64>, mu: C64) -> Option<DVector<C64>> {
    let n = a.nrows();
    for nudge in [1e-10, 1e-7, 1e-4] {
        let shift = mu + C64::new(nudge, nudge) * mu.norm().max(1.0);
        let mut shifted = a.clone();
        for k in 0..n {
            shifted[(k, k)] -= shift;
        }
        let lu = shifted.lu();
        let start = DVector::from_fn(n, |k, _| C64::new(1.0, 0.1 * k as f64));
        let Some(mut x) = lu.solve(&start) else {
            continue;
        };
        let norm = x.norm();
        if !(norm.is_finite() && norm > 0.0) {
            continue;
        }
        x /= C64::from(norm);
        let Some(mut y) = lu.solve(&x) else { continue };
        let norm = y.norm();
        if norm.is_finite() && norm > 0.0 {
            y /= C64::from(norm);
            return Some(y);
        }
    }
    None
}

/// `shape` divided by its largest-magnitude entry, so that entry is 1 + 0i.
fn unit_peak(shape: &[C64]) -> Option<Vec<C64>> {
    let peak = shape
        .iter()
        .copied()
        .max_by(|x, y| x.norm_sqr().total_cmp(&y.norm_sqr()))?;
    let scaled: Vec<C64> = shape.iter().map(|z| z / peak).collect();
    (peak.norm() > 0.0 && scaled.iter().all(|z| z.re.is_finite() && z.im.is_finite()))
        .then_some(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_of_a_sine_match_the_closed_form() {
        // y = sin(ωt): (1/(N−k))·Σ sin(ω(t+k))·sin(ωt) → cos(ωk)/2 as the record grows; with
        // 10⁵ samples and a period not dividing N the end effect is O(1/N) = 1e-5.
        let w = 0.37;
        let y: Vec<f64> = (0..100_000).map(|t| (w * t as f64).sin()).collect();
        let r = output_correlations(&[y], &[0], 5);
        for (k, block) in r.iter().enumerate() {
            assert!(
                (block[0] - 0.5 * (w * k as f64).cos()).abs() < 1e-4,
                "lag {k}: {}",
                block[0]
            );
        }
    }

    #[test]
    fn fft_correlations_equal_the_direct_lagged_sums() {
        // Three channels of 5000 samples (not a multiple of the block), two references,
        // lags up to 37, against the definition summed term by term. Both sum the same ~5000
        // products of size ~1; the FFT path rounds differently, by ~1e-13 of their scale.
        let channel = |w: f64, p: f64| -> Vec<f64> {
            (0..5000)
                .map(|t| (w * t as f64 + p).sin() + 0.3 * (2.1 * w * t as f64).cos())
                .collect()
        };
        let data = vec![channel(0.31, 0.0), channel(0.17, 1.0), channel(0.53, 2.0)];
        let references = [2, 0];
        let max_lag = 37;
        let fast = output_correlations(&data, &references, max_lag);
        let n = 5000;
        for k in 0..=max_lag {
            for (a, ya) in data.iter().enumerate() {
                for (b, &rf) in references.iter().enumerate() {
                    let direct: f64 =
                        (0..n - k).map(|t| ya[t + k] * data[rf][t]).sum::<f64>() / (n - k) as f64;
                    let got = fast[k][a * references.len() + b];
                    assert!(
                        (got - direct).abs() < 1e-12,
                        "lag {k} ({a}, {b}): {got} vs {direct}"
                    );
                }
            }
        }
    }

    #[test]
    fn parameters_report_every_problem_with_the_suggested_fix() {
        let params = SsiParams {
            reference_channels: Some(vec![0, 3, 0]),
            block_rows: 10,
            min_order: 0,
            max_order: 40,
            stability: StabilityCriteria::default(),
        };
        let problems = params.problems(3, 150);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("reference_channels[1] = 3"));
        assert!(problems[1].contains("lists channel 0 twice"));
        assert!(problems[2].contains("min_order = 0"));
        assert!(
            problems[3].contains("above the Hankel size"),
            "{}",
            problems[3]
        );
        assert!(
            problems[4].contains("needs at least 200 samples"),
            "{}",
            problems[4]
        );
    }
}
