//! OpenSees (PyPI `openseespy`) as the second peer of the built-in solver, run for real: the
//! script `dtop_fe::opensees` writes, run by the Python of `DTOP_TEST_PYTHON` (scripts/test.sh
//! pins `openseespy` in its venv) or else the workspace's `target/py-peers` venv.
//!
//! Without a Python that imports `openseespy` each test prints that it skipped, unless
//! `DTOP_REQUIRE_SERVICES=1`, which makes it a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dtop_fe::opensees::{parse_frequencies, write_script};
use dtop_fe::{BeamTheory, Feet, FrameConfig, FrameModel, PlanAxis};

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("DTOP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-peers/bin/python")
        });
    let works = Command::new(&candidate)
        .args(["-c", "import openseespy.opensees"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(candidate);
    }
    assert!(
        std::env::var("DTOP_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "DTOP_REQUIRE_SERVICES=1 but {} cannot import openseespy: run scripts/test.sh, which \
         installs it into target/py-peers, or set DTOP_TEST_PYTHON",
        candidate.display()
    );
    eprintln!(
        "skipped: no Python with openseespy at {} (scripts/test.sh installs it)",
        candidate.display()
    );
    None
}

fn opensees_frequencies_hz(python: &Path, config: &FrameConfig, modes: usize) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = dir.path().join("frame.py");
    std::fs::write(
        &script,
        write_script(config, modes).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(python)
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "OpenSees failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_frequencies(&String::from_utf8_lossy(&output.stdout)).unwrap_or_else(|e| panic!("{e}"))
}

/// Compares the first six modes of `config` in both solvers, within `tolerance`.
fn agree(python: &Path, label: &str, config: FrameConfig, tolerance: f64) {
    let opensees = opensees_frequencies_hz(python, &config, 6);
    let builtin = FrameModel::new(config)
        .and_then(|m| m.modes(6))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opensees.len(), 6);
    for (i, (b, o)) in builtin.modes.iter().zip(&opensees).enumerate() {
        let diff = o / b.frequency_hz - 1.0;
        println!(
            "{label}: mode {} {:?}: built-in {:.5} Hz, OpenSees {o:.5} Hz, {:+.5} %",
            i + 1,
            b.class,
            b.frequency_hz,
            diff * 100.0
        );
        assert!(diff.abs() < tolerance, "{label} mode {}: {diff}", i + 1);
    }
}

/// The rig as the built-in solver has it (8 Timoshenko elements per leg, rigid floors, fixed
/// feet), in OpenSees on the same mesh: the same idealization through other element
/// matrices (`ElasticTimoshenkoBeam`), another rigid-floor constraint (`rigidLink beam`,
/// eliminated by transformation) and another eigen-solver (ARPACK). Measured ≤ 0.004 % apart
/// in the first six modes, all from the legs' mass matrices (the stiffnesses agree: the x
/// sways, which hardly move the legs' mass, meet to 1e-6): the y sway from the Timoshenko
/// element's own mass (the built-in uses the Euler–Bernoulli consistent mass; 0 with
/// Euler–Bernoulli legs in the next test), the torsion from the legs' twist inertia, which
/// the two elements weigh differently and which is ~3e-5 of the floors' rotary inertia.
/// Bound 0.02 %; by contrast a floor's rotary inertia off by 1 % would move the torsion
/// modes by ~0.5 %.
#[test]
fn opensees_and_the_builtin_agree_on_the_first_six_modes_of_the_rig() {
    let Some(python) = python() else {
        return;
    };
    agree(&python, "rig", FrameConfig::southampton(), 2e-4);
}

/// Euler–Bernoulli legs (`elasticBeamColumn`) on elastic feet (a `zeroLength` element of six
/// springs under each foot, soft enough to matter: the first sway drops from 7.04 to
/// 6.33 Hz, the first torsion from 61.7 to 37.2 Hz), and the rig turned a quarter (the legs'
/// thin side along y, so OpenSees's section axes come from the other `vecxz`): the other
/// element, support and orientation the writer has. Measured ≤ 1e-8 apart except the
/// torsion (+0.0034 %, the legs' twist inertia as above). Same bound.
#[test]
fn opensees_agrees_on_turned_euler_bernoulli_legs_standing_on_elastic_feet() {
    let Some(python) = python() else {
        return;
    };
    let original = FrameConfig::southampton();
    let mut config = FrameConfig {
        beam_theory: BeamTheory::EulerBernoulli,
        feet: Feet::Elastic {
            translational_n_per_m: 1e6,
            rotational_n_m_per_rad: 200.0,
        },
        ..original.clone()
    };
    config.leg.thickness_along = PlanAxis::Y;
    config.leg.spacing_x_m = original.leg.spacing_y_m;
    config.leg.spacing_y_m = original.leg.spacing_x_m;
    config.floor.length_x_m = original.floor.length_y_m;
    config.floor.length_y_m = original.floor.length_x_m;
    agree(&python, "turned, elastic feet", config, 2e-4);
}
