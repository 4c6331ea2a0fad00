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

/// Samples solved together, one per lane of a structure-of-arrays block, so that every step of
/// the solve is a loop over lanes that the compiler vectorises. Equal to [`BLOCK_SAMPLES`], so a
/// sample's lane is fixed by its index whatever the chunking.
const LANES: usize = BLOCK_SAMPLES as usize;

/// Frequencies swept per pass over the chunk's samples: their histograms and edges stay in
/// cache while the samples' parameters are read once per tile instead of once per frequency.
const FREQ_TILE: usize = 4;

/// Copies of each histogram, filled by lanes in turn, so consecutive samples falling in one bin
/// do not wait on each other's increment; summed when the tile is done.
const SUB_HISTOGRAMS: usize = 4;

/// One value per lane.
type Lanes = [f64; LANES];

/// 10^(k / scale − LOG_SPAN) for k = 0..=BINS, scale = BINS / (2 LOG_SPAN): a point's bin
/// edges are its nominal |u| times these, each product rounded once.
fn edge_factors() -> [f64; BINS + 1] {
    let scale = BINS as f64 / (2.0 * LOG_SPAN);
    std::array::from_fn(|k| 10f64.powf(k as f64 / scale - LOG_SPAN))
}

/// Lower ends of a point's histogram slots: slot 0 is the underflow, slot `k + 1` is bin `k`
/// (edge_k ≤ |u| < edge_{k+1}, edge_k = nominal × factor_k), slot `BINS + 1` the overflow; two
/// infinite sentinels close the table.
fn slot_floors(nominal_m: f64, factors: &[f64; BINS + 1]) -> [f64; BINS + 3] {
    let mut out = [0.0; BINS + 3];
    out[0] = f64::NEG_INFINITY;
    for (o, f) in out[1..=BINS + 1].iter_mut().zip(factors) {
        *o = nominal_m * f;
    }
    out[BINS + 2] = f64::INFINITY;
    out
}

/// Bins per unit of log2|u| (log10 x = log2 x · log10 2): the bin position estimate of |u| is
/// [`log2_estimate`] times this plus [`bin_offset`].
fn bins_per_log2() -> f64 {
    BINS as f64 / (2.0 * LOG_SPAN) * std::f64::consts::LOG10_2
}

/// The offset of the bin position estimate for a point with this nominal |u|; NaN when the
/// nominal is zero or not finite, which sends the point to the searching path.
fn bin_offset(nominal_m: f64) -> f64 {
    (LOG_SPAN - nominal_m.log10()) * (BINS as f64 / (2.0 * LOG_SPAN))
}

/// The histogram slot of |u| = `a` (see [`slot_floors`]): exact against the edges `t`. `guess`
/// (an estimate of the bin position; any value) only sets where the search starts: from an
/// estimate within one bin, one comparison each way settles it.
#[inline(always)]
fn slot(a: f64, guess: f64, t: &[f64; BINS + 3]) -> usize {
    // Clamped to [0, BINS + 1] first (a NaN guess becomes 0), so the cast truncates a
    // non-negative value.
    let mut s = (guess.clamp(-1.0, BINS as f64) + 1.0).max(0.0) as usize;
    s = s + usize::from(a >= t[s + 1]) - usize::from(a < t[s]);
    if !(t[s] <= a && a < t[s + 1]) {
        // Only for an estimate off by more than a bin (subnormal |u|) or a NaN.
        while s > 0 && a < t[s] {
            s -= 1;
        }
        while s < BINS + 1 && a >= t[s + 1] {
            s += 1;
        }
    }
    s
}

/// log2(a) to within 0.05 for a normal positive `a`, from its exponent and mantissa bits (the
/// mantissa's log2(1 + x) ≈ x + 0.043); only a starting point for [`slot`]. Plain integer and
/// floating-point operations, so it vectorises.
#[inline(always)]
fn log2_estimate(a: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let bits = a.to_bits();
    // The biased exponent as a double, by the 2^52 trick (exact for the 11-bit field).
    let exp = f64::from_bits(((bits >> 52) & 0x7ff) | TWO_52.to_bits()) - TWO_52;
    let mant = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 1f64.to_bits());
    exp - 1023.0 + (mant - 1.0) + 0.043
}

