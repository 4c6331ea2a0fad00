//! Checks the element and the assembly against closed forms on single legs: cantilever
//! frequencies in both bending planes, in torsion and axially, and the lateral stiffness of
//! clamped–guided and clamped–free legs by static condensation.

use std::f64::consts::{PI, TAU};

use dtop_dynamics::Modes;
use nalgebra::DVector;

use crate::assemble::{NodeDofs, assemble};
use crate::beam::BeamProperties;
use crate::condense::condense;
use crate::mesh::{Attachment, FrameMesh, LegElement, MeshNode};

const E_PA: f64 = 70e9;
const NU: f64 = 0.33;
const RHO_KG_M3: f64 = 2700.0;
const B_M: f64 = 0.025;
const T_M: f64 = 0.003;
const L_M: f64 = 0.1533;

fn g_pa() -> f64 {
    E_PA / (2.0 * (1.0 + NU))
}

/// Local axis 2 (thickness) along x, so I₃ = b·t³/12 bends along x.
fn leg() -> BeamProperties {
    BeamProperties::rectangle(T_M, B_M, E_PA, g_pa(), RHO_KG_M3)
}

/// One vertical leg of `n` elements, clamped at z = 0, free above.
fn cantilever(n: usize) -> FrameMesh {
    let nodes = (0..=n)
        .map(|i| MeshNode {
            position_m: [0.0, 0.0, L_M * i as f64 / n as f64],
            attachment: if i == 0 {
                Attachment::Ground
            } else {
                Attachment::Free
            },
        })
        .collect();
    let elements = (0..n)
        .map(|i| LegElement {
            lower: i,
            upper: i + 1,
            storey: 0,
            leg: 0,
        })
        .collect();
    FrameMesh {
        nodes,
        elements,
        floor_centroids_m: Vec::new(),
        leg_thickness_direction: [1.0, 0.0, 0.0],
    }
}

/// Which motion a cantilever mode is: the motions decouple exactly for a doubly symmetric
/// section on a straight axis, so each mode lives in one of four DOF groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Motion {
    BendX,
    BendY,
    Axial,
    Twist,
}

fn motion_of(shape: &DVector<f64>) -> Motion {
    let mut energy = [0.0; 4];
    for (dof, value) in shape.iter().enumerate() {
        let group = match dof % 6 {
            0 | 4 => 0,
            1 | 3 => 1,
            2 => 2,
            _ => 3,
        };
        energy[group] += value * value;
    }
    let groups = [Motion::BendX, Motion::BendY, Motion::Axial, Motion::Twist];
    let mut best = 0;
    for g in 1..4 {
        if energy[g] > energy[best] {
            best = g;
        }
    }
    groups[best]
}

/// The frequencies of the first two modes of each motion, in Hz.
fn cantilever_frequencies_hz(n: usize) -> Vec<(Motion, Vec<f64>)> {
    let mesh = cantilever(n);
    let assembled = assemble(&mesh, &leg(), &[], None).unwrap_or_else(|e| panic!("{e}"));
    let modes =
        Modes::solve(&assembled.mass, &assembled.stiffness).unwrap_or_else(|e| panic!("{e}"));
    let mut out: Vec<(Motion, Vec<f64>)> =
        [Motion::BendX, Motion::BendY, Motion::Axial, Motion::Twist]
            .into_iter()
            .map(|m| (m, Vec::new()))
            .collect();
    for r in 0..modes.len() {
        let motion = motion_of(&modes.shapes.column(r).into_owned());
        if let Some((_, list)) = out.iter_mut().find(|(m, _)| *m == motion)
            && list.len() < 2
        {
            list.push(modes.omegas_rad_s[r] / TAU);
        }
    }
    out
}

fn first(found: &[(Motion, Vec<f64>)], motion: Motion, index: usize) -> f64 {
    found
        .iter()
        .find(|(m, _)| *m == motion)
        .and_then(|(_, list)| list.get(index).copied())
        .unwrap_or(f64::NAN)
}

