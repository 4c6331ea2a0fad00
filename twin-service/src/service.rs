//! Wiring: the MQTT connection task, the router that spawns and feeds one actor per rig, the
//! storage writer, the publisher of estimated states (and, with twin-hosted control, of drives
//! and command acks), the stats publication, and the shutdown order.
//!
//! Shutdown flows downstream: stop ingest (the router stops reading MQTT and drops the rig
//! queues) → rig actors finish their queued events → the writer flushes and closes storage →
//! MQTT disconnects → with `[coordinator]`, the rig leases are handed over (so the next owner
//! starts from the last watermarks published). Holds no twin state itself beyond the rig
//! directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dtop_daemon::subscriptions::{self, Subscriptions};
use dtop_daemon::{BrokerAddr, Failover, Retry};
use dtop_proto::Message;
use dtop_proto::RigId;
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic, Topic, TwinTopic};
use dtop_proto::v1::{Command, PersistedWatermark, SeqLoss};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rumqttc::{
    AsyncClient, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::adopt::{self, CatalogueModel, RefusalReason};
use crate::config::{ConfigProblems, ModelConfig, MqttConfig, Secret, SecretError, TwinConfig};
use crate::control;
use crate::ingest::{RejectReason, Rejection};
use crate::leases::{self, LeaseSettings};
use crate::owner::{
    OwnerMode, Owners, Ownership, owners_channel, owners_channel_for, ownership_of,
};
use crate::rig::{Chunk, Event, Outbound, RigActor, RigState, STATS_INTERVAL};
use crate::stats::{RigStats, StoreStats, TwinStats};
use crate::store::nodes::{NodeSet, NodesError};
use crate::store::persisted::{self, DeclaredLoss, LossProblem};
use crate::store::query::InfluxQuery;
use crate::store::{Settled, Sink, StoreError, Watermarks, Writer, WriterConfig};

/// The QoS of every subscription of the twin: 0. The session is clean, so QoS 1 kept nothing
/// across a reconnect that QoS 0 loses, and each topic has its end-to-end answer: the edge spools
/// a block until this twin's watermark covers it and sends it again when the watermark stalls;
/// a loss declaration is repeated until the watermark passes it; births, watermarks, statuses
/// and models are retained or superseded; commands are answered on cmd/ack. On NATS a QoS 1
/// subscription is a replicated JetStream consumer, which a reconnect after a node's death must
/// delete and create again while JetStream re-elects its leaders: a loaded CI run refused the
/// twin's `samples` for over 40 s, so the twin heard nothing. A QoS 0 subscription is a plain
/// NATS one, granted as soon as the twin is connected.
const SUBSCRIPTION_QOS: QoS = QoS::AtMostOnce;

/// Events queued per rig actor before the router waits (backpressure).
pub const RIG_QUEUE_EVENTS: usize = 64;
/// How long one query of a takeover's restore may take (the whole restore is bounded by
/// `crate::rig::RESTORE_TIMEOUT`).
const RESTORE_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks (blocks) queued for the storage writer before rig actors wait.
pub const STORE_QUEUE_CHUNKS: usize = 256;
/// Watermarks seen on the broker queued for the storage writer; beyond it they are dropped
/// (the retained one comes again on every reconnect).
const PUBLISHED_WATERMARK_QUEUE: usize = 256;
/// Loss declarations queued for the storage writer; beyond it they are dropped (the edge
/// repeats every declaration until the watermark covers it).
const LOSS_QUEUE: usize = 256;
/// MQTT notifications queued between the connection task and the router.
const MQTT_QUEUE_EVENTS: usize = 64;
/// Estimated states, drives and command acks queued between the rig actors and the state
/// publisher; beyond it they are dropped and counted, never waited for.
pub const STATE_QUEUE: usize = 256;
/// Requests rumqttc buffers between `AsyncClient` and its event loop (subscriptions, state
/// publishes, the disconnect).
const MQTT_REQUEST_CAPACITY: usize = 64;
/// How long a clean MQTT disconnect may take at shutdown.
const MQTT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the twin could not run.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(ConfigProblems),
    #[error("MQTT credentials: {0}")]
    MqttSecret(#[source] SecretError),
    #[error("lease database URL: {0}")]
    LeaseDatabaseUrl(#[source] SecretError),
    #[error("cannot set up storage: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot open the storage spool: {0}")]
    Spool(#[from] dtop_spool::SpoolError),
    #[error("cannot set up the storage nodes: {0}")]
    Nodes(#[from] NodesError),
    #[error("a twin task failed: {0}")]
    TaskFailed(String),
}

/// Read side of the twin's stats, for the CLI and tests.
#[derive(Debug, Clone)]
pub struct TwinHandle {
    stats_rx: watch::Receiver<TwinStats>,
}

impl TwinHandle {
    /// The latest snapshot.
    pub fn stats(&self) -> TwinStats {
        self.stats_rx.borrow().clone()
    }

    /// Waits until a snapshot satisfies `ready` (the caller bounds the wait with a timeout).
    /// `None` when the twin stopped first.
    pub async fn wait_for(
        &mut self,
        mut ready: impl FnMut(&TwinStats) -> bool,
    ) -> Option<TwinStats> {
        self.stats_rx
            .wait_for(|s| ready(s))
            .await
            .ok()
            .map(|s| s.clone())
    }

    /// A receiver of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<TwinStats> {
        self.stats_rx.clone()
    }
}

/// The stats sender to pass to [`run`], and the handle that reads it.
pub fn stats_channel() -> (watch::Sender<TwinStats>, TwinHandle) {
    let (stats_tx, stats_rx) = watch::channel(TwinStats::default());
    (stats_tx, TwinHandle { stats_rx })
}

/// Starts [`run`] on the current runtime.
pub fn spawn(
    config: TwinConfig,
    shutdown: CancellationToken,
) -> (TwinHandle, JoinHandle<Result<(), TwinError>>) {
    let (stats_tx, handle) = stats_channel();
    (handle, tokio::spawn(run(config, shutdown, stats_tx)))
}

/// Runs the twin until `shutdown` is cancelled, then drains: stop ingest, flush storage,
/// disconnect. Returns once everything has stopped (storage waits at most
/// `batch.drain_timeout_ms` after shutdown, plus one HTTP timeout). Without `[coordinator]`
/// every rig is owned at owner epoch 0; with it, this twin owns the rigs its lease coordinator
/// holds (`crate::leases`), and hands them over once it has drained.
pub async fn run(
    config: TwinConfig,
    shutdown: CancellationToken,
    stats_tx: watch::Sender<TwinStats>,
) -> Result<(), TwinError> {
    let Some(coordinator) = config.coordinator.clone() else {
        let (owners, owners_rx) = owners_channel();
        let result = run_with_owners(config, shutdown, stats_tx, owners_rx).await;
        drop(owners);
        return result;
    };
    config.validate().map_err(TwinError::InvalidConfig)?;
    let settings = LeaseSettings {
        me: coordinator.twin_id().map_err(|e| {
            TwinError::InvalidConfig(ConfigProblems(vec![format!("coordinator.twin_id: {e}")]))
        })?,
        database_url: coordinator
            .database_url()
            .map_err(TwinError::LeaseDatabaseUrl)?,
        lease: coordinator.lease,
    };
    let (owners, owners_rx) = owners_channel_for(OwnerMode::Coordinated);
    // Each rig is announced once, and the router tracks at most `max_rigs`: never full.
    let (births_tx, births_rx) = mpsc::channel(config.ingest.max_rigs);
    // Each storage writer reports the lost rigs it has settled; a handed-over rig's lease is
    // released once all have (`dtop_lease::Coordinator::with_settled`).
    let (settled_txs, settled_rxs): (Vec<_>, Vec<_>) = config
        .storage
        .nodes()
        .iter()
        .map(|_| watch::channel(Settled::new()))
        .unzip();
    let lease_stop = CancellationToken::new();
    // If this future is dropped instead of finishing, the coordinator still hands over.
    let lease_stop_guard = lease_stop.clone().drop_guard();
    let lease_task = tokio::spawn(leases::run(
        settings,
        owners,
        births_rx,
        settled_rxs,
        lease_stop.clone(),
    ));
    let result = serve(
        config,
        shutdown,
        stats_tx,
        owners_rx,
        Some(births_tx),
        settled_txs,
    )
    .await;
    // Only now: storage has drained and the last watermarks are out, so the next owner starts
    // from them instead of having the edge replay what this twin stored.
    info!("Handing the rig leases over.");
    drop(lease_stop_guard);
    if let Err(e) = lease_task.await {
        warn!(error = %e, "The lease task failed; the leases lapse after their TTL.");
    }
    result
}

/// [`run`], owning the rigs a lease coordinator says through the
/// [`crate::owner::OwnersHandle`] that `owners_rx` came from (`crate::owner::owners_channel`,
/// or `owners_channel_for`). `[coordinator]` is not acted on here: the caller is the
/// coordinator.
pub async fn run_with_owners(
    config: TwinConfig,
    shutdown: CancellationToken,
    stats_tx: watch::Sender<TwinStats>,
    owners_rx: watch::Receiver<Owners>,
) -> Result<(), TwinError> {
    serve(config, shutdown, stats_tx, owners_rx, None, Vec::new()).await
}

/// The twin itself; each rig seen born is announced on `births_tx` (for lease registration),
/// and the storage writers (one per node, in node order) report on `settled_txs` the lost rigs
/// of which storage has everything they accepted.
async fn serve(
    config: TwinConfig,
    shutdown: CancellationToken,
    stats_tx: watch::Sender<TwinStats>,
    owners_rx: watch::Receiver<Owners>,
    births_tx: Option<mpsc::Sender<RigId>>,
    settled_txs: Vec<watch::Sender<Settled>>,
) -> Result<(), TwinError> {
    config.validate().map_err(TwinError::InvalidConfig)?;
    let password = config
        .mqtt
        .password_file
        .as_deref()
        .map(Secret::read_file)
        .transpose()
        .map_err(TwinError::MqttSecret)?;
    let storage = config.storage.describe();
    let (chunk_tx, chunk_rx) = mpsc::channel(STORE_QUEUE_CHUNKS);
    let (store_stats_tx, store_stats_rx) = watch::channel(StoreStats::default());
    let (watermark_tx, watermark_rx) = watch::channel(Watermarks::new());
    // Watermarks this twin published before a restart come back as retained messages.
    let (published_tx, published_rx) = mpsc::channel(PUBLISHED_WATERMARK_QUEUE);
    let (loss_tx, loss_rx) = mpsc::channel(LOSS_QUEUE);
    let writer = if config.storage.is_node_list() {
        // One writer per node; the published watermark is the lowest of theirs.
        let nodes = NodeSet::build(&config, &shutdown, &owners_rx, settled_txs).await?;
        info!(storage = %storage, "Storage ready.");
        tokio::spawn(nodes.run(
            chunk_rx,
            published_rx,
            loss_rx,
            watermark_tx,
            store_stats_tx,
        ))
    } else {
        let sink = Sink::from_config(&config).await?;
        info!(storage = %storage, "Storage ready.");
        let mut writer = Writer::new(
            sink,
            chunk_rx,
            WriterConfig::from(&config),
            shutdown.clone(),
            store_stats_tx,
        )
        .with_loss_records(config.storage.precision());
        if let Some(spool_config) = crate::store::spool_config(&config.spool) {
            let spool = dtop_spool::Spool::open(spool_config)?;
            writer = writer.with_spool(spool)?;
        }
        if let Some(settled_tx) = settled_txs.into_iter().next() {
            writer = writer.with_settled(settled_tx);
        }
        tokio::spawn(
            writer
                .with_watermarks(watermark_tx)
                .with_published_watermarks(published_rx)
                .with_declared_losses(loss_rx)
                .with_owners(owners_rx.clone())
                .run(),
        )
    };

    let failover = Failover::new(config.mqtt.broker_list());
    let (client, eventloop) = AsyncClient::new(
        mqtt_options(&config.mqtt, failover.current(), password.as_ref()),
        MQTT_REQUEST_CAPACITY,
    );
    let (mqtt_tx, mqtt_rx) = mpsc::channel(MQTT_QUEUE_EVENTS);
    let mqtt_stop = CancellationToken::new();
    // If this future is dropped instead of finishing, the connection task still ends.
    let mqtt_stop_guard = mqtt_stop.clone().drop_guard();
    let (connected_tx, connected_rx) = watch::channel(false);
    let (state_tx, state_rx) = mpsc::channel(STATE_QUEUE);
    let rig_watermarks = watermark_rx.clone();
    let watermarks = tokio::spawn(publish_watermarks(
        client.clone(),
        watermark_rx,
        owners_rx.clone(),
        connected_rx.clone(),
        mqtt_stop.clone(),
    ));
    let status = tokio::spawn(publish_status(
        client.clone(),
        stats_tx.subscribe(),
        owners_rx.clone(),
        connected_rx.clone(),
        mqtt_stop.clone(),
    ));
    let states = tokio::spawn(publish_states(
        client.clone(),
        state_rx,
        connected_rx,
        mqtt_stop.clone(),
    ));
    let mqtt = tokio::spawn(run_mqtt(
        client,
        eventloop,
        Connection {
            config: config.mqtt.clone(),
            password,
            failover,
        },
        Optional {
            commands: config.control.enabled,
            models: config.model.follows_any(),
        },
        mqtt_tx,
        connected_tx,
        mqtt_stop.clone(),
    ));

    // A rig taken over from another twin continues that twin's run, read back from storage;
    // only InfluxDB 1.x can be read back (otherwise a takeover starts a new run).
    let restore_query = match (
        &config.coordinator,
        InfluxQuery::from_storage(&config.storage, RESTORE_QUERY_TIMEOUT),
    ) {
        (None, _) => None,
        (Some(_), Ok(query)) => Some(query),
        (Some(_), Err(e)) => {
            info!(reason = %e, "A rig taken over from another twin starts a new estimator run: its previous owner's run cannot be restored from this storage.");
            None
        }
    };
    let mut router = Router {
        restore_query,
        config: &config,
        rigs: HashMap::new(),
        actors: TaskTracker::new(),
        chunk_tx: Some(chunk_tx),
        published_tx: Some(published_tx),
        loss_tx: Some(loss_tx),
        state_tx: Some(state_tx),
        model: Arc::new(config.model.clone()),
        rejected: BTreeMap::new(),
        store_stats_rx,
        stats_tx,
        storage,
        mqtt_connected: false,
        mqtt_connection_errors_total: 0,
        watermarks: rig_watermarks,
        models: BTreeMap::new(),
        models_refused: BTreeMap::new(),
        owners: owners_rx,
        births_tx,
        announced: HashSet::new(),
    };
    router.run(mqtt_rx, &shutdown).await;

    info!("Stopping ingest; draining rig queues and storage.");
    // Dropping each rig's event sender lets its actor finish what is queued and stop; the
    // stats receivers stay for the final snapshot.
    let stopped_rigs: Vec<_> = std::mem::take(&mut router.rigs)
        .into_iter()
        .map(|(id, h)| (id, h.stats_rx))
        .collect();
    router.actors.close();
    router.actors.wait().await;
    // The writer stops once the last chunk sender (ours, after the actors') is gone.
    router.chunk_tx = None;
    router.published_tx = None;
    router.loss_tx = None;
    let writer_result = writer.await;
    router.publish_final(&stopped_rigs);
    // The publisher sends what the actors left queued, then stops.
    router.state_tx = None;
    let states_result = states.await;
    // The watermark publisher sends the writer's last watermarks, then stops.
    if let Err(e) = watermarks.await {
        warn!(error = %e, "The watermark publisher failed.");
    }

    mqtt_stop.cancel();
    drop(mqtt_stop_guard);
    if let Err(e) = status.await {
        warn!(error = %e, "The status publisher failed.");
    }
    let mqtt_result = mqtt.await;

    let final_store =
        writer_result.map_err(|e| TwinError::TaskFailed(format!("storage writer: {e}")))?;
    mqtt_result.map_err(|e| TwinError::TaskFailed(format!("MQTT connection: {e}")))?;
    let published =
        states_result.map_err(|e| TwinError::TaskFailed(format!("state publisher: {e}")))?;
    debug!(
        states_published = published.published_total,
        states_dropped = published.dropped_total,
        "State publisher stopped."
    );
    info!(
        lines_written = final_store.lines_written_total,
        lines_dropped = final_store.lines_dropped_total,
        lines_rejected = final_store.lines_rejected_total,
        "Twin stopped."
    );
    Ok(())
}

fn mqtt_options(m: &MqttConfig, broker: &BrokerAddr, password: Option<&Secret>) -> MqttOptions {
    let mut options = MqttOptions::new(m.client_id.clone(), broker.host(), broker.port());
    options
        .set_keep_alive(Duration::from_secs(m.keepalive_s))
        .set_clean_session(true)
        .set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    if let Some(username) = &m.username {
        options.set_credentials(username.clone(), password.map_or("", Secret::expose));
    }
    options
}

/// What the connection task tells the router.
#[derive(Debug)]
enum MqttEvent {
    Connected,
    Disconnected,
    Publish(Publish),
}

/// The subscriptions the twin makes beyond the rig topics.
#[derive(Debug, Clone, Copy)]
struct Optional {
    /// `rig/+/cmd`: only a twin hosting control answers commands.
    commands: bool,
    /// `models/+/latest`: only when a rig follows a catalogue model (`crate::adopt`).
    models: bool,
}

/// What the connection task needs to (re)connect: the section, the password, and where in the
/// failover list it is.
struct Connection {
    config: MqttConfig,
    password: Option<Secret>,
    failover: Failover,
}

/// Owns the rumqttc event loop: polls it, subscribes on every CONNACK, moves to the next
/// broker of the failover list on a lost or refused connection, backs off after a round in
/// which every broker failed (rumqttc itself retries immediately), and disconnects cleanly
/// when stopped.
///
/// `poll` is only ever cancelled by `stop`, never by a timer, because a cancelled connect
/// attempt starts over from scratch.
async fn run_mqtt(
    client: AsyncClient,
    mut eventloop: EventLoop,
    connection: Connection,
    optional: Optional,
    mqtt_tx: mpsc::Sender<MqttEvent>,
    connected_tx: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let Connection {
        config,
        password,
        mut failover,
    } = connection;
    let mut network = eventloop.network_options();
    network.set_connection_timeout(config.connect_timeout_s);
    // Drives and acks are small packets in a control loop: no Nagle delay.
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let mut backoff = config.reconnect.backoff();
    let mut rng = StdRng::from_os_rng();
    // Filters a SUBACK refused are asked again (NATS refuses QoS 1 filters while JetStream
    // re-elects leaders); see `dtop_daemon::subscriptions`.
    let mut subscriptions: Subscriptions<SubscribeFilter> =
        Subscriptions::new(subscriptions::RETRY_MIN, subscriptions::RETRY_MAX);
    let subscribe = |subscriptions: &mut Subscriptions<SubscribeFilter>,
                     filters: Vec<SubscribeFilter>,
                     what: &str| {
        match client.try_subscribe_many(filters.clone()) {
            Ok(()) => subscriptions.asked(filters),
            Err(e) => error!(error = %e, "Could not queue the MQTT {what}."),
        }
    };
    // Once the router stops reading, publishes are discarded while the connection stays up
    // until storage has drained.
    let mut router_open = true;
    loop {
        // The poll future lives until it completes (or shutdown): rumqttc's poll is not safe to
        // cancel mid-write, so a due resubscription is queued beside it, not instead of it.
        let polled = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                let retry_at = subscriptions.retry_at().map(Instant::from_std);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break None,
                    polled = &mut poll => break Some(polled),
                    () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                        if let Some(filters) = subscriptions.due(std::time::Instant::now()) {
                            info!(
                                filters = ?filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
                                "Asking the broker again for the subscriptions it refused."
                            );
                            subscribe(&mut subscriptions, filters, "subscriptions refused before");
                        }
                    }
                }
            }
        };
        let Some(polled) = polled else { break };
        let event = match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                failover.connected(Instant::now().into_std());
                subscriptions.connected();
                let filters: Vec<SubscribeFilter> = [
                    RigTopic::Birth,
                    RigTopic::Samples,
                    RigTopic::Death,
                    RigTopic::Loss,
                    RigTopic::Persisted,
                ]
                .map(|kind| SubscribeFilter::new(topic::all_rigs(kind), SUBSCRIPTION_QOS))
                .to_vec();
                subscribe(&mut subscriptions, filters, "subscriptions");
                // Only a twin hosting control answers commands; a separate SUBSCRIBE keeps the
                // rig-topic subscription exactly as it is without control.
                // Acks and the edge's status too: the edge answers a live CBC run's params on
                // cmd/ack, and its status says when its safety envelope switched the actuator
                // off.
                if optional.commands {
                    let filters = [RigTopic::Cmd, RigTopic::CmdAck, RigTopic::Status]
                        .map(|kind| SubscribeFilter::new(topic::all_rigs(kind), SUBSCRIPTION_QOS));
                    subscribe(
                        &mut subscriptions,
                        filters.to_vec(),
                        "command subscriptions",
                    );
                }
                // Catalogue models (crate::adopt), only when a rig follows one.
                if optional.models {
                    let filter =
                        SubscribeFilter::new(adopt::MODELS_FILTER.into(), SUBSCRIPTION_QOS);
                    subscribe(
                        &mut subscriptions,
                        vec![filter],
                        "catalogue model subscription",
                    );
                }
                info!(broker = %failover.current(), "Connected to the MQTT broker.");
                connected_tx.send_replace(true);
                Some(MqttEvent::Connected)
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if !subscriptions.went_out(pkid) {
                    debug!(pkid, "A SUBSCRIBE from before this connection went out.");
                }
                None
            }
            Ok(rumqttc::Event::Incoming(Packet::SubAck(ack))) => {
                let granted: Vec<bool> = ack
                    .return_codes
                    .iter()
                    .map(|c| matches!(c, SubscribeReasonCode::Success(_)))
                    .collect();
                match subscriptions.answered(
                    ack.pkid,
                    &granted,
                    std::time::Instant::now(),
                    &mut rng,
                ) {
                    Ok(answer) if answer.refused.is_empty() => {
                        info!(filters = answer.granted.len(), "Subscribed to rig topics.");
                    }
                    Ok(answer) => {
                        error!(
                            refused = ?answer.refused.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
                            retry_in_ms = answer.retry_in.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                            "The broker refused subscriptions; nothing arrives on them until they are granted. Asking again."
                        );
                    }
                    Err(e) => debug!(error = %e, "Ignored a SUBACK from before this connection."),
                }
                None
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => Some(MqttEvent::Publish(p)),
            Ok(_) => None,
            Err(e) => {
                connected_tx.send_replace(false);
                let failed = failover.current().clone();
                let delay = match failover.failed(Instant::now().into_std()) {
                    Retry::Now => Duration::ZERO,
                    Retry::AfterBackoff => backoff.next_delay(&mut rng),
                };
                let next = failover.current();
                if *next != failed {
                    // Only the address changes; the event loop keeps its queue and state.
                    eventloop.mqtt_options = mqtt_options(&config, next, password.as_ref());
                }
                warn!(
                    error = %e,
                    broker = %failed,
                    next_broker = %next,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "MQTT connection failed; reconnecting."
                );
                if router_open && mqtt_tx.send(MqttEvent::Disconnected).await.is_err() {
                    router_open = false;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                None
            }
        };
        let Some(event) = event else { continue };
        if router_open && mqtt_tx.send(event).await.is_err() {
            router_open = false;
        }
    }
    disconnect(&client, &mut eventloop).await;
}

