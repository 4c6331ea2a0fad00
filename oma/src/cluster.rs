//! Owns automatic mode picking from a stabilisation diagram: stable poles grouped across model
//! orders into clusters, one mode per cluster with its mean frequency and damping and their
//! spread across orders. Knows nothing of how the poles were identified.

use serde::{Deserialize, Serialize};

use crate::pole::{complex_mac, real_normalised, scale_to_unit_peak};
use crate::stabilisation::StabilisedPole;

/// Default relative distance from a cluster's mean frequency within which a pole may join it.
pub const fn default_cluster_frequency_tolerance() -> f64 {
    0.02
}
/// Default smallest MAC between a pole and a cluster's first pole for the pole to join it.
pub const fn default_cluster_min_mac() -> f64 {
    0.95
}
/// Default smallest share of the evaluated orders (all but the lowest, which cannot be
/// stable) that a cluster must span to count as a mode.
pub const fn default_min_order_fraction() -> f64 {
    0.3
}

/// Default smallest mean MPC of a mode's cluster. The modes of a lightly damped structure are
/// nearly real (MPC above 0.99 on every record tested here, simulated or Cristallo's); noise
/// modes are not (a cluster at 31.1 Hz with MPC 0.57 in `examples/bench_ssi.rs`).
pub const fn default_min_mpc() -> f64 {
    0.7
}

/// How stable poles are grouped into modes.
///
/// Only poles stable in frequency, damping and shape enter. Taken by ascending frequency
/// (then order), each pole joins the cluster whose mean frequency is nearest, if that mean is
/// within `frequency_tolerance` (relative) and its shape's MAC with the cluster's first pole is
/// at least `min_mac`; otherwise it opens a new cluster. A cluster keeps one pole per order
/// (the one nearest the cluster's median frequency). A cluster is a mode when it has poles in
/// at least `min_order_fraction` of the orders that could be stable (and in at least two) and
/// its poles' mean MPC is at least `min_mpc`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModePicking {
    /// Relative frequency distance to a cluster's mean, fraction; in (0, 1).
    #[serde(default = "default_cluster_frequency_tolerance")]
    pub frequency_tolerance: f64,
    /// Smallest MAC with the cluster's first pole; in (0, 1].
    #[serde(default = "default_cluster_min_mac")]
    pub min_mac: f64,
    /// Smallest share of the stable-capable orders a mode's cluster spans; in (0, 1].
    #[serde(default = "default_min_order_fraction")]
    pub min_order_fraction: f64,
    /// Smallest mean MPC of a mode's poles; in [0, 1].
    #[serde(default = "default_min_mpc")]
    pub min_mpc: f64,
}

impl Default for ModePicking {
    fn default() -> Self {
        Self {
            frequency_tolerance: default_cluster_frequency_tolerance(),
            min_mac: default_cluster_min_mac(),
            min_order_fraction: default_min_order_fraction(),
            min_mpc: default_min_mpc(),
        }
    }
}

impl ModePicking {
    /// Every rule these settings break, each field named under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let f = self.frequency_tolerance;
        if !(f > 0.0 && f < 1.0) {
            problems.push(format!(
                "{prefix}frequency_tolerance = {f} must be in (0, 1)"
            ));
        }
        let m = self.min_mac;
        if !(m > 0.0 && m <= 1.0) {
            problems.push(format!("{prefix}min_mac = {m} must be in (0, 1]"));
        }
        let o = self.min_order_fraction;
        if !(o > 0.0 && o <= 1.0) {
            problems.push(format!(
                "{prefix}min_order_fraction = {o} must be in (0, 1]"
            ));
        }
        let c = self.min_mpc;
        if !(0.0..=1.0).contains(&c) {
            problems.push(format!("{prefix}min_mpc = {c} must be in [0, 1]"));
        }
        problems
    }
}

/// One mode picked from the stabilisation diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifiedMode {
    /// Mean natural frequency of the cluster's poles, Hz.
    pub frequency_hz: f64,
    /// Sample standard deviation of the frequency across the cluster's orders, Hz (0 for a
    /// single pole).
    pub frequency_std_hz: f64,
    /// Mean damping ratio of the cluster's poles, fraction of critical.
    pub damping_ratio: f64,
    /// Sample standard deviation of the damping ratio across orders.
    pub damping_ratio_std: f64,
    /// Real-normalised mode shape, one entry per channel, largest-magnitude entry +1: the mean
    /// of the poles' real-normalised shapes (signs aligned), scaled again.
    pub shape: Vec<f64>,
    /// Mean MPC of the cluster's shapes, 0 to 1.
    pub mpc: f64,
    /// Model orders of the cluster's poles, ascending.
    pub orders: Vec<usize>,
}

