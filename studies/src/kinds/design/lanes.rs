//! Owns the structure-of-arrays kernels of `design`'s Monte Carlo loop: a group of [`LANES`]
//! samples at a time, every quantity one array over the group's samples (input-, output- or
//! parameter-major), so each step is a loop over lanes the compiler vectorises. Here: the chain
//! solve and the outputs (the same operations in the same order as `chain::thomas` and
//! [`super::eval::outputs`] on one sample, so bit-identical to them), and the group's
//! contribution to the block sums as dot products over lanes with a fixed summation order.
//! Draws nothing and knows no statistics.

use wide::f64x4;

use super::OutputSel;

/// Samples per group. [`super::BLOCK_SAMPLES`] is a multiple of it, so groups never straddle
/// blocks and the summation order does not depend on the chunking.
pub const LANES: usize = 64;

/// Partial sums of the dot products: 4 running sums over lanes `l ≡ i (mod 4)`, combined as
/// (0 + 2) + (1 + 3) at the end: a fixed order on any machine and instruction set (the
/// compiler keeps them in vector registers; it never reorders floating-point additions).
const ACCS: usize = 4;

type Acc = [f64; ACCS];

#[inline(always)]
fn combine(acc: &Acc) -> f64 {
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// The lanes of `v` as `ACCS`-wide chunks (one group: [`LANES`] values).
#[inline(always)]
fn chunks(v: &[f64]) -> &[Acc] {
    v[..LANES].as_chunks::<ACCS>().0
}

/// Σ_l a_l b_l over one group ([`LANES`] values each), in the fixed order of the `ACCS`
/// running sums.
#[inline(always)]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0_f64; ACCS];
    for (ca, cb) in chunks(a).iter().zip(chunks(b)) {
        for i in 0..ACCS {
            acc[i] += ca[i] * cb[i];
        }
    }
    combine(&acc)
}

/// Σ_l a_l over one group, in the same order as [`dot`].
#[inline(always)]
pub fn sum(a: &[f64]) -> f64 {
    let mut acc = [0.0_f64; ACCS];
    for ca in chunks(a) {
        for i in 0..ACCS {
            acc[i] += ca[i];
        }
    }
    combine(&acc)
}

/// Four dot products Σ_l w_l s_{k,l} at once (k = 0..4 rows of `s`, each [`LANES`] long),
/// each in exactly the order of [`dot`] (lane i of each `f64x4` is running sum i): `w` is
/// loaded once for the four. Explicit vectors, since the compiler's own vectorisation of this
/// loop shuffles across k.
#[inline(always)]
fn dot4(w: &[f64], s: &[f64]) -> [f64; 4] {
    let mut acc = [f64x4::ZERO; 4];
    let (s0, rest) = s.split_at(LANES);
    let (s1, rest) = rest.split_at(LANES);
    let (s2, s3) = rest.split_at(LANES);
    let it = chunks(w)
        .iter()
        .zip(chunks(s0))
        .zip(chunks(s1))
        .zip(chunks(s2))
        .zip(chunks(s3));
    for ((((cw, c0), c1), c2), c3) in it {
        let vw = f64x4::from(*cw);
        acc[0] += vw * f64x4::from(*c0);
        acc[1] += vw * f64x4::from(*c1);
        acc[2] += vw * f64x4::from(*c2);
        acc[3] += vw * f64x4::from(*c3);
    }
    acc.map(|a| combine(&a.to_array()))
}

/// `out[k] += Σ_l w_l s_{k,l}` for every parameter k (`s` parameter-major, [`LANES`] per
/// parameter, `out.len()` parameters).
#[inline(always)]
pub fn add_dots(w: &[f64], s: &[f64], out: &mut [f64]) {
    let p = out.len();
    let mut k = 0;
    while k + 4 <= p {
        let d = dot4(w, &s[k * LANES..(k + 4) * LANES]);
        for (o, v) in out[k..k + 4].iter_mut().zip(d) {
            *o += v;
        }
        k += 4;
    }
    for (kk, o) in out.iter_mut().enumerate().skip(k) {
        *o += dot(w, &s[kk * LANES..(kk + 1) * LANES]);
    }
}

/// Where a group's chain solve failed first: lane and 0-based pivot row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Singular {
    /// Lane (sample within the group).
    pub lane: usize,
    /// Pivot row.
    pub pivot: usize,
}

/// Buffers of one group's chain solve, reused between groups.
#[derive(Debug, Clone, Default)]
pub struct SolveScratch {
    /// Pivots' reciprocals, real and imaginary parts, floor-major.
    d_re: Vec<f64>,
    d_im: Vec<f64>,
    /// Off-diagonal entries (storey i+1's −k, −ωc), floor-major.
    o_re: Vec<f64>,
    o_im: Vec<f64>,
    /// Right-hand side, then displacement phasors, floor-major.
    u_re: Vec<f64>,
    u_im: Vec<f64>,
    /// A row of lanes of zeros (the storey above the top floor).
    zeros: Vec<f64>,
}

