//! Owns the circle fit of experimental modal analysis (Ewins, *Modal Testing*, 2nd ed.,
//! § 4.3): per mode and channel, the mobility near resonance traces a circle; its size, the
//! rate at which it is swept and the angles of points on it give the natural frequency, the
//! damping ratio and the modal constant. Knows nothing of files or of other modes' models.
//!
//! Cristallo's profile generator (TOOLS.md § 8.2) took f_n as the frequency line of the
//! largest |Y|, damping from the two lines next to it, and hard-coded windows. Here f_n is the
//! frequency of fastest sweep, refined by a least-squares fit of every point's angle, the
//! damping comes from every usable pair of points either side (with its spread), and the
//! windows come from [`crate::peaks`].

use std::f64::consts::{PI, TAU};

use nalgebra::{DMatrix, DVector, Matrix3, Vector3};
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};
use crate::identified::IdentifiedMode;
use crate::measured::{C64, MeasuredFrf};
use crate::peaks::{DetectedPeak, ModeWindow, PeakSearch, find_mode_windows};

/// Fewest points in a window: three fix a circle, three more fix f_n, ζ and the resonance
/// angle with some redundancy to average noise.
pub const MIN_CIRCLE_POINTS: usize = 6;

/// Iteration cap of the two small Gauss–Newton refinements; both converge in a handful of
/// steps from the algebraic start, the cap only bounds a pathological case.
const MAX_REFINEMENT_STEPS: usize = 60;

/// Default least half-angle spread used for damping pairs, in degrees of sweep angle from the
/// resonance: points closer to resonance carry angle errors that tan(θ/2) ≈ 0 amplifies.
pub const fn default_pair_angle_min_deg() -> f64 {
    10.0
}
/// Default largest sweep angle from resonance for damping pairs, in degrees: points further
/// round the circle crowd near its far side, where tan(θ/2) explodes.
pub const fn default_pair_angle_max_deg() -> f64 {
    150.0
}

/// Default of [`CircleFitParams::geometric_refinement`]: on.
pub const fn default_geometric_refinement() -> bool {
    true
}

/// Where the modes are: given windows, or a peak search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowChoice {
    /// One window per mode, as given.
    Given {
        /// The windows, one per mode.
        windows: Vec<ModeWindow>,
    },
    /// Windows around the most prominent peaks found by [`find_mode_windows`].
    Search(PeakSearch),
}

/// Parameters of the circle fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircleFitParams {
    /// Where to fit.
    pub windows: WindowChoice,
    /// Least sweep angle from resonance of a point used in a damping pair, in degrees.
    #[serde(default = "default_pair_angle_min_deg")]
    pub pair_angle_min_deg: f64,
    /// Largest sweep angle from resonance of a point used in a damping pair, in degrees.
    #[serde(default = "default_pair_angle_max_deg")]
    pub pair_angle_max_deg: f64,
    /// Refine the algebraic (Kåsa) circle by Gauss–Newton on the geometric distances. Kåsa
    /// alone is biased towards smaller circles when points cover only part of the circle and
    /// carry noise; the refinement removes that bias.
    #[serde(default = "default_geometric_refinement")]
    pub geometric_refinement: bool,
    /// Lines of a channel whose coherence γ² is below this are left out of its fit (when the
    /// data carries coherence); 0 keeps every line.
    #[serde(default)]
    pub min_coherence: f64,
}

impl CircleFitParams {
    /// Every rule these parameters break.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.windows {
            WindowChoice::Given { windows } => {
                if windows.is_empty() {
                    problems.push("windows is empty: give at least one mode window".into());
                }
                for (k, w) in windows.iter().enumerate() {
                    if !(w.f_lo_hz.is_finite()
                        && w.f_lo_hz > 0.0
                        && w.f_hi_hz > w.f_lo_hz
                        && w.f_hi_hz.is_finite())
                    {
                        problems.push(format!(
                            "windows[{k}] = {}..{} Hz must be finite with 0 < f_lo_hz < f_hi_hz",
                            w.f_lo_hz, w.f_hi_hz
                        ));
                    }
                }
            }
            WindowChoice::Search(search) => problems.extend(search.problems()),
        }
        if !(0.0..1.0).contains(&self.min_coherence) {
            problems.push(format!(
                "min_coherence = {} must lie in [0, 1)",
                self.min_coherence
            ));
        }
        if !(self.pair_angle_min_deg.is_finite()
            && self.pair_angle_min_deg > 0.0
            && self.pair_angle_max_deg < 180.0
            && self.pair_angle_max_deg > self.pair_angle_min_deg)
        {
            problems.push(format!(
                "pair angles {}..{}° must satisfy 0 < min < max < 180",
                self.pair_angle_min_deg, self.pair_angle_max_deg
            ));
        }
        problems
    }
}

