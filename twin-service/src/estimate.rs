//! Owns one rig's state estimator: fitting the configured structural model to a birth's
//! manifest, feeding it each live block's samples in order, deciding when an estimate is due,
//! and checkpointing all of that exactly (for deterministic replay, see `crate::replay`).
//! Pure and synchronous; it knows nothing of MQTT, storage or wall time.

use std::collections::VecDeque;

use dtop_dynamics::{
    FilterSnapshot, GainSchedule, InertialActuator, ShearBuilding, ShearBuildingConfig,
    StructuralEstimator, StructuralNoise,
};
use dtop_proto::v1::{ChannelKind, RigBirth, SampleBlock};
use serde::{Deserialize, Serialize};

use crate::config::NoiseConfig;
use crate::ingest::ChannelInfo;
use crate::lineproto::Column;

/// The only stream the estimator reads: the firmware's serial stream.
pub const ESTIMATED_STREAM: u32 = 0;
/// A block whose period differs from the design period by more than this fraction is not fed.
const PERIOD_TOLERANCE: f64 = 1e-3;

/// Why a birth's manifest does not fit the configured model; every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Misfit(pub Vec<String>);

/// The estimated state at one sample, due for publication and storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Stream-0 sample index.
    pub sample_index: u64,
    /// Time of that sample, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Per floor 1..=N, relative to the ground, m.
    pub displacement_m: Vec<f64>,
    /// Per floor 1..=N, relative to the ground, m/s.
    pub velocity_m_s: Vec<f64>,
    /// Mean of NIS per measured channel over about the last second (≈ 1 when the filter is
    /// consistent); `None` before any sample was measured.
    pub nis_mean: Option<f64>,
}

/// Everything [`RigEstimator::from_birth`] takes besides the birth: with the same birth and
/// design the same filter is built, bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorDesign {
    /// The rig's building as configured (before the birth's actuator is fitted).
    pub building: ShearBuildingConfig,
    pub noise: NoiseConfig,
    pub state_publish_hz: f64,
    /// The catalogue model version `building` is (`name@version`, `crate::adopt`); absent
    /// when it is the configured building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// What a [`RigEstimator`] carries from one block to the next, exactly: restored into an
/// estimator built from the same birth and design, the following blocks give the same
/// estimates bit for bit. Serializes to JSON with exact floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorCheckpoint {
    /// Session of the birth the estimator was built from.
    pub session: u64,
    /// The next stream-0 sample index expected (`None` before the first block).
    pub next_sample_index: Option<u64>,
    pub filter: FilterSnapshot,
    /// NIS (sum, count) per closed publication interval, oldest first.
    pub nis_buckets: Vec<(f64, u64)>,
    /// NIS (sum, count) of the interval still open.
    pub nis_open: (f64, u64),
}

/// Why a checkpoint cannot be restored into an estimator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is of session {checkpoint}, the estimator of session {estimator}")]
    WrongSession { checkpoint: u64, estimator: u64 },
    #[error("the checkpoint holds {found} NIS intervals, the estimator keeps {capacity}")]
    NisWindow { found: usize, capacity: usize },
    #[error("the filter state does not fit: {0}")]
    Filter(String),
}

/// What [`RigEstimator::feed`] did with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Every sample was folded in.
    Samples(usize),
    /// Not for this estimator: backfill, another stream or another session.
    NotLive,
    /// Its samples are older than ones already folded in (a late hole fill).
    Stale,
    /// Its sample period is not the one the filter was designed for.
    PeriodMismatch { block_period_ns: u64 },
}

/// One rig's Kalman filter, bound to the channels of one session's manifest.
#[derive(Debug, Clone)]
pub struct RigEstimator {
    session: u64,
    estimator: StructuralEstimator,
    floors: usize,
    /// Channel id of floor `i + 1`'s accelerometer.
    accel_channels: Vec<u32>,
    force_channel: u32,
    /// Model input index of the force on floor 1.
    force_input: usize,
    sample_period_ns: f64,
    /// An estimate is due at every sample index divisible by this.
    decimation: u64,
    /// A sample gap up to this long is bridged by prediction; a longer one restarts at rest.
    max_gap_samples: u64,
    next_sample_index: Option<u64>,
    /// Reused per sample, so stepping allocates nothing.
    u: Vec<f64>,
    y: Vec<Option<f64>>,
    /// Column of each floor's accelerometer in the current block.
    accel_columns: Vec<Option<usize>>,
    at_rest: Vec<f64>,
    nis: NisWindow,
    /// What a controller designed for this rig needs: the fitted model and noise.
    loop_io: LoopIo,
}

