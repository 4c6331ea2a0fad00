//! Owns the 12-DOF Euler–Bernoulli space-frame element: its stiffness and consistent mass
//! in local axes, and their rotation to global axes. Knows nothing about legs or floors.
//!
//! Local axes: 1 along the element (node a → node b), 2 and 3 the section's principal axes.
//! DOFs per node: u₁, u₂, u₃, θ₁, θ₂, θ₃; node a's six first. Bending that moves a point along
//! axis 2 turns the section about axis 3 and uses I₃; bending along 3 uses I₂.
//!
//! Stiffness: Euler–Bernoulli, or Timoshenko when a shear area is given: the shear-deformable
//! element with Φ = 12·E·I/(κ·G·A·l²) per bending plane, exact for end-loaded beams of either
//! theory. It matters for the rig's legs in their stiff direction (25 mm deep on 153 mm:
//! Φ ≈ 0.08 over the leg, 4 % of the storey stiffness), not in the weak one (Φ ≈ 1e-3).
//! Mass: the Euler–Bernoulli consistent mass (cubic Hermite) in both cases, plus the
//! torsional inertia ρ·I_p, without which the twist DOFs would have no mass; the section's
//! rotary and shear inertia in bending are neglected (the legs carry 2 % of the rig's mass).
//!
//! Reference: J. S. Przemieniecki, Theory of Matrix Structural Analysis (1968), §5.6
//! (stiffness, with shear deformation) and §11.3 (consistent mass).

use nalgebra::{Matrix3, SMatrix, Vector3};

/// 12 × 12 element matrix.
pub(crate) type Matrix12 = SMatrix<f64, 12, 12>;

/// Section and material of a straight prismatic beam.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BeamProperties {
    /// Young's modulus E, Pa.
    pub youngs_modulus_pa: f64,
    /// Shear modulus G, Pa.
    pub shear_modulus_pa: f64,
    /// Density ρ, kg/m³.
    pub density_kg_m3: f64,
    /// Section area A, m².
    pub area_m2: f64,
    /// Second moment about local axis 2 (bending along axis 3), m⁴.
    pub i2_m4: f64,
    /// Second moment about local axis 3 (bending along axis 2), m⁴.
    pub i3_m4: f64,
    /// St Venant torsion constant J, m⁴.
    pub torsion_constant_m4: f64,
    /// Shear area κ·A for Timoshenko bending, m²; `None` for Euler–Bernoulli.
    pub shear_area_m2: Option<f64>,
}

impl BeamProperties {
    /// A solid rectangle whose side `side2_m` lies along local axis 2 and `side3_m` along 3.
    /// The torsion constant is Roark's approximation for a rectangle with long side a and
    /// short side c, J = a·c³·(1/3 − 0.21·(c/a)·(1 − (c/a)⁴/12)) (Roark's Formulas for Stress
    /// and Strain, 7th ed., Table 10.7 case 4), within 0.5 % of the exact series.
    pub(crate) fn rectangle(
        side2_m: f64,
        side3_m: f64,
        youngs_modulus_pa: f64,
        shear_modulus_pa: f64,
        density_kg_m3: f64,
    ) -> Self {
        let (long, short) = if side2_m >= side3_m {
            (side2_m, side3_m)
        } else {
            (side3_m, side2_m)
        };
        let ratio = short / long;
        Self {
            youngs_modulus_pa,
            shear_modulus_pa,
            density_kg_m3,
            area_m2: side2_m * side3_m,
            i2_m4: side2_m * side3_m.powi(3) / 12.0,
            i3_m4: side3_m * side2_m.powi(3) / 12.0,
            torsion_constant_m4: long
                * short.powi(3)
                * (1.0 / 3.0 - 0.21 * ratio * (1.0 - ratio.powi(4) / 12.0)),
            shear_area_m2: None,
        }
    }

    /// The same beam with Timoshenko shear deformation, shear area κ·A in both bending
    /// planes.
    pub(crate) fn with_shear_coefficient(self, kappa: f64) -> Self {
        Self {
            shear_area_m2: Some(kappa * self.area_m2),
            ..self
        }
    }

    /// Shear parameter Φ = 12·E·I/(κ·G·A·l²) of a length `l` bending with second moment `i`
    /// (0 for Euler–Bernoulli).
    fn shear_parameter(&self, i_m4: f64, l: f64) -> f64 {
        self.shear_area_m2.map_or(0.0, |shear_area| {
            12.0 * self.youngs_modulus_pa * i_m4 / (self.shear_modulus_pa * shear_area * l * l)
        })
    }

    /// Polar second moment I_p = I₂ + I₃, m⁴ (the torsional inertia per unit ρ·length).
    pub(crate) fn polar_m4(&self) -> f64 {
        self.i2_m4 + self.i3_m4
    }
}