/// A circle in the complex plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    /// Centre.
    pub center: C64,
    /// Radius.
    pub radius: f64,
}

/// The circle fit of one channel around one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelCircle {
    /// Floor of the channel's accelerometer, 1-based.
    pub output_floor: usize,
    /// Points in the window.
    pub points: usize,
    /// Centre of the mobility circle, `[re, im]`, in (m/s)/N.
    pub center_m_s_per_n: [f64; 2],
    /// Radius of the mobility circle, in (m/s)/N.
    pub radius_m_s_per_n: f64,
    /// RMS distance of the points from the circle, relative to its radius: 0 for a perfect
    /// circle; tenths mean the window holds more than one mode or mostly noise.
    pub rms_radial_error_relative: f64,
    /// Natural frequency at the fastest sweep (parabolic interpolation of the discrete
    /// rate), in Hz: the classical estimate, biased low by about ζ²/2 relative.
    pub natural_frequency_sweep_rate_hz: f64,
    /// Natural frequency from the fit of every point's sweep angle, in Hz (the estimate used).
    pub natural_frequency_hz: f64,
    /// Damping ratio from the fit of every point's sweep angle.
    pub damping_ratio_angle_fit: f64,
    /// Mean damping ratio over the point pairs.
    pub damping_ratio_pairs_mean: f64,
    /// Sample standard deviation of the pair estimates; `None` with fewer than two pairs.
    pub damping_ratio_pairs_std: Option<f64>,
    /// Number of point pairs used.
    pub damping_pairs: usize,
    /// Modal diameter vector 2·R·e^{iα₀} (from the point opposite resonance to the resonance
    /// point), `[re, im]`, in (m/s)/N.
    pub diameter_m_s_per_n: [f64; 2],
}

/// What the circle fit made of one channel around one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChannelOutcome {
    /// The channel shows the mode's circle; it took part in f_n and ζ.
    Circle(ChannelCircle),
    /// The channel shows no clean circle (it sweeps less than a quarter turn, or its points
    /// lie more than 10 % of the radius off the circle: a sensor near a node of the mode, or
    /// noise); its modal constant was projected with the other channels' f_n and ζ, and it
    /// took no part in them.
    Projected {
        /// Floor of the channel's accelerometer, 1-based.
        output_floor: usize,
        /// Why no circle was fitted.
        reason: String,
    },
}

/// One mode from the circle fit: the combined estimate and the per-channel fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircleMode {
    /// The window fitted.
    pub window: ModeWindow,
    /// The combined estimate.
    pub mode: IdentifiedMode,
    /// One outcome per channel, in channel order.
    pub channels: Vec<ChannelOutcome>,
}

/// Result of the circle fit of every mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircleFitResult {
    /// Peaks found when the windows were searched for; empty when they were given.
    pub peaks: Vec<DetectedPeak>,
    /// One entry per window, ascending in frequency.
    pub modes: Vec<CircleMode>,
}

