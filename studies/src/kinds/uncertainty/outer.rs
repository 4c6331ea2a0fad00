//! Owns the guaranteed outer bound of `uncertainty`: for every parameter vector p in the box,
//! |u_i(p, ω)| lies in `[lower, upper]`. Method: a residual (Krawczyk-type) verification around
//! the box midpoint with a rank-one affine form in each parameter, widened by floating-point
//! error bounds, with bisection of the box where the enclosure is loose. Where a sub-box cannot
//! be verified (a lightly damped resonance crosses it), its upper end comes from the damping
//! ([`damping_upper_bound`]) and its lower end is 0. The argument is in `studies/STUDIES.md`
//! § uncertainty; this module does no sampling.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::Setup;
use crate::chain::C64;
use crate::{ChunkCtx, StudyError};

/// Enclosure per (frequency, floor), frequency-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OuterBounds {
    /// Guaranteed lower end of |u|, m/N (≥ 0).
    pub lower_m: Vec<f64>,
    /// Guaranteed upper end of |u|, m/N; `f64::MAX` where no enclosure could be verified.
    pub upper_m: Vec<f64>,
    /// Indices of grid frequencies where some sub-box could not be verified within the box
    /// budget: their lower end is 0 and their upper end comes from the damping bound
    /// (`f64::MAX` only when a storey damper's interval reaches 0).
    pub unverified_frequencies: Vec<usize>,
    /// Boxes evaluated over the whole grid.
    pub boxes: u64,
}

/// γ_k = k·u / (1 − k·u), u = 2^-53 (Higham, *Accuracy and Stability of Numerical Algorithms*,
/// §3.1): the relative error bound of a k-operation floating-point expression.
fn gamma(k: usize) -> f64 {
    let ku = k as f64 * f64::EPSILON / 2.0;
    ku / (1.0 - ku)
}

/// One parameter's contribution to A(p) = A(p0) + Σ δ_l s_l g_l g_lᵀ: the scalar s_l and the
/// support of g_l (one or two entries ±1).
struct Rank1 {
    s_abs: f64,
    /// (index, sign) pairs of g.
    g: [(usize, f64); 2],
    len: usize,
}

fn rank_ones(n: usize, w: f64) -> Vec<Rank1> {
    let mut out = Vec::with_capacity(3 * n);
    for i in 0..n {
        out.push(Rank1 {
            s_abs: w * w,
            g: [(i, 1.0), (0, 0.0)],
            len: 1,
        });
    }
    for kind in 0..2 {
        for i in 0..n {
            let s_abs = if kind == 0 { 1.0 } else { w };
            let g = if i == 0 {
                [(0, 1.0), (0, 0.0)]
            } else {
                [(i, 1.0), (i - 1, -1.0)]
            };
            out.push(Rank1 {
                s_abs,
                g,
                len: if i == 0 { 1 } else { 2 },
            });
        }
    }
    out
}

/// Result of verifying one box: the midpoint solution's magnitudes and the radius bound y with
/// |u(p) − u0| ≤ y componentwise for all p in the box.
struct Verified {
    center_abs: Vec<f64>,
    radius: Vec<f64>,
}

/// Dense dynamic stiffness of the chain at parameters `p` (the floating-point matrix A0), and
/// the entrywise sum of the absolute values of its terms (for the rounding bound of A0).
fn dense(setup: &Setup, p: &[f64], w: f64) -> (DMatrix<C64>, DMatrix<f64>) {
    let n = setup.floors;
    let mut a = DMatrix::<C64>::zeros(n, n);
    let mut abs = DMatrix::<f64>::zeros(n, n);
    for i in 0..n {
        let (m, k, c) = (p[i], p[n + i], p[2 * n + i]);
        a[(i, i)] -= C64::new(w * w * m, 0.0);
        abs[(i, i)] += w * w * m;
        let kc = C64::new(k, w * c);
        let kc_abs = k + w * c;
        a[(i, i)] += kc;
        abs[(i, i)] += kc_abs;
        if i > 0 {
            a[(i - 1, i - 1)] += kc;
            abs[(i - 1, i - 1)] += kc_abs;
            a[(i - 1, i)] -= kc;
            a[(i, i - 1)] -= kc;
            abs[(i - 1, i)] += kc_abs;
            abs[(i, i - 1)] += kc_abs;
        }
    }
    (a, abs)
}