/// Per floor, one lane block's working rows of the Thomas solve.
struct Work {
    inv_re: Vec<Lanes>,
    inv_im: Vec<Lanes>,
    fac_re: Vec<Lanes>,
    fac_im: Vec<Lanes>,
    x_re: Vec<Lanes>,
    x_im: Vec<Lanes>,
}

impl Work {
    fn new(n: usize) -> Self {
        let z = vec![[0.0; LANES]; n];
        Self {
            inv_re: z.clone(),
            inv_im: z.clone(),
            fac_re: z.clone(),
            fac_im: z.clone(),
            x_re: z.clone(),
            x_im: z,
        }
    }

    /// Solves one lane block at ω = `w` for a unit force at floor `ff`: the Thomas algorithm
    /// with reciprocal pivots (off[i−1] = −(k_i + iω c_i), see `chain`), the same operations in
    /// every lane. `q` holds per floor the masses, diagonal stiffness and damping sums, storey
    /// stiffnesses and storey dampers. Leaves the response in `x_re`, `x_im`; returns per lane
    /// the smallest squared pivot modulus and a sum that is NaN if any pivot was not finite.
    #[inline(always)]
    fn solve(&mut self, q: &[Lanes], n: usize, ff: usize, w: f64) -> (Lanes, Lanes) {
        let w2 = w * w;
        let (m, kd, cd, k, c) = (
            &q[..n],
            &q[n..2 * n],
            &q[2 * n..3 * n],
            &q[3 * n..4 * n],
            &q[4 * n..5 * n],
        );
        let mut least = [f64::INFINITY; LANES];
        let mut poison = [0.0; LANES];
        for i in 0..n {
            let mut d_re = [0.0; LANES];
            let mut d_im = [0.0; LANES];
            for l in 0..LANES {
                d_re[l] = kd[i][l] - w2 * m[i][l];
                d_im[l] = w * cd[i][l];
            }
            if i > 0 {
                let (p_re, p_im) = (&self.inv_re[i - 1], &self.inv_im[i - 1]);
                let (f_re_row, f_im_row) = (&mut self.fac_re[i], &mut self.fac_im[i]);
                for l in 0..LANES {
                    let (o_re, o_im) = (-k[i][l], -w * c[i][l]);
                    let f_re = o_re * p_re[l] - o_im * p_im[l];
                    let f_im = o_re * p_im[l] + o_im * p_re[l];
                    d_re[l] -= f_re * o_re - f_im * o_im;
                    d_im[l] -= f_re * o_im + f_im * o_re;
                    f_re_row[l] = f_re;
                    f_im_row[l] = f_im;
                }
            }
            let (v_re, v_im) = (&mut self.inv_re[i], &mut self.inv_im[i]);
            for l in 0..LANES {
                let nsq = d_re[l] * d_re[l] + d_im[l] * d_im[l];
                least[l] = least[l].min(nsq);
                poison[l] += nsq * 0.0;
                let r = 1.0 / nsq;
                v_re[l] = d_re[l] * r;
                v_im[l] = -d_im[l] * r;
            }
        }
        // Forward sweep of the unit force: zero above the force floor.
        for i in 0..n {
            if i < ff {
                self.x_re[i] = [0.0; LANES];
                self.x_im[i] = [0.0; LANES];
            } else if i == ff {
                self.x_re[i] = [1.0; LANES];
                self.x_im[i] = [0.0; LANES];
            } else {
                let (p_re, p_im) = (self.x_re[i - 1], self.x_im[i - 1]);
                let (f_re, f_im) = (&self.fac_re[i], &self.fac_im[i]);
                for l in 0..LANES {
                    self.x_re[i][l] = -(f_re[l] * p_re[l] - f_im[l] * p_im[l]);
                    self.x_im[i][l] = -(f_re[l] * p_im[l] + f_im[l] * p_re[l]);
                }
            }
        }
        // Back substitution: x_i = (x_i − off_i x_{i+1}) / pivot_i.
        for i in (0..n).rev() {
            let (mut r_re, mut r_im) = (self.x_re[i], self.x_im[i]);
            if i + 1 < n {
                let (n_re, n_im) = (&self.x_re[i + 1], &self.x_im[i + 1]);
                for l in 0..LANES {
                    let (o_re, o_im) = (-k[i + 1][l], -w * c[i + 1][l]);
                    r_re[l] -= o_re * n_re[l] - o_im * n_im[l];
                    r_im[l] -= o_re * n_im[l] + o_im * n_re[l];
                }
            }
            let (v_re, v_im) = (&self.inv_re[i], &self.inv_im[i]);
            for l in 0..LANES {
                self.x_re[i][l] = r_re[l] * v_re[l] - r_im[l] * v_im[l];
                self.x_im[i][l] = r_re[l] * v_im[l] + r_im[l] * v_re[l];
            }
        }
        (least, poison)
    }
}

