//! Prints the natural frequencies of the Southampton building, bare and with the default
//! actuator on each floor. Run: `cargo run -p dtop-dynamics --example southampton`.

use dtop_dynamics::{ModelError, ShearBuilding};

fn main() -> Result<(), ModelError> {
    let bare = ShearBuilding::southampton();
    println!("bare: {}", format_hz(&bare.natural_frequencies_hz()));
    for floor in 1..=bare.floors() {
        let fitted = ShearBuilding::southampton_with_actuator(floor)?;
        println!(
            "actuator on floor {floor}: {}",
            format_hz(&fitted.natural_frequencies_hz())
        );
    }
    Ok(())
}

fn format_hz(hz: &[f64]) -> String {
    hz.iter()
        .map(|f| format!("{f:.4} Hz"))
        .collect::<Vec<_>>()
        .join(", ")
}
