//! The live pipeline for the server's tests, in one process as `dtop up` runs it: dtop-broker
//! with logins from the test users, dtop-twin (control on, so it publishes each rig's DVF gain
//! limit), the rig simulator on a pty and dtop-edge, each logged in as its own MQTT user
//! (`twin`, rig `r1`), and an admin's MQTT tap on the rig. The twin stores to files, or to an
//! InfluxDB 1.x database ([`Pipeline::start_storing`]).

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::{WAIT, password};

/// The broker, with logins from the test users (`common::write_users`) and DTOP's roles.
pub async fn start_broker(dir: &Path) -> dtop_broker::BrokerHandle {
    let credentials_file = dir.join("broker.passwd");
    tokio::task::spawn_blocking(move || {
        super::write_users(&credentials_file);
        dtop_broker::spawn(&dtop_broker::BrokerConfig {
            mqtt: dtop_broker::ListenerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            },
            auth: Some(dtop_broker::AuthConfig {
                credentials_file,
                roles: dtop_broker::RolesConfig::default(),
            }),
            ..dtop_broker::BrokerConfig::default()
        })
    })
    .await
    .unwrap()
    .expect("broker starts")
}

/// The simulated rig (its edge logs in as the test user `r1`, a `rig`).
pub const RIG: &str = "r1";

/// Twin, simulator and edge, stopped from the inputs downstream.
pub struct Pipeline {
    stop_edge: CancellationToken,
    stop_sim: CancellationToken,
    stop_twin: CancellationToken,
    edge: tokio::task::JoinHandle<Result<(), dtop_edge::EdgeError>>,
    sim: dtop_rig_sim::SimHandle,
    twin: tokio::task::JoinHandle<Result<(), dtop_twin::TwinError>>,
}

fn secret_file(dir: &Path, user: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{user}.password"));
    std::fs::write(&path, format!("{}\n", password(user))).unwrap();
    path
}

impl Pipeline {
    /// Twin, simulator and edge on `mqtt_port`, logged in as `twin` and `r1`; the twin stores
    /// to files under `dir`.
    pub async fn start(dir: &Path, mqtt_port: u16) -> Self {
        let storage = format!("[storage.file]\ndir = {:?}\n", dir.join("lines"));
        Self::start_storing(dir, mqtt_port, &storage).await
    }

    /// The same, with the twin's `[storage.*]` table given as TOML (e.g. `[storage.influx_v1]`).
    pub async fn start_storing(dir: &Path, mqtt_port: u16, storage_toml: &str) -> Self {
        let twin_toml = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nusername = \"twin\"\npassword_file = {:?}\n\n[control]\nenabled = true\n\n{storage_toml}",
            secret_file(dir, "twin"),
        );
        let twin_config = dtop_twin::TwinConfig::from_toml_str(&twin_toml).unwrap();
        let stop_twin = CancellationToken::new();
        let (_, twin) = dtop_twin::spawn(twin_config, stop_twin.clone());
        let stop_sim = CancellationToken::new();
        let sim = dtop_rig_sim::start(dtop_rig_sim::SimConfig::default(), stop_sim.clone())
            .await
            .unwrap();
        let edge_toml = format!(
            "rig_id = {RIG:?}\nstate_dir = {:?}\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nusername = {RIG:?}\npassword_file = {:?}\n\n[actuator]\nmax_force_n = 20.0\nmax_slew_n_per_s = 2000.0\n\n[serial]\npath = {:?}\n",
            dir.join("edge"),
            secret_file(dir, RIG),
            sim.pty_path().display().to_string()
        );
        let edge_config = dtop_edge::EdgeConfig::from_toml(&edge_toml).unwrap();
        let stop_edge = CancellationToken::new();
        let edge = tokio::spawn(dtop_edge::run(edge_config, stop_edge.clone()));
        Self {
            stop_edge,
            stop_sim,
            stop_twin,
            edge,
            sim,
            twin,
        }
    }

    /// The simulator's counters (samples taken so far: the benchmarks' sampling clock).
    pub fn sim_stats(&self) -> dtop_rig_sim::SimStats {
        self.sim.stats()
    }

    /// Stops from the inputs downstream, as `dtop up` does.
    pub async fn stop(self) {
        self.stop_edge.cancel();
        let _ = tokio::time::timeout(WAIT, self.edge).await;
        self.stop_sim.cancel();
        let _ = tokio::time::timeout(WAIT, self.sim.join()).await;
        self.stop_twin.cancel();
        let _ = tokio::time::timeout(WAIT, self.twin).await;
    }
}

/// Publishes `payload` retained at QoS 1 on `topic` as the admin `root`, and returns once the
/// broker has acknowledged it.
pub async fn publish_retained_as_admin(mqtt_port: u16, topic: &str, payload: Vec<u8>) {
    let mut options = MqttOptions::new("test-admin-publisher", "127.0.0.1", mqtt_port);
    options.set_credentials("root", password("root"));
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("the broker acknowledges the publish");
    let _ = client.disconnect().await;
}

/// Every birth and sample block of the rig, as an admin subscriber on MQTT sees them.
pub async fn mqtt_tap(mqtt_port: u16) -> tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let mut options = MqttOptions::new("live-test-tap", "127.0.0.1", mqtt_port);
    options.set_credentials("root", password("root"));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(format!("dtop/v1/rig/{RIG}/samples"), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                    client
                        .subscribe(format!("dtop/v1/rig/{RIG}/birth"), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    rx
}