/// The rig as a sampled control loop sees it, fixed at birth: the model fitted to the
/// manifest, its noise, the period and the channels of w (`dynamics::control::sampled`).
#[derive(Debug, Clone)]
pub struct LoopIo {
    /// The configured building with the birth's actuator fitted.
    pub building: ShearBuildingConfig,
    pub noise: StructuralNoise,
    pub dt_s: f64,
    /// Stream-0 channel ids: floor 1..=N accelerometers, then the floor-1 force gauge.
    pub input_channel_ids: Vec<u32>,
}

impl RigEstimator {
    /// Designs the filter for `building` as fitted out by `birth`: floor accelerometers on
    /// floors 1..=N of stream 0, the measured force on floor 1 as a known input, the actuator
    /// (if any) on `birth.actuator.floor`, and the period of the channels' sample rate.
    pub fn from_birth(
        birth: &RigBirth,
        building: &ShearBuildingConfig,
        noise: &NoiseConfig,
        state_publish_hz: f64,
    ) -> Result<Self, Misfit> {
        let floors = building.floors();
        let mut problems = Vec::new();
        if usize::try_from(birth.floors).ok() != Some(floors) {
            problems.push(format!(
                "the birth announces {} floors, the model has {floors}",
                birth.floors
            ));
        }
        let on_stream = |kind: ChannelKind| {
            birth
                .channels
                .iter()
                .filter(move |c| c.stream_id == ESTIMATED_STREAM && c.kind == kind as i32)
        };
        let mut accel = Vec::with_capacity(floors);
        for floor in 1..=floors {
            let found: Vec<_> = on_stream(ChannelKind::Acceleration)
                .filter(|c| usize::try_from(c.floor).ok() == Some(floor))
                .collect();
            match found.as_slice() {
                [one] => accel.push(*one),
                [] => problems.push(format!("no acceleration channel on floor {floor}")),
                _ => problems.push(format!(
                    "{} acceleration channels on floor {floor}",
                    found.len()
                )),
            }
        }
        if let Some(c) = on_stream(ChannelKind::Acceleration)
            .find(|c| usize::try_from(c.floor).map_or(true, |f| f > floors))
        {
            problems.push(format!(
                "acceleration channel {:?} is on floor {}, above the model's {floors}",
                c.name, c.floor
            ));
        }
        let forces: Vec<_> = on_stream(ChannelKind::Force)
            .filter(|c| c.floor == 1)
            .collect();
        let force = match forces.as_slice() {
            [one] => Some(*one),
            [] => {
                problems.push("no force channel on floor 1 (the known input)".to_owned());
                None
            }
            _ => {
                problems.push(format!("{} force channels on floor 1", forces.len()));
                None
            }
        };
        let rates: Vec<f64> = accel
            .iter()
            .chain(force.iter())
            .map(|c| c.sample_rate_hz)
            .collect();
        let sample_rate_hz = rates.first().copied().unwrap_or(0.0);
        if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
            problems.push(format!("sample rate {sample_rate_hz} Hz is not positive"));
        } else if rates
            .iter()
            .any(|r| (r - sample_rate_hz).abs() > 1e-9 * sample_rate_hz)
        {
            problems.push("the channels announce different sample rates".to_owned());
        }
        let actuator_floor = birth.actuator.as_ref().map_or(0, |a| a.floor);
        let actuator_floor = usize::try_from(actuator_floor).unwrap_or(usize::MAX);
        if actuator_floor > floors {
            problems.push(format!(
                "actuator on floor {actuator_floor}, above the model's {floors}"
            ));
        }
        let Some(force) = force.filter(|_| problems.is_empty()) else {
            return Err(Misfit(problems));
        };

