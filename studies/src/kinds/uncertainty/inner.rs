//! Owns the optimiser part of the inner bound of `uncertainty`: per frequency and floor, the
//! widest range of |u_i| found among parameter vectors actually evaluated (box corners, a
//! Halton set inside the box, then coordinate search from the best of each and from the
//! centre), so every value in it is attained. The reduce widens it with the Monte Carlo
//! samples' min and max. It is not an enclosure; `outer` is.

use serde::{Deserialize, Serialize};

use super::Setup;
use crate::chain::{C64, Scratch};
use crate::{ChunkCtx, StudyError};

/// Points per parameter tried in one coordinate-search step (the interval's ends and 15 inner
/// points, evenly spaced).
pub const SEARCH_POINTS: usize = 17;

/// Golden-section steps refining each coordinate step (two evaluations each).
pub const GOLDEN_STEPS: usize = 30;

/// Interior points of the box tried per frequency (a Halton set, deterministic): resonance
/// ridges crossing the box's interior are found by no corner, and a local search started from
/// the best interior point climbs them.
pub const INTERIOR_STARTS: usize = 128;

/// Coordinate-search starts per floor and direction: best corner, best interior point, centre.
pub const STARTS: usize = 3;

/// Attained range per (frequency, floor), frequency-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InnerBounds {
    /// Smallest |u| found, m/N.
    pub lower_m: Vec<f64>,
    /// Largest |u| found, m/N.
    pub upper_m: Vec<f64>,
}

/// How many corners [`corners`] yields for `p` parameters.
pub fn corner_count(p: usize) -> usize {
    if p <= super::MAX_ALL_CORNERS_PARAMS {
        1 << p
    } else {
        2 + 2 * p + 2 * p * (p - 1)
    }
}

