//! Owns the Monte Carlo part of `uncertainty`: samples uniform in the parameter box, one random
//! stream per block of [`super::BLOCK_SAMPLES`] samples, and per (frequency, floor) the min,
//! max, sum and a fixed-edge histogram of log10(|u| / |u_nominal|), all mergeable in chunk
//! order. Knows nothing about bounds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{BLOCK_SAMPLES, Setup};
use crate::chain::{C64, Scratch};
use crate::{ChunkCtx, StudyError, chunk_seed};

/// Histogram bins per (frequency, floor), over log10(|u|/|u_nominal|) ∈ [−LOG_SPAN, LOG_SPAN];
/// values outside fall in an under- or overflow count.
pub const BINS: usize = 64;
/// 1 / (2 ln 10).
const HALF_INV_LN10: f64 = 0.5 / std::f64::consts::LN_10;

/// Half-span of the histogram in decades.
pub const LOG_SPAN: f64 = 1.0;

/// One chunk's statistics (or the merge of several), per (frequency, floor), frequency-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McChunk {
    /// Samples counted.
    pub samples: u64,
    /// |u| at the box midpoint, m/N: the histograms' reference.
    pub nominal_m: Vec<f64>,
    /// Smallest |u| seen, m/N.
    pub min_m: Vec<f64>,
    /// Largest |u| seen, m/N.
    pub max_m: Vec<f64>,
    /// Sum of |u|, m/N.
    pub sum_m: Vec<f64>,
    /// Counts, `BINS` per point.
    pub histogram: Vec<u64>,
    /// Samples below the histogram, per point.
    pub under: Vec<u64>,
    /// Samples above the histogram, per point.
    pub over: Vec<u64>,
}

impl McChunk {
    /// No samples yet, for `cells` points.
    pub fn empty(cells: usize) -> Self {
        Self {
            samples: 0,
            nominal_m: Vec::new(),
            min_m: vec![f64::INFINITY; cells],
            max_m: vec![f64::NEG_INFINITY; cells],
            sum_m: vec![0.0; cells],
            histogram: vec![0; cells * BINS],
            under: vec![0; cells],
            over: vec![0; cells],
        }
    }

    /// Adds `other` (the next chunk, in chunk order).
    ///
    /// # Errors
    /// A message when the shapes or references differ.
    pub fn merge(&mut self, other: &McChunk) -> Result<(), String> {
        let cells = self.sum_m.len();
        if other.sum_m.len() != cells
            || other.min_m.len() != cells
            || other.max_m.len() != cells
            || other.histogram.len() != cells * BINS
            || other.under.len() != cells
            || other.over.len() != cells
        {
            return Err("Monte Carlo chunk has the wrong size".into());
        }
        if self.nominal_m.is_empty() {
            self.nominal_m.clone_from(&other.nominal_m);
        } else if self.nominal_m != other.nominal_m {
            return Err("Monte Carlo chunks disagree on the nominal response".into());
        }
        self.samples += other.samples;
        for c in 0..cells {
            self.min_m[c] = self.min_m[c].min(other.min_m[c]);
            self.max_m[c] = self.max_m[c].max(other.max_m[c]);
            self.sum_m[c] += other.sum_m[c];
            self.under[c] += other.under[c];
            self.over[c] += other.over[c];
        }
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
        Ok(())
    }

    /// Percentile envelopes (fractions `qs`, e.g. 0.05), per point: interpolated in log space
    /// within the bin holding the rank; clamped to [min, max]; NaN without samples.
    pub fn percentiles(&self, qs: &[f64]) -> Vec<Vec<f64>> {
        let cells = self.sum_m.len();
        let width = 2.0 * LOG_SPAN / BINS as f64;
        qs.iter()
            .map(|&q| {
                (0..cells)
                    .map(|c| {
                        if self.samples == 0 || self.nominal_m.len() != cells {
                            return f64::NAN;
                        }
                        let target = q * self.samples as f64;
                        let mut cum = self.under[c] as f64;
                        if target <= cum {
                            return self.min_m[c];
                        }
                        for b in 0..BINS {
                            let count = self.histogram[c * BINS + b] as f64;
                            if count > 0.0 && target <= cum + count {
                                let frac = (target - cum) / count;
                                let log = -LOG_SPAN + width * (b as f64 + frac);
                                let v = self.nominal_m[c] * 10f64.powf(log);
                                return v.clamp(self.min_m[c], self.max_m[c]);
                            }
                            cum += count;
                        }
                        self.max_m[c]
                    })
                    .collect()
            })
            .collect()
    }
}

