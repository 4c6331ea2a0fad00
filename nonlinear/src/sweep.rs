//! Owns open-loop sweeps run to steady state: the chain is driven by F·cos ωt at each point
//! of a grid, up the grid from rest and then back down, each point continuing from the
//! previous end state, integrated until a documented settling criterion holds. This is what
//! a stepped-sine test on the rig measures; it shows the jumps at the folds and never the
//! unstable branch. Knows nothing of controllers or harmonic balance.
//!
//! Settling criterion: every `block_periods` periods the first-harmonic amplitudes of all
//! DOFs over the block's last period are compared with those of the previous block; the
//! point has settled when the largest change is at most `settle_tolerance` times the
//! largest amplitude, or gives up (flagged unsettled) after `max_periods`. Cristallo runs 10
//! periods per frequency and reads (max − min)/2 of a transient (TOOLS.md §5.3).

use serde::{Deserialize, Serialize};

use crate::continuation::Sweep;
use crate::error::NonlinearError;
use crate::integrate::{Stepper, fastest_rate_rad_s};
use crate::model::NonlinearChain;

/// Largest number of integration steps a sweep may plan if no point settled early: a few
/// minutes of one core for a small chain. Settled points end far sooner.
pub const MAX_SWEEP_STEPS: f64 = 2e9;
/// Largest step times a bound of the chain's fastest linear rate: keeps RK4 (stable to
/// |h·λ| ≈ 2.8) far from its limit, with room for the springs' stiffening. Accuracy is set
/// by the slower modes the forcing excites (tests: within 1e-4 of the balance).
const MAX_STEP_TIMES_RATE: f64 = 0.5;

/// Default RK4 steps per forcing period.
pub const fn default_sweep_steps_per_period() -> usize {
    128
}
/// Default periods between two settling checks.
pub const fn default_block_periods() -> usize {
    20
}
/// Default settling tolerance (relative change of the amplitudes over a block).
pub const fn default_settle_tolerance() -> f64 {
    1e-6
}
/// Default period budget per grid point.
pub const fn default_max_periods() -> usize {
    2_000
}

/// An open-loop sweep: the range (frequency or amplitude), the grid and the settling rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLoopSweepConfig {
    /// The varying parameter, its range (increasing) and the fixed one.
    pub sweep: Sweep,
    /// Grid points from start to end inclusive, evenly spaced, 2..=10 000.
    pub points: usize,
    /// Fewest RK4 steps per forcing period, 16..=100 000; low frequencies get more, so that
    /// every step stays below half the inverse of the chain's fastest linear rate.
    #[serde(default = "default_sweep_steps_per_period")]
    pub steps_per_period: usize,
    /// Periods between two settling checks, at least 1.
    #[serde(default = "default_block_periods")]
    pub block_periods: usize,
    /// Settled when the amplitudes change by at most this fraction over a block; (0, 1).
    #[serde(default = "default_settle_tolerance")]
    pub settle_tolerance: f64,
    /// Period budget per grid point; at least two blocks.
    #[serde(default = "default_max_periods")]
    pub max_periods: usize,
}

impl OpenLoopSweepConfig {
    /// A sweep over `sweep` on `points` grid points with default integration and settling.
    pub fn new(sweep: Sweep, points: usize) -> Self {
        Self {
            sweep,
            points,
            steps_per_period: default_sweep_steps_per_period(),
            block_periods: default_block_periods(),
            settle_tolerance: default_settle_tolerance(),
            max_periods: default_max_periods(),
        }
    }

    /// Every rule this sweep breaks, as sentences; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.sweep.problems(&mut problems);
        if !(2..=10_000).contains(&self.points) {
            problems.push(format!("points = {} must be within 2..=10000", self.points));
        }
        if !(16..=100_000).contains(&self.steps_per_period) {
            problems.push(format!(
                "steps_per_period = {} must be within 16..=100000",
                self.steps_per_period
            ));
        }
        if self.block_periods == 0 {
            problems.push("block_periods must be at least 1".into());
        }
        if !(self.settle_tolerance > 0.0 && self.settle_tolerance < 1.0) {
            problems.push(format!(
                "settle_tolerance = {} must be within (0, 1)",
                self.settle_tolerance
            ));
        }
        if self.max_periods < 2 * self.block_periods {
            problems.push(format!(
                "max_periods = {} must allow two blocks of {} periods",
                self.max_periods, self.block_periods
            ));
        }
        let work =
            2.0 * self.points as f64 * self.max_periods as f64 * self.steps_per_period as f64;
        if work > MAX_SWEEP_STEPS {
            problems.push(format!(
                "the sweep may take {work:.3e} integration steps, above the budget of \
                 {MAX_SWEEP_STEPS:.0e}: fewer points, periods or steps"
            ));
        }
        problems
    }
}

/// The steady state measured at one grid point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepPoint {
    /// Forcing frequency, in rad/s.
    pub omega_rad_s: f64,
    /// Forcing amplitude, in N.
    pub forcing_n: f64,
    /// First-harmonic amplitude of each DOF over the last period, in m.
    pub amplitude_m: Vec<f64>,
    /// Periods integrated at this point.
    pub periods: usize,
    /// True when the settling criterion held before the period budget ran out.
    pub settled: bool,
}

