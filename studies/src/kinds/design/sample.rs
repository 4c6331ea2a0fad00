//! Owns the Monte Carlo loop of `design`: drawing the inputs (one stream per block, seeded
//! with `chunk_seed(seed, block)`), solving the chain at the analysis frequency, the outputs,
//! the score of each distribution parameter, and the per-block partial sums that `stats`
//! combines. No statistics are finished here.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

use super::stats::{Pilot, digamma};
use super::{BLOCK_SAMPLES, Dist, OutputSel, Params};
use crate::chain::{C64, Chain, Scratch};
use crate::{ChunkCtx, StudyError, chunk_seed};

/// One distribution parameter the outputs may be sensitive to.
#[derive(Debug, Clone, PartialEq)]
pub struct Theta {
    /// Index into [`Params::inputs`].
    pub input: usize,
    /// 0: Gaussian mean or Gamma shape; 1: Gaussian std or Gamma scale.
    pub which: usize,
    /// Its value.
    pub value: f64,
    /// Name, e.g. `stiffness_n_per_m[1].std`.
    pub name: String,
}

/// The distribution parameters of every random input, in input order.
pub fn thetas(params: &Params) -> Vec<Theta> {
    let n = params.mass_kg.len();
    let names = [
        "mass_kg",
        "stiffness_n_per_m",
        "damping_n_s_per_m",
        "force_n",
    ];
    let mut out = Vec::new();
    for (j, d) in params.inputs().iter().enumerate() {
        if !d.is_random() {
            continue;
        }
        let base = format!("{}[{}]", names[(j / n.max(1)).min(3)], j % n.max(1));
        let (a, b, na, nb) = match *d {
            Dist::Gaussian { mean, std } => (mean, std, "mean", "std"),
            Dist::Gamma { shape, scale } => (shape, scale, "shape", "scale"),
        };
        out.push(Theta {
            input: j,
            which: 0,
            value: a,
            name: format!("{base}.{na}"),
        });
        out.push(Theta {
            input: j,
            which: 1,
            value: b,
            name: format!("{base}.{nb}"),
        });
    }
    out
}

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

/// Score of parameter `which` of `d` at the drawn value `x`: ∂ log p(x) / ∂θ.
fn score(d: &Dist, which: usize, x: f64, digamma_shape: f64) -> f64 {
    match *d {
        Dist::Gaussian { mean, std } => {
            let z = x - mean;
            if which == 0 {
                z / (std * std)
            } else {
                (z * z - std * std) / (std * std * std)
            }
        }
        Dist::Gamma { shape, scale } => {
            if which == 0 {
                (x / scale).ln() - digamma_shape
            } else {
                x / (scale * scale) - shape / scale
            }
        }
    }
}

/// Outputs at inputs `x` (masses, stiffnesses, dampers, forces), into `y`.
pub fn outputs(
    floors: usize,
    sel: &[OutputSel],
    omega_rad_s: f64,
    x: &[f64],
    y: &mut [f64],
    u: &mut Vec<C64>,
    scratch: &mut Scratch,
) -> Result<(), StudyError> {
    let n = floors;
    let chain = Chain {
        mass_kg: &x[..n],
        stiffness_n_per_m: &x[n..2 * n],
        damping_n_s_per_m: &x[2 * n..3 * n],
    };
    chain
        .solve_force(omega_rad_s, &x[3 * n..4 * n], u, scratch)
        .map_err(|e| StudyError::Numerics(e.to_string()))?;
    for (o, s) in sel.iter().enumerate() {
        y[o] = match *s {
            // |z| as √(re² + im²): the magnitudes here are far from overflow, and this avoids
            // `hypot`'s cost.
            OutputSel::Displacement(i) => u[i - 1].norm_sqr().sqrt(),
            OutputSel::Shear(i) => {
                let below = if i >= 2 { u[i - 2] } else { C64::new(0.0, 0.0) };
                x[n + i - 1] * (u[i - 1] - below).norm_sqr().sqrt()
            }
        };
    }
    Ok(())
}

