//! Owns one client connection: the CONNECT handshake (first-packet timeout, connection limit,
//! authentication, will authorization, session takeover), then the loop that reads packets,
//! enforces the ACL, rate and size limits, and writes deliveries from the session's router
//! link. When the client leaves, a persistent session is handed to a parked task that keeps
//! queueing for it until it returns or its Session Expiry Interval ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt as _;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::acl::{Identity, is_valid_filter, is_valid_topic_name};
use crate::front::session::{Qos2Receipt, Session, Sub};
use crate::front::wire::{
    self, AckReason, CONNACK_UNSUPPORTED_LEVEL, ConnCode, ConnectInfo, FrameHeader, Inbound,
    Outbound, PUBLISH, SubCode, Version, Will, WireError,
};
use crate::front::{Control, Front};
use crate::metrics::Refusal;

/// Most time one write to a client may take before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new connection waits for the previous holder of its session to hand it over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Router notifications handled per wake-up before the buffer is written, bounding latency.
const LINK_BATCH: usize = 256;

/// The longest session expiry a timer is armed for (one year); MQTT 3.1.1's "never" and
/// MQTT 5's 0xFFFFFFFF are capped by `limits.max_session_expiry_s` before this.
const MAX_TIMER_S: u64 = 365 * 24 * 3600;

/// How a connection's loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT received; `send_will` for MQTT 5 reason 0x04.
    Disconnected { send_will: bool },
    /// Socket closed or failed, keep-alive expired, protocol error: the will is due.
    Lost(&'static str),
    /// Another connection took the session.
    TakenOver(oneshot::Sender<Option<Session>>),
}

/// What processing input asks the loop to do.
enum Flow {
    Continue,
    Stop(End),
}

/// Token bucket for `limits.max_publish_rate_hz`; a burst of one second's budget.
#[derive(Debug)]
struct RateLimit {
    rate_hz: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate_hz: u32) -> Option<Self> {
        (rate_hz > 0).then(|| Self {
            rate_hz: f64::from(rate_hz),
            tokens: f64::from(rate_hz),
            last: Instant::now(),
        })
    }

    /// How long to wait before one more publish is allowed (zero if one is available now).
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_hz).min(self.rate_hz);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_hz)
        }
    }
}

/// Everything one connection's loop owns besides the socket.
struct Conn {
    front: Arc<Front>,
    version: Version,
    /// Most QoS 1/2 deliveries in flight to this client.
    window: u16,
    identity: Option<Identity>,
    peer: SocketAddr,
    client_id: String,
    will: Option<Will>,
    session: Session,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes of an oversize PUBLISH still to discard.
    skip: usize,
    rate: Option<RateLimit>,
}

enum ConnectRead {
    Connect(Box<ConnectInfo>),
    UnsupportedLevel(u8),
}

async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_bytes: usize,
) -> Result<ConnectRead, String> {
    loop {
        if let Some(header) = wire::parse_fixed_header(rbuf).map_err(|e| e.to_string())? {
            if header.packet_type() != wire::CONNECT {
                return Err("first packet is not CONNECT".into());
            }
            if header.remaining_len > max_bytes {
                return Err(format!("CONNECT of {} bytes", header.remaining_len));
            }
            if rbuf.len() >= header.frame_len() {
                return match wire::connect_version(&rbuf[..header.frame_len()], &header) {
                    Err(WireError::UnsupportedLevel(level)) => {
                        Ok(ConnectRead::UnsupportedLevel(level))
                    }
                    Err(e) => Err(e.to_string()),
                    Ok(_) => wire::decode_connect(rbuf, &header)
                        .map(|info| ConnectRead::Connect(Box::new(info)))
                        .map_err(|e| e.to_string()),
                };
            }
        }
        if stream.read_buf(rbuf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before CONNECT".into());
        }
    }
}

