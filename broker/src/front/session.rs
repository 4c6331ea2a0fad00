//! Owns one MQTT session's state: its subscriptions (mirrored onto its rumqttd router link),
//! the QoS 1/2 flows in both directions, and the queue of messages waiting for the client's
//! window. Turns router notifications into deliveries (QoS = min(published, granted), No Local,
//! retain flags). Does no socket I/O: it appends encoded packets to a buffer the connection
//! writes.
//!
//! Every message crosses the router as a QoS 0 publish whose MQTT 5 properties carry one extra
//! user property, [`META_KEY`], with the publisher's QoS, retain flag, session number, arrival
//! time and Message Expiry Interval (MQTT 5 §3.3.2.3.3; kept out of rumqttd, whose retained
//! store shortens a stored interval again on every read) and whether the payload was empty (rumqttd deletes the retained message on any empty payload,
//! so an empty non-retained message crosses as a one-byte placeholder).
//! rumqttd rewrites a forward's QoS to the subscription's and drops the retain flag of live
//! messages; the envelope lets us restore what the specification requires.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol as rd;

use crate::front::wire::{self, Message, Outbound, Version};
use crate::metrics::Metrics;

/// User property key of the routing envelope. Stripped from client publishes so it cannot be
/// forged, and from every delivery.
pub const META_KEY: &str = "$dtop-route";

/// One subscription as the client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    /// The filter as the client wrote it.
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// No Local (5).
    pub no_local: bool,
    /// Retain As Published (5).
    pub retain_as_published: bool,
    /// Retain Handling (5).
    pub retain_handling: u8,
    /// The client's Subscription Identifier (5).
    pub client_sub_id: Option<usize>,
    /// The filter as given to the router (`$share` groups renamed).
    pub router_filter: String,
}

/// A delivery waiting for or occupying a slot in the client's window.
#[derive(Debug, Clone)]
struct Delivery {
    qos: u8,
    retain: bool,
    topic: String,
    payload: Bytes,
    props: Option<PublishProperties>,
    /// When the broker received the message ([`clock_ms`]), for its Message Expiry Interval.
    received_ms: u64,
}

