//! Issue 12's "done when", with the real binaries: `dtop up` serves the studies API on an
//! embedded SQLite engine with in-process workers and a first-run admin whose password it prints;
//! `dtop study submit uncertainty` runs to a result downloadable as CSV; `dtop model add/list/
//! show` work against it; the study's state is retained on the embedded broker; an unknown parameter is refused with exit 64 and the field named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::Up;

fn dtop(args: &[&str], server: &str, password: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dtop"))
        .args(args)
        .env("DTOP_SERVER", server)
        .env("DTOP_USER", "admin")
        .env("DTOP_PASSWORD", password)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The retained study state `dtop up` published on its embedded broker, as a fresh subscriber
/// gets it.
fn retained_state(mqtt_port: u16, id: &str) -> serde_json::Value {
    let mut options = rumqttc::MqttOptions::new("studies-up-test", "127.0.0.1", mqtt_port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    let topic = format!("dtop/v1/studies/{id}/state");
    client.subscribe(&topic, rumqttc::QoS::AtLeastOnce).unwrap();
    for event in connection.iter().take(50) {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = event
            && p.topic == topic
        {
            assert!(p.retain, "the study state on {topic} is not retained");
            return serde_json::from_slice(&p.payload).unwrap();
        }
    }
    panic!("no retained state on {topic}");
}

#[test]
fn dtop_up_serves_the_api_and_runs_an_uncertainty_study_to_a_csv_result() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        &[
            "--workers",
            "2",
            "--status-every-s",
            "60",
            "--duration-s",
            "300",
        ],
    );
    let (http, mqtt_port, password) = (up.http.clone(), up.mqtt_port, up.admin_password.clone());
    assert!(
        up.printed
            .iter()
            .any(|l| l.contains(&format!("http://{http}/api/v1"))),
        "{:?}",
        up.printed
    );
    let kept = std::fs::read_to_string(dir.path().join("admin-password")).unwrap();
    assert_eq!(kept.trim(), password);
    let server = format!("http://{http}");

    let submit = dtop(
        &[
            "study",
            "submit",
            "uncertainty",
            "--model",
            "cristallo-msd3",
            "--param",
            "samples=2000",
            "--param",
            "frequencies=40",
            "--seed",
            "7",
            "--quiet",
        ],
        &server,
        &password,
    );
    assert_eq!(submit.status.code(), Some(0), "{}", text(&submit));
    let id = String::from_utf8_lossy(&submit.stdout).trim().to_owned();
    assert!(id.starts_with("st_"), "{id}");

    let watch = dtop(
        &["study", "watch", &id, "--timeout-s", "240"],
        &server,
        &password,
    );
    assert_eq!(watch.status.code(), Some(0), "{}", text(&watch));
    let last = String::from_utf8_lossy(&watch.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.contains("\"succeeded\""), "{last}");
    let retained = retained_state(mqtt_port, &id);
    assert_eq!(retained["id"], serde_json::json!(id), "{retained}");
    assert_eq!(
        retained["state"],
        serde_json::json!("succeeded"),
        "{retained}"
    );

    let result = dtop(
        &["study", "result", &id, "--format", "csv"],
        &server,
        &password,
    );
    assert_eq!(result.status.code(), Some(0), "{}", text(&result));
    let csv = String::from_utf8_lossy(&result.stdout);
    assert!(csv.contains("frequency_hz"), "{csv}");
    assert!(csv.lines().count() > 40, "{csv}");

    let unknown = dtop(
        &[
            "study",
            "submit",
            "uncertainty",
            "--model",
            "cristallo-msd3",
            "--param",
            "no_such_field=1",
        ],
        &server,
        &password,
    );
    assert_eq!(unknown.status.code(), Some(64), "{}", text(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no_such_field"),
        "{}",
        text(&unknown)
    );

    let spec = dir.path().join("two.json");
    std::fs::write(
        &spec,
        r#"{"description":"two storeys","structure":{"floor_masses_kg":[1.0,1.0],
            "storey_stiffness_n_per_m":[400.0,400.0],"damping":{"kind":"modal","zetas":[0.01,0.01]}}}"#,
    )
    .unwrap();
    let add = dtop(
        &[
            "model",
            "add",
            "two-storey",
            "--file",
            spec.to_str().unwrap(),
        ],
        &server,
        &password,
    );
    assert_eq!(add.status.code(), Some(0), "{}", text(&add));
    let show = dtop(&["model", "show", "two-storey@1"], &server, &password);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("two storeys"),
        "{}",
        text(&show)
    );
    let list = dtop(&["model", "list"], &server, &password);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("cristallo-msd3"),
        "{}",
        text(&list)
    );
    drop(up);
}