async fn write_now<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn refuse_connect<S: AsyncWrite + Unpin>(stream: &mut S, version: Version, code: ConnCode) {
    let mut out = BytesMut::new();
    let connack = Outbound::ConnAck {
        session_present: false,
        code,
        assigned_id: None,
        session_expiry_s: None,
        receive_max: 0,
        max_packet_bytes: None,
    };
    if wire::encode(version, connack, &mut out).is_ok() && write_now(stream, &out).await {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    }
}

/// Authenticates a CONNECT: `Ok(None)` when auth is off, `Err(())` when refused.
async fn authenticate(
    front: &Arc<Front>,
    info: &ConnectInfo,
    cert_user: Option<String>,
) -> Result<Option<Identity>, ()> {
    let Some(auth) = &front.auth else {
        return Ok(None);
    };
    if let Some(user) = cert_user {
        return auth.credentials.identity(&user).map(Some).ok_or(());
    }
    let Some((username, password)) = info.login.clone() else {
        return Err(());
    };
    let Ok(_slot) = front.verify_slots.acquire().await else {
        return Err(());
    };
    let front = Arc::clone(front);
    // argon2id is deliberately slow; keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        front.auth.as_ref().and_then(|auth| {
            auth.credentials
                .verify(&username, password.expose().as_bytes())
        })
    })
    .await
    .ok()
    .flatten()
    .map(Some)
    .ok_or(())
}