        let config = ShearBuildingConfig {
            actuator: (actuator_floor > 0).then(|| InertialActuator {
                floor: actuator_floor,
                ..building.actuator.unwrap_or_default()
            }),
            ..building.clone()
        };
        let dt_s = 1.0 / sample_rate_hz;
        let misfit = |what: &str, e: &dyn std::fmt::Display| Misfit(vec![format!("{what}: {e}")]);
        let fitted = config.clone();
        let model = ShearBuilding::new(config)
            .map_err(|e| misfit("invalid model", &e))?
            .state_space()
            .discretize_zoh(dt_s)
            .map_err(|e| misfit("cannot discretize the model", &e))?;
        let layout = model.io_layout();
        let mut structural = StructuralNoise::defaults(layout);
        structural.accel_noise_rms_m_s2 = noise.accel_noise_rms_m_s2;
        structural.accel_lsb_m_s2 = accel.iter().map(|c| c.scale.abs()).fold(0.0, f64::max);
        structural.model_error_accel_rms_m_s2 = noise.model_error_accel_rms_m_s2;
        structural
            .input_uncertainty_rms
            .fill(noise.unmeasured_force_rms_n);
        structural.input_uncertainty_rms[layout.input_ground_accel()] = noise.ground_accel_rms_m_s2;
        let force_input = layout.input_floor_force(1);
        structural.input_uncertainty_rms[force_input] = noise.force_gauge_noise_rms_n;
        if let Some(actuator) = layout.input_actuator() {
            structural.input_uncertainty_rms[actuator] = noise.actuator_force_error_rms_n;
        }
        let estimator = StructuralEstimator::new(&model, &structural, GainSchedule::Auto)
            .map_err(|e| misfit("cannot design the Kalman filter", &e))?;