/// What the state publisher did.
#[derive(Debug, Clone, Copy, Default)]
struct PublishedStates {
    published_total: u64,
    /// Not connected, or rumqttc's request queue was full.
    dropped_total: u64,
}

/// Publishes each estimated state on the rig's `twin/<rig>/state` (protobuf) and
/// `.../state/json` topics, QoS 0, not retained; each drive on `rig/<rig>/drive`, QoS 0; each
/// command ack on `rig/<rig>/cmd/ack`, QoS 1. Never waits on the connection: while it is
/// down, or its request queue is full, states are dropped (they are superseded within a
/// fraction of a second anyway). It is a task of its own because the connection task's `poll`
/// must not be cancelled by anything but shutdown.
async fn publish_states(
    client: AsyncClient,
    mut state_rx: mpsc::Receiver<Outbound>,
    connected_rx: watch::Receiver<bool>,
    stop: CancellationToken,
) -> PublishedStates {
    let mut counts = PublishedStates::default();
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            item = state_rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        if !*connected_rx.borrow() {
            counts.dropped_total += 1;
            continue;
        }
        let state = match item {
            Outbound::State(state) => state,
            Outbound::Drive(drive) => {
                publish_to_rig(
                    &client,
                    &drive.rig_id,
                    RigTopic::Drive,
                    QoS::AtMostOnce,
                    drive.encode_to_vec(),
                    &mut counts,
                );
                continue;
            }
            Outbound::Params(params) => {
                publish_to_rig(
                    &client,
                    &params.rig_id,
                    RigTopic::Controller,
                    QoS::AtLeastOnce,
                    params.encode_to_vec(),
                    &mut counts,
                );
                continue;
            }
            Outbound::Ack(ack) => {
                publish_to_rig(
                    &client,
                    &ack.rig_id,
                    RigTopic::CmdAck,
                    QoS::AtLeastOnce,
                    ack.encode_to_vec(),
                    &mut counts,
                );
                continue;
            }
            Outbound::Modes { rig, json } => {
                if client
                    .try_publish(topic::twin_modes(&rig), QoS::AtMostOnce, false, json)
                    .is_err()
                {
                    warn!(rig = %rig, "The MQTT request queue is full; dropped a tracking record (it is stored).");
                    counts.dropped_total += 1;
                }
                continue;
            }
            Outbound::Cbc { rig, json } => {
                if client
                    .try_publish(topic::twin_cbc(&rig), QoS::AtLeastOnce, true, json)
                    .is_err()
                {
                    warn!(rig = %rig, "The MQTT request queue is full; dropped a live CBC status message (its points are stored).");
                    counts.dropped_total += 1;
                }
                continue;
            }
            Outbound::Drift { rig, json } => {
                if client
                    .try_publish(topic::twin_drift_alarm(&rig), QoS::AtLeastOnce, true, json)
                    .is_err()
                {
                    warn!(rig = %rig, "The MQTT request queue is full; dropped a drift alarm message (it is stored).");
                    counts.dropped_total += 1;
                }
                continue;
            }
        };
        let Ok(rig) = RigId::new(state.rig_id.as_str()) else {
            counts.dropped_total += 1;
            continue;
        };
        let json = match serde_json::to_vec(&state) {
            Ok(json) => json,
            Err(e) => {
                warn!(rig = %rig, error = %e, "Could not encode a twin state as JSON.");
                counts.dropped_total += 1;
                continue;
            }
        };
        let sent = [
            (TwinTopic::State, state.encode_to_vec()),
            (TwinTopic::StateJson, json),
        ]
        .into_iter()
        .all(|(kind, payload)| {
            client
                .try_publish(topic::twin(&rig, kind), QoS::AtMostOnce, false, payload)
                .is_ok()
        });
        if sent {
            counts.published_total += 1;
        } else {
            if counts.dropped_total == 0 {
                warn!(rig = %rig, "The MQTT request queue is full; dropping estimated states until it drains.");
            }
            counts.dropped_total += 1;
        }
    }
    counts
}

