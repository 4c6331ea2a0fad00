//! Owns what one sample of `design` is: the distribution parameters the outputs may be
//! sensitive to ([`thetas`]), the outputs at given inputs for one sample ([`outputs`]: the
//! pilot and the tests use it; the lane kernels in [`super::lanes`] repeat it bit for bit),
//! the score of a parameter at a drawn value, and ψ for the Gamma distribution's score.
//! Draws nothing and sums nothing.

use super::{Dist, OutputSel, Params};
use crate::StudyError;
use crate::chain::{C64, Chain, Scratch};

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

/// Score of parameter `which` of `d` at the drawn value `x`: ∂ log p(x) / ∂θ.
pub(super) fn score(d: &Dist, which: usize, x: f64, digamma_shape: f64) -> f64 {
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

/// ψ(x), the digamma function, for x > 0: recurrence up to x ≥ 10, then the asymptotic series
/// to x⁻¹⁰ (error below 1e-13 there).
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    acc + x.ln()
        - 0.5 * inv
        - inv2
            * (1.0 / 12.0
                - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}
