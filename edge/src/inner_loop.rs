//! Owns the edge-hosted inner control loop: checking the twin's `ControllerParams` against the
//! firmware manifest, the running controller and its version, and turning each sample into a
//! demanded force, following a periodic target for control-based continuation when the
//! params carry one. Pure and synchronous: the serial task feeds it samples in order, passes
//! the demand through the safety envelope and tells it the force actually applied. It never
//! touches the actuator itself.

use dtop_dynamics::control::{SampledController, SampledLoop};
use dtop_firmware::{ChannelKind, Manifest};
use dtop_proto::v1::{ControllerParams, HarmonicTarget};
use nalgebra::{DMatrix, DVector, RowDVector};

/// Largest controller the edge accepts: states × inputs stays small enough to run at 10 kHz
/// on a small ARM core.
pub const MAX_CONTROLLER_STATES: usize = 64;
/// Relative mismatch tolerated between the designed and the streamed sample period.
const PERIOD_TOLERANCE: f64 = 1e-6;
/// Most harmonics a target may have: 32 cosines and sines per sample stay cheap at 10 kHz.
pub const MAX_TARGET_HARMONICS: usize = 32;

/// A periodic target on one entry of w (control-based continuation, issue 15), checked
/// against the manifest: `ControllerParams.harmonic_target` in acceleration form.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    /// Entry of w that becomes the tracking error r(k) − w(k).
    input: usize,
    /// Fundamental cycles per sample: frequency / sample rate.
    cycles_per_sample: f64,
    /// −(hω)²·cos_m[h−1] and −(hω)²·sin_m[h−1]: the target's acceleration coefficients,
    /// m/s², harmonic h at index h − 1.
    accel_cos_m_s2: Vec<f64>,
    accel_sin_m_s2: Vec<f64>,
}

impl Target {
    /// Checks `target` against the law's inputs and the manifest; every problem goes to
    /// `problems`.
    fn check(
        target: &HarmonicTarget,
        input_channel_ids: &[u32],
        manifest: &Manifest,
        problems: &mut Vec<String>,
    ) -> Option<Self> {
        let before = problems.len();
        let fs = manifest.sample_rate_hz();
        let f = target.frequency_hz;
        let h = target.cos_m.len();
        if target.sin_m.len() != h {
            problems.push(format!(
                "the target has {h} cosine and {} sine coefficients; they must pair up",
                target.sin_m.len()
            ));
        }
        if !(1..=MAX_TARGET_HARMONICS).contains(&h) {
            problems.push(format!(
                "the target has {h} harmonics; 1..={MAX_TARGET_HARMONICS} are allowed"
            ));
        }
        if !(f.is_finite() && f > 0.0) {
            problems.push(format!(
                "the target's frequency {f} Hz must be positive and finite"
            ));
        } else if h as f64 * f >= fs / 2.0 {
            problems.push(format!(
                "the target's harmonic {h} at {} Hz is not below the Nyquist frequency {} Hz; \
                 use fewer harmonics",
                h as f64 * f,
                fs / 2.0
            ));
        }
        if target
            .cos_m
            .iter()
            .chain(&target.sin_m)
            .any(|c| !c.is_finite())
        {
            problems.push("a target coefficient is not finite".to_owned());
        }
        let input = input_channel_ids
            .iter()
            .position(|id| *id == target.channel_id);
        if input.is_none() {
            problems.push(format!(
                "the target's channel {} is not one of the law's inputs",
                target.channel_id
            ));
        }
        let kind = manifest
            .channels()
            .iter()
            .find(|c| u32::from(c.id) == target.channel_id)
            .map(|c| c.kind);
        if kind.is_some_and(|k| k != ChannelKind::Acceleration) {
            problems.push(format!(
                "the target's channel {} is not an accelerometer (the target is followed in \
                 acceleration)",
                target.channel_id
            ));
        }
        let input = input?;
        if problems.len() > before {
            return None;
        }
        let omega = std::f64::consts::TAU * f;
        let to_accel = |coefficients: &[f64]| -> Vec<f64> {
            coefficients
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = (i + 1) as f64 * omega;
                    -w * w * c
                })
                .collect()
        };
        Some(Self {
            input,
            cycles_per_sample: f / fs,
            accel_cos_m_s2: to_accel(&target.cos_m),
            accel_sin_m_s2: to_accel(&target.sin_m),
        })
    }

    /// The target's acceleration r(k) at stream-0 sample `sample_index`, m/s². Only the
    /// fraction of a cycle is kept before multiplying by 2π, so the phase stays exact to
    /// about 1e-9 cycle for any run length the edge sees.
    fn acceleration_m_s2(&self, sample_index: u64) -> f64 {
        let cycles = (self.cycles_per_sample * sample_index as f64).fract();
        let (s1, c1) = (std::f64::consts::TAU * cycles).sin_cos();
        let (mut c, mut s) = (c1, s1);
        let mut r = 0.0;
        for (a, b) in self.accel_cos_m_s2.iter().zip(&self.accel_sin_m_s2) {
            r += a * c + b * s;
            (c, s) = (c * c1 - s * s1, s * c1 + c * s1);
        }
        r
    }
}

