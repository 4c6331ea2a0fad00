//! Owns one rig's twin-hosted controller: its law and gain, the limit derived from the rig's
//! critical DVF gain, the controller version, the decision on each `SetControl` command, and
//! the drive each estimated block produces. Pure and synchronous: it neither decodes MQTT
//! payloads nor reads a clock (the caller passes wall time in).
//!
//! # Units and signs
//! - The DVF gain h is a coil current per unit host-floor velocity, A/(m/s) (`dynamics/CONTROL.md`
//!   §2). `SetControl.gain_n_s_per_m` is read as the *physical* feedback gain g = Bl·h in
//!   N·s/m (the skyhook damper constant the host floor feels), so h = g / Bl with the coil's
//!   force factor Bl (10 N/A by default, `ActuatorElectrics`).
//! - `ActuatorDrive.force_n` is the coil force the firmware applies, with the model's
//!   actuator-input sign: **+ on the proof mass, − on the host floor** (`ShearBuilding` input
//!   layout; the rig simulator feeds `force_n` into exactly that input). DVF sets the coil current
//!   i = h·v_host, so `force_n = +Bl·h·v̂_host` and the host floor receives `−Bl·h·v̂_host`, a
//!   damper. The test `the_drive_sign_damps_the_simulated_building` checks this on the model.
//! - v̂_host is the estimator's host-floor velocity *relative to the ground*. The rig is excited
//!   by a floor force and the lab floor is taken as still (its acceleration is only modelled as
//!   small noise), so relative and absolute velocities are the same, and the absolute velocity
//!   is what DVF feeds back.
//!
//! # Two placements
//! `SetControl.placement` chooses where the law runs:
//! - **twin** (`PLACEMENT_TWIN`): the twin computes one `ActuatorDrive` per live block from
//!   its own estimate (DVF: +Bl·h·v̂_host; LQG: F·x̂ with the discrete LQR row F).
//! - **edge** (`PLACEMENT_EDGE`): the twin designs a sampled controller
//!   (`dtop_dynamics::control::sampled`: Kalman predictor + DVF or LQR, realized from the
//!   measured channels to the force), checks that its loop is stable on the model, and pushes
//!   it as versioned `ControllerParams`; the edge runs it on every sample and acknowledges the
//!   version on cmd/ack as `controller/{version}` with the sample index it started at. The
//!   operator's own command is acknowledged by the twin when the params are sent.
//!
//! Every birth switches an edge loop off (params with `enabled = false`): a restarted edge or
//! twin never resumes feedback nobody asked for again.
//!
//! # Limitation: one drive per block
//! Blocks reach the twin in batches of `block_samples`, so the twin computes one drive per live
//! block, from the estimate at the block's last sample; the edge holds it until the next one
//! (or its timeout). The loop therefore runs at the block rate with at least one block of
//! delay, far below the sample rate the critical-gain analysis assumes: the gain limit here is
//! necessary, not sufficient. A per-sample drive stream belongs to an edge-hosted inner loop.
//! The estimator is also not told the drive it produced (it treats the actuator force as
//! unknown, within `model.noise.actuator_force_error_rms_n`).

use std::collections::{HashMap, VecDeque};

use dtop_dynamics::control::{
    Compensator, LqgWeights, SampledController, SampledDesign, SampledLaw, design_sampled,
};
use dtop_dynamics::{
    ActuatorElectrics, ControlStudy, InertialActuator, ShearBuilding, ShearBuildingConfig,
    StructuralEstimator,
};
use dtop_nonlinear::{LiveCbcConfig, LiveTarget};
use dtop_proto::RigId;
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::set_control::{Law as WireLaw, Placement as WirePlacement};
use dtop_proto::v1::{
    ActuatorDrive, Command, CommandAck, ControllerParams, HarmonicTarget, SetControl,
};
use nalgebra::RowDVector;
use serde::{Deserialize, Serialize};

use crate::config::{ControlConfig, ControlLawName};
use crate::estimate::LoopIo;

/// Writes the sampled law `k` on the measured channels `inputs` into `params` (matrices
/// row-major, as control.proto says).
fn set_law(params: &mut ControllerParams, k: &SampledController, inputs: Vec<u32>) {
    let row_major = |m: &nalgebra::DMatrix<f64>| m.transpose().as_slice().to_vec();
    params.sample_period_s = k.dt_s;
    params.input_channel_ids = inputs;
    params.state_count = u32::try_from(k.n_states()).unwrap_or(u32::MAX);
    params.a = row_major(&k.a);
    params.b = row_major(&k.b);
    params.e = k.e.as_slice().to_vec();
    params.c = k.c.iter().copied().collect();
    params.d = k.d.iter().copied().collect();
}

/// What `TwinState::controller` says while no controller exists.
pub const CONTROLLER_OFF: &str = "off";