/// Verifies the box `[mid − rad, mid + rad]` at `w`; `None` when the sufficient condition fails
/// (box too wide, or the midpoint matrix singular). Also returns the split score of each
/// parameter (its share of the enclosure radius).
fn verify(setup: &Setup, mid: &[f64], rad: &[f64], w: f64) -> (Option<Verified>, Vec<f64>) {
    let n = setup.floors;
    let j = setup.force_floor;
    let ones = rank_ones(n, w);
    let (a0, a_abs) = dense(setup, mid, w);
    let mut score = vec![0.0; mid.len()];
    let Some(r) = a0.clone().try_inverse() else {
        return (None, rad.to_vec());
    };
    let r_abs = r.map(|z| z.norm());
    let u0: DVector<C64> = r.column(j).into_owned();
    let u0_abs = u0.map(|z| z.norm());
    // Residual e_j − A0 u0 and its rounding bound.
    let mut e = DVector::<C64>::zeros(n);
    e[j] = C64::new(1.0, 0.0);
    let res = &e - &a0 * &u0;
    let g_n = gamma(8 * n + 16);
    let a0_abs = a0.map(|z| z.norm());
    let res_bound: DVector<f64> = res.map(|z| z.norm())
        + (e.map(|z| z.norm()) + &a0_abs * &u0_abs) * g_n
        + (&a_abs * &u0_abs) * g_n;
    let mut z = &r_abs * res_bound;
    // |I − R A0| and its rounding bound, plus R times A0's own rounding.
    let ra = &r * &a0;
    let mut g_bar = DMatrix::<f64>::from_fn(n, n, |a, b| {
        let id = if a == b {
            C64::new(1.0, 0.0)
        } else {
            C64::new(0.0, 0.0)
        };
        (id - ra[(a, b)]).norm()
    });
    g_bar += (DMatrix::<f64>::identity(n, n) + &r_abs * &a0_abs) * g_n;
    g_bar += (&r_abs * &a_abs) * g_n;
    for (l, one) in ones.iter().enumerate() {
        if rad[l] == 0.0 {
            continue;
        }
        // R g_l and g_lᵀ u0
        let mut rg = DVector::<C64>::zeros(n);
        let mut gu = C64::new(0.0, 0.0);
        for &(idx, sign) in &one.g[..one.len] {
            rg += r.column(idx) * C64::new(sign, 0.0);
            gu += u0[idx] * sign;
        }
        let coef = rad[l] * one.s_abs;
        let rg_abs = rg.map(|x| x.norm());
        z += &rg_abs * (coef * gu.norm());
        for &(idx, sign) in &one.g[..one.len] {
            if sign != 0.0 {
                for a in 0..n {
                    g_bar[(a, idx)] += coef * rg_abs[a];
                }
            }
        }
        score[l] = coef
            * rg_abs.amax()
            * (gu.norm()
                + one.g[..one.len]
                    .iter()
                    .map(|&(i, _)| u0_abs[i])
                    .sum::<f64>());
    }
    let widen = 1.0 + gamma(4 * n + 8);
    z *= widen;
    g_bar *= widen;
    // y = (I − Ḡ)⁻¹ z approximately, then checked: z + Ḡ y < y proves ρ(Ḡ) < 1 and |u − u0| ≤ y.
    let lhs = DMatrix::<f64>::identity(n, n) - &g_bar;
    let Some(y) = lhs.lu().solve(&z) else {
        return (None, score);
    };
    let y = y.map(|v| v * (1.0 + 1e-6) + f64::MIN_POSITIVE);
    if y.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return (None, score);
    }
    let check = (&z + &g_bar * &y) * widen;
    if check
        .iter()
        .zip(y.iter())
        .any(|(c, v)| c.is_nan() || c >= v)
    {
        return (None, score);
    }
    (
        Some(Verified {
            center_abs: u0_abs.iter().map(|v| v * (1.0 + g_n)).collect(),
            radius: y.iter().copied().collect(),
        }),
        score,
    )
}

