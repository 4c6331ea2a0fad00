//! Owns the assembly of a mesh into global mass and stiffness matrices: beam elements, rigid
//! floors (each a reference node with mass and rotary inertia whose leg ends follow it through
//! a rigid-body transformation), and foot springs. Solves nothing.

use nalgebra::{DMatrix, DVector, Matrix6, Vector3};

use crate::beam::{BeamProperties, Matrix12, local_mass, local_stiffness, rotation, to_global};
use crate::error::FeError;
use crate::mesh::{Attachment, FrameMesh};

/// Mass and rotary inertia of one rigid floor about its centroid (principal axes x, y, z).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RigidFloorInertia {
    /// Mass, kg.
    pub mass_kg: f64,
    /// Rotary inertia about the centroid's x, y, z axes, kg·m².
    pub inertia_kg_m2: [f64; 3],
}

/// Springs under each elastic foot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FootSprings {
    /// N/m in x, y and z.
    pub translational_n_per_m: f64,
    /// N·m/rad about x, y and z.
    pub rotational_n_m_per_rad: f64,
}

/// How one node's six displacements follow the global DOFs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NodeDofs {
    /// Held by the ground: always zero.
    Ground,
    /// Owns six global DOFs starting here.
    Own(usize),
    /// Follows a rigid floor: u = G·q_floor, with G built from the offset to the centroid.
    Floor {
        /// First of the floor's six DOFs.
        start: usize,
        /// Node position minus floor centroid, m.
        offset_m: Vector3<f64>,
    },
}

/// Global matrices and the map from nodes to DOFs.
#[derive(Debug, Clone)]
pub(crate) struct Assembled {
    /// Global mass, SI.
    pub mass: DMatrix<f64>,
    /// Global stiffness, SI.
    pub stiffness: DMatrix<f64>,
    /// One entry per mesh node.
    pub node_dofs: Vec<NodeDofs>,
    /// First DOF of each floor's reference node (u_x, u_y, u_z, θ_x, θ_y, θ_z).
    pub floor_starts: Vec<usize>,
}

/// Rigid-body map of a point at `offset` from the reference: u = u_ref + θ × r, θ = θ_ref.
pub(crate) fn rigid_map(offset: &Vector3<f64>) -> Matrix6<f64> {
    let mut g = Matrix6::identity();
    // θ × r = −r × θ = −[r]ₓ·θ.
    let skew = offset.cross_matrix();
    g.fixed_view_mut::<3, 3>(0, 3).copy_from(&(-skew));
    g
}

impl NodeDofs {
    /// First global DOF and the 6 × 6 map, or `None` for a grounded node.
    fn map(&self) -> Option<(usize, Matrix6<f64>)> {
        match *self {
            Self::Ground => None,
            Self::Own(start) => Some((start, Matrix6::identity())),
            Self::Floor { start, offset_m } => Some((start, rigid_map(&offset_m))),
        }
    }

    /// The node's six displacements for a global DOF vector.
    pub(crate) fn displacements(&self, q: &DVector<f64>) -> [f64; 6] {
        let mut out = [0.0; 6];
        if let Some((start, g)) = self.map() {
            let local = g * q.fixed_rows::<6>(start);
            out.copy_from_slice(local.as_slice());
        }
        out
    }
}