/// Circle fit of every mode of `frf` (which must have phase).
///
/// Per channel: the mobility Y = H/(jω) in the window is fitted with a circle, first
/// algebraically (Kåsa: linear least squares in the centre and c − R²), then by Gauss–Newton
/// on the geometric distances. The sweep angles α about the centre obey, for a viscously
/// damped mode, α = α₀ − 2·atan((ω² − ω_r²)/(2ζω_rω)) exactly; ω_r starts at the fastest
/// sweep (interpolated) and is refined with ζ and α₀ by Levenberg–Marquardt over all points. The
/// pair estimate ζ = (ω_b² − ω_a²)/(2ω_r(ω_a·tan(θ_a/2) + ω_b·tan(θ_b/2))) is taken for every
/// pair of points below and above resonance with sweep angles θ within the configured range.
///
/// Per mode: f_n and ζ are the means over channels weighted by the squared circle radius
/// (signal-to-noise); each channel's modal constant is A = 2ζω_r·D, with D its diameter
/// vector, using the mode's common ζ and ω_r so that the shape is consistent across channels.
/// A channel sweeping less than a quarter turn shows no resonance (a node): it is left out of
/// f_n and ζ and its constant is projected (see [`ChannelOutcome::Projected`]).
///
/// # Errors
/// [`CalibrateError::Invalid`] for bad parameters, data without phase, or a window with too
/// few points; [`CalibrateError::NoPeak`] when the search finds nothing;
/// [`CalibrateError::NotIdentifiable`] when no channel of a window shows a resonance
/// circle (a channel that does not, while others do, gets a projected modal constant).
pub fn circle_fit(
    frf: &MeasuredFrf,
    params: &CircleFitParams,
) -> Result<CircleFitResult, CalibrateError> {
    let mut problems = frf.problems();
    problems.extend(params.problems());
    if !frf.has_phase() {
        problems.push(
            "the circle fit needs complex FRFs; a magnitude-only (dB) file has no phase".into(),
        );
    }
    check(problems)?;
    let (peaks, mut windows) = match &params.windows {
        WindowChoice::Given { windows } => (Vec::new(), windows.clone()),
        WindowChoice::Search(search) => {
            let peaks = find_mode_windows(frf, search)?;
            let windows = peaks.iter().map(|p| p.window).collect();
            (peaks, windows)
        }
    };
    windows.sort_by(|a, b| a.f_lo_hz.total_cmp(&b.f_lo_hz));
    let Some(data) = frf.complex() else {
        return Err(CalibrateError::Invalid(vec!["the FRF has no phase".into()]));
    };
    let mut window_problems = Vec::new();
    let mut selections = Vec::with_capacity(windows.len());
    for (k, w) in windows.iter().enumerate() {
        let lines: Vec<usize> = (0..frf.frequencies_hz.len())
            .filter(|&i| {
                let f = frf.frequencies_hz[i];
                f > 0.0 && f >= w.f_lo_hz && f <= w.f_hi_hz
            })
            .collect();
        if lines.len() < MIN_CIRCLE_POINTS {
            window_problems.push(format!(
                "window {k} ({}..{} Hz) holds {} frequency lines; the circle fit needs at \
                 least {MIN_CIRCLE_POINTS}: widen it",
                w.f_lo_hz,
                w.f_hi_hz,
                lines.len()
            ));
        }
        selections.push(lines);
    }
    check(window_problems)?;

    let mut modes = Vec::with_capacity(windows.len());
    for (w, lines) in windows.iter().zip(&selections) {
        let omegas: Vec<f64> = lines.iter().map(|&i| TAU * frf.frequencies_hz[i]).collect();
        let mut fits = Vec::with_capacity(data.len());
        let mut mobilities = Vec::with_capacity(data.len());
        let mut channel_omegas = Vec::with_capacity(data.len());
        for (c, channel) in data.iter().enumerate() {
            let coherent = |i: usize| {
                frf.coherence
                    .as_ref()
                    .is_none_or(|g| g[c][i] >= params.min_coherence)
            };
            let (kept_omegas, mobility): (Vec<f64>, Vec<C64>) = lines
                .iter()
                .zip(&omegas)
                .filter(|&(&i, _)| coherent(i))
                .map(|(&i, &w)| (w, channel[i] / C64::new(0.0, w)))
                .unzip();
            fits.push(if mobility.len() < MIN_CIRCLE_POINTS {
                Err(format!(
                    "only {} lines of the window have coherence ≥ {}",
                    mobility.len(),
                    params.min_coherence
                ))
            } else {
                fit_channel(&kept_omegas, &mobility, params)
            });
            mobilities.push(mobility);
            channel_omegas.push(kept_omegas);
        }
        if fits.iter().all(Result::is_err) {
            let reasons: Vec<String> = fits
                .iter()
                .enumerate()
                .filter_map(|(c, f)| f.as_ref().err().map(|e| format!("channel {c}: {e}")))
                .collect();
            return Err(CalibrateError::NotIdentifiable(format!(
                "window {}..{} Hz: no channel shows a resonance circle ({})",
                w.f_lo_hz,
                w.f_hi_hz,
                reasons.join("; ")
            )));
        }
        modes.push(combine(
            *w,
            &fits,
            &channel_omegas,
            &mobilities,
            &frf.output_floors,
        )?);
    }
    let estimates: Vec<IdentifiedMode> = modes.iter().map(|m| m.mode.clone()).collect();
    crate::identified::ensure_finite(&estimates, "the circle fit")?;
    Ok(CircleFitResult { peaks, modes })
}