/// Euler–Bernoulli cantilever: f = (βL)²/(2π)·√(EI/(ρA L⁴)), with β₁L = 1.875 104 07 and
/// β₂L = 4.694 091 13 (roots of cos βL·cosh βL = −1; Blevins, Formulas for Natural
/// Frequency and Mode Shape, Table 8-1). Hermite cubic elements converge as h⁴ in frequency;
/// with 20 elements the first mode is within 1e-6 and the second within 1e-5, so 1e-4
/// leaves margin and still catches any wrong coefficient (which would show at the percent
/// level).
#[test]
fn cantilever_bending_frequencies_match_euler_bernoulli_in_both_axes() {
    let found = cantilever_frequencies_hz(20);
    let area = B_M * T_M;
    for (motion, i_m4) in [
        (Motion::BendX, B_M * T_M.powi(3) / 12.0),
        (Motion::BendY, T_M * B_M.powi(3) / 12.0),
    ] {
        for (index, beta_l) in [1.875_104_07_f64, 4.694_091_13].into_iter().enumerate() {
            let exact =
                beta_l * beta_l / TAU * (E_PA * i_m4 / (RHO_KG_M3 * area * L_M.powi(4))).sqrt();
            let fe = first(&found, motion, index);
            assert!(
                (fe / exact - 1.0).abs() < 1e-4,
                "{motion:?} mode {}: FE {fe} Hz against {exact} Hz",
                index + 1
            );
        }
    }
}

/// The brief's 0.5 % at the coarsest mesh that should reach it: two elements.
#[test]
fn two_elements_already_give_the_first_bending_frequency_within_half_a_percent() {
    let found = cantilever_frequencies_hz(2);
    let i_m4 = B_M * T_M.powi(3) / 12.0;
    let exact = 1.875_104_07_f64.powi(2) / TAU
        * (E_PA * i_m4 / (RHO_KG_M3 * B_M * T_M * L_M.powi(4))).sqrt();
    let fe = first(&found, Motion::BendX, 0);
    assert!((fe / exact - 1.0).abs() < 5e-3, "{fe} against {exact}");
    assert!(fe > exact, "a consistent-mass Ritz model bounds from above");
}

/// Fixed–free rod: f_n = (2n − 1)/(4L)·c with c = √(E/ρ) axially and √(G·J/(ρ·I_p)) in
/// torsion. Linear elements with consistent mass overestimate ω by about (k·h)²/24 (k the
/// wavenumber): with 20 elements 2.6e-4 for mode 1 and 2.3e-3 for mode 2, so 5e-4 and 4e-3.
#[test]
fn cantilever_axial_and_torsion_frequencies_match_the_rod_closed_forms() {
    let found = cantilever_frequencies_hz(20);
    let p = leg();
    let axial_speed = (E_PA / RHO_KG_M3).sqrt();
    let torsion_speed = (g_pa() * p.torsion_constant_m4 / (RHO_KG_M3 * p.polar_m4())).sqrt();
    for (motion, speed) in [(Motion::Axial, axial_speed), (Motion::Twist, torsion_speed)] {
        for (index, tolerance) in [(0_usize, 5e-4), (1, 4e-3)] {
            let n = index as f64 + 1.0;
            let exact = (2.0 * n - 1.0) / (4.0 * L_M) * speed;
            let fe = first(&found, motion, index);
            assert!(
                fe >= exact && fe / exact - 1.0 < tolerance,
                "{motion:?} mode {}: FE {fe} Hz against {exact} Hz",
                index + 1
            );
        }
    }
    let _ = PI;
}

