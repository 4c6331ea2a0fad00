//! Owns the stabilisation diagram's flags: for each pole of each model order, whether its
//! frequency, damping and shape are repeated by a pole of the next lower order. Works on any
//! list of poles, from SSI or built by hand; knows nothing of how they were identified.

use serde::{Deserialize, Serialize};

use crate::pole::{C64, complex_mac};

/// Default relative frequency tolerance of a stable pole: 1 %.
pub const fn default_frequency_tolerance() -> f64 {
    0.01
}
/// Default relative damping tolerance of a stable pole: 5 %.
pub const fn default_damping_tolerance() -> f64 {
    0.05
}
/// Default smallest MAC between the shapes of a stable pole and its match: 0.98.
pub const fn default_min_mac() -> f64 {
    0.98
}
/// Default upper bound of a physical damping ratio: 20 % of critical. Structures of interest
/// here are lightly damped; poles above this are noise or computational modes.
pub const fn default_max_damping_ratio() -> f64 {
    0.2
}

/// When a pole counts as physical and as stable.
///
/// A pole is *physical* when 0 < ζ < `max_damping_ratio` (one of each conjugate pair is kept
/// upstream). A physical pole of order n is compared with the physical pole of the next lower
/// order whose frequency is nearest; it is stable in frequency when |f − f'|/f' ≤
/// `frequency_tolerance`, in damping when |ζ − ζ'|/ζ' ≤ `damping_tolerance`, in shape when
/// the complex MAC of the two shapes is at least `min_mac`. The lowest order has no lower one,
/// so none of its poles is stable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityCriteria {
    /// Largest relative change of natural frequency, fraction (0.01 = 1 %); in (0, 1).
    #[serde(default = "default_frequency_tolerance")]
    pub frequency_tolerance: f64,
    /// Largest relative change of damping ratio, fraction; in (0, 1].
    #[serde(default = "default_damping_tolerance")]
    pub damping_tolerance: f64,
    /// Smallest MAC between the two complex shapes; in (0, 1].
    #[serde(default = "default_min_mac")]
    pub min_mac: f64,
    /// Largest damping ratio of a physical pole, fraction of critical; in (0, 1].
    #[serde(default = "default_max_damping_ratio")]
    pub max_damping_ratio: f64,
}

impl Default for StabilityCriteria {
    fn default() -> Self {
        Self {
            frequency_tolerance: default_frequency_tolerance(),
            damping_tolerance: default_damping_tolerance(),
            min_mac: default_min_mac(),
            max_damping_ratio: default_max_damping_ratio(),
        }
    }
}

impl StabilityCriteria {
    /// Every rule these criteria break, each field named under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |name: &str, value: f64, ok: bool, rule: &str| {
            if !ok {
                problems.push(format!("{prefix}{name} = {value} must be {rule}"));
            }
        };
        let f = self.frequency_tolerance;
        check("frequency_tolerance", f, f > 0.0 && f < 1.0, "in (0, 1)");
        let d = self.damping_tolerance;
        check("damping_tolerance", d, d > 0.0 && d <= 1.0, "in (0, 1]");
        let m = self.min_mac;
        check("min_mac", m, m > 0.0 && m <= 1.0, "in (0, 1]");
        let z = self.max_damping_ratio;
        check("max_damping_ratio", z, z > 0.0 && z <= 1.0, "in (0, 1]");
        problems
    }

    /// Whether a pole of damping ratio `damping_ratio` is physical.
    pub fn is_physical(&self, damping_ratio: f64) -> bool {
        damping_ratio > 0.0 && damping_ratio < self.max_damping_ratio
    }
}

/// One pole of the stabilisation diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilisedPole {
    /// Model order (state dimension n) that produced the pole.
    pub order: usize,
    /// Natural frequency |λ|/2π, Hz.
    pub frequency_hz: f64,
    /// Damping ratio −Re λ/|λ|, fraction of critical.
    pub damping_ratio: f64,
    /// Real parts of the complex mode shape, one per channel, scaled so the largest-magnitude
    /// entry is 1 + 0i.
    pub shape_re: Vec<f64>,
    /// Imaginary parts of the complex mode shape, as `shape_re`.
    pub shape_im: Vec<f64>,
    /// Modal phase collinearity of the shape, 0 to 1 (1: a real mode).
    pub mpc: f64,
    /// Mean phase deviation of the shape, degrees (0: a real mode).
    pub mpd_deg: f64,
    /// 0 < ζ < the criteria's `max_damping_ratio`.
    pub physical: bool,
    /// Frequency repeated by the next lower order within tolerance.
    pub stable_frequency: bool,
    /// Damping repeated by the next lower order within tolerance.
    pub stable_damping: bool,
    /// Shape repeated by the next lower order (MAC at least the minimum).
    pub stable_shape: bool,
}

impl StabilisedPole {
    /// A physical pole stable in frequency, damping and shape.
    pub fn is_stable(&self) -> bool {
        self.physical && self.stable_frequency && self.stable_damping && self.stable_shape
    }

    /// The complex shape.
    pub fn shape(&self) -> Vec<C64> {
        self.shape_re
            .iter()
            .zip(&self.shape_im)
            .map(|(&re, &im)| C64::new(re, im))
            .collect()
    }
}

