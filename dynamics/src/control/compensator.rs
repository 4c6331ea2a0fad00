//! Owns the velocity-feedback compensator C(s) = num(s)/den(s): validation (proper, stable),
//! evaluation at s = jω and a state-space realization. Knows nothing of the plant.

use nalgebra::{DMatrix, DVector, RowDVector};
use serde::{Deserialize, Serialize};

use crate::control::ControlError;
use crate::frf::{C64, eigenvalues};

/// A proper, stable rational transfer function C(s) = num(s)/den(s), dimensionless, that
/// shapes the velocity feedback: coil current = h·C(s)·v. Coefficients are ordered from the
/// highest power of s down; leading zeros are ignored.
///
/// Examples: `[1] / [1]` is a pure gain (the default); `[ω_c] / [1, ω_c]` a first-order
/// low-pass with unit DC gain; `[T, 1] / [αT, 1]` a lead (α < 1) or lag (α > 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compensator {
    /// Numerator coefficients, highest power of s first.
    pub numerator: Vec<f64>,
    /// Denominator coefficients, highest power of s first.
    pub denominator: Vec<f64>,
}

impl Default for Compensator {
    fn default() -> Self {
        Self::unity()
    }
}

/// A state-space realization ż = A·z + b·u, y = c·z + d·u of a single-input single-output
/// transfer function.
#[derive(Debug, Clone, PartialEq)]
pub struct SisoRealization {
    /// State matrix (n × n; n = 0 for a pure gain).
    pub a: DMatrix<f64>,
    /// Input column.
    pub b: DVector<f64>,
    /// Output row.
    pub c: RowDVector<f64>,
    /// Feedthrough.
    pub d: f64,
}

impl Compensator {
    /// C(s) = 1.
    pub fn unity() -> Self {
        Self {
            numerator: vec![1.0],
            denominator: vec![1.0],
        }
    }

    /// First-order low-pass ω_c/(s + ω_c) with unit DC gain, corner `corner_hz`.
    pub fn low_pass(corner_hz: f64) -> Self {
        let wc = std::f64::consts::TAU * corner_hz;
        Self {
            numerator: vec![wc],
            denominator: vec![1.0, wc],
        }
    }

    /// True for C(s) = constant: then no compensator states exist.
    pub fn is_static(&self) -> bool {
        trimmed(&self.denominator).len() <= 1 && trimmed(&self.numerator).len() <= 1
    }

    /// Every rule this compensator breaks, as sentences; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self
            .numerator
            .iter()
            .chain(self.denominator.iter())
            .any(|x| !x.is_finite())
        {
            problems.push("compensator coefficients must all be finite".into());
            return problems;
        }
        let num = trimmed(&self.numerator);
        let den = trimmed(&self.denominator);
        if den.is_empty() {
            problems.push("compensator denominator is zero".into());
            return problems;
        }
        if num.len() > den.len() {
            problems.push(format!(
                "compensator is improper: numerator degree {} exceeds denominator degree {}",
                num.len() - 1,
                den.len() - 1
            ));
        }
        if den.len() > 1 {
            match self.poles() {
                Ok(poles) if poles.iter().any(|p| p.re >= 0.0) => problems.push(
                    "compensator is unstable: every root of the denominator needs a negative \
                     real part"
                        .into(),
                ),
                Ok(_) => {}
                Err(_) => problems.push("compensator poles could not be computed".into()),
            }
        }
        problems
    }

    /// Roots of the denominator.
    fn poles(&self) -> Result<Vec<C64>, ControlError> {
        let realization = companion(trimmed(&self.denominator));
        Ok(eigenvalues(&realization)?)
    }

    /// C(jω).
    pub fn response(&self, omega_rad_s: f64) -> C64 {
        let s = C64::new(0.0, omega_rad_s);
        horner(&self.numerator, s) / horner(&self.denominator, s)
    }

    /// Controllable-canonical realization of C(s).
    ///
    /// # Errors
    /// [`ControlError::Invalid`] with every problem if the compensator is not valid.
    pub fn realize(&self) -> Result<SisoRealization, ControlError> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
        let den = trimmed(&self.denominator);
        let lead = den[0];
        let n = den.len() - 1;
        // den(s)/lead = sⁿ + a₁·sⁿ⁻¹ + … + aₙ; num padded to n + 1 coefficients b₀…bₙ.
        let a_coef: Vec<f64> = den[1..].iter().map(|x| x / lead).collect();
        let num = trimmed(&self.numerator);
        let mut b_coef = vec![0.0; n + 1 - num.len()];
        b_coef.extend(num.iter().map(|x| x / lead));
        let d = b_coef[0];
        // C(s) = d + (b̃₁·sⁿ⁻¹ + … + b̃ₙ)/den(s) with b̃ᵢ = bᵢ − d·aᵢ.
        let a = companion(den);
        let mut b = DVector::zeros(n);
        let mut c = RowDVector::zeros(n);
        if n > 0 {
            b[n - 1] = 1.0;
            for i in 1..=n {
                // State zⱼ carries s^(j−1)/den(s), so b̃ᵢ (the s^(n−i) coefficient) sits at j = n − i.
                c[n - i] = b_coef[i] - d * a_coef[i - 1];
            }
        }
        Ok(SisoRealization { a, b, c, d })
    }
}

