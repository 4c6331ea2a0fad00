//! Owns the MQTT connection: session numbering and its file, the last will, the birth at every
//! CONNACK, QoS 1 block publishing matched to PUBACKs, the drive and controller subscriptions
//! (decoded drives and controller params go to the serial task, never waited for), the
//! acknowledgements of controller params, reconnects with jittered backoff, and the clean goodbye
//! (death + DISCONNECT). Every block goes to the on-disk spool ([`Backlog`]) before MQTT and
//! leaves it only when the twin's persisted watermark covers it; replays are rate-limited and
//! come after live blocks. Blocks lost for good are declared to the twin on `rig/{rig}/loss`
//! ([`LossLedger`]) until its watermark passes them. Params, drives and watermarks pass the
//! owner-epoch [`Fence`] first. Knows nothing of the serial port; blocks arrive ready-made.

use std::path::PathBuf;
use std::time::Duration;

use dtop_daemon::subscriptions::{self, Subscriptions};
use dtop_daemon::{Backoff, BrokerAddr, Failover, Retry};
use dtop_firmware::Manifest;
use dtop_proto::limits::{MAX_CONTROL_BYTES, MAX_MQTT_PACKET_BYTES, MAX_SAMPLE_BLOCK_BYTES};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command_ack::Status as AckStatus;
use dtop_proto::v1::{
    ActuatorDrive, Command, CommandAck, ControllerParams, PersistedWatermark, RigDeath, SampleBlock,
};
use dtop_proto::{Message, RigId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubAck, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, error, info, warn};

use crate::acquisition::wall_clock_ns;
use crate::backlog::{Admitted, Backlog, BacklogConfig, Loss, LossReason, skipped_gap};
use crate::batcher::{block_sample_count, max_encoded_block_bytes};
use crate::birth::{BirthContext, build_birth_with_polled};
use crate::commands::{Action, Journal, JournalEntry, Ledger, Verdict, refused};
use crate::config::{ActuatorConfig, MqttConfig, Secret, SpoolSection};
use crate::fence::{Admission, Fence, Fenced};
use crate::losses::{LEDGER_FILE_NAME, LedgerError, LossLedger, LostRange};
use crate::outbox::{Acked, Control, Outbox};
use crate::safety::{DriveRequest, DriveSource};
use crate::serial::ActuatorRequest;
use crate::state_file;
use crate::stats::{MAX_LOST_RANGES, StatsHandle};

/// Blocks published but not yet acknowledged, at most. Enough to keep a LAN link busy; small
/// enough that rumqttc's own in-flight limit (set above it) never collides packet ids.
pub const WINDOW_BLOCKS: usize = 16;
/// How often the retained status is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest the publisher waits for room in the serial task's queue for an operator command.
pub const COMMAND_HANDOVER_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the goodbye waits for the death's PUBACK and for the DISCONNECT to be written.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often replay credit is topped up (`[spool] replay_blocks_per_s` spread over the second).
pub const REPLAY_TICK: Duration = Duration::from_millis(20);
/// Uncovered loss declarations repeated per status period (and after a connect), oldest first:
/// the twin's watermark needs them in that order, and a burst must not fill rumqttc's request
/// queue ahead of blocks and drives.
pub const LOSS_REDECLARE_PER_PERIOD: usize = 8;

/// What the publisher is fed, in order.
#[derive(Debug, Clone)]
pub enum PublisherEvent {
    /// The firmware's (possibly new) manifest: the birth describes it.
    Manifest(Box<Manifest>),
    Block(SampleBlock),
    /// The serial task's answer to controller params, for cmd/ack.
    ControllerAck(ControllerAck),
    /// The serial task's decision on an operator command, for the journal and cmd/ack.
    CommandAck(CommandAck),
}

/// What the inner loop did with controller params of `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerAck {
    pub version: u64,
    /// The first sample index it ran on (or, switching off, the last drive's), or why not.
    pub result: Result<u64, String>,
}

impl ControllerAck {
    /// The `CommandAck` the twin waits for: command id `controller/{version}`.
    pub fn to_command_ack(&self, rig_id: &RigId) -> CommandAck {
        let (status, applied_at_sample_index, reason) = match &self.result {
            Ok(at) => (AckStatus::Applied, *at, String::new()),
            Err(reason) => (AckStatus::Refused, 0, reason.clone()),
        };
        CommandAck {
            command_id: controller_command_id(self.version),
            rig_id: rig_id.to_string(),
            status: status as i32,
            applied_at_sample_index,
            reason,
        }
    }
}

/// The command id under which controller params of `version` are acknowledged.
pub fn controller_command_id(version: u64) -> String {
    format!("controller/{version}")
}

/// What the publisher needs from the configuration and the state directory.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub rig_id: RigId,
    pub mqtt: MqttConfig,
    pub client_id: String,
    pub password: Option<Secret>,
    pub actuator: ActuatorConfig,
    /// Where the session counter lives.
    pub session_path: PathBuf,
    /// Session of the last successful connect (0 if none ever).
    pub last_session: u64,
    /// Where the highest owner epoch seen is kept (`crate::fence`).
    pub owner_epoch_path: PathBuf,
    /// The owner epoch a previous run persisted (`None`: never one).
    pub owner_epoch: Option<u64>,
    /// The polled Modbus channels, announced in the birth after the firmware's.
    pub polled_channels: Vec<dtop_proto::v1::Channel>,
    /// The Modbus shaker amplifier and its device, for `Excitation` commands.
    pub shaker: Option<(
        crate::modbus::config::ModbusShakerConfig,
        crate::modbus::config::DeviceConfig,
    )>,
    /// `[spool]`.
    pub spool: SpoolSection,
    pub spool_dir: PathBuf,
    /// `[acquisition] block_samples`, to size the spool.
    pub block_samples: usize,
    /// The acquisition task's `next_seq` at start: seqs between the spool's last one and it
    /// were numbered before a crash and never spooled.
    pub next_seq_at_start: u64,
}

impl PublisherConfig {
    /// The loss ledger, in the state directory beside the session counter.
    pub fn loss_ledger_path(&self) -> PathBuf {
        self.session_path.with_file_name(LEDGER_FILE_NAME)
    }
}

/// The MQTT connection's owner. Created with [`Publisher::new`], driven by [`Publisher::run`].
#[derive(Debug)]
pub struct Publisher {
    config: PublisherConfig,
    client: AsyncClient,
    topic_samples: String,
    topic_birth: String,
    topic_death: String,
    topic_drive: String,
    topic_controller: String,
    topic_cmd: String,
    topic_cmd_ack: String,
    topic_status: String,
    topic_persisted: String,
    topic_loss: String,
    /// Lost seq ranges the twin's watermark has not passed yet; declared until it does.
    losses: LossLedger,
    /// Every block until the twin's watermark covers it; `None` before the first manifest or
    /// when the spool cannot be opened (then blocks live in memory only, as without a spool).
    backlog: Option<Backlog>,
    /// Backfill blocks that may be replayed now (token bucket, topped up every [`REPLAY_TICK`]).
    replay_credit: f64,
    /// The lost seq after the watermark last reported, so it is logged once.
    blocked_gap: Option<u64>,
    /// Seqs below `next_seq_at_start` the previous run may have left unused that the spool
    /// cannot bound (it holds no seq): the first watermark bounds them instead.
    skipped_unbounded: bool,
    /// The last watermark seen, also before the spool is open (it may arrive first).
    last_watermark: Option<u64>,
    /// The highest owner epoch seen: what a twin's params, drives and watermarks must carry.
    fence: Fence,
    /// Every command decision, by id; answers redeliveries.
    ledger: Ledger,
    /// Where decisions become durable before they are acknowledged.
    journal: Journal,
    /// Decoded drives go here, to the serial task; `try_send` only, a late drive is useless.
    requests_tx: mpsc::Sender<ActuatorRequest>,
    outbox: Outbox,
    manifest: Option<Box<Manifest>>,
    /// Session of the current (or last) connection.
    session: u64,
    connected: bool,
    connected_once: bool,
    /// Which broker of `[mqtt] brokers` (or the one `host`) to connect to next.
    failover: Failover,
    backoff: Backoff,
    /// This connection's SUBSCRIBEs, and the filters a SUBACK refused, asked again later.
    subscriptions: Subscriptions<SubscribeFilter>,
    rng: StdRng,
    stats: StatsHandle,
}

