//! The ACL matrix: every role × {publish, subscribe} × DTOP topic family, against our own rig
//! and a foreign one, through the real broker with real MQTT 5 clients (rumqttc). Each outcome
//! is asserted exactly, both ways: nothing forbidden is allowed (reason 0x87 in PUBACK/SUBACK,
//! and an admin watching everything sees no forbidden message arrive), and nothing allowed is
//! refused. The expectations are written out from the role descriptions in issue 4, not
//! computed by the ACL engine under test.
//!
//! The same users, cases and expectations run against a three-node NATS cluster (issue 16)
//! through its MQTT 3.1.1 gateway, with the users and permissions `dtop_auth::nats` generates
//! from the same credentials file and rules. NATS differs in how a refusal shows: a refused
//! SUBSCRIBE gets 0x80 in its SUBACK, but a refused QoS 1 PUBLISH is still acknowledged (MQTT
//! 3.1.1's PUBACK has no reason code) and silently dropped, and the connection stays open. So
//! there a publish is judged by its real effect only: the admin watching everything from
//! another node sees exactly the allowed publishes.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    TestUser, client_as, poll_until, start_auth_broker, v5_client, v5_collect, v5_poll_until,
    write_credentials,
};
use dtop_broker::Role;
use dtop_proto::ids::RigId;
use dtop_proto::topic::{self, RigTopic, SimTopic, Topic, TwinTopic};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};

const PASSWORD: &str = "correct horse";

/// One topic family on a given rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rig(RigTopic),
    Twin(TwinTopic),
    Sim(SimTopic),
    /// `dtop/v1/studies/{id}/state`, published by the API server (issue 12); not rig-scoped.
    Studies,
}

const FAMILIES: [Family; 17] = [
    Family::Rig(RigTopic::Birth),
    Family::Rig(RigTopic::Death),
    Family::Rig(RigTopic::Samples),
    Family::Rig(RigTopic::Status),
    Family::Rig(RigTopic::Cmd),
    Family::Rig(RigTopic::CmdAck),
    Family::Rig(RigTopic::Drive),
    Family::Rig(RigTopic::Persisted),
    Family::Rig(RigTopic::Controller),
    Family::Rig(RigTopic::Loss),
    Family::Twin(TwinTopic::State),
    Family::Twin(TwinTopic::StateJson),
    Family::Twin(TwinTopic::Status),
    Family::Twin(TwinTopic::Cbc),
    Family::Sim(SimTopic::Request),
    Family::Sim(SimTopic::Result),
    Family::Studies,
];