/// Coefficients without leading zeros.
fn trimmed(coefficients: &[f64]) -> &[f64] {
    let first = coefficients
        .iter()
        .position(|&x| x != 0.0)
        .unwrap_or(coefficients.len());
    &coefficients[first..]
}

/// Companion matrix whose characteristic polynomial is `den` (leading coefficient non-zero):
/// superdiagonal ones, last row −[aₙ … a₁].
fn companion(den: &[f64]) -> DMatrix<f64> {
    let n = den.len().saturating_sub(1);
    let mut a = DMatrix::zeros(n, n);
    for i in 0..n.saturating_sub(1) {
        a[(i, i + 1)] = 1.0;
    }
    if n > 0 {
        for j in 0..n {
            a[(n - 1, j)] = -den[n - j] / den[0];
        }
    }
    a
}

/// Polynomial value by Horner's rule, highest power first.
fn horner(coefficients: &[f64], s: C64) -> C64 {
    coefficients
        .iter()
        .fold(C64::new(0.0, 0.0), |acc, &c| acc * s + c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frf::state_space_response;

    fn realized_response(comp: &Compensator, w: f64) -> C64 {
        let r = comp.realize().expect("valid");
        if r.a.nrows() == 0 {
            return C64::from(r.d);
        }
        state_space_response(&r.a, &r.b, &r.c, r.d, w).expect("stable")
    }

    #[test]
    fn realization_reproduces_the_polynomial_ratio() {
        let cases = [
            Compensator::unity(),
            Compensator::low_pass(40.0),
            // Lead: (0.01 s + 1)/(0.002 s + 1), scaled denominator to test normalisation.
            Compensator {
                numerator: vec![0.02, 2.0],
                denominator: vec![0.004, 2.0],
            },
            // Second order, strictly proper, with a leading zero in the numerator.
            Compensator {
                numerator: vec![0.0, 3.0, 5.0],
                denominator: vec![1.0, 40.0, 900.0],
            },
        ];
        for comp in &cases {
            for w in [0.0, 1.0, 37.0, 400.0, 1e4] {
                let want = comp.response(w);
                let got = realized_response(comp, w);
                // Two evaluations of the same rational function in double precision.
                assert!(
                    (got - want).norm() < 1e-12 * want.norm().max(1.0),
                    "{comp:?} at {w}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn improper_and_unstable_compensators_are_refused() {
        let improper = Compensator {
            numerator: vec![1.0, 0.0],
            denominator: vec![1.0],
        };
        assert_eq!(improper.problems().len(), 1, "{:?}", improper.problems());
        let unstable = Compensator {
            numerator: vec![1.0],
            denominator: vec![1.0, -3.0],
        };
        assert_eq!(unstable.problems().len(), 1, "{:?}", unstable.problems());
        let zero = Compensator {
            numerator: vec![1.0],
            denominator: vec![0.0],
        };
        assert_eq!(zero.problems().len(), 1);
        assert!(Compensator::low_pass(10.0).problems().is_empty());
    }
}