/// rumqttc options for this edge to connect to `broker`; the last will announces
/// `will_session`.
pub fn mqtt_options(
    config: &PublisherConfig,
    broker: &BrokerAddr,
    will_session: u64,
) -> MqttOptions {
    let mut options = MqttOptions::new(config.client_id.clone(), broker.host(), broker.port());
    options
        .set_keep_alive(config.mqtt.keepalive())
        .set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES)
        // Unacknowledged blocks are re-sent by the outbox itself, so a fresh session each time
        // keeps rumqttc from replaying anything behind our back.
        .set_clean_session(true)
        .set_inflight((WINDOW_BLOCKS + 4) as u16)
        .set_last_will(will(&config.rig_id, will_session));
    if let Some(user) = &config.mqtt.username {
        let password = config
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    options
}

/// The last will: a `RigDeath` with an empty reason, QoS 1, not retained.
fn will(rig_id: &RigId, session: u64) -> LastWill {
    let death = RigDeath {
        rig_id: rig_id.to_string(),
        session,
        reason: String::new(),
    };
    LastWill::new(
        topic::rig(rig_id, RigTopic::Death),
        death.encode_to_vec(),
        QoS::AtLeastOnce,
        false,
    )
}

impl Publisher {
    pub fn new(
        config: PublisherConfig,
        requests_tx: mpsc::Sender<ActuatorRequest>,
        commands: (Journal, Ledger),
        stats: StatsHandle,
    ) -> (Self, EventLoop) {
        let (journal, ledger) = commands;
        let failover = Failover::new(config.mqtt.broker_list());
        let options = mqtt_options(&config, failover.current(), config.last_session + 1);
        let (client, mut eventloop) = AsyncClient::new(options, WINDOW_BLOCKS + 8);
        eventloop
            .network_options
            .set_connection_timeout(config.mqtt.connect_timeout_s);
        // Drives, commands and acks are small packets that must not wait for Nagle's
        // algorithm to coalesce them with the next write (40 ms with delayed ACKs).
        eventloop.network_options.set_tcp_nodelay(true);
        let backoff = Backoff::new(
            config.mqtt.reconnect_backoff_min(),
            config.mqtt.reconnect_backoff_max(),
        );
        let outbox = Outbox::new(config.mqtt.queue_max_blocks, WINDOW_BLOCKS);
        let publisher = Self {
            topic_samples: topic::rig(&config.rig_id, RigTopic::Samples),
            topic_birth: topic::rig(&config.rig_id, RigTopic::Birth),
            topic_death: topic::rig(&config.rig_id, RigTopic::Death),
            topic_drive: topic::rig(&config.rig_id, RigTopic::Drive),
            topic_controller: topic::rig(&config.rig_id, RigTopic::Controller),
            topic_cmd: topic::rig(&config.rig_id, RigTopic::Cmd),
            topic_status: topic::rig(&config.rig_id, RigTopic::Status),
            topic_cmd_ack: topic::rig(&config.rig_id, RigTopic::CmdAck),
            topic_persisted: topic::rig(&config.rig_id, RigTopic::Persisted),
            topic_loss: topic::rig(&config.rig_id, RigTopic::Loss),
            losses: open_ledger(&config.loss_ledger_path()),
            backlog: None,
            replay_credit: 0.0,
            blocked_gap: None,
            skipped_unbounded: false,
            last_watermark: None,
            fence: Fence::new(config.owner_epoch),
            ledger,
            journal,
            requests_tx,
            session: config.last_session,
            config,
            client,
            outbox,
            manifest: None,
            connected: false,
            connected_once: false,
            failover,
            backoff,
            // Checked on the status tick, so the shortest wait is rounded up to it.
            subscriptions: Subscriptions::new(subscriptions::RETRY_MIN, subscriptions::RETRY_MAX),
            rng: StdRng::from_os_rng(),
            stats,
        };
        let (uncovered, owner_epoch) = (publisher.losses.len(), publisher.fence.current());
        publisher.stats.update(|s| {
            s.lost_ranges_uncovered = uncovered;
            s.owner_epoch = owner_epoch;
        });
        (publisher, eventloop)
    }