/// Smallest and largest value of a lane block and whether any is NaN or infinite, in a fixed
/// order that vectorises.
#[inline(always)]
fn block_range(a: &Lanes) -> (f64, f64, bool) {
    let mut lo = [f64::INFINITY; 8];
    let mut hi = [f64::NEG_INFINITY; 8];
    let mut poison = [0.0; 8];
    for row in a.chunks_exact(8) {
        for j in 0..8 {
            lo[j] = lo[j].min(row[j]);
            hi[j] = hi[j].max(row[j]);
            poison[j] += row[j] * 0.0;
        }
    }
    let lo = lo.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    let hi = hi.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    (lo, hi, poison.iter().any(|v| v.is_nan()))
}

/// The slot of a normal positive |u| = `a`, or the one below: the bin position estimate
/// (within 0.21 bins: 0.043 in log2 times 4.82 bins per unit) in slot units, lowered by one bin
/// and rounded to nearest, is within [S − 1.21, S + 0.21] before rounding for true slot S, so
/// S − 1 or S after; clamped to the slots. One comparison with the next edge then settles it.
/// Rounded by adding 1.5 · 2^52, which leaves the integer in the low mantissa bits, so the
/// whole computation vectorises.
#[inline(always)]
fn first_slot(a: f64, per_log2: f64, offset: f64) -> u32 {
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let guess = log2_estimate(a) * per_log2 + offset;
    // Slot = bin + 1, lowered by one bin: the bin position itself.
    let x = guess.max(0.0).min((BINS + 1) as f64);
    // The low 32 bits hold round(x) for 0 ≤ x < 2^31; the truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let r = (x + ROUND).to_bits() as u32;
    r
}

/// Sum of a lane block in a fixed order (eight interleaved partial sums, then pairwise), so it
/// vectorises and gives the same bits everywhere.
#[inline(always)]
fn block_sum(a: &Lanes) -> f64 {
    let mut s = [0.0; 8];
    for row in a.chunks_exact(8) {
        for (acc, v) in s.iter_mut().zip(row) {
            *acc += v;
        }
    }
    ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

/// Runs samples `first .. first + count` (whole blocks except at the end of the study).
/// Checks `ctx` between frequency tiles.
///
/// Samples are solved [`LANES`] at a time. A sample's numbers do not depend on its lane (the
/// same IEEE operations, no fused multiply-add) and chunks start on block boundaries, so the
/// result is the same whatever the worker or machine. A short last block is padded with copies
/// of its last sample, which are not counted.
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
    run_with(setup, seed, first, count, ctx, Isa::detect())
}