/// Serves one client connection from its first byte to its end.
pub async fn serve<S>(front: Arc<Front>, mut stream: S, peer: SocketAddr, cert_user: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut rbuf = BytesMut::with_capacity(4096);
    let timeout = Duration::from_millis(u64::from(front.limits.connection_timeout_ms));
    let read = tokio::time::timeout(
        timeout,
        read_connect(&mut stream, &mut rbuf, front.limits.max_payload_bytes),
    )
    .await;
    let info = match read {
        Err(_) => {
            front.metrics.refused(Refusal::ConnectTimeout);
            debug!(%peer, timeout_ms = front.limits.connection_timeout_ms, "Closed a connection that sent no CONNECT in time.");
            return;
        }
        Ok(Err(reason)) => {
            front.metrics.refused(Refusal::ProtocolError);
            debug!(%peer, reason, "Closed a connection without a valid CONNECT.");
            return;
        }
        Ok(Ok(ConnectRead::UnsupportedLevel(level))) => {
            front.metrics.refused(Refusal::ProtocolError);
            info!(%peer, level, "Refused a CONNECT with an unsupported protocol level.");
            let _ = write_now(&mut stream, &CONNACK_UNSUPPORTED_LEVEL).await;
            return;
        }
        Ok(Ok(ConnectRead::Connect(info))) => *info,
    };
    let version = info.version;

    let Some(_permit) = front.admit() else {
        front.metrics.refused(Refusal::ConnectionLimit);
        warn!(%peer, max_connections = front.limits.max_connections, "Refused a client: connection limit reached.");
        refuse_connect(&mut stream, version, ConnCode::Busy).await;
        return;
    };

    let username = info.login.as_ref().map(|(u, _)| u.clone());
    let identity = match authenticate(&front, &info, cert_user.clone()).await {
        Ok(identity) => identity,
        Err(()) => {
            front.metrics.refused(Refusal::BadCredentials);
            warn!(%peer, user = ?username, cert = ?cert_user, "Refused a login: unknown user or wrong credentials.");
            refuse_connect(&mut stream, version, ConnCode::BadCredentials).await;
            return;
        }
    };

    if let Some(will) = &info.will {
        let allowed = match (&front.auth, &identity) {
            (Some(auth), Some(who)) => auth.acl.may_publish(who, &will.message.topic),
            _ => is_valid_topic_name(&will.message.topic),
        };
        if !allowed {
            front.metrics.refused(Refusal::WillNotAuthorized);
            warn!(%peer, user = ?identity.as_ref().map(|i| &i.username), topic = %will.message.topic, "Refused a CONNECT whose will topic the role may not publish.");
            refuse_connect(&mut stream, version, ConnCode::NotAuthorized).await;
            return;
        }
    }

    let mut assigned_id = None;
    let client_id = if info.client_id.is_empty() {
        if version == Version::V311 && !info.clean_start {
            front.metrics.refused(Refusal::ClientIdRejected);
            refuse_connect(&mut stream, version, ConnCode::IdRejected).await;
            return;
        }
        let id = format!("dtop-auto-{}", front.next_id());
        if version == Version::V5 {
            assigned_id = Some(id.clone());
        }
        id
    } else {
        info.client_id.clone()
    };
    // Sessions are per user: another user reusing a client id can neither resume nor kick
    // this user's session.
    let registry_key = match &identity {
        Some(who) => format!("{}\u{0}{client_id}", who.username),
        None => client_id.clone(),
    };
    let expiry_s = info.session_expiry_s.min(front.limits.max_session_expiry_s);

    let (control_tx, control_rx) = mpsc::channel(4);
    let (previous, generation) = front.claim(&registry_key, control_tx);
    let mut old = None;
    if let Some(previous) = previous {
        let (reply_tx, reply_rx) = oneshot::channel();
        if previous.send(Control::Takeover(reply_tx)).await.is_ok() {
            old = tokio::time::timeout(TAKEOVER_TIMEOUT, reply_rx)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        }
    }
    let (mut session, session_present) = match old {
        Some(session) if !info.clean_start => (session, true),
        other => {
            if let Some(mut stale) = other {
                stale.close_link().await;
            }
            let id = front.next_id();
            match front.open_link(id).await {
                Ok(link) => (
                    Session::new(
                        id,
                        client_id.clone(),
                        expiry_s,
                        link,
                        Arc::clone(&front.metrics),
                    ),
                    false,
                ),
                Err(reason) => {
                    warn!(%peer, client_id, reason, "Refused a client: the router has no room for its session.");
                    front.release(&registry_key, generation);
                    refuse_connect(&mut stream, version, ConnCode::Unavailable).await;
                    return;
                }
            }
        }
    };
    session.expiry_s = expiry_s;
    session.max_packet_bytes = info.max_packet_bytes;

    let window = u16::try_from(front.limits.max_inflight_count)
        .unwrap_or(u16::MAX)
        .min(info.receive_maximum)
        .max(1);
    let mut wbuf = BytesMut::with_capacity(4096);
    let connack = Outbound::ConnAck {
        session_present,
        code: ConnCode::Accepted,
        assigned_id,
        session_expiry_s: (expiry_s != info.session_expiry_s).then_some(expiry_s),
        receive_max: window,
        // What `process_input` accepts: a remaining length up to `max_payload_bytes`.
        max_packet_bytes: u32::try_from(wire::packet_len(front.limits.max_payload_bytes)).ok(),
    };
    if wire::encode(version, connack, &mut wbuf).is_err() {
        return;
    }
    front.metrics.connection_opened();
    debug!(%peer, client_id, user = ?identity.as_ref().map(|i| &i.username), ?version, session_present, "Client connected.");

    let keep_alive =
        (info.keep_alive_s > 0).then(|| Duration::from_millis(u64::from(info.keep_alive_s) * 1500));
    let mut conn = Conn {
        rate: RateLimit::new(front.limits.max_publish_rate_hz),
        front: Arc::clone(&front),
        version,
        window,
        identity,
        peer,
        client_id,
        will: info.will,
        session,
        rbuf,
        wbuf,
        skip: 0,
    };
    conn.session.resume(version, window, &mut conn.wbuf);
    let (end, control_rx) = conn.run(&mut stream, control_rx, keep_alive).await;
    conn.finish(end, control_rx, registry_key, generation).await;
}

// Built and matched once per loop turn, never stored: boxing the notification would cost an
// allocation per delivery for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    Control(Option<Control>),
    Read(std::io::Result<usize>),
    Link(Result<Option<rumqttd::Notification>, rumqttd::local::LinkError>),
    KeepAliveExpired,
}