/// What one channel's fit gives before the channels are combined.
#[derive(Debug, Clone)]
struct ChannelFit {
    points: usize,
    circle: Circle,
    rms_relative: f64,
    omega_sweep: f64,
    omega_r: f64,
    zeta_fit: f64,
    pair_zetas: Vec<f64>,
    diameter: C64,
}

fn combine(
    window: ModeWindow,
    outcomes: &[Result<ChannelFit, String>],
    omegas: &[Vec<f64>],
    mobilities: &[Vec<C64>],
    floors: &[usize],
) -> Result<CircleMode, CalibrateError> {
    let fits: Vec<&ChannelFit> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let weights: Vec<f64> = fits.iter().map(|f| f.circle.radius.powi(2)).collect();
    let total: f64 = weights.iter().sum();
    let mean = |x: &dyn Fn(&ChannelFit) -> f64| -> f64 {
        fits.iter()
            .zip(&weights)
            .map(|(f, w)| w * x(f))
            .sum::<f64>()
            / total
    };
    let zeta_of = |f: &ChannelFit| {
        if f.pair_zetas.is_empty() {
            f.zeta_fit
        } else {
            f.pair_zetas.iter().sum::<f64>() / f.pair_zetas.len() as f64
        }
    };
    let omega = mean(&|f| f.omega_r);
    let zeta = mean(&zeta_of);
    let omega_std = (fits.len() >= 2).then(|| {
        let var = fits
            .iter()
            .zip(&weights)
            .map(|(f, w)| w * (f.omega_r - omega).powi(2))
            .sum::<f64>()
            / total;
        var.sqrt() / TAU
    });
    let all_pairs: Vec<f64> = fits
        .iter()
        .flat_map(|f| f.pair_zetas.iter().copied())
        .collect();
    let zeta_std = sample_std(&all_pairs);
    let mut modal_constants = Vec::with_capacity(outcomes.len());
    let mut channels = Vec::with_capacity(outcomes.len());
    for (((outcome, mobility), channel_omegas), &floor) in
        outcomes.iter().zip(mobilities).zip(omegas).zip(floors)
    {
        match outcome {
            Ok(f) => {
                let a = f.diameter * (2.0 * zeta * omega);
                modal_constants.push([a.re, a.im]);
                channels.push(ChannelOutcome::Circle(ChannelCircle {
                    output_floor: floor,
                    points: f.points,
                    center_m_s_per_n: [f.circle.center.re, f.circle.center.im],
                    radius_m_s_per_n: f.circle.radius,
                    rms_radial_error_relative: f.rms_relative,
                    natural_frequency_sweep_rate_hz: f.omega_sweep / TAU,
                    natural_frequency_hz: f.omega_r / TAU,
                    damping_ratio_angle_fit: f.zeta_fit,
                    damping_ratio_pairs_mean: zeta_of(f),
                    damping_ratio_pairs_std: sample_std(&f.pair_zetas),
                    damping_pairs: f.pair_zetas.len(),
                    diameter_m_s_per_n: [f.diameter.re, f.diameter.im],
                }));
            }
            Err(reason) => {
                let a = projected_constant(channel_omegas, mobility, omega, zeta)?;
                modal_constants.push([a.re, a.im]);
                channels.push(ChannelOutcome::Projected {
                    output_floor: floor,
                    reason: reason.clone(),
                });
            }
        }
    }
    Ok(CircleMode {
        window,
        mode: IdentifiedMode {
            natural_frequency_hz: omega / TAU,
            natural_frequency_std_hz: omega_std,
            damping_ratio: zeta,
            damping_ratio_std: zeta_std,
            modal_constants_per_kg: modal_constants,
        },
        channels,
    })
}

