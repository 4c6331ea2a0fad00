//! Owns the Monte Carlo loop of `design`: drawing the inputs (one stream per block, seeded
//! with `chunk_seed(seed, block)`), solving the chain at the analysis frequency, the outputs,
//! the score of each distribution parameter, and the per-block partial sums that `stats`
//! combines, a group of [`LANES`] samples at a time (the group kernels are in
//! [`super::lanes`]; one sample's outputs and scores are in [`super::eval`]). No statistics
//! are finished here.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

use super::eval::{digamma, score, thetas};
use super::lanes::{self, LANES, SolveScratch};
use super::pilot::Pilot;
use super::{BLOCK_SAMPLES, Dist, Params};
use crate::chain::ChainError;
use crate::{ChunkCtx, StudyError, chunk_seed};

/// Partial sums over one block of samples (O outputs, P distribution parameters; `s` is the
/// score vector, `y` the outputs, `f` the failure indicators).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSums {
    /// Samples in the block.
    pub n: u64,
    /// Σ y, O.
    pub y: Vec<f64>,
    /// Σ y yᵀ, O×O row-major.
    pub yy: Vec<f64>,
    /// Σ s, P.
    pub s: Vec<f64>,
    /// Σ y sᵀ, O×P.
    pub ys: Vec<f64>,
    /// Σ y_a y_b s_j, O×O×P, for a ≤ b only (the rest stays 0; it is symmetric).
    pub yys: Vec<f64>,
    /// Σ f s, O×P.
    pub fs: Vec<f64>,
    /// Σ f s², O×P.
    pub fss: Vec<f64>,
}

impl BlockSums {
    fn new(o: usize, p: usize) -> Self {
        Self {
            n: 0,
            y: vec![0.0; o],
            yy: vec![0.0; o * o],
            s: vec![0.0; p],
            ys: vec![0.0; o * p],
            yys: vec![0.0; o * o * p],
            fs: vec![0.0; o * p],
            fss: vec![0.0; o * p],
        }
    }
}

/// One chunk's output: block sums in order, plus exactly mergeable counts and extremes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSums {
    /// Index of the chunk's first block.
    pub first_block: u64,
    /// The blocks, in order.
    pub blocks: Vec<BlockSums>,
    /// Smallest value of each output.
    pub min: Vec<f64>,
    /// Largest value of each output.
    pub max: Vec<f64>,
    /// Histogram counts, `bins` per output.
    pub histogram: Vec<u64>,
    /// Samples below the first bin, per output.
    pub under: Vec<u64>,
    /// Samples above the last bin, per output.
    pub over: Vec<u64>,
    /// Samples above the threshold, per output.
    pub failures: Vec<u64>,
}

