//! Owns the MQTT connection: session numbering and its file, the last will, the birth at every
//! CONNACK, QoS 1 block publishing matched to PUBACKs, the drive and controller subscriptions
//! (decoded drives and controller params go to the serial task, never waited for), the
//! acknowledgements of controller params, reconnects with jittered backoff, and the clean goodbye
//! (death + DISCONNECT). Knows nothing of the serial port; blocks arrive ready-made.

use std::path::PathBuf;
use std::time::Duration;

use dtop_firmware::Manifest;
use dtop_proto::limits::{MAX_CONTROL_BYTES, MAX_MQTT_PACKET_BYTES, MAX_SAMPLE_BLOCK_BYTES};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command_ack::Status as AckStatus;
use dtop_proto::v1::{ActuatorDrive, Command, CommandAck, ControllerParams, RigDeath, SampleBlock};
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
use crate::backoff::Backoff;
use crate::batcher::block_sample_count;
use crate::birth::{BirthContext, build_birth_with_polled};
use crate::commands::{Action, Journal, JournalEntry, Ledger, Verdict, refused};
use crate::config::{ActuatorConfig, MqttConfig, Secret};
use crate::outbox::{Acked, Control, Outbox};
use crate::safety::{DriveRequest, DriveSource};
use crate::serial::ActuatorRequest;
use crate::state_file;
use crate::stats::StatsHandle;

/// Blocks published but not yet acknowledged, at most. Enough to keep a LAN link busy; small
/// enough that rumqttc's own in-flight limit (set above it) never collides packet ids.
pub const WINDOW_BLOCKS: usize = 16;
/// How often the retained status is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest the publisher waits for room in the serial task's queue for an operator command.
pub const COMMAND_HANDOVER_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the goodbye waits for the death's PUBACK and for the DISCONNECT to be written.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The polled Modbus channels, announced in the birth after the firmware's.
    pub polled_channels: Vec<dtop_proto::v1::Channel>,
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
    backoff: Backoff,
    rng: StdRng,
    stats: StatsHandle,
}

