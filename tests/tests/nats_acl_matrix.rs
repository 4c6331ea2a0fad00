//! The ACL matrix on a three-node NATS cluster (issue 16): `dtop_auth::matrix`'s users, cases
//! and expectations, the ones `dtop-broker`'s own ACL matrix test holds it to, here through
//! NATS's MQTT 3.1.1 gateway with the users and permissions `dtop_auth::nats` generates from
//! the same credentials file and DTOP's built-in rules (as `dtop nats-config` does).
//!
//! NATS differs in how a refusal shows: a refused SUBSCRIBE gets 0x80 in its SUBACK, but a
//! refused QoS 1 PUBLISH is still acknowledged (MQTT 3.1.1's PUBACK has no reason code) and
//! silently dropped, and the connection stays open. So here a publish is judged by its real
//! effect only: the admin watching everything from another node sees exactly the allowed
//! publishes, and each user's own QoS 1 subscriptions deliver back exactly its own payloads on
//! topics it may both publish and read.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dtop_auth::matrix::{self, Case, PASSWORD, WATCHER};
use dtop_auth::{Credentials, RigSpec, Role, RolesConfig, Secret};
use dtop_e2e::WithLogs;
use dtop_e2e::nats::{self, NatsCluster, SINGLE_SHOT_JS_API_TIMEOUT};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

