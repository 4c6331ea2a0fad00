//! Owns the writing of a frame as a CalculiX input deck (`.inp`): the legs as beam elements
//! (B31, or B32 with mid-side nodes) on the shared mesh or a graded one of their own
//! ([`LegMesh`]), each rigid floor as a star of very stiff massless beams
//! ("spokes") from its centroid to the leg ends in the plate and to eight point masses that
//! carry the plate's mass and rotary inertia, clamped feet, and a `*FREQUENCY` step. Pure:
//! returns the text.
//!
//! Why spokes and not `*RIGID BODY`: ccx expands beam elements into solids and a rigid body
//! takes only the translations of a beam node, not its rotation, so legs would be pinned to
//! the plates (ccx 2.20 then finds zero-frequency mechanisms). Beams that meet at a node share
//! its rotation. The spokes are `SPOKE_STIFFNESS_FACTOR` times stiffer than the legs' material
//! and as deep as the plate, which leaves them far stiffer than any leg (the rig's storeys are
//! ~5e4 N/m against ~1e10 N/m for a spoke), so the plate is rigid to ~1e-5 in the sway modes.
//! What the joint costs: a node where beams meet at an angle is a ccx "knot", a rigid body
//! over the expanded section, so the leg's end section cannot take its Poisson strain there
//! (+0.45 % per joint in weak bending, measured; a real clamp does the same, beam theory
//! does not). ccx 2.20 offers nothing better: equations on a beam node's rotations are
//! ignored, a rotation `*BOUNDARY` (a mean rotation) cannot follow a moving plate, and its
//! unexpanded beam U1 refuses frequency steps.
//!
//! Why eight point masses: ccx 2.20 has no rotary-inertia element. m/8 at the corners of a
//! box of half-sides l_x/√12, l_y/√12, t/√12 about the centroid has exactly the plate's mass
//! and its three principal moments m(l_y² + t²)/12, m(l_x² + t²)/12, m(l_x² + l_y²)/12.
//!
//! Units: SI throughout (m, kg, s, N, Pa), so ccx's frequencies come back in Hz.

use std::fmt::Write as _;

use nalgebra::Vector3;
use serde::{Deserialize, Serialize};

use crate::calculix::error::CalculixError;
use crate::config::{Feet, FrameConfig};
use crate::mesh::{Attachment, FrameMesh};

/// How many times stiffer than the legs' material the spokes' material is.
pub const SPOKE_STIFFNESS_FACTOR: f64 = 1e4;
/// Density of the spokes as a fraction of the legs' (ccx wants a density on every element of
/// a frequency step; this keeps their mass ~1e-9 of the plate's).
pub const SPOKE_DENSITY_FRACTION: f64 = 1e-9;

/// Beam element of the legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeamElementType {
    /// Two-node linear beam (ccx expands it to 8-node bricks with incompatible modes). Its
    /// cantilever bending frequency converges to the Euler–Bernoulli value (measured 246.7
    /// against 246.8 Hz for a 100 mm, 25 × 3 mm aluminium leg with 20 elements).
    #[default]
    B31,
    /// Three-node quadratic beam (expanded to 20-node bricks). Converges to ~2.5 % above
    /// Euler–Bernoulli for a wide thin strip (measured 253.2 Hz in the same case): the brick
    /// restrains the section's anticlastic bending, partly a plate effect.
    B32,
}

/// How the deck meshes each leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LegMesh {
    /// The frame's own mesh (`elements_per_leg` equal elements): every node of the built-in
    /// solver's mesh is a node of the deck, so the two compare node by node.
    #[default]
    Shared,
    /// `elements_per_leg` elements between the leg's two end nodes (which stay the shared
    /// mesh's), node i at the fraction (i/n + (1 − cos(π·i/n))/2)/2 of the leg: half equal,
    /// half cosine spacing, so elements are up to twice as dense towards both joints, where
    /// ccx's rigid joint holds the expanded section's shape and the strain varies fastest.
    /// Measured in ccx 2.20 on one leg between two rigid joints, against beam theory: 96
    /// graded B31 +0.967 %, 96 equal +1.033 %, 192 equal +0.941 %. Pure cosine spacing
    /// (elements down to 41 µm on a 25 × 3 mm section) gave three spurious 282.8 Hz modes on
    /// the rig; this spacing gives none. The shared mesh's inner nodes are left out.
    Graded {
        /// B31 (or B32) elements per leg, at least 1.
        elements_per_leg: usize,
    },
}