/// Runs samples `first .. first + count` (`first` a multiple of [`BLOCK_SAMPLES`]). Checks `ctx`
/// between samples.
///
/// # Errors
/// [`StudyError::Cancelled`]; [`StudyError::Numerics`] for a sampled mass or stiffness ≤ 0 or a
/// singular system.
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
    let gammas: Vec<Option<Gamma<f64>>> = inputs
        .iter()
        .map(|d| match *d {
            Dist::Gamma { shape, scale } if scale > 0.0 => Gamma::new(shape, scale).ok(),
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
    let mut x: Vec<f64> = inputs.iter().map(Dist::mean).collect();
    let mut y = vec![0.0; o];
    let mut s = vec![0.0; p];
    let mut fail = vec![false; o];
    let mut u = Vec::with_capacity(n);
    let mut scratch = Scratch::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut block = BlockSums::new(o, p);
    for idx in first..first + count {
        if idx % BLOCK_SAMPLES == 0 || idx == first {
            if block.n > 0 {
                out.blocks
                    .push(std::mem::replace(&mut block, BlockSums::new(o, p)));
            }
            let b = u32::try_from(idx / BLOCK_SAMPLES)
                .map_err(|_| StudyError::Numerics("too many Monte Carlo blocks".into()))?;
            rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, b));
        }
        ctx.check()?;
        for (j, d) in inputs.iter().enumerate() {
            x[j] = match (*d, &gammas[j]) {
                (Dist::Gaussian { mean, std }, _) if std > 0.0 => {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    mean + std * z
                }
                (Dist::Gamma { .. }, Some(gd)) => gd.sample(&mut rng),
                (d, _) => d.mean(),
            };
        }
        if let Some(j) = (0..2 * n).find(|&j| x[j].is_nan() || x[j] <= 0.0) {
            return Err(StudyError::Numerics(format!(
                "sample {idx} drew a non-positive {} ({}); narrow its distribution",
                if j < n { "mass" } else { "stiffness" },
                x[j]
            )));
        }
        outputs(n, &params.outputs, omega, &x, &mut y, &mut u, &mut scratch)?;
        for (k, t) in th.iter().enumerate() {
            s[k] = score(&inputs[t.input], t.which, x[t.input], digammas[t.input]);
        }
        for a in 0..o {
            let v = y[a];
            if !v.is_finite() {
                return Err(StudyError::Numerics(format!(
                    "sample {idx} gave a non-finite output"
                )));
            }
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
            fail[a] = v > pilot.threshold[a];
            if fail[a] {
                out.failures[a] += 1;
            }
        }
        block.n += 1;
        for a in 0..o {
            block.y[a] += y[a];
            for b in 0..o {
                let yab = y[a] * y[b];
                block.yy[a * o + b] += yab;
                if b < a {
                    // Symmetric in (a, b): only the upper triangle is summed.
                    continue;
                }
                let row = &mut block.yys[(a * o + b) * p..(a * o + b + 1) * p];
                for (r, sk) in row.iter_mut().zip(&s) {
                    *r += yab * sk;
                }
            }
            let ys = &mut block.ys[a * p..(a + 1) * p];
            for (r, sk) in ys.iter_mut().zip(&s) {
                *r += y[a] * sk;
            }
            if fail[a] {
                let fs = &mut block.fs[a * p..(a + 1) * p];
                let fss = &mut block.fss[a * p..(a + 1) * p];
                for ((f1, f2), sk) in fs.iter_mut().zip(fss.iter_mut()).zip(&s) {
                    *f1 += sk;
                    *f2 += sk * sk;
                }
            }
        }
        for (acc, sk) in block.s.iter_mut().zip(&s) {
            *acc += sk;
        }
    }
    if block.n > 0 {
        out.blocks.push(block);
    }
    Ok(out)
}