/// How often each rig's status is published on `twin/<rig>/status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes each known rig's [`crate::stats::RigStatus`] on `twin/<rig>/status`, retained,
/// QoS 0, every [`STATUS_INTERVAL`] while connected; not for a rig this twin lost (its owner
/// publishes it). Never waits on the connection: a status that cannot be queued is superseded
/// by the next one.
async fn publish_status(
    client: AsyncClient,
    stats_rx: watch::Receiver<TwinStats>,
    owners_rx: watch::Receiver<Owners>,
    connected_rx: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !*connected_rx.borrow() {
            continue;
        }
        let stats = stats_rx.borrow().clone();
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let owners = owners_rx.borrow().clone();
        for rig in stats.rigs.keys() {
            if !ownership_of(&owners, rig).is_owned() {
                continue;
            }
            let Some(status) = stats.rig_status(rig, now_ns) else {
                continue;
            };
            match serde_json::to_vec(&status) {
                Ok(json) => {
                    // A full request queue drops this one; the next second brings another.
                    let _ = client.try_publish(
                        topic::twin(rig, TwinTopic::Status),
                        QoS::AtMostOnce,
                        true,
                        json,
                    );
                }
                Err(e) => warn!(rig = %rig, error = %e, "Could not encode a rig status as JSON."),
            }
        }
    }
}