/// The modal constant of a channel that shows no circle of its own (a sensor near a node of
/// the mode): with the mode's ω_r and ζ from the other channels, Y(ω) ≈ A·jω/(ω_r² − ω² +
/// 2jζω_rω) + B is linear in the complex A and B (B holds the other modes' nearly constant
/// contribution across the window); solved by least squares.
fn projected_constant(
    omegas: &[f64],
    mobility: &[C64],
    omega_r: f64,
    zeta: f64,
) -> Result<C64, CalibrateError> {
    if omegas.len() < 2 {
        return Err(CalibrateError::NotIdentifiable(format!(
            "a channel keeps {} coherent lines in the window; its modal constant needs at least 2",
            omegas.len()
        )));
    }
    let basis = DMatrix::from_fn(omegas.len(), 2, |i, j| {
        let w = omegas[i];
        if j == 0 {
            C64::new(0.0, w) / C64::new(omega_r * omega_r - w * w, 2.0 * zeta * omega_r * w)
        } else {
            C64::from(1.0)
        }
    });
    let rhs = DVector::from_column_slice(mobility);
    let solution = basis
        .svd(true, true)
        .solve(&rhs, 1e-14)
        .map_err(|e| CalibrateError::Numerical(format!("modal constant projection: {e}")))?;
    Ok(solution[0])
}

pub(crate) fn sample_std(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    Some(var.sqrt())
}

/// Wraps an angle into (−π, π].
fn wrap(angle: f64) -> f64 {
    let a = angle.rem_euclid(TAU);
    if a > PI { a - TAU } else { a }
}

/// Least sweep angle, in radians, of a channel that shows a resonance: a mode's circle
/// sweeps ~340° across a window of ±5 bandwidths, while a sensor at a node sees a short arc
/// of a huge "circle" through the other modes' smooth tails, which must not be weighted by
/// its radius.
const MIN_SWEEP_RAD: f64 = PI / 2.0;

/// Largest RMS distance of the points from a channel's circle, relative to its radius, for
/// the channel to count as showing the mode: a clean mode fits to ~1e-2 (the Southampton
/// files: 0.009–0.02), while the tails of other modes at a node trace loops far off any circle.
const MAX_CIRCLE_RMS_RELATIVE: f64 = 0.1;

fn fit_channel(
    omegas: &[f64],
    mobility: &[C64],
    params: &CircleFitParams,
) -> Result<ChannelFit, String> {
    let not_a_circle = |why: &str| why.to_string();
    let circle = fit_circle(mobility, params.geometric_refinement).ok_or_else(|| {
        not_a_circle("the points do not determine a circle (all zero, or on a line)")
    })?;
    // A viscously damped mode's mobility sweeps clockwise as ω rises in the e^{jωt}
    // convention. An anticlockwise sweep is data in the other convention (conjugated) or a
    // growing (unstable) mode; guessing which would risk a wrong answer, so refuse.
    let points = mobility;
    let alpha = unwrap_angles(points, circle);
    let swept = match (alpha.first(), alpha.last()) {
        (Some(first), Some(last)) => first - last,
        _ => 0.0,
    };
    if swept.abs() < MIN_SWEEP_RAD {
        return Err(format!(
            "the mobility sweeps only {:.0}° about its circle: no resonance in this channel",
            swept.abs().to_degrees()
        ));
    }
    if swept < 0.0 {
        return Err(not_a_circle(
            "the mobility circle is swept anticlockwise: the data is in the e^{−jωt} phase \
             convention (use MeasuredFrf::conjugated) or the mode is unstable",
        ));
    }
    let start = sweep_rate_start(omegas, &alpha)
        .ok_or_else(|| not_a_circle("the sweep angle does not advance through the window"))?;
    let (alpha0, omega_r, zeta_fit) = refine_angles(omegas, &alpha, start);
    if !(omega_r.is_finite() && zeta_fit.is_finite() && zeta_fit > 0.0) {
        return Err(not_a_circle(
            "the sweep angles do not fit a single damped mode",
        ));
    }
    let rms_relative = (points
        .iter()
        .map(|p| ((p - circle.center).norm() - circle.radius).powi(2))
        .sum::<f64>()
        / points.len() as f64)
        .sqrt()
        / circle.radius;
    if rms_relative > MAX_CIRCLE_RMS_RELATIVE {
        return Err(format!(
            "the points lie {:.0} % of the radius off the fitted circle: no clean resonance \
             in this channel",
            100.0 * rms_relative
        ));
    }
    let theta: Vec<f64> = alpha.iter().map(|a| wrap(alpha0 - a)).collect();
    let mut pair_zetas = damping_pairs(
        omegas,
        &theta,
        omega_r,
        params.pair_angle_min_deg.to_radians(),
        params.pair_angle_max_deg.to_radians(),
    );
    if pair_zetas.is_empty() {
        // Very light damping with coarse lines can leave no point in the preferred range;
        // any pair straddling resonance is then better than none.
        pair_zetas = damping_pairs(
            omegas,
            &theta,
            omega_r,
            1f64.to_radians(),
            179f64.to_radians(),
        );
    }
    let diameter = C64::from_polar(2.0 * circle.radius, alpha0);
    Ok(ChannelFit {
        points: points.len(),
        circle,
        rms_relative,
        omega_sweep: start.1,
        omega_r,
        zeta_fit,
        pair_zetas,
        diameter,
    })
}

