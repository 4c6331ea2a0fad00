//! The ACL matrix against dtop-broker: every role × {publish, subscribe} × DTOP topic family,
//! against our own rig and a foreign one, through the real broker with real MQTT 5 clients
//! (rumqttc). Each outcome is asserted exactly, both ways: nothing forbidden is allowed
//! (reason 0x87 in PUBACK/SUBACK, and an admin watching everything sees no forbidden message
//! arrive), and nothing allowed is refused. The users, cases and expectations are
//! `dtop_auth::matrix`'s, written out from the role descriptions, not computed by the ACL
//! engine under test; `dtop-e2e`'s `nats_acl_matrix` holds a NATS cluster to the same ones.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestUser, start_auth_broker, v5_client, v5_collect, v5_poll_until};
use dtop_auth::matrix::{self, Case, PASSWORD, WATCHER};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};

/// The matrix users as [`start_auth_broker`] takes them.
fn users() -> Vec<TestUser<'static>> {
    matrix::USERS
        .iter()
        .map(|u| (u.name, u.role, u.rigs, PASSWORD))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_allowed_publishes_and_subscriptions() {
    let (broker, _dir) = tokio::task::spawn_blocking(move || start_auth_broker(&users()))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();

    // The admin watches everything, to prove forbidden publishes never reach anyone.
    let (watcher, mut watch_loop) = v5_client("watcher", addr, Some((WATCHER, PASSWORD)));
    watcher.subscribe("dtop/#", QoS::AtLeastOnce).await.unwrap();
    let granted = v5_poll_until(&mut watch_loop, "watcher SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let mut mismatches = Vec::new();
    let mut expected_deliveries = Vec::new();
    for user in matrix::USERS {
        let (user, role) = (user.name, user.role);
        let (client, mut eventloop) =
            v5_client(&format!("matrix-{user}"), addr, Some((user, PASSWORD)));
        for Case {
            topic,
            may_subscribe,
            may_publish,
        } in matrix::cases(role)
        {
            client
                .subscribe(topic.clone(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let code = v5_poll_until(&mut eventloop, "SUBACK", |p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes[0]),
                _ => None,
            })
            .await;
            let want_code = if may_subscribe {
                SubscribeReasonCode::Success(QoS::AtLeastOnce)
            } else {
                SubscribeReasonCode::NotAuthorized
            };
            if code != want_code {
                mismatches.push(format!(
                    "{user} subscribe {topic}: got {code:?}, want {want_code:?}"
                ));
            }

            let payload = format!("{user}|{topic}");
            client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    Bytes::from(payload.clone()),
                )
                .await
                .unwrap();
            let reason = v5_poll_until(&mut eventloop, "PUBACK", |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await;
            let want_reason = if may_publish {
                PubAckReason::Success
            } else {
                PubAckReason::NotAuthorized
            };
            if reason != want_reason {
                mismatches.push(format!(
                    "{user} publish {topic}: got {reason:?}, want {want_reason:?}"
                ));
            }
            if may_publish {
                expected_deliveries.push(payload);
            }
        }
        client.disconnect().await.unwrap();
    }
    assert!(
        mismatches.is_empty(),
        "ACL mismatches:\n{}",
        mismatches.join("\n")
    );

    let mut delivered: Vec<String> = v5_collect(&mut watch_loop, Duration::from_millis(500))
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect();
    delivered.sort();
    expected_deliveries.sort();
    assert_eq!(
        delivered, expected_deliveries,
        "the watcher saw exactly the allowed publishes"
    );
    let refused = broker
        .metrics()
        .refusals(dtop_broker::Refusal::PublishNotAuthorized);
    assert!(refused > 0, "publish refusals are counted");
}