/// What to ask ccx for, beyond the geometry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckOptions {
    /// Element of the legs.
    pub element: BeamElementType,
    /// Number of lowest eigenvalues to compute.
    pub modes: usize,
    /// The legs' mesh in the deck.
    #[serde(default)]
    pub leg_mesh: LegMesh,
}

impl Default for DeckOptions {
    fn default() -> Self {
        Self {
            element: BeamElementType::B31,
            modes: 10,
            leg_mesh: LegMesh::Shared,
        }
    }
}

/// Writes the `.inp` deck of a frame.
///
/// # Errors
/// [`CalculixError::Invalid`] listing every config problem (and a zero mode count);
/// [`CalculixError::Unsupported`] for elastic feet (ccx's springs act on translations only).
pub fn write_deck(config: &FrameConfig, options: &DeckOptions) -> Result<String, CalculixError> {
    let mut problems = config.problems();
    if options.modes == 0 {
        problems.push("modes = 0: ask CalculiX for at least one eigenvalue".to_owned());
    }
    if options.leg_mesh
        == (LegMesh::Graded {
            elements_per_leg: 0,
        })
    {
        problems
            .push("leg_mesh.elements_per_leg = 0: each leg needs at least one element".to_owned());
    }
    if !problems.is_empty() {
        return Err(CalculixError::Invalid(problems));
    }
    if let Feet::Elastic { .. } = config.feet {
        return Err(CalculixError::Unsupported(
            "elastic feet: CalculiX's spring elements act on translations only, so the \
             rotational foot springs cannot be written; use fixed feet or the built-in solver"
                .to_owned(),
        ));
    }
    let mesh = FrameMesh::new(config)?;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on that ground.
    let _ = writeln!(
        out,
        "** DTOP frame written by dtop-fe: SI units (m, kg, s, N, Pa)."
    );
    let _ = writeln!(out, "*HEADING");
    let (per_leg, spacing) = match options.leg_mesh {
        LegMesh::Shared => (config.elements_per_leg, "equal"),
        LegMesh::Graded { elements_per_leg } => (elements_per_leg, "cosine-graded"),
    };
    let _ = writeln!(
        out,
        "DTOP frame, {} storeys, {per_leg} {spacing} {:?} elements per leg",
        config.storeys(),
        options.element
    );

    // Node ids: mesh nodes 1..=n, then graded legs' inner nodes, mid-side nodes (B32), floor
    // centroids, point masses.
    let mut nodes: Vec<[f64; 3]> = mesh.nodes.iter().map(|n| n.position_m).collect();
    let mut leg_elements: Vec<Vec<usize>> = Vec::new();
    for chain in leg_chains(&mesh, options.leg_mesh, &mut nodes) {
        for pair in chain.windows(2) {
            let (lower, upper) = (pair[0], pair[1]);
            match options.element {
                BeamElementType::B31 => leg_elements.push(vec![lower, upper]),
                BeamElementType::B32 => {
                    let (a, b) = (nodes[lower - 1], nodes[upper - 1]);
                    nodes.push([
                        (a[0] + b[0]) / 2.0,
                        (a[1] + b[1]) / 2.0,
                        (a[2] + b[2]) / 2.0,
                    ]);
                    leg_elements.push(vec![lower, nodes.len(), upper]);
                }
            }
        }
    }
    let floor = &config.floor;
    let half = [
        floor.length_x_m / 12_f64.sqrt(),
        floor.length_y_m / 12_f64.sqrt(),
        floor.thickness_m / 12_f64.sqrt(),
    ];
    let mut spokes: Vec<(usize, usize)> = Vec::new();
    let mut mass_nodes: Vec<usize> = Vec::new();
    for (f, centroid) in mesh.floor_centroids_m.iter().enumerate() {
        nodes.push(*centroid);
        let centre = nodes.len();
        for (i, node) in mesh.nodes.iter().enumerate() {
            if node.attachment == Attachment::Floor(f) {
                spokes.push((centre, i + 1));
            }
        }
        for corner in 0..8 {
            let sign = |bit: usize| if corner >> bit & 1 == 1 { 1.0 } else { -1.0 };
            nodes.push([
                centroid[0] + sign(0) * half[0],
                centroid[1] + sign(1) * half[1],
                centroid[2] + sign(2) * half[2],
            ]);
            spokes.push((centre, nodes.len()));
            mass_nodes.push(nodes.len());
        }
    }

    // Only nodes an element uses: a graded deck leaves the shared mesh's inner nodes out.
    let mut used = vec![false; nodes.len()];
    for id in leg_elements
        .iter()
        .flatten()
        .chain(spokes.iter().flat_map(|(a, b)| [a, b]))
    {
        used[id - 1] = true;
    }
    let _ = writeln!(out, "*NODE, NSET=NALL");
    for (i, p) in nodes.iter().enumerate().filter(|(i, _)| used[*i]) {
        let _ = writeln!(
            out,
            "{}, {:.12e}, {:.12e}, {:.12e}",
            i + 1,
            p[0],
            p[1],
            p[2]
        );
    }
    let mut element_id = 0;
    let leg_type = match options.element {
        BeamElementType::B31 => "B31",
        BeamElementType::B32 => "B32",
    };
    let _ = writeln!(out, "*ELEMENT, TYPE={leg_type}, ELSET=LEGS");
    for element in &leg_elements {
        element_id += 1;
        let ids: Vec<String> = element.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "{element_id}, {}", ids.join(", "));
    }
    // One element set per spoke, so each gets a section axis across its own direction.
    let mut spoke_sets = Vec::with_capacity(spokes.len());
    for (s, (a, b)) in spokes.iter().enumerate() {
        element_id += 1;
        let set = format!("SPOKE{}", s + 1);
        let _ = writeln!(out, "*ELEMENT, TYPE=B31, ELSET={set}");
        let _ = writeln!(out, "{element_id}, {a}, {b}");
        let direction = Vector3::from(nodes[b - 1]) - Vector3::from(nodes[a - 1]);
        spoke_sets.push((set, across(&direction)));
    }
    let _ = writeln!(out, "*ELEMENT, TYPE=MASS, ELSET=FLOORMASSES");
    for node in &mass_nodes {
        element_id += 1;
        let _ = writeln!(out, "{element_id}, {node}");
    }

    let leg = &config.leg;
    let _ = writeln!(out, "*MATERIAL, NAME=LEG");
    let _ = writeln!(out, "*ELASTIC");
    let _ = writeln!(
        out,
        "{:.12e}, {:.12e}",
        leg.youngs_modulus_pa, leg.poisson_ratio
    );
    let _ = writeln!(out, "*DENSITY");
    let _ = writeln!(out, "{:.12e}", leg.density_kg_m3);
    let _ = writeln!(out, "*MATERIAL, NAME=SPOKE");
    let _ = writeln!(out, "*ELASTIC");
    let _ = writeln!(
        out,
        "{:.12e}, {:.12e}",
        leg.youngs_modulus_pa * SPOKE_STIFFNESS_FACTOR,
        leg.poisson_ratio
    );
    let _ = writeln!(out, "*DENSITY");
    let _ = writeln!(out, "{:.12e}", leg.density_kg_m3 * SPOKE_DENSITY_FRACTION);
    // RECT: the section's size along its 1-axis, then along its 2-axis; the next line is the
    // 1-axis. The legs' 1-axis is their thickness direction.
    let _ = writeln!(out, "*BEAM SECTION, ELSET=LEGS, MATERIAL=LEG, SECTION=RECT");
    let _ = writeln!(out, "{:.12e}, {:.12e}", leg.thickness_m, leg.width_m);
    let d = mesh.leg_thickness_direction;
    let _ = writeln!(out, "{}, {}, {}", d[0], d[1], d[2]);
    let depth = floor.thickness_m;
    for (set, axis) in &spoke_sets {
        let _ = writeln!(
            out,
            "*BEAM SECTION, ELSET={set}, MATERIAL=SPOKE, SECTION=RECT"
        );
        let _ = writeln!(out, "{depth:.12e}, {depth:.12e}");
        let _ = writeln!(out, "{:.12e}, {:.12e}, {:.12e}", axis[0], axis[1], axis[2]);
    }
    let _ = writeln!(out, "*MASS, ELSET=FLOORMASSES");
    let _ = writeln!(out, "{:.12e}", floor.mass() / 8.0);

    let _ = writeln!(out, "*BOUNDARY");
    for (i, node) in mesh.nodes.iter().enumerate() {
        if node.attachment == Attachment::Ground {
            let _ = writeln!(out, "{}, 1, 6", i + 1);
        }
    }
    let _ = writeln!(out, "*STEP");
    let _ = writeln!(out, "*FREQUENCY");
    let _ = writeln!(out, "{}", options.modes);
    // Displacements on the beams' own nodes, not on ccx's expanded solids.
    let _ = writeln!(out, "*NODE FILE, OUTPUT=2D");
    let _ = writeln!(out, "U");
    let _ = writeln!(out, "*END STEP");
    Ok(out)
}

