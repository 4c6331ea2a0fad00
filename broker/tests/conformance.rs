//! Standard MQTT behaviour where plain rumqttd 0.20 deviates (issue 4, "Standard MQTT
//! behaviour"), each driven by a standard client: keep-alive 0 is accepted, one port serves
//! 3.1.1 and 5, delivery QoS is min(published, granted), MQTT 5 Session Expiry and No Local
//! are honoured, a connection over the limit gets a refusing CONNACK, and a silent socket is
//! closed after the first-packet timeout. (Oversize payloads: `large_payload.rs`.)

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    WAIT, client, loopback_any, poll_until, start_broker, v5_client, v5_collect, v5_poll_until,
};
use dtop_broker::probe::{MqttVersion, connect_packet, read_connack};
use dtop_broker::{BrokerConfig, LimitsConfig, Refusal};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet as V5Packet};
use rumqttc::{Event, Packet, QoS};

/// Sends `connect` and reports whether the broker answered with an accepting CONNACK
/// (`Some(true)`), a refusing one (`Some(false)`), or closed the socket without one (`None`).
fn handshake(addr: SocketAddr, connect: &[u8]) -> Option<bool> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(connect).unwrap();
    let mut first = [0u8; 1];
    match stream.read(&mut first) {
        Ok(0) => None,
        Ok(_) => Some(read_connack(&mut first.chain(&mut stream)).unwrap()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("no answer within {WAIT:?}: {e}"),
    }
}

#[test]
fn accepts_keep_alive_zero_in_both_versions() {
    let broker = start_broker();
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let mut connect = connect_packet(version);
        // Bytes 10..12 are the keep-alive (fixed header 2 + protocol name 6 + level 1 + flags 1).
        connect[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(
            handshake(broker.mqtt_addr(), &connect),
            Some(true),
            "{version:?}"
        );
    }
}

#[test]
fn one_port_serves_mqtt_311_and_mqtt_5() {
    let broker = start_broker();
    assert_eq!(
        handshake(broker.mqtt_addr(), &connect_packet(MqttVersion::V311)),
        Some(true)
    );
    assert_eq!(
        handshake(broker.mqtt_addr(), &connect_packet(MqttVersion::V5)),
        Some(true)
    );
}

#[test]
fn refuses_an_unsupported_protocol_level_with_a_connack() {
    let broker = start_broker();
    let mut connect = connect_packet(MqttVersion::V311);
    connect[8] = 6; // protocol level byte
    assert_eq!(handshake(broker.mqtt_addr(), &connect), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_at_the_lower_of_published_and_granted_qos() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (high, mut high_loop) = client("granted-2", addr);
    let (low, mut low_loop) = client("granted-0", addr);
    high.subscribe("conf/qos", QoS::ExactlyOnce).await.unwrap();
    poll_until(&mut high_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    low.subscribe("conf/qos", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut low_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let (publisher, pub_loop) = client("qos-pub", addr);
    let pub_task = common::drive(pub_loop);
    let low_task = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..3 {
            let p = poll_until(&mut low_loop, "PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await;
            got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.qos));
        }
        got
    });
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish("conf/qos", qos, false, format!("{qos:?}").into_bytes())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let p = poll_until(&mut high_loop, "PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await;
        seen.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.qos));
    }
    pub_task.abort();
    assert_eq!(
        seen,
        [
            ("AtMostOnce".to_owned(), QoS::AtMostOnce),
            ("AtLeastOnce".to_owned(), QoS::AtLeastOnce),
            ("ExactlyOnce".to_owned(), QoS::ExactlyOnce),
        ]
    );
    let low_seen = low_task.await.unwrap();
    assert!(
        low_seen.iter().all(|(_, qos)| *qos == QoS::AtMostOnce),
        "{low_seen:?}"
    );
}

fn persistent_v5(
    id: &str,
    addr: SocketAddr,
    expiry_s: u32,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(expiry_s));
    rumqttc::v5::AsyncClient::new(options, 16)
}