/// Both directions of an open-loop sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLoopSweep {
    /// From the start of the range to its end, starting at rest.
    pub up: Vec<SweepPoint>,
    /// From the end back to the start, continuing from the up sweep's last state.
    pub down: Vec<SweepPoint>,
}

/// Runs the sweep up and then down, each point to steady state.
///
/// # Errors
/// [`NonlinearError::Invalid`] listing every problem (including a plan above the step
/// budget); [`NonlinearError::Numerical`] if the integration diverges.
pub fn open_loop_sweep(
    chain: &NonlinearChain,
    config: &OpenLoopSweepConfig,
) -> Result<OpenLoopSweep, NonlinearError> {
    let mut problems = config.problems();
    let (start, end) = config.sweep.range();
    let rate = fastest_rate_rad_s(chain, 0.0, 0.0)
        .ok_or(NonlinearError::Numerical("the mass matrix is singular"))?;
    if problems.is_empty() {
        let (slowest, _) = config.sweep.forcing(start);
        let work = 2.0
            * config.points as f64
            * config.max_periods as f64
            * steps_per_period(config, rate, slowest) as f64;
        if work > MAX_SWEEP_STEPS {
            problems.push(format!(
                "the sweep may take {work:.3e} integration steps at {slowest} rad/s, above \
                 the budget of {MAX_SWEEP_STEPS:.0e}: fewer points or periods, or a higher \
                 start"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(NonlinearError::Invalid(problems));
    }
    let grid: Vec<f64> = (0..config.points)
        .map(|i| start + (end - start) * i as f64 / (config.points - 1) as f64)
        .collect();
    let mut stepper = Stepper::new(chain)?;
    let mut run = |lambda: f64| settle(&mut stepper, config, rate, lambda);
    let up = grid
        .iter()
        .map(|&l| run(l))
        .collect::<Result<Vec<_>, _>>()?;
    let down = grid
        .iter()
        .rev()
        .map(|&l| run(l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OpenLoopSweep { up, down })
}

/// Steps per period at `omega_rad_s`: the configured number, or more where the chain's
/// fastest rate needs them.
fn steps_per_period(config: &OpenLoopSweepConfig, rate_rad_s: f64, omega_rad_s: f64) -> usize {
    let needed = (std::f64::consts::TAU / omega_rad_s * rate_rad_s / MAX_STEP_TIMES_RATE).ceil();
    // Saturating conversion; the budget check refuses absurd counts before any run.
    config.steps_per_period.max(needed as usize)
}

/// Integrates at parameter value `lambda` from the stepper's state until settled.
fn settle(
    stepper: &mut Stepper<'_>,
    config: &OpenLoopSweepConfig,
    rate_rad_s: f64,
    lambda: f64,
) -> Result<SweepPoint, NonlinearError> {
    let (omega, forcing) = config.sweep.forcing(lambda);
    let steps = steps_per_period(config, rate_rad_s, omega);
    let dt = std::f64::consts::TAU / omega / steps as f64;
    let n = stepper.x.len();
    let mut previous: Option<Vec<f64>> = None;
    let mut periods = 0;
    loop {
        let mut cos_sum = vec![0.0; n];
        let mut sin_sum = vec![0.0; n];
        for block in 0..config.block_periods {
            let last = block + 1 == config.block_periods;
            for s in 0..steps {
                // Time restarts every period (the forcing is periodic), which keeps cos ωt
                // accurate over long runs.
                let t = s as f64 * dt;
                if last {
                    // The rectangle rule on a periodic integrand is spectrally accurate.
                    let (sin, cos) = (omega * t).sin_cos();
                    for (d, x) in stepper.x.iter().enumerate() {
                        cos_sum[d] += x * cos;
                        sin_sum[d] += x * sin;
                    }
                }
                stepper.step(t, dt, |tau| forcing * (omega * tau).cos());
            }
            periods += 1;
            if !stepper.is_finite() {
                return Err(NonlinearError::Numerical(
                    "the open-loop integration diverged",
                ));
            }
        }
        let scale = 2.0 / steps as f64;
        let amplitude_m: Vec<f64> = cos_sum
            .iter()
            .zip(&sin_sum)
            .map(|(c, s)| (c * scale).hypot(s * scale))
            .collect();
        let largest = amplitude_m.iter().fold(0.0_f64, |m, a| m.max(*a));
        let settled = previous.as_ref().is_some_and(|p| {
            p.iter()
                .zip(&amplitude_m)
                .all(|(a, b)| (a - b).abs() <= config.settle_tolerance * largest)
        });
        if settled || periods + config.block_periods > config.max_periods {
            return Ok(SweepPoint {
                omega_rad_s: omega,
                forcing_n: forcing,
                amplitude_m,
                periods,
                settled,
            });
        }
        previous = Some(amplitude_m);
    }
}