/// A unit vector across `direction`: its cross product with z, or with x if it is vertical.
fn across(direction: &Vector3<f64>) -> Vector3<f64> {
    let with_z = direction.cross(&Vector3::z());
    if with_z.norm() > 1e-6 * direction.norm() {
        with_z.normalize()
    } else {
        direction.cross(&Vector3::x()).normalize()
    }
}

/// Each leg's node ids (1-based), bottom to top: the shared mesh's own nodes, or its two end
/// nodes with `elements_per_leg − 1` new inner nodes (pushed onto `nodes`) at the graded
/// spacing of [`LegMesh::Graded`].
fn leg_chains(mesh: &FrameMesh, leg_mesh: LegMesh, nodes: &mut Vec<[f64; 3]>) -> Vec<Vec<usize>> {
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for element in &mesh.elements {
        let key = (element.storey, element.leg);
        match chains.last_mut() {
            Some(chain) if current == Some(key) => chain.push(element.upper + 1),
            _ => chains.push(vec![element.lower + 1, element.upper + 1]),
        }
        current = Some(key);
    }
    let LegMesh::Graded { elements_per_leg } = leg_mesh else {
        return chains;
    };
    chains
        .into_iter()
        .map(|chain| {
            let (first, last) = (chain[0], chain[chain.len() - 1]);
            let (a, b) = (
                Vector3::from(nodes[first - 1]),
                Vector3::from(nodes[last - 1]),
            );
            let mut graded = vec![first];
            for i in 1..elements_per_leg {
                let fraction = i as f64 / elements_per_leg as f64;
                let cosine = (1.0 - (std::f64::consts::PI * fraction).cos()) / 2.0;
                let p = a + (b - a) * ((fraction + cosine) / 2.0);
                nodes.push([p.x, p.y, p.z]);
                graded.push(nodes.len());
            }
            graded.push(last);
            graded
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(deck: &str, after: &str) -> usize {
        deck.split(after)
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .skip(1)
                    .take_while(|l| !l.starts_with('*'))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn southampton_deck_has_every_node_leg_element_mass_and_clamped_foot() {
        let config = FrameConfig::southampton();
        let deck = write_deck(&config, &DeckOptions::default()).unwrap_or_default();
        let per_leg = config.elements_per_leg;
        let mesh_nodes = 3 * 4 * (per_leg + 1);
        // Per floor: a centroid and eight mass points.
        assert_eq!(count(&deck, "*NODE, NSET=NALL"), mesh_nodes + 3 * 9);
        assert_eq!(count(&deck, "TYPE=B31, ELSET=LEGS"), 3 * 4 * per_leg);
        assert_eq!(count(&deck, "TYPE=MASS, ELSET=FLOORMASSES"), 24);
        assert_eq!(count(&deck, "*BOUNDARY"), 4);
        // Four legs below each floor and four above it, except the top: 4·3 + 4·2 leg spokes,
        // plus 8 mass spokes per floor.
        assert_eq!(deck.matches("TYPE=B31, ELSET=SPOKE").count(), 20 + 24);
        assert!(deck.contains("*FREQUENCY\n10\n"));
        let mass_line = format!("{:.12e}", 5.201 / 8.0);
        assert!(deck.contains(&mass_line));
    }

    #[test]
    fn b32_deck_adds_a_mid_side_node_to_every_leg_element() {
        let config = FrameConfig::southampton();
        let options = DeckOptions {
            element: BeamElementType::B32,
            modes: 6,
            ..DeckOptions::default()
        };
        let deck = write_deck(&config, &options).unwrap_or_default();
        let elements = 3 * 4 * config.elements_per_leg;
        assert_eq!(
            count(&deck, "*NODE, NSET=NALL"),
            3 * 4 * (config.elements_per_leg + 1) + elements + 27
        );
        assert!(deck.contains("*ELEMENT, TYPE=B32, ELSET=LEGS"));
    }

    /// A graded deck keeps each leg's two end nodes (the plates' joints and the feet, where
    /// the shared mesh and the built-in solver meet it) and puts its own inner nodes between
    /// them, shortest at both ends and never shorter than half an equal element.
    #[test]
    fn graded_legs_keep_their_ends_and_crowd_towards_them() {
        let config = FrameConfig::southampton();
        let n = 40;
        let options = DeckOptions {
            leg_mesh: LegMesh::Graded {
                elements_per_leg: n,
            },
            ..DeckOptions::default()
        };
        let deck = write_deck(&config, &options).unwrap_or_default();
        assert_eq!(count(&deck, "TYPE=B31, ELSET=LEGS"), 3 * 4 * n);
        // Leg ends of the shared mesh, the graded inner nodes, then centroids and masses.
        assert_eq!(
            count(&deck, "*NODE, NSET=NALL"),
            3 * 4 * 2 + 3 * 4 * (n - 1) + 3 * 9
        );
        let mesh = FrameMesh::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let mut nodes = mesh.nodes.iter().map(|n| n.position_m).collect();
        let chains = leg_chains(&mesh, options.leg_mesh, &mut nodes);
        assert_eq!(chains.len(), 12);
        let l = config.storey_leg_lengths_m[0];
        for chain in &chains {
            assert_eq!(chain.len(), n + 1);
            let z: Vec<f64> = chain.iter().map(|&id| nodes[id - 1][2]).collect();
            let lengths: Vec<f64> = z.windows(2).map(|w| w[1] - w[0]).collect();
            assert!((z[n] - z[0] - l).abs() < 1e-12);
            assert!(lengths.iter().all(|&h| h >= l / n as f64 / 2.0 - 1e-12));
            assert!(lengths[0] < lengths[n / 2] && lengths[n - 1] < lengths[n / 2]);
        }
        let zero = DeckOptions {
            leg_mesh: LegMesh::Graded {
                elements_per_leg: 0,
            },
            ..DeckOptions::default()
        };
        assert!(matches!(
            write_deck(&config, &zero),
            Err(CalculixError::Invalid(p)) if p.len() == 1
        ));
    }

    #[test]
    fn deck_reports_every_parameter_problem_at_once() {
        let mut config = FrameConfig::southampton();
        config.leg.youngs_modulus_pa = -1.0;
        config.floor.thickness_m = 0.0;
        let options = DeckOptions {
            element: BeamElementType::B31,
            modes: 0,
            ..DeckOptions::default()
        };
        match write_deck(&config, &options) {
            Err(CalculixError::Invalid(problems)) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn elastic_feet_are_refused_with_the_reason() {
        let mut config = FrameConfig::southampton();
        config.feet = Feet::Elastic {
            translational_n_per_m: 1e6,
            rotational_n_m_per_rad: 1e3,
        };
        match write_deck(&config, &DeckOptions::default()) {
            Err(CalculixError::Unsupported(reason)) => assert!(reason.contains("rotational")),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
