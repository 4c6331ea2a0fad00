//! Owns the frame's mesh: where the nodes are, which beam elements join them, and what each
//! node is attached to (nothing, the ground, a foot spring or a rigid floor). Shared by the
//! built-in solver and the CalculiX deck writer, so both see exactly the same geometry. Builds
//! no matrices.

use serde::{Deserialize, Serialize};

use crate::config::{FrameConfig, PlanAxis};
use crate::error::FeError;

/// What a mesh node is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "floor", rename_all = "snake_case")]
pub enum Attachment {
    /// A leg's inner node: six free DOFs.
    Free,
    /// A foot clamped to the ground: no DOFs.
    Ground,
    /// A foot on springs to the ground: six free DOFs plus the springs.
    Foot,
    /// A leg end inside floor `n` (0-based): moves with that rigid floor.
    Floor(usize),
}

/// One node of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeshNode {
    /// Position (x, y, z), in m.
    pub position_m: [f64; 3],
    /// What the node is attached to.
    pub attachment: Attachment,
}

/// One beam element of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegElement {
    /// Lower node (index into `FrameMesh::nodes`).
    pub lower: usize,
    /// Upper node.
    pub upper: usize,
    /// Storey, 0-based.
    pub storey: usize,
    /// Leg within the storey, 0..4: (−x, −y), (+x, −y), (+x, +y), (−x, +y).
    pub leg: usize,
}

/// The frame's mesh, ready for either solver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMesh {
    /// Every node: legs' ends and inner nodes, lowest storey first, leg by leg, bottom to top.
    pub nodes: Vec<MeshNode>,
    /// Every beam element.
    pub elements: Vec<LegElement>,
    /// Centroid of each floor plate, lowest first, in m: the rigid floor's reference point.
    pub floor_centroids_m: Vec<[f64; 3]>,
    /// Unit vector of the legs' local axis 2 (along their thickness, the weak direction).
    pub leg_thickness_direction: [f64; 3],
}

/// Plan positions of the four legs: counter-clockwise from (−x, −y).
pub(crate) fn leg_positions_m(config: &FrameConfig) -> [[f64; 2]; 4] {
    let hx = config.leg.spacing_x_m / 2.0;
    let hy = config.leg.spacing_y_m / 2.0;
    [[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]]
}

impl FrameMesh {
    /// Meshes a frame: `elements_per_leg` equal elements on every leg.
    ///
    /// # Errors
    /// [`FeError::Invalid`] listing every config problem.
    pub fn new(config: &FrameConfig) -> Result<Self, FeError> {
        config.validate()?;
        let n = config.elements_per_leg;
        let legs = leg_positions_m(config);
        let mut nodes = Vec::new();
        let mut elements = Vec::new();
        let mut floor_centroids_m = Vec::new();
        let mut bottom_z = 0.0;
        for (storey, &length_m) in config.storey_leg_lengths_m.iter().enumerate() {
            let top_z = bottom_z + length_m;
            for (leg, [x, y]) in legs.into_iter().enumerate() {
                let first = nodes.len();
                for i in 0..=n {
                    let z = bottom_z + length_m * (i as f64) / (n as f64);
                    let attachment = if i == 0 {
                        match (storey, config.feet) {
                            (0, crate::config::Feet::Fixed) => Attachment::Ground,
                            (0, crate::config::Feet::Elastic { .. }) => Attachment::Foot,
                            (s, _) => Attachment::Floor(s - 1),
                        }
                    } else if i == n {
                        Attachment::Floor(storey)
                    } else {
                        Attachment::Free
                    };
                    nodes.push(MeshNode {
                        position_m: [x, y, if i == n { top_z } else { z }],
                        attachment,
                    });
                }
                for i in 0..n {
                    elements.push(LegElement {
                        lower: first + i,
                        upper: first + i + 1,
                        storey,
                        leg,
                    });
                }
            }
            floor_centroids_m.push([0.0, 0.0, top_z + config.floor.thickness_m / 2.0]);
            bottom_z = top_z + config.floor.thickness_m;
        }
        let leg_thickness_direction = match config.leg.thickness_along {
            PlanAxis::X => [1.0, 0.0, 0.0],
            PlanAxis::Y => [0.0, 1.0, 0.0],
        };
        Ok(Self {
            nodes,
            elements,
            floor_centroids_m,
            leg_thickness_direction,
        })
    }
}