/// rumqttc options for this edge; the last will announces `will_session`.
pub fn mqtt_options(config: &PublisherConfig, will_session: u64) -> MqttOptions {
    let mut options = MqttOptions::new(
        config.client_id.clone(),
        config.mqtt.host.clone(),
        config.mqtt.port,
    );
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
        let options = mqtt_options(&config, config.last_session + 1);
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
            backoff,
            rng: StdRng::from_os_rng(),
            stats,
        };
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
                        _ = status_tick.tick() => self.publish_status(),
                    }
                }
            };
            match polled {
                None => break,
                Some(Ok(event)) => self.on_mqtt_event(event, &mut eventloop).await,
                Some(Err(e)) => retry_at = Some(Instant::now() + self.on_connection_error(&e)),
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
        if self.connected_once && !self.connected {
            block.backfill = true;
        }
        let dropped = self.outbox.push(block);
        self.account_drops(dropped, "queue_full");
        self.pump();
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
        let queued = self.outbox.queued();
        self.stats.update(|s| s.queued_blocks = queued);
    }

    async fn on_mqtt_event(&mut self, event: Event, eventloop: &mut EventLoop) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connected(eventloop).await,
            Event::Incoming(Packet::PubAck(ack)) => self.on_puback(ack.pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => self.outbox.on_outgoing_publish(pkid),
            Event::Incoming(Packet::SubAck(ack)) => self.on_suback(&ack),
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_drive => {
                self.on_drive(&p.payload)
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_controller => {
                self.on_controller(&p.payload)
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.topic_cmd => {
                self.on_command(&p.payload).await
            }
            Event::Incoming(Packet::Publish(p)) => {
                debug!(topic = %p.topic, "Ignored a publish on a topic the edge did not ask for.")
            }
            _ => {}
        }
    }

    /// The drive and controller subscriptions go in one SUBSCRIBE, so every SUBACK answers
    /// both, in that order.
    fn on_suback(&mut self, ack: &SubAck) {
        let ok = |i: usize| {
            matches!(
                ack.return_codes.get(i),
                Some(SubscribeReasonCode::Success(_))
            )
        };
        let granted = ok(0);
        if granted {
            debug!(topic = %self.topic_drive, "Subscribed to actuator drives.");
        } else {
            error!(
                topic = %self.topic_drive,
                "The broker refused the drive subscription; the actuator will not be driven this session."
            );
        }
        if !ok(1) {
            error!(
                topic = %self.topic_controller,
                "The broker refused the controller subscription; the inner loop cannot be changed this session."
            );
        }
        if !ok(2) {
            error!(
                topic = %self.topic_cmd,
                "The broker refused the command subscription; operators cannot command this rig this session."
            );
        }
        self.stats.update(|s| s.drive_subscribed = granted);
    }

    /// One message from the drive topic: decoded, checked, handed to the serial task without
    /// waiting. Nothing a publisher sends here can stop the edge; bad input is counted and logged.
    fn on_drive(&mut self, payload: &[u8]) {
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
                let ack = refused(
                    &self.config.rig_id,
                    &id,
                    &format!(
                        "block_samples {block_samples}: changing acquisition parameters at run \
                         time is not supported by this edge; set [acquisition] block_samples \
                         and restart it"
                    ),
                );
                self.decided(ack);
            }
            Action::Excitation { .. } => {
                let ack = refused(
                    &self.config.rig_id,
                    &id,
                    "this rig has no shaker the edge can drive (the firmware protocol has no \
                     excitation message and no Modbus shaker amplifier is configured)",
                );
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
    fn on_controller(&mut self, payload: &[u8]) {
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
            Some(Acked::Block { .. }) => {
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
        // A clean session forgets subscriptions, so every CONNACK asks again. QoS 0: a drive
        // redelivered late would be worse than one lost.
        // Controller params at QoS 1: each is acknowledged, so a lost one would leave the twin
        // waiting.
        if let Err(e) = self.client.try_subscribe_many([
            SubscribeFilter::new(self.topic_drive.clone(), QoS::AtMostOnce),
            SubscribeFilter::new(self.topic_controller.clone(), QoS::AtLeastOnce),
            SubscribeFilter::new(self.topic_cmd.clone(), QoS::AtLeastOnce),
        ]) {
            error!(error = %e, "Could not ask for the drive subscription; the actuator will not be driven this session.");
        }
        self.connected = true;
        self.connected_once = true;
        self.backoff.reset();
        self.stats.update(|s| {
            s.mqtt_connected = true;
            s.session = session;
        });
        self.publish_birth();
        info!(
            session,
            host = %self.config.mqtt.host,
            port = self.config.mqtt.port,
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
            "firmware_online": s.firmware_online,
            "safety_state": s.safety_state.as_str(),
            "actuator_enabled": s.actuator_enabled,
            "last_applied_force_n": s.last_applied_force_n,
            "inner_loop": {
                "running": s.inner_loop_running,
                "version": s.inner_loop_version,
                "params_refused_total": s.inner_loop_params_refused_total,
            },
            "samples_in_total": s.samples_in_total,
            "blocks_published_total": s.blocks_published_total,
            "samples_dropped_total": s.samples_dropped_total,
            "queued_blocks": s.queued_blocks,
            "drives": {
                "received_total": s.drives_received_total,
                "applied_total": s.drives_applied_total,
                "refused_total": s.drives_refused_total,
                "ignored_total": s.drives_ignored_total,
                "timeouts_total": s.drive_timeouts_total,
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

    /// Returns how long to wait before the next connect attempt.
    fn on_connection_error(&mut self, e: &ConnectionError) -> Duration {
        let was_connected = self.connected;
        self.connected = false;
        let dropped = self.outbox.on_connection_lost();
        if self.connected_once {
            self.outbox.mark_waiting_as_backfill();
        }
        self.account_drops(dropped, "queue_full");
        let delay = self.backoff.next_delay(&mut self.rng);
        self.stats.update(|s| {
            s.mqtt_connected = false;
            s.drive_subscribed = false;
            s.queued_blocks = self.outbox.queued();
        });
        if was_connected {
            warn!(
                error = %e,
                session = self.session,
                queued_blocks = self.outbox.queued(),
                retry_in_ms = delay.as_millis() as u64,
                "Lost the MQTT connection; unacknowledged blocks will be sent again."
            );
        } else {
            warn!(
                error = %e,
                host = %self.config.mqtt.host,
                port = self.config.mqtt.port,
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
        self.account_drops(lost, "shutdown");
        self.stats.update(|s| {
            s.mqtt_connected = false;
            s.drive_subscribed = false;
            s.queued_blocks = 0;
        });
    }

    fn account_drops(&self, blocks: Vec<SampleBlock>, reason: &'static str) {
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            return;
        };
        let samples: u64 = blocks.iter().map(|b| block_sample_count(b) as u64).sum();
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
