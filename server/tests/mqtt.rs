//! Study state on MQTT: the server, logged in to the real in-process broker as its `server`
//! user, publishes each study change retained on `dtop/v1/studies/{id}/state`; a dashboard
//! subscribing after the study finished still gets its final state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Options, Server, WAIT, modal_study, password};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_state_is_published_retained_for_late_subscribers() {
    // The broker authenticates against the same users as the server.
    let dir = tempfile::tempdir().unwrap();
    let credentials_file = dir.path().join("passwd");
    let path = credentials_file.clone();
    let broker = tokio::task::spawn_blocking(move || {
        common::write_users(&path);
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
    .expect("broker starts");
    let server = Server::start(Options {
        workers: 1,
        mqtt: Some(broker.mqtt_addr()),
        ..Options::default()
    })
    .await;
    let token = server.login("ada").await;
    let r = server
        .client
        .post(server.url("/api/v1/studies"))
        .bearer_auth(&token)
        .json(&modal_study())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let study: Value = r.json().await.unwrap();
    let id = study["id"].as_str().unwrap().to_owned();
    // Wait for the study to finish, over the API.
    let finished = async {
        loop {
            let r = server
                .client
                .get(server.url(&format!("/api/v1/studies/{id}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let record: Value = r.json().await.unwrap();
            if record["state"] == "succeeded" {
                return record;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let final_record = tokio::time::timeout(WAIT, finished)
        .await
        .expect("study succeeds");

    // A dashboard subscribing now gets the retained final state.
    let addr = broker.mqtt_addr();
    let mut options = MqttOptions::new("dash-test", addr.ip().to_string(), addr.port());
    options.set_credentials("wall", password("wall"));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe(format!("dtop/v1/studies/{id}/state"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let record: Value = serde_json::from_slice(&p.payload).unwrap();
                    if record["state"] == "succeeded" {
                        return (p.retain, record);
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("dashboard connection failed: {e}"),
            }
        }
    };
    let (retain, record) = tokio::time::timeout(WAIT, got)
        .await
        .expect("retained state arrives");
    assert!(retain, "the state is retained");
    assert_eq!(record["id"], final_record["id"]);
    assert_eq!(record["chunks_done"], final_record["chunks_total"]);
    server.stop().await;
}