/// A controller checked against the manifest, waiting for the next sample boundary.
#[derive(Debug, Clone)]
pub struct PreparedController {
    version: u64,
    description: String,
    /// `None`: the params switch the loop off.
    law: Option<(SampledLoop, Vec<Input>, Option<Target>)>,
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
    /// The periodic target of control-based continuation, if the params carry one.
    target: Option<Target>,
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
        let target = params
            .harmonic_target
            .as_ref()
            .and_then(|t| Target::check(t, &params.input_channel_ids, manifest, &mut problems));
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
            law: Some((control, inputs, target)),
        })
    }

    /// Swaps `prepared` in; the next sample is its first.
    pub fn install(&mut self, prepared: PreparedController) {
        self.version = prepared.version;
        self.running = prepared.law.map(|(control, inputs, target)| Running {
            w: vec![0.0; inputs.len()],
            control,
            inputs,
            target,
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
        if let Some(target) = &running.target
            && let Some(w) = running.w.get_mut(target.input)
        {
            *w = target.acceleration_m_s2(sample_index) - *w;
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
            harmonic_target: None,
            owner_epoch: 0,
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

    /// A pure pass-through law u = w₀ on channel 0 (scale 0.5 m/s² per count), following
    /// `target`: the demand is the tracking error r(k) − a(k).
    fn target_params(version: u64, target: HarmonicTarget) -> ControllerParams {
        ControllerParams {
            input_channel_ids: vec![0],
            state_count: 0,
            a: vec![],
            b: vec![],
            e: vec![],
            c: vec![],
            d: vec![1.0],
            harmonic_target: Some(target),
            ..params(version)
        }
    }

    fn target(frequency_hz: f64, cos_m: Vec<f64>, sin_m: Vec<f64>) -> HarmonicTarget {
        HarmonicTarget {
            frequency_hz,
            channel_id: 0,
            cos_m,
            sin_m,
        }
    }

    /// ẍ* of x*(t) = Σ c_h·cos(hωt) + s_h·sin(hωt) at t = k / 1 kHz, written out directly.
    fn closed_form_m_s2(f_hz: f64, cos_m: &[f64], sin_m: &[f64], k: u64) -> f64 {
        let t = k as f64 / 1000.0;
        (1..=cos_m.len())
            .map(|h| {
                let w = std::f64::consts::TAU * f_hz * h as f64;
                -w * w * (cos_m[h - 1] * (w * t).cos() + sin_m[h - 1] * (w * t).sin())
            })
            .sum()
    }

    /// Tolerance 1e-9 of the target's size: the edge's phase is exact to ~1e-9 cycle
    /// (fraction first) and its harmonic recurrence adds a few ulps per harmonic; the
    /// closed form's own rounding at t = 10⁴ s is ~1e-11.
    #[test]
    fn a_harmonic_target_feeds_the_law_the_acceleration_tracking_error() {
        let (f, cos_m, sin_m) = (3.7, vec![0.01, 0.0, -0.002], vec![0.004, 0.001, 0.0005]);
        let mut inner = InnerLoop::default();
        let prepared = inner
            .prepare(
                &target_params(1, target(f, cos_m.clone(), sin_m.clone())),
                Some(&manifest()),
            )
            .expect("valid");
        inner.install(prepared);
        let size = (2.0 * std::f64::consts::PI * f * 3.0).powi(2) * 0.01;
        for k in (10_000_000..10_000_300).chain([0, 1, 2]) {
            let r = closed_form_m_s2(f, &cos_m, &sin_m, k);
            // Channel 0 reads 6 counts = 3 m/s².
            let u = inner.demand(k, &[6, 0]).expect("running");
            assert!(
                (u - (r - 3.0)).abs() <= 1e-9 * size,
                "sample {k}: {u} against {}",
                r - 3.0
            );
            inner.applied(u);
        }
    }

    #[test]
    fn the_target_stays_phase_continuous_across_a_coefficient_update_at_the_same_frequency() {
        let f = 2.3;
        let (cos_m, sin_m) = (vec![0.02], vec![-0.01]);
        let mut inner = InnerLoop::default();
        inner.install(
            inner
                .prepare(
                    &target_params(1, target(f, cos_m.clone(), sin_m.clone())),
                    Some(&manifest()),
                )
                .expect("valid"),
        );
        let mut previous = None;
        for k in 500..1500u64 {
            if k == 1000 {
                // A new version with the same coefficients: the same sinusoid goes on.
                inner.install(
                    inner
                        .prepare(
                            &target_params(2, target(f, cos_m.clone(), sin_m.clone())),
                            Some(&manifest()),
                        )
                        .expect("valid"),
                );
            }
            let u = inner.demand(k, &[0, 0]).expect("running");
            let want = closed_form_m_s2(f, &cos_m, &sin_m, k);
            assert!((u - want).abs() < 1e-9, "sample {k}: {u} against {want}");
            if let Some(p) = previous {
                // One sample moves the target by at most ω·T of its amplitude.
                let amplitude = (std::f64::consts::TAU * f).powi(2) * 0.0224;
                assert!((u - p) <= std::f64::consts::TAU * f * 1e-3 * amplitude * 1.01);
            }
            previous = Some(u);
            inner.applied(u);
        }
        // Doubled coefficients from sample 1500: the new amplitude on the same phase origin.
        let doubled = (vec![0.04], vec![-0.02]);
        inner.install(
            inner
                .prepare(
                    &target_params(3, target(f, doubled.0.clone(), doubled.1.clone())),
                    Some(&manifest()),
                )
                .expect("valid"),
        );
        let u = inner.demand(1500, &[0, 0]).expect("running");
        let want = closed_form_m_s2(f, &doubled.0, &doubled.1, 1500);
        assert!((u - want).abs() < 1e-9, "{u} against {want}");
        assert!((u - 2.0 * closed_form_m_s2(f, &cos_m, &sin_m, 1500)).abs() < 1e-9);
    }

    #[test]
    fn refuses_every_problem_of_a_harmonic_target_at_once() {
        let inner = InnerLoop::default();
        let mut bad = target_params(1, target(-1.0, vec![0.1, f64::NAN], vec![0.1]));
        bad.harmonic_target = Some(HarmonicTarget {
            channel_id: 7,
            ..target(-1.0, vec![0.1, f64::NAN], vec![0.1])
        });
        let reason = inner.prepare(&bad, Some(&manifest())).expect_err("invalid");
        for needle in [
            "2 cosine and 1 sine",
            "frequency -1 Hz",
            "not finite",
            "channel 7 is not one of the law's inputs",
            "channel 7 is not an accelerometer",
        ] {
            assert!(
                reason.contains(needle),
                "{needle:?} missing from {reason:?}"
            );
        }
        let above_nyquist = target_params(1, target(200.0, vec![0.0; 3], vec![0.0; 3]));
        let reason = inner
            .prepare(&above_nyquist, Some(&manifest()))
            .expect_err("aliased");
        assert!(reason.contains("Nyquist"), "{reason}");
        let too_many = target_params(1, target(1.0, vec![0.0; 33], vec![0.0; 33]));
        let reason = inner
            .prepare(&too_many, Some(&manifest()))
            .expect_err("too many");
        assert!(reason.contains("33 harmonics"), "{reason}");
    }

    /// The target's demand goes through the same envelope as any other: clipped to the
    /// force limit (and the clipped force fed back to the law), and a safety stop latches.
    #[test]
    fn the_envelope_clips_a_target_demand_and_a_safety_stop_still_latches() {
        use crate::safety::{
            DriveRequest, DriveSource, EnvelopeLimits, Refusal, SafetyEnvelope, SafetyState,
        };
        let mut inner = InnerLoop::default();
        inner.install(
            inner
                .prepare(
                    &target_params(1, target(5.0, vec![1.0], vec![0.0])),
                    Some(&manifest()),
                )
                .expect("valid"),
        );
        let mut envelope = SafetyEnvelope::new();
        envelope.set_limits(Some(EnvelopeLimits {
            max_force_n: 10.0,
            max_step_n: 1e6,
            drive_timeout_periods: 5,
        }));
        envelope.advance(1);
        let request = |force_n: f64, k: u64| DriveRequest {
            force_n,
            sample_index: k,
            source: DriveSource::EdgeLoop {
                controller_version: 1,
            },
        };
        // r(0) = −(10π)² m/s²: a demand of about −987 N.
        let u = inner.demand(0, &[0, 0]).expect("running");
        assert!(u < -900.0, "{u}");
        let out = envelope.drive(request(u, 0)).expect("admitted");
        assert_eq!((out.enable, out.force_n), (true, -10.0));
        assert_eq!(envelope.counters().drives_clamped_total, 1);
        inner.applied(out.force_n);
        envelope.advance(1);
        envelope.safety_stop();
        let u = inner.demand(1, &[0, 0]).expect("running");
        assert_eq!(envelope.drive(request(u, 1)), Err(Refusal::Latched));
        assert_eq!(envelope.state(), SafetyState::Latched);
        assert!(!envelope.output().enable);
    }
}
