//! Owns the writing of a frame as an OpenSeesPy script (OpenSees, the Berkeley structural
//! solver, through its PyPI package `openseespy`), a second peer of the built-in solver beside
//! CalculiX, and the reading of the frequencies the script prints. Pure: text in, text out;
//! running Python is the caller's.
//!
//! The script builds the same mesh ([`FrameMesh`]) with OpenSees's own elements:
//! `ElasticTimoshenkoBeam` legs (or `elasticBeamColumn` for Euler–Bernoulli), consistent
//! mass (`-cMass`); each rigid floor a node at its centroid carrying the plate's mass and
//! rotary inertia, joined to the leg ends in the plate by `rigidLink beam` constraints
//! (eliminated by the `Transformation` handler); clamped feet by `fix`, elastic feet by a
//! `zeroLength` element of six elastic springs to a fixed ground node. The eigenproblem is
//! solved by `eigen -genBandArpack` (ARPACK's shift-invert Lanczos for the lowest modes; the
//! dense `-fullGenLapack` returned only zeros here in openseespy 3.7.1, the constrained DOFs
//! left in its matrices).
//!
//! What the two solvers share: the mesh and the section's constants (A, I, J, κ·A, from
//! `beam.rs`, checked there against closed forms). What they do not: the element matrices,
//! the rigid-floor constraint, the assembly and the eigen-solver.

use std::fmt::Write as _;

use crate::beam::BeamProperties;
use crate::config::{BeamTheory, Feet, FrameConfig};
use crate::error::FeError;
use crate::mesh::{Attachment, FrameMesh};

/// Prefix of each line of the script's output that carries a frequency.
pub const FREQUENCY_LINE: &str = "frequency_hz";

/// Writes the OpenSeesPy script of a frame that prints its `modes` lowest natural frequencies,
/// one `frequency_hz <value>` line each, ascending.
///
/// # Errors
/// [`FeError::Invalid`] listing every config problem, and a zero mode count.
pub fn write_script(config: &FrameConfig, modes: usize) -> Result<String, FeError> {
    let mut problems = config.problems();
    if modes == 0 {
        problems.push("modes = 0: ask OpenSees for at least one eigenvalue".to_owned());
    }
    if !problems.is_empty() {
        return Err(FeError::Invalid(problems));
    }
    let mesh = FrameMesh::new(config)?;
    let leg = &config.leg;
    // Local axis 2 of `beam.rs` lies along the thickness; OpenSees's local z is `vecxz`, set
    // to the same direction, so its Iz (bending across z) is our I₂ and its Iy our I₃.
    let section = BeamProperties::rectangle(
        leg.thickness_m,
        leg.width_m,
        leg.youngs_modulus_pa,
        config.shear_modulus_pa(),
        leg.density_kg_m3,
    )
    .with_shear_coefficient(config.leg_shear_coefficient());
    let shear_area_m2 = section.shear_area_m2.unwrap_or(section.area_m2);

    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on that ground.
    let _ = writeln!(
        out,
        "# DTOP frame written by dtop-fe for OpenSeesPy: SI units (m, kg, s, N, Pa).\n\
         # {} storeys, {} {:?} elements per leg.\n\
         import math\n\
         import openseespy.opensees as ops\n\n\
         ops.wipe()\n\
         ops.model('basic', '-ndm', 3, '-ndf', 6)",
        config.storeys(),
        config.elements_per_leg,
        config.beam_theory
    );
    // Node tags: mesh node i is i + 1, floor f's centroid is n + 1 + f, ground nodes of
    // elastic feet follow.
    let n = mesh.nodes.len();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let p = node.position_m;
        let _ = writeln!(
            out,
            "ops.node({}, {:e}, {:e}, {:e})",
            i + 1,
            p[0],
            p[1],
            p[2]
        );
    }
    for (f, c) in mesh.floor_centroids_m.iter().enumerate() {
        let _ = writeln!(
            out,
            "ops.node({}, {:e}, {:e}, {:e})",
            n + 1 + f,
            c[0],
            c[1],
            c[2]
        );
    }
    let mass_kg = config.floor.mass();
    let [ix, iy, iz] = config.floor.rotary_inertia_kg_m2();
    for f in 0..mesh.floor_centroids_m.len() {
        let _ = writeln!(
            out,
            "ops.mass({}, {mass_kg:e}, {mass_kg:e}, {mass_kg:e}, {ix:e}, {iy:e}, {iz:e})",
            n + 1 + f
        );
    }
    let mut next_tag = n + mesh.floor_centroids_m.len() + 1;
    let mut springs = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        match node.attachment {
            Attachment::Ground => {
                let _ = writeln!(out, "ops.fix({}, 1, 1, 1, 1, 1, 1)", i + 1);
            }
            Attachment::Floor(f) => {
                let _ = writeln!(out, "ops.rigidLink('beam', {}, {})", n + 1 + f, i + 1);
            }
            Attachment::Foot => {
                let p = node.position_m;
                let _ = writeln!(
                    out,
                    "ops.node({next_tag}, {:e}, {:e}, {:e})\nops.fix({next_tag}, 1, 1, 1, 1, 1, 1)",
                    p[0], p[1], p[2]
                );
                springs.push((next_tag, i + 1));
                next_tag += 1;
            }
            Attachment::Free => {}
        }
    }
    if let Feet::Elastic {
        translational_n_per_m,
        rotational_n_m_per_rad,
    } = config.feet
    {
        let _ = writeln!(
            out,
            "ops.uniaxialMaterial('Elastic', 1, {translational_n_per_m:e})\n\
             ops.uniaxialMaterial('Elastic', 2, {rotational_n_m_per_rad:e})"
        );
        for (ground, foot) in springs {
            let _ = writeln!(
                out,
                "ops.element('zeroLength', {next_tag}, {ground}, {foot}, '-mat', 1, 1, 1, 2, 2, 2, \
                 '-dir', 1, 2, 3, 4, 5, 6)"
            );
            next_tag += 1;
        }
    }
    let d = mesh.leg_thickness_direction;
    let _ = writeln!(
        out,
        "ops.geomTransf('Linear', 1, {:e}, {:e}, {:e})",
        d[0], d[1], d[2]
    );
    let e = section.youngs_modulus_pa;
    let g = section.shear_modulus_pa;
    let a = section.area_m2;
    let j = section.torsion_constant_m4;
    let (iz_m4, iy_m4) = (section.i2_m4, section.i3_m4);
    let mass_per_m = section.density_kg_m3 * a;
    for element in &mesh.elements {
        let (lower, upper) = (element.lower + 1, element.upper + 1);
        let _ = match config.beam_theory {
            BeamTheory::Timoshenko => writeln!(
                out,
                "ops.element('ElasticTimoshenkoBeam', {next_tag}, {lower}, {upper}, {e:e}, {g:e}, \
                 {a:e}, {j:e}, {iy_m4:e}, {iz_m4:e}, {shear_area_m2:e}, {shear_area_m2:e}, 1, \
                 '-mass', {mass_per_m:e}, '-cMass')"
            ),
            BeamTheory::EulerBernoulli => writeln!(
                out,
                "ops.element('elasticBeamColumn', {next_tag}, {lower}, {upper}, {a:e}, {e:e}, \
                 {g:e}, {j:e}, {iy_m4:e}, {iz_m4:e}, 1, '-mass', {mass_per_m:e}, '-cMass')"
            ),
        };
        next_tag += 1;
    }
    let _ = writeln!(
        out,
        "ops.constraints('Transformation')\n\
         ops.numberer('Plain')\n\
         eigenvalues = ops.eigen('-genBandArpack', {modes})\n\
         for value in eigenvalues:\n    \
             print('{FREQUENCY_LINE}', repr(math.sqrt(max(value, 0.0)) / (2.0 * math.pi)))"
    );
    Ok(out)
}