/// The corners visited, as bit masks (bit l set = parameter l at its upper end). All 2^p when
/// p ≤ 12; otherwise the all-low and all-high corners, each with one parameter flipped, and each
/// with two parameters flipped: 2 + 2p + 2p(p−1) corners, which contain every corner that
/// differs from a monotone extreme in at most two parameters.
pub fn corners(p: usize) -> Vec<u128> {
    if p <= super::MAX_ALL_CORNERS_PARAMS {
        return (0..(1_u128 << p)).collect();
    }
    let all: u128 = if p >= 128 {
        u128::MAX
    } else {
        (1_u128 << p) - 1
    };
    let mut out = vec![0, all];
    for a in 0..p {
        out.push(1 << a);
        out.push(all ^ (1 << a));
        for b in 0..p {
            if a != b {
                out.push((1 << a) | (1 << b));
                out.push(all ^ ((1 << a) | (1 << b)));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// |u| of every floor at `omega_rad_s` for parameters `p`.
fn magnitudes(
    setup: &Setup,
    p: &[f64],
    omega_rad_s: f64,
    u: &mut Vec<C64>,
    scratch: &mut Scratch,
) -> Result<(), StudyError> {
    setup
        .chain(p)
        .solve_unit_force(omega_rad_s, setup.force_floor, u, scratch)
        .map_err(|e| StudyError::Numerics(e.to_string()))
}

/// The inner bound on the whole grid. Checks `ctx` once per frequency.
///
/// # Errors
/// [`StudyError::Cancelled`]; [`StudyError::Numerics`] on a singular system.
pub fn inner_bounds(
    setup: &Setup,
    sweeps: usize,
    ctx: &ChunkCtx<'_>,
) -> Result<InnerBounds, StudyError> {
    let n = setup.floors;
    let np = setup.params();
    let corner_masks = corners(np.min(127));
    let mut lower_m = Vec::with_capacity(setup.frequencies_hz.len() * n);
    let mut upper_m = Vec::with_capacity(setup.frequencies_hz.len() * n);
    let mut u = Vec::new();
    let mut scratch = Scratch::default();
    let mut p = vec![0.0; np];
    let centre: Vec<f64> = setup
        .lo
        .iter()
        .zip(&setup.hi)
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let interior = halton_points(setup, INTERIOR_STARTS);
    for &f_hz in &setup.frequencies_hz {
        ctx.check()?;
        let w = std::f64::consts::TAU * f_hz;
        let mut best_lo = vec![(f64::INFINITY, 0_u128); n];
        let mut best_hi = vec![(f64::NEG_INFINITY, 0_u128); n];
        for &mask in &corner_masks {
            for (l, v) in p.iter_mut().enumerate() {
                *v = if l < 128 && mask >> l & 1 == 1 {
                    setup.hi[l]
                } else {
                    setup.lo[l]
                };
            }
            magnitudes(setup, &p, w, &mut u, &mut scratch)?;
            for i in 0..n {
                let a = u[i].norm();
                if a < best_lo[i].0 {
                    best_lo[i] = (a, mask);
                }
                if a > best_hi[i].0 {
                    best_hi[i] = (a, mask);
                }
            }
        }
        for i in 0..n {
            let lo = search(setup, w, i, best_lo[i], sweeps, false, &mut u, &mut scratch)?;
            let hi = search(setup, w, i, best_hi[i], sweeps, true, &mut u, &mut scratch)?;
            lower_m.push(lo);
            upper_m.push(hi);
        }
        // More starts inside the box: interior extremes (resonances and anti-resonances
        // crossing the box) are often nearer to the centre or to some interior point than to
        // any corner.
        magnitudes(setup, &centre, w, &mut u, &mut scratch)?;
        let at_centre: Vec<f64> = u.iter().map(|z| z.norm()).collect();
        let mut interior_lo: Vec<(f64, Vec<f64>)> =
            at_centre.iter().map(|&a| (a, centre.clone())).collect();
        let mut interior_hi = interior_lo.clone();
        for point in &interior {
            magnitudes(setup, point, w, &mut u, &mut scratch)?;
            for i in 0..n {
                let a = u[i].norm();
                if a < interior_lo[i].0 {
                    interior_lo[i] = (a, point.clone());
                }
                if a > interior_hi[i].0 {
                    interior_hi[i] = (a, point.clone());
                }
            }
        }
        let base = lower_m.len() - n;
        for i in 0..n {
            let starts = [
                (at_centre[i], centre.clone()),
                interior_lo[i].clone(),
                interior_hi[i].clone(),
            ];
            for (k, start) in starts.into_iter().enumerate() {
                // The centre serves both directions; the interior bests serve their own.
                if k != 2 {
                    let lo = search_from(
                        setup,
                        w,
                        i,
                        start.clone(),
                        sweeps,
                        false,
                        &mut u,
                        &mut scratch,
                    )?;
                    lower_m[base + i] = lower_m[base + i].min(lo);
                }
                if k != 1 {
                    let hi = search_from(setup, w, i, start, sweeps, true, &mut u, &mut scratch)?;
                    upper_m[base + i] = upper_m[base + i].max(hi);
                }
            }
        }
    }
    Ok(InnerBounds { lower_m, upper_m })
}

/// The first `count` points (after the origin) of the Halton sequence scaled into the box, one
/// prime base per parameter. Deterministic, so chunk 0 needs no seed.
fn halton_points(setup: &Setup, count: usize) -> Vec<Vec<f64>> {
    let primes = first_primes(setup.params());
    (1..=count)
        .map(|index| {
            primes
                .iter()
                .enumerate()
                .map(|(l, &base)| {
                    setup.lo[l] + (setup.hi[l] - setup.lo[l]) * radical_inverse(index, base)
                })
                .collect()
        })
        .collect()
}

/// The van der Corput radical inverse of `index` in `base`, in [0, 1).
fn radical_inverse(mut index: usize, base: usize) -> f64 {
    let inv = 1.0 / base as f64;
    let (mut scale, mut out) = (inv, 0.0);
    while index > 0 {
        out += (index % base) as f64 * scale;
        index /= base;
        scale *= inv;
    }
    out
}

/// The first `count` primes, by trial division (count ≤ 120 here).
fn first_primes(count: usize) -> Vec<usize> {
    let mut primes: Vec<usize> = Vec::with_capacity(count);
    let mut candidate = 2;
    while primes.len() < count {
        if primes
            .iter()
            .take_while(|&&p| p * p <= candidate)
            .all(|&p| candidate % p != 0)
        {
            primes.push(candidate);
        }
        candidate += 1;
    }
    primes
}

/// Coordinate search for the extreme of |u_floor| from a corner: each sweep tries
/// [`SEARCH_POINTS`] values of each parameter in turn, holding the others, and keeps the best.
#[allow(clippy::too_many_arguments)]
fn search(
    setup: &Setup,
    w: f64,
    floor: usize,
    start: (f64, u128),
    sweeps: usize,
    maximise: bool,
    u: &mut Vec<C64>,
    scratch: &mut Scratch,
) -> Result<f64, StudyError> {
    let np = setup.params();
    let (best, mask) = start;
    let p: Vec<f64> = (0..np)
        .map(|l| {
            if l < 128 && mask >> l & 1 == 1 {
                setup.hi[l]
            } else {
                setup.lo[l]
            }
        })
        .collect();
    search_from(setup, w, floor, (best, p), sweeps, maximise, u, scratch)
}

/// Coordinate search from the point `start.1`, whose value is `start.0`.
#[allow(clippy::too_many_arguments)]
fn search_from(
    setup: &Setup,
    w: f64,
    floor: usize,
    start: (f64, Vec<f64>),
    sweeps: usize,
    maximise: bool,
    u: &mut Vec<C64>,
    scratch: &mut Scratch,
) -> Result<f64, StudyError> {
    let np = setup.params();
    let (mut best, mut p) = start;
    let better = |a: f64, b: f64| if maximise { a > b } else { a < b };
    for _ in 0..sweeps {
        for l in 0..np {
            let (lo, hi) = (setup.lo[l], setup.hi[l]);
            if hi <= lo {
                continue;
            }
            let keep = p[l];
            let mut best_v = keep;
            let step = (hi - lo) / (SEARCH_POINTS - 1) as f64;
            for s in 0..SEARCH_POINTS {
                p[l] = lo + step * s as f64;
                magnitudes(setup, &p, w, u, scratch)?;
                let a = u[floor].norm();
                if better(a, best) {
                    best = a;
                    best_v = p[l];
                }
            }
            // Golden-section refinement between the best grid point's neighbours: an interior
            // extreme (a resonance crossing the frequency) is sharp when damping is light.
            let (mut a, mut b) = ((best_v - step).max(lo), (best_v + step).min(hi));
            let r = 0.5 * (5f64.sqrt() - 1.0);
            for _ in 0..GOLDEN_STEPS {
                let x1 = b - r * (b - a);
                let x2 = a + r * (b - a);
                p[l] = x1;
                magnitudes(setup, &p, w, u, scratch)?;
                let f1 = u[floor].norm();
                p[l] = x2;
                magnitudes(setup, &p, w, u, scratch)?;
                let f2 = u[floor].norm();
                for (x, f) in [(x1, f1), (x2, f2)] {
                    if better(f, best) {
                        best = f;
                        best_v = x;
                    }
                }
                if better(f1, f2) {
                    b = x2;
                } else {
                    a = x1;
                }
            }
            p[l] = best_v;
        }
    }
    Ok(best)
}