/// Lateral stiffness of one leg by static condensation onto its top's translation, the top's
/// other DOFs held or free. Euler–Bernoulli elements reproduce end-loaded beams exactly, so
/// the condensed value equals the closed form to rounding whatever the mesh: 12·E·I/l³
/// clamped–guided (top rotation held), 3·E·I/l³ clamped–free.
#[test]
fn condensed_leg_stiffness_is_exact_for_guided_and_free_tops() {
    for n in [1, 3, 8] {
        let mesh = cantilever(n);
        let assembled = assemble(&mesh, &leg(), &[], None).unwrap_or_else(|e| panic!("{e}"));
        let NodeDofs::Own(top) = assembled.node_dofs[n] else {
            panic!("the top node owns its DOFs");
        };
        for (axis, i_m4) in [(0, B_M * T_M.powi(3) / 12.0), (1, T_M * B_M.powi(3) / 12.0)] {
            let others: Vec<usize> = (0..6).filter(|&d| d != axis).map(|d| top + d).collect();
            let rotations: Vec<usize> = (3..6).map(|d| top + d).collect();
            let guided = condense(&assembled.stiffness, &[top + axis], &rotations)
                .unwrap_or_else(|e| panic!("{e}"))[(0, 0)];
            let free = condense(&assembled.stiffness, &[top + axis], &[])
                .unwrap_or_else(|e| panic!("{e}"))[(0, 0)];
            let held_all = condense(&assembled.stiffness, &[top + axis], &others)
                .unwrap_or_else(|e| panic!("{e}"))[(0, 0)];
            let ei = E_PA * i_m4;
            let exact_guided = 12.0 * ei / L_M.powi(3);
            let exact_free = 3.0 * ei / L_M.powi(3);
            assert!(
                (guided / exact_guided - 1.0).abs() < 1e-9,
                "n = {n}: {guided}"
            );
            assert!(
                (held_all / exact_guided - 1.0).abs() < 1e-9,
                "n = {n}: {held_all}"
            );
            assert!((free / exact_free - 1.0).abs() < 1e-9, "n = {n}: {free}");
        }
    }
}

/// Timoshenko elements are exact for end-loaded Timoshenko beams too: a clamped–guided leg
/// has 12·E·I/(l³·(1 + Φ)) with Φ = 12·E·I/(κ·G·A·l²) over the whole leg, whatever the mesh;
/// a clamped–free one 1/(l³/(3·E·I) + l/(κ·G·A)). Shear matters in the stiff direction only.
#[test]
fn timoshenko_legs_have_the_closed_form_shear_flexible_stiffness() {
    let kappa = 10.0 * (1.0 + NU) / (12.0 + 11.0 * NU);
    let beam = leg().with_shear_coefficient(kappa);
    let shear_stiffness = kappa * g_pa() * B_M * T_M;
    for n in [1, 4, 9] {
        let mesh = cantilever(n);
        let assembled = assemble(&mesh, &beam, &[], None).unwrap_or_else(|e| panic!("{e}"));
        let NodeDofs::Own(top) = assembled.node_dofs[n] else {
            panic!("the top node owns its DOFs");
        };
        let rotations: Vec<usize> = (3..6).map(|d| top + d).collect();
        for (axis, i_m4) in [(0, B_M * T_M.powi(3) / 12.0), (1, T_M * B_M.powi(3) / 12.0)] {
            let ei = E_PA * i_m4;
            let phi = 12.0 * ei / (shear_stiffness * L_M * L_M);
            let guided = condense(&assembled.stiffness, &[top + axis], &rotations)
                .unwrap_or_else(|e| panic!("{e}"))[(0, 0)];
            let free = condense(&assembled.stiffness, &[top + axis], &[])
                .unwrap_or_else(|e| panic!("{e}"))[(0, 0)];
            let exact_guided = 12.0 * ei / (L_M.powi(3) * (1.0 + phi));
            let exact_free = 1.0 / (L_M.powi(3) / (3.0 * ei) + L_M / shear_stiffness);
            assert!(
                (guided / exact_guided - 1.0).abs() < 1e-9,
                "n = {n}: {guided}"
            );
            assert!((free / exact_free - 1.0).abs() < 1e-9, "n = {n}: {free}");
        }
    }
}