/// Milliseconds on the process's monotonic clock: the envelope's arrival stamp. Messages,
/// retained ones included, live only as long as the process (rumqttd keeps them in memory),
/// so a process-local clock suffices, and it never jumps with the wall clock.
fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the Message Expiry Interval (MQTT 5 §3.3.2.3.3) leaves of a message `waited_ms` after
/// it arrived: `None` once it has expired, else the interval to forward, reduced by the whole
/// seconds it waited (`Some(None)` when it never expires). An interval of 0 is passed on
/// unchanged and never expires: taken literally it would expire even a live delivery.
fn remaining_expiry_s(expiry_s: Option<u32>, waited_ms: u64) -> Option<Option<u32>> {
    let Some(expiry_s) = expiry_s.filter(|s| *s > 0) else {
        return Some(expiry_s);
    };
    if waited_ms >= u64::from(expiry_s) * 1000 {
        return None;
    }
    // waited_ms / 1000 < expiry_s here, so the difference is at least 1 and fits.
    let waited_s = u32::try_from(waited_ms / 1000).unwrap_or(expiry_s);
    Some(Some(expiry_s - waited_s.min(expiry_s - 1)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct InFlight {
    pkid: u16,
    state: OutState,
    delivery: Delivery,
}

/// Why a router link operation failed (the router thread is gone).
#[derive(Debug, thiserror::Error)]
#[error("router link failed: {0}")]
pub struct LinkFailed(pub String);

/// One session. Owned by its connection task while connected, by a parked task while the
/// client is away.
pub struct Session {
    /// Unique number; the origin marker for No Local.
    pub id: u64,
    /// MQTT client identifier.
    pub client_id: String,
    /// Session Expiry Interval after disconnect, s.
    pub expiry_s: u32,
    link_tx: LinkTx,
    /// The router's notifications for this session.
    pub link_rx: LinkRx,
    subs: HashMap<usize, Sub>,
    by_filter: HashMap<String, usize>,
    next_router_sub: usize,
    inflight: VecDeque<InFlight>,
    queue: VecDeque<Delivery>,
    incoming_qos2: HashSet<u16>,
    next_pkid: u16,
    /// The connected client's Maximum Packet Size (MQTT 5 §3.1.2.11.4), bytes; set by each
    /// connection that holds the session. Larger PUBLISHes are discarded for this client.
    pub max_packet_bytes: Option<usize>,
    queue_gauge: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("subs", &self.subs.len())
            .field("inflight", &self.inflight.len())
            .field("queue", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// What the envelope records about the original PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    qos: u8,
    retain: bool,
    /// The payload was empty and crosses the router as one placeholder byte: rumqttd treats
    /// every empty payload as "delete the retained message", retained flag or not.
    empty: bool,
    origin: u64,
    /// [`clock_ms`] when the broker received the message.
    received_ms: u64,
    /// The Message Expiry Interval it was published with, s.
    expiry_s: Option<u32>,
}

/// Placeholder payload of an empty non-retained message inside the router.
const EMPTY_PLACEHOLDER: &[u8] = &[0];

/// The envelope's value: `{qos}{retain}{empty}:{origin session}:{received_ms}:{expiry_s}`,
/// the expiry empty when the message has none.
fn meta_value(meta: Meta) -> String {
    format!(
        "{}{}{}:{}:{}:{}",
        meta.qos,
        u8::from(meta.retain),
        u8::from(meta.empty),
        meta.origin,
        meta.received_ms,
        meta.expiry_s.map(|s| s.to_string()).unwrap_or_default()
    )
}

fn parse_meta(value: &str) -> Option<Meta> {
    let mut fields = value.split(':');
    let (flags, origin, received_ms, expiry_s) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() {
        return None;
    }
    let mut chars = flags.chars();
    let qos = u8::try_from(chars.next()?.to_digit(10)?).ok()?;
    let retain = chars.next()? == '1';
    let empty = chars.next() == Some('1');
    Some(Meta {
        qos,
        retain,
        empty,
        origin: origin.parse().ok()?,
        received_ms: received_ms.parse().ok()?,
        expiry_s: match expiry_s {
            "" => None,
            s => Some(s.parse().ok()?),
        },
    })
}

fn to_router_props(props: Option<PublishProperties>, meta: String) -> rd::PublishProperties {
    let props = props.unwrap_or_default();
    let mut user_properties: Vec<(String, String)> = props
        .user_properties
        .into_iter()
        .filter(|(k, _)| k != META_KEY)
        .collect();
    user_properties.push((META_KEY.to_owned(), meta));
    rd::PublishProperties {
        payload_format_indicator: props.payload_format_indicator,
        // Carried in the envelope instead: the front alone applies expiry.
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: props.response_topic,
        correlation_data: props.correlation_data,
        user_properties,
        subscription_identifiers: Vec::new(),
        content_type: props.content_type,
    }
}

/// Splits a router forward's properties into the client-visible ones, the envelope and the
/// router subscription id that matched.
fn from_router_props(
    props: Option<rd::PublishProperties>,
) -> (PublishProperties, Option<Meta>, Option<usize>) {
    let props = props.unwrap_or_default();
    let mut meta = None;
    let user_properties = props
        .user_properties
        .into_iter()
        .filter(|(k, v)| {
            if k == META_KEY {
                meta = parse_meta(v);
                false
            } else {
                true
            }
        })
        .collect();
    let matched = props.subscription_identifiers.first().copied();
    (
        PublishProperties {
            payload_format_indicator: props.payload_format_indicator,
            message_expiry_interval: props.message_expiry_interval,
            topic_alias: None,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties,
            subscription_identifiers: Vec::new(),
            content_type: props.content_type,
        },
        meta,
        matched,
    )
}

fn props_are_empty(p: &PublishProperties) -> bool {
    *p == PublishProperties::default()
}

/// What to do with one incoming QoS 2 PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos2Receipt {
    /// First time: route it.
    New,
    /// A retransmission of a packet id still awaiting PUBREL: acknowledge only.
    Duplicate,
}

impl Session {
    /// A fresh session over a new router link.
    pub fn new(
        id: u64,
        client_id: String,
        expiry_s: u32,
        link: (LinkTx, LinkRx),
        metrics: Arc<Metrics>,
    ) -> Self {
        let queue_gauge = metrics.register_queue(id, &client_id);
        Self {
            id,
            client_id,
            expiry_s,
            link_tx: link.0,
            link_rx: link.1,
            subs: HashMap::new(),
            by_filter: HashMap::new(),
            next_router_sub: 1,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            next_pkid: 0,
            max_packet_bytes: None,
            queue_gauge,
            metrics,
        }
    }

    /// Messages queued plus in flight.
    pub fn depth(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    /// Messages waiting for the window.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn update_gauge(&self) {
        self.queue_gauge.store(self.depth(), Ordering::Relaxed);
    }

    /// Publishes `message` into the router on behalf of this session (or its will).
    pub async fn route(&mut self, message: Message) -> Result<(), LinkFailed> {
        // An empty retained PUBLISH must reach the router empty (it deletes the retained
        // message); any other empty one must not.
        let empty = message.payload.is_empty() && !message.retain;
        let meta = meta_value(Meta {
            qos: message.qos,
            retain: message.retain,
            empty,
            origin: self.id,
            received_ms: clock_ms(),
            expiry_s: message
                .props
                .as_ref()
                .and_then(|p| p.message_expiry_interval),
        });
        let props = to_router_props(message.props, meta);
        let payload = if empty {
            Bytes::from_static(EMPTY_PLACEHOLDER)
        } else {
            message.payload
        };
        let publish = rd::Publish::new(Bytes::from(message.topic), payload, message.retain);
        self.link_tx
            .send(rd::Packet::Publish(publish, Some(props)))
            .await
            .map(drop)
            .map_err(|e| LinkFailed(e.to_string()))?;
        self.metrics.message_in();
        Ok(())
    }

    /// Records an incoming QoS 2 packet id (§4.3.3 method B: deliver on PUBLISH, remember the
    /// id until PUBREL so a retransmission is not delivered twice).
    pub fn receive_qos2(&mut self, pkid: u16) -> Qos2Receipt {
        if self.incoming_qos2.insert(pkid) {
            Qos2Receipt::New
        } else {
            Qos2Receipt::Duplicate
        }
    }

    /// PUBREL from the client: the QoS 2 exchange for `pkid` is over.
    pub fn release_qos2(&mut self, pkid: u16) {
        self.incoming_qos2.remove(&pkid);
    }

    /// Whether the session already has a subscription on `filter`.
    pub fn has_filter(&self, filter: &str) -> bool {
        self.by_filter.contains_key(filter)
    }

    /// The router subscription id of `filter`, if subscribed.
    pub fn router_sub_id(&self, filter: &str) -> Option<usize> {
        self.by_filter.get(filter).copied()
    }

    /// Adds or updates a subscription, mirroring a new one onto the router link.
    pub async fn subscribe(&mut self, sub: Sub) -> Result<(), LinkFailed> {
        if let Some(id) = self.by_filter.get(&sub.filter) {
            self.subs.insert(*id, sub);
            return Ok(());
        }
        let id = self.next_router_sub;
        self.next_router_sub += 1;
        let filter = rd::Filter {
            path: sub.router_filter.clone(),
            qos: rd::QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: rd::RetainForwardRule::OnEverySubscribe,
        };
        let props = rd::SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        self.by_filter.insert(sub.filter.clone(), id);
        self.subs.insert(id, sub);
        self.link_tx
            .send(rd::Packet::Subscribe(
                rd::Subscribe {
                    pkid: 0,
                    filters: vec![filter],
                },
                Some(props),
            ))
            .await
            .map(drop)
            .map_err(|e| LinkFailed(e.to_string()))
    }

    /// Removes a subscription; whether it existed.
    pub async fn unsubscribe(&mut self, filter: &str) -> Result<bool, LinkFailed> {
        let Some(id) = self.by_filter.remove(filter) else {
            return Ok(false);
        };
        let Some(sub) = self.subs.remove(&id) else {
            return Ok(false);
        };
        self.link_tx
            .send(rd::Packet::Unsubscribe(
                rd::Unsubscribe {
                    pkid: 0,
                    filters: vec![sub.router_filter],
                },
                None,
            ))
            .await
            .map(|_| true)
            .map_err(|e| LinkFailed(e.to_string()))
    }

    /// Asks the router to forget this session's link.
    pub async fn close_link(&mut self) {
        let disconnect = rd::Disconnect {
            reason_code: rd::DisconnectReasonCode::NormalDisconnection,
        };
        // The router may already be gone; then there is nothing left to release.
        let _ = self
            .link_tx
            .send(rd::Packet::Disconnect(disconnect, None))
            .await;
        self.metrics.unregister_queue(self.id);
    }

    /// Handles one router forward: filters it (No Local, Retain Handling), computes the
    /// delivery QoS and retain flag, and either writes it into `out` (window permitting, when
    /// `online`) or queues it; a full queue drops its oldest message (counted).
    pub fn forward(
        &mut self,
        forward: rumqttd::Forward,
        online: Option<(Version, u16, &mut BytesMut)>,
        max_queued: usize,
    ) {
        let rumqttd::Forward {
            cursor,
            publish,
            properties,
            ..
        } = forward;
        let (props, meta, matched) = from_router_props(properties);
        let Some(sub) = matched.and_then(|id| self.subs.get(&id)) else {
            return;
        };
        let meta = meta.unwrap_or(Meta {
            qos: 0,
            retain: publish.retain,
            empty: false,
            origin: 0,
            received_ms: clock_ms(),
            expiry_s: None,
        });
        let (pub_qos, pub_retain, origin) = (meta.qos, meta.retain, meta.origin);
        if sub.no_local && origin == self.id {
            return;
        }
        // rumqttd sends stored retained messages (and only those) without a log cursor.
        let from_store = cursor.is_none() && publish.retain;
        if from_store && sub.retain_handling == 2 {
            return;
        }
        let retain = from_store || (sub.retain_as_published && pub_retain);
        let qos = pub_qos.min(sub.qos);
        let mut props = props;
        props.message_expiry_interval = meta.expiry_s;
        if let Some(id) = sub.client_sub_id {
            props.subscription_identifiers.push(id);
        }
        let Ok(topic) = String::from_utf8(publish.topic.to_vec()) else {
            return;
        };
        let delivery = Delivery {
            qos,
            retain,
            topic,
            payload: if meta.empty {
                Bytes::new()
            } else {
                publish.payload
            },
            props: (!props_are_empty(&props)).then_some(props),
            received_ms: meta.received_ms,
        };
        match online {
            Some((version, window, out)) => {
                if qos == 0 {
                    if let Some(delivery) = self.unexpired(delivery) {
                        self.write_delivery(version, 0, false, &delivery, out);
                    }
                } else if self.queue.is_empty() && self.inflight.len() < usize::from(window) {
                    self.send_inflight(version, delivery, out);
                } else {
                    self.enqueue(delivery, max_queued);
                }
            }
            // Offline: QoS 0 is not kept for absent clients (like Mosquitto's default).
            None if qos > 0 => self.enqueue(delivery, max_queued),
            None => {}
        }
        self.update_gauge();
    }

    fn enqueue(&mut self, delivery: Delivery, max_queued: usize) {
        if self.queue.len() >= max_queued {
            // Expired messages go first, so they never push out one that could still be sent.
            let before = self.queue.len();
            let now_ms = clock_ms();
            self.queue.retain(|d| {
                let waited_ms = now_ms.saturating_sub(d.received_ms);
                let expiry_s = d.props.as_ref().and_then(|p| p.message_expiry_interval);
                remaining_expiry_s(expiry_s, waited_ms).is_some()
            });
            for _ in self.queue.len()..before {
                self.metrics.expired();
            }
        }
        if self.queue.len() >= max_queued {
            self.queue.pop_front();
            self.metrics.queue_dropped();
        }
        self.queue.push_back(delivery);
    }

    fn next_pkid(&mut self) -> u16 {
        // Skip ids still in flight; the window is far below 65535, so this ends quickly.
        for _ in 0..=u16::MAX {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let pkid = self.next_pkid;
            if !self.inflight.iter().any(|f| f.pkid == pkid) {
                return pkid;
            }
        }
        self.next_pkid
    }

    /// `delivery` as it may start onward delivery now: `None` (counted) when its Message
    /// Expiry Interval has run out, else with the interval reduced by the time it waited.
    fn unexpired(&self, mut delivery: Delivery) -> Option<Delivery> {
        let expiry_s = delivery
            .props
            .as_ref()
            .and_then(|p| p.message_expiry_interval);
        let waited_ms = clock_ms().saturating_sub(delivery.received_ms);
        let Some(left_s) = remaining_expiry_s(expiry_s, waited_ms) else {
            self.metrics.expired();
            return None;
        };
        if let Some(props) = delivery.props.as_mut() {
            props.message_expiry_interval = left_s;
        }
        Some(delivery)
    }

    fn send_inflight(&mut self, version: Version, delivery: Delivery, out: &mut BytesMut) {
        let Some(delivery) = self.unexpired(delivery) else {
            return;
        };
        let pkid = self.next_pkid();
        let state = if delivery.qos == 1 {
            OutState::Qos1Sent
        } else {
            OutState::Qos2Sent
        };
        // A message too large for this client is over for it, as if delivered (§3.1.2.11.4).
        if self.write_delivery(version, pkid, false, &delivery, out) {
            self.inflight.push_back(InFlight {
                pkid,
                state,
                delivery,
            });
        }
    }

    /// Appends the PUBLISH of `delivery` to `out`; whether it was written. A packet larger
    /// than the client's Maximum Packet Size is taken back out and counted instead (MQTT 5
    /// §3.1.2.11.4: the server must not send it and acts as if it had been delivered).
    fn write_delivery(
        &self,
        version: Version,
        pkid: u16,
        dup: bool,
        delivery: &Delivery,
        out: &mut BytesMut,
    ) -> bool {
        let packet = Outbound::Publish {
            pkid,
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: delivery.topic.clone(),
            payload: delivery.payload.clone(),
            props: delivery.props.clone(),
        };
        let start = out.len();
        if wire::encode(version, packet, out).is_err() {
            out.truncate(start);
            return false;
        }
        if self
            .max_packet_bytes
            .is_some_and(|max| out.len() - start > max)
        {
            out.truncate(start);
            self.metrics.too_large_for_client();
            return false;
        }
        self.metrics.message_out();
        true
    }

    /// Moves queued messages into the window after acks freed slots.
    pub fn pump(&mut self, version: Version, window: u16, out: &mut BytesMut) {
        while self.inflight.len() < usize::from(window) {
            let Some(delivery) = self.queue.pop_front() else {
                break;
            };
            if delivery.qos == 0 {
                if let Some(delivery) = self.unexpired(delivery) {
                    self.write_delivery(version, 0, false, &delivery, out);
                }
            } else {
                self.send_inflight(version, delivery, out);
            }
        }
        self.update_gauge();
    }

    /// On (re)connect with this session: re-sends unacknowledged PUBLISHes with DUP set and
    /// outstanding PUBRELs (§4.4), then fills the window from the queue. Their delivery has
    /// started, so they no longer expire; one too large for the new connection's Maximum
    /// Packet Size is over, as if delivered.
    pub fn resume(&mut self, version: Version, window: u16, out: &mut BytesMut) {
        let flights = std::mem::take(&mut self.inflight);
        for flight in flights {
            let keep = match flight.state {
                OutState::Qos1Sent | OutState::Qos2Sent => {
                    self.write_delivery(version, flight.pkid, true, &flight.delivery, out)
                }
                OutState::Released => {
                    let _ = wire::encode(version, Outbound::PubRel(flight.pkid), out);
                    true
                }
            };
            if keep {
                self.inflight.push_back(flight);
            }
        }
        self.pump(version, window, out);
    }

    /// PUBACK from the client.
    pub fn puback(&mut self, pkid: u16) {
        self.inflight
            .retain(|f| !(f.pkid == pkid && f.state == OutState::Qos1Sent));
    }

    /// PUBREC from the client: answer with PUBREL.
    pub fn pubrec(&mut self, version: Version, pkid: u16, out: &mut BytesMut) {
        if let Some(flight) = self
            .inflight
            .iter_mut()
            .find(|f| f.pkid == pkid && f.state == OutState::Qos2Sent)
        {
            flight.state = OutState::Released;
        }
        let _ = wire::encode(version, Outbound::PubRel(pkid), out);
    }

    /// PUBCOMP from the client.
    pub fn pubcomp(&mut self, pkid: u16) {
        self.inflight
            .retain(|f| !(f.pkid == pkid && f.state == OutState::Released));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_strips_forged_keys() {
        let client = PublishProperties {
            user_properties: vec![("a".into(), "1".into()), (META_KEY.into(), "22:999".into())],
            content_type: Some("x".into()),
            ..PublishProperties::default()
        };
        let meta = Meta {
            qos: 1,
            retain: true,
            empty: false,
            origin: 42,
            received_ms: 1234,
            expiry_s: Some(9),
        };
        let mut router = to_router_props(Some(client), meta_value(meta));
        router.subscription_identifiers.push(3);
        let (back, parsed, matched) = from_router_props(Some(router));
        assert_eq!(parsed, Some(meta));
        assert_eq!(matched, Some(3));
        assert_eq!(back.user_properties, vec![("a".to_owned(), "1".to_owned())]);
        assert_eq!(back.content_type.as_deref(), Some("x"));
        assert!(back.subscription_identifiers.is_empty());
    }

    #[test]
    fn refuses_garbled_envelopes() {
        assert_eq!(
            parse_meta("101:5:77:"),
            Some(Meta {
                qos: 1,
                retain: false,
                empty: true,
                origin: 5,
                received_ms: 77,
                expiry_s: None,
            })
        );
        assert_eq!(parse_meta("101:5:77:x"), None);
        assert_eq!(parse_meta("x"), None);
        assert_eq!(parse_meta("1:"), None);
        assert_eq!(parse_meta("101:5"), None);
        assert_eq!(parse_meta("101:5:77:1:2"), None);
    }

    #[test]
    fn expiry_counts_down_by_whole_seconds_waited_and_ends_at_the_interval() {
        assert_eq!(remaining_expiry_s(None, 10_000_000), Some(None));
        assert_eq!(remaining_expiry_s(Some(6), 0), Some(Some(6)));
        assert_eq!(remaining_expiry_s(Some(6), 999), Some(Some(6)));
        assert_eq!(remaining_expiry_s(Some(6), 3_200), Some(Some(3)));
        assert_eq!(remaining_expiry_s(Some(6), 5_999), Some(Some(1)));
        assert_eq!(remaining_expiry_s(Some(6), 6_000), None);
        assert_eq!(remaining_expiry_s(Some(1), 3_000), None);
        assert_eq!(remaining_expiry_s(Some(0), 60_000), Some(Some(0)));
    }
}