/// Assembles beam elements (all with the same section `beam`), rigid floors and feet.
pub(crate) fn assemble(
    mesh: &FrameMesh,
    beam: &BeamProperties,
    floors: &[RigidFloorInertia],
    feet: Option<FootSprings>,
) -> Result<Assembled, FeError> {
    if floors.len() != mesh.floor_centroids_m.len() {
        return Err(FeError::Numerical(format!(
            "{} floor inertias for {} floors",
            floors.len(),
            mesh.floor_centroids_m.len()
        )));
    }
    let mut next = 0;
    let mut own_start = Vec::with_capacity(mesh.nodes.len());
    for node in &mesh.nodes {
        own_start.push(match node.attachment {
            Attachment::Free | Attachment::Foot => {
                next += 6;
                Some(next - 6)
            }
            Attachment::Ground | Attachment::Floor(_) => None,
        });
    }
    let floor_starts: Vec<usize> = (0..floors.len()).map(|f| next + 6 * f).collect();
    let dofs = next + 6 * floors.len();
    let mut node_dofs = Vec::with_capacity(mesh.nodes.len());
    for (node, own) in mesh.nodes.iter().zip(&own_start) {
        node_dofs.push(match (node.attachment, own) {
            (Attachment::Floor(f), _) => {
                let centroid = mesh.floor_centroids_m.get(f).ok_or_else(|| {
                    FeError::Numerical(format!("node attached to missing floor {f}"))
                })?;
                NodeDofs::Floor {
                    start: floor_starts[f],
                    offset_m: Vector3::from(node.position_m) - Vector3::from(*centroid),
                }
            }
            (_, Some(start)) => NodeDofs::Own(*start),
            (_, None) => NodeDofs::Ground,
        });
    }

    let mut mass = DMatrix::zeros(dofs, dofs);
    let mut stiffness = DMatrix::zeros(dofs, dofs);
    let towards_axis2 = Vector3::from(mesh.leg_thickness_direction);
    for element in &mesh.elements {
        let a = Vector3::from(mesh.nodes[element.lower].position_m);
        let b = Vector3::from(mesh.nodes[element.upper].position_m);
        let length_m = (b - a).norm();
        let r = rotation(b - a, towards_axis2).ok_or_else(|| {
            FeError::Numerical(format!(
                "element {}–{} has zero length or lies along the section's thickness direction",
                element.lower, element.upper
            ))
        })?;
        let k = to_global(&local_stiffness(beam, length_m), &r);
        let m = to_global(&local_mass(beam, length_m), &r);
        let maps = [
            node_dofs[element.lower].map(),
            node_dofs[element.upper].map(),
        ];
        scatter(&mut stiffness, &k, &maps);
        scatter(&mut mass, &m, &maps);
    }
    for (floor, start) in floors.iter().zip(&floor_starts) {
        for d in 0..3 {
            mass[(start + d, start + d)] += floor.mass_kg;
            mass[(start + 3 + d, start + 3 + d)] += floor.inertia_kg_m2[d];
        }
    }
    if let Some(springs) = feet {
        for (node, dofs) in mesh.nodes.iter().zip(&node_dofs) {
            if let (Attachment::Foot, NodeDofs::Own(start)) = (node.attachment, dofs) {
                for d in 0..3 {
                    stiffness[(start + d, start + d)] += springs.translational_n_per_m;
                    stiffness[(start + 3 + d, start + 3 + d)] += springs.rotational_n_m_per_rad;
                }
            }
        }
    }
    Ok(Assembled {
        mass,
        stiffness,
        node_dofs,
        floor_starts,
    })
}

/// Adds Gᵢᵀ·A_ij·G_j for the element's two nodes.
fn scatter(
    target: &mut DMatrix<f64>,
    element: &Matrix12,
    maps: &[Option<(usize, Matrix6<f64>)>; 2],
) {
    for (i, map_i) in maps.iter().enumerate() {
        let Some((start_i, g_i)) = map_i else {
            continue;
        };
        for (j, map_j) in maps.iter().enumerate() {
            let Some((start_j, g_j)) = map_j else {
                continue;
            };
            let block: Matrix6<f64> = element.fixed_view::<6, 6>(6 * i, 6 * j).into_owned();
            let mapped = g_i.transpose() * block * g_j;
            let mut view = target.view_mut((*start_i, *start_j), (6, 6));
            view += mapped;
        }
    }
}

/// Rigid-body influence vectors of the global DOFs: unit translation along x, y, z, and unit
/// rotation about the vertical axis through the plan origin (x = y = 0).
pub(crate) fn rigid_influence(mesh: &FrameMesh, assembled: &Assembled) -> [DVector<f64>; 4] {
    let dofs = assembled.mass.nrows();
    let mut vectors = [
        DVector::zeros(dofs),
        DVector::zeros(dofs),
        DVector::zeros(dofs),
        DVector::zeros(dofs),
    ];
    let mut set = |start: usize, position: [f64; 3]| {
        for d in 0..3 {
            vectors[d][start + d] = 1.0;
        }
        // Rotation θ about z through the origin: u = (−y·θ, x·θ, 0), θ_z = θ.
        vectors[3][start] = -position[1];
        vectors[3][start + 1] = position[0];
        vectors[3][start + 5] = 1.0;
    };
    for (node, dofs) in mesh.nodes.iter().zip(&assembled.node_dofs) {
        if let NodeDofs::Own(start) = dofs {
            set(*start, node.position_m);
        }
    }
    for (centroid, start) in mesh.floor_centroids_m.iter().zip(&assembled.floor_starts) {
        set(*start, *centroid);
    }
    vectors
}