/// Command ids remembered per rig, so a redelivered command is acknowledged, not re-applied.
pub const REMEMBERED_COMMAND_IDS: usize = 1024;

/// The law a controller runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Law {
    Off,
    /// Direct velocity feedback with gain h, A/(m/s).
    Dvf {
        gain_a_per_m_s: f64,
    },
    /// LQG with the default weights (`dtop_dynamics::control::LqgWeights`).
    Lqg,
}

/// An applicable `SetControl`: the law, where it runs, and its sampled design when it has one.
type Judged = (Law, Placement, Option<(SampledDesign, LoopIo)>);

/// Where the law runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// One drive per block from the twin's estimate.
    #[default]
    Twin,
    /// At the sample rate on the edge, from pushed `ControllerParams`.
    Edge,
}

/// The rig's actuator as the controller needs it, fixed at birth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActuatorPlant {
    /// Host floor, 1-based.
    pub host_floor: usize,
    /// Coil force factor Bl, N/A.
    pub force_factor_n_per_a: f64,
    /// Smallest DVF gain at which the continuous loop goes unstable, A/(m/s).
    pub critical_gain_a_per_m_s: f64,
}

impl ActuatorPlant {
    /// Designs the plant of an actuator on `host_floor` of `building` (the actuator's
    /// masses, spring and damper from `building.actuator`, else the defaults; the default
    /// coil) and finds its critical DVF gain with the dynamics control study.
    ///
    /// # Errors
    /// Why no gain limit exists, in words for the operator.
    pub fn design(building: &ShearBuildingConfig, host_floor: usize) -> Result<Self, String> {
        if host_floor == 0 {
            return Err("the rig has no actuator (its birth says actuator floor 0)".into());
        }
        let electrics = ActuatorElectrics::default();
        let study = ControlStudy {
            building: ShearBuildingConfig {
                actuator: Some(InertialActuator {
                    floor: host_floor,
                    ..building.actuator.unwrap_or_default()
                }),
                ..building.clone()
            },
            electrics,
            ..ControlStudy::southampton(host_floor)
        };
        match study.dvf_critical_gain(&Compensator::unity()) {
            Ok(Some(critical)) => Ok(Self {
                host_floor,
                force_factor_n_per_a: electrics.force_factor_n_per_a,
                critical_gain_a_per_m_s: critical.gain_a_per_m_s,
            }),
            // Unbounded gain means the model has no suspension dynamics to limit it; without
            // a limit the twin refuses rather than trusting any gain.
            Ok(None) => Err("the model gives no critical DVF gain to limit the gain by".into()),
            Err(e) => Err(format!("the critical DVF gain cannot be computed: {e}")),
        }
    }

    /// The physical feedback gain Bl·h, N·s/m, of a DVF gain h in A/(m/s).
    pub fn n_s_per_m(&self, gain_a_per_m_s: f64) -> f64 {
        gain_a_per_m_s * self.force_factor_n_per_a
    }
}

/// What a command did, for the caller to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub ack: CommandAck,
    /// The zero drive an applied OFF sends, so the edge stops at once instead of timing out.
    pub drive: Option<ActuatorDrive>,
    /// Params for the edge's inner loop (a new law there, or off).
    pub params: Option<ControllerParams>,
    /// A repeated command id: `ack` is the first answer, and nothing was applied again.
    pub duplicate: bool,
}

/// What re-checking the running controller on a new model did, for the caller to publish
/// (see [`RigController::on_model_switch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRecheck {
    /// Why the controller was stopped; `None`: it runs on (perhaps redesigned).
    pub stopped: Option<String>,
    /// The zero drive that stops a twin-hosted loop at once.
    pub drive: Option<ActuatorDrive>,
    /// New params for the edge's inner loop (redesigned, or off).
    pub params: Option<ControllerParams>,
}

/// Where the rig's estimator stands when a command arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopPosition {
    /// Whether the rig's Kalman filter is running.
    pub estimating: bool,
    /// The next stream-0 sample index the estimator will fold in (0 before any).
    pub next_sample_index: u64,
}

/// A twin-hosted law reduced to what turns an estimate into a force: the pure part of
/// [`RigController::drive`], recorded with every controller version so that replay makes the
/// same drives with the same arithmetic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DriveLaw {
    /// force = g · v̂ of the host floor (1-based), g = Bl·h in N·s/m.
    Dvf {
        host_floor: usize,
        gain_n_s_per_m: f64,
    },
    /// force = F · x̂ with the discrete LQR row F, N per state.
    Lqr { feedback_row_n: Vec<f64> },
}