/// Sweep angles of `points` about the circle's centre, unwrapped along the sequence.
///
/// A lightly damped mode can sweep more than 180° about the centre between two lines, which
/// a plain unwrap takes the short (wrong) way round. The angle subtended at the far point O′
/// of the circle (where the sweep starts and ends) is half the central angle (inscribed
/// angle theorem), so it never jumps by 180° within one circle; each large central step is
/// given the branch nearest twice the inscribed step. O′ is taken opposite the midpoint of
/// the window's two end points, which lie close to it in a window of several bandwidths.
fn unwrap_angles(points: &[C64], circle: Circle) -> Vec<f64> {
    let center = circle.center;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let ends = (first + last) * 0.5 - center;
    let far = if ends.norm() > 0.0 {
        center + ends * (circle.radius / ends.norm())
    } else {
        *first
    };
    let mut out: Vec<f64> = Vec::with_capacity(points.len());
    let mut previous: Option<(f64, C64)> = None;
    for p in points {
        let a = (p - center).arg();
        let next = match previous {
            Some((prev, prev_point)) => {
                let step = wrap(a - prev);
                if step.abs() > PI / 2.0 {
                    let inscribed = wrap((p - far).arg() - (prev_point - far).arg());
                    let expected = 2.0 * inscribed;
                    let other = if step > 0.0 { step - TAU } else { step + TAU };
                    let chosen = if (other - expected).abs() < (step - expected).abs() {
                        other
                    } else {
                        step
                    };
                    prev + chosen
                } else {
                    prev + step
                }
            }
            None => a,
        };
        previous = Some((next, *p));
        out.push(next);
    }
    out
}

/// Kåsa's algebraic fit, refined by Gauss–Newton on the geometric distances when `refine`.
/// The points are centred and scaled first so that the least squares are well conditioned
/// whatever the units. `None` when fewer than three points or no circle fits (collinear).
pub fn fit_circle(points: &[C64], refine: bool) -> Option<Circle> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let mean = points.iter().sum::<C64>() / n as f64;
    let scale = points.iter().map(|p| (p - mean).norm()).fold(0.0, f64::max);
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let q: Vec<C64> = points.iter().map(|p| (p - mean) / scale).collect();
    let a = DMatrix::from_fn(n, 3, |i, j| match j {
        0 => q[i].re,
        1 => q[i].im,
        _ => 1.0,
    });
    let b = DVector::from_iterator(n, q.iter().map(|z| -z.norm_sqr()));
    let svd = a.svd(true, true);
    // Collinear points (or all equal) leave the centre undetermined: a rank-deficient system.
    if svd.singular_values.min() <= 1e-10 * svd.singular_values.max() {
        return None;
    }
    let solution = svd.solve(&b, 1e-13).ok()?;
    let center = C64::new(-solution[0] / 2.0, -solution[1] / 2.0);
    let r2 = center.norm_sqr() - solution[2];
    if !(r2.is_finite() && r2 > 0.0) {
        return None;
    }
    let mut c = Vector3::new(center.re, center.im, r2.sqrt());
    let cost = |c: &Vector3<f64>| -> f64 {
        q.iter()
            .map(|z| ((z - C64::new(c[0], c[1])).norm() - c[2]).powi(2))
            .sum()
    };
    let mut current = cost(&c);
    let steps = if refine { MAX_REFINEMENT_STEPS } else { 0 };
    for _ in 0..steps {
        let mut jtj = Matrix3::zeros();
        let mut jtr = Vector3::zeros();
        for z in &q {
            let d = z - C64::new(c[0], c[1]);
            let dist = d.norm();
            if dist == 0.0 {
                continue;
            }
            let row = Vector3::new(-d.re / dist, -d.im / dist, -1.0);
            let r = dist - c[2];
            jtj += row * row.transpose();
            jtr += row * r;
        }
        let Some(step) = jtj.lu().solve(&(-jtr)) else {
            break;
        };
        let trial = c + step;
        let trial_cost = cost(&trial);
        if trial_cost.is_nan() || trial_cost >= current {
            break;
        }
        let small = step.norm() < 1e-13 * (1.0 + c.norm());
        c = trial;
        current = trial_cost;
        if small {
            break;
        }
    }
    (c[2] > 0.0 && c.iter().all(|x| x.is_finite())).then(|| Circle {
        center: mean + C64::new(c[0], c[1]) * scale,
        radius: c[2] * scale,
    })
}