/// Indices of (v_a, θ_a, v_b, θ_b) for bending along axis 2 (θ about 3) and along axis 3
/// (θ about 2).
const PLANE_12: [usize; 4] = [1, 5, 7, 11];
const PLANE_13: [usize; 4] = [2, 4, 8, 10];
/// θ₂ = −dw/dx while θ₃ = +dv/dx, so the 1–3 plane is the 1–2 plane with the rotations'
/// signs flipped.
const PLANE_13_SIGNS: [f64; 4] = [1.0, -1.0, 1.0, -1.0];

/// Bending stiffness of a beam of flexural rigidity `ei`, length `l` and shear parameter
/// `phi` on (v_a, θ_a, v_b, θ_b) with θ the section's rotation (= dv/dx when Φ = 0).
fn bending_stiffness(ei: f64, l: f64, phi: f64) -> [[f64; 4]; 4] {
    let c = ei / ((1.0 + phi) * l * l * l);
    let near = (4.0 + phi) * l * l * c;
    let far = (2.0 - phi) * l * l * c;
    [
        [12.0 * c, 6.0 * l * c, -12.0 * c, 6.0 * l * c],
        [6.0 * l * c, near, -6.0 * l * c, far],
        [-12.0 * c, -6.0 * l * c, 12.0 * c, -6.0 * l * c],
        [6.0 * l * c, far, -6.0 * l * c, near],
    ]
}

/// Consistent bending mass of a beam of mass per length `rho_a` and length `l` on the same
/// DOFs (cubic Hermite shape functions).
fn bending_mass(rho_a: f64, l: f64) -> [[f64; 4]; 4] {
    let c = rho_a * l / 420.0;
    [
        [156.0 * c, 22.0 * l * c, 54.0 * c, -13.0 * l * c],
        [
            22.0 * l * c,
            4.0 * l * l * c,
            13.0 * l * c,
            -3.0 * l * l * c,
        ],
        [54.0 * c, 13.0 * l * c, 156.0 * c, -22.0 * l * c],
        [
            -13.0 * l * c,
            -3.0 * l * l * c,
            -22.0 * l * c,
            4.0 * l * l * c,
        ],
    ]
}

fn stamp4(target: &mut Matrix12, block: &[[f64; 4]; 4], dofs: [usize; 4], signs: [f64; 4]) {
    for (r, &dr) in dofs.iter().enumerate() {
        for (c, &dc) in dofs.iter().enumerate() {
            target[(dr, dc)] += signs[r] * signs[c] * block[r][c];
        }
    }
}

/// Two-node bar block `value · [[1, −1], [−1, 1]]` (or the mass `value · [[2, 1], [1, 2]]`
/// when `coupling` is 1 and `diagonal` 2) on DOF `dof` of both nodes.
fn stamp2(target: &mut Matrix12, dof: usize, diagonal: f64, coupling: f64) {
    target[(dof, dof)] += diagonal;
    target[(dof + 6, dof + 6)] += diagonal;
    target[(dof, dof + 6)] += coupling;
    target[(dof + 6, dof)] += coupling;
}

/// Stiffness in local axes, SI (N/m, N, N·m/rad mixed by DOF).
pub(crate) fn local_stiffness(p: &BeamProperties, length_m: f64) -> Matrix12 {
    let l = length_m;
    let mut k = Matrix12::zeros();
    let axial = p.youngs_modulus_pa * p.area_m2 / l;
    stamp2(&mut k, 0, axial, -axial);
    let torsion = p.shear_modulus_pa * p.torsion_constant_m4 / l;
    stamp2(&mut k, 3, torsion, -torsion);
    stamp4(
        &mut k,
        &bending_stiffness(
            p.youngs_modulus_pa * p.i3_m4,
            l,
            p.shear_parameter(p.i3_m4, l),
        ),
        PLANE_12,
        [1.0; 4],
    );
    stamp4(
        &mut k,
        &bending_stiffness(
            p.youngs_modulus_pa * p.i2_m4,
            l,
            p.shear_parameter(p.i2_m4, l),
        ),
        PLANE_13,
        PLANE_13_SIGNS,
    );
    k
}

/// Consistent mass in local axes (kg, kg·m, kg·m²).
pub(crate) fn local_mass(p: &BeamProperties, length_m: f64) -> Matrix12 {
    let l = length_m;
    let rho_a = p.density_kg_m3 * p.area_m2;
    let mut m = Matrix12::zeros();
    let axial = rho_a * l / 6.0;
    stamp2(&mut m, 0, 2.0 * axial, axial);
    let torsion = p.density_kg_m3 * p.polar_m4() * l / 6.0;
    stamp2(&mut m, 3, 2.0 * torsion, torsion);
    let bending = bending_mass(rho_a, l);
    stamp4(&mut m, &bending, PLANE_12, [1.0; 4]);
    stamp4(&mut m, &bending, PLANE_13, PLANE_13_SIGNS);
    m
}

