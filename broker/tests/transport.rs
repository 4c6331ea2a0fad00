//! Transports and observability with real peers: TLS with client certificates made by rcgen
//! (a valid one names the user; an expired one and one from a foreign CA are refused), MQTT over
//! WebSocket with the `mqtt` subprotocol, and the Prometheus endpoint over HTTP.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::{WAIT, client, loopback_any, poll_until, write_credentials};
use dtop_broker::probe::{MqttVersion, connect_packet};
use dtop_broker::{
    AuthConfig, BrokerConfig, ListenerConfig, MetricsConfig, RolesConfig, TlsConfig,
};
use futures::{SinkExt as _, StreamExt as _};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rumqttc::{Packet, QoS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf certificate signed by `ca`: `(cert PEM, key PEM)`.
fn leaf(ca: &Ca, cn: &str, sans: &[&str], expired: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    (
        params.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn client_config(server_ca: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects over TLS, sends an MQTT 3.1.1 CONNECT without credentials and returns the CONNACK
/// return code, or `None` when the handshake or connection failed.
async fn tls_connack(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Option<(u8, tokio_rustls::client::TlsStream<tokio::net::TcpStream>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .ok()?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    tls.write_all(&connect_packet(MqttVersion::V311))
        .await
        .ok()?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut connack))
        .await
        .unwrap()
        .ok()?;
    assert_eq!(connack[0], 0x20, "CONNACK");
    Some((connack[3], tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_user_and_refuses_expired_and_foreign_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("dtop test CA");
    let foreign = ca("someone else's CA");
    let (server_cert, server_key) = leaf(&ours, "broker", &["localhost"], false);
    let credentials_file = dir.path().join("passwd");
    dtop_broker::credentials::add_user(
        &credentials_file,
        "r1",
        dtop_broker::Role::Rig,
        dtop_broker::credentials::RigSpec::Default,
        None,
    )
    .unwrap();
    let config = BrokerConfig {
        mqtt: loopback_any(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_file: write(dir.path(), "server.crt", &server_cert),
            key_file: write(dir.path(), "server.key", &server_key),
            client_ca_file: Some(write(dir.path(), "ca.crt", &ours.pem)),
        }),
        auth: Some(AuthConfig {
            credentials_file,
            roles: RolesConfig::default(),
        }),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let addr = broker.tls_addr().unwrap();

    let (cert, key) = leaf(&ours, "r1", &[], false);
    let (code, mut tls) = tls_connack(addr, client_config(&ours.pem, Some((&cert, &key))))
        .await
        .expect("a valid client certificate connects");
    assert_eq!(
        code, 0,
        "the certificate's CN r1 is a known user: accepted without a password"
    );
    // The identity drives the ACL: r1 may read its own cmd (granted QoS 1), not r2's (0x80).
    for (topic, want) in [("dtop/v1/rig/r1/cmd", 0x01), ("dtop/v1/rig/r2/cmd", 0x80)] {
        let mut subscribe = vec![
            0x82,
            (2 + 2 + topic.len() + 1) as u8,
            0x00,
            0x07,
            0x00,
            topic.len() as u8,
        ];
        subscribe.extend_from_slice(topic.as_bytes());
        subscribe.push(1);
        tls.write_all(&subscribe).await.unwrap();
        let mut suback = [0u8; 5];
        tokio::time::timeout(WAIT, tls.read_exact(&mut suback))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(suback, [0x90, 3, 0x00, 0x07, want], "{topic}");
    }

    let (cert, key) = leaf(&ours, "stranger", &[], false);
    let refused = tls_connack(addr, client_config(&ours.pem, Some((&cert, &key)))).await;
    assert_eq!(
        refused.map(|(code, _)| code),
        Some(0x04),
        "a valid cert naming no user"
    );

    let (cert, key) = leaf(&ours, "r1", &[], true);
    assert!(
        tls_connack(addr, client_config(&ours.pem, Some((&cert, &key))))
            .await
            .is_none(),
        "expired"
    );
    let (cert, key) = leaf(&foreign, "r1", &[], false);
    assert!(
        tls_connack(addr, client_config(&ours.pem, Some((&cert, &key))))
            .await
            .is_none(),
        "foreign CA"
    );
    assert!(
        tls_connack(addr, client_config(&ours.pem, None))
            .await
            .is_none(),
        "no certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_speak_mqtt_with_the_mqtt_subprotocol() {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        websocket: Some(ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        }),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let url = format!("ws://{}/mqtt", broker.websocket_addr().unwrap());
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );

    let next_binary = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WsMessage::Binary(bytes) => return bytes.to_vec(),
            _ => continue,
        }
    };
    ws.send(WsMessage::binary(connect_packet(MqttVersion::V5)))
        .await
        .unwrap();
    let connack = next_binary(&mut ws).await;
    assert_eq!(
        (connack[0], connack[3]),
        (0x20, 0x00),
        "MQTT 5 CONNACK accepted: {connack:?}"
    );
    let topic = b"dtop/v1/twin/r1/state";
    let mut subscribe = vec![
        0x82,
        (2 + 1 + 2 + topic.len() + 1) as u8,
        0x00,
        0x01,
        0x00,
        0x00,
        topic.len() as u8,
    ];
    subscribe.extend_from_slice(topic);
    subscribe.push(0);
    ws.send(WsMessage::binary(subscribe)).await.unwrap();
    assert_eq!(next_binary(&mut ws).await[0], 0x90, "SUBACK");

    let (publisher, mut pub_loop) = client("ws-feeder", broker.mqtt_addr());
    publisher
        .publish(
            "dtop/v1/twin/r1/state",
            QoS::AtLeastOnce,
            false,
            b"state".to_vec(),
        )
        .await
        .unwrap();
    poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let publish = next_binary(&mut ws).await;
    assert_eq!(publish[0] & 0xf0, 0x30, "PUBLISH over the WebSocket");
    assert!(publish.ends_with(b"state"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_prometheus_metrics_with_connections_messages_refusals_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let credentials_file = write_credentials(
        dir.path(),
        &[("dash", dtop_broker::Role::Dashboard, "*", "pw")],
    );
    let config = BrokerConfig {
        mqtt: loopback_any(),
        metrics: Some(MetricsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        }),
        auth: Some(AuthConfig {
            credentials_file,
            roles: RolesConfig::default(),
        }),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    let (dash, mut dash_loop) = common::client_as("dash-1", broker.mqtt_addr(), "dash", "pw");
    dash.subscribe("dtop/v1/rig/r1/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut dash_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let url = format!("http://{}/metrics", broker.metrics_addr().unwrap());
    let response = tokio::time::timeout(WAIT, reqwest::get(&url))
        .await
        .unwrap()
        .unwrap();
    assert!(response.status().is_success());
    let body = response.text().await.unwrap();
    for line in [
        "dtop_broker_connections 1",
        "dtop_broker_refusals_total{reason=\"subscribe_not_authorized\"} 1",
        "dtop_broker_queue_depth{client_id=\"dash-1\"} 0",
        "# TYPE dtop_broker_messages_in_total counter",
        "# TYPE dtop_broker_messages_out_total counter",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
}