/// Runs samples `first .. first + count` (whole blocks except at the end of the study).
/// Checks `ctx` between samples.
///
/// # Errors
/// [`StudyError::Cancelled`]; [`StudyError::Numerics`] on a singular or non-finite response.
pub fn run(
    setup: &Setup,
    seed: u64,
    first: u64,
    count: u64,
    ctx: &ChunkCtx<'_>,
) -> Result<McChunk, StudyError> {
    let n = setup.floors;
    let freqs = setup.frequencies_hz.len();
    let cells = freqs * n;
    let omegas: Vec<f64> = setup
        .frequencies_hz
        .iter()
        .map(|f| std::f64::consts::TAU * f)
        .collect();
    let mut out = McChunk::empty(cells);
    let mut u = Vec::with_capacity(n);
    let mut scratch = Scratch::default();
    let mid: Vec<f64> = setup
        .lo
        .iter()
        .zip(&setup.hi)
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    out.nominal_m.reserve(cells);
    for &w in &omegas {
        setup
            .chain(&mid)
            .solve_unit_force(w, setup.force_floor, &mut u, &mut scratch)
            .map_err(|e| StudyError::Numerics(e.to_string()))?;
        out.nominal_m.extend(u.iter().map(|z| z.norm()));
    }
    let inv_ref: Vec<f64> = out.nominal_m.iter().map(|v| v.log10()).collect();
    let scale = BINS as f64 / (2.0 * LOG_SPAN);
    let np = setup.params();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Draw every sample of the chunk first (sample-major, in stream order), then sweep the
    // frequencies in the outer loop so each point's histogram stays in cache.
    let count_us = usize::try_from(count)
        .map_err(|_| StudyError::Numerics("chunk too large for this machine".into()))?;
    let mut drawn = vec![0.0; count_us * np];
    for (si, s) in (first..first + count).enumerate() {
        if s == first || s % BLOCK_SAMPLES == 0 {
            let block = u32::try_from(s / BLOCK_SAMPLES)
                .map_err(|_| StudyError::Numerics("too many Monte Carlo blocks".into()))?;
            rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, block));
        }
        let row = &mut drawn[si * np..(si + 1) * np];
        for ((v, lo), hi) in row.iter_mut().zip(&setup.lo).zip(&setup.hi) {
            let t: f64 = rng.random();
            *v = lo + (hi - lo) * t;
        }
    }
    // Per sample: masses, diagonal stiffness and damping sums, storey stiffness and damping.
    let mut pre = vec![0.0; count_us * 5 * n];
    for si in 0..count_us {
        let p = &drawn[si * np..(si + 1) * np];
        let q = &mut pre[si * 5 * n..(si + 1) * 5 * n];
        for i in 0..n {
            let (k_up, c_up) = if i + 1 < n {
                (p[n + i + 1], p[2 * n + i + 1])
            } else {
                (0.0, 0.0)
            };
            q[i] = p[i];
            q[n + i] = p[n + i] + k_up;
            q[2 * n + i] = p[2 * n + i] + c_up;
            q[3 * n + i] = p[n + i];
            q[4 * n + i] = p[2 * n + i];
        }
    }
    let zero = C64::new(0.0, 0.0);
    let (mut diag, mut rhs, mut inv) = (vec![zero; n], vec![zero; n], vec![zero; n]);
    let mut hist = vec![0_u32; n * BINS];
    for (fi, &w) in omegas.iter().enumerate() {
        ctx.check()?;
        let w2 = w * w;
        let base = fi * n;
        hist.iter_mut().for_each(|h| *h = 0);
        for q in pre.chunks_exact(5 * n) {
            let (m, kd, cd, k, c) = (
                &q[..n],
                &q[n..2 * n],
                &q[2 * n..3 * n],
                &q[3 * n..4 * n],
                &q[4 * n..],
            );
            // Thomas algorithm with reciprocal pivots; off[i−1] = −(k_i + iω c_i) (see `chain`).
            for i in 0..n {
                diag[i] = C64::new(kd[i] - w2 * m[i], w * cd[i]);
                rhs[i] = zero;
            }
            rhs[setup.force_floor] = C64::new(1.0, 0.0);
            for i in 0..n {
                if i > 0 {
                    let off = C64::new(-k[i], -w * c[i]);
                    let factor = off * inv[i - 1];
                    diag[i] -= factor * off;
                    let prev = rhs[i - 1];
                    rhs[i] -= factor * prev;
                }
                let d = diag[i];
                let nsq = d.norm_sqr();
                if nsq.is_nan() || nsq <= 0.0 || nsq.is_infinite() {
                    return Err(StudyError::Numerics(format!(
                        "singular dynamic stiffness at {} Hz",
                        setup.frequencies_hz[fi]
                    )));
                }
                let r = 1.0 / nsq;
                inv[i] = C64::new(d.re * r, -d.im * r);
            }
            rhs[n - 1] *= inv[n - 1];
            for i in (0..n - 1).rev() {
                let off = C64::new(-k[i + 1], -w * c[i + 1]);
                let next = rhs[i + 1];
                rhs[i] = (rhs[i] - off * next) * inv[i];
            }
            for (i, z) in rhs.iter().enumerate() {
                let cidx = base + i;
                let a2 = z.norm_sqr();
                let a = a2.sqrt();
                if !a.is_finite() {
                    return Err(StudyError::Numerics(format!(
                        "non-finite response at {} Hz",
                        setup.frequencies_hz[fi]
                    )));
                }
                out.min_m[cidx] = out.min_m[cidx].min(a);
                out.max_m[cidx] = out.max_m[cidx].max(a);
                out.sum_m[cidx] += a;
                // log10|u| = ln(|u|²) / (2 ln 10): one logarithm, no square root inside it.
                let pos = (a2.ln() * HALF_INV_LN10 - inv_ref[cidx] + LOG_SPAN) * scale;
                if pos < 0.0 {
                    out.under[cidx] += 1;
                } else if pos >= BINS as f64 {
                    out.over[cidx] += 1;
                } else {
                    hist[i * BINS + pos as usize] += 1;
                }
            }
        }
        for (dst, &h) in out.histogram[base * BINS..(base + n) * BINS]
            .iter_mut()
            .zip(&hist)
        {
            *dst = u64::from(h);
        }
    }
    out.samples = count;
    Ok(out)
}
