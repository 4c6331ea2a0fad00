//! Live rigs through the server, on the real pipeline in one process: dtop-broker with logins,
//! the rig simulator on a pty, dtop-edge and dtop-twin, each as its own MQTT user, and the
//! server as its `server` user. A WebSocket client gets binary frames whose values equal the
//! `SampleBlock`s on MQTT; an operator's safety stop sent over HTTP comes back as an ack on the
//! WebSocket; an operator of another rig and a dashboard are refused by the same rules as MQTT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::HashMap;

use common::pipeline::{Pipeline, RIG, mqtt_tap, start_broker};
use common::{Options, Server, WAIT, password};
use dtop_auth::credentials::add_user;
use dtop_auth::{RigSpec, Role, Secret};
use dtop_proto::Message as _;
use dtop_proto::v1::{RigBirth, SampleBlock};
use dtop_server::live::frame::{self, FrameKind};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws/rigs/{rig}` with a bearer token: the socket, or the refusal's HTTP status.
async fn open_feed(server: &Server, token: &str, rig: &str) -> Result<Ws, u16> {
    let url = server
        .url(&format!("/ws/rigs/{rig}"))
        .replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

async fn command(server: &Server, token: &str, rig: &str, body: Value) -> (u16, Value) {
    let r = server
        .client
        .post(server.url(&format!("/api/v1/rigs/{rig}/commands")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_feed_carries_the_mqtt_samples_and_an_operators_safety_stop_comes_back_as_an_ack()
{
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let mqtt_port = broker.mqtt_addr().port();
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        ..Options::default()
    })
    .await;
    // An operator of another rig only; the server's Users store picks the line up.
    let users = server.credentials_file.clone();
    tokio::task::spawn_blocking(move || {
        add_user(
            &users,
            "op-b",
            Role::Operator,
            RigSpec::List(vec!["rig-b".into()]),
            Some(&Secret::new(password("op-b"))),
        )
        .unwrap();
    })
    .await
    .unwrap();
    let mut tap = mqtt_tap(mqtt_port).await;
    let pipeline = Pipeline::start(dir.path(), mqtt_port).await;

    let op = server.login("op").await;
    let op_b = server.login("op-b").await;
    let wall = server.login("wall").await;

    // Refusals, by the same rules as MQTT.
    assert_eq!(
        open_feed(&server, &op_b, RIG).await.err(),
        Some(403),
        "op-b watches r1"
    );
    let (status, body) = command(
        &server,
        &op_b,
        RIG,
        serde_json::json!({"kind": "safety_stop"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("may not command rig r1"),
        "{body}"
    );
    let (status, _) = command(
        &server,
        &wall,
        RIG,
        serde_json::json!({"kind": "safety_stop"}),
    )
    .await;
    assert_eq!(status, 403, "a dashboard commands");
    let (status, body) = command(&server, &op, RIG, serde_json::json!({"kind": "launch"})).await;
    assert_eq!(status, 400, "{body}");

    // The operator's feed: frames whose values equal the blocks on MQTT.
    let mut ws = open_feed(&server, &op, RIG).await.expect("op watches r1");
    let mut birth: Option<RigBirth> = None;
    let mut blocks: HashMap<u64, SampleBlock> = HashMap::new();
    let mut frames = Vec::new();
    let mut matched = 0;
    let mut hello = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while matched < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {matched} frames matched; hello {hello:?}"
        );
        tokio::select! {
            m = ws.next() => match m.unwrap().unwrap() {
                Message::Binary(b) => {
                    let f = frame::decode(&b).unwrap();
                    if f.kind == FrameKind::Samples {
                        frames.push(f);
                    }
                }
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "hello" {
                        hello = Some(v);
                    }
                }
                _ => {}
            },
            Some((topic, payload)) = tap.recv() => {
                if topic.ends_with("/birth") {
                    birth = Some(RigBirth::decode(payload.as_slice()).unwrap());
                } else {
                    let b = SampleBlock::decode(payload.as_slice()).unwrap();
                    blocks.insert(b.first_sample_index, b);
                }
            }
        }
        let Some(birth) = &birth else { continue };
        frames.retain(|f| {
            let Some(block) = blocks.get(&f.first_sample_index) else {
                return true;
            };
            assert_eq!(f.channels.len(), block.channels.len());
            for ((id, values), cs) in f.channels.iter().zip(&block.channels) {
                assert_eq!(u32::from(*id), cs.channel_id);
                let ch = birth
                    .channels
                    .iter()
                    .find(|c| c.id == cs.channel_id)
                    .unwrap();
                let expected: Vec<f32> = cs
                    .raw
                    .iter()
                    .map(|r| (f64::from(*r) * ch.scale + ch.offset) as f32)
                    .collect();
                assert_eq!(
                    values, &expected,
                    "channel {id} at {}",
                    f.first_sample_index
                );
            }
            assert_eq!(f.first_timestamp_ns, block.first_timestamp_ns);
            assert_eq!(f.sample_period_ns, block.sample_period_ns);
            matched += 1;
            false
        });
    }
    let hello = hello.expect("hello first");
    assert_eq!(hello["may_command"], true);

    // A DVF gain above the limit is refused before anything is sent.
    let (status, body) = command(
        &server,
        &op,
        RIG,
        serde_json::json!({"kind": "set_control", "law": "dvf", "gain_n_s_per_m": 1.0e6}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"][0]["field"], "gain_n_s_per_m", "{body}");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("critical gain"),
        "{body}"
    );

    // The limit is the twin's: the status it publishes says so, and a rig no twin has
    // reported on gets no DVF gain at all.
    let limits: Value = server
        .client
        .get(server.url(&format!("/api/v1/rigs/{RIG}/limits")))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["floor"], 3, "{limits}");
    assert_eq!(limits["max_fraction_of_critical"], 0.8, "{limits}");
    let (status, body) = command(
        &server,
        &op,
        "r9",
        serde_json::json!({"kind": "set_control", "law": "dvf", "gain_n_s_per_m": 1.0}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("twin has not published"),
        "{body}"
    );

    // A safety stop over HTTP; its ack arrives on the feed.
    let (status, body) = command(
        &server,
        &op,
        RIG,
        serde_json::json!({"kind": "safety_stop"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["command_id"].as_str().unwrap().to_owned();
    let ack = tokio::time::timeout(WAIT, async {
        loop {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ack" && v["command_id"] == id.as_str() {
                    return v;
                }
            }
        }
    })
    .await
    .expect("the safety stop's ack on the feed");
    assert!(
        ack["status"] == "applied" || ack["status"] == "latched",
        "{ack}"
    );
    // The summary reflects the latched envelope, from the edge's own status.
    let latched = tokio::time::timeout(WAIT, async {
        loop {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "status" && v["safety_state"] == "latched" {
                    return v;
                }
            }
        }
    })
    .await
    .expect("a status with the envelope latched");
    assert_eq!(latched["online"], true);

    // A dashboard watches but gets no command answers.
    let mut wall_ws = open_feed(&server, &wall, RIG)
        .await
        .expect("a dashboard watches");
    if let Message::Text(t) = wall_ws.next().await.unwrap().unwrap() {
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["may_command"], false);
        assert_eq!(v["sees_acks"], false);
    }
    let _ = wall_ws.close(None).await;
    let _ = ws.send(Message::Close(None)).await;

    pipeline.stop().await;
    server.stop().await;
    drop(broker);
}