/// How often changed watermarks are published, at most.
const WATERMARK_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Publishes each rig's [`PersistedWatermark`] on `rig/<rig>/persisted`, retained, QoS 1,
/// whenever the writer moves it (at most every [`WATERMARK_PUBLISH_INTERVAL`]) and all of them
/// again after every reconnect, since a restarted broker may have lost retained messages.
/// Each carries the rig's owner epoch (`crate::owner`), and is published again when that
/// changes; a rig this twin lost gets none. Never waits on the connection: a publish that
/// cannot be queued is retried on the next tick. Stops once the writer has stopped and its
/// last watermarks are queued, or at `stop`.
async fn publish_watermarks(
    client: AsyncClient,
    mut watermark_rx: watch::Receiver<Watermarks>,
    mut owners_rx: watch::Receiver<Owners>,
    mut connected_rx: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    // What was published per rig: seq and owner epoch.
    let mut published: BTreeMap<RigId, (u64, u64)> = BTreeMap::new();
    let mut owners_open = true;
    let mut tick = tokio::time::interval(WATERMARK_PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut writer_done = false;
    // Once the writer is done, its last watermarks get this long to be queued.
    let mut give_up_at: Option<Instant> = None;
    loop {
        // A change alone waits for the next tick, so a fast-moving watermark is published at
        // most once per interval.
        let publish_now = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = connected_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                if *connected_rx.borrow_and_update() {
                    published.clear();
                }
                true
            }
            changed = watermark_rx.changed(), if !writer_done => {
                writer_done = changed.is_err();
                if writer_done {
                    give_up_at = Some(Instant::now() + MQTT_DISCONNECT_TIMEOUT);
                }
                writer_done
            }
            // A new epoch goes out at once: it is what fences the previous owner off.
            changed = owners_rx.changed(), if owners_open => {
                owners_open = changed.is_ok();
                owners_open
            }
            _ = tick.tick() => true,
        };
        if publish_now && *connected_rx.borrow() {
            let current = watermark_rx.borrow_and_update().clone();
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let owners = owners_rx.borrow_and_update().clone();
            for (rig, seq) in current {
                let owner_epoch = match ownership_of(&owners, &rig) {
                    Ownership::Owned { epoch } => epoch,
                    Ownership::Lost { .. } => continue,
                };
                if published.get(&rig) == Some(&(seq, owner_epoch)) {
                    continue;
                }
                let message = PersistedWatermark {
                    rig_id: rig.as_str().to_owned(),
                    seq,
                    timestamp_ns: now_ns,
                    owner_epoch,
                };
                match client.try_publish(
                    topic::rig(&rig, RigTopic::Persisted),
                    QoS::AtLeastOnce,
                    true,
                    message.encode_to_vec(),
                ) {
                    Ok(()) => {
                        debug!(rig = %rig, seq, owner_epoch, "Published a persisted watermark.");
                        published.insert(rig, (seq, owner_epoch));
                    }
                    Err(e) => {
                        debug!(rig = %rig, error = %e, "Could not queue a watermark; retrying on the next tick.");
                    }
                }
            }
        }
        if writer_done && all_published(&published, &watermark_rx.borrow(), &owners_rx.borrow()) {
            break;
        }
        if writer_done
            && (!*connected_rx.borrow() || give_up_at.is_some_and(|t| Instant::now() >= t))
        {
            break;
        }
    }
}