/// Runs samples `first .. first + count` (`first` a multiple of [`BLOCK_SAMPLES`]), in groups
/// of [`LANES`] (see [`super::lanes`]): draw the group's inputs sample by sample (the block's
/// stream in the same order as one sample at a time), solve and score it lane-wise, then add
/// its dot products to the block sums. Checks `ctx` between groups.
///
/// # Errors
/// [`StudyError::Cancelled`]; [`StudyError::Numerics`] for a sampled mass or stiffness ≤ 0, a
/// singular system or a non-finite output: the first such sample in sample order.
pub fn run(
    floors: usize,
    params: &Params,
    pilot: &Pilot,
    seed: u64,
    first: u64,
    count: u64,
    ctx: &ChunkCtx<'_>,
) -> Result<ChunkSums, StudyError> {
    let n = floors;
    let inputs = params.inputs();
    let th = thetas(params);
    let (o, p, bins) = (params.outputs.len(), th.len(), pilot.bins);
    let digammas: Vec<f64> = inputs
        .iter()
        .map(|d| match *d {
            Dist::Gamma { shape, .. } => digamma(shape),
            Dist::Gaussian { .. } => 0.0,
        })
        .collect();
    // Per input: how it is drawn (None: fixed at its mean).
    let draws: Vec<Option<Draw>> = inputs
        .iter()
        .map(|d| match *d {
            Dist::Gaussian { mean, std } if std > 0.0 => Some(Draw::Normal { mean, std }),
            Dist::Gamma { shape, scale } if scale > 0.0 => {
                Gamma::new(shape, scale).ok().map(Draw::Gamma)
            }
            _ => None,
        })
        .collect();
    let omega = std::f64::consts::TAU * params.frequency_hz;
    let mut out = ChunkSums {
        first_block: first / BLOCK_SAMPLES,
        blocks: Vec::new(),
        min: vec![f64::INFINITY; o],
        max: vec![f64::NEG_INFINITY; o],
        histogram: vec![0; o * bins],
        under: vec![0; o],
        over: vec![0; o],
        failures: vec![0; o],
    };
    // Input-major lanes; fixed inputs hold their mean in every lane, and lanes past the end of
    // a short group keep the previous group's (valid) inputs.
    let mut x: Vec<f64> = inputs
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.mean(), LANES))
        .collect();
    let mut y = vec![0.0; o * LANES];
    let mut s = vec![0.0; p * LANES];
    let mut w = vec![0.0; LANES];
    let mut solve = SolveScratch::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut block = BlockSums::new(o, p);
    let end = first + count;
    let mut idx = first;
    while idx < end {
        if idx.is_multiple_of(BLOCK_SAMPLES) || idx == first {
            if block.n > 0 {
                out.blocks
                    .push(std::mem::replace(&mut block, BlockSums::new(o, p)));
            }
            let b = u32::try_from(idx / BLOCK_SAMPLES)
                .map_err(|_| StudyError::Numerics("too many Monte Carlo blocks".into()))?;
            rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, b));
        }
        ctx.check()?;
        // A group never straddles blocks: BLOCK_SAMPLES is a multiple of LANES.
        let block_end = (idx / BLOCK_SAMPLES + 1) * BLOCK_SAMPLES;
        let m = (end.min(block_end) - idx).min(LANES as u64) as usize;
        for l in 0..m {
            for (j, d) in draws.iter().enumerate() {
                match d {
                    Some(Draw::Normal { mean, std }) => {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        x[j * LANES + l] = mean + std * z;
                    }
                    Some(Draw::Gamma(gd)) => x[j * LANES + l] = gd.sample(&mut rng),
                    None => {}
                }
            }
        }
        let bad_input = (0..m).find_map(|l| {
            (0..2 * n)
                .find(|&j| {
                    let v = x[j * LANES + l];
                    v.is_nan() || v <= 0.0
                })
                .map(|j| (l, j))
        });
        let singular = lanes::outputs(n, &params.outputs, omega, &x, &mut y, &mut solve);
        let non_finite = (0..m).find(|&l| (0..o).any(|a| !y[a * LANES + l].is_finite()));
        // The first failing sample, in sample order; at one sample, the order of the checks of
        // the per-sample loop (inputs, solve, outputs).
        let first_bad = [
            bad_input.map(|(l, _)| l),
            singular.map(|sg| sg.lane).filter(|&l| l < m),
            non_finite,
        ];
        if let Some(lane) = first_bad.iter().flatten().min().copied() {
            let sample = idx + lane as u64;
            return Err(match (bad_input, singular) {
                (Some((l, j)), _) if l == lane => StudyError::Numerics(format!(
                    "sample {sample} drew a non-positive {} ({}); narrow its distribution",
                    if j < n { "mass" } else { "stiffness" },
                    x[j * LANES + l]
                )),
                (_, Some(sg)) if sg.lane == lane => StudyError::Numerics(
                    ChainError::Singular {
                        omega_rad_s: omega,
                        pivot: sg.pivot,
                    }
                    .to_string(),
                ),
                _ => StudyError::Numerics(format!("sample {sample} gave a non-finite output")),
            });
        }
        for (k, t) in th.iter().enumerate() {
            let xs = &x[t.input * LANES..(t.input + 1) * LANES];
            scores(
                &inputs[t.input],
                t.which,
                xs,
                digammas[t.input],
                &mut s[k * LANES..(k + 1) * LANES],
            );
        }
        // Lanes past a short group's end add nothing to the sums.
        for row in y.chunks_exact_mut(LANES).chain(s.chunks_exact_mut(LANES)) {
            row[m..].fill(0.0);
        }
        for a in 0..o {
            let ya = &y[a * LANES..(a + 1) * LANES];
            for (l, &v) in ya[..m].iter().enumerate() {
                out.min[a] = out.min[a].min(v);
                out.max[a] = out.max[a].max(v);
                let pos = (v - pilot.lower[a]) / pilot.width[a];
                if pos < 0.0 {
                    out.under[a] += 1;
                } else if pos >= bins as f64 {
                    out.over[a] += 1;
                } else {
                    out.histogram[a * bins + pos as usize] += 1;
                }
                if v > pilot.threshold[a] {
                    out.failures[a] += 1;
                    let fs = &mut block.fs[a * p..(a + 1) * p];
                    let fss = &mut block.fss[a * p..(a + 1) * p];
                    for (k, (f1, f2)) in fs.iter_mut().zip(fss.iter_mut()).enumerate() {
                        let sk = s[k * LANES + l];
                        *f1 += sk;
                        *f2 += sk * sk;
                    }
                }
            }
        }
        block.n += m as u64;
        for a in 0..o {
            let ya = &y[a * LANES..(a + 1) * LANES];
            block.y[a] += lanes::sum(ya);
            lanes::add_dots(ya, &s, &mut block.ys[a * p..(a + 1) * p]);
            for b in a..o {
                let yb = &y[b * LANES..(b + 1) * LANES];
                for ((wl, va), vb) in w.iter_mut().zip(ya).zip(yb) {
                    *wl = va * vb;
                }
                let yy = lanes::sum(&w);
                block.yy[a * o + b] += yy;
                if b != a {
                    block.yy[b * o + a] += yy;
                }
                // Symmetric in (a, b): only the upper triangle is summed.
                lanes::add_dots(&w, &s, &mut block.yys[(a * o + b) * p..(a * o + b + 1) * p]);
            }
        }
        for (k, acc) in block.s.iter_mut().enumerate() {
            *acc += lanes::sum(&s[k * LANES..(k + 1) * LANES]);
        }
        idx += m as u64;
    }
    if block.n > 0 {
        out.blocks.push(block);
    }
    Ok(out)
}

/// How one random input is drawn.
enum Draw {
    /// mean + std·z, z standard normal (ziggurat).
    Normal { mean: f64, std: f64 },
    /// Gamma(shape, scale).
    Gamma(Gamma<f64>),
}

/// Scores of parameter `which` of `d` at the lanes' drawn values `x`, into `s`: the same
/// expressions as [`score`], one lane at a time.
fn scores(d: &Dist, which: usize, x: &[f64], digamma_shape: f64, s: &mut [f64]) {
    match (*d, which) {
        (Dist::Gaussian { mean, std }, 0) => {
            let var = std * std;
            for (sl, &xl) in s.iter_mut().zip(x) {
                *sl = (xl - mean) / var;
            }
        }
        (Dist::Gaussian { mean, std }, _) => {
            let (var, cube) = (std * std, std * std * std);
            for (sl, &xl) in s.iter_mut().zip(x) {
                let z = xl - mean;
                *sl = (z * z - var) / cube;
            }
        }
        _ => {
            for (sl, &xl) in s.iter_mut().zip(x) {
                *sl = score(d, which, xl, digamma_shape);
            }
        }
    }
}