impl DriveLaw {
    /// The force for the estimator's current state; `None` if it is not finite (a diverged
    /// filter must not reach the actuator; the edge times the last drive out) or the law does
    /// not fit the estimator.
    pub fn force_n(&self, estimator: &StructuralEstimator) -> Option<f64> {
        let force_n = match self {
            DriveLaw::Dvf {
                host_floor,
                gain_n_s_per_m,
            } => {
                if *host_floor == 0 || *host_floor > estimator.io_layout().floors() {
                    return None;
                }
                gain_n_s_per_m * estimator.floor_velocity_m_s(*host_floor)
            }
            DriveLaw::Lqr { feedback_row_n } => {
                let state = estimator.filter().state();
                if feedback_row_n.len() != state.len() {
                    return None;
                }
                RowDVector::from_row_slice(feedback_row_n).dot(&state.transpose())
            }
        };
        force_n.is_finite().then_some(force_n)
    }
}

/// One rig's controller.
#[derive(Debug, Clone)]
pub struct RigController {
    config: ControlConfig,
    /// The current birth's actuator, or why there is none usable.
    plant: Result<ActuatorPlant, String>,
    law: Law,
    /// Bumped on every change of law or gain; stamped on every drive.
    version: u64,
    /// Ids of the last [`REMEMBERED_COMMAND_IDS`] decided commands, oldest first.
    remembered: VecDeque<String>,
    acks: HashMap<String, CommandAck>,
    placement: Placement,
    /// The current birth's loop description, if the estimator fits it.
    io: Option<LoopIo>,
    /// F of the running twin-hosted LQG, N per state.
    lqr_row: Option<RowDVector<f64>>,
    /// Last `ControllerParams.version` sent; the next is above it and above wall-clock ms,
    /// so versions keep rising across twin restarts.
    edge_version: u64,
}

/// The DVF gain limit the twin enforces on one rig, as it publishes it in the rig's status
/// (`dvf_limit`, ARCHITECTURE.md § Topic map) so that every other gatekeeper (the web server)
/// shows and applies the twin's own figure instead of recomputing it from a copy of the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DvfLimit {
    /// Host floor of the actuator, 1-based.
    pub floor: u32,
    /// Physical feedback gain Bl·h at which the loop goes unstable, N·s/m.
    pub critical_gain_n_s_per_m: f64,
    /// `control.max_fraction_of_critical`.
    pub max_fraction_of_critical: f64,
    /// The highest gain the twin accepts, N·s/m.
    pub max_gain_n_s_per_m: f64,
}

impl RigController {
    /// The gain limit of the current birth's actuator, or why there is none (no birth yet,
    /// control disabled, no actuator, no critical gain).
    ///
    /// # Errors
    /// Why no DVF gain is accepted, in words for the operator.
    pub fn dvf_limit(&self) -> Result<DvfLimit, String> {
        if !self.config.enabled {
            return Err("twin-hosted control is disabled (control.enabled = false)".into());
        }
        let plant = self.plant.as_ref().map_err(Clone::clone)?;
        let critical = plant.n_s_per_m(plant.critical_gain_a_per_m_s);
        Ok(DvfLimit {
            floor: u32::try_from(plant.host_floor).unwrap_or(u32::MAX),
            critical_gain_n_s_per_m: critical,
            max_fraction_of_critical: self.config.max_fraction_of_critical,
            max_gain_n_s_per_m: self.config.max_fraction_of_critical * critical,
        })
    }

    pub fn new(config: ControlConfig) -> Self {
        Self {
            config,
            plant: Err("the rig has not been born yet".into()),
            law: Law::Off,
            version: 0,
            remembered: VecDeque::new(),
            acks: HashMap::new(),
            placement: Placement::Twin,
            io: None,
            lqr_row: None,
            edge_version: 0,
        }
    }