/// Whether every watermark of a rig this twin owns went out as `watermarks` has it.
fn all_published(
    published: &BTreeMap<RigId, (u64, u64)>,
    watermarks: &Watermarks,
    owners: &Owners,
) -> bool {
    watermarks.iter().all(|(rig, seq)| {
        !ownership_of(owners, rig).is_owned()
            || published.get(rig).is_some_and(|(sent, _)| sent == seq)
    })
}

/// One drive or ack on its rig's topic, without waiting; counted like a state.
fn publish_to_rig(
    client: &AsyncClient,
    rig_id: &str,
    kind: RigTopic,
    qos: QoS,
    payload: Vec<u8>,
    counts: &mut PublishedStates,
) {
    let sent = RigId::new(rig_id).is_ok_and(|rig| {
        client
            .try_publish(topic::rig(&rig, kind), qos, false, payload)
            .is_ok()
    });
    if sent {
        counts.published_total += 1;
    } else {
        warn!(rig = rig_id, topic = ?kind, "Could not queue a control message for MQTT; dropped it.");
        counts.dropped_total += 1;
    }
}

async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let sent = tokio::time::timeout(MQTT_DISCONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    match sent {
        Ok(true) => info!("Disconnected from the MQTT broker."),
        _ => debug!("MQTT was not connected at shutdown."),
    }
}