/// Sets `physical` and the three stability flags of every pole in `poles` (any order of the
/// list; poles are grouped by their `order` field) against `criteria`.
pub fn flag_stability(poles: &mut [StabilisedPole], criteria: &StabilityCriteria) {
    let mut orders: Vec<usize> = poles.iter().map(|p| p.order).collect();
    orders.sort_unstable();
    orders.dedup();
    for pole in poles.iter_mut() {
        pole.physical = criteria.is_physical(pole.damping_ratio) && pole.frequency_hz > 0.0;
    }
    let mut flags = Vec::with_capacity(poles.len());
    for pole in poles.iter() {
        let lower_order = match orders.binary_search(&pole.order) {
            Ok(k) if k > 0 => Some(orders[k - 1]),
            _ => None,
        };
        let lower = lower_order.and_then(|lower| {
            poles
                .iter()
                .filter(|p| p.order == lower && p.physical)
                .min_by(|a, b| {
                    (a.frequency_hz - pole.frequency_hz)
                        .abs()
                        .total_cmp(&(b.frequency_hz - pole.frequency_hz).abs())
                })
        });
        flags.push(match (pole.physical, lower) {
            (true, Some(lower)) => {
                let df = (pole.frequency_hz - lower.frequency_hz).abs() / lower.frequency_hz;
                let dz = (pole.damping_ratio - lower.damping_ratio).abs() / lower.damping_ratio;
                let mac = complex_mac(&pole.shape(), &lower.shape()).unwrap_or(0.0);
                (
                    df <= criteria.frequency_tolerance,
                    dz <= criteria.damping_tolerance,
                    mac >= criteria.min_mac,
                )
            }
            _ => (false, false, false),
        });
    }
    for (pole, (f, d, s)) in poles.iter_mut().zip(flags) {
        pole.stable_frequency = f;
        pole.stable_damping = d;
        pole.stable_shape = s;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hand-built pole with a real shape.
    pub(crate) fn pole(order: usize, f: f64, zeta: f64, shape: &[f64]) -> StabilisedPole {
        StabilisedPole {
            order,
            frequency_hz: f,
            damping_ratio: zeta,
            shape_re: shape.to_vec(),
            shape_im: vec![0.0; shape.len()],
            mpc: 1.0,
            mpd_deg: 0.0,
            physical: false,
            stable_frequency: false,
            stable_damping: false,
            stable_shape: false,
        }
    }

    fn flags(p: &StabilisedPole) -> (bool, bool, bool, bool) {
        (
            p.physical,
            p.stable_frequency,
            p.stable_damping,
            p.stable_shape,
        )
    }

    #[test]
    fn flags_follow_the_documented_tolerances_against_the_next_lower_order() {
        let a = [1.0, 0.5, 0.2];
        // Shape at 0.2 rad from `a` in its plane: MAC = cos²(0.2) = 0.9605 < 0.98.
        let norm_a = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let unit_a: Vec<f64> = a.iter().map(|x| x / norm_a).collect();
        let ortho = [-0.5 / 1.0, 1.0, 0.0];
        let norm_o = ortho.iter().map(|x| x * x).sum::<f64>().sqrt();
        let turned: Vec<f64> = unit_a
            .iter()
            .zip(ortho)
            .map(|(u, o)| 0.2f64.cos() * u + 0.2f64.sin() * o / norm_o)
            .collect();
        let mut poles = vec![
            pole(2, 10.0, 0.020, &a),
            pole(4, 10.09, 0.0209, &a),     // +0.9 % f, +4.5 % ζ: stable
            pole(4, 30.0, 0.3, &a),         // ζ above 20 %: not physical
            pole(6, 10.2, 0.0209, &a),      // +1.09 % f against 10.09: unstable in f
            pole(6, 10.1, 0.0220, &turned), // ζ +5.3 %, MAC 0.96: stable in f only
            pole(8, 10.1, 0.0220, &a),      // matches 10.1 (nearest), MAC against turned
        ];
        flag_stability(&mut poles, &StabilityCriteria::default());
        assert_eq!(flags(&poles[0]), (true, false, false, false));
        assert_eq!(flags(&poles[1]), (true, true, true, true));
        assert!(poles[1].is_stable());
        assert_eq!(flags(&poles[2]), (false, false, false, false));
        assert_eq!(flags(&poles[3]), (true, false, true, true));
        assert_eq!(flags(&poles[4]), (true, true, false, false));
        assert_eq!(flags(&poles[5]), (true, true, true, false));
        let mac = complex_mac(&poles[5].shape(), &poles[4].shape()).expect("defined");
        assert!((mac - 0.2f64.cos().powi(2)).abs() < 1e-12, "{mac}");
    }

    #[test]
    fn criteria_report_every_bad_field() {
        let bad = StabilityCriteria {
            frequency_tolerance: 0.0,
            damping_tolerance: f64::NAN,
            min_mac: 1.5,
            max_damping_ratio: -0.1,
        };
        let problems = bad.problems("stability.");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("stability.frequency_tolerance = 0"));
        assert!(StabilityCriteria::default().problems("").is_empty());
    }
}