async fn v5_connack(eventloop: &mut rumqttc::v5::EventLoop) -> bool {
    v5_poll_until(eventloop, "CONNACK", |p| match p {
        V5Packet::ConnAck(ack) => Some(ack.session_present),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_session_expiry_keeps_a_session_only_for_its_interval() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (publisher, mut pub_loop) = v5_client("expiry-pub", addr, None);
    common::v5_poll_until(&mut pub_loop, "CONNACK", |p| {
        matches!(p, V5Packet::ConnAck(_)).then_some(())
    })
    .await;
    let pub_task = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });

    for (id, expiry_s, wait, want_present, want_message) in [
        ("keeps-60s", 60, Duration::ZERO, true, true),
        ("keeps-1s", 1, Duration::from_millis(2500), false, false),
    ] {
        let (sub, mut sub_loop) = persistent_v5(id, addr, expiry_s);
        assert!(
            !v5_connack(&mut sub_loop).await,
            "{id}: a new session is not present"
        );
        sub.subscribe(
            format!("conf/expiry/{id}"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
        v5_poll_until(&mut sub_loop, "SUBACK", |p| {
            matches!(p, V5Packet::SubAck(_)).then_some(())
        })
        .await;
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while sub_loop.poll().await.is_ok() {}
        })
        .await;
        drop(sub_loop);

        publisher
            .publish(
                format!("conf/expiry/{id}"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                Bytes::from_static(b"while away"),
            )
            .await
            .unwrap();
        tokio::time::sleep(wait + Duration::from_millis(200)).await;

        let (_again, mut again_loop) = persistent_v5(id, addr, expiry_s);
        assert_eq!(
            v5_connack(&mut again_loop).await,
            want_present,
            "{id}: session present"
        );
        let got = v5_collect(&mut again_loop, Duration::from_millis(500)).await;
        assert_eq!(
            !got.is_empty(),
            want_message,
            "{id}: queued message delivered: {got:?}"
        );
    }
    pub_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_no_local_suppresses_only_the_clients_own_messages() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (me, mut my_loop) = v5_client("no-local", addr, None);
    let mut filter = Filter::new("conf/nolocal", rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
    filter.nolocal = true;
    me.subscribe_many([filter]).await.unwrap();
    v5_poll_until(&mut my_loop, "SUBACK", |p| {
        matches!(p, V5Packet::SubAck(_)).then_some(())
    })
    .await;
    me.publish(
        "conf/nolocal",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        Bytes::from_static(b"mine"),
    )
    .await
    .unwrap();
    let (other, mut other_loop) = v5_client("someone-else", addr, None);
    other
        .publish(
            "conf/nolocal",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            Bytes::from_static(b"theirs"),
        )
        .await
        .unwrap();
    v5_poll_until(&mut other_loop, "PUBACK", |p| {
        matches!(p, V5Packet::PubAck(_)).then_some(())
    })
    .await;
    let got: Vec<Bytes> = v5_collect(&mut my_loop, Duration::from_millis(500))
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(got, [Bytes::from_static(b"theirs")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_connection_over_the_limit_with_a_refusing_connack() {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        limits: LimitsConfig {
            max_connections: 2,
            ..LimitsConfig::default()
        },
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let addr = broker.mqtt_addr();
    let mut keep = Vec::new();
    for i in 0..2 {
        let (c, mut l) = client(&format!("fits-{i}"), addr);
        poll_until(&mut l, "CONNACK", |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        keep.push((c, common::drive(l)));
    }
    let (_c, mut l) = client("one-too-many", addr);
    let error = tokio::time::timeout(WAIT, l.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::ServiceUnavailable
            )
        ),
        "{error:?}"
    );
    let (_c, mut l) = v5_client("one-too-many-v5", addr, None);
    let error = tokio::time::timeout(WAIT, l.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            rumqttc::v5::ConnectionError::ConnectionRefused(
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::ServerBusy
            )
        ),
        "{error:?}"
    );
    assert_eq!(broker.metrics().refusals(Refusal::ConnectionLimit), 2);
}

#[test]
fn closes_a_connection_that_sends_no_connect_in_time() {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        limits: LimitsConfig {
            connection_timeout_ms: 200,
            ..LimitsConfig::default()
        },
        ..BrokerConfig::default()
    };
    let broker = dtop_broker::spawn(&config).unwrap();
    let mut stream = TcpStream::connect(broker.mqtt_addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = stream.read(&mut byte);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(started.elapsed() < WAIT);
    assert_eq!(broker.metrics().refusals(Refusal::ConnectTimeout), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_a_client_above_its_publish_rate() {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        limits: LimitsConfig {
            max_publish_rate_hz: 20,
            ..LimitsConfig::default()
        },
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let (publisher, mut pub_loop) = client("fast", broker.mqtt_addr());
    let started = Instant::now();
    // A burst of 20 is allowed at once; the other 40 need 2 s at 20 Hz.
    let sender = tokio::spawn(async move {
        for i in 0..60u32 {
            publisher
                .publish(
                    "conf/rate",
                    QoS::AtLeastOnce,
                    false,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .unwrap();
        }
        publisher
    });
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acks < 60 {
            if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                acks += 1;
            }
        }
    })
    .await
    .expect("all 60 publishes acknowledged");
    drop(sender.await.unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_retained_messages_on_every_subscribe() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (publisher, mut pub_loop) = client("retain-pub", addr);
    publisher
        .publish("conf/retained", QoS::AtLeastOnce, true, b"held".to_vec())
        .await
        .unwrap();
    poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;

    // MQTT 3.1.1 §3.8.4: a SUBSCRIBE replacing an existing subscription re-sends retained
    // messages (rumqttd's router sends them only for new subscriptions).
    let (sub, mut sub_loop) = client("retain-sub", addr);
    for round in 0..2 {
        sub.subscribe("conf/retained", QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut suback_seen = false;
        let retained = poll_until(&mut sub_loop, "the retained message", |p| match p {
            Packet::SubAck(_) => {
                suback_seen = true;
                None
            }
            Packet::Publish(p) => Some((suback_seen, p.retain, p.payload.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            retained,
            (true, true, Bytes::from_static(b"held")),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_non_retained_publish_is_delivered_and_keeps_the_retained_message() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let (publisher, mut pub_loop) = client("empty-pub", addr);
    let (live, mut live_loop) = client("empty-live", addr);
    live.subscribe("conf/empty", QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut live_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    for (payload, retain) in [(&b"kept"[..], true), (&b""[..], false)] {
        publisher
            .publish("conf/empty", QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        poll_until(&mut pub_loop, "PUBACK", |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            poll_until(&mut live_loop, "PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p.payload.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(got, [Bytes::from_static(b"kept"), Bytes::new()]);
    let (late, mut late_loop) = client("empty-late", addr);
    late.subscribe("conf/empty", QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = poll_until(&mut late_loop, "the retained message", |p| match p {
        Packet::Publish(p) => Some(p.payload.clone()),
        _ => None,
    })
    .await;
    assert_eq!(retained, Bytes::from_static(b"kept"));
}

/// Publishes `payload` at QoS 1 with an optional Message Expiry Interval and waits for PUBACK.
async fn v5_publish_acked(
    addr: SocketAddr,
    id: &str,
    topic: &str,
    payload: &'static [u8],
    retain: bool,
    expiry_s: Option<u32>,
) {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let (publisher, mut pub_loop) = v5_client(id, addr, None);
    let props = PublishProperties {
        message_expiry_interval: expiry_s,
        ..PublishProperties::default()
    };
    publisher
        .publish_with_properties(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            retain,
            Bytes::from_static(payload),
            props,
        )
        .await
        .unwrap();
    v5_poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, V5Packet::PubAck(_)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_skips_a_publish_above_one_clients_maximum_packet_size_and_delivers_it_to_others() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    let mut small_options = rumqttc::v5::MqttOptions::new("small-max", "127.0.0.1", addr.port());
    // rumqttc refuses (connection error) any incoming packet above this: before the fix the
    // broker sent it anyway.
    small_options.set_max_packet_size(Some(128));
    let (small, mut small_loop) = rumqttc::v5::AsyncClient::new(small_options, 16);
    let (big, mut big_loop) = v5_client("big-max", addr, None);
    for (client, eventloop) in [(&small, &mut small_loop), (&big, &mut big_loop)] {
        client
            .subscribe("conf/maxpacket", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .unwrap();
        v5_poll_until(eventloop, "SUBACK", |p| {
            matches!(p, V5Packet::SubAck(_)).then_some(())
        })
        .await;
    }
    v5_publish_acked(addr, "mp-pub1", "conf/maxpacket", &[b'x'; 200], false, None).await;
    v5_publish_acked(addr, "mp-pub2", "conf/maxpacket", b"small", false, None).await;
    let sizes = |got: Vec<rumqttc::v5::mqttbytes::v5::Publish>| {
        got.into_iter().map(|p| p.payload.len()).collect::<Vec<_>>()
    };
    assert_eq!(
        sizes(v5_collect(&mut small_loop, Duration::from_millis(500)).await),
        [5],
        "the limited client gets only what fits, and stays connected"
    );
    assert_eq!(
        sizes(v5_collect(&mut big_loop, Duration::from_millis(500)).await),
        [200, 5]
    );
    assert_eq!(broker.metrics().too_large_for_client_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_an_expired_retained_message_is_not_sent_and_a_live_one_carries_its_remaining_interval()
 {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let addr = broker.mqtt_addr();
    v5_publish_acked(
        addr,
        "ex-pub1",
        "conf/expiry/short",
        b"short",
        true,
        Some(1),
    )
    .await;
    v5_publish_acked(addr, "ex-pub2", "conf/expiry/long", b"long", true, Some(60)).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (sub, mut sub_loop) = v5_client("ex-sub", addr, None);
    sub.subscribe("conf/expiry/+", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    let got: Vec<(Bytes, Option<u32>)> = v5_collect(&mut sub_loop, Duration::from_millis(700))
        .await
        .into_iter()
        .map(|p| {
            (
                p.payload,
                p.properties.and_then(|props| props.message_expiry_interval),
            )
        })
        .collect();
    assert_eq!(got.len(), 1, "only the unexpired retained message: {got:?}");
    assert_eq!(got[0].0, Bytes::from_static(b"long"));
    let left_s = got[0].1.expect("the interval is forwarded");
    assert!(
        (55..=58).contains(&left_s),
        "60 s less the ~2 s it waited: {left_s}"
    );
    assert_eq!(broker.metrics().expired_count(), 1);
}