/// [`run`] with the frequency sweep compiled for `isa` (which the CPU must have).
pub(crate) fn run_with(
    setup: &Setup,
    seed: u64,
    first: u64,
    count: u64,
    ctx: &ChunkCtx<'_>,
    isa: Isa,
) -> Result<McChunk, StudyError> {
    let n = setup.floors;
    let freqs = setup.frequencies_hz.len();
    let cells = freqs * n;
    let ff = setup.force_floor;
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
            .solve_unit_force(w, ff, &mut u, &mut scratch)
            .map_err(|e| StudyError::Numerics(e.to_string()))?;
        out.nominal_m.extend(u.iter().map(|z| z.norm()));
    }
    out.samples = count;
    let count_us = usize::try_from(count)
        .map_err(|_| StudyError::Numerics("chunk too large for this machine".into()))?;
    if count_us == 0 || n == 0 {
        return Ok(out);
    }
    let np = setup.params();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Draw every sample of the chunk first (sample-major, in stream order).
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
    // Per lane block, per floor: masses, diagonal stiffness and damping sums, storey stiffness
    // and damping (the last two enter the off-diagonal), one value per lane.
    let blocks = count_us.div_ceil(LANES);
    let mut pre = vec![[0.0; LANES]; blocks * 5 * n];
    for (b, q) in pre.chunks_exact_mut(5 * n).enumerate() {
        #[allow(clippy::needless_range_loop)] // one index into several arrays in step
        for l in 0..LANES {
            let si = (b * LANES + l).min(count_us - 1);
            let p = &drawn[si * np..(si + 1) * np];
            for i in 0..n {
                let (k_up, c_up) = if i + 1 < n {
                    (p[n + i + 1], p[2 * n + i + 1])
                } else {
                    (0.0, 0.0)
                };
                q[i][l] = p[i];
                q[n + i][l] = p[n + i] + k_up;
                q[2 * n + i][l] = p[2 * n + i] + c_up;
                q[3 * n + i][l] = p[n + i];
                q[4 * n + i][l] = p[2 * n + i];
            }
        }
    }
    drop(drawn);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            #[allow(unsafe_code)]
            // SAFETY: the guard above checked that this CPU has AVX2.
            unsafe {
                sweep_avx2(setup, &pre, count_us, &omegas, &mut out, ctx)?;
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
            #[allow(unsafe_code)]
            // SAFETY: the guard above checked that this CPU has AVX-512F.
            unsafe {
                sweep_avx512(setup, &pre, count_us, &omegas, &mut out, ctx)?;
            }
        }
        _ => sweep(setup, &pre, count_us, &omegas, &mut out, ctx)?,
    }
    Ok(out)
}

/// Instruction sets the frequency sweep is compiled for; chosen at run time. Both give the same
/// bits: the same IEEE operations in the same order, no fused multiply-add (AVX2 does not enable
/// FMA), only wider registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
    /// AVX2, four doubles per register.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, eight doubles per register (it implies the FMA feature, but no fused
    /// multiply-add is ever formed: Rust does not contract a multiply and an add).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest one this CPU has.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
        Isa::Baseline
    }
}

/// [`sweep`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sweep_avx2(
    setup: &Setup,
    pre: &[Lanes],
    count_us: usize,
    omegas: &[f64],
    out: &mut McChunk,
    ctx: &ChunkCtx<'_>,
) -> Result<(), StudyError> {
    sweep(setup, pre, count_us, omegas, out, ctx)
}

/// [`sweep`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sweep_avx512(
    setup: &Setup,
    pre: &[Lanes],
    count_us: usize,
    omegas: &[f64],
    out: &mut McChunk,
    ctx: &ChunkCtx<'_>,
) -> Result<(), StudyError> {
    sweep(setup, pre, count_us, omegas, out, ctx)
}