/// (α₀, ω_r, ζ) to start from: ω_r where the angle sweeps fastest (parabola through the
/// largest rate and its neighbours), ζ = 2/(ω_r·|dα/dω|) (the sweep rate at resonance of a
/// viscous mode), α₀ interpolated at ω_r.
fn sweep_rate_start(omegas: &[f64], alpha: &[f64]) -> Option<(f64, f64, f64)> {
    let rates: Vec<(f64, f64)> = omegas
        .windows(2)
        .zip(alpha.windows(2))
        .map(|(w, a)| (0.5 * (w[0] + w[1]), -(a[1] - a[0]) / (w[1] - w[0])))
        .collect();
    let (k, &(w_k, r_k)) = rates
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.1.total_cmp(&b.1.1))?;
    if r_k.is_nan() || r_k <= 0.0 {
        return None;
    }
    let mut omega_r = w_k;
    if k > 0 && k + 1 < rates.len() {
        let (w0, r0) = rates[k - 1];
        let (w2, r2) = rates[k + 1];
        // Vertex of the parabola through three (ω, rate) points.
        let num = (w_k - w0).powi(2) * (r_k - r2) - (w_k - w2).powi(2) * (r_k - r0);
        let den = (w_k - w0) * (r_k - r2) - (w_k - w2) * (r_k - r0);
        if den != 0.0 {
            let vertex = w_k - 0.5 * num / den;
            if vertex > w0 && vertex < w2 {
                omega_r = vertex;
            }
        }
    }
    let zeta = 2.0 / (omega_r * r_k);
    let j = omegas
        .partition_point(|&w| w < omega_r)
        .clamp(1, omegas.len() - 1);
    let t = (omega_r - omegas[j - 1]) / (omegas[j] - omegas[j - 1]);
    let alpha0 = alpha[j - 1] + t * (alpha[j] - alpha[j - 1]);
    Some((alpha0, omega_r, zeta))
}

/// Levenberg–Marquardt on α_i = α₀ − 2·atan((ω_i² − ω_r²)/(2ζω_rω_i)) over every point.
fn refine_angles(omegas: &[f64], alpha: &[f64], start: (f64, f64, f64)) -> (f64, f64, f64) {
    let residuals = |p: &Vector3<f64>| -> Vec<(f64, Vector3<f64>)> {
        let (a0, wr, z) = (p[0], p[1], p[2]);
        omegas
            .iter()
            .zip(alpha)
            .map(|(&w, &a)| {
                let t = (w * w - wr * wr) / (2.0 * z * wr * w);
                let model = a0 - 2.0 * t.atan();
                let g = -2.0 / (1.0 + t * t);
                let dt_dwr = -1.0 / (z * w) - t / wr;
                let dt_dz = -t / z;
                // Residual a − model; its gradient is minus the model's.
                (a - model, -Vector3::new(1.0, g * dt_dwr, g * dt_dz))
            })
            .collect()
    };
    let cost = |p: &Vector3<f64>| residuals(p).iter().map(|(r, _)| r * r).sum::<f64>();
    let mut p = Vector3::new(start.0, start.1, start.2);
    let mut current = cost(&p);
    let mut lambda = 1e-3;
    for _ in 0..MAX_REFINEMENT_STEPS {
        let mut jtj = Matrix3::zeros();
        let mut jtr = Vector3::zeros();
        for (r, row) in residuals(&p) {
            jtj += row * row.transpose();
            jtr += row * r;
        }
        let mut accepted = false;
        for _ in 0..20 {
            let mut damped = jtj;
            for i in 0..3 {
                damped[(i, i)] *= 1.0 + lambda;
            }
            let Some(step) = damped.lu().solve(&(-jtr)) else {
                lambda *= 10.0;
                continue;
            };
            let mut trial = p + step;
            // ζ stays positive: a step across zero is cut back to a tenth of the old value.
            if trial[2] <= 0.0 {
                trial[2] = p[2] / 10.0;
            }
            let trial_cost = cost(&trial);
            if trial_cost.is_finite() && trial_cost <= current {
                let converged = (current - trial_cost) <= 1e-15 * (1.0 + current)
                    && (step[1] / p[1]).abs() < 1e-12;
                p = trial;
                current = trial_cost;
                lambda = (lambda / 3.0).max(1e-12);
                accepted = true;
                if converged {
                    return (p[0], p[1], p[2]);
                }
                break;
            }
            lambda *= 4.0;
        }
        if !accepted {
            break;
        }
    }
    (p[0], p[1], p[2])
}