/// Rotation whose rows are the local axes in global coordinates, so u_local = R·u_global.
/// `axis` is the element's direction and `towards_axis2` any vector not parallel to it that
/// fixes local axis 2 (its part orthogonal to the axis). Returns `None` for a zero-length or
/// parallel pair.
pub(crate) fn rotation(axis: Vector3<f64>, towards_axis2: Vector3<f64>) -> Option<Matrix3<f64>> {
    let e1 = axis.try_normalize(f64::EPSILON)?;
    let e2 = (towards_axis2 - e1 * e1.dot(&towards_axis2)).try_normalize(1e-9)?;
    let e3 = e1.cross(&e2);
    Some(Matrix3::from_rows(&[
        e1.transpose(),
        e2.transpose(),
        e3.transpose(),
    ]))
}

/// Rotates a local element matrix to global axes: Tᵀ·A·T with T = diag(R, R, R, R).
pub(crate) fn to_global(local: &Matrix12, rotation: &Matrix3<f64>) -> Matrix12 {
    let mut t = Matrix12::zeros();
    for block in 0..4 {
        t.fixed_view_mut::<3, 3>(3 * block, 3 * block)
            .copy_from(rotation);
    }
    t.transpose() * local * t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> BeamProperties {
        BeamProperties::rectangle(0.003, 0.025, 70e9, 26e9, 2700.0)
    }

    fn timoshenko() -> BeamProperties {
        props().with_shear_coefficient(crate::config::cowper_rectangle_shear_coefficient(0.33))
    }

    /// A rigid-body motion strains nothing: K times any of the six rigid modes is zero.
    #[test]
    fn rigid_body_motions_have_no_stiffness() {
        for p in [props(), timoshenko()] {
            rigid_body_motions_have_no_stiffness_for(&p);
        }
    }

    fn rigid_body_motions_have_no_stiffness_for(p: &BeamProperties) {
        let l = 0.05;
        let k = local_stiffness(p, l);
        // Node a at x = 0, node b at x = l along local axis 1.
        let mut modes = Vec::new();
        for d in 0..3 {
            let mut u = SMatrix::<f64, 12, 1>::zeros();
            u[d] = 1.0;
            u[d + 6] = 1.0;
            modes.push(u);
        }
        // Small rotation about axis 3: v = x·θ, θ₃ = θ.
        let mut r3 = SMatrix::<f64, 12, 1>::zeros();
        r3[5] = 1.0;
        r3[11] = 1.0;
        r3[7] = l;
        modes.push(r3);
        // About axis 2: w = −x·θ, θ₂ = θ.
        let mut r2 = SMatrix::<f64, 12, 1>::zeros();
        r2[4] = 1.0;
        r2[10] = 1.0;
        r2[8] = -l;
        modes.push(r2);
        let mut r1 = SMatrix::<f64, 12, 1>::zeros();
        r1[3] = 1.0;
        r1[9] = 1.0;
        modes.push(r1);
        for u in modes {
            let f = k * u;
            // Entries of K reach E·A/l ≈ 1e8; 1e-6 of that is rounding, not stiffness.
            assert!(f.amax() < 1e-6 * k.amax(), "{f}");
        }
    }

    /// The consistent mass carries the element's mass ρ·A·l in each direction: uᵀ·M·u for a
    /// unit translation.
    #[test]
    fn consistent_mass_carries_the_element_mass_in_every_direction() {
        let p = props();
        let l = 0.05;
        let m = local_mass(&p, l);
        for d in 0..3 {
            let mut u = SMatrix::<f64, 12, 1>::zeros();
            u[d] = 1.0;
            u[d + 6] = 1.0;
            let mass = (u.transpose() * m * u)[(0, 0)];
            assert!((mass / (p.density_kg_m3 * p.area_m2 * l) - 1.0).abs() < 1e-12);
        }
    }

    /// Roark's J for a 25 × 3 mm strip against the thin-strip limit b·t³/3·(1 − 0.63·t/b).
    #[test]
    fn torsion_constant_of_a_thin_strip_is_near_the_thin_wall_limit() {
        let p = props();
        let thin = 0.025 * 0.003_f64.powi(3) / 3.0 * (1.0 - 0.63 * 0.003 / 0.025);
        assert!((p.torsion_constant_m4 / thin - 1.0).abs() < 1e-3);
    }

    /// Rotating to global axes keeps K symmetric and keeps the rigid translations free.
    #[test]
    fn rotated_matrices_stay_symmetric_and_free_in_translation() {
        let p = props();
        let r = rotation(Vector3::new(1.0, 2.0, 3.0), Vector3::new(0.0, 0.0, 1.0))
            .unwrap_or_else(Matrix3::identity);
        let k = to_global(&local_stiffness(&p, 0.05), &r);
        assert!((k - k.transpose()).amax() < 1e-9 * k.amax());
        let mut u = SMatrix::<f64, 12, 1>::zeros();
        u[0] = 0.3;
        u[1] = -0.2;
        u[2] = 0.7;
        u[6] = 0.3;
        u[7] = -0.2;
        u[8] = 0.7;
        assert!((k * u).amax() < 1e-6 * k.amax());
    }
}
