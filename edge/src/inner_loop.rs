//! Owns the edge-hosted inner control loop: checking the twin's `ControllerParams` against the
//! firmware manifest, the running controller and its version, and turning each sample into a
//! demanded force. Pure and synchronous: the serial task feeds it samples in order, passes
//! the demand through the safety envelope and tells it the force actually applied. It never
//! touches the actuator itself.

use dtop_dynamics::control::{SampledController, SampledLoop};
use dtop_firmware::Manifest;
use dtop_proto::v1::ControllerParams;
use nalgebra::{DMatrix, DVector, RowDVector};

/// Largest controller the edge accepts: states × inputs stays small enough to run at 10 kHz
/// on a small ARM core.
pub const MAX_CONTROLLER_STATES: usize = 64;
/// Relative mismatch tolerated between the designed and the streamed sample period.
const PERIOD_TOLERANCE: f64 = 1e-6;

/// A controller checked against the manifest, waiting for the next sample boundary.
#[derive(Debug, Clone)]
pub struct PreparedController {
    version: u64,
    description: String,
    /// `None`: the params switch the loop off.
    law: Option<(SampledLoop, Vec<Input>)>,
}

impl PreparedController {
    /// The params' version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether these params switch the loop off.
    pub fn is_off(&self) -> bool {
        self.law.is_none()
    }
}

/// Where one entry of w comes from in a samples frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Input {
    /// Column in the sample-major frame.
    column: usize,
    /// SI units per ADC count.
    scale: f64,
}

/// The running loop, if any, and the version last applied.
#[derive(Debug, Clone, Default)]
pub struct InnerLoop {
    running: Option<Running>,
    /// Highest version applied (on or off); later params must be above it.
    version: u64,
}

#[derive(Debug, Clone)]
struct Running {
    control: SampledLoop,
    inputs: Vec<Input>,
    description: String,
    /// Reused per sample.
    w: Vec<f64>,
    /// The index the next sample should have; a gap resets the state.
    next_sample_index: Option<u64>,
}

impl InnerLoop {
    /// Whether a law is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Highest version applied so far (0 before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The running law's description, for logs and status.
    pub fn description(&self) -> Option<&str> {
        self.running.as_ref().map(|r| r.description.as_str())
    }