/// The frequencies (Hz) of the script's `frequency_hz` lines, in order; other lines (OpenSees
/// prints a banner) are skipped.
///
/// # Errors
/// [`FeError::Numerical`] if no line carries a frequency or one does not parse, with the
/// output's last lines.
pub fn parse_frequencies(stdout: &str) -> Result<Vec<f64>, FeError> {
    let tail = || {
        let lines: Vec<&str> = stdout.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    let mut frequencies_hz = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(FREQUENCY_LINE) {
            continue;
        }
        match words.next().map(str::parse::<f64>) {
            Some(Ok(value)) if value.is_finite() => frequencies_hz.push(value),
            _ => {
                return Err(FeError::Numerical(format!(
                    "OpenSees printed an unreadable frequency line {line:?}"
                )));
            }
        }
    }
    if frequencies_hz.is_empty() {
        return Err(FeError::Numerical(format!(
            "OpenSees printed no frequencies; its output ends:\n{}",
            tail()
        )));
    }
    Ok(frequencies_hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn southampton_script_has_every_node_leg_link_and_floor_mass() {
        let config = FrameConfig::southampton();
        let script = write_script(&config, 6).unwrap_or_default();
        let mesh_nodes = 3 * 4 * (config.elements_per_leg + 1);
        assert_eq!(script.matches("ops.node(").count(), mesh_nodes + 3);
        assert_eq!(
            script.matches("'ElasticTimoshenkoBeam'").count(),
            3 * 4 * config.elements_per_leg
        );
        // Four leg ends under each floor and four over it, except the top floor.
        assert_eq!(script.matches("ops.rigidLink('beam'").count(), 20);
        assert_eq!(script.matches("ops.mass(").count(), 3);
        assert_eq!(script.matches("ops.fix(").count(), 4);
        assert!(script.contains("ops.eigen('-genBandArpack', 6)"));
        let mass = format!("{:e}", 5.201);
        assert!(script.contains(&mass));
    }

    #[test]
    fn euler_bernoulli_and_elastic_feet_use_their_own_elements() {
        let mut config = FrameConfig::southampton();
        config.beam_theory = BeamTheory::EulerBernoulli;
        config.feet = Feet::Elastic {
            translational_n_per_m: 1e7,
            rotational_n_m_per_rad: 1e4,
        };
        let script = write_script(&config, 3).unwrap_or_default();
        assert!(!script.contains("ElasticTimoshenkoBeam"));
        assert_eq!(
            script.matches("'elasticBeamColumn'").count(),
            3 * 4 * config.elements_per_leg
        );
        assert_eq!(script.matches("'zeroLength'").count(), 4);
        assert_eq!(script.matches("ops.fix(").count(), 4);
    }

    #[test]
    fn script_reports_every_parameter_problem_at_once() {
        let mut config = FrameConfig::southampton();
        config.leg.width_m = 0.0;
        config.floor.length_x_m = f64::NAN;
        match write_script(&config, 0) {
            Err(FeError::Invalid(problems)) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn frequencies_are_read_from_their_lines_only() {
        let out = "OpenSees -- Open System For Earthquake Engineering Simulation\n\
                   frequency_hz 7.0449\nfrequency_hz 19.76\n";
        assert_eq!(parse_frequencies(out), Ok(vec![7.0449, 19.76]));
        assert!(matches!(
            parse_frequencies("banner only\n"),
            Err(FeError::Numerical(m)) if m.contains("banner only")
        ));
        assert!(parse_frequencies("frequency_hz nan-ish\n").is_err());
    }
}