/// Solves every lane block of `pre` at every frequency and adds the statistics to `out`, whose
/// nominal responses are set.
#[inline(always)]
fn sweep(
    setup: &Setup,
    pre: &[Lanes],
    count_us: usize,
    omegas: &[f64],
    out: &mut McChunk,
    ctx: &ChunkCtx<'_>,
) -> Result<(), StudyError> {
    let n = setup.floors;
    let freqs = omegas.len();
    let ff = setup.force_floor;
    let factors = edge_factors();
    let per_log2 = bins_per_log2();
    let mut work = Work::new(n);
    let tile_cells = FREQ_TILE * n;
    let mut floors = vec![[0.0; BINS + 3]; tile_cells];
    let mut offset = vec![0.0; tile_cells];
    let mut hist = vec![[[0_u32; BINS + 2]; SUB_HISTOGRAMS]; tile_cells];
    for tile in (0..freqs).step_by(FREQ_TILE) {
        ctx.check()?;
        let tile_len = FREQ_TILE.min(freqs - tile);
        let base = tile * n;
        for t in 0..tile_len * n {
            let nominal = out.nominal_m[base + t];
            floors[t] = slot_floors(nominal, &factors);
            offset[t] = bin_offset(nominal);
            hist[t] = [[0; BINS + 2]; SUB_HISTOGRAMS];
        }
        for (b, q) in pre.chunks_exact(5 * n).enumerate() {
            let lanes = LANES.min(count_us - b * LANES);
            for ft in 0..tile_len {
                let fi = tile + ft;
                let (least, poison) = work.solve(q, n, ff, omegas[fi]);
                let numerics = || {
                    StudyError::Numerics(format!(
                        "singular dynamic stiffness or non-finite response at {} Hz",
                        setup.frequencies_hz[fi]
                    ))
                };
                if least.iter().any(|&v| v.is_nan() || v <= 0.0)
                    || poison.iter().any(|v| v.is_nan())
                {
                    return Err(numerics());
                }
                for i in 0..n {
                    let t = ft * n + i;
                    let cidx = base + t;
                    let (x_re, x_im) = (&work.x_re[i], &work.x_im[i]);
                    let mut a = [0.0; LANES];
                    for l in 0..LANES {
                        a[l] = (x_re[l] * x_re[l] + x_im[l] * x_im[l]).sqrt();
                    }
                    let (lo, hi, poisoned) = block_range(&a);
                    if poisoned {
                        return Err(numerics());
                    }
                    // Padding lanes copy the block's last sample: min and max are unchanged,
                    // and they add zero to the sum.
                    out.min_m[cidx] = out.min_m[cidx].min(lo);
                    out.max_m[cidx] = out.max_m[cidx].max(hi);
                    a[lanes..].fill(0.0);
                    out.sum_m[cidx] += block_sum(&a);
                    let edges = &floors[t];
                    let h = &mut hist[t];
                    if lo >= f64::MIN_POSITIVE && offset[t].is_finite() {
                        let mut start = [0_u32; LANES];
                        for l in 0..LANES {
                            start[l] = first_slot(a[l], per_log2, offset[t]);
                        }
                        if lanes == LANES {
                            let [h0, h1, h2, h3] = h;
                            for (v, s0) in a.chunks_exact(4).zip(start.chunks_exact(4)) {
                                let s0: [usize; 4] = std::array::from_fn(|j| s0[j] as usize);
                                h0[s0[0] + usize::from(v[0] >= edges[s0[0] + 1])] += 1;
                                h1[s0[1] + usize::from(v[1] >= edges[s0[1] + 1])] += 1;
                                h2[s0[2] + usize::from(v[2] >= edges[s0[2] + 1])] += 1;
                                h3[s0[3] + usize::from(v[3] >= edges[s0[3] + 1])] += 1;
                            }
                        } else {
                            for (l, (&v, &s0)) in a[..lanes].iter().zip(&start).enumerate() {
                                let s0 = s0 as usize;
                                h[l % SUB_HISTOGRAMS][s0 + usize::from(v >= edges[s0 + 1])] += 1;
                            }
                        }
                    } else {
                        // A zero or subnormal |u|, or no usable nominal: search.
                        for (l, &v) in a[..lanes].iter().enumerate() {
                            h[l % SUB_HISTOGRAMS][slot(v, 0.0, edges)] += 1;
                        }
                    }
                }
            }
        }
        #[allow(clippy::needless_range_loop)] // one index into several arrays in step
        for t in 0..tile_len * n {
            let cidx = base + t;
            let mut total = [0_u64; BINS + 2];
            for sub in &hist[t] {
                for (acc, &c) in total.iter_mut().zip(sub) {
                    *acc += u64::from(c);
                }
            }
            out.under[cidx] = total[0];
            out.over[cidx] = total[BINS + 1];
            out.histogram[cidx * BINS..(cidx + 1) * BINS].copy_from_slice(&total[1..=BINS]);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    const SCALE: f64 = BINS as f64 / (2.0 * LOG_SPAN);

    /// The slot the sweep's fast path gives a normal |u| (the same steps, one value).
    fn fast_slot(a: f64, nominal: f64) -> usize {
        let edges = slot_floors(nominal, &edge_factors());
        let s0 = first_slot(a, bins_per_log2(), bin_offset(nominal)) as usize;
        s0 + usize::from(a >= edges[s0 + 1])
    }

    /// floor((log10(u / nominal) + LOG_SPAN) · scale) as a slot (0 under, bin + 1, BINS + 1
    /// over), in plain f64 with a logarithm; `None` where rounding could decide it (within
    /// `margin` of an edge; the position's own rounding error is about 1e−14).
    fn log_slot_within(u: f64, nominal: f64, margin: f64) -> Option<usize> {
        let pos = ((u / nominal).log10() + LOG_SPAN) * SCALE;
        if (pos - pos.round()).abs() < margin {
            return None;
        }
        let bin = pos.floor();
        Some(if bin < 0.0 {
            0
        } else if bin >= BINS as f64 {
            BINS + 1
        } else {
            bin as usize + 1
        })
    }

    fn log_slot(u: f64, nominal: f64) -> Option<usize> {
        log_slot_within(u, nominal, 1e-9)
    }

    #[test]
    fn the_bin_is_the_floor_of_the_log_position_across_the_whole_span() {
        for nominal in [1.0, 3.7e-7, 2.5e-9, 6.1e3] {
            // 200 001 values log-spaced over ±1.5 decades around the nominal.
            let mut checked = 0;
            for j in 0..=200_000 {
                let u = nominal * 10f64.powf(-1.5 + 3.0 * j as f64 / 200_000.0);
                if let Some(expected) = log_slot(u, nominal) {
                    assert_eq!(
                        fast_slot(u, nominal),
                        expected,
                        "u {u:e} nominal {nominal:e}"
                    );
                    let edges = slot_floors(nominal, &edge_factors());
                    assert_eq!(slot(u, 0.0, &edges), expected, "search, u {u:e}");
                    checked += 1;
                }
            }
            assert!(checked > 199_000);
        }
    }

    #[test]
    fn a_value_exactly_at_an_edge_opens_its_bin_and_the_next_smaller_value_closes_the_last() {
        for nominal in [1.0, 3.7e-7, 2.5e-9, 6.1e3] {
            let edges = slot_floors(nominal, &edge_factors());
            for k in 0..=BINS {
                // The edge, computed independently (exp of a multiple of ln 10), agrees with
                // the table to a few rounding steps.
                let exact =
                    nominal * ((k as f64 / SCALE - LOG_SPAN) * std::f64::consts::LN_10).exp();
                let e = edges[k + 1];
                assert!((e / exact - 1.0).abs() < 8.0 * f64::EPSILON, "edge {k}");
                // At the edge: bin k (slot k + 1, the overflow for k = BINS); just below: k − 1.
                assert_eq!(fast_slot(e, nominal), k + 1, "at edge {k}");
                assert_eq!(fast_slot(e.next_down(), nominal), k, "below edge {k}");
                assert_eq!(slot(e, 37.0, &edges), k + 1);
                assert_eq!(slot(e.next_down(), -5.0, &edges), k);
                // 256 ulps either side (8e−13 in bin position, against a rounding error of
                // about 1e−14) the log position is unambiguous and agrees.
                let up = e * (1.0 + 256.0 * f64::EPSILON);
                let down = e * (1.0 - 256.0 * f64::EPSILON);
                let want = |v| log_slot_within(v, nominal, 1e-13);
                assert_eq!(Some(fast_slot(up, nominal)), want(up), "above {k}");
                assert_eq!(Some(fast_slot(down, nominal)), want(down), "below {k}");
            }
        }
    }

    #[test]
    fn zero_subnormal_and_huge_values_are_binned_by_the_search() {
        let edges = slot_floors(1.0, &edge_factors());
        assert_eq!(slot(0.0, f64::NAN, &edges), 0);
        assert_eq!(slot(f64::MIN_POSITIVE / 8.0, 1e9, &edges), 0);
        assert_eq!(slot(1e300, -1e9, &edges), BINS + 1);
        assert_eq!(slot(1.0, 0.0, &edges), BINS / 2 + 1);
    }

    /// A one-floor box: mass, stiffness, damper intervals.
    fn one_floor(freqs: usize) -> Setup {
        Setup {
            floors: 1,
            lo: vec![90.0, 3.6e5, 40.0],
            hi: vec![110.0, 4.4e5, 60.0],
            force_floor: 0,
            frequencies_hz: (0..freqs)
                .map(|i| 5.0 + 20.0 * i as f64 / freqs as f64)
                .collect(),
            samples_per_chunk: 256,
            mc_chunks: 1,
            frequencies_per_bounds_chunk: freqs,
            bounds_chunks: 1,
        }
    }

    #[test]
    fn one_floor_statistics_match_the_closed_form_receptance_of_every_sample() {
        let setup = one_floor(60);
        let (seed, first, count) = (42, 192, 200);
        let flag = AtomicBool::new(false);
        let got = run(&setup, seed, first, count, &ChunkCtx::new(&flag)).unwrap();
        // The same samples, drawn independently: one stream per block of 64.
        let mut samples = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for s in first..first + count {
            if s == first || s % BLOCK_SAMPLES == 0 {
                rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, (s / BLOCK_SAMPLES) as u32));
            }
            let p: Vec<f64> = (0..3)
                .map(|l| {
                    let t: f64 = rng.random();
                    setup.lo[l] + (setup.hi[l] - setup.lo[l]) * t
                })
                .collect();
            samples.push(p);
        }
        let receptance =
            |p: &[f64], w: f64| 1.0 / ((p[1] - w * w * p[0]).powi(2) + (w * p[2]).powi(2)).sqrt();
        let mid: Vec<f64> = setup
            .lo
            .iter()
            .zip(&setup.hi)
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        assert_eq!(got.samples, count);
        for (c, f) in setup.frequencies_hz.iter().enumerate() {
            let w = std::f64::consts::TAU * f;
            let nominal = receptance(&mid, w);
            assert!((got.nominal_m[c] / nominal - 1.0).abs() < 1e-13);
            let u: Vec<f64> = samples.iter().map(|p| receptance(p, w)).collect();
            let min = u.iter().copied().fold(f64::INFINITY, f64::min);
            let max = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = u.iter().sum();
            // Rounding of a 3-term solve against the closed form: a few ulps per sample.
            assert!((got.min_m[c] / min - 1.0).abs() < 1e-13, "min at {f} Hz");
            assert!((got.max_m[c] / max - 1.0).abs() < 1e-13, "max at {f} Hz");
            assert!((got.sum_m[c] / sum - 1.0).abs() < 1e-13, "sum at {f} Hz");
            let mut hist = vec![0_u64; BINS + 2];
            for &v in &u {
                hist[log_slot(v, nominal).unwrap()] += 1;
            }
            assert_eq!(got.under[c], hist[0], "under at {f} Hz");
            assert_eq!(got.over[c], hist[BINS + 1], "over at {f} Hz");
            assert_eq!(
                &got.histogram[c * BINS..(c + 1) * BINS],
                &hist[1..=BINS],
                "at {f} Hz"
            );
        }
    }

    /// Cristallo's msd3 box at ±5 %, force at the top floor.
    fn msd3(freqs: usize) -> Setup {
        let nominal = [
            5.362e4, 5.144e4, 5.142e4, 3.846e8, 4.464e8, 4.589e8, 1.699e4, 1.016e4, 1.34e4,
        ];
        Setup {
            floors: 3,
            lo: nominal.iter().map(|v| v * 0.95).collect(),
            hi: nominal.iter().map(|v| v * 1.05).collect(),
            force_floor: 2,
            frequencies_hz: (0..freqs)
                .map(|i| 0.8 + 31.0 * i as f64 / freqs as f64)
                .collect(),
            samples_per_chunk: 320,
            mc_chunks: 4,
            frequencies_per_bounds_chunk: freqs,
            bounds_chunks: 1,
        }
    }

    #[test]
    fn every_wide_sweep_this_cpu_has_gives_the_same_bits_as_the_baseline_sweep() {
        #[cfg(target_arch = "x86_64")]
        let wide: Vec<Isa> = [
            (Isa::Avx2, std::arch::is_x86_feature_detected!("avx2")),
            (Isa::Avx512, std::arch::is_x86_feature_detected!("avx512f")),
        ]
        .into_iter()
        .filter_map(|(isa, has)| has.then_some(isa))
        .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let wide: Vec<Isa> = Vec::new();
        if wide.is_empty() {
            eprintln!("this CPU has no AVX2: only the baseline sweep exists here");
        }
        let setup = msd3(97);
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (first, count) in [(0, 320), (640, 203)] {
            let base = run_with(&setup, 7, first, count, &ctx, Isa::Baseline).unwrap();
            for &isa in &wide {
                let got = run_with(&setup, 7, first, count, &ctx, isa).unwrap();
                assert_eq!(bits(&got.sum_m), bits(&base.sum_m), "{isa:?}");
                assert_eq!(bits(&got.min_m), bits(&base.min_m), "{isa:?}");
                assert_eq!(bits(&got.max_m), bits(&base.max_m), "{isa:?}");
                assert_eq!(got, base, "{isa:?}");
            }
        }
    }

    #[test]
    fn three_floor_samples_match_the_general_chain_solver() {
        let setup = msd3(23);
        let flag = AtomicBool::new(false);
        let got = run(&setup, 3, 0, 64, &ChunkCtx::new(&flag)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(chunk_seed(3, 0));
        let samples: Vec<Vec<f64>> = (0..64)
            .map(|_| {
                (0..9)
                    .map(|l| {
                        let t: f64 = rng.random();
                        setup.lo[l] + (setup.hi[l] - setup.lo[l]) * t
                    })
                    .collect()
            })
            .collect();
        let (mut u, mut scratch) = (Vec::new(), Scratch::default());
        for (fi, f) in setup.frequencies_hz.iter().enumerate() {
            let w = std::f64::consts::TAU * f;
            for i in 0..3 {
                let mags: Vec<f64> = samples
                    .iter()
                    .map(|p| {
                        setup
                            .chain(p)
                            .solve_unit_force(w, 2, &mut u, &mut scratch)
                            .unwrap();
                        u[i].norm()
                    })
                    .collect();
                let max = mags.iter().copied().fold(0.0, f64::max);
                let sum: f64 = mags.iter().sum();
                let c = fi * 3 + i;
                assert!((got.max_m[c] / max - 1.0).abs() < 1e-12, "{f} Hz floor {i}");
                assert!((got.sum_m[c] / sum - 1.0).abs() < 1e-12, "{f} Hz floor {i}");
            }
        }
    }
}
