//! Authentication and MQTT 3.1.1 enforcement with real clients: wrong passwords and unknown
//! users are refused with the right CONNACK in both protocol versions, a rig cannot read
//! another rig's commands by any filter, a forbidden will refuses the CONNECT, and MQTT 3.1.1
//! refusals behave as documented (SUBACK 0x80; a forbidden PUBLISH is acknowledged and dropped).

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{WAIT, client_as, poll_until, start_auth_broker, v5_client};
use dtop_broker::{Refusal, Role};
use dtop_proto::ids::RigId;
use dtop_proto::topic::{self, RigTopic};
use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet, QoS, SubscribeReasonCode};

const USERS: [common::TestUser<'static>; 3] = [
    ("r1", Role::Rig, "-", "pw-r1"),
    ("r2", Role::Rig, "-", "pw-r2"),
    ("op", Role::Operator, "*", "pw-op"),
];

async fn connack_error_v311(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> ConnectionError {
    let (_client, mut eventloop) = client_as(&format!("bad-{user}"), addr, user, password);
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return None,
                Ok(_) => {}
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("an answer to CONNECT");
    outcome.expect("the CONNECT must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_wrong_password_and_an_unknown_user_in_both_versions() {
    let (broker, _dir) = tokio::task::spawn_blocking(|| start_auth_broker(&USERS))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();
    for (user, password) in [("r1", "wrong"), ("nobody", "pw-r1"), ("r1", "")] {
        let error = connack_error_v311(addr, user, password).await;
        assert!(
            matches!(
                error,
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)
            ),
            "{user}: {error:?}"
        );
    }
    let (_c, mut eventloop) = v5_client("bad-v5", addr, Some(("r1", "wrong")));
    let error = tokio::time::timeout(WAIT, eventloop.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            rumqttc::v5::ConnectionError::ConnectionRefused(
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword
            )
        ),
        "{error:?}"
    );
    // No credentials at all.
    let (_c, mut eventloop) = v5_client("anonymous", addr, None);
    assert!(
        tokio::time::timeout(WAIT, eventloop.poll())
            .await
            .unwrap()
            .is_err()
    );
    assert_eq!(broker.metrics().refusals(Refusal::BadCredentials), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rig_reading_another_rigs_commands_gets_nothing() {
    let (broker, _dir) = tokio::task::spawn_blocking(|| start_auth_broker(&USERS))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();
    let r1 = RigId::new("r1").unwrap();
    let r2 = RigId::new("r2").unwrap();

    // r1 tries every way to read r2's commands (MQTT 3.1.1: each refused with 0x80), then
    // subscribes to its own.
    let (spy, mut spy_loop) = client_as("r1-spy", addr, "r1", "pw-r1");
    let attempts = [
        topic::rig(&r2, RigTopic::Cmd),
        topic::all_rigs(RigTopic::Cmd),
        "dtop/v1/rig/#".to_owned(),
        "#".to_owned(),
        format!("$share/g/{}", topic::rig(&r2, RigTopic::Cmd)),
    ];
    for filter in &attempts {
        spy.subscribe(filter.clone(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let code = poll_until(&mut spy_loop, "SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes[0]),
            _ => None,
        })
        .await;
        assert_eq!(code, SubscribeReasonCode::Failure, "{filter}");
    }
    spy.subscribe(topic::rig(&r1, RigTopic::Cmd), QoS::AtLeastOnce)
        .await
        .unwrap();
    let code = poll_until(&mut spy_loop, "SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes[0]),
        _ => None,
    })
    .await;
    assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));

    // The operator commands both rigs.
    let (operator, mut op_loop) = client_as("op-1", addr, "op", "pw-op");
    for (rig, body) in [(&r2, "for r2"), (&r1, "for r1")] {
        operator
            .publish(
                topic::rig(rig, RigTopic::Cmd),
                QoS::AtLeastOnce,
                false,
                body.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        poll_until(&mut op_loop, "PUBACK", |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }

    let mut seen = Vec::new();
    let collect = async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = spy_loop.poll().await {
                seen.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), collect).await;
    assert_eq!(
        seen,
        ["for r1"],
        "r1 must see its own command and nothing of r2's"
    );
    assert_eq!(
        broker.metrics().refusals(Refusal::SubscribeNotAuthorized),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_311_publish_is_acknowledged_and_dropped() {
    let (broker, _dir) = tokio::task::spawn_blocking(|| start_auth_broker(&USERS))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();
    let r2 = RigId::new("r2").unwrap();
    let (watch, mut watch_loop) = client_as("op-watch", addr, "op", "pw-op");
    watch
        .subscribe(topic::rig(&r2, RigTopic::Samples), QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut watch_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    // r1 forges r2's samples, then publishes nothing else; the connection must stay usable.
    let (forger, mut forge_loop) = client_as("r1-forger", addr, "r1", "pw-r1");
    forger
        .publish(
            topic::rig(&r2, RigTopic::Samples),
            QoS::AtLeastOnce,
            false,
            b"forged".to_vec(),
        )
        .await
        .unwrap();
    poll_until(&mut forge_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    forger
        .publish(
            topic::rig(&r2, RigTopic::Samples),
            QoS::ExactlyOnce,
            false,
            b"forged2".to_vec(),
        )
        .await
        .unwrap();
    poll_until(&mut forge_loop, "PUBCOMP", |p| {
        matches!(p, Packet::PubComp(_)).then_some(())
    })
    .await;

    let got = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = watch_loop.poll().await {
                return p;
            }
        }
    })
    .await;
    assert!(
        got.is_err(),
        "a forged sample reached a subscriber: {got:?}"
    );
    assert_eq!(broker.metrics().refusals(Refusal::PublishNotAuthorized), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_connect_whose_will_topic_is_forbidden() {
    let (broker, _dir) = tokio::task::spawn_blocking(|| start_auth_broker(&USERS))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();
    let r2 = RigId::new("r2").unwrap();
    let mut options = rumqttc::MqttOptions::new("r1-will", addr.ip().to_string(), addr.port());
    options.set_credentials("r1", "pw-r1");
    options.set_last_will(rumqttc::LastWill::new(
        topic::rig(&r2, RigTopic::Death),
        b"fake death".to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let error = tokio::time::timeout(WAIT, eventloop.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
        ),
        "{error:?}"
    );
    assert_eq!(broker.metrics().refusals(Refusal::WillNotAuthorized), 1);
}