impl Conn {
    fn who(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("anonymous", |i| i.username.as_str())
    }

    fn send(&mut self, packet: Outbound) {
        let _ = wire::encode(self.version, packet, &mut self.wbuf);
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        mut control_rx: mpsc::Receiver<Control>,
        keep_alive: Option<Duration>,
    ) -> (End, mpsc::Receiver<Control>) {
        let max_queued = self.front.limits.max_queued_messages;
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        let mut control_open = true;
        // Input that arrived with the CONNECT.
        if !self.rbuf.is_empty()
            && let Flow::Stop(end) = self.process_input().await
        {
            return (end, control_rx);
        }
        loop {
            if !self.wbuf.is_empty() {
                if !write_now(stream, &self.wbuf).await {
                    return (End::Lost("write failed or timed out"), control_rx);
                }
                self.wbuf.clear();
            }
            let want_link = self.session.queued() < max_queued;
            let keep_alive_sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                control = control_rx.recv(), if control_open => Event::Control(control),
                read = stream.read_buf(&mut self.rbuf) => Event::Read(read),
                notification = self.session.link_rx.next(), if want_link => Event::Link(notification),
                () = keep_alive_sleep => Event::KeepAliveExpired,
            };
            match event {
                Event::Control(Some(Control::Takeover(reply))) => {
                    self.send(Outbound::Disconnect(DisconnectReasonCode::SessionTakenOver));
                    let _ = write_now(stream, &self.wbuf).await;
                    return (End::TakenOver(reply), control_rx);
                }
                Event::Control(None) => control_open = false,
                Event::Read(Ok(0)) => return (End::Lost("closed by the client"), control_rx),
                Event::Read(Err(_)) => return (End::Lost("read failed"), control_rx),
                Event::Read(Ok(_)) => {
                    deadline = keep_alive.map(|k| Instant::now() + k);
                    if let Flow::Stop(end) = self.process_input().await {
                        if !self.wbuf.is_empty() {
                            let _ = write_now(stream, &self.wbuf).await;
                        }
                        return (end, control_rx);
                    }
                }
                Event::Link(Ok(Some(notification))) => {
                    let mut wake = self.on_notification(notification);
                    for _ in 0..LINK_BATCH {
                        if self.session.queued() >= max_queued {
                            break;
                        }
                        match self.session.link_rx.next().now_or_never() {
                            Some(Ok(Some(n))) => wake |= self.on_notification(n),
                            _ => break,
                        }
                    }
                    if wake && self.session.link_rx.wake().await.is_err() {
                        return (End::Lost("router link closed"), control_rx);
                    }
                }
                Event::Link(Ok(None)) => {}
                Event::Link(Err(_)) => return (End::Lost("router link closed"), control_rx),
                Event::KeepAliveExpired => {
                    self.send(Outbound::Disconnect(DisconnectReasonCode::KeepAliveTimeout));
                    let _ = write_now(stream, &self.wbuf).await;
                    return (End::Lost("keep-alive expired"), control_rx);
                }
            }
        }
    }

    /// Handles one router notification; whether the router must be woken (it paused this
    /// link because our buffer was full).
    fn on_notification(&mut self, notification: rumqttd::Notification) -> bool {
        match notification {
            rumqttd::Notification::Forward(forward) => {
                let max_queued = self.front.limits.max_queued_messages;
                self.session.forward(
                    forward,
                    Some((self.version, self.window, &mut self.wbuf)),
                    max_queued,
                );
                false
            }
            rumqttd::Notification::Unschedule => true,
            _ => false,
        }
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn process_input(&mut self) -> Flow {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.rbuf.len());
                wire::advance(&mut self.rbuf, n);
                self.skip -= n;
                if self.skip > 0 {
                    return Flow::Continue;
                }
            }
            let header = match wire::parse_fixed_header(&self.rbuf) {
                Ok(Some(header)) => header,
                Ok(None) => return Flow::Continue,
                Err(e) => return self.protocol_error(&e.to_string()),
            };
            if header.remaining_len > self.front.limits.max_payload_bytes {
                if header.packet_type() != PUBLISH {
                    self.front.metrics.refused(Refusal::PayloadTooLarge);
                    self.send(Outbound::Disconnect(DisconnectReasonCode::PacketTooLarge));
                    return Flow::Stop(End::Lost("oversize non-PUBLISH packet"));
                }
                match wire::publish_pkid(&self.rbuf, &header) {
                    Ok(Some((qos, pkid))) => {
                        self.refuse_oversize(&header, qos, pkid);
                        self.skip = header.frame_len();
                        continue;
                    }
                    Ok(None) => return Flow::Continue,
                    Err(e) => return self.protocol_error(&e.to_string()),
                }
            }
            if self.rbuf.len() < header.frame_len() {
                self.rbuf.reserve(header.frame_len() - self.rbuf.len());
                return Flow::Continue;
            }
            let packet = match wire::decode(self.version, &mut self.rbuf, &header) {
                Ok(packet) => packet,
                Err(e) => return self.protocol_error(&e.to_string()),
            };
            if let Flow::Stop(end) = self.handle(packet).await {
                return Flow::Stop(end);
            }
        }
    }

    fn protocol_error(&mut self, reason: &str) -> Flow {
        self.front.metrics.refused(Refusal::ProtocolError);
        info!(peer = %self.peer, client_id = %self.client_id, reason, "Closing a connection after a protocol error.");
        self.send(Outbound::Disconnect(DisconnectReasonCode::ProtocolError));
        Flow::Stop(End::Lost("protocol error"))
    }

    fn refuse_oversize(&mut self, header: &FrameHeader, qos: u8, pkid: u16) {
        self.front.metrics.refused(Refusal::PayloadTooLarge);
        warn!(
            client_id = %self.client_id,
            user = %self.who(),
            size_bytes = header.remaining_len,
            max_payload_bytes = self.front.limits.max_payload_bytes,
            "Refused a PUBLISH above the size limit."
        );
        match qos {
            1 => self.send(Outbound::PubAck(pkid, AckReason::QuotaExceeded)),
            2 => self.send(Outbound::PubRec(pkid, AckReason::QuotaExceeded)),
            _ => {}
        }
    }

    async fn handle(&mut self, packet: Inbound) -> Flow {
        match packet {
            Inbound::Publish {
                pkid,
                message,
                topic_alias,
            } => {
                if topic_alias.is_some() {
                    // We announce Topic Alias Maximum 0 (§3.2.2.3.8), so any alias is an error.
                    self.front.metrics.refused(Refusal::ProtocolError);
                    self.send(Outbound::Disconnect(
                        DisconnectReasonCode::TopicAliasInvalid,
                    ));
                    return Flow::Stop(End::Lost("topic alias"));
                }
                if !is_valid_topic_name(&message.topic) || (message.qos > 0 && pkid == 0) {
                    return self.protocol_error("invalid topic name or packet id");
                }
                if let Some(rate) = &mut self.rate {
                    let wait = rate.take();
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                let qos = message.qos;
                if let (Some(auth), Some(who)) = (&self.front.auth, &self.identity)
                    && !auth.acl.may_publish(who, &message.topic)
                {
                    self.front.metrics.refused(Refusal::PublishNotAuthorized);
                    warn!(user = %who.username, role = %who.role, client_id = %self.client_id, topic = %message.topic, "Refused a PUBLISH the role does not allow.");
                    // MQTT 5: reason 0x87. MQTT 3.1.1 has no negative ack: acknowledge and
                    // drop, as Mosquitto does, so a well-behaved client is not disconnected.
                    match qos {
                        1 => self.send(Outbound::PubAck(pkid, AckReason::NotAuthorized)),
                        2 => self.send(Outbound::PubRec(pkid, AckReason::NotAuthorized)),
                        _ => {}
                    }
                    return Flow::Continue;
                }
                let route = qos < 2 || self.session.receive_qos2(pkid) == Qos2Receipt::New;
                if route && self.session.route(message).await.is_err() {
                    return Flow::Stop(End::Lost("router link closed"));
                }
                match qos {
                    1 => self.send(Outbound::PubAck(pkid, AckReason::Success)),
                    2 => self.send(Outbound::PubRec(pkid, AckReason::Success)),
                    _ => {}
                }
            }
            Inbound::PubAck(pkid) => {
                self.session.puback(pkid);
                self.session.pump(self.version, self.window, &mut self.wbuf);
            }
            Inbound::PubRec(pkid) => self.session.pubrec(self.version, pkid, &mut self.wbuf),
            Inbound::PubComp(pkid) => {
                self.session.pubcomp(pkid);
                self.session.pump(self.version, self.window, &mut self.wbuf);
            }
            Inbound::PubRel(pkid) => {
                self.session.release_qos2(pkid);
                self.send(Outbound::PubComp(pkid));
            }
            Inbound::Subscribe {
                pkid,
                requests,
                sub_id,
            } => {
                let mut codes = Vec::with_capacity(requests.len());
                let mut retained = Vec::new();
                for request in requests {
                    let code = self.subscribe_one(request, sub_id, &mut retained).await;
                    match code {
                        Ok(code) => codes.push(code),
                        Err(()) => return Flow::Stop(End::Lost("router link closed")),
                    }
                }
                self.send(Outbound::SubAck(pkid, codes));
                // Retained messages follow the SUBACK (MQTT 5 §3.8.4).
                let max_queued = self.front.limits.max_queued_messages;
                for forward in retained {
                    self.session.forward(
                        forward,
                        Some((self.version, self.window, &mut self.wbuf)),
                        max_queued,
                    );
                }
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                for filter in filters {
                    if self.session.unsubscribe(&filter).await.is_err() {
                        return Flow::Stop(End::Lost("router link closed"));
                    }
                }
                self.send(Outbound::UnsubAck(pkid, count));
            }
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect {
                reason,
                session_expiry_s,
            } => {
                if let Some(expiry) = session_expiry_s
                    && self.session.expiry_s != 0
                {
                    // §3.14.2.2.2: a session that expires at once may not be extended here.
                    self.session.expiry_s = expiry.min(self.front.limits.max_session_expiry_s);
                }
                return Flow::Stop(End::Disconnected {
                    send_will: reason == 0x04,
                });
            }
            Inbound::Unexpected(what) => return self.protocol_error(what),
        }
        Flow::Continue
    }

    /// Checks and installs one subscription. For a filter the session already has, the router
    /// will not re-send retained messages, so with Retain Handling 0 they are fetched into
    /// `retained` for delivery after the SUBACK.
    async fn subscribe_one(
        &mut self,
        request: wire::SubRequest,
        sub_id: Option<usize>,
        retained: &mut Vec<rumqttd::Forward>,
    ) -> Result<SubCode, ()> {
        let filter = &request.filter;
        if !is_valid_filter(filter) {
            self.front.metrics.refused(Refusal::ProtocolError);
            return Ok(SubCode::Invalid);
        }
        // rumqttd drops a link that subscribes to `$...` (other than `$share`); we have no
        // `$SYS` tree, so such filters are refused here.
        let dollar = filter.starts_with('$') && !filter.starts_with("$share/");
        let allowed = !dollar
            && match (&self.front.auth, &self.identity) {
                (Some(auth), Some(who)) => auth.acl.may_subscribe(who, filter),
                _ => true,
            };
        if !allowed {
            self.front.metrics.refused(Refusal::SubscribeNotAuthorized);
            warn!(user = %self.who(), client_id = %self.client_id, filter = %filter, "Refused a SUBSCRIBE the role does not allow.");
            return Ok(SubCode::NotAuthorized);
        }
        let qos = request.qos.min(2);
        let sub = Sub {
            router_filter: self.front.router_filter(filter),
            filter: request.filter,
            qos,
            no_local: request.no_local,
            retain_as_published: request.retain_as_published,
            retain_handling: request.retain_handling,
            client_sub_id: sub_id,
        };
        let resend = request.retain_handling == 0 && !sub.filter.starts_with("$share/");
        let existing = self.session.router_sub_id(&sub.filter);
        let router_filter = sub.router_filter.clone();
        self.session.subscribe(sub).await.map_err(drop)?;
        if let (true, Some(id)) = (resend, existing) {
            retained.extend(self.front.fetch_retained(&router_filter, id).await);
        }
        Ok(SubCode::Granted(qos))
    }

    async fn publish_will(&mut self, will: Will) {
        debug!(client_id = %self.client_id, topic = %will.message.topic, "Publishing the will.");
        let _ = self.session.route(will.message).await;
    }

    /// After the loop: will, session hand-over or parking, registry clean-up.
    async fn finish(
        mut self,
        end: End,
        control_rx: mpsc::Receiver<Control>,
        key: String,
        generation: u64,
    ) {
        self.front.metrics.connection_closed();
        let will_due = match &end {
            End::Disconnected { send_will } => *send_will,
            End::Lost(reason) => {
                debug!(peer = %self.peer, client_id = %self.client_id, reason, "Connection lost.");
                true
            }
            End::TakenOver(_) => true,
        };
        let will = if will_due { self.will.take() } else { None };
        if let End::TakenOver(reply) = end {
            if let Some(will) = will {
                self.publish_will(will).await;
            }
            if let Err(Some(mut session)) = reply.send(Some(self.session)) {
                session.close_link().await;
            }
            return;
        }
        let expiry_s = self.session.expiry_s;
        let pending_will = match will {
            Some(will) if will.delay_s == 0 || expiry_s == 0 => {
                self.publish_will(will).await;
                None
            }
            other => other,
        };
        if expiry_s == 0 {
            self.session.close_link().await;
            self.front.release(&key, generation);
            return;
        }
        tokio::spawn(park(
            self.front,
            self.session,
            control_rx,
            key,
            generation,
            pending_will,
        ));
    }
}

