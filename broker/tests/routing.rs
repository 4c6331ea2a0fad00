//! Routing behaviour DTOP relies on: publishers may publish before anyone subscribes (edges
//! start before twins) without being disconnected, and messages are routed whichever front
//! runtime (`runtime.front_threads`) serves the connections.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{client, loopback_any, poll_until, start_broker};
use dtop_broker::{BrokerConfig, RuntimeConfig};
use rumqttc::{Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_a_publisher_connected_after_it_publishes_to_a_topic_nobody_subscribed_to() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let watched = "dtop/test/routing/watched";

    let (subscriber, mut sub_loop) = client("routing-sub", addr);
    subscriber
        .subscribe(watched, QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut sub_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    // rumqttd disconnects a publisher whose publish it cannot route (NoMatchingFilters) unless
    // it creates a log on the fly; either way the second publish would then never be acked.
    let (publisher, mut pub_loop) = client("routing-pub", addr);
    publisher
        .publish(
            "dtop/test/routing/unwatched",
            QoS::AtLeastOnce,
            false,
            b"first".to_vec(),
        )
        .await
        .unwrap();
    publisher
        .publish(watched, QoS::AtLeastOnce, false, b"second".to_vec())
        .await
        .unwrap();
    let mut acks = 0;
    poll_until(&mut pub_loop, "two PUBACKs", |p| {
        if matches!(p, Packet::PubAck(_)) {
            acks += 1;
        }
        (acks == 2).then_some(())
    })
    .await;

    let received = poll_until(&mut sub_loop, "PUBLISH", |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&received.payload[..], b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_qos1_in_order_through_a_front_of_several_threads() {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        runtime: RuntimeConfig { front_threads: 3 },
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .expect("broker starts with three front threads");
    let addr = broker.mqtt_addr();
    let topic = "dtop/test/routing/threads";

    let (subscriber, mut sub_loop) = client("threads-sub", addr);
    subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut sub_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let (publisher, pub_loop) = client("threads-pub", addr);
    let driver = common::drive(pub_loop);
    for i in 0..10u8 {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    poll_until(&mut sub_loop, "ten PUBLISHes", |p| {
        if let Packet::Publish(publish) = p {
            received.push(publish.payload[0]);
        }
        (received.len() == 10).then_some(())
    })
    .await;
    driver.abort();
    assert_eq!(received, (0..10).collect::<Vec<u8>>());
}