/// A rig actor as the router sees it.
#[derive(Debug)]
struct RigHandle {
    events_tx: mpsc::Sender<Event>,
    stats_rx: watch::Receiver<RigStats>,
}

/// Routes publishes to rig actors and assembles [`TwinStats`]. Owns the rig directory.
struct Router<'a> {
    config: &'a TwinConfig,
    /// Where a takeover reads the previous owner's run back (`crate::replay::restore`).
    restore_query: Option<InfluxQuery>,
    rigs: HashMap<RigId, RigHandle>,
    actors: TaskTracker,
    /// `None` once ingest has stopped, so the writer can finish.
    chunk_tx: Option<mpsc::Sender<Chunk>>,
    /// Watermarks seen on `rig/+/persisted`, for the writer; `None` once ingest has stopped.
    published_tx: Option<mpsc::Sender<(RigId, u64)>>,
    /// Validated loss declarations from `rig/+/loss`, for the writer; `None` once ingest has
    /// stopped.
    loss_tx: Option<mpsc::Sender<(RigId, DeclaredLoss)>>,
    /// `None` once the actors have stopped, so the state publisher can finish.
    state_tx: Option<mpsc::Sender<Outbound>>,
    model: Arc<ModelConfig>,
    /// Frames refused before reaching a rig actor.
    rejected: BTreeMap<RejectReason, u64>,
    store_stats_rx: watch::Receiver<StoreStats>,
    stats_tx: watch::Sender<TwinStats>,
    /// What storage has acknowledged per rig: a re-sent block above it is stored again.
    watermarks: watch::Receiver<Watermarks>,
    storage: String,
    mqtt_connected: bool,
    mqtt_connection_errors_total: u64,
    /// The latest accepted version of each followed catalogue model, handed to every rig
    /// actor that follows it, including those spawned later.
    models: BTreeMap<String, Arc<CatalogueModel>>,
    /// Catalogue model messages refused before reaching a rig, by reason.
    models_refused: BTreeMap<RefusalReason, u64>,
    /// Which rigs this twin owns (`crate::owner`), for each new rig actor to follow.
    owners: watch::Receiver<Owners>,
    /// Where each rig seen born is announced once, for registration with the lease
    /// coordinator (`crate::leases`); `None` without one.
    births_tx: Option<mpsc::Sender<RigId>>,
    /// The rigs announced on `births_tx`.
    announced: HashSet<RigId>,
}