/// Keeps a persistent session alive while its client is away: queues QoS 1/2 messages, sends
/// a delayed will, and ends the session when its expiry interval has passed.
async fn park(
    front: Arc<Front>,
    mut session: Session,
    mut control_rx: mpsc::Receiver<Control>,
    key: String,
    generation: u64,
    mut will: Option<Will>,
) {
    let expiry = Duration::from_secs(u64::from(session.expiry_s).min(MAX_TIMER_S));
    let expires = tokio::time::sleep(expiry);
    tokio::pin!(expires);
    let will_at = will
        .as_ref()
        .map(|w| Instant::now() + Duration::from_secs(u64::from(w.delay_s).min(MAX_TIMER_S)));
    let max_queued = front.limits.max_queued_messages;
    let mut control_open = true;
    loop {
        let will_sleep = async {
            match will_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let want_link = session.queued() < max_queued;
        tokio::select! {
            control = control_rx.recv(), if control_open => match control {
                Some(Control::Takeover(reply)) => {
                    // Resumed before the will delay ran out: the will is not sent (§3.1.3.2.2).
                    if let Err(Some(mut session)) = reply.send(Some(session)) {
                        session.close_link().await;
                    }
                    return;
                }
                None => control_open = false,
            },
            () = &mut expires => break,
            () = will_sleep, if will.is_some() => {
                if let Some(w) = will.take() {
                    let _ = session.route(w.message).await;
                }
            }
            notification = session.link_rx.next(), if want_link => match notification {
                Ok(Some(rumqttd::Notification::Forward(forward))) => {
                    session.forward(forward, None, max_queued);
                }
                Ok(Some(rumqttd::Notification::Unschedule)) => {
                    if session.link_rx.wake().await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    if let Some(w) = will.take() {
        let _ = session.route(w.message).await;
    }
    debug!(client_id = %session.client_id, "Session expired.");
    session.close_link().await;
    front.release(&key, generation);
}
