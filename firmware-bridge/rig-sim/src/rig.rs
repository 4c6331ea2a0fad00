//! Owns the simulated physical rig: the discretised structure, the excitation and the sensors,
//! advanced one sample at a time. Pure and deterministic; knows nothing about frames or time.

use dtop_dynamics::{DiscreteStateSpace, ShearBuilding};
use nalgebra::DVector;

use crate::config::{ExcitationConfig, ExcitationTarget, SimConfig};
use crate::error::SimError;
use crate::excitation::Excitation;
use crate::sensor::{CHANNEL_COUNT, SensorBank};

/// Storeys of the Southampton rig; the channel table and the Modbus map assume three.
pub const FLOORS: usize = 3;

/// One sample as the ADC saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Raw ADC counts, channel order.
    pub raw: [i32; CHANNEL_COUNT],
    /// The same counts in SI units (raw × scale): what the device reports over Modbus.
    pub value_si: [f64; CHANNEL_COUNT],
}

/// The structure, its inputs and its sensors.
#[derive(Debug, Clone)]
pub struct Rig {
    plant: DiscreteStateSpace,
    /// Plant state, carried between samples.
    x: DVector<f64>,
    /// Input vector, rewritten each sample; kept to avoid allocating per sample.
    u: DVector<f64>,
    /// Output vector, rewritten each sample.
    y: DVector<f64>,
    input_ground: usize,
    input_floor1: usize,
    input_actuator: Option<usize>,
    output_accel: [usize; FLOORS],
    target: ExcitationTarget,
    excitation: Excitation,
    sensors: SensorBank,
    sample_rate_hz: f64,
    seed: u64,
}

impl Rig {
    /// Builds the Southampton three-storey model (with the actuator at
    /// `config.actuator_floor`, if any), discretised with ZOH at the sample period.
    pub fn new(config: &SimConfig) -> Result<Self, SimError> {
        let building = match config.actuator_floor {
            0 => ShearBuilding::southampton(),
            floor => ShearBuilding::southampton_with_actuator(usize::from(floor))?,
        };
        let continuous = building.state_space();
        let input_ground = continuous.input_ground_accel();
        let input_floor1 = continuous.input_floor_force(1);
        let input_actuator = continuous.input_actuator();
        let output_accel = [1, 2, 3].map(|floor| continuous.output_floor_accel(floor));
        let plant = continuous.discretize_zoh(1.0 / config.sample_rate_hz)?;
        Ok(Self {
            x: DVector::zeros(plant.n_states()),
            u: DVector::zeros(plant.n_inputs()),
            y: DVector::zeros(plant.n_outputs()),
            plant,
            input_ground,
            input_floor1,
            input_actuator,
            output_accel,
            target: config.excitation_target,
            excitation: Excitation::new(&config.excitation, config.sample_rate_hz, config.seed),
            sensors: SensorBank::new(
                config.excitation_target,
                config.accel_noise_rms_m_s2,
                config.force_noise_rms_n,
                config.seed,
            ),
            sample_rate_hz: config.sample_rate_hz,
            seed: config.seed,
        })
    }

    /// Switches the shaker to `excitation` from the next sample on (already validated).
    pub fn set_excitation(&mut self, excitation: &ExcitationConfig) {
        self.excitation = Excitation::new(excitation, self.sample_rate_hz, self.seed);
    }

    /// The sensor channels, in stream order.
    pub fn sensors(&self) -> &SensorBank {
        &self.sensors
    }

    /// Takes one sample with `actuator_force_n` applied (ignored without an actuator) and
    /// advances the structure by one period.
    pub fn step(&mut self, actuator_force_n: f64) -> Measurement {
        let excitation = self.excitation.next_value();
        self.u.fill(0.0);
        match self.target {
            ExcitationTarget::Floor1Force => self.u[self.input_floor1] = excitation,
            ExcitationTarget::GroundAccel => self.u[self.input_ground] = excitation,
        }
        if let Some(i) = self.input_actuator {
            self.u[i] = actuator_force_n;
        }
        self.plant.step(&mut self.x, &self.u, &mut self.y);
        let physical = [
            self.y[self.output_accel[0]],
            self.y[self.output_accel[1]],
            self.y[self.output_accel[2]],
            // The force gauge measures the applied force; the base accelerometer measures the
            // ground acceleration, which is absolute by definition.
            excitation,
        ];
        let raw = self.sensors.measure(&physical);
        let channels = self.sensors.channels();
        let value_si = std::array::from_fn(|c| f64::from(raw[c]) * channels[c].scale());
        Measurement { raw, value_si }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExcitationConfig;

    fn quiet(config: SimConfig) -> SimConfig {
        SimConfig {
            accel_noise_rms_m_s2: 0.0,
            force_noise_rms_n: 0.0,
            ..config
        }
    }

    #[test]
    fn same_seed_gives_identical_raw_samples() {
        let config = SimConfig::default();
        let mut a = Rig::new(&config).unwrap();
        let mut b = Rig::new(&config).unwrap();
        for _ in 0..2000 {
            assert_eq!(a.step(0.0).raw, b.step(0.0).raw);
        }
    }

    #[test]
    fn a_still_rig_without_noise_reads_zero() {
        let config = quiet(SimConfig {
            excitation: ExcitationConfig::None,
            ..SimConfig::default()
        });
        let mut rig = Rig::new(&config).unwrap();
        for _ in 0..100 {
            assert_eq!(rig.step(0.0).raw, [0; CHANNEL_COUNT]);
        }
    }

    #[test]
    fn force_gauge_measures_the_excitation_force() {
        let config = quiet(SimConfig {
            excitation: ExcitationConfig::Sine {
                amplitude: 4.0,
                frequency_hz: 10.0,
            },
            ..SimConfig::default()
        });
        let mut rig = Rig::new(&config).unwrap();
        let scale = rig.sensors().channels()[3].scale();
        for n in 0..200 {
            let m = rig.step(0.0);
            let expected = crate::excitation::sine_value(4.0, 10.0, 1000.0, n);
            assert!((m.value_si[3] - expected).abs() <= 0.5 * scale * (1.0 + 1e-9));
        }
    }

    #[test]
    fn a_sine_excitation_makes_every_floor_move() {
        let config = quiet(SimConfig {
            excitation: ExcitationConfig::Sine {
                amplitude: 4.0,
                frequency_hz: 10.0,
            },
            ..SimConfig::default()
        });
        let mut rig = Rig::new(&config).unwrap();
        let mut peak = [0.0f64; FLOORS];
        for _ in 0..2000 {
            let m = rig.step(0.0);
            for (peak, value) in peak.iter_mut().zip(&m.value_si[..FLOORS]) {
                *peak = peak.max(value.abs());
            }
        }
        assert!(peak.iter().all(|p| *p > 0.01), "{peak:?}");
    }

    #[test]
    fn actuator_force_moves_the_structure_only_when_fitted() {
        let base = quiet(SimConfig {
            excitation: ExcitationConfig::None,
            ..SimConfig::default()
        });
        let mut fitted = Rig::new(&base).unwrap();
        let mut bare = Rig::new(&SimConfig {
            actuator_floor: 0,
            ..base
        })
        .unwrap();
        let mut moved = false;
        for _ in 0..500 {
            moved |= fitted.step(10.0).raw != [0; CHANNEL_COUNT];
            assert_eq!(bare.step(10.0).raw, [0; CHANNEL_COUNT]);
        }
        assert!(moved);
    }
}
