//! Owns the modal assurance criterion (MAC): how alike two mode shapes are, from 1 (parallel)
//! to 0 (orthogonal), whatever their scaling or sign. Used to pair modes across model
//! versions and, later, identified modes with model modes. Pure arithmetic on slices.

/// The MAC of two mode shapes given over the same DOFs: |aᵀb|² / ((aᵀa)(bᵀb)).
///
/// `None` when the shapes have different lengths (they are not over the same DOFs; the caller
/// decides which DOFs to compare) or either is all zeros (no direction to compare).
#[must_use]
pub fn mac(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let norms = dot(a, a) * dot(b, b);
    (norms > 0.0).then(|| dot(a, b).powi(2) / norms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn mac_is_one_for_parallel_shapes_of_any_scale_and_sign() {
        let m = mac(&[1.0, 2.0, 3.0], &[-2.0, -4.0, -6.0]).unwrap();
        assert!((m - 1.0).abs() < 1e-15);
    }

    #[test]
    fn mac_is_the_squared_cosine_of_the_angle_between_the_shapes() {
        assert!(mac(&[1.0, 0.0], &[0.0, 5.0]).unwrap().abs() < 1e-15);
        // 45°: cos² = 0.5; 60°: cos² = 0.25.
        assert!((mac(&[1.0, 0.0], &[1.0, 1.0]).unwrap() - 0.5).abs() < 1e-15);
        let (s, c) = (60f64.to_radians().sin(), 60f64.to_radians().cos());
        assert!((mac(&[1.0, 0.0], &[c, s]).unwrap() - 0.25).abs() < 1e-15);
    }

    #[test]
    fn mac_is_undefined_for_a_zero_shape_or_shapes_over_different_dofs() {
        assert_eq!(mac(&[0.0, 0.0], &[1.0, 1.0]), None);
        assert_eq!(mac(&[1.0, 0.0], &[1.0, 0.0, 0.0]), None);
    }

    #[test]
    fn closed_form_modes_of_a_uniform_shear_chain_are_mutually_orthogonal() {
        // A fixed-free chain of N equal masses and equal storey stiffnesses has the shapes
        // φ_j(k) = sin((2j − 1)·k·π / (2N + 1)), k = 1..N (a discrete quarter-wave); equal
        // masses make them plain-orthogonal, so their MAC is 0 off the diagonal, 1 on it.
        let n = 5;
        let shape = |j: usize| -> Vec<f64> {
            (1..=n)
                .map(|k| {
                    ((2 * j - 1) as f64 * k as f64 * std::f64::consts::PI / (2 * n + 1) as f64)
                        .sin()
                })
                .collect()
        };
        for i in 1..=n {
            for j in 1..=n {
                let m = mac(&shape(i), &shape(j)).unwrap();
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((m - expected).abs() < 1e-12, "MAC({i},{j}) = {m}");
            }
        }
    }

    #[test]
    fn the_solved_modes_of_a_uniform_chain_match_the_closed_form_shapes() {
        // Independent check of the eigen-solution through the MAC: each solved shape is
        // parallel to its closed-form quarter-wave shape.
        let n = 4;
        let m = nalgebra::DMatrix::<f64>::identity(n, n) * 2.0;
        let k_n_per_m = 1000.0;
        let mut k = nalgebra::DMatrix::<f64>::zeros(n, n);
        for i in 0..n {
            // Storey i joins floor i to the one below (the ground for i = 0).
            k[(i, i)] += k_n_per_m;
            if i > 0 {
                k[(i - 1, i - 1)] += k_n_per_m;
                k[(i, i - 1)] -= k_n_per_m;
                k[(i - 1, i)] -= k_n_per_m;
            }
        }
        let modes = crate::Modes::solve(&m, &k).unwrap();
        for j in 1..=n {
            let closed: Vec<f64> = (1..=n)
                .map(|f| {
                    ((2 * j - 1) as f64 * f as f64 * std::f64::consts::PI / (2 * n + 1) as f64)
                        .sin()
                })
                .collect();
            let solved: Vec<f64> = modes.shapes.column(j - 1).iter().copied().collect();
            let m = mac(&closed, &solved).unwrap();
            assert!((m - 1.0).abs() < 1e-10, "mode {j}: MAC {m}");
        }
    }
}