    /// Connects once the first manifest arrives, publishes until `events_rx` closes, flushes
    /// for at most `shutdown_flush_timeout_ms`, then says goodbye.
    pub async fn run(
        mut self,
        mut eventloop: EventLoop,
        mut events_rx: mpsc::Receiver<PublisherEvent>,
    ) {
        // A birth needs the manifest; nothing is worth connecting for before it.
        loop {
            match events_rx.recv().await {
                Some(PublisherEvent::Manifest(m)) => {
                    self.open_backlog(&m);
                    self.manifest = Some(m);
                    break;
                }
                Some(PublisherEvent::Block(b)) => self.enqueue(b),
                // Params only arrive over a connection, and there has been none yet.
                Some(PublisherEvent::ControllerAck(a)) => {
                    debug!(ack = ?a, "Dropped a controller acknowledgement from before any connection.")
                }
                Some(PublisherEvent::CommandAck(a)) => self.decided(a),
                None => return,
            }
        }

        let mut upstream_open = true;
        let mut flush_deadline: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        // Stands in for "no deadline" in select! branches, which evaluate disabled futures too.
        let far_future = || Instant::now() + Duration::from_secs(365 * 86_400);
        let mut status_tick = tokio::time::interval(STATUS_INTERVAL);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut replay_tick = tokio::time::interval(REPLAY_TICK);
        replay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !upstream_open && self.outbox.blocks_done() {
                break;
            }
            if let Some(at) = retry_at {
                let deadline = flush_deadline.unwrap_or_else(far_future);
                tokio::select! {
                    () = sleep_until(at) => retry_at = None,
                    event = events_rx.recv(), if upstream_open => {
                        self.on_upstream(event, &mut upstream_open, &mut flush_deadline);
                    }
                    () = sleep_until(deadline), if flush_deadline.is_some() => break,
                }
                continue;
            }
            // The poll future is kept across upstream events and only dropped at shutdown:
            // rumqttc's poll is not safe to cancel mid-write in general.
            let polled = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    let deadline = flush_deadline.unwrap_or_else(far_future);
                    tokio::select! {
                        biased;
                        polled = &mut poll => break Some(polled),
                        event = events_rx.recv(), if upstream_open => {
                            self.on_upstream(event, &mut upstream_open, &mut flush_deadline);
                            if !upstream_open && self.outbox.blocks_done() {
                                break None;
                            }
                        }
                        () = sleep_until(deadline), if flush_deadline.is_some() => break None,
                        _ = status_tick.tick() => {
                            self.resubscribe_due();
                            self.check_backlog();
                            self.publish_status();
                        }
                        _ = replay_tick.tick(), if self.backlog.as_ref().is_some_and(Backlog::replaying) => {
                            self.top_up_replay_credit();
                            self.pump();
                        }
                    }
                }
            };
            match polled {
                None => break,
                Some(Ok(event)) => self.on_mqtt_event(event, &mut eventloop).await,
                Some(Err(e)) => {
                    retry_at = Some(Instant::now() + self.on_connection_error(&e, &mut eventloop));
                }
            }
        }
        self.goodbye(&mut eventloop).await;
    }

    fn on_upstream(
        &mut self,
        event: Option<PublisherEvent>,
        upstream_open: &mut bool,
        flush_deadline: &mut Option<Instant>,
    ) {
        match event {
            Some(PublisherEvent::Block(block)) => self.enqueue(block),
            Some(PublisherEvent::ControllerAck(ack)) => {
                self.publish_ack(&ack.to_command_ack(&self.config.rig_id))
            }
            Some(PublisherEvent::CommandAck(ack)) => self.decided(ack),
            Some(PublisherEvent::Manifest(m)) => {
                if self.manifest.as_deref() != Some(&*m) {
                    info!("Firmware manifest changed; publishing a new birth.");
                    self.manifest = Some(m);
                    if self.connected {
                        self.publish_birth();
                    }
                }
            }
            None => {
                *upstream_open = false;
                *flush_deadline = Some(Instant::now() + self.config.mqtt.shutdown_flush_timeout());
                info!(
                    queued_blocks = self.outbox.queued(),
                    unacked_blocks = self.outbox.blocks_unacked(),
                    "Sampling stopped; flushing queued blocks to the broker."
                );
            }
        }
    }

    fn enqueue(&mut self, mut block: SampleBlock) {
        let samples = block_sample_count(&block) as u64;
        self.stats.update(|s| s.samples_produced_total += samples);
        if let Some(backlog) = &mut self.backlog {
            match backlog.append(&block) {
                Ok(Admitted::Stored { losses }) => {
                    for loss in losses {
                        self.account_loss(&loss);
                    }
                    // While offline after a connection the spool alone holds it, and the
                    // reconnect replays it; before the first connect it waits live in memory.
                    if self.connected || !self.connected_once {
                        // Blocks the queue bound pushes out are in the spool: a stalled
                        // watermark replays them, so they are not lost.
                        let _spooled = self.outbox.push(block);
                        self.pump();
                    }
                    self.update_backlog_stats();
                    return;
                }
                Ok(Admitted::Paused(loss)) => {
                    self.account_loss(&loss);
                    return;
                }
                Err(e) => {
                    // Memory only, as without a spool: published if the connection allows.
                    error!(error = %e, seq = block.seq, "Could not spool a block; it is kept in memory only.");
                }
            }
        }
        if self.connected_once && !self.connected {
            block.backfill = true;
        }
        let dropped = self.outbox.push(block);
        self.account_drops(dropped, "queue_full");
        self.pump();
    }

    /// Opens the spool, sized from the first manifest's rate and channels. A failure leaves
    /// the edge publishing from memory (logged; `spool_ok` stays false).
    fn open_backlog(&mut self, manifest: &Manifest) {
        let sp = &self.config.spool;
        let rate_hz = f64::from(manifest.sample_rate_mhz) / 1000.0;
        let capacity_bytes = sp.capacity_bytes(
            rate_hz,
            usize::from(manifest.channel_count),
            self.config.block_samples,
        );
        let config = BacklogConfig {
            dir: self.config.spool_dir.clone(),
            capacity_bytes,
            full: sp.full(),
            fsync: sp.fsync(),
            stall_after: sp.stall(),
        };
        match Backlog::open(&config) {
            Ok(backlog) => {
                let recovery = backlog.spool().recovery();
                info!(
                    dir = %config.dir.display(),
                    capacity_bytes,
                    capacity_s = sp.capacity_s,
                    unacked_blocks = backlog.blocks(),
                    backlog_s = backlog.backlog_s(),
                    torn_tails = recovery.torn_tails,
                    corrupt_segments = recovery.corrupt_segments,
                    "Opened the block spool."
                );
                let gap = backlog.crash_gap(self.config.next_seq_at_start);
                self.skipped_unbounded =
                    backlog.spool().last_seq().is_none() && self.config.next_seq_at_start > 0;
                // Seqs missing inside the spool that no recorded loss explains.
                let corrupt = self.losses.unexplained(backlog.holes_at_open());
                self.backlog = Some(backlog);
                self.stats.update(|s| s.spool_ok = true);
                for (first_seq, last_seq) in corrupt {
                    self.account_loss(&Loss {
                        reason: LossReason::SpoolCorrupt,
                        blocks: last_seq - first_seq + 1,
                        samples: 0,
                        first_seq,
                        last_seq,
                    });
                }
                if let Some(loss) = gap {
                    self.account_loss(&loss);
                }
                self.declare_unbounded_skip();
                self.update_backlog_stats();
            }
            Err(e) => {
                self.skipped_unbounded = self.config.next_seq_at_start > 0;
                error!(dir = %config.dir.display(), error = %e, "Cannot open the block spool; blocks live in memory only and an outage loses them.");
                self.declare_unbounded_skip();
            }
        }
    }

    /// Declares the previous run's unused reservation skipped from the twin's watermark on,
    /// once one is known, when the spool could not bound it (it held no seq).
    fn declare_unbounded_skip(&mut self) {
        let Some(w) = self.last_watermark.filter(|_| self.skipped_unbounded) else {
            return;
        };
        self.skipped_unbounded = false;
        // Everything up to the watermark is accounted; the rest below this run's start was
        // the previous run's reservation, used or not.
        if let Some(gap) = skipped_gap(w, self.config.next_seq_at_start) {
            self.account_loss(&gap);
        }
    }

    /// Counts and logs blocks given up, and declares them to the twin (kept in the ledger
    /// until its watermark passes them).
    fn account_loss(&mut self, loss: &Loss) {
        self.declare_loss(loss);
        let reason = loss.reason.as_str();
        if loss.reason == LossReason::Skipped {
            // Mostly seqs never used: counted apart from lost blocks (their samples, if
            // any, are unknown).
            warn!(
                reason,
                seqs = loss.blocks,
                first_seq = loss.first_seq,
                last_seq = loss.last_seq,
                "Declared the previous run's unused seq reservation skipped (it did not stop cleanly); blocks it numbered but never spooled are among them."
            );
            self.stats.update(|s| s.seqs_skipped_total += loss.blocks);
            return;
        }
        let certain = loss.reason != LossReason::EvictedUnconfirmed;
        if certain {
            error!(
                reason,
                blocks = loss.blocks,
                samples = loss.samples,
                first_seq = loss.first_seq,
                last_seq = loss.last_seq,
                "Lost sample blocks."
            );
        } else {
            warn!(
                reason,
                blocks = loss.blocks,
                samples = loss.samples,
                first_seq = loss.first_seq,
                last_seq = loss.last_seq,
                "Evicted blocks the broker had but no watermark covered yet; they cannot be sent again."
            );
        }
        self.stats.update(|s| {
            *s.samples_dropped_by_reason.entry(reason).or_default() += loss.samples;
            if certain {
                s.samples_dropped_total += loss.samples;
                *s.blocks_dropped_by_reason.entry(reason).or_default() += loss.blocks;
                match s.lost_seq_ranges.last_mut() {
                    Some(last) if last.1 + 1 == loss.first_seq => last.1 = loss.last_seq,
                    _ => s.lost_seq_ranges.push((loss.first_seq, loss.last_seq)),
                }
                let excess = s.lost_seq_ranges.len().saturating_sub(MAX_LOST_RANGES);
                s.lost_seq_ranges.drain(..excess);
            }
        });
    }

    /// Records `loss` in the ledger (saved at once) and publishes its declaration.
    fn declare_loss(&mut self, loss: &Loss) {
        if loss.first_seq > loss.last_seq {
            return;
        }
        let (pieces, forgotten) = self.losses.add(loss, wall_clock_ns());
        if forgotten > 0 {
            error!(
                forgotten,
                max_ranges = crate::losses::MAX_LEDGER_RANGES,
                "Too many lost seq ranges wait for the twin's watermark (is the twin older than loss declarations?); forgot the oldest."
            );
        }
        self.save_ledger();
        for piece in &pieces {
            self.publish_loss(piece);
        }
    }

    fn save_ledger(&mut self) {
        if let Err(e) = self.losses.save() {
            error!(error = %e, "Could not save the loss ledger; a restart may not declare these losses again.");
        }
        let ranges = self.losses.len();
        self.stats.update(|s| s.lost_ranges_uncovered = ranges);
    }

    /// One `SeqLoss` on `rig/{rig}/loss`, QoS 1; skipped while offline (the ledger repeats it).
    fn publish_loss(&mut self, range: &LostRange) {
        if !self.connected {
            return;
        }
        let message = range.to_seq_loss(self.config.rig_id.as_str(), self.session);
        match self.client.try_publish(
            self.topic_loss.clone(),
            QoS::AtLeastOnce,
            false,
            message.encode_to_vec(),
        ) {
            Ok(()) => {
                self.outbox.mark_control_handed(Control::Loss);
                self.stats.update(|s| s.loss_declarations_total += 1);
            }
            Err(e) => {
                debug!(error = %e, first_seq = range.first_seq, "MQTT request channel full; the loss declaration is repeated later.")
            }
        }
    }

    /// Repeats the oldest declarations the twin's watermark has not passed (a broker restart
    /// may have lost them, or a twin restart forgotten them).
    fn redeclare_losses(&mut self) {
        let ranges: Vec<LostRange> = self
            .losses
            .uncovered()
            .take(LOSS_REDECLARE_PER_PERIOD)
            .copied()
            .collect();
        for range in &ranges {
            self.publish_loss(range);
        }
    }

    fn update_backlog_stats(&self) {
        let Some(b) = &self.backlog else {
            return;
        };
        let (blocks, backlog_s, bytes, w) =
            (b.blocks(), b.backlog_s(), b.unacked_bytes(), b.watermark());
        self.stats.update(|s| {
            s.backlog_blocks = blocks;
            s.backlog_s = backlog_s;
            s.backlog_bytes = bytes;
            s.persisted_seq = w;
        });
    }

    /// Once a second: fsync the spool and the loss ledger if due, repeat uncovered loss
    /// declarations, and replay when the watermark stalled.
    fn check_backlog(&mut self) {
        if let Err(e) = self.losses.sync() {
            error!(error = %e, "Could not fsync the loss ledger.");
        }
        if self.connected {
            self.redeclare_losses();
        }
        let declared_gap = |losses: &LossLedger, gap: u64| {
            losses
                .uncovered()
                .any(|r| r.first_seq <= gap && gap <= r.last_seq)
        };
        let Some(backlog) = &mut self.backlog else {
            return;
        };
        if let Err(e) = backlog.sync() {
            error!(error = %e, "Could not fsync the block spool.");
        }
        if !self.connected {
            return;
        }
        match backlog.check_stall(Instant::now()) {
            Ok(false) => {}
            Ok(true) => {
                info!(
                    persisted_seq = ?backlog.watermark(),
                    unacked_blocks = backlog.blocks(),
                    "The twin's watermark stalled below blocks sent a while ago; sending them again as backfill, after the birth."
                );
                // A twin holds a session's blocks until it sees the session's birth. A broker
                // node that dies between taking the birth and storing it as retained (a NATS
                // JetStream re-election) leaves the twin waiting for ever; the birth again
                // is harmless to a twin that has it (same session, same manifest).
                self.publish_birth();
            }
            Err(gap) => {
                match backlog.release_past_gap(Instant::now()) {
                    Ok(r) if r.blocks > 0 => {
                        debug!(
                            blocks = r.blocks,
                            samples = r.samples,
                            "Released blocks past a lost seq on the broker's PUBACK."
                        );
                        self.stats
                            .update(|s| s.samples_released_unconfirmed_total += r.samples);
                    }
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "Could not release spooled blocks."),
                }
                if self.blocked_gap != Some(gap) {
                    self.blocked_gap = Some(gap);
                    if declared_gap(&self.losses, gap) {
                        // A current twin passes a declared loss within a status period or two.
                        warn!(
                            persisted_seq = ?backlog.watermark(),
                            missing_seq = gap,
                            "The twin's watermark has not passed a declared loss for stall_s (a twin older than loss declarations?); blocks after it are released on the broker's PUBACK, unconfirmed."
                        );
                    } else {
                        warn!(
                            persisted_seq = ?backlog.watermark(),
                            missing_seq = gap,
                            "The twin's watermark waits for a block this edge no longer has and never declared lost; blocks after it are released on the broker's PUBACK, unconfirmed."
                        );
                    }
                }
            }
        }
        self.update_backlog_stats();
        self.pump();
    }

    fn top_up_replay_credit(&mut self) {
        let rate = f64::from(self.config.spool.replay_blocks_per_s);
        let per_tick = rate * REPLAY_TICK.as_secs_f64();
        // A burst of at most a tenth of a second (or one block).
        self.replay_credit = (self.replay_credit + per_tick).min((rate / 10.0).max(1.0));
    }

    /// A watermark on the persisted topic: releases what it covers, unless it is fenced off.
    async fn on_persisted(&mut self, payload: &[u8]) {
        let w = match PersistedWatermark::decode(payload) {
            Ok(w) if w.rig_id == self.config.rig_id.as_str() => w,
            Ok(w) => {
                warn!(rig = %w.rig_id, "Ignored a persisted watermark for another rig.");
                return;
            }
            Err(e) => {
                warn!(error = %e, "Ignored an undecodable persisted watermark.");
                return;
            }
        };
        if self
            .pass_fence(Fenced::Watermark, w.owner_epoch)
            .await
            .is_err()
        {
            return;
        }
        if self.losses.covered_by(w.seq) > 0 {
            self.save_ledger();
        }
        self.last_watermark = Some(self.last_watermark.map_or(w.seq, |l| l.max(w.seq)));
        self.declare_unbounded_skip();
        let Some(backlog) = &mut self.backlog else {
            return;
        };
        match backlog.on_watermark(w.seq, Instant::now()) {
            Ok(released) => {
                self.stats
                    .update(|s| s.samples_stored_total += released.samples);
                debug!(
                    seq = w.seq,
                    blocks = released.blocks,
                    "The twin's watermark released spooled blocks."
                );
            }
            Err(e) => error!(error = %e, seq = w.seq, "Could not release spooled blocks."),
        }
        self.update_backlog_stats();
    }

    /// Hands queued blocks to the client while connected and the window has room.
    fn pump(&mut self) {
        if self.connected {
            while let Some(block) = self.outbox.next_block() {
                block.session = self.session;
                let payload = block.encode_to_vec();
                if payload.len() > MAX_SAMPLE_BLOCK_BYTES {
                    // Config validation makes this unreachable; never send what subscribers refuse.
                    let oversized = self.outbox.discard_next();
                    self.account_drops(oversized.into_iter().collect(), "oversized");
                    continue;
                }
                match self.client.try_publish(
                    self.topic_samples.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                ) {
                    Ok(()) => self.outbox.mark_block_handed(),
                    Err(e) => {
                        debug!(error = %e, "MQTT request channel full; will retry on the next event.");
                        break;
                    }
                }
            }
        }
        if self.connected && self.outbox.queued() == 0 {
            self.pump_replay();
        }
        let queued = self.outbox.queued();
        self.stats.update(|s| s.queued_blocks = queued);
    }

    /// Hands backfill blocks from the spool to the client, behind live ones, within the window
    /// and the replay credit.
    fn pump_replay(&mut self) {
        while self.replay_credit >= 1.0 && self.outbox.window_has_room() {
            let Some(backlog) = &mut self.backlog else {
                return;
            };
            let block = match backlog.next_replay() {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    error!(error = %e, "Could not read the block spool; the replay stops.");
                    return;
                }
            };
            self.replay_credit -= 1.0;
            let _ = self.outbox.push(block);
            let Some(block) = self.outbox.next_block() else {
                return;
            };
            block.session = self.session;
            let payload = block.encode_to_vec();
            match self.client.try_publish(
                self.topic_samples.clone(),
                QoS::AtLeastOnce,
                false,
                payload,
            ) {
                Ok(()) => {
                    self.outbox.mark_block_handed();
                    self.stats.update(|s| s.blocks_replayed_total += 1);
                }
                Err(e) => {
                    debug!(error = %e, "MQTT request channel full; the replay resumes on the next event.");
                    return;
                }
            }
        }
    }

    async fn on_mqtt_event(&mut self, event: Event, eventloop: &mut EventLoop) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connected(eventloop).await,
            Event::Incoming(Packet::PubAck(ack)) => self.on_puback(ack.pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => self.outbox.on_outgoing_publish(pkid),
            Event::Outgoing(Outgoing::Subscribe(pkid)) if !self.subscriptions.went_out(pkid) => {
                debug!(pkid, "A SUBSCRIBE from before this connection went out.");
            }
            Event::Incoming(Packet::SubAck(ack)) => self.on_suback(&ack),
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_drive => {
                self.on_drive(&p.payload).await
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_controller => {
                self.on_controller(&p.payload).await
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_cmd => {
                self.on_command(&p.payload).await
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_persisted => {
                self.on_persisted(&p.payload).await
            }
            Event::Incoming(Packet::Publish(p)) => {
                debug!(topic = %p.topic, "Ignored a publish on a topic the edge did not ask for.")
            }
            _ => {}
        }
    }

    /// Matches the SUBACK to its SUBSCRIBE; each refused filter is logged and asked for again
    /// after a backoff ([`Subscriptions`]), so a passing refusal (NATS under a leader
    /// election) does not leave the edge deaf to it for the rest of the connection.
    fn on_suback(&mut self, ack: &SubAck) {
        let granted: Vec<bool> = ack
            .return_codes
            .iter()
            .map(|c| matches!(c, SubscribeReasonCode::Success(_)))
            .collect();
        let answer = match self.subscriptions.answered(
            ack.pkid,
            &granted,
            std::time::Instant::now(),
            &mut self.rng,
        ) {
            Ok(answer) => answer,
            Err(e) => {
                debug!(error = %e, "Ignored a SUBACK from before this connection.");
                return;
            }
        };
        let retry_in_ms = answer
            .retry_in
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        for filter in &answer.refused {
            let topic = filter.path.as_str();
            let lost = if topic == self.topic_drive {
                "the actuator is not driven"
            } else if topic == self.topic_controller {
                "the inner loop cannot be changed"
            } else if topic == self.topic_cmd {
                "operators cannot command this rig"
            } else {
                "spooled blocks cannot be released"
            };
            error!(
                topic,
                retry_in_ms,
                "The broker refused a subscription; {lost} until it is granted. Asking again."
            );
        }
        let is_drive = |f: &SubscribeFilter| f.path == self.topic_drive;
        if answer.granted.iter().any(is_drive) {
            debug!(topic = %self.topic_drive, "Subscribed to actuator drives.");
            self.stats.update(|s| s.drive_subscribed = true);
        } else if answer.refused.iter().any(is_drive) {
            self.stats.update(|s| s.drive_subscribed = false);
        }
    }

    /// Asks again for the filters whose retry is due; on the status tick, while connected.
    fn resubscribe_due(&mut self) {
        if !self.connected {
            return;
        }
        let Some(filters) = self.subscriptions.due(std::time::Instant::now()) else {
            return;
        };
        match self.client.try_subscribe_many(filters.clone()) {
            Ok(()) => {
                info!(
                    topics = ?filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
                    "Asking the broker again for the subscriptions it refused."
                );
                self.subscriptions.asked(filters);
            }
            Err(e) => {
                error!(error = %e, "Could not ask for the refused subscriptions again; the next connection will.")
            }
        }
    }

    /// One message from the drive topic: decoded, checked, handed to the serial task without
    /// waiting. Nothing a publisher sends here can stop the edge; bad input is counted and logged.
    async fn on_drive(&mut self, payload: &[u8]) {
        self.stats.update(|s| s.drives_received_total += 1);
        let decoded = if payload.len() > MAX_CONTROL_BYTES {
            Err(DriveProblem::Oversized)
        } else {
            match ActuatorDrive::decode(payload) {
                Err(_) => Err(DriveProblem::Undecodable),
                Ok(d) if d.rig_id != self.config.rig_id.as_str() => Err(DriveProblem::WrongRig),
                Ok(d) => Ok(d),
            }
        };
        let drive = match decoded {
            Ok(drive) => drive,
            Err(problem) => {
                let mut total = 0;
                self.stats.update(|s| {
                    s.drives_bad_total += 1;
                    total = s.drives_bad_total;
                });
                // A misbehaving sender may flood the topic; a power-of-two cadence keeps the
                // log readable while the count keeps growing.
                if total.is_power_of_two() {
                    warn!(
                        reason = problem.as_str(),
                        bytes = payload.len(),
                        drives_bad_total = total,
                        "Ignored a bad message on the drive topic."
                    );
                }
                return;
            }
        };
        // A fenced drive is counted and logged, never acknowledged: drives never are, and
        // without fresh ones the envelope ramps the actuator down on its own.
        if self
            .pass_fence(Fenced::Drive, drive.owner_epoch)
            .await
            .is_err()
        {
            return;
        }
        let request = ActuatorRequest::Drive(DriveRequest {
            force_n: drive.force_n,
            sample_index: drive.sample_index,
            source: DriveSource::Twin {
                controller_version: drive.controller_version,
            },
        });
        let reason = match self.requests_tx.try_send(request) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "queue_full",
            Err(TrySendError::Closed(_)) => "serial_task_gone",
        };
        let mut total = 0;
        self.stats.update(|s| {
            s.drives_dropped_total += 1;
            total = s.drives_dropped_total;
        });
        if total.is_power_of_two() {
            warn!(
                reason,
                drives_dropped_total = total,
                "Dropped an actuator drive the serial task could not take."
            );
        }
    }

    /// An operator command: answered from the ledger if already decided, refused or expired
    /// here if it cannot apply, else journalled as pending and handed to the serial task
    /// (actuator commands) or applied here (rebirth).
    async fn on_command(&mut self, payload: &[u8]) {
        let command = match Command::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                // Without an id there is nothing to acknowledge.
                warn!(error = %e, bytes = payload.len(), "Ignored an undecodable command.");
                return;
            }
        };
        let verdict = self
            .ledger
            .admit(&self.config.rig_id, &command, wall_clock_ns());
        let (id, action) = match verdict {
            Verdict::NotMine => return,
            Verdict::Answer { ack, fresh: false } => {
                debug!(command_id = %ack.command_id, "Answered a repeated command id again without applying it.");
                self.publish_ack(&ack);
                return;
            }
            Verdict::Answer { ack, fresh: true } => {
                self.decided(ack);
                return;
            }
            Verdict::Apply { id, action } => (id, action),
        };
        info!(command_id = %id, issued_by = %command.issued_by, action = ?action, "Applying an operator command.");
        if action == Action::SafetyStop {
            // Top priority: the stop goes to the actuator before any disk write. It is
            // idempotent, so applying a redelivered one after a crash is harmless.
            self.ledger.begin(&id);
            self.hand_to_serial(id, action).await;
            return;
        }
        if let Err(e) = self.journal.append(&JournalEntry::pending(&id)) {
            error!(error = %e, path = %self.journal.path().display(), "Cannot journal a command; refusing it rather than risk applying it twice.");
            let ack = refused(
                &self.config.rig_id,
                &id,
                &format!("the edge cannot write its command journal: {e}"),
            );
            self.decided(ack);
            return;
        }
        self.ledger.begin(&id);
        match action {
            Action::Rebirth => {
                if self.connected {
                    self.publish_birth();
                }
                self.decided(CommandAck {
                    command_id: id,
                    rig_id: self.config.rig_id.to_string(),
                    status: AckStatus::Applied as i32,
                    applied_at_sample_index: 0,
                    reason: String::new(),
                });
            }
            Action::SetAcquisition { block_samples } => {
                let worst = max_encoded_block_bytes(
                    dtop_firmware::MAX_CHANNELS,
                    block_samples.max(1) as usize,
                );
                if block_samples == 0 || worst > MAX_SAMPLE_BLOCK_BYTES {
                    let ack = refused(
                        &self.config.rig_id,
                        &id,
                        &format!(
                            "block_samples {block_samples} must be at least 1 and fit the \
                             {MAX_SAMPLE_BLOCK_BYTES} byte block limit (worst case {worst} bytes)"
                        ),
                    );
                    self.decided(ack);
                } else {
                    // The serial task passes it to the acquisition task, behind the samples
                    // already read, which applies it at a block boundary and acknowledges.
                    self.hand_to_serial(id, Action::SetAcquisition { block_samples })
                        .await;
                }
            }
            Action::Excitation {
                waveform,
                amplitude_n,
                frequency_hz,
                frequency_end_hz,
            } => {
                let setting = crate::modbus::shaker::ShakerSetting {
                    waveform,
                    amplitude_n,
                    frequency_hz,
                    frequency_end_hz,
                };
                let outcome = match &self.config.shaker {
                    None => Err("this rig has no shaker the edge can drive (the firmware \
                                 protocol has no excitation message and no [modbus.shaker] is \
                                 configured)"
                        .to_owned()),
                    Some((shaker, device)) => crate::modbus::shaker::apply(shaker, device, setting)
                        .await
                        .map_err(|e| e.to_string()),
                };
                let ack = match outcome {
                    Ok(()) => CommandAck {
                        command_id: id,
                        rig_id: self.config.rig_id.to_string(),
                        status: AckStatus::Applied as i32,
                        applied_at_sample_index: 0,
                        reason: String::new(),
                    },
                    Err(why) => refused(&self.config.rig_id, &id, &why),
                };
                self.decided(ack);
            }
            action => self.hand_to_serial(id, action).await,
        }
    }

    /// Hands an actuator command to the serial task, which answers with a `CommandAck`.
    async fn hand_to_serial(&mut self, id: String, action: Action) {
        let request = ActuatorRequest::Command {
            id: id.clone(),
            action,
        };
        // Waiting is fine here: the serial task drains its queue every sample, and a safety
        // stop must not be dropped for want of room.
        let sent =
            tokio::time::timeout(COMMAND_HANDOVER_TIMEOUT, self.requests_tx.send(request)).await;
        if !matches!(sent, Ok(Ok(()))) {
            error!(command_id = %id, "The serial task did not take an operator command.");
            let ack = refused(
                &self.config.rig_id,
                &id,
                "the edge's serial task did not take the command in time",
            );
            self.decided(ack);
        }
    }

    /// A decision: made durable in the journal, remembered, then acknowledged.
    fn decided(&mut self, mut ack: CommandAck) {
        ack.rig_id = self.config.rig_id.to_string();
        if let Err(e) = self.journal.append(&JournalEntry::of(&ack)) {
            // The pending entry stays; a restart answers this id with doubt, never re-applies.
            error!(error = %e, command_id = %ack.command_id, "Cannot journal a command decision.");
        }
        self.ledger.decide(ack.clone());
        self.stats.update(|s| match ack.status() {
            AckStatus::Applied | AckStatus::Latched => s.commands_applied_total += 1,
            AckStatus::Expired => s.commands_expired_total += 1,
            _ => s.commands_refused_total += 1,
        });
        self.publish_ack(&ack);
    }

    /// Controller params from the twin: decoded and handed to the serial task, which checks
    /// them against the manifest and acknowledges. What cannot even get there is refused here.
    async fn on_controller(&mut self, payload: &[u8]) {
        let params = match ControllerParams::decode(payload) {
            Ok(p) if p.rig_id == self.config.rig_id.as_str() => p,
            Ok(p) => {
                warn!(rig = %p.rig_id, version = p.version, "Ignored controller params for another rig.");
                return;
            }
            Err(e) => {
                warn!(error = %e, bytes = payload.len(), "Ignored undecodable controller params.");
                return;
            }
        };
        let version = params.version;
        if let Err(reason) = self.pass_fence(Fenced::Params, params.owner_epoch).await {
            let ack = ControllerAck {
                version,
                result: Err(reason),
            };
            self.publish_ack(&ack.to_command_ack(&self.config.rig_id));
            return;
        }
        let reason = match self
            .requests_tx
            .try_send(ActuatorRequest::Controller(Box::new(params)))
        {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "the serial task is busy; send them again",
            Err(TrySendError::Closed(_)) => "the edge is shutting down",
        };
        let ack = ControllerAck {
            version,
            result: Err(reason.to_owned()),
        };
        self.publish_ack(&ack.to_command_ack(&self.config.rig_id));
    }

    /// Whether a twin's `kind` of message stamped `epoch` may act on the rig (`crate::fence`):
    /// a newer epoch is made durable before it is adopted (an epoch that cannot be persisted
    /// is refused, since a restart would forget it and let the old owner back in); a fenced
    /// message is counted and logged at a power-of-two cadence. `Err` holds the reason.
    async fn pass_fence(&mut self, kind: Fenced, epoch: u64) -> Result<(), String> {
        match self.fence.admit(epoch) {
            Admission::Accept => Ok(()),
            Admission::Adopt { epoch } => {
                let path = self.config.owner_epoch_path.clone();
                let written =
                    tokio::task::spawn_blocking(move || state_file::write_counter(&path, epoch))
                        .await;
                let why = match written {
                    Ok(Ok(())) => {
                        let previous = self.fence.current();
                        self.fence.adopt(epoch);
                        self.stats.update(|s| s.owner_epoch = epoch);
                        // The new owner holds none of what the previous one received and had
                        // not yet persisted: everything the watermark has not covered goes
                        // again, oldest first, as after a reconnect, instead of waiting for
                        // the stall replay.
                        let replayed = match &mut self.backlog {
                            Some(backlog) => {
                                backlog.replay_all();
                                self.replay_credit = self.replay_credit.max(1.0);
                                backlog.blocks()
                            }
                            None => 0,
                        };
                        info!(
                            owner_epoch = epoch,
                            previous,
                            via = kind.as_str(),
                            unconfirmed_blocks = replayed,
                            "A new owner of the rig: adopted its owner epoch; older owners are fenced off, and what it has not confirmed is replayed to it."
                        );
                        return Ok(());
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the writer task failed: {e}"),
                };
                error!(owner_epoch = epoch, via = kind.as_str(), error = %why, "Could not persist a new owner epoch; refused the message that carried it.");
                Err(format!(
                    "the edge could not persist owner epoch {epoch}: {why}"
                ))
            }
            Admission::Refuse(refusal) => {
                let mut total = 0;
                self.stats.update(|s| {
                    let n = s.fenced_by_kind.entry(kind.as_str()).or_default();
                    *n += 1;
                    total = *n;
                });
                if total.is_power_of_two() {
                    warn!(
                        kind = kind.as_str(),
                        owner_epoch = epoch,
                        current_owner_epoch = self.fence.current(),
                        fenced_total = total,
                        "Fenced off a message from a twin that no longer owns this rig."
                    );
                }
                Err(refusal.to_string())
            }
        }
    }

    /// Publishes a `CommandAck` at QoS 1; while offline it is dropped (the sender's deadline
    /// covers it), never queued ahead of data.
    fn publish_ack(&mut self, ack: &CommandAck) {
        if !self.connected {
            warn!(command_id = %ack.command_id, "Offline; dropped a command acknowledgement.");
            return;
        }
        match self.client.try_publish(
            self.topic_cmd_ack.clone(),
            QoS::AtLeastOnce,
            false,
            ack.encode_to_vec(),
        ) {
            Ok(()) => self.outbox.mark_control_handed(Control::Ack),
            Err(e) => {
                warn!(error = %e, command_id = %ack.command_id, "Could not hand a command acknowledgement to the MQTT client.")
            }
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        match self.outbox.on_puback(pkid) {
            Some(Acked::Block { seq, .. }) => {
                if let Some(backlog) = &mut self.backlog {
                    backlog.on_delivered(seq);
                }
                self.stats.update(|s| s.blocks_published_total += 1);
                self.pump();
            }
            Some(Acked::Control(c)) => {
                debug!(control = ?c, "Broker acknowledged a control message.")
            }
            None => debug!(pkid, "PUBACK for a packet id the outbox does not track."),
        }
    }

    /// A CONNACK: the connection carries the will's session. Persist it before the birth so no
    /// later connect can announce it again, and arm the next connect's will with the next one.
    async fn on_connected(&mut self, eventloop: &mut EventLoop) {
        let first_connect = !self.connected_once;
        let session = self.session + 1;
        let path = self.config.session_path.clone();
        match tokio::task::spawn_blocking(move || state_file::write_counter(&path, session)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, session, "Could not persist the MQTT session; a restart may repeat it.")
            }
            Err(e) => {
                error!(error = %e, session, "The session writer failed; a restart may repeat the session.")
            }
        }
        self.session = session;
        eventloop
            .mqtt_options
            .set_last_will(will(&self.config.rig_id, session + 1));
        // A clean session forgets subscriptions, so every CONNACK asks again. All at QoS 0: a
        // drive redelivered late would be worse than one lost; a clean session kept nothing of
        // QoS 1 across a reconnect anyway, and the rest has end-to-end answers (a watermark is
        // superseded by the next; commands and controller params are answered on cmd/ack, so
        // a lost one shows as a missing answer). On NATS a QoS 1 subscription is a JetStream
        // consumer, which after a node's death stalled the reconnect for seconds
        // (ARCHITECTURE.md).
        let filters = vec![
            SubscribeFilter::new(self.topic_drive.clone(), QoS::AtMostOnce),
            SubscribeFilter::new(self.topic_controller.clone(), QoS::AtMostOnce),
            SubscribeFilter::new(self.topic_cmd.clone(), QoS::AtMostOnce),
            // Retained: the current watermark arrives with the SUBACK.
            SubscribeFilter::new(self.topic_persisted.clone(), QoS::AtMostOnce),
        ];
        self.subscriptions.connected();
        match self.client.try_subscribe_many(filters.clone()) {
            Ok(()) => self.subscriptions.asked(filters),
            Err(e) => {
                error!(error = %e, "Could not ask for the drive subscription; the actuator will not be driven this session.")
            }
        }
        self.connected = true;
        self.connected_once = true;
        self.failover.connected(Instant::now().into_std());
        self.backoff.reset();
        self.stats.update(|s| {
            s.mqtt_connected = true;
            s.session = session;
        });
        self.publish_birth();
        // Declarations published before were lost with the old connection if the broker
        // restarted; the twin passes each only once it has it.
        self.redeclare_losses();
        if let Some(backlog) = &mut self.backlog {
            // What was in flight is gone with the old session, and the twin may have lost
            // what it held in memory: everything not yet covered goes again, oldest first. At
            // the first connect that is what earlier runs left; this run's blocks wait live.
            if first_connect {
                backlog.replay_below(self.config.next_seq_at_start);
            } else {
                backlog.replay_all();
            }
            self.replay_credit = self.replay_credit.max(1.0);
        }
        info!(
            session,
            broker = %self.failover.current(),
            queued_blocks = self.outbox.queued(),
            "Connected to the MQTT broker and published the birth."
        );
        self.pump();
    }

    /// The retained status on `rig/{rig}/status` (JSON, QoS 0): the safety envelope, the
    /// inner loop and the counters, for operators and dashboards. Skipped while offline.
    fn publish_status(&mut self) {
        if !self.connected {
            return;
        }
        let s = self.stats.snapshot();
        let status = serde_json::json!({
            "rig_id": self.config.rig_id.as_str(),
            "session": self.session,
            "timestamp_ns": wall_clock_ns(),
            // Every *_total below counts from here: they restart at zero with each process.
            "process_started_ns": s.started_at_ns,
            "next_seq": s.next_seq,
            "firmware_online": s.firmware_online,
            "safety_state": s.safety_state.as_str(),
            "latch_cause": s.latch_cause.map(|c| c.as_str()),
            "fault_latches_total": s.fault_latches_total,
            // A Modbus actuator whose writes fail is in an unknown state: null, not the last
            // value it acknowledged.
            "actuator_enabled": (!s.actuator_write_failing).then_some(s.actuator_enabled),
            "last_applied_force_n": (!s.actuator_write_failing).then_some(s.last_applied_force_n),
            "modbus": s.modbus,
            "inner_loop": {
                "running": s.inner_loop_running,
                "version": s.inner_loop_version,
                "params_refused_total": s.inner_loop_params_refused_total,
            },
            "samples_in_total": s.samples_in_total,
            "blocks_published_total": s.blocks_published_total,
            "samples_dropped_total": s.samples_dropped_total,
            "queued_blocks": s.queued_blocks,
            "loss": {
                "samples_produced_total": s.samples_produced_total,
                "samples_stored_total": s.samples_stored_total,
                "samples_released_unconfirmed_total": s.samples_released_unconfirmed_total,
                "samples_dropped_by_reason": s.samples_dropped_by_reason,
                "samples_unread_by_reason": s.samples_unread_by_reason,
                "blocks_dropped_by_reason": s.blocks_dropped_by_reason,
                "lost_seq_ranges": s.lost_seq_ranges,
                "lost_ranges_uncovered": s.lost_ranges_uncovered,
                "loss_declarations_total": s.loss_declarations_total,
                "backlog_s": s.backlog_s,
                "backlog_blocks": s.backlog_blocks,
                "backlog_bytes": s.backlog_bytes,
                "persisted_seq": s.persisted_seq,
                "blocks_replayed_total": s.blocks_replayed_total,
                "spool_ok": s.spool_ok,
            },
            "drives": {
                "received_total": s.drives_received_total,
                "applied_total": s.drives_applied_total,
                "refused_total": s.drives_refused_total,
                "ignored_total": s.drives_ignored_total,
                "timeouts_total": s.drive_timeouts_total,
            },
            "fencing": {
                "owner_epoch": s.owner_epoch,
                "fenced_by_kind": s.fenced_by_kind,
            },
            "commands": {
                "applied_total": s.commands_applied_total,
                "refused_total": s.commands_refused_total,
                "expired_total": s.commands_expired_total,
            },
        });
        let payload = status.to_string();
        if let Err(e) =
            self.client
                .try_publish(self.topic_status.clone(), QoS::AtMostOnce, true, payload)
        {
            debug!(error = %e, "MQTT request channel full; skipped a status.");
        }
    }

    fn publish_birth(&mut self) {
        let Some(manifest) = &self.manifest else {
            return;
        };
        let ctx = BirthContext {
            rig_id: &self.config.rig_id,
            actuator: &self.config.actuator,
            session: self.session,
            now_ns: wall_clock_ns(),
        };
        let mut birth = build_birth_with_polled(manifest, ctx, &self.config.polled_channels);
        birth.safety_state = self.stats.snapshot().safety_state.as_str().to_owned();
        // Where the rig's data starts for a twin with no watermark: the oldest block still
        // held, or with nothing held the next seq this edge numbers. Without the latter a
        // twin that could not store the first blocks (not yet owning the rig under a lease
        // coordinator) would start its watermark at the first block it stored, and the
        // blocks below it would be released unstored.
        birth.oldest_unconfirmed_seq = self.backlog.as_ref().map(|b| {
            b.spool().unacked_range().map_or_else(
                || {
                    b.spool()
                        .last_seq()
                        .map_or(self.config.next_seq_at_start, |last| {
                            (last + 1).max(self.config.next_seq_at_start)
                        })
                },
                |(first, _)| first,
            )
        });
        let payload = birth.encode_to_vec();
        if payload.len() > MAX_CONTROL_BYTES {
            error!(
                bytes = payload.len(),
                limit = MAX_CONTROL_BYTES,
                "Birth is too large to publish; subscribers would refuse it."
            );
            return;
        }
        match self
            .client
            .try_publish(self.topic_birth.clone(), QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.outbox.mark_control_handed(Control::Birth),
            Err(e) => {
                error!(error = %e, "Could not hand the birth to the MQTT client; subscribers will not see this session.")
            }
        }
    }

    /// Points the client at the next broker of the failover list and returns how long to wait
    /// before connecting to it: nothing while the round has brokers left, the backoff after a
    /// round in which every one failed.
    fn on_connection_error(&mut self, e: &ConnectionError, eventloop: &mut EventLoop) -> Duration {
        let was_connected = self.connected;
        let failed = self.failover.current().clone();
        self.connected = false;
        if self.backlog.is_some() {
            // The spool has every one of them; the reconnect replays them.
            let _spooled = self.outbox.take_unacked_blocks();
        } else {
            let dropped = self.outbox.on_connection_lost();
            if self.connected_once {
                self.outbox.mark_waiting_as_backfill();
            }
            self.account_drops(dropped, "queue_full");
        }
        let delay = match self.failover.failed(Instant::now().into_std()) {
            Retry::Now => Duration::ZERO,
            Retry::AfterBackoff => self.backoff.next_delay(&mut self.rng),
        };
        let next = self.failover.current().clone();
        if next != failed {
            // Only the address changes: the pending queue, the state and the next session's
            // last will stay in the event loop.
            eventloop.mqtt_options = mqtt_options(&self.config, &next, self.session + 1);
        }
        self.stats.update(|s| {
            s.mqtt_connected = false;
            s.drive_subscribed = false;
            s.queued_blocks = self.outbox.queued();
        });
        if was_connected {
            warn!(
                error = %e,
                broker = %failed,
                next_broker = %next,
                session = self.session,
                queued_blocks = self.outbox.queued(),
                retry_in_ms = delay.as_millis() as u64,
                "Lost the MQTT connection; unacknowledged blocks will be sent again."
            );
        } else {
            warn!(
                error = %e,
                broker = %failed,
                next_broker = %next,
                retry_in_ms = delay.as_millis() as u64,
                "Could not connect to the MQTT broker."
            );
        }
        delay
    }

    /// Publishes the death, waits for its PUBACK, disconnects; all within [`GOODBYE_TIMEOUT`].
    /// Blocks still unacknowledged afterwards are counted as lost.
    async fn goodbye(&mut self, eventloop: &mut EventLoop) {
        if self.connected {
            let deadline = Instant::now() + GOODBYE_TIMEOUT;
            let death = RigDeath {
                rig_id: self.config.rig_id.to_string(),
                session: self.session,
                reason: "shutdown".into(),
            };
            match self.client.try_publish(
                self.topic_death.clone(),
                QoS::AtLeastOnce,
                false,
                death.encode_to_vec(),
            ) {
                Ok(()) => self.outbox.mark_control_handed(Control::Death),
                Err(e) => warn!(error = %e, "Could not hand the death message to the MQTT client."),
            }
            let mut acked = false;
            while self.outbox.control_pending(Control::Death) {
                match timeout_at(deadline, eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => self.on_puback(ack.pkid),
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        self.outbox.on_outgoing_publish(pkid)
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "MQTT connection failed while saying goodbye.");
                        self.connected = false;
                        break;
                    }
                    Err(_elapsed) => break,
                }
                acked = !self.outbox.control_pending(Control::Death);
            }
            if self.connected {
                if self.client.try_disconnect().is_ok() {
                    loop {
                        match timeout_at(deadline, eventloop.poll()).await {
                            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                                break;
                            }
                            Ok(Ok(_)) => {}
                        }
                    }
                }
                if acked {
                    info!(
                        session = self.session,
                        "Published the death and disconnected from the MQTT broker."
                    );
                } else {
                    warn!(
                        session = self.session,
                        "Disconnected without a PUBACK for the death message."
                    );
                }
            }
        }
        self.connected = false;
        let lost = self.outbox.take_unacked_blocks();
        match &mut self.backlog {
            // Spooled: the next start sends them.
            Some(backlog) => {
                if let Err(e) = backlog.sync() {
                    error!(error = %e, "Could not fsync the block spool at shutdown.");
                }
            }
            None => self.account_drops(lost, "shutdown"),
        }
        self.stats.update(|s| {
            s.mqtt_connected = false;
            s.drive_subscribed = false;
            s.queued_blocks = 0;
        });
    }

    /// Counts blocks dropped from memory (no spool, or one that failed) and declares them
    /// lost, reason `spool_error`, one range per run of consecutive seqs.
    fn account_drops(&mut self, blocks: Vec<SampleBlock>, reason: &'static str) {
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            return;
        };
        let samples: u64 = blocks.iter().map(|b| block_sample_count(b) as u64).sum();
        let mut runs: Vec<Loss> = Vec::new();
        for b in &blocks {
            let n = block_sample_count(b) as u64;
            match runs
                .last_mut()
                .filter(|l| l.last_seq.checked_add(1) == Some(b.seq))
            {
                Some(l) => {
                    l.last_seq = b.seq;
                    l.blocks += 1;
                    l.samples += n;
                }
                None => runs.push(Loss {
                    reason: LossReason::SpoolError,
                    blocks: 1,
                    samples: n,
                    first_seq: b.seq,
                    last_seq: b.seq,
                }),
            }
        }
        for run in &runs {
            self.declare_loss(run);
        }
        error!(
            reason,
            blocks = blocks.len(),
            samples,
            first_seq = first.seq,
            last_seq = last.seq,
            "Dropped sample blocks that never reached the broker."
        );
        self.stats.add_samples_dropped(samples);
    }
}

