//! Owns every rig's live state: one task holds the MQTT connection (the server's own user),
//! routes each message to its rig's [`RigLive`], broadcasts what browsers should get, answers
//! watch requests with a snapshot and a receiver, and publishes commands. Broadcast channels
//! are bounded: a slow browser loses frames (its connection counts and reports them), never
//! server memory. Knows nothing about HTTP or who may see what.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dtop_auth::Secret;
use dtop_daemon::{Backoff, BrokerAddr, Failover, Retry};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic, Topic, TwinTopic};
use dtop_proto::v1::{Command, CommandAck, RigBirth, RigDeath, SampleBlock, TwinState};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::GainLimit;
use super::rig::{LimitUnknown, Out, RigLive};
use crate::config::{LiveConfig, MqttConfig};

/// At most this many rigs are tracked (rig ids come from the broker and from browsers).
const MAX_RIGS: usize = 1024;

/// The topics the hub subscribes to, with their QoS: all 0. The hub shows the latest of each
/// rig and keeps nothing a browser would miss (births and CBC runs are retained, the rest is
/// superseded a moment later), and on NATS a QoS 0 subscription is a plain NATS one, granted at
/// once even while JetStream re-elects leaders after a node's death; a QoS 1 one is a consumer
/// the gateway may refuse then (ARCHITECTURE.md § NATS), leaving the view blank.
pub fn subscriptions() -> Vec<(String, QoS)> {
    [
        topic::all_rigs(RigTopic::Birth),
        topic::all_rigs(RigTopic::Death),
        topic::all_rigs(RigTopic::Samples),
        topic::all_rigs(RigTopic::Status),
        topic::all_rigs(RigTopic::CmdAck),
        topic::all_twins(TwinTopic::State),
        topic::all_twins(TwinTopic::Status),
        topic::all_twins(TwinTopic::Cbc),
    ]
    .into_iter()
    .map(|filter| (filter, QoS::AtMostOnce))
    .collect()
}

/// What a browser connection gets when it starts watching a rig.
#[derive(Debug)]
pub struct Watch {
    /// The window so far: channels, summary, frames.
    pub snapshot: Vec<Out>,
    /// What comes next.
    pub rx: broadcast::Receiver<Out>,
}

/// Every rig's latest summary and a receiver of the next ones.
pub type Overview = (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>);

enum Request {
    Watch {
        rig: RigId,
        reply: oneshot::Sender<Option<Watch>>,
    },
    Overview {
        reply: oneshot::Sender<Overview>,
    },
    Birth {
        rig: RigId,
        reply: oneshot::Sender<Option<RigBirth>>,
    },
    GainLimit {
        rig: RigId,
        reply: oneshot::Sender<Result<GainLimit, LimitUnknown>>,
    },
}

/// Why a command could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The hub is not connected to the broker.
    #[error("the server is not connected to the MQTT broker")]
    NotConnected,
    /// The MQTT client's queue refused it.
    #[error("the MQTT client could not queue the command: {0}")]
    Queue(String),
}

/// A handle on the hub, shared by handlers.
#[derive(Debug, Clone)]
pub struct LiveHub {
    tx: mpsc::Sender<Request>,
    client: AsyncClient,
    connected: watch::Receiver<bool>,
}

pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl LiveHub {
    /// Starts the hub's task on `mqtt` until `shutdown`.
    pub fn spawn(
        mqtt: &MqttConfig,
        password: Option<&Secret<String>>,
        config: &LiveConfig,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let client_id = format!("{}-live", mqtt.client_id);
        let login = mqtt.username.clone().map(|user| {
            let pw = password.map(|p| p.expose().clone()).unwrap_or_default();
            (user, pw)
        });
        let options = move |broker: &BrokerAddr| {
            let mut options = MqttOptions::new(&client_id, broker.host(), broker.port());
            options.set_keep_alive(Duration::from_secs(10));
            options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
            if let Some((user, pw)) = &login {
                options.set_credentials(user.clone(), pw.clone());
            }
            options
        };
        let failover = Failover::new(mqtt.broker_list());
        let (client, eventloop) = AsyncClient::new(options(failover.current()), 256);
        let (tx, rx) = mpsc::channel(64);
        let (connected_tx, connected) = watch::channel(false);
        let (overview_tx, _) = broadcast::channel(64);
        let task = Task {
            rigs: HashMap::new(),
            window_ns: (config.window_s * 1e9) as u64,
            stale_after_ns: (config.stale_after_s * 1e9) as u64,
            queue_frames: config.queue_frames,
            overview_tx,
        };
        let connection = Connection {
            eventloop,
            failover,
            options: Box::new(options),
        };
        tracker.spawn(task.run(client.clone(), connection, rx, connected_tx, shutdown));
        Self {
            tx,
            client,
            connected,
        }
    }

    /// Starts watching `rig`: its snapshot and a receiver of what follows. `None` when the hub
    /// stopped or tracks too many rigs.
    pub async fn watch(&self, rig: RigId) -> Option<Watch> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Watch { rig, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Every rig's latest summary and a receiver of the next ones.
    pub async fn overview(&self) -> Option<Overview> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Overview { reply }).await.ok()?;
        rx.await.ok()
    }

    /// The rig's latest birth.
    pub async fn birth(&self, rig: RigId) -> Option<RigBirth> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Birth { rig, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// The DVF gain limit the rig's twin published; `None` when the hub stopped.
    pub async fn gain_limit(&self, rig: RigId) -> Option<Result<GainLimit, LimitUnknown>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::GainLimit { rig, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Publishes `command` on its rig's cmd topic at QoS 1.
    ///
    /// # Errors
    /// [`PublishError`] when not connected or the client's queue is full.
    pub fn publish(&self, rig: &RigId, command: &Command) -> Result<(), PublishError> {
        if !*self.connected.borrow() {
            return Err(PublishError::NotConnected);
        }
        self.client
            .try_publish(
                topic::rig(rig, RigTopic::Cmd),
                QoS::AtLeastOnce,
                false,
                command.encode_to_vec(),
            )
            .map_err(|e| PublishError::Queue(e.to_string()))
    }
}

/// The hub's MQTT connection: the event loop, where in the failover list it is, and how to
/// point it at another broker.
struct Connection {
    eventloop: rumqttc::EventLoop,
    failover: Failover,
    options: Box<dyn Fn(&BrokerAddr) -> MqttOptions + Send>,
}

struct Entry {
    live: RigLive,
    tx: broadcast::Sender<Out>,
}

struct Task {
    rigs: HashMap<RigId, Entry>,
    window_ns: u64,
    stale_after_ns: u64,
    queue_frames: usize,
    overview_tx: broadcast::Sender<Arc<str>>,
}

impl Task {
    fn entry(&mut self, rig: &RigId) -> Option<&mut Entry> {
        if !self.rigs.contains_key(rig) {
            if self.rigs.len() >= MAX_RIGS {
                return None;
            }
            let (tx, _) = broadcast::channel(self.queue_frames.max(1));
            self.rigs.insert(
                rig.clone(),
                Entry {
                    live: RigLive::new(rig.as_str(), self.window_ns, self.stale_after_ns),
                    tx,
                },
            );
        }
        self.rigs.get_mut(rig)
    }

    fn send(entry: &Entry, out: Vec<Out>) {
        for o in out {
            // No receiver is fine: nobody watches this rig now.
            let _ = entry.tx.send(o);
        }
    }

    fn on_publish(&mut self, topic_name: &str, payload: &[u8]) {
        let Ok(parsed) = Topic::parse(topic_name) else {
            return;
        };
        let now_ns = now_unix_ns();
        match parsed {
            Topic::Rig(rig, kind) => {
                let Some(entry) = self.entry(&rig) else {
                    return;
                };
                let out = match kind {
                    RigTopic::Birth => match RigBirth::decode(payload) {
                        Ok(b) => entry.live.on_birth(b),
                        Err(e) => {
                            debug!(rig = %rig, error = %e, "Undecodable birth.");
                            Vec::new()
                        }
                    },
                    RigTopic::Death => match RigDeath::decode(payload) {
                        Ok(d) => entry.live.on_death(&d),
                        Err(_) => Vec::new(),
                    },
                    RigTopic::Samples => match SampleBlock::decode(payload) {
                        Ok(b) => entry.live.on_samples(&b, now_ns),
                        Err(_) => Vec::new(),
                    },
                    RigTopic::Status => {
                        if let Ok(v) = serde_json::from_slice(payload) {
                            entry.live.on_edge_status(v);
                        }
                        Vec::new()
                    }
                    RigTopic::CmdAck => match CommandAck::decode(payload) {
                        Ok(a) => entry.live.on_ack(&a),
                        Err(_) => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                Self::send(entry, out);
            }
            Topic::Twin(rig, kind) => {
                let Some(entry) = self.entry(&rig) else {
                    return;
                };
                match kind {
                    TwinTopic::State => {
                        if let Ok(s) = TwinState::decode(payload) {
                            let out = entry.live.on_twin_state(s);
                            Self::send(entry, out);
                        }
                    }
                    TwinTopic::Status => {
                        if let Ok(v) = serde_json::from_slice(payload) {
                            entry.live.on_twin_status(v);
                        }
                    }
                    TwinTopic::Cbc => {
                        if let Ok(v) = serde_json::from_slice(payload) {
                            let out = entry.live.on_twin_cbc(v);
                            Self::send(entry, out);
                        }
                    }
                    TwinTopic::StateJson => {}
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self) {
        let now_ns = now_unix_ns();
        for entry in self.rigs.values_mut() {
            let out = entry.live.tick(now_ns);
            for o in &out {
                if let Out::Status(s) = o {
                    let _ = self.overview_tx.send(Arc::clone(s));
                }
            }
            Self::send(entry, out);
        }
    }

    fn answer(&mut self, request: Request) {
        let now_ns = now_unix_ns();
        match request {
            Request::Watch { rig, reply } => {
                let watch = self.entry(&rig).map(|e| Watch {
                    snapshot: e.live.snapshot(now_ns),
                    rx: e.tx.subscribe(),
                });
                let _ = reply.send(watch);
            }
            Request::Overview { reply } => {
                let mut rigs: Vec<_> = self.rigs.iter().collect();
                rigs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                let summaries = rigs
                    .into_iter()
                    // Rigs only asked for by a browser, never heard from, are not listed.
                    .filter(|(_, e)| e.live.birth().is_some())
                    .map(|(_, e)| Arc::from(e.live.summary(now_ns).to_string()))
                    .collect();
                let _ = reply.send((summaries, self.overview_tx.subscribe()));
            }
            Request::Birth { rig, reply } => {
                let birth = self.rigs.get(&rig).and_then(|e| e.live.birth().cloned());
                let _ = reply.send(birth);
            }
            Request::GainLimit { rig, reply } => {
                let limit = self
                    .rigs
                    .get(&rig)
                    .map_or(Err(LimitUnknown::NoTwinStatus), |e| e.live.gain_limit());
                let _ = reply.send(limit);
            }
        }
    }

    async fn run(
        mut self,
        client: AsyncClient,
        connection: Connection,
        mut rx: mpsc::Receiver<Request>,
        connected_tx: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let Connection {
            mut eventloop,
            mut failover,
            options,
        } = connection;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut retry_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry = retry_at;
            tokio::select! {
                () = shutdown.cancelled() => break,
                request = rx.recv() => match request {
                    Some(r) => self.answer(r),
                    None => break,
                },
                _ = tick.tick() => self.tick(),
                () = async move {
                    if let Some(at) = retry { tokio::time::sleep_until(at).await }
                }, if retry.is_some() => retry_at = None,
                event = eventloop.poll(), if retry.is_none() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(broker = %failover.current(), "Live hub connected to the MQTT broker.");
                        failover.connected(Instant::now().into_std());
                        backoff.reset();
                        let _ = connected_tx.send(true);
                        for (filter, qos) in subscriptions() {
                            if let Err(e) = client.try_subscribe(filter, qos) {
                                warn!(error = %e, "Live hub could not queue a subscription.");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            warn!("The broker refused a live subscription: give the server's MQTT user the `server` role.");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(&p.topic, &p.payload),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = connected_tx.send(false);
                        let failed = failover.current().clone();
                        let delay = match failover.failed(Instant::now().into_std()) {
                            Retry::Now => Duration::ZERO,
                            Retry::AfterBackoff => backoff.next_delay(&mut rand::rng()),
                        };
                        if *failover.current() != failed {
                            // Only the address changes; the event loop keeps its queue.
                            eventloop.mqtt_options = options(failover.current());
                        }
                        warn!(error = %e, broker = %failed, next_broker = %failover.current(), delay_ms = delay.as_millis() as u64, "Live hub lost the MQTT broker; reconnecting.");
                        retry_at = Some(Instant::now() + delay);
                    }
                },
            }
        }
        let _ = client.try_disconnect();
    }
}