/// Relative safety margin on [`damping_upper_bound`]: its floating-point evaluation is within
/// γ_{2n+8} < 1e-13 of the exact value for n ≤ 40 floors (Higham §3.1); the rest covers the
/// rounding of the Monte Carlo solves the bound is compared against (relative error below
/// cond · γ_{8n}, under 1e-10 for damping ratios above 1e-5).
const DAMPING_BOUND_MARGIN: f64 = 1e-9;

/// A guaranteed upper bound on |u_i| for every parameter vector whose storey dampers are at
/// least `c_lo` (masses and stiffnesses anything), at `w` rad/s, for a unit force at floor
/// `j`: |u_i| ≤ √(R_i R_j) / ω with R_i = Σ_{s ≤ i} 1/c_s, the series "resistance" of the
/// dampers from the ground up to floor i. Proof: Z u = e_j with Z = K − ω²M + iωC (K, M, C
/// real symmetric), so uᴴ Z u = conj(u_j) and its imaginary part gives ω uᴴCu = −Im u_j ≤
/// |u_j|. With the storey drifts d_s = u_s − u_{s−1} (u_{−1} = 0), uᴴCu = Σ c_s |d_s|² and
/// |u_i| ≤ Σ_{s≤i} |d_s| ≤ √(R_i · uᴴCu) by Cauchy–Schwarz. Hence |u_j|² ≤ R_j |u_j| / ω,
/// so |u_j| ≤ R_j/ω, and |u_i|² ≤ R_i |u_j| / ω ≤ R_i R_j / ω². Exact for one floor at
/// resonance (1/(ωc)); it does not depend on masses or stiffnesses at all, which is why it
/// holds where a resonance crosses the box. `f64::MAX` where some c_lo_s = 0 (s ≤ max(i, j)).
pub fn damping_upper_bound(c_lo: &[f64], j: usize, w: f64) -> Vec<f64> {
    let mut r = Vec::with_capacity(c_lo.len());
    let mut acc = 0.0_f64;
    for &c in c_lo {
        acc += if c > 0.0 { 1.0 / c } else { f64::INFINITY };
        r.push(acc);
    }
    let rj = r.get(j).copied().unwrap_or(f64::INFINITY);
    r.iter()
        .map(|&ri| {
            let b = (ri * rj).sqrt() / w * (1.0 + DAMPING_BOUND_MARGIN);
            if b.is_finite() && w > 0.0 {
                b
            } else {
                f64::MAX
            }
        })
        .collect()
}

/// A verified (or not) box waiting in the subdivision queue.
struct Pending {
    lo: Vec<f64>,
    hi: Vec<f64>,
    verified: Option<Verified>,
    score: Vec<f64>,
    /// Infinite when unverified; else the largest radius / (tolerance · |u0|) over the floors.
    badness: f64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.badness.total_cmp(&other.badness).is_eq()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.badness.total_cmp(&other.badness)
    }
}

fn evaluate(
    setup: &Setup,
    lo: Vec<f64>,
    hi: Vec<f64>,
    w: f64,
    rel_tolerance: f64,
    boxes: &mut u64,
) -> Pending {
    *boxes += 1;
    let mid: Vec<f64> = lo.iter().zip(&hi).map(|(a, b)| 0.5 * (a + b)).collect();
    // Radii rounded outward so the float box [mid − rad, mid + rad] contains [lo, hi].
    let rad: Vec<f64> = lo
        .iter()
        .zip(&hi)
        .zip(&mid)
        .map(|((a, b), m)| (b - m).max(m - a).max(0.0) * (1.0 + 4.0 * f64::EPSILON))
        .collect();
    let (verified, score) = verify(setup, &mid, &rad, w);
    let badness = match &verified {
        None => f64::INFINITY,
        Some(v) => (0..setup.floors)
            .map(|i| v.radius[i] / (rel_tolerance * v.center_abs[i]))
            .fold(0.0, f64::max),
    };
    Pending {
        lo,
        hi,
        verified,
        score,
        badness,
    }
}