/// ζ from every pair (a below, b above resonance) of points whose sweep angles from the
/// resonance point lie within `min..=max` radians.
fn damping_pairs(omegas: &[f64], theta: &[f64], omega_r: f64, min: f64, max: f64) -> Vec<f64> {
    let usable = |t: f64| (min..=max).contains(&t.abs());
    let below: Vec<(f64, f64)> = omegas
        .iter()
        .zip(theta)
        .filter(|(w, t)| **w < omega_r && **t < 0.0 && usable(**t))
        .map(|(w, t)| (*w, (t.abs() / 2.0).tan()))
        .collect();
    let above: Vec<(f64, f64)> = omegas
        .iter()
        .zip(theta)
        .filter(|(w, t)| **w > omega_r && **t > 0.0 && usable(**t))
        .map(|(w, t)| (*w, (t.abs() / 2.0).tan()))
        .collect();
    let mut zetas = Vec::with_capacity(below.len() * above.len());
    for &(wa, ta) in &below {
        for &(wb, tb) in &above {
            let zeta = (wb * wb - wa * wa) / (2.0 * omega_r * (wa * ta + wb * tb));
            if zeta.is_finite() && zeta > 0.0 {
                zetas.push(zeta);
            }
        }
    }
    zetas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refined_circle_fit_is_exact_on_an_arc_and_kasa_alone_is_close() {
        // 20 points on a quarter of a known circle: the geometric fit is exact; Kåsa is exact
        // too without noise (its bias needs noise), so both agree to rounding here.
        let (center, radius) = (C64::new(3.0, -2.0), 0.5);
        let points: Vec<C64> = (0..20)
            .map(|i| center + C64::from_polar(radius, 0.1 + 0.08 * f64::from(i)))
            .collect();
        for refine in [true, false] {
            let c = fit_circle(&points, refine).unwrap();
            assert!((c.center - center).norm() < 1e-12, "{c:?}");
            assert!((c.radius - radius).abs() < 1e-12, "{c:?}");
        }
        assert!(fit_circle(&points[..2], true).is_none());
        let line: Vec<C64> = (0..5).map(|i| C64::new(f64::from(i), 0.0)).collect();
        assert!(fit_circle(&line, true).is_none());
    }

    #[test]
    fn geometric_refinement_removes_kasa_bias_on_a_noisy_short_arc() {
        // Points on 60° of a unit circle with ±2 % radial ripple (alternating, so it has no
        // mean): Kåsa shrinks the circle, the geometric fit recovers the radius to the ripple.
        let points: Vec<C64> = (0..30)
            .map(|i| {
                let ripple = if i % 2 == 0 { 1.02 } else { 0.98 };
                C64::from_polar(ripple, -0.5 + f64::from(i) * (1.0 / 29.0))
            })
            .collect();
        let refined = fit_circle(&points, true).unwrap();
        let kasa = fit_circle(&points, false).unwrap();
        assert!(
            (refined.radius - 1.0).abs() < (kasa.radius - 1.0).abs(),
            "{refined:?} {kasa:?}"
        );
        assert!((refined.radius - 1.0).abs() < 0.01, "{refined:?}");
    }

    #[test]
    fn sweep_angle_law_holds_for_a_viscous_mobility_circle() {
        // Y = D/(1 + jt) with t = (ω² − ω_r²)/(2ζω_rω) sits on the circle of centre D/2 at
        // angle −2·atan(t): the law the angle fit inverts, checked on the closed form.
        let (wr, zeta, d) = (40.0, 0.02, 0.3);
        for w in [35.0, 39.0, 40.0, 41.5, 48.0] {
            let t = (w * w - wr * wr) / (2.0 * zeta * wr * w);
            let y = C64::from(d) / C64::new(1.0, t);
            let angle = (y - C64::from(d / 2.0)).arg();
            assert!((wrap(angle + 2.0 * t.atan())).abs() < 1e-12, "ω = {w}");
        }
    }
}
