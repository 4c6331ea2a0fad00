//! Property tests over random shear buildings, through the public API: mode orthogonality
//! and the semigroup law of exact discretization must hold for every valid building.

use dtop_dynamics::{Damping, InertialActuator, ShearBuilding, ShearBuildingConfig};
use proptest::prelude::*;

fn building_config() -> impl Strategy<Value = ShearBuildingConfig> {
    (1usize..=8)
        .prop_flat_map(|floors| {
            (
                prop::collection::vec(0.5f64..20.0, floors),
                prop::collection::vec(1e2f64..1e6, floors),
                0.0f64..0.2,
                prop::option::of(1..=floors),
            )
        })
        .prop_map(|(masses, stiffnesses, zeta, actuator_floor)| {
            let floors = masses.len();
            ShearBuildingConfig {
                floor_masses_kg: masses,
                storey_stiffness_n_per_m: stiffnesses,
                damping: Damping::Modal {
                    zetas: vec![zeta; floors],
                },
                actuator: actuator_floor.map(|floor| InertialActuator {
                    floor,
                    ..InertialActuator::default()
                }),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn modes_are_mass_orthonormal_and_ascending(config in building_config()) {
        let building = ShearBuilding::new(config).expect("generated configs are valid");
        let modes = building.modes();
        let phi = &modes.shapes;
        let modal_m = phi.transpose() * building.mass_matrix() * phi;
        let modal_k = phi.transpose() * building.stiffness_matrix() * phi;
        let n = building.dofs();
        let k_scale = modes.omegas_rad_s.amax().powi(2);
        for r in 0..n {
            for c in 0..n {
                let want_m = if r == c { 1.0 } else { 0.0 };
                let want_k = if r == c { modes.omegas_rad_s[r].powi(2) } else { 0.0 };
                // Stiffness ratios up to 1e4 and mass ratios up to 40 give condition numbers
                // near 1e6; backward-stable eigen-solvers then leave ~1e-10 normwise error.
                prop_assert!((modal_m[(r, c)] - want_m).abs() < 1e-8, "ΦᵀMΦ = {}", modal_m);
                prop_assert!((modal_k[(r, c)] - want_k).abs() < 1e-8 * k_scale, "ΦᵀKΦ = {}", modal_k);
            }
        }
        let hz = building.natural_frequencies_hz();
        prop_assert!(hz.windows(2).all(|w| w[0] <= w[1]));
        prop_assert!(hz.iter().all(|&f| f > 0.0));
    }

    #[test]
    fn two_half_steps_equal_one_full_step(config in building_config(), dt_s in 1e-4f64..5e-3) {
        let ss = ShearBuilding::new(config).expect("valid").state_space();
        let half = ss.discretize_zoh(dt_s).expect("valid step");
        let full = ss.discretize_zoh(2.0 * dt_s).expect("valid step");
        // e^{A·2dt} = (e^{A·dt})², and holding u for two steps integrates it twice.
        let ad2 = &half.ad * &half.ad;
        let bd2 = &half.ad * &half.bd + &half.bd;
        // Each exponential is accurate to ~1e-15 of its norm; one extra product adds the same.
        let ad_scale = full.ad.amax().max(1.0);
        let bd_scale = full.bd.amax();
        prop_assert!((&ad2 - &full.ad).amax() < 1e-10 * ad_scale, "Ad mismatch");
        prop_assert!((&bd2 - &full.bd).amax() < 1e-10 * bd_scale, "Bd mismatch");
    }
}