/// Outputs `y` (output-major, [`LANES`] per output) of the group with inputs `x` (input-major:
/// masses, stiffnesses, dampers, forces, [`LANES`] per input) for `floors` floors at
/// `omega_rad_s`: per lane, the same floating-point operations in the same order as the
/// per-sample path (`Chain::solve_force`, then [`super::eval::outputs`]). Returns the first
/// lane whose solve met a zero or non-finite pivot (its outputs are then meaningless).
pub fn outputs(
    floors: usize,
    sel: &[OutputSel],
    omega_rad_s: f64,
    x: &[f64],
    y: &mut [f64],
    sc: &mut SolveScratch,
) -> Option<Singular> {
    let n = floors;
    let w = omega_rad_s;
    let ww = w * w;
    for v in [
        &mut sc.d_re,
        &mut sc.d_im,
        &mut sc.o_re,
        &mut sc.o_im,
        &mut sc.u_re,
        &mut sc.u_im,
    ] {
        v.resize(n * LANES, 0.0);
    }
    sc.zeros.resize(LANES, 0.0);
    let lane_row = |j: usize| j * LANES..(j + 1) * LANES;
    // The dynamic stiffness (Chain::dynamic_stiffness) and the force (rhs, imaginary part 0).
    for i in 0..n {
        let m = &x[lane_row(i)];
        let k = &x[lane_row(n + i)];
        let c = &x[lane_row(2 * n + i)];
        let (k_up, c_up) = if i + 1 < n {
            (&x[lane_row(n + i + 1)], &x[lane_row(2 * n + i + 1)])
        } else {
            (&sc.zeros[..], &sc.zeros[..])
        };
        let r = lane_row(i);
        for l in 0..LANES {
            sc.d_re[r.start + l] = k[l] + k_up[l] - ww * m[l];
            sc.d_im[r.start + l] = w * (c[l] + c_up[l]);
            sc.o_re[r.start + l] = -k_up[l];
            sc.o_im[r.start + l] = -w * c_up[l];
        }
        sc.u_re[r.clone()].copy_from_slice(&x[lane_row(3 * n + i)]);
        sc.u_im[r].fill(0.0);
    }
    // Thomas, forward (chain::thomas): factor = off·(1/pivot); pivot −= factor·off;
    // rhs −= factor·rhs_prev; then the pivot's reciprocal conj(p)/|p|².
    let mut singular: Option<Singular> = None;
    for i in 0..n {
        let (cur, prev) = (i * LANES, i.saturating_sub(1) * LANES);
        if i > 0 {
            for l in 0..LANES {
                let (or, oi) = (sc.o_re[prev + l], sc.o_im[prev + l]);
                let (dr, di) = (sc.d_re[prev + l], sc.d_im[prev + l]);
                let fr = or * dr - oi * di;
                let fi = or * di + oi * dr;
                sc.d_re[cur + l] -= fr * or - fi * oi;
                sc.d_im[cur + l] -= fr * oi + fi * or;
                let (pr, pi) = (sc.u_re[prev + l], sc.u_im[prev + l]);
                sc.u_re[cur + l] -= fr * pr - fi * pi;
                sc.u_im[cur + l] -= fr * pi + fi * pr;
            }
        }
        let bad_at = |l: usize| {
            let (pr, pi) = (sc.d_re[cur + l], sc.d_im[cur + l]);
            pr * pr + pi * pi == 0.0 || !pr.is_finite() || !pi.is_finite()
        };
        let mut bad = false;
        for l in 0..LANES {
            bad |= bad_at(l);
        }
        if bad
            && let Some(lane) = (0..LANES).find(|&l| bad_at(l))
            && singular.is_none_or(|o| lane < o.lane)
        {
            singular = Some(Singular { lane, pivot: i });
        }
        for l in 0..LANES {
            let (pr, pi) = (sc.d_re[cur + l], sc.d_im[cur + l]);
            let r = 1.0 / (pr * pr + pi * pi);
            sc.d_re[cur + l] = pr * r;
            sc.d_im[cur + l] = -pi * r;
        }
    }
    // Back substitution: u_last *= 1/p_last; u_i = (u_i − off_i·u_{i+1})·(1/p_i).
    let last = (n - 1) * LANES;
    for l in 0..LANES {
        let (ur, ui) = (sc.u_re[last + l], sc.u_im[last + l]);
        let (dr, di) = (sc.d_re[last + l], sc.d_im[last + l]);
        sc.u_re[last + l] = ur * dr - ui * di;
        sc.u_im[last + l] = ui * dr + ur * di;
    }
    for i in (0..n - 1).rev() {
        let (cur, next) = (i * LANES, (i + 1) * LANES);
        for l in 0..LANES {
            let (or, oi) = (sc.o_re[cur + l], sc.o_im[cur + l]);
            let (nr, ni) = (sc.u_re[next + l], sc.u_im[next + l]);
            let tr = or * nr - oi * ni;
            let ti = or * ni + oi * nr;
            let vr = sc.u_re[cur + l] - tr;
            let vi = sc.u_im[cur + l] - ti;
            let (dr, di) = (sc.d_re[cur + l], sc.d_im[cur + l]);
            sc.u_re[cur + l] = vr * dr - vi * di;
            sc.u_im[cur + l] = vr * di + vi * dr;
        }
    }
    // Outputs: |u_i| = √(re² + im²); shear k_i·|u_i − u_{i−1}|.
    for (a, s) in sel.iter().enumerate() {
        let out = &mut y[a * LANES..(a + 1) * LANES];
        match *s {
            OutputSel::Displacement(i) => {
                let (ur, ui) = (&sc.u_re[lane_row(i - 1)], &sc.u_im[lane_row(i - 1)]);
                for l in 0..LANES {
                    out[l] = (ur[l] * ur[l] + ui[l] * ui[l]).sqrt();
                }
            }
            OutputSel::Shear(i) => {
                let (ur, ui) = (&sc.u_re[lane_row(i - 1)], &sc.u_im[lane_row(i - 1)]);
                let (br, bi) = if i >= 2 {
                    (&sc.u_re[lane_row(i - 2)], &sc.u_im[lane_row(i - 2)])
                } else {
                    (&sc.zeros[..], &sc.zeros[..])
                };
                let k = &x[lane_row(n + i - 1)];
                for l in 0..LANES {
                    let dr = ur[l] - br[l];
                    let di = ui[l] - bi[l];
                    out[l] = k[l] * (dr * dr + di * di).sqrt();
                }
            }
        }
    }
    singular
}
