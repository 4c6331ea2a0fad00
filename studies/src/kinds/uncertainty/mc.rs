//! Owns the Monte Carlo part of `uncertainty`: samples uniform in the parameter box, one random
//! stream per block of [`super::BLOCK_SAMPLES`] samples, and per (frequency, floor) the min,
//! max, sum and a fixed-edge histogram of log10(|u| / |u_nominal|), all mergeable in chunk
//! order. Knows nothing about bounds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{BLOCK_SAMPLES, Setup};
use crate::chain::Scratch;
use crate::{ChunkCtx, StudyError, chunk_seed};

/// Histogram bins per (frequency, floor), over log10(|u|/|u_nominal|) ∈ [−LOG_SPAN, LOG_SPAN];
/// values outside fall in an under- or overflow count.
pub const BINS: usize = 64;
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
    let mid: Vec<f64> = setup.lo.iter().zip(&setup.hi).map(|(a, b)| 0.5 * (a + b)).collect();
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
    let mut p = vec![0.0; np];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for s in first..first + count {
        if s == first || s % BLOCK_SAMPLES == 0 {
            let block = u32::try_from(s / BLOCK_SAMPLES)
                .map_err(|_| StudyError::Numerics("too many Monte Carlo blocks".into()))?;
            rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, block));
        }
        ctx.check()?;
        for l in 0..np {
            let t: f64 = rng.random();
            p[l] = setup.lo[l] + (setup.hi[l] - setup.lo[l]) * t;
        }
        let chain = setup.chain(&p);
        for (fi, &w) in omegas.iter().enumerate() {
            chain
                .solve_unit_force(w, setup.force_floor, &mut u, &mut scratch)
                .map_err(|e| StudyError::Numerics(e.to_string()))?;
            for i in 0..n {
                let c = fi * n + i;
                let a = u[i].norm();
                if !a.is_finite() {
                    return Err(StudyError::Numerics(format!(
                        "non-finite response at {} Hz",
                        setup.frequencies_hz[fi]
                    )));
                }
                out.min_m[c] = out.min_m[c].min(a);
                out.max_m[c] = out.max_m[c].max(a);
                out.sum_m[c] += a;
                let pos = (a.log10() - inv_ref[c] + LOG_SPAN) * scale;
                if pos < 0.0 {
                    out.under[c] += 1;
                } else if pos >= BINS as f64 {
                    out.over[c] += 1;
                } else {
                    out.histogram[c * BINS + pos as usize] += 1;
                }
            }
        }
    }
    out.samples = count;
    Ok(out)
}
