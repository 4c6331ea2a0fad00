//! Owns what one identified pole means: the map between a discrete-time eigenvalue μ and the
//! continuous pole λ = ln(μ)/Δt, natural frequency and damping ratio, and the figures of a
//! complex mode shape (complex MAC, MPC, MPD, real normalisation). Pure arithmetic; knows
//! nothing of how the pole was found.

use nalgebra::Complex;
use std::f64::consts::{FRAC_PI_2, PI, TAU};

/// Complex double.
pub type C64 = Complex<f64>;

/// The continuous pole λ = ln(μ)/Δt of the discrete eigenvalue μ sampled every `dt_s`
/// (principal logarithm, so |Im λ| ≤ π/Δt: the Nyquist band).
pub fn continuous_pole(mu: C64, dt_s: f64) -> C64 {
    mu.ln() / dt_s
}

/// The discrete eigenvalue μ = exp(λ·Δt) of the continuous pole λ.
pub fn discrete_pole(lambda: C64, dt_s: f64) -> C64 {
    (lambda * dt_s).exp()
}

/// The continuous pole of a mode of natural frequency `frequency_hz` and damping ratio
/// `damping_ratio` (< 1), upper half plane: λ = −ζω + iω√(1−ζ²).
pub fn pole_of_mode(frequency_hz: f64, damping_ratio: f64) -> C64 {
    let w = TAU * frequency_hz;
    C64::new(
        -damping_ratio * w,
        w * (1.0 - damping_ratio * damping_ratio).sqrt(),
    )
}

/// Natural (undamped) frequency |λ|/2π of a continuous pole, in Hz.
pub fn natural_frequency_hz(lambda: C64) -> f64 {
    lambda.norm() / TAU
}

/// Damping ratio −Re λ/|λ| of a continuous pole, fraction of critical; 0 for λ = 0.
pub fn damping_ratio(lambda: C64) -> f64 {
    let magnitude = lambda.norm();
    if magnitude > 0.0 {
        -lambda.re / magnitude
    } else {
        0.0
    }
}

/// Complex MAC |aᴴb|² / ((aᴴa)(bᴴb)): 1 for shapes equal up to a complex factor, 0 for
/// orthogonal ones. `None` for shapes of different lengths or an all-zero shape.
pub fn complex_mac(a: &[C64], b: &[C64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let cross: C64 = a.iter().zip(b).map(|(x, y)| x.conj() * y).sum();
    let norms = a.iter().map(C64::norm_sqr).sum::<f64>() * b.iter().map(C64::norm_sqr).sum::<f64>();
    (norms > 0.0).then(|| cross.norm_sqr() / norms)
}

/// How close a complex shape is to a real (normal, in-phase or anti-phase) one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeQuality {
    /// Modal phase collinearity, 0 to 1: ((σ₁ − σ₂)/(σ₁ + σ₂))², σ the eigenvalues of the
    /// 2×2 scatter matrix of (Re φ, Im φ). 1 when every entry lies on one line through the
    /// origin of the complex plane (a real mode times any complex factor), 0 for a circle.
    pub mpc: f64,
    /// Mean phase deviation, degrees, 0 to 90: the magnitude-weighted mean angle between each
    /// entry and the principal line of the shape. 0 for a real mode.
    pub mpd_deg: f64,
    /// Angle of the principal line in the complex plane, radians in (−π/2, π/2].
    pub principal_angle_rad: f64,
}

/// The MPC, MPD and principal direction of a complex shape (Pappa et al. 1993 for MPC in its
/// eigenvalue form, Reynders et al. 2012 for MPD). `None` for an all-zero shape.
pub fn shape_quality(shape: &[C64]) -> Option<ShapeQuality> {
    let sxx: f64 = shape.iter().map(|z| z.re * z.re).sum();
    let syy: f64 = shape.iter().map(|z| z.im * z.im).sum();
    let sxy: f64 = shape.iter().map(|z| z.re * z.im).sum();
    let total = sxx + syy;
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let half_gap = ((0.5 * (sxx - syy)).powi(2) + sxy * sxy).sqrt();
    // σ₁ − σ₂ = 2·half_gap and σ₁ + σ₂ = trace.
    let mpc = (2.0 * half_gap / total).powi(2).min(1.0);
    let angle = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    let mut weighted = 0.0;
    let mut weight = 0.0;
    for z in shape {
        let magnitude = z.norm();
        if magnitude > 0.0 {
            // Distance between two lines through the origin: angles are taken modulo π.
            let d = (z.arg() - angle).rem_euclid(PI);
            weighted += magnitude * d.min(PI - d);
            weight += magnitude;
        }
    }
    Some(ShapeQuality {
        mpc,
        mpd_deg: (weighted / weight).min(FRAC_PI_2).to_degrees(),
        principal_angle_rad: angle,
    })
}

