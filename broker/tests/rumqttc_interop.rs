//! rumqttc (3.1.1 and 5) through the front for what `conformance.rs` does not cover: wills on
//! an abrupt close, MQTT 5 Will Delay cancelled by a resumed session, shared subscriptions, and
//! session takeover by a second connection with the same client id.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{WAIT, client, poll_until, start_broker, v5_client, v5_collect, v5_poll_until};
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties, Packet as V5};
use rumqttc::{Event, Packet, QoS};

async fn subscribed(id: &str, addr: std::net::SocketAddr, filter: &str) -> rumqttc::EventLoop {
    let (c, mut l) = client(id, addr);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut l, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    // The client handle may go: the event loop keeps the connection.
    std::mem::forget(c);
    l
}

async fn payloads(l: &mut rumqttc::EventLoop, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    // Bounded: each wait ends after `quiet` without a packet.
    for _ in 0..1000 {
        match tokio::time::timeout(quiet, l.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push(String::from_utf8(p.payload.to_vec()).unwrap())
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber failed: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_the_will_of_a_client_that_vanishes_but_not_of_one_that_disconnects() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let mut watcher = subscribed("will-watch", addr, "rumqttc/will/+").await;
    for (id, graceful) in [("vanishes", false), ("leaves", true)] {
        let mut options = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_last_will(rumqttc::LastWill::new(
            format!("rumqttc/will/{id}"),
            id,
            QoS::AtLeastOnce,
            false,
        ));
        let (c, mut l) = rumqttc::AsyncClient::new(options, 4);
        poll_until(&mut l, "CONNACK", |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        if graceful {
            c.disconnect().await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while l.poll().await.is_ok() {}
            })
            .await;
        }
        // Dropping the event loop closes the socket without DISCONNECT.
        drop(l);
    }
    assert_eq!(
        payloads(&mut watcher, Duration::from_millis(500)).await,
        ["vanishes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_will_delay_is_cancelled_when_the_session_resumes_in_time() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (watch, mut watch_loop) = v5_client("delay-watch", addr, None);
    watch
        .subscribe(
            "rumqttc/delayed/+",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    v5_poll_until(&mut watch_loop, "SUBACK", |p| {
        matches!(p, V5::SubAck(_)).then_some(())
    })
    .await;

    let connect = |id: &str| {
        let mut options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(60));
        let props = LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        options.set_last_will(LastWill::new(
            format!("rumqttc/delayed/{id}"),
            Bytes::from(id.to_owned()),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            Some(props),
        ));
        rumqttc::v5::AsyncClient::new(options, 4)
    };
    let mut returned = None;
    for (id, comes_back) in [("returns", true), ("gone", false)] {
        let (_c, mut l) = connect(id);
        v5_poll_until(&mut l, "CONNACK", |p| {
            matches!(p, V5::ConnAck(_)).then_some(())
        })
        .await;
        drop(l); // vanish
        if comes_back {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (c2, mut l2) = connect(id);
            v5_poll_until(&mut l2, "CONNACK", |p| {
                matches!(p, V5::ConnAck(_)).then_some(())
            })
            .await;
            // Stays connected (and so silent) until the end of the test.
            returned = Some((
                c2,
                tokio::spawn(async move { while l2.poll().await.is_ok() {} }),
            ));
        }
    }
    let got: Vec<Bytes> = v5_collect(&mut watch_loop, Duration::from_millis(1500))
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        got,
        [Bytes::from_static(b"gone")],
        "only the client that did not return left a will"
    );
    if let Some((client, driver)) = returned {
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(WAIT, driver).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscribers_each_get_a_share_and_together_get_everything() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let mut a = subscribed("share-a", addr, "$share/g/rumqttc/shared").await;
    let mut b = subscribed("share-b", addr, "$share/g/rumqttc/shared").await;
    // A plain subscriber on the same filter gets every message.
    let mut all = subscribed("share-all", addr, "rumqttc/shared").await;
    let (publisher, mut pub_loop) = client("share-pub", addr);
    for i in 0..20 {
        publisher
            .publish(
                "rumqttc/shared",
                QoS::AtLeastOnce,
                false,
                format!("m{i:02}").into_bytes(),
            )
            .await
            .unwrap();
        poll_until(&mut pub_loop, "PUBACK", |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    let (got_a, got_b, got_all) = tokio::join!(
        payloads(&mut a, Duration::from_millis(500)),
        payloads(&mut b, Duration::from_millis(500)),
        payloads(&mut all, Duration::from_millis(500)),
    );
    let want: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    let mut shared: Vec<String> = got_a.iter().chain(&got_b).cloned().collect();
    shared.sort();
    assert_eq!(
        shared, want,
        "each message reaches exactly one group member"
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{} / {}",
        got_a.len(),
        got_b.len()
    );
    assert_eq!(got_all, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let mut options = rumqttc::MqttOptions::new("twin-1", addr.ip().to_string(), addr.port());
    options.set_clean_session(false);
    let (first, mut first_loop) = rumqttc::AsyncClient::new(options.clone(), 4);
    first
        .subscribe("rumqttc/takeover", QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut first_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let (_second, mut second_loop) = rumqttc::AsyncClient::new(options, 4);
    let present = poll_until(&mut second_loop, "CONNACK", |p| match p {
        Packet::ConnAck(ack) => Some(ack.session_present),
        _ => None,
    })
    .await;
    assert!(
        present,
        "the session (and its subscription) moved to the new connection"
    );
    let first_end = tokio::time::timeout(WAIT, async {
        loop {
            if first_loop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(first_end.is_ok(), "the first connection was closed");

    let (publisher, mut pub_loop) = client("takeover-pub", addr);
    publisher
        .publish(
            "rumqttc/takeover",
            QoS::AtLeastOnce,
            false,
            b"to the new one".to_vec(),
        )
        .await
        .unwrap();
    poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    assert_eq!(
        payloads(&mut second_loop, Duration::from_millis(500)).await,
        ["to the new one"]
    );
}