fn topic_of(family: Family, rig: &RigId) -> String {
    match family {
        Family::Rig(kind) => topic::rig(rig, kind),
        Family::Twin(kind) => topic::twin(rig, kind),
        Family::Sim(kind) => Topic::Sim(rig.clone(), kind).to_string(),
        Family::Studies => format!("dtop/v1/studies/st-{rig}/state"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Publish,
    Subscribe,
}

/// The role semantics of issue 4, written out. `own` is whether the topic is on a rig the
/// user is scoped to (its own rig for `rig`, an allowed rig for `operator`).
fn expected(role: Role, op: Op, family: Family, own: bool) -> bool {
    use Family::{Rig, Sim, Studies, Twin};
    use RigTopic as R;
    match (role, op) {
        (Role::Admin, _) => true,
        // A rig publishes only its own rig topics (its telemetry, command acks and loss
        // declarations) and receives only its own cmd, drive, persisted and controller.
        (Role::Rig, Op::Publish) => {
            own && matches!(
                family,
                Rig(R::Birth | R::Death | R::Samples | R::Status | R::CmdAck | R::Loss)
            )
        }
        (Role::Rig, Op::Subscribe) => {
            own && matches!(
                family,
                Rig(R::Cmd | R::Drive | R::Persisted | R::Controller)
            )
        }
        // The twin reads all rig topics and simulation requests; writes drive, persisted,
        // controller params, command acks, twin topics and simulation results.
        (Role::Twin, Op::Publish) => matches!(
            family,
            Rig(R::Drive | R::Persisted | R::Controller | R::CmdAck)
                | Twin(_)
                | Sim(SimTopic::Result)
        ),
        (Role::Twin, Op::Subscribe) => matches!(family, Rig(_) | Sim(SimTopic::Request)),
        // An operator writes cmd for its rigs and reads everything on them.
        (Role::Operator, Op::Publish) => own && family == Rig(R::Cmd),
        // Operators also read every study (issue 12).
        (Role::Operator, Op::Subscribe) => {
            (own && matches!(family, Rig(_) | Twin(_))) || family == Studies
        }
        // A dashboard, and a researcher (issue 12), read twin, telemetry and study topics and
        // write nothing: no rig command, no drive.
        (Role::Dashboard | Role::Researcher, Op::Publish) => false,
        (Role::Dashboard | Role::Researcher, Op::Subscribe) => matches!(
            family,
            Twin(_) | Rig(R::Birth | R::Death | R::Samples | R::Status) | Studies
        ),
        // The API and web server's MQTT user publishes study topics, and rig commands on behalf
        // of web users it has checked against their own rules (issue 13); it reads what the
        // live pages show: rig telemetry, command acks, the twin's state and status, and its
        // live CBC runs (issue 15).
        (Role::Server, Op::Publish) => family == Studies || family == Rig(R::Cmd),
        (Role::Server, Op::Subscribe) => matches!(
            family,
            Rig(R::Birth | R::Death | R::Samples | R::Status | R::CmdAck)
                | Twin(TwinTopic::State | TwinTopic::Status | TwinTopic::Cbc)
        ),
    }
}

/// One user per role; `op` is scoped to `r1`, the rig `r1` to itself.
const USERS: [TestUser<'static>; 7] = [
    ("r1", Role::Rig, "-", PASSWORD),
    ("twin", Role::Twin, "*", PASSWORD),
    ("op", Role::Operator, "r1", PASSWORD),
    ("dash", Role::Dashboard, "*", PASSWORD),
    ("ada", Role::Researcher, "*", PASSWORD),
    ("api", Role::Server, "-", PASSWORD),
    ("root", Role::Admin, "*", PASSWORD),
];

/// One cell pair of the matrix: a topic and whether the role may subscribe and publish there.
#[derive(Debug, Clone)]
struct Case {
    topic: String,
    may_subscribe: bool,
    may_publish: bool,
}

/// Every topic family on the user's own rig `r1` and on the foreign rig `r2`, with `role`'s
/// expectations: the matrix both brokers are held to.
fn cases(role: Role) -> Vec<Case> {
    let own = RigId::new("r1").unwrap();
    let foreign = RigId::new("r2").unwrap();
    let mut cases = Vec::new();
    for (rig, is_own) in [(&own, true), (&foreign, false)] {
        for family in FAMILIES {
            // Sim topics are not rig-scoped; count them as "own" for every scope.
            let own_scope = is_own || matches!(family, Family::Sim(_));
            cases.push(Case {
                topic: topic_of(family, rig),
                may_subscribe: expected(role, Op::Subscribe, family, own_scope),
                may_publish: expected(role, Op::Publish, family, own_scope),
            });
        }
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_allowed_publishes_and_subscriptions() {
    let (broker, _dir) = tokio::task::spawn_blocking(move || start_auth_broker(&USERS))
        .await
        .unwrap();
    let addr = broker.mqtt_addr();

    // The admin watches everything, to prove forbidden publishes never reach anyone.
    let (watcher, mut watch_loop) = v5_client("watcher", addr, Some(("root", PASSWORD)));
    watcher.subscribe("dtop/#", QoS::AtLeastOnce).await.unwrap();
    let granted = v5_poll_until(&mut watch_loop, "watcher SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let mut mismatches = Vec::new();
    let mut expected_deliveries = Vec::new();
    for (user, role, _, _) in USERS {
        let (client, mut eventloop) =
            v5_client(&format!("matrix-{user}"), addr, Some((user, PASSWORD)));
        for Case {
            topic,
            may_subscribe,
            may_publish,
        } in cases(role)
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

/// An MQTT 3.1.1 client of the NATS gateway. Its CONNECT may wait longer than a broker's: the
/// cluster's first MQTT CONNECT creates the gateway's JetStream streams, three replicas each.
fn nats_client(
    id: &str,
    addr: std::net::SocketAddr,
    user: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = client_as(id, addr, user, PASSWORD);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(common::WAIT.as_secs());
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// A rumqttc MQTT 3.1.1 event loop's next incoming packet, publishes set aside in `seen`.
async fn next_ack(
    eventloop: &mut rumqttc::EventLoop,
    what: &str,
    seen: &mut Vec<String>,
    mut pick: impl FnMut(&rumqttc::Packet) -> bool,
) {
    poll_until(eventloop, what, |p| match p {
        rumqttc::Packet::Publish(publish) => {
            seen.push(String::from_utf8_lossy(&publish.payload).into_owned());
            None
        }
        other => pick(other).then_some(()),
    })
    .await;
}

/// Adds MQTT 3.1.1 PUBLISH payloads to `got` until every payload `want`s has arrived (or
/// [`common::WAIT`] has passed), then until `quiet` passes without one, so that anything
/// unexpected that follows is caught too. Waits on deliveries, not on a fixed sleep: on a
/// loaded machine a cluster's QoS 1 delivery can take longer than any fixed window.
async fn collect_v4(
    eventloop: &mut rumqttc::EventLoop,
    got: &mut Vec<String>,
    want: &[String],
    quiet: Duration,
) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    // Bounded: at most 10 000 events, each wait at most `quiet` once `want` is complete.
    for _ in 0..10_000 {
        let complete = want.iter().all(|w| got.contains(w));
        let wait = if complete {
            quiet
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection error while collecting: {e}"),
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_matrix_holds_on_a_nats_cluster_with_permissions_generated_from_the_credentials() {
    let Some(nats_server) = dtop_e2e::nats::server_binary().unwrap() else {
        return;
    };
    let _heavy = common::HEAVY.lock().await;
    // The users as `dtop-broker passwd add` writes them (argon2id and bcrypt), and the NATS
    // block generated from that file and DTOP's built-in rules, as `dtop nats-config` does.
    let (cluster, _dir) = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let credentials = write_credentials(dir.path(), &USERS);
        let credentials = dtop_auth::Credentials::load(&credentials).unwrap();
        let generated =
            dtop_auth::nats::authorization(&credentials, &dtop_broker::RolesConfig::default())
                .unwrap();
        let block = dir.path().join("users.conf");
        std::fs::write(&block, generated.render()).unwrap();
        let cluster = dtop_e2e::nats::NatsCluster::start(&nats_server, Some(&block)).unwrap();
        (cluster, dir)
    })
    .await
    .unwrap();

    // The admin watches everything from node 2 while every user works on node 1, so each
    // allowed publish also crosses the cluster's routes.
    let (watcher, mut watch_loop) = nats_client("nats-watcher", cluster.mqtt_addr(1), "root");
    watcher
        .subscribe("dtop/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let granted = poll_until(&mut watch_loop, "watcher SUBACK", |p| match p {
        rumqttc::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        granted,
        [rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )],
        "logs:\n{}",
        cluster.logs()
    );

    // The users work concurrently (NATS's JetStream round trips, not CPU, bound each one); a
    // user's own publishes are told apart from others' by the `user|` payload prefix.
    let node1 = cluster.mqtt_addr(0);
    let runs: Vec<_> = USERS
        .into_iter()
        .map(|(user, role, _, _)| tokio::spawn(nats_user_run(user, role, node1)))
        .collect();
    let mut mismatches = Vec::new();
    let mut expected_deliveries = Vec::new();
    for run in runs {
        let run = run.await.unwrap();
        mismatches.extend(run.mismatches);
        expected_deliveries.extend(run.published);
        assert_eq!(
            run.echoed,
            run.want_echo,
            "{} received through its own QoS 1 subscriptions exactly what it may both \
             publish and read; NATS warnings:\n{}",
            run.user,
            cluster.warnings()
        );
    }
    assert!(
        mismatches.is_empty(),
        "ACL mismatches on NATS:\n{}\nNATS warnings:\n{}",
        mismatches.join("\n"),
        cluster.warnings()
    );

    expected_deliveries.sort();
    let mut delivered = Vec::new();
    collect_v4(
        &mut watch_loop,
        &mut delivered,
        &expected_deliveries,
        Duration::from_millis(300),
    )
    .await;
    delivered.sort();
    assert_eq!(
        delivered, expected_deliveries,
        "the watcher on another node saw exactly the allowed publishes"
    );
    drop(cluster);
}

/// What one user's pass through the matrix on NATS found.
#[derive(Debug)]
struct NatsUserRun {
    user: &'static str,
    /// Subscribe outcomes that differ from the expectation.
    mismatches: Vec<String>,
    /// Payloads of the publishes the user may make (the watcher must see exactly these).
    published: Vec<String>,
    /// The user's own payloads its subscriptions delivered back, sorted.
    echoed: Vec<String>,
    /// Its own payloads on topics it may both publish and read, sorted.
    want_echo: Vec<String>,
}

/// One user's row of the matrix through the NATS MQTT gateway at `addr`: subscribe and publish
/// on every case, in order, one at a time.
async fn nats_user_run(user: &'static str, role: Role, addr: std::net::SocketAddr) -> NatsUserRun {
    let (client, mut eventloop) = nats_client(&format!("nats-matrix-{user}"), addr, user);
    let mut seen = Vec::new();
    let mut run = NatsUserRun {
        user,
        mismatches: Vec::new(),
        published: Vec::new(),
        echoed: Vec::new(),
        want_echo: Vec::new(),
    };
    for Case {
        topic,
        may_subscribe,
        may_publish,
    } in cases(role)
    {
        client
            .subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut code = None;
        next_ack(&mut eventloop, "SUBACK", &mut seen, |p| match p {
            rumqttc::Packet::SubAck(ack) => {
                code = Some(ack.return_codes[0]);
                true
            }
            _ => false,
        })
        .await;
        let want_code = if may_subscribe {
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
        } else {
            rumqttc::SubscribeReasonCode::Failure
        };
        if code != Some(want_code) {
            run.mismatches.push(format!(
                "{user} subscribe {topic}: got {code:?}, want {want_code:?}"
            ));
        }

        let payload = format!("{user}|{topic}");
        client
            .publish(
                topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                false,
                Bytes::from(payload.clone()),
            )
            .await
            .unwrap();
        // Acknowledged whether or not it was allowed (see the header).
        next_ack(&mut eventloop, "PUBACK", &mut seen, |p| {
            matches!(p, rumqttc::Packet::PubAck(_))
        })
        .await;
        if may_publish {
            run.published.push(payload.clone());
            if may_subscribe {
                run.want_echo.push(payload);
            }
        }
    }
    collect_v4(
        &mut eventloop,
        &mut seen,
        &run.want_echo,
        Duration::from_millis(200),
    )
    .await;
    client.disconnect().await.unwrap();
    let own = format!("{user}|");
    run.echoed = seen.into_iter().filter(|p| p.starts_with(&own)).collect();
    run.echoed.sort();
    run.want_echo.sort();
    run
}
