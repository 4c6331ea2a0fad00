//! Proves the broker's limits are sized for DTOP sample blocks: a 200 KiB QoS 1 publish crosses
//! the real broker intact, and a packet above the configured limit is refused.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, poll_until, start_broker};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use rumqttc::{Packet, QoS, SubscribeReasonCode};

/// Deterministic, non-repeating-at-small-period bytes, so a dropped or shifted chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_200_kib_qos1_payload_intact() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let topic = "dtop/test/large-payload";

    let (subscriber, mut sub_loop) = client("large-sub", broker.mqtt_addr());
    subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let granted = poll_until(&mut sub_loop, "SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let payload = pattern(200 * 1024);
    let (publisher, mut pub_loop) = client("large-pub", broker.mqtt_addr());
    publisher
        .publish(topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;

    let received = poll_until(&mut sub_loop, "PUBLISH", |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(received.topic, topic);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(received.payload.len(), payload.len());
    let first_difference = received
        .payload
        .iter()
        .zip(&payload)
        .position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "payload corrupted in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_a_client_that_exceeds_the_packet_limit() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();

    let mut options = rumqttc::MqttOptions::new(
        "oversize-pub",
        broker.mqtt_addr().ip().to_string(),
        broker.mqtt_addr().port(),
    );
    // Let the client send what the broker must refuse.
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, 2 * MAX_MQTT_PACKET_BYTES);
    let (publisher, mut pub_loop) = rumqttc::AsyncClient::new(options, 4);
    publisher
        .publish(
            "dtop/test/oversize",
            QoS::AtLeastOnce,
            false,
            vec![0u8; MAX_MQTT_PACKET_BYTES + 1],
        )
        .await
        .unwrap();

    let outcome = tokio::time::timeout(common::WAIT, async {
        loop {
            match pub_loop.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the broker neither acked nor dropped the oversize publish");
    assert!(
        outcome.is_err(),
        "the broker acknowledged a packet above max_payload_bytes"
    );
}