impl Router<'_> {
    async fn run(&mut self, mut mqtt_rx: mpsc::Receiver<MqttEvent>, shutdown: &CancellationToken) {
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.publish();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = mqtt_rx.recv() => match event {
                    Some(MqttEvent::Publish(p)) => {
                        if !self.route(p, shutdown).await {
                            break;
                        }
                    }
                    Some(MqttEvent::Connected) => {
                        self.mqtt_connected = true;
                        self.publish();
                    }
                    Some(MqttEvent::Disconnected) => {
                        self.mqtt_connected = false;
                        self.mqtt_connection_errors_total += 1;
                        self.publish();
                    }
                    None => break,
                },
                _ = tick.tick() => self.publish(),
            }
        }
    }

    /// Hands a publish to its rig's actor; `false` when shutdown interrupted the hand-over.
    async fn route(&mut self, publish: Publish, shutdown: &CancellationToken) -> bool {
        if let Some(name) = adopt::model_name_of_topic(&publish.topic) {
            let name = name.to_owned();
            return self.note_model(&name, &publish.payload, shutdown).await;
        }
        match Topic::parse(&publish.topic) {
            Ok(Topic::Rig(rig, RigTopic::Persisted)) => {
                self.note_published_watermark(rig, &publish.payload);
                return true;
            }
            Ok(Topic::Rig(rig, RigTopic::Loss)) => {
                self.note_declared_loss(rig, &publish.payload);
                return true;
            }
            _ => {}
        }
        let (rig, event) = match Topic::parse(&publish.topic) {
            Ok(Topic::Rig(rig, kind)) => match Event::from_topic(kind, publish.payload) {
                Some(event) => (rig, event),
                None => {
                    self.reject(
                        None,
                        Rejection::new(
                            RejectReason::BadTopic,
                            format!("unexpected topic {}", publish.topic),
                        ),
                    );
                    return true;
                }
            },
            Ok(_) => {
                self.reject(
                    None,
                    Rejection::new(
                        RejectReason::BadTopic,
                        format!("unexpected topic {}", publish.topic),
                    ),
                );
                return true;
            }
            Err(e) => {
                self.reject(None, Rejection::new(RejectReason::BadTopic, e.to_string()));
                return true;
            }
        };
        if let Event::Command(payload) = &event
            && !self.rigs.contains_key(&rig)
        {
            self.refuse_command_for_unknown_rig(&rig, payload);
            return true;
        }
        // Acks (the twin's own among them) and edge status only matter to a rig the twin has.
        if matches!(event, Event::CommandAck(_) | Event::EdgeStatus(_))
            && !self.rigs.contains_key(&rig)
        {
            return true;
        }
        if !self.rigs.contains_key(&rig) {
            if self.rigs.len() >= self.config.ingest.max_rigs {
                let detail = format!(
                    "already tracking {} rigs (ingest.max_rigs)",
                    self.rigs.len()
                );
                self.reject(
                    Some(&rig),
                    Rejection::new(RejectReason::TooManyRigs, detail),
                );
                return true;
            }
            self.spawn_rig(rig.clone());
        }
        if let Event::Birth(payload) = &event
            && !payload.is_empty()
        {
            self.announce_birth(&rig);
        }
        let Some(handle) = self.rigs.get(&rig) else {
            return true;
        };
        let events_tx = handle.events_tx.clone();
        tokio::select! {
            sent = events_tx.send(event) => {
                if sent.is_err() {
                    error!(rig = %rig, "A rig actor stopped unexpectedly; its state is lost and restarts with the next frame.");
                    self.rigs.remove(&rig);
                }
                true
            }
            _ = shutdown.cancelled() => false,
        }
    }

    /// A watermark on the broker (this twin's own, retained from before a restart, or the echo
    /// of a fresh one) goes to the writer; never waited for.
    fn note_published_watermark(&mut self, rig: RigId, payload: &[u8]) {
        let Ok(w) = PersistedWatermark::decode(payload) else {
            self.reject(
                Some(&rig),
                Rejection::new(RejectReason::BadTopic, "undecodable persisted watermark"),
            );
            return;
        };
        if w.rig_id != rig.as_str() {
            return;
        }
        if let Some(tx) = &self.published_tx
            && tx.try_send((rig, w.seq)).is_err()
        {
            debug!("The writer is behind on published watermarks; dropped one.");
        }
    }

    /// A loss declaration from a rig's edge: validated here (refusals count as rejected
    /// frames, never fatal), accounted by the writer, which owns the watermarks; never waited
    /// for. It does not need a rig actor: an edge may declare before its first block arrives.
    fn note_declared_loss(&mut self, rig: RigId, payload: &[u8]) {
        if payload.len() > dtop_proto::limits::MAX_CONTROL_BYTES {
            self.reject(
                Some(&rig),
                Rejection::new(RejectReason::Oversize, "oversized loss declaration"),
            );
            return;
        }
        let loss = match SeqLoss::decode(payload) {
            Ok(loss) => loss,
            Err(e) => {
                self.reject(
                    Some(&rig),
                    Rejection::new(
                        RejectReason::Decode,
                        format!("undecodable loss declaration: {e}"),
                    ),
                );
                return;
            }
        };
        let declared = match persisted::check_seq_loss(&rig, &loss) {
            Ok(declared) => declared,
            Err(problem) => {
                let reason = match problem {
                    LossProblem::RigMismatch { .. } => RejectReason::RigMismatch,
                    LossProblem::Inverted { .. } | LossProblem::TooLarge { .. } => {
                        RejectReason::BadLossRange
                    }
                };
                self.reject(
                    Some(&rig),
                    Rejection::new(reason, format!("loss declaration: {problem}")),
                );
                return;
            }
        };
        // The rig's actor stops counting the seqs as missing; never waited for either, since
        // the edge repeats every declaration until the watermark passes it.
        if let Some(handle) = self.rigs.get(&rig) {
            let _ = handle.events_tx.try_send(Event::DeclaredLoss {
                first_seq: declared.first_seq,
                last_seq: declared.last_seq,
            });
        }
        if let Some(tx) = &self.loss_tx
            && tx.try_send((rig, declared)).is_err()
        {
            debug!("The writer is behind on loss declarations; dropped one (the edge repeats it).");
        }
    }

    /// A rig's first (non-empty) birth: the lease coordinator registers it, so one of the
    /// twins comes to own it. Never waited for; a rig not announced now is announced at its
    /// next birth (the edge publishes one at every connect).
    fn announce_birth(&mut self, rig: &RigId) {
        let Some(tx) = &self.births_tx else { return };
        if self.announced.contains(rig) {
            return;
        }
        match tx.try_send(rig.clone()) {
            Ok(()) => {
                self.announced.insert(rig.clone());
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(rig = %rig, "The lease registrations are behind; the rig is registered at its next birth.");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.births_tx = None,
        }
    }

    fn spawn_rig(&mut self, rig: RigId) {
        let Some(chunk_tx) = self.chunk_tx.clone() else {
            return;
        };
        info!(rig = %rig, "Tracking a new rig.");
        let (events_tx, events_rx) = mpsc::channel(RIG_QUEUE_EVENTS);
        let ownership = ownership_of(&self.owners.borrow(), &rig);
        let state = RigState::new(
            rig.clone(),
            self.config.storage.precision(),
            self.config.ingest.pre_birth_queue_blocks,
        )
        .with_ownership(ownership)
        .with_model(Arc::clone(&self.model))
        .with_control(self.config.control.clone())
        .with_tracking(Arc::new(self.config.tracking.clone()))
        .with_follow(self.model.follows(&rig).map(str::to_owned));
        // The followed model's latest version goes first into the new actor's queue.
        let adopted = self
            .model
            .follows(&rig)
            .and_then(|name| self.models.get(name))
            .map(|m| Event::Model(Arc::clone(m)));
        let (stats_tx, stats_rx) = watch::channel(state.stats(Instant::now()));
        let mut actor = RigActor::new(state, events_rx, chunk_tx, stats_tx)
            .with_watermarks(self.watermarks.clone())
            .with_owners(self.owners.clone());
        if let Some(dir) = &self.config.spool.dir {
            actor = actor.with_stored_times(dir.clone());
        }
        if let Some(query) = &self.restore_query {
            actor = actor.with_restore(query.clone());
        }
        if let Some(state_tx) = &self.state_tx {
            actor = actor.with_states(state_tx.clone());
        }
        if let Some(event) = adopted
            && events_tx.try_send(event).is_err()
        {
            warn!(rig = %rig, "Could not queue the followed model version for a new rig actor.");
        }
        self.actors.spawn(actor.run());
        self.rigs.insert(
            rig,
            RigHandle {
                events_tx,
                stats_rx,
            },
        );
    }

    /// A command for a rig the twin has no actor for: it has never seen its birth, so no
    /// control can run there. Only `SetControl` is answered; the rest is the edge's.
    fn refuse_command_for_unknown_rig(&mut self, rig: &RigId, payload: &[u8]) {
        if !ownership_of(&self.owners.borrow(), rig).is_owned() {
            return;
        }
        let Ok(command) = Command::decode(payload) else {
            return;
        };
        let Some(ack) = control::refusal_for_unknown_rig(rig, &command) else {
            return;
        };
        info!(rig = %rig, command_id = %ack.command_id, "Refused a control command for a rig the twin has not seen born.");
        if let Some(tx) = &self.state_tx
            && tx.try_send(Outbound::Ack(ack)).is_err()
        {
            debug!(rig = %rig, "The state publisher is behind; dropped a command ack.");
        }
    }

    // ---- Model adoption (crate::adopt) ----

    /// A message on `dtop/v1/models/{name}/latest`: refused (logged and counted, never
    /// applied) unless it is a usable, physical version; then handed to every rig following
    /// `name` (each checks its floors and switches at its next block boundary). `false` when
    /// shutdown interrupted the hand-over.
    async fn note_model(
        &mut self,
        name: &str,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> bool {
        let followed = self.model.follow.as_deref() == Some(name)
            || self.model.follow_rigs.values().any(|n| n == name);
        if !followed {
            debug!(model = name, "Ignored a catalogue model no rig follows.");
            return true;
        }
        let model = match adopt::parse_model_message(name, payload) {
            Ok(Some(model)) => Arc::new(model),
            Ok(None) => {
                debug!(
                    model = name,
                    "Ignored an empty model message (a cleared retained message)."
                );
                return true;
            }
            Err(refusal) => {
                *self.models_refused.entry(refusal.reason).or_default() += 1;
                warn!(model = name, reason = refusal.reason.as_str(), problem = %refusal, "Refused a catalogue model message; rigs following it stay on the model they run.");
                return true;
            }
        };
        if self
            .models
            .get(name)
            .is_some_and(|m| m.version == model.version && m.building == model.building)
        {
            debug!(model = %model.label(), "The catalogue model version in use arrived again.");
            return true;
        }
        info!(model = %model.label(), "A catalogue model version arrived for rigs that follow it.");
        self.models.insert(name.to_owned(), Arc::clone(&model));
        let followers: Vec<_> = self
            .rigs
            .iter()
            .filter(|(rig, _)| self.model.follows(rig) == Some(name))
            .map(|(rig, h)| (rig.clone(), h.events_tx.clone()))
            .collect();
        for (rig, events_tx) in followers {
            tokio::select! {
                sent = events_tx.send(Event::Model(Arc::clone(&model))) => {
                    if sent.is_err() {
                        warn!(rig = %rig, "A rig actor stopped before it could take a model version.");
                    }
                }
                _ = shutdown.cancelled() => return false,
            }
        }
        true
    }

    // ---- end of model adoption ----

    fn reject(&mut self, rig: Option<&RigId>, rejection: Rejection) {
        *self.rejected.entry(rejection.reason).or_default() += 1;
        match rig {
            Some(rig) => {
                warn!(rig = %rig, reason = %rejection.reason, detail = %rejection.detail, "Rejected a frame.")
            }
            None => {
                warn!(reason = %rejection.reason, detail = %rejection.detail, "Rejected a frame.")
            }
        }
    }

    fn snapshot<'r>(
        &self,
        rigs: impl Iterator<Item = (&'r RigId, &'r watch::Receiver<RigStats>)>,
    ) -> TwinStats {
        let store = self.store_stats_rx.borrow().clone();
        let mut frames_rejected_total = self.rejected.clone();
        let rigs: BTreeMap<RigId, RigStats> = rigs
            .map(|(id, stats_rx)| {
                let mut s = stats_rx.borrow().clone();
                if let Some(stored) = store.rigs.get(id) {
                    s.blocks_stored = stored.blocks_stored;
                    s.lines_written = stored.lines_written;
                }
                for (reason, n) in &s.frames_rejected {
                    *frames_rejected_total.entry(*reason).or_default() += n;
                }
                (id.clone(), s)
            })
            .collect();
        TwinStats {
            storage: self.storage.clone(),
            mqtt_connected: self.mqtt_connected,
            mqtt_connection_errors_total: self.mqtt_connection_errors_total,
            rigs,
            frames_rejected_total,
            store,
            model_messages_refused_total: self.models_refused.clone(),
        }
    }

    fn publish(&self) {
        let snapshot = self.snapshot(self.rigs.iter().map(|(id, h)| (id, &h.stats_rx)));
        self.stats_tx.send_replace(snapshot);
    }

    /// The last snapshot, from receivers kept after the rig queues were closed.
    fn publish_final(&mut self, rigs: &[(RigId, watch::Receiver<RigStats>)]) {
        self.mqtt_connected = false;
        let snapshot = self.snapshot(rigs.iter().map(|(id, rx)| (id, rx)));
        self.stats_tx.send_replace(snapshot);
    }
}