        let decimation = (sample_rate_hz / state_publish_hz).round().max(1.0) as u64;
        let buckets = (sample_rate_hz / decimation as f64).round().max(1.0) as usize;
        Ok(Self {
            session: birth.session,
            floors,
            accel_channels: accel.iter().map(|c| c.id).collect(),
            force_channel: force.id,
            force_input,
            sample_period_ns: dt_s * 1e9,
            decimation,
            max_gap_samples: sample_rate_hz.round().max(1.0) as u64,
            next_sample_index: None,
            u: vec![0.0; layout.n_inputs()],
            y: vec![None; floors],
            accel_columns: vec![None; floors],
            at_rest: vec![0.0; model.n_states()],
            nis: NisWindow::new(buckets),
            loop_io: LoopIo {
                building: fitted,
                noise: structural.clone(),
                dt_s,
                input_channel_ids: accel.iter().map(|c| c.id).chain([force.id]).collect(),
            },
            estimator,
        })
    }

    /// Session of the birth this estimator was designed for.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Floors estimated (1..=N).
    pub fn floors(&self) -> usize {
        self.floors
    }

    /// Samples between two estimates.
    pub fn decimation(&self) -> u64 {
        self.decimation
    }

    /// The next stream-0 sample index the filter expects (`None` before the first block).
    pub fn next_sample_index(&self) -> Option<u64> {
        self.next_sample_index
    }

    /// The filter, for inspection.
    pub fn loop_io(&self) -> &LoopIo {
        &self.loop_io
    }

    pub fn estimator(&self) -> &StructuralEstimator {
        &self.estimator
    }

    /// Folds in every sample of a live block of this session's stream 0, pushing an
    /// [`Estimate`] to `due` at each sample index divisible by [`decimation`](Self::decimation).
    /// A gap of up to a second since the previous block is bridged by prediction; a longer one
    /// restarts the filter at rest. Allocates nothing except the estimates.
    pub fn feed(
        &mut self,
        block: &SampleBlock,
        columns: &[(Column<'_>, &ChannelInfo)],
        due: &mut Vec<Estimate>,
    ) -> Fed {
        if block.backfill || block.stream_id != ESTIMATED_STREAM || block.session != self.session {
            return Fed::NotLive;
        }
        let period = block.sample_period_ns as f64;
        if (period - self.sample_period_ns).abs() > PERIOD_TOLERANCE * self.sample_period_ns {
            return Fed::PeriodMismatch {
                block_period_ns: block.sample_period_ns,
            };
        }
        let first = block.first_sample_index;
        match self.next_sample_index {
            Some(next) if first < next => return Fed::Stale,
            Some(next) if first - next > self.max_gap_samples => self.restart(),
            Some(next) => {
                // Nothing was measured in the gap, and no force is known: predict through it.
                self.u.fill(0.0);
                self.y.fill(None);
                for _ in next..first {
                    self.estimator.step(&self.u, &self.y);
                }
            }
            None => {}
        }
        for (slot, id) in self.accel_columns.iter_mut().zip(&self.accel_channels) {
            *slot = columns.iter().position(|(_, info)| info.id == *id);
        }
        let force_column = columns
            .iter()
            .position(|(_, info)| info.id == self.force_channel);
        let samples = columns.first().map_or(0, |(c, _)| c.raw.len());
        for k in 0..samples {
            for (y, column) in self.y.iter_mut().zip(&self.accel_columns) {
                *y = column
                    .and_then(|c| columns[c].0.value(k))
                    .filter(|v| v.is_finite());
            }
            self.u[self.force_input] = force_column
                .and_then(|c| columns[c].0.value(k))
                .filter(|v| v.is_finite())
                .unwrap_or(0.0);
            let report = self.estimator.step(&self.u, &self.y);
            if report.measured > 0 {
                self.nis.add(report.nis / report.measured as f64);
            }
            let index = first + k as u64;
            if index.is_multiple_of(self.decimation) {
                self.nis.close_bucket();
                let timestamp_ns = block
                    .first_timestamp_ns
                    .saturating_add((k as u64).saturating_mul(block.sample_period_ns));
                due.push(self.estimate(index, timestamp_ns));
            }
        }
        self.next_sample_index = Some(first + samples as u64);
        Fed::Samples(samples)
    }

    fn estimate(&self, sample_index: u64, timestamp_ns: u64) -> Estimate {
        Estimate {
            sample_index,
            timestamp_ns,
            displacement_m: (1..=self.floors)
                .map(|f| self.estimator.floor_displacement_m(f))
                .collect(),
            velocity_m_s: (1..=self.floors)
                .map(|f| self.estimator.floor_velocity_m_s(f))
                .collect(),
            nis_mean: self.nis.mean(),
        }
    }

    fn restart(&mut self) {
        self.estimator.filter_mut().reset(&self.at_rest);
        self.nis.clear();
    }

    /// The exact state between two blocks (see [`EstimatorCheckpoint`]).
    pub fn checkpoint(&self) -> EstimatorCheckpoint {
        EstimatorCheckpoint {
            session: self.session,
            next_sample_index: self.next_sample_index,
            filter: self.estimator.filter().snapshot(),
            nis_buckets: self.nis.buckets.iter().copied().collect(),
            nis_open: self.nis.open,
        }
    }

    /// Continues from `checkpoint`, taken from an estimator built from the same birth and
    /// design. On error the estimator is left unchanged.
    pub fn restore(&mut self, checkpoint: &EstimatorCheckpoint) -> Result<(), CheckpointError> {
        if checkpoint.session != self.session {
            return Err(CheckpointError::WrongSession {
                checkpoint: checkpoint.session,
                estimator: self.session,
            });
        }
        if checkpoint.nis_buckets.len() > self.nis.capacity {
            return Err(CheckpointError::NisWindow {
                found: checkpoint.nis_buckets.len(),
                capacity: self.nis.capacity,
            });
        }
        self.estimator
            .filter_mut()
            .restore(&checkpoint.filter)
            .map_err(|e| CheckpointError::Filter(e.to_string()))?;
        self.next_sample_index = checkpoint.next_sample_index;
        self.nis.buckets.clear();
        self.nis
            .buckets
            .extend(checkpoint.nis_buckets.iter().copied());
        self.nis.open = checkpoint.nis_open;
        Ok(())
    }
}

/// Mean NIS over the last `capacity` publication intervals (about one second), kept as one
/// (sum, count) per interval so memory does not grow with the sample rate.
#[derive(Debug, Clone)]
struct NisWindow {
    buckets: VecDeque<(f64, u64)>,
    capacity: usize,
    open: (f64, u64),
}

impl NisWindow {
    fn new(capacity: usize) -> Self {
        Self {
            buckets: VecDeque::with_capacity(capacity),
            capacity,
            open: (0.0, 0),
        }
    }

    fn add(&mut self, nis: f64) {
        if nis.is_finite() {
            self.open.0 += nis;
            self.open.1 += 1;
        }
    }

    fn close_bucket(&mut self) {
        if self.buckets.len() == self.capacity {
            self.buckets.pop_front();
        }
        self.buckets.push_back(std::mem::take(&mut self.open));
    }

    fn mean(&self) -> Option<f64> {
        let (sum, n) = self
            .buckets
            .iter()
            .fold((0.0, 0), |(s, n), (bs, bn)| (s + bs, n + bn));
        (n > 0).then(|| sum / n as f64)
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.open = (0.0, 0);
    }
}