/// The loss ledger at `path`; a corrupt one is set aside (`.corrupt`) and the edge starts
/// with an empty one, since the spool's holes are declared at the next open anyway.
fn open_ledger(path: &std::path::Path) -> LossLedger {
    match LossLedger::load(path) {
        Ok(ledger) => {
            if !ledger.is_empty() {
                info!(
                    ranges = ledger.len(),
                    path = %path.display(),
                    "Lost seq ranges from an earlier run still wait for the twin's watermark; declaring them again."
                );
            }
            ledger
        }
        Err(e @ LedgerError::Corrupt { .. }) => {
            error!(error = %e, "Setting the loss ledger aside.");
            let aside = path.with_extension("json.corrupt");
            if let Err(e) = std::fs::rename(path, &aside) {
                error!(error = %e, "Could not set the corrupt loss ledger aside.");
            }
            LossLedger::empty_at(path)
        }
        Err(e) => {
            error!(error = %e, "Could not read the loss ledger; starting with an empty one.");
            LossLedger::empty_at(path)
        }
    }
}

/// Why a message on the drive topic was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriveProblem {
    Oversized,
    Undecodable,
    WrongRig,
}

impl DriveProblem {
    const fn as_str(self) -> &'static str {
        match self {
            DriveProblem::Oversized => "oversized",
            DriveProblem::Undecodable => "undecodable",
            DriveProblem::WrongRig => "wrong_rig",
        }
    }
}