    /// The rig's loop as the current birth describes it (None: the estimator does not fit).
    pub fn set_loop_io(&mut self, io: Option<LoopIo>) {
        self.io = io;
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Params that switch the edge's inner loop off; sent at every birth.
    pub fn edge_off_params(&mut self, rig: &RigId, now_unix_ns: u64) -> ControllerParams {
        self.edge_params(rig, now_unix_ns, None, "off".to_owned())
    }

    fn edge_params(
        &mut self,
        rig: &RigId,
        now_unix_ns: u64,
        design: Option<(&SampledDesign, &LoopIo)>,
        description: String,
    ) -> ControllerParams {
        self.edge_version = (self.edge_version + 1).max(now_unix_ns / 1_000_000);
        let mut params = ControllerParams {
            rig_id: rig.as_str().to_owned(),
            version: self.edge_version,
            enabled: design.is_some(),
            description,
            ..ControllerParams::default()
        };
        if let Some((design, io)) = design {
            set_law(
                &mut params,
                &design.controller,
                io.input_channel_ids.clone(),
            );
        }
        params
    }

    /// Params that run one target of a live control-based continuation on the edge (issue
    /// 15): `config`'s law (a PD on the doubly integrated acceleration error) on the
    /// controlled floor's accelerometer `channel_id`, following `target`. Versioned like every
    /// other params, so each new target is a new version.
    pub fn edge_cbc_params(
        &mut self,
        rig: &RigId,
        now_unix_ns: u64,
        config: &LiveCbcConfig,
        target: &LiveTarget,
        channel_id: u32,
    ) -> ControllerParams {
        let description = format!(
            "cbc {:.4} Hz kp={} N/m kd={} N·s/m",
            target.frequency_hz, config.proportional_gain_n_per_m, config.derivative_gain_n_s_per_m
        );
        let mut params = self.edge_params(rig, now_unix_ns, None, description);
        params.enabled = true;
        set_law(&mut params, &config.controller(), vec![channel_id]);
        params.harmonic_target = Some(HarmonicTarget {
            frequency_hz: target.frequency_hz,
            channel_id,
            cos_m: target.cos_m.clone(),
            sin_m: target.sin_m.clone(),
        });
        params
    }

    /// Designs the sampled controller of `law` on the current birth, refusing an unstable loop.
    fn design(&self, law: Law) -> Result<(SampledDesign, &LoopIo), String> {
        let io = self
            .io
            .as_ref()
            .ok_or("the rig's state is not being estimated, so no controller can be designed")?;
        let sampled = match (law, &self.plant) {
            (Law::Dvf { gain_a_per_m_s }, Ok(plant)) => SampledLaw::Dvf {
                gain_n_s_per_m: plant.n_s_per_m(gain_a_per_m_s),
            },
            (Law::Lqg, Ok(_)) => SampledLaw::Lqr {
                weights: LqgWeights::default(),
                electrics: ActuatorElectrics::default(),
            },
            (Law::Off, _) => return Err("off needs no design".into()),
            (_, Err(why)) => return Err(why.clone()),
        };
        let building = ShearBuilding::new(io.building.clone()).map_err(|e| e.to_string())?;
        let design = design_sampled(&building, io.dt_s, &io.noise, sampled)
            .map_err(|e| format!("the controller cannot be designed: {e}"))?;
        if !design.is_stable() {
            return Err(format!(
                "the sampled loop would be unstable on the model (regulator spectral radius                  {:.6}, estimator {:.6})",
                design.regulator_spectral_radius, design.estimator_spectral_radius
            ));
        }
        Ok((design, io))
    }

    /// A new birth: the plant may have changed, so the loop restarts from the configured
    /// start-up law (or off, if that law is not allowed on this plant). A restarted edge thus
    /// never resumes an operator's feedback it has not been asked for again.
    pub fn on_birth(&mut self, plant: Result<ActuatorPlant, String>) -> Result<(), String> {
        self.plant = plant;
        self.placement = Placement::Twin;
        self.lqr_row = None;
        let wanted = match self.config.law {
            ControlLawName::Off => Law::Off,
            ControlLawName::Dvf => Law::Dvf {
                gain_a_per_m_s: self.config.gain_a_per_m_s,
            },
        };
        let (law, outcome) = match wanted {
            // The configured start-up law is never LQG (`ControlLawName` has no such name).
            Law::Off | Law::Lqg => (Law::Off, Ok(())),
            Law::Dvf { gain_a_per_m_s } => match self.check_dvf(gain_a_per_m_s, true) {
                Ok(()) => (wanted, Ok(())),
                Err(why) => (Law::Off, Err(why)),
            },
        };
        self.set_law(law);
        outcome
    }

    /// The rig's estimator stopped (a birth that does not fit the model).
    pub fn on_estimator_lost(&mut self, why: String) {
        self.plant = Err(why);
        self.io = None;
        self.set_law(Law::Off);
    }

    /// This twin lost the rig to another (`crate::owner`): the law goes off without a drive or
    /// params (the edge takes nothing from this twin any more), so nothing resumes if the rig
    /// is owned again.
    pub fn on_ownership_lost(&mut self) {
        self.placement = Placement::Twin;
        self.lqr_row = None;
        self.set_law(Law::Off);
    }

    /// Continues the controller versions of a run another twin recorded (a takeover,
    /// `crate::replay::restore`): the run's last block was folded in under `last_version`
    /// with `last_law`, and it recorded versions up to `highest_version`. If the law this
    /// controller runs now makes the same drives, its version is `last_version` (so blocks
    /// the previous owner stored above the watermark are recorded again with the same
    /// values); otherwise a version above every recorded one.
    pub fn continue_versions(
        &mut self,
        last_version: u64,
        last_law: Option<&DriveLaw>,
        highest_version: u64,
    ) {
        self.version = if self.drive_law().as_ref() == last_law {
            last_version
        } else {
            highest_version.max(last_version) + 1
        };
    }

    /// Whether the configuration lets this controller run at all.
    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn law(&self) -> Law {
        self.law
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn plant(&self) -> Result<&ActuatorPlant, &str> {
        self.plant.as_ref().map_err(String::as_str)
    }

    /// Whether live blocks produce drives.
    pub fn is_active(&self) -> bool {
        self.config.enabled
            && self.law != Law::Off
            && self.plant.is_ok()
            && self.placement == Placement::Twin
    }

    /// `TwinState.controller`: `"off"` or `"dvf h=… A/(m/s)"`.
    pub fn describe(&self) -> String {
        let running = self.config.enabled && self.plant.is_ok();
        let law = match self.law {
            Law::Dvf { gain_a_per_m_s } if running => format!("dvf h={gain_a_per_m_s:.4} A/(m/s)"),
            Law::Lqg if running => format!(
                "lqg rho={} J/A^2",
                LqgWeights::default().current_weight_j_per_a2
            ),
            _ => return CONTROLLER_OFF.to_owned(),
        };
        match self.placement {
            Placement::Twin => law,
            Placement::Edge => format!("{law} at edge v{}", self.edge_version),
        }
    }

    /// The law live blocks are driven by, if the loop is active: what replay needs to make
    /// the same drives (see [`DriveLaw`]).
    pub fn drive_law(&self) -> Option<DriveLaw> {
        if !self.is_active() {
            return None;
        }
        match (self.law, &self.plant, &self.lqr_row) {
            (Law::Dvf { gain_a_per_m_s }, Ok(plant), _) => Some(DriveLaw::Dvf {
                host_floor: plant.host_floor,
                gain_n_s_per_m: plant.n_s_per_m(gain_a_per_m_s),
            }),
            (Law::Lqg, Ok(_), Some(row)) => Some(DriveLaw::Lqr {
                feedback_row_n: row.iter().copied().collect(),
            }),
            _ => None,
        }
    }

    /// The drive after the estimator folded in the sample `sample_index`, under `law` (this
    /// controller's [`drive_law`](Self::drive_law), taken once per block):
    /// `force_n = +Bl·h·v̂_host` for DVF (see the module doc for the sign), F·x̂ for LQG.
    pub fn drive(
        &self,
        rig: &RigId,
        sample_index: u64,
        law: Option<&DriveLaw>,
        estimator: &StructuralEstimator,
    ) -> Option<ActuatorDrive> {
        let force_n = law?.force_n(estimator)?;
        Some(ActuatorDrive {
            rig_id: rig.as_str().to_owned(),
            sample_index,
            force_n,
            controller_version: self.version,
            // Stamped when the rig's state hands it on (`RigState::take_drives`).
            owner_epoch: 0,
        })
    }

    /// Decides a command received on `rig`'s command topic at wall time `now_unix_ns`.
    /// `None` for any kind but `SetControl`: those are the edge's to answer.
    pub fn decide(
        &mut self,
        rig: &RigId,
        command: &Command,
        now_unix_ns: u64,
        position: LoopPosition,
    ) -> Option<Decision> {
        let Some(Kind::SetControl(set)) = &command.kind else {
            return None;
        };
        if let Some(ack) = self.acks.get(&command.id) {
            return Some(Decision {
                ack: ack.clone(),
                drive: None,
                params: None,
                duplicate: true,
            });
        }
        let mut drive = None;
        let mut params = None;
        let mut edge_note = String::new();
        let outcome =
            check_delivery(rig, command, now_unix_ns).and_then(|()| self.judge(set, position));
        let ack = match outcome {
            Ok((law, placement, design)) => {
                let was_edge = self.placement == Placement::Edge && self.law != Law::Off;
                // Every applied command is a new controller parameter set, even an unchanged one.
                self.law = law;
                self.placement = placement;
                self.version += 1;
                self.lqr_row = match (&design, law, placement) {
                    (Some((d, _)), Law::Lqg, Placement::Twin) => Some(d.feedback_row.clone()),
                    _ => None,
                };
                if placement == Placement::Edge || was_edge {
                    let description = self.describe();
                    let on_edge = design
                        .as_ref()
                        .filter(|_| placement == Placement::Edge)
                        .map(|(d, io)| (d, io));
                    params = Some(self.edge_params(rig, now_unix_ns, on_edge, description));
                    if let Some(p) = &params {
                        edge_note = format!(
                            "; sent to the edge as controller/{} (the edge acknowledges it there)",
                            p.version
                        );
                    }
                }
                if law == Law::Off && self.config.enabled && !was_edge {
                    drive = Some(ActuatorDrive {
                        rig_id: rig.as_str().to_owned(),
                        sample_index: position.next_sample_index.saturating_sub(1),
                        force_n: 0.0,
                        controller_version: self.version,
                        owner_epoch: 0,
                    });
                }
                CommandAck {
                    command_id: command.id.clone(),
                    rig_id: rig.as_str().to_owned(),
                    status: Status::Applied as i32,
                    applied_at_sample_index: position.next_sample_index,
                    reason: edge_note.trim_start_matches("; ").to_owned(),
                }
            }
            Err((status, reason)) => CommandAck {
                command_id: command.id.clone(),
                rig_id: rig.as_str().to_owned(),
                status: status as i32,
                applied_at_sample_index: 0,
                reason,
            },
        };
        if !command.id.is_empty() {
            self.remember(ack.clone());
        }
        Some(Decision {
            ack,
            drive,
            params,
            duplicate: false,
        })
    }

    fn judge(&self, set: &SetControl, position: LoopPosition) -> Result<Judged, (Status, String)> {
        let refuse = |why: String| Err((Status::Refused, why));
        let placement = match WirePlacement::try_from(set.placement) {
            Ok(WirePlacement::Twin) => Placement::Twin,
            Ok(WirePlacement::Edge) => Placement::Edge,
            Err(_) => return refuse(format!("unknown placement {}", set.placement)),
        };
        let law = match WireLaw::try_from(set.law) {
            Ok(WireLaw::Off) => return Ok((Law::Off, placement, None)),
            Ok(WireLaw::Lqg) => {
                if !self.config.enabled {
                    return refuse(
                        "twin-hosted control is disabled (control.enabled = false)".into(),
                    );
                }
                if !position.estimating {
                    return refuse(
                        "LQG needs the rig's state estimator running, and it is not".into(),
                    );
                }
                Law::Lqg
            }
            Ok(WireLaw::Dvf) => {
                if !position.estimating {
                    return refuse(
                        "DVF needs the rig's state estimator running, and it is not".into(),
                    );
                }
                let g = set.gain_n_s_per_m;
                if !(g.is_finite() && g >= 0.0) {
                    return refuse(format!("gain {g} N·s/m must be finite and >= 0"));
                }
                let plant = self
                    .plant
                    .as_ref()
                    .map_err(|why| (Status::Refused, why.clone()))?;
                let gain_a_per_m_s = g / plant.force_factor_n_per_a;
                self.check_dvf(gain_a_per_m_s, false)
                    .map_err(|why| (Status::Refused, why))?;
                Law::Dvf { gain_a_per_m_s }
            }
            Err(_) => return refuse(format!("unknown control law {}", set.law)),
        };
        // Twin-hosted DVF needs no design; everything else is designed (and checked for a
        // stable sampled loop) on the birth's model.
        if placement == Placement::Twin && matches!(law, Law::Dvf { .. }) {
            return Ok((law, placement, None));
        }
        let (design, io) = self.design(law).map_err(|why| (Status::Refused, why))?;
        Ok((law, placement, Some((design, io.clone()))))
    }

    /// Whether DVF with gain h may run on the current plant.
    fn check_dvf(&self, gain_a_per_m_s: f64, at_start_up: bool) -> Result<(), String> {
        if !self.config.enabled {
            return Err("twin-hosted control is disabled (control.enabled = false)".into());
        }
        let plant = self.plant.as_ref().map_err(Clone::clone)?;
        let critical = plant.critical_gain_a_per_m_s;
        let limit = self.config.max_fraction_of_critical * critical;
        if gain_a_per_m_s > limit {
            let source = if at_start_up {
                "control.gain_a_per_m_s"
            } else {
                "the requested gain"
            };
            return Err(format!(
                "{source} h = {:.4} A/(m/s) ({:.3} N·s/m) exceeds {} of the critical DVF gain of \
                 floor {}: the limit is h = {:.4} A/(m/s) ({:.3} N·s/m); critical gain \
                 h_crit = {:.4} A/(m/s) = {:.3} N·s/m",
                gain_a_per_m_s,
                plant.n_s_per_m(gain_a_per_m_s),
                self.config.max_fraction_of_critical,
                plant.host_floor,
                limit,
                plant.n_s_per_m(limit),
                critical,
                plant.n_s_per_m(critical),
            ));
        }
        Ok(())
    }

    // ---- Model adoption (crate::adopt): the running controller re-checked on a new model ----

    /// The rig's estimator now runs on another building: takes its plant (critical gain,
    /// hence the DVF limit) and loop, and re-checks the running law against them. Twin-hosted
    /// DVF is kept while its gain stays within the new limit; LQG and edge-hosted loops are
    /// redesigned on the new model and kept if the sampled loop is stable. Otherwise the
    /// controller is stopped exactly as an OFF command stops it (zero drive or edge params
    /// off, new version) and the reason is returned for the operator.
    pub fn on_model_switch(
        &mut self,
        rig: &RigId,
        plant: Result<ActuatorPlant, String>,
        io: LoopIo,
        now_unix_ns: u64,
        position: LoopPosition,
    ) -> ModelRecheck {
        self.plant = plant;
        self.io = Some(io);
        let mut recheck = ModelRecheck::default();
        if self.law == Law::Off || !self.config.enabled {
            return recheck;
        }
        let verdict = match self.law {
            Law::Dvf { gain_a_per_m_s } => self.check_dvf(gain_a_per_m_s, false),
            Law::Lqg | Law::Off => Ok(()),
        };
        let needs_design =
            !(self.placement == Placement::Twin && matches!(self.law, Law::Dvf { .. }));
        let verdict = verdict.and_then(|()| {
            if needs_design {
                self.design(self.law).map(|(d, io)| Some((d, io.clone())))
            } else {
                Ok(None)
            }
        });
        match verdict {
            Ok(None) => {}
            Ok(Some((design, io))) => {
                self.version += 1;
                if self.placement == Placement::Edge {
                    let description = self.describe();
                    recheck.params =
                        Some(self.edge_params(rig, now_unix_ns, Some((&design, &io)), description));
                } else {
                    self.lqr_row = Some(design.feedback_row.clone());
                }
            }
            Err(why) => {
                let was_edge = self.placement == Placement::Edge;
                self.law = Law::Off;
                self.version += 1;
                self.lqr_row = None;
                if was_edge {
                    recheck.params = Some(self.edge_off_params(rig, now_unix_ns));
                } else {
                    recheck.drive = Some(ActuatorDrive {
                        rig_id: rig.as_str().to_owned(),
                        sample_index: position.next_sample_index.saturating_sub(1),
                        force_n: 0.0,
                        controller_version: self.version,
                        owner_epoch: 0,
                    });
                }
                self.placement = Placement::Twin;
                recheck.stopped = Some(why);
            }
        }
        recheck
    }

    // ---- end of model adoption ----

    fn set_law(&mut self, law: Law) {
        if law != self.law {
            self.law = law;
            self.version += 1;
        }
    }

    /// The answer already given to command `id`, if it is still remembered.
    pub(crate) fn answered(&self, id: &str) -> Option<CommandAck> {
        self.acks.get(id).cloned()
    }

    /// Remembers the answer to a command, so a repeat of its id gets it again.
    pub(crate) fn remember(&mut self, ack: CommandAck) {
        if self.remembered.len() == REMEMBERED_COMMAND_IDS
            && let Some(oldest) = self.remembered.pop_front()
        {
            self.acks.remove(&oldest);
        }
        self.remembered.push_back(ack.command_id.clone());
        self.acks.insert(ack.command_id.clone(), ack);
    }
}

/// What every command the twin answers must be, whatever its kind: one with an id, addressed
/// to the topic's rig, received within its deadline (at wall time `now_unix_ns`).
///
/// # Errors
/// The answer's status (`Refused`, or `Expired`) and why.
pub(crate) fn check_delivery(
    rig: &RigId,
    command: &Command,
    now_unix_ns: u64,
) -> Result<(), (Status, String)> {
    if command.id.is_empty() {
        return Err((Status::Refused, "the command has no id".to_owned()));
    }
    if command.target_rig != rig.as_str() {
        return Err((
            Status::Refused,
            format!(
                "target_rig {:?} does not match the topic's rig {:?}",
                command.target_rig,
                rig.as_str()
            ),
        ));
    }
    if command.deadline_ns != 0 && now_unix_ns > command.deadline_ns {
        return Err((
            Status::Expired,
            format!(
                "the deadline passed {} ms before the twin received the command",
                (now_unix_ns - command.deadline_ns) / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// The answer `status` (a failure) to command `id` on `rig`, for `why`.
pub(crate) fn failed(rig: &RigId, id: &str, status: Status, why: String) -> CommandAck {
    CommandAck {
        command_id: id.to_owned(),
        rig_id: rig.as_str().to_owned(),
        status: status as i32,
        applied_at_sample_index: 0,
        reason: why,
    }
}

/// The answer to a `SetControl` or `RunCbc` for a rig the twin has never seen born; `None`
/// for other kinds, which are the edge's.
pub fn refusal_for_unknown_rig(rig: &RigId, command: &Command) -> Option<CommandAck> {
    let Some(Kind::SetControl(_) | Kind::RunCbc(_)) = &command.kind else {
        return None;
    };
    Some(failed(
        rig,
        &command.id,
        Status::Refused,
        "the twin has not seen this rig's birth, so it cannot control it".into(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_dynamics::ShearBuilding;

    /// Largest |eigenvalue| of the sampled Southampton building with the actuator on floor 3
    /// when `force_n = feedback_n_s_per_m · v_3` is fed to the actuator input every sample.
    fn spectral_radius(feedback_n_s_per_m: f64) -> f64 {
        let model = ShearBuilding::southampton_with_actuator(3)
            .unwrap()
            .state_space()
            .discretize_zoh(1e-3)
            .unwrap();
        let actuator = model.input_actuator().unwrap();
        let velocity = model.output_floor_velocity(3);
        assert_eq!(model.d[(velocity, actuator)], 0.0);
        let closed =
            &model.ad + model.bd.column(actuator) * model.c.row(velocity) * feedback_n_s_per_m;
        closed
            .complex_eigenvalues()
            .iter()
            .map(|l| l.norm())
            .fold(0.0, f64::max)
    }

    #[test]
    fn the_drive_sign_damps_the_simulated_building() {
        let plant = ActuatorPlant::design(&ShearBuildingConfig::southampton(), 3).unwrap();
        // CONTROL.md §4: h_crit = 1.79465 A/(m/s) on floor 3.
        assert!((plant.critical_gain_a_per_m_s - 1.79465).abs() < 1e-4);
        let g = plant.n_s_per_m(0.5 * plant.critical_gain_a_per_m_s);
        let mut controller = RigController::new(ControlConfig {
            enabled: true,
            law: ControlLawName::Dvf,
            gain_a_per_m_s: 0.5 * plant.critical_gain_a_per_m_s,
            ..ControlConfig::default()
        });
        controller.on_birth(Ok(plant)).unwrap();
        // The gain the drive actually applies per unit velocity, sign included.
        let Some(DriveLaw::Dvf {
            host_floor: 3,
            gain_n_s_per_m: applied,
        }) = controller.drive_law()
        else {
            panic!("DVF on floor 3 expected, got {:?}", controller.drive_law());
        };
        assert!((applied - g).abs() < 1e-12);
        let open = spectral_radius(0.0);

        assert!(
            spectral_radius(applied) < open,
            "the drive must add damping"
        );
        assert!(
            spectral_radius(-applied) > open,
            "the opposite sign removes damping"
        );
        // With this sign the sampled loop goes unstable where the dynamics study says.
        let critical_n_s_per_m = plant.n_s_per_m(plant.critical_gain_a_per_m_s);
        assert!(spectral_radius(0.99 * critical_n_s_per_m) < 1.0);
        assert!(spectral_radius(1.01 * critical_n_s_per_m) > 1.0);
    }

    #[test]
    fn a_rig_without_an_actuator_has_no_plant_and_the_start_up_law_is_refused() {
        assert!(ActuatorPlant::design(&ShearBuildingConfig::southampton(), 0).is_err());
        let mut controller = RigController::new(ControlConfig {
            enabled: true,
            law: ControlLawName::Dvf,
            gain_a_per_m_s: 1.0,
            ..ControlConfig::default()
        });
        let plant = ActuatorPlant::design(&ShearBuildingConfig::southampton(), 3).unwrap();
        // 1.0 > 0.8 · 1.79: allowed; 1.5 is not.
        assert!(controller.on_birth(Ok(plant)).is_ok());
        assert!(controller.is_active());
        let mut controller = RigController::new(ControlConfig {
            enabled: true,
            law: ControlLawName::Dvf,
            gain_a_per_m_s: 1.5,
            ..ControlConfig::default()
        });
        assert!(controller.on_birth(Ok(plant)).is_err());
        assert!(!controller.is_active());
        assert_eq!(controller.describe(), "off");
    }

    /// Each live CBC target goes out as a new version of the edge's params: the run's law
    /// (its matrices row-major) on the accelerometer, and the target's coefficients.
    #[test]
    fn cbc_params_carry_the_runs_law_and_target_under_rising_versions() {
        let mut controller = RigController::new(ControlConfig::default());
        let rig = RigId::new("r1").unwrap();
        let config = LiveCbcConfig::new(1000.0, 6.8, 7.4, 3, 2e-4, 20.0);
        let target = LiveTarget {
            frequency_hz: 6.8,
            cos_m: vec![2e-4, 0.0, 1e-6],
            sin_m: vec![0.0, 0.0, -2e-6],
        };
        let first = controller.edge_cbc_params(&rig, 5_000_000, &config, &target, 0);
        let second = controller.edge_cbc_params(&rig, 5_000_000, &config, &target, 0);
        assert!(second.version > first.version && first.version >= 5);
        assert!(first.enabled);
        assert_eq!(first.input_channel_ids, vec![0]);
        let k = config.controller();
        assert_eq!(first.state_count, 2);
        // Row-major: a = [[λ, 0], [T, λ]].
        assert_eq!(
            first.a,
            vec![k.a[(0, 0)], k.a[(0, 1)], k.a[(1, 0)], k.a[(1, 1)]]
        );
        assert_eq!(first.a[2], 1e-3);
        assert_eq!(first.b, vec![1e-3, 0.0]);
        assert_eq!(first.c, vec![50.0, 5000.0]);
        assert_eq!(first.sample_period_s, 1e-3);
        let sent = first.harmonic_target.expect("a target");
        assert_eq!(
            (sent.frequency_hz, sent.channel_id, sent.cos_m, sent.sin_m),
            (6.8, 0, target.cos_m.clone(), target.sin_m.clone())
        );
    }
}