    /// Checks `params` against the current `manifest` and the version already running.
    ///
    /// # Errors
    /// Every reason to refuse them, in words for the operator.
    pub fn prepare(
        &self,
        params: &ControllerParams,
        manifest: Option<&Manifest>,
    ) -> Result<PreparedController, String> {
        let mut problems = Vec::new();
        if params.version <= self.version {
            problems.push(format!(
                "version {} is not above the running version {}",
                params.version, self.version
            ));
        }
        if !params.enabled {
            return if problems.is_empty() {
                Ok(PreparedController {
                    version: params.version,
                    description: params.description.clone(),
                    law: None,
                })
            } else {
                Err(problems.join("; "))
            };
        }
        let Some(manifest) = manifest else {
            problems.push("the firmware has not described itself yet".to_owned());
            return Err(problems.join("; "));
        };
        if manifest.actuator_floor == 0 {
            problems.push("the firmware reports no actuator".to_owned());
        }
        let stream_period_s = 1.0 / manifest.sample_rate_hz();
        if !(params.sample_period_s.is_finite()
            && (params.sample_period_s - stream_period_s).abs()
                <= PERIOD_TOLERANCE * stream_period_s)
        {
            problems.push(format!(
                "designed for a {} s period, the stream runs at {stream_period_s} s",
                params.sample_period_s
            ));
        }
        let mut inputs = Vec::with_capacity(params.input_channel_ids.len());
        for id in &params.input_channel_ids {
            match manifest
                .channels()
                .iter()
                .position(|c| u32::from(c.id) == *id)
            {
                Some(column) => inputs.push(Input {
                    column,
                    scale: f64::from(manifest.channels()[column].scale),
                }),
                None => problems.push(format!("no channel {id} in the firmware manifest")),
            }
        }
        let n = params.state_count as usize;
        let m = params.input_channel_ids.len();
        if n > MAX_CONTROLLER_STATES {
            problems.push(format!(
                "{n} controller states, at most {MAX_CONTROLLER_STATES}"
            ));
        }
        for (name, got, want) in [
            ("a", params.a.len(), n * n),
            ("b", params.b.len(), n * m),
            ("e", params.e.len(), n),
            ("c", params.c.len(), n),
            ("d", params.d.len(), m),
        ] {
            if got != want {
                problems.push(format!("{name} has {got} entries, expected {want}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let controller = SampledController {
            a: DMatrix::from_row_slice(n, n, &params.a),
            b: DMatrix::from_row_slice(n, m, &params.b),
            e: DVector::from_column_slice(&params.e),
            c: RowDVector::from_row_slice(&params.c),
            d: RowDVector::from_row_slice(&params.d),
            dt_s: params.sample_period_s,
        };
        let control = SampledLoop::new(controller).map_err(|p| p.join("; "))?;
        Ok(PreparedController {
            version: params.version,
            description: params.description.clone(),
            law: Some((control, inputs)),
        })
    }

    /// Swaps `prepared` in; the next sample is its first.
    pub fn install(&mut self, prepared: PreparedController) {
        self.version = prepared.version;
        self.running = prepared.law.map(|(control, inputs)| Running {
            w: vec![0.0; inputs.len()],
            control,
            inputs,
            description: prepared.description,
            next_sample_index: None,
        });
    }

    /// Stops the loop (safety stop, firmware restart, new manifest); the version stays, so a
    /// stale params message cannot restart it.
    pub fn stop(&mut self) {
        self.running = None;
    }

    /// The force demanded for sample `sample_index` whose raw values (one per manifest
    /// channel) are `raw`; `None` when no law runs. Call [`applied`](Self::applied) with the
    /// force the envelope let through before the next sample.
    pub fn demand(&mut self, sample_index: u64, raw: &[i32]) -> Option<f64> {
        let running = self.running.as_mut()?;
        if running.next_sample_index != Some(sample_index) {
            // First sample, or samples were lost: the state no longer describes the rig.
            running.control.reset();
        }
        running.next_sample_index = Some(sample_index + 1);
        for (w, input) in running.w.iter_mut().zip(&running.inputs) {
            *w = f64::from(raw[input.column]) * input.scale;
        }
        Some(running.control.output(&running.w))
    }

    /// Ends the sample last passed to [`demand`](Self::demand) with the force applied, N.
    /// A state poisoned by a non-finite value is reset rather than kept.
    pub fn applied(&mut self, applied_force_n: f64) {
        if let Some(running) = self.running.as_mut() {
            running.control.advance(&running.w, applied_force_n);
            if !running.control.is_finite() {
                running.control.reset();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_firmware::{ChannelDesc, ChannelKind};

    fn manifest() -> Manifest {
        let channels = [
            ChannelDesc {
                id: 0,
                kind: ChannelKind::Acceleration,
                floor: 1,
                scale: 0.5,
            },
            ChannelDesc {
                id: 7,
                kind: ChannelKind::Force,
                floor: 1,
                scale: 0.25,
            },
        ];
        Manifest::new("t", 1_000_000, 1, 1, 10.0, &channels).expect("manifest")
    }

    /// u = 2·w₀ + 1·w₁ + z, z⁺ = 0.5·z + applied.
    fn params(version: u64) -> ControllerParams {
        ControllerParams {
            rig_id: "r".into(),
            version,
            enabled: true,
            description: "test".into(),
            sample_period_s: 1e-3,
            input_channel_ids: vec![0, 7],
            state_count: 1,
            a: vec![0.5],
            b: vec![0.0, 0.0],
            e: vec![1.0],
            c: vec![1.0],
            d: vec![2.0, 1.0],
        }
    }

    #[test]
    fn runs_the_law_on_scaled_channels_and_feeds_back_the_applied_force() {
        let mut inner = InnerLoop::default();
        let prepared = inner.prepare(&params(3), Some(&manifest())).expect("valid");
        inner.install(prepared);
        // w = [0.5·4, 0.25·8] = [2, 2] → u = 2·2 + 2 = 6.
        assert_eq!(inner.demand(10, &[4, 8]), Some(6.0));
        inner.applied(1.5);
        // z = 1.5 → u = 1.5 + 6.
        assert_eq!(inner.demand(11, &[4, 8]), Some(7.5));
        inner.applied(0.0);
        // A gap resets z.
        assert_eq!(inner.demand(20, &[4, 8]), Some(6.0));
    }

    #[test]
    fn refuses_old_versions_unknown_channels_wrong_period_and_bad_sizes_at_once() {
        let mut inner = InnerLoop::default();
        inner.install(inner.prepare(&params(5), Some(&manifest())).expect("valid"));
        let mut bad = params(5);
        bad.input_channel_ids = vec![0, 9];
        bad.sample_period_s = 1e-4;
        bad.a = vec![0.5, 0.0];
        let reason = inner.prepare(&bad, Some(&manifest())).expect_err("invalid");
        for needle in [
            "not above the running version 5",
            "no channel 9",
            "0.0001 s period",
            "a has 2 entries",
        ] {
            assert!(
                reason.contains(needle),
                "{needle:?} missing from {reason:?}"
            );
        }
    }

    #[test]
    fn disabled_params_stop_the_loop_and_keep_the_version() {
        let mut inner = InnerLoop::default();
        inner.install(inner.prepare(&params(1), Some(&manifest())).expect("valid"));
        let off = ControllerParams {
            enabled: false,
            ..ControllerParams::default()
        };
        let off = ControllerParams { version: 2, ..off };
        inner.install(inner.prepare(&off, None).expect("off needs no manifest"));
        assert!(!inner.is_running());
        assert_eq!(inner.demand(0, &[1, 1]), None);
        assert!(inner.prepare(&params(2), Some(&manifest())).is_err());
    }

    #[test]
    fn refuses_params_before_the_manifest() {
        let inner = InnerLoop::default();
        let reason = inner.prepare(&params(1), None).expect_err("no manifest");
        assert!(reason.contains("not described itself"), "{reason}");
    }
}
