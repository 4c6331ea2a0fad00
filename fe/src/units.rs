//! Owns the conversion of Cristallo's inch–slinch–second inputs (TOOLS.md §7) to SI, done once
//! here so that every other module sees SI only.
//!
//! The inch–slinch–second system: length in inches, force in pound-force, time in seconds, so
//! the unit of mass is the slinch (1 lbf·s²/in) and of stress the psi (1 lbf/in²). Both base
//! factors are exact by definition (international inch 1959, pound-force via the standard
//! gravity 9.806 65 m/s² and the avoirdupois pound 0.453 592 37 kg).

/// One inch, in metres (exact).
pub const METRES_PER_INCH: f64 = 0.0254;
/// One pound-force, in newtons (exact: 0.453 592 37 kg × 9.806 65 m/s²).
pub const NEWTONS_PER_POUND_FORCE: f64 = 0.453_592_37 * 9.806_65;
/// One psi (lbf/in²), in pascals.
pub const PASCALS_PER_PSI: f64 = NEWTONS_PER_POUND_FORCE / (METRES_PER_INCH * METRES_PER_INCH);
/// One slinch (lbf·s²/in), in kilograms.
pub const KILOGRAMS_PER_SLINCH: f64 = NEWTONS_PER_POUND_FORCE / METRES_PER_INCH;
/// One slinch per cubic inch, in kg/m³.
pub const KG_PER_M3_PER_SLINCH_PER_IN3: f64 =
    KILOGRAMS_PER_SLINCH / (METRES_PER_INCH * METRES_PER_INCH * METRES_PER_INCH);

/// Inches to metres.
pub fn inches_to_m(inches: f64) -> f64 {
    inches * METRES_PER_INCH
}

/// psi to pascals.
pub fn psi_to_pa(psi: f64) -> f64 {
    psi * PASCALS_PER_PSI
}

/// slinch/in³ to kg/m³.
pub fn slinch_per_in3_to_kg_m3(density: f64) -> f64 {
    density * KG_PER_M3_PER_SLINCH_PER_IN3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published values: NIST SP 811 (2008), Appendix B.9: 1 psi = 6.894 757 E+03 Pa,
    /// 1 lbf = 4.448 222 N. The slinch follows from lbf/in; 1.068 69 E+07 kg/m³ per slinch/in³
    /// is also the factor Cristallo's page uses (×10686910.34), which agrees to 2 ppm.
    #[test]
    fn factors_match_nist_published_values() {
        assert!((PASCALS_PER_PSI - 6894.757).abs() < 1e-3);
        assert!((NEWTONS_PER_POUND_FORCE - 4.448_222).abs() < 1e-6);
        assert!((KILOGRAMS_PER_SLINCH - 175.126_8).abs() < 1e-3);
        assert!((KG_PER_M3_PER_SLINCH_PER_IN3 / 10_686_910.34 - 1.0).abs() < 2e-6);
    }

    /// TOOLS.md §7: the page shows E = 69 981.66 MPa and ρ = 2700.0 kg/m³ for the defaults.
    #[test]
    fn cristallo_defaults_convert_to_the_values_its_page_shows() {
        assert!((psi_to_pa(1.015e7) / 1e6 - 69_981.66).abs() < 0.5);
        assert!((slinch_per_in3_to_kg_m3(2.5265e-4) - 2700.0).abs() < 0.1);
        assert!((inches_to_m(22.0) - 0.5588).abs() < 1e-15);
    }
}