/// Picks modes from the poles of a stabilisation diagram whose orders were `orders` (all
/// evaluated orders, ascending), by `picking`. Modes come out by ascending frequency.
pub fn pick_modes(
    poles: &[StabilisedPole],
    orders: &[usize],
    picking: &ModePicking,
) -> Vec<IdentifiedMode> {
    let mut stable: Vec<&StabilisedPole> = poles.iter().filter(|p| p.is_stable()).collect();
    stable.sort_by(|a, b| {
        a.frequency_hz
            .total_cmp(&b.frequency_hz)
            .then(a.order.cmp(&b.order))
    });
    let mut clusters: Vec<Vec<&StabilisedPole>> = Vec::new();
    for pole in stable {
        let shape = pole.shape();
        let best = clusters
            .iter()
            .enumerate()
            .filter_map(|(k, cluster)| {
                let mean = mean(cluster.iter().map(|p| p.frequency_hz));
                let distance = (pole.frequency_hz - mean).abs() / mean;
                let mac = complex_mac(&cluster[0].shape(), &shape).unwrap_or(0.0);
                (distance <= picking.frequency_tolerance && mac >= picking.min_mac)
                    .then_some((k, distance))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, _)) => clusters[k].push(pole),
            None => clusters.push(vec![pole]),
        }
    }
    let capable = orders.len().saturating_sub(1);
    let needed = ((picking.min_order_fraction * capable as f64).ceil() as usize).max(2);
    let mut modes: Vec<IdentifiedMode> = clusters
        .into_iter()
        .map(one_pole_per_order)
        .filter(|cluster| cluster.len() >= needed)
        .filter_map(|cluster| summarise(&cluster))
        .filter(|mode| mode.mpc >= picking.min_mpc)
        .collect();
    modes.sort_by(|a, b| a.frequency_hz.total_cmp(&b.frequency_hz));
    modes
}

/// Keeps, for each order, the pole nearest the cluster's median frequency; sorted by order.
fn one_pole_per_order(cluster: Vec<&StabilisedPole>) -> Vec<&StabilisedPole> {
    let mut frequencies: Vec<f64> = cluster.iter().map(|p| p.frequency_hz).collect();
    frequencies.sort_by(f64::total_cmp);
    let median = frequencies[frequencies.len() / 2];
    let mut kept: Vec<&StabilisedPole> = Vec::new();
    for pole in cluster {
        match kept.iter_mut().find(|k| k.order == pole.order) {
            Some(k) => {
                if (pole.frequency_hz - median).abs() < (k.frequency_hz - median).abs() {
                    *k = pole;
                }
            }
            None => kept.push(pole),
        }
    }
    kept.sort_by_key(|p| p.order);
    kept
}