/// The outer bound on the whole grid: per frequency, boxes are verified in a queue; a box that
/// fails or whose radius exceeds `rel_tolerance`·|u0_i| on some floor is bisected along the
/// parameter with the largest share, while fewer than `max_boxes` boxes exist. The bound is the
/// union of the boxes' enclosures. Checks `ctx` once per frequency.
///
/// # Errors
/// [`StudyError::Cancelled`].
pub fn outer_bounds(
    setup: &Setup,
    max_boxes: usize,
    rel_tolerance: f64,
    ctx: &ChunkCtx<'_>,
) -> Result<OuterBounds, StudyError> {
    let n = setup.floors;
    let cells = setup.frequencies_hz.len() * n;
    let mut lower_m = Vec::with_capacity(cells);
    let mut upper_m = Vec::with_capacity(cells);
    let mut unverified_frequencies = Vec::new();
    let mut boxes = 0_u64;
    for (fi, &f_hz) in setup.frequencies_hz.iter().enumerate() {
        ctx.check()?;
        let w = std::f64::consts::TAU * f_hz;
        let mut lo = vec![f64::INFINITY; n];
        let mut hi = vec![0.0_f64; n];
        let mut failed = false;
        // Boxes awaiting a decision, worst first: unverified ones, then the loosest.
        let mut heap: std::collections::BinaryHeap<Pending> = std::collections::BinaryHeap::new();
        let mut count = 1_usize;
        heap.push(evaluate(
            setup,
            setup.lo.clone(),
            setup.hi.clone(),
            w,
            rel_tolerance,
            &mut boxes,
        ));
        while let Some(top) = heap.peek() {
            if top.badness <= 1.0 || count >= max_boxes {
                break;
            }
            let Some(b) = heap.pop() else { break };
            let l = (0..b.score.len())
                .max_by(|&x, &y| b.score[x].total_cmp(&b.score[y]))
                .unwrap_or(0);
            let split = 0.5 * (b.lo[l] + b.hi[l]);
            let mut left_hi = b.hi.clone();
            left_hi[l] = split;
            let mut right_lo = b.lo.clone();
            right_lo[l] = split;
            heap.push(evaluate(
                setup,
                b.lo.clone(),
                left_hi,
                w,
                rel_tolerance,
                &mut boxes,
            ));
            heap.push(evaluate(
                setup,
                right_lo,
                b.hi,
                w,
                rel_tolerance,
                &mut boxes,
            ));
            count += 1;
        }
        for b in heap {
            // Both bounds hold over the whole sub-box, so the smaller upper end does too.
            let by_damping = damping_upper_bound(&b.lo[2 * n..3 * n], setup.force_floor, w);
            match b.verified {
                Some(v) => {
                    for i in 0..n {
                        lo[i] = lo[i].min(
                            (v.center_abs[i] / (1.0 + gamma(8 * n + 16)) - v.radius[i]).max(0.0),
                        );
                        let verified_hi =
                            (v.center_abs[i] + v.radius[i]) * (1.0 + 4.0 * f64::EPSILON);
                        hi[i] = hi[i].max(verified_hi.min(by_damping[i]));
                    }
                }
                None => {
                    failed = true;
                    for i in 0..n {
                        lo[i] = 0.0;
                        hi[i] = hi[i].max(by_damping[i]);
                    }
                }
            }
        }
        if failed {
            unverified_frequencies.push(fi);
        }
        lower_m.extend(lo.iter().map(|v| v * (1.0 - 4.0 * f64::EPSILON)));
        upper_m.extend(hi.iter().copied());
    }
    Ok(OuterBounds {
        lower_m,
        upper_m,
        unverified_frequencies,
        boxes,
    })
}