/// The real shape nearest to a complex one: rotated so its principal line is the real axis,
/// real part kept, scaled so its largest-magnitude entry is +1. `None` for an all-zero shape.
pub fn real_normalised(shape: &[C64]) -> Option<Vec<f64>> {
    let quality = shape_quality(shape)?;
    let rotation = C64::from_polar(1.0, -quality.principal_angle_rad);
    let real: Vec<f64> = shape.iter().map(|z| (z * rotation).re).collect();
    scale_to_unit_peak(&real)
}

/// `shape` scaled so that its largest-magnitude entry is +1. `None` for an all-zero or
/// non-finite shape.
pub fn scale_to_unit_peak(shape: &[f64]) -> Option<Vec<f64>> {
    let peak = shape
        .iter()
        .copied()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))?;
    (peak != 0.0 && peak.is_finite()).then(|| shape.iter().map(|x| x / peak).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discrete_pole_maps_back_to_the_frequency_and_damping_it_came_from() {
        // μ = exp(λΔt) and λ = ln(μ)/Δt are inverse on the Nyquist strip; the round trip
        // loses only a few ulps of |λ|.
        for (f_hz, zeta, dt_s) in [(7.1137, 0.002, 1e-3), (28.8, 0.05, 5e-3), (95.0, 0.3, 4e-3)] {
            let lambda = pole_of_mode(f_hz, zeta);
            let mu = discrete_pole(lambda, dt_s);
            // Closed form of the discrete pole: modulus e^{−ζωΔt}, angle ω_dΔt.
            let w = TAU * f_hz;
            assert!((mu.norm() - (-zeta * w * dt_s).exp()).abs() < 1e-14);
            assert!((mu.arg() - w * (1.0 - zeta * zeta).sqrt() * dt_s).abs() < 1e-13);
            let back = continuous_pole(mu, dt_s);
            assert!(
                (natural_frequency_hz(back) - f_hz).abs() < 1e-11 * f_hz,
                "{back}"
            );
            assert!((damping_ratio(back) - zeta).abs() < 1e-11, "{back}");
        }
    }

    #[test]
    fn complex_mac_ignores_a_complex_scale_factor() {
        let a = [C64::new(1.0, 0.2), C64::new(-0.5, 0.1), C64::new(0.3, -0.7)];
        let factor = C64::from_polar(2.5, 1.1);
        let b: Vec<C64> = a.iter().map(|z| z * factor).collect();
        let mac = complex_mac(&a, &b).expect("defined");
        assert!((mac - 1.0).abs() < 1e-14);
        let orthogonal = [C64::new(0.0, 1.0), C64::new(0.0, 0.0)];
        let other = [C64::new(0.0, 0.0), C64::new(1.0, 1.0)];
        assert_eq!(complex_mac(&orthogonal, &other), Some(0.0));
        assert_eq!(complex_mac(&a, &orthogonal), None);
    }

    #[test]
    fn a_rotated_real_shape_has_full_collinearity_and_no_phase_deviation() {
        let real = [0.5, 1.0, -0.8];
        let rotation = C64::from_polar(3.0, 0.7);
        let shape: Vec<C64> = real.iter().map(|x| rotation * x).collect();
        let quality = shape_quality(&shape).expect("defined");
        assert!((quality.mpc - 1.0).abs() < 1e-12);
        assert!(quality.mpd_deg < 1e-6);
        let back = real_normalised(&shape).expect("defined");
        for (b, r) in back.iter().zip(real) {
            assert!((b - r).abs() < 1e-12, "{back:?}");
        }
    }

    #[test]
    fn a_circular_shape_has_zero_collinearity() {
        // Entries 1, i, −1, −i: the scatter is isotropic, σ₁ = σ₂, so MPC = 0 and every
        // entry lies 45° on average from any line (two on it, two at 90°).
        let shape = [
            C64::new(1.0, 0.0),
            C64::new(0.0, 1.0),
            C64::new(-1.0, 0.0),
            C64::new(0.0, -1.0),
        ];
        let quality = shape_quality(&shape).expect("defined");
        assert!(quality.mpc < 1e-15);
        assert!((quality.mpd_deg - 45.0).abs() < 1e-9, "{quality:?}");
    }

    #[test]
    fn mpd_of_a_two_entry_shape_is_the_weighted_half_angle() {
        // Entries of equal magnitude at ±10°: the principal line bisects them at 0°, each
        // deviates 10°; MPC = cos²(20°) by the closed form of the 2×2 scatter.
        let shape = [
            C64::from_polar(1.0, 10f64.to_radians()),
            C64::from_polar(1.0, -10f64.to_radians()),
        ];
        let quality = shape_quality(&shape).expect("defined");
        assert!((quality.mpd_deg - 10.0).abs() < 1e-9);
        assert!((quality.mpc - 20f64.to_radians().cos().powi(2)).abs() < 1e-12);
        assert!(quality.principal_angle_rad.abs() < 1e-12);
    }

    #[test]
    fn an_all_zero_shape_has_no_quality_and_no_normal_form() {
        let zero = [C64::new(0.0, 0.0); 3];
        assert!(shape_quality(&zero).is_none());
        assert!(real_normalised(&zero).is_none());
    }
}