/// Upper bound on each wait for an acknowledgement or a delivery, generous for a loaded
/// machine (QoS 1 on the cluster goes through JetStream, three replicas).
const WAIT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client of the gateway at `addr` as `user`. Its CONNECT may wait longer than a
/// broker's: the cluster's first MQTT CONNECT creates the gateway's JetStream streams.
fn client(id: &str, addr: SocketAddr, user: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_credentials(user, PASSWORD);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(WAIT.as_secs());
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// The next incoming packet `pick` accepts, within [`WAIT`]; PUBLISH payloads that arrive
/// meanwhile go to `seen`.
async fn next_packet<T>(
    eventloop: &mut EventLoop,
    what: &str,
    seen: &mut Vec<String>,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> Result<T> {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    seen.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = pick(&packet) {
                        return Ok(found);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => bail!("connection error while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .with_context(|| format!("timed out after {WAIT:?} waiting for {what}"))?
}

/// Adds PUBLISH payloads to `got` until every payload `want`s has arrived (or [`WAIT`] has
/// passed), then until `quiet` passes without one, so anything unexpected that follows is
/// caught too. Waits on deliveries, not a fixed sleep: a cluster's QoS 1 delivery can take
/// longer than any fixed window on a loaded machine.
async fn collect(
    eventloop: &mut EventLoop,
    got: &mut Vec<String>,
    want: &[String],
    quiet: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    // Bounded: at most 10 000 events, each wait at most `quiet` once `want` is complete.
    for _ in 0..10_000 {
        let complete = want.iter().all(|w| got.contains(w));
        let wait = if complete {
            quiet
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("connection error while collecting: {e}"),
            Err(_) => break,
        }
    }
    Ok(())
}

/// What one user's pass through the matrix found.
#[derive(Debug)]
struct UserRun {
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

/// One user's row of the matrix through the gateway at `addr`: subscribe and publish on every
/// case, in order, one at a time.
async fn user_run(user: &'static str, role: Role, addr: SocketAddr) -> Result<UserRun> {
    let (client, mut eventloop) = client(&format!("nats-matrix-{user}"), addr, user);
    let mut seen = Vec::new();
    let mut run = UserRun {
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
    } in matrix::cases(role)
    {
        client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
        let code = next_packet(&mut eventloop, "SUBACK", &mut seen, |p| match p {
            Packet::SubAck(ack) => ack.return_codes.first().copied(),
            _ => None,
        })
        .await
        .with_context(|| format!("{user} subscribing to {topic}"))?;
        let want_code = if may_subscribe {
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        } else {
            SubscribeReasonCode::Failure
        };
        if code != want_code {
            run.mismatches.push(format!(
                "{user} subscribe {topic}: got {code:?}, want {want_code:?}"
            ));
        }

        let payload = format!("{user}|{topic}");
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await?;
        // Acknowledged whether or not it was allowed (see the header).
        next_packet(&mut eventloop, "PUBACK", &mut seen, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await
        .with_context(|| format!("{user} publishing to {topic}"))?;
        if may_publish {
            run.published.push(payload.clone());
            if may_subscribe {
                run.want_echo.push(payload);
            }
        }
    }
    collect(
        &mut eventloop,
        &mut seen,
        &run.want_echo,
        Duration::from_millis(200),
    )
    .await?;
    client.disconnect().await?;
    let own = format!("{user}|");
    run.echoed = seen.into_iter().filter(|p| p.starts_with(&own)).collect();
    run.echoed.sort();
    run.want_echo.sort();
    Ok(run)
}

/// The matrix users written as `dtop-broker passwd add` writes them (argon2id and bcrypt),
/// and the cluster started with the `authorization` block generated from that file and the
/// built-in rules. Blocking: the hashes are slow on purpose.
fn start_cluster(binary: &std::path::Path) -> Result<(NatsCluster, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broker.passwd");
    for user in matrix::USERS {
        let rigs = RigSpec::parse(user.rigs).map_err(anyhow::Error::msg)?;
        let password = Secret::new(PASSWORD.to_owned());
        dtop_auth::credentials::add_user(&path, user.name, user.role, rigs, Some(&password))?;
    }
    let credentials = Credentials::load(&path)?;
    let generated = dtop_auth::nats::authorization(&credentials, &RolesConfig::default())
        .map_err(|problems| anyhow::anyhow!("nats authorization: {problems:?}"))?;
    let block = dir.path().join("users.conf");
    std::fs::write(&block, generated.render())?;
    let cluster = NatsCluster::start_with(binary, Some(&block), SINGLE_SHOT_JS_API_TIMEOUT)?;
    Ok((cluster, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_matrix_holds_on_a_nats_cluster_with_permissions_generated_from_the_credentials()
-> Result<()> {
    let Some(binary) = nats::server_binary()? else {
        return Ok(());
    };
    let (cluster, _dir) = tokio::task::spawn_blocking(move || start_cluster(&binary)).await??;

    // The admin watches everything from node 2 while every user works on node 1, so each
    // allowed publish also crosses the cluster's routes.
    let (watcher, mut watch_loop) = client("nats-watcher", cluster.mqtt_addr(1), WATCHER);
    watcher.subscribe("dtop/#", QoS::AtLeastOnce).await?;
    let mut early = Vec::new();
    let granted = next_packet(&mut watch_loop, "watcher SUBACK", &mut early, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .or_logs(|| cluster.logs())?;
    ensure!(
        granted == [SubscribeReasonCode::Success(QoS::AtLeastOnce)] && early.is_empty(),
        "watcher SUBACK {granted:?}, early deliveries {early:?}; logs:\n{}",
        cluster.logs()
    );

    // The users work concurrently (JetStream round trips, not CPU, bound each one); a user's
    // own publishes are told apart from others' by the `user|` payload prefix.
    let node1 = cluster.mqtt_addr(0);
    let runs: Vec<_> = matrix::USERS
        .into_iter()
        .map(|u| tokio::spawn(user_run(u.name, u.role, node1)))
        .collect();
    let mut mismatches = Vec::new();
    let mut expected_deliveries = Vec::new();
    for run in runs {
        let run = run
            .await?
            .with_context(|| format!("NATS warnings:\n{}", cluster.warnings()))?;
        mismatches.extend(run.mismatches);
        expected_deliveries.extend(run.published);
        ensure!(
            run.echoed == run.want_echo,
            "{} received through its own QoS 1 subscriptions {:?}, want exactly what it may \
             both publish and read, {:?}; NATS warnings:\n{}",
            run.user,
            run.echoed,
            run.want_echo,
            cluster.warnings()
        );
    }
    ensure!(
        mismatches.is_empty(),
        "ACL mismatches on NATS:\n{}\nNATS warnings:\n{}",
        mismatches.join("\n"),
        cluster.warnings()
    );

    expected_deliveries.sort();
    let mut delivered = Vec::new();
    collect(
        &mut watch_loop,
        &mut delivered,
        &expected_deliveries,
        Duration::from_millis(300),
    )
    .await?;
    delivered.sort();
    ensure!(
        delivered == expected_deliveries,
        "the watcher on another node saw {delivered:?}, want exactly the allowed publishes \
         {expected_deliveries:?}"
    );
    Ok(())
}