fn summarise(cluster: &[&StabilisedPole]) -> Option<IdentifiedMode> {
    let shapes: Vec<Vec<f64>> = cluster
        .iter()
        .filter_map(|p| real_normalised(&p.shape()))
        .collect();
    let first = shapes.first()?;
    let mut sum = vec![0.0; first.len()];
    for shape in &shapes {
        let sign = if first.iter().zip(shape).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
            -1.0
        } else {
            1.0
        };
        for (s, x) in sum.iter_mut().zip(shape) {
            *s += sign * x;
        }
    }
    let (frequency_hz, frequency_std_hz) = mean_and_std(cluster.iter().map(|p| p.frequency_hz));
    let (damping_ratio, damping_ratio_std) = mean_and_std(cluster.iter().map(|p| p.damping_ratio));
    Some(IdentifiedMode {
        frequency_hz,
        frequency_std_hz,
        damping_ratio,
        damping_ratio_std,
        shape: scale_to_unit_peak(&sum)?,
        mpc: mean(cluster.iter().map(|p| p.mpc)),
        orders: cluster.iter().map(|p| p.order).collect(),
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / count.max(1) as f64
}

/// Mean and sample standard deviation (n − 1 in the denominator; 0 for one value).
pub(crate) fn mean_and_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count();
    let m = mean(values.clone());
    let std = if n > 1 {
        (values.map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    (m, std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stabilisation::tests::pole;
    use crate::stabilisation::{StabilityCriteria, flag_stability};

    #[test]
    fn stable_poles_across_orders_become_one_mode_each_with_their_spread() {
        let orders: Vec<usize> = (2..=12).step_by(2).collect();
        let bending = [0.45, 0.8, 1.0];
        let sway = [1.0, 0.2, -0.9];
        let mut poles = Vec::new();
        // Mode A at 7 Hz from order 4 on, within ±0.2 %; mode B at 20 Hz from order 6 on;
        // a noise pole wandering by 5 % per order; a heavily damped one; a lone pole at 40 Hz.
        let wobble = [0.0, 0.001, -0.002, 0.0015, -0.001, 0.0005];
        for (k, &order) in orders.iter().enumerate() {
            if order >= 4 {
                poles.push(pole(
                    order,
                    7.0 * (1.0 + wobble[k]),
                    0.02 * (1.0 + wobble[k]),
                    &bending,
                ));
            }
            if order >= 6 {
                poles.push(pole(order, 20.0 * (1.0 - wobble[k]), 0.01, &sway));
            }
            poles.push(pole(order, 50.0 * 1.05f64.powi(k as i32), 0.03, &sway));
            poles.push(pole(order, 33.0, 0.5, &bending));
        }
        poles.push(pole(12, 40.0, 0.01, &bending));
        flag_stability(&mut poles, &StabilityCriteria::default());
        let modes = pick_modes(&poles, &orders, &ModePicking::default());
        assert_eq!(modes.len(), 2, "{modes:#?}");
        // Mode A is stable at orders 6..=12 (order 4 has no match below): four poles.
        let a = &modes[0];
        assert_eq!(a.orders, [6, 8, 10, 12]);
        let fa: Vec<f64> = wobble[2..].iter().map(|w| 7.0 * (1.0 + w)).collect();
        let mean_a = fa.iter().sum::<f64>() / 4.0;
        let std_a = (fa.iter().map(|f| (f - mean_a).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((a.frequency_hz - mean_a).abs() < 1e-12);
        assert!((a.frequency_std_hz - std_a).abs() < 1e-12);
        assert!((a.damping_ratio - 0.02 * mean_a / 7.0).abs() < 1e-12);
        for (s, b) in a.shape.iter().zip([0.45, 0.8, 1.0]) {
            assert!((s - b).abs() < 1e-12, "{:?}", a.shape);
        }
        let b = &modes[1];
        assert_eq!(b.orders, [8, 10, 12]);
        assert_eq!(b.damping_ratio_std, 0.0);
        for (s, x) in b.shape.iter().zip(sway) {
            assert!((s - x).abs() < 1e-12, "{:?}", b.shape);
        }
    }

    #[test]
    fn a_stable_cluster_of_complex_shapes_is_not_a_mode() {
        // Shape entries 1, i, −1 (MPC from the 2×2 scatter: Sxx = 2, Syy = 1, Sxy = 0, so
        // ((2 − 1)/(2 + 1))² = 1/9), stable over every order.
        let orders: Vec<usize> = (2..=10).step_by(2).collect();
        let mut poles: Vec<StabilisedPole> = orders
            .iter()
            .map(|&order| {
                let mut p = pole(order, 12.0, 0.03, &[1.0, 0.0, -1.0]);
                p.shape_im = vec![0.0, 1.0, 0.0];
                p.mpc = 1.0 / 9.0;
                p
            })
            .collect();
        flag_stability(&mut poles, &StabilityCriteria::default());
        assert!(poles[1..].iter().all(StabilisedPole::is_stable));
        assert!(pick_modes(&poles, &orders, &ModePicking::default()).is_empty());
        let any_mpc = ModePicking {
            min_mpc: 0.0,
            ..ModePicking::default()
        };
        assert_eq!(pick_modes(&poles, &orders, &any_mpc).len(), 1);
    }

    #[test]
    fn a_cluster_shorter_than_the_order_fraction_is_not_a_mode() {
        let orders: Vec<usize> = (2..=22).step_by(2).collect();
        let shape = [1.0, 0.5];
        // Stable at orders 4 and 6 only: 2 of 10 stable-capable orders < 30 %.
        let mut poles = vec![
            pole(2, 9.0, 0.02, &shape),
            pole(4, 9.0, 0.02, &shape),
            pole(6, 9.0, 0.02, &shape),
        ];
        flag_stability(&mut poles, &StabilityCriteria::default());
        assert!(pick_modes(&poles, &orders, &ModePicking::default()).is_empty());
        let lenient = ModePicking {
            min_order_fraction: 0.2,
            ..ModePicking::default()
        };
        assert_eq!(pick_modes(&poles, &orders, &lenient).len(), 1);
    }
}
