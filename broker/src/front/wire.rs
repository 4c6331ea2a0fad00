//! Owns the MQTT wire format at the front: framing, protocol-version detection from CONNECT,
//! and translation between rumqttc's 3.1.1/5 packet codecs and one version-neutral packet
//! model. Pure: no sockets, no sessions, no rules.

use bytes::{Buf as _, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::secret::Secret;

/// Protocol version of a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// A frame's fixed header (MQTT 3.1.1 §2.2, MQTT 5 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Packet type and flags.
    pub byte1: u8,
    /// Bytes of the fixed header (1 + length bytes).
    pub header_len: usize,
    /// Bytes after the fixed header.
    pub remaining_len: usize,
}

impl FrameHeader {
    /// Whole frame length.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// The packet type nibble.
    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }
}

/// PUBLISH packet type (§2.2.1).
pub const PUBLISH: u8 = 3;
/// CONNECT packet type.
pub const CONNECT: u8 = 1;

/// Why bytes are not MQTT.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The remaining length uses more than 4 bytes (§2.2.3).
    #[error("malformed remaining length")]
    BadLength,
    /// The codec refused the packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The first packet is not a CONNECT.
    #[error("first packet is not CONNECT")]
    NotConnect,
    /// CONNECT names a protocol level we do not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
}

/// Parses a fixed header; `Ok(None)` when more bytes are needed.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<FrameHeader>, WireError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining_len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FrameHeader {
                byte1,
                header_len: 2 + i,
                remaining_len,
            }));
        }
    }
    Err(WireError::BadLength)
}

/// The protocol level of a complete CONNECT frame (§3.1.2.2), choosing the codec.
pub fn connect_version(frame: &[u8], header: &FrameHeader) -> Result<Version, WireError> {
    if header.packet_type() != CONNECT {
        return Err(WireError::NotConnect);
    }
    let body = &frame[header.header_len..];
    let name_len = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| WireError::Malformed("short CONNECT".into()))?;
    let level = *body
        .get(2 + name_len)
        .ok_or_else(|| WireError::Malformed("short CONNECT".into()))?;
    match level {
        4 => Ok(Version::V311),
        5 => Ok(Version::V5),
        other => Err(WireError::UnsupportedLevel(other)),
    }
}

/// The whole size of a packet whose remaining length is `remaining_len`: the type byte, the
/// variable-length remaining length (§2.2.3, 1 to 4 bytes) and the rest.
pub fn packet_len(remaining_len: usize) -> usize {
    let length_bytes = match remaining_len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining_len
}

/// Packet id and QoS of a PUBLISH from its first bytes, for refusing an oversize one without
/// buffering it. `Ok(None)` when more bytes are needed.
pub fn publish_pkid(buf: &[u8], header: &FrameHeader) -> Result<Option<(u8, u16)>, WireError> {
    let qos = (header.byte1 >> 1) & 0b11;
    if qos == 0 {
        return Ok(Some((0, 0)));
    }
    let body = &buf[header.header_len.min(buf.len())..];
    let Some(len) = body.get(..2) else {
        return Ok(None);
    };
    let topic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if 2 + topic_len + 2 > header.remaining_len {
        return Err(WireError::Malformed(
            "PUBLISH shorter than its topic".into(),
        ));
    }
    Ok(body
        .get(2 + topic_len..4 + topic_len)
        .map(|id| (qos, u16::from_be_bytes([id[0], id[1]]))))
}

/// An application message as the front routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties (never a topic alias or subscription identifier).
    pub props: Option<v5::PublishProperties>,
}

/// A will message and its MQTT 5 delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The message.
    pub message: Message,
    /// Will Delay Interval, s (MQTT 5 §3.1.3.2.2); 0 in 3.1.1.
    pub delay_s: u32,
}

/// What a CONNECT asks for.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// Protocol version.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// Keep-alive, s; 0 disables it (§3.1.2.10).
    pub keep_alive_s: u16,
    /// User name and password, if sent.
    pub login: Option<(String, Secret<String>)>,
    /// Last will.
    pub will: Option<Will>,
    /// Session Expiry Interval, s (5); 3.1.1 maps clean session 0 to "never".
    pub session_expiry_s: u32,
    /// Client's Receive Maximum (5), 65535 when absent.
    pub receive_maximum: u16,
    /// Client's Maximum Packet Size (5, §3.1.2.11.4), bytes; `None`: no limit beyond the
    /// protocol's.
    pub max_packet_bytes: Option<usize>,
}

/// One subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRequest {
    /// Topic filter, possibly `$share/{group}/...`.
    pub filter: String,
    /// Requested QoS.
    pub qos: u8,
    /// No Local (5).
    pub no_local: bool,
    /// Retain As Published (5).
    pub retain_as_published: bool,
    /// Retain Handling (5): 0 send, 1 send if new, 2 never.
    pub retain_handling: u8,
}

/// A packet from a client, after CONNECT.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// PUBLISH.
    Publish {
        /// Packet id (0 for QoS 0).
        pkid: u16,
        /// The message.
        message: Message,
        /// A topic alias the client used (we announce none, so any is an error).
        topic_alias: Option<u16>,
    },
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// The filters.
        requests: Vec<SubRequest>,
        /// Subscription Identifier (5).
        sub_id: Option<usize>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// The filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect {
        /// Reason code (0x04 asks for the will to be sent).
        reason: u8,
        /// New Session Expiry Interval (5).
        session_expiry_s: Option<u32>,
    },
    /// A packet a client must not send now (a second CONNECT, AUTH, a server packet).
    Unexpected(&'static str),
}

/// CONNACK outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCode {
    /// Accepted.
    Accepted,
    /// Client identifier rejected.
    IdRejected,
    /// Over the connection limit.
    Busy,
    /// Wrong or missing user name or password.
    BadCredentials,
    /// Authenticated but not allowed (e.g. the will topic is forbidden).
    NotAuthorized,
    /// The server failed to set up the session.
    Unavailable,
}

/// PUBACK/PUBREC reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckReason {
    /// Accepted.
    Success,
    /// ACL refusal (0x87).
    NotAuthorized,
    /// Over a limit, e.g. the payload size (0x97).
    QuotaExceeded,
}

/// SUBACK outcome per filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubCode {
    /// Granted at this QoS.
    Granted(u8),
    /// ACL refusal (3.1.1: 0x80; 5: 0x87).
    NotAuthorized,
    /// Malformed filter (3.1.1: 0x80; 5: 0x8F).
    Invalid,
}

/// A packet to a client.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// CONNACK.
    ConnAck {
        /// Session Present flag.
        session_present: bool,
        /// Outcome.
        code: ConnCode,
        /// Assigned Client Identifier (5), when the client sent none.
        assigned_id: Option<String>,
        /// Granted Session Expiry Interval (5), when lower than asked.
        session_expiry_s: Option<u32>,
        /// Our Receive Maximum (5).
        receive_max: u16,
        /// Our Maximum Packet Size (5, §3.2.2.3.6), bytes: the largest packet we accept.
        max_packet_bytes: Option<u32>,
    },
    /// PUBLISH.
    Publish {
        /// Packet id (0 for QoS 0).
        pkid: u16,
        /// Duplicate flag.
        dup: bool,
        /// QoS of this delivery.
        qos: u8,
        /// Retain flag of this delivery.
        retain: bool,
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// Properties (5).
        props: Option<v5::PublishProperties>,
    },
    /// PUBACK.
    PubAck(u16, AckReason),
    /// PUBREC.
    PubRec(u16, AckReason),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK.
    SubAck(u16, Vec<SubCode>),
    /// UNSUBACK for this many filters.
    UnsubAck(u16, usize),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5 only; 3.1.1 just closes).
    Disconnect(v5::DisconnectReasonCode),
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

fn v4_qos(qos: u8) -> rumqttc::mqttbytes::QoS {
    match qos {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Decodes the complete CONNECT frame at the start of `stream`, consuming it.
pub fn decode_connect(
    stream: &mut BytesMut,
    header: &FrameHeader,
) -> Result<ConnectInfo, WireError> {
    let version = connect_version(&stream[..header.frame_len()], header)?;
    match version {
        Version::V311 => {
            let v4::Packet::Connect(c) = v4::Packet::read(stream, usize::MAX).map_err(malformed)?
            else {
                return Err(WireError::NotConnect);
            };
            Ok(ConnectInfo {
                version,
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive_s: c.keep_alive,
                login: c.login.map(|l| (l.username, Secret::new(l.password))),
                will: c.last_will.map(|w| Will {
                    message: Message {
                        topic: w.topic,
                        payload: w.message,
                        qos: w.qos as u8,
                        retain: w.retain,
                        props: None,
                    },
                    delay_s: 0,
                }),
                session_expiry_s: if c.clean_session { 0 } else { u32::MAX },
                receive_maximum: u16::MAX,
                max_packet_bytes: None,
            })
        }
        Version::V5 => {
            let v5::Packet::Connect(c, will, login) =
                v5::Packet::read(stream, None).map_err(malformed)?
            else {
                return Err(WireError::NotConnect);
            };
            let props = c.properties.unwrap_or_default();
            let will = match will {
                Some(w) => {
                    let topic = String::from_utf8(w.topic.to_vec()).map_err(malformed)?;
                    let delay_s = w
                        .properties
                        .as_ref()
                        .and_then(|wp| wp.delay_interval)
                        .unwrap_or(0);
                    let props = w.properties.map(|wp| v5::PublishProperties {
                        payload_format_indicator: wp.payload_format_indicator,
                        message_expiry_interval: wp.message_expiry_interval,
                        topic_alias: None,
                        response_topic: wp.response_topic,
                        correlation_data: wp.correlation_data,
                        user_properties: wp.user_properties,
                        subscription_identifiers: Vec::new(),
                        content_type: wp.content_type,
                    });
                    Some(Will {
                        message: Message {
                            topic,
                            payload: w.message,
                            qos: w.qos as u8,
                            retain: w.retain,
                            props,
                        },
                        delay_s,
                    })
                }
                None => None,
            };
            Ok(ConnectInfo {
                version,
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive_s: c.keep_alive,
                login: login.map(|l| (l.username, Secret::new(l.password))),
                will,
                session_expiry_s: props.session_expiry_interval.unwrap_or(0),
                receive_maximum: props.receive_maximum.unwrap_or(u16::MAX).max(1),
                max_packet_bytes: props
                    .max_packet_size
                    .and_then(|max| usize::try_from(max).ok()),
            })
        }
    }
}

/// Decodes the complete frame (not CONNECT) at the start of `stream`, consuming it; payloads
/// stay slices of the read buffer.
pub fn decode(
    version: Version,
    stream: &mut BytesMut,
    header: &FrameHeader,
) -> Result<Inbound, WireError> {
    // rumqttc's v5 decoder refuses a DISCONNECT without a body, which §3.14.2.1 allows.
    if header.packet_type() == 14 && header.remaining_len == 0 {
        advance(stream, header.frame_len());
        return Ok(Inbound::Disconnect {
            reason: 0,
            session_expiry_s: None,
        });
    }
    match version {
        Version::V311 => {
            let packet = v4::Packet::read(stream, usize::MAX).map_err(malformed)?;
            Ok(match packet {
                v4::Packet::Publish(p) => Inbound::Publish {
                    pkid: p.pkid,
                    message: Message {
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos as u8,
                        retain: p.retain,
                        props: None,
                    },
                    topic_alias: None,
                },
                v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
                v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
                v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
                v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
                v4::Packet::Subscribe(s) => Inbound::Subscribe {
                    pkid: s.pkid,
                    requests: s
                        .filters
                        .into_iter()
                        .map(|f| SubRequest {
                            filter: f.path,
                            qos: f.qos as u8,
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: 0,
                        })
                        .collect(),
                    sub_id: None,
                },
                v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                    pkid: u.pkid,
                    filters: u.topics,
                },
                v4::Packet::PingReq => Inbound::PingReq,
                v4::Packet::Disconnect => Inbound::Disconnect {
                    reason: 0,
                    session_expiry_s: None,
                },
                v4::Packet::Connect(_) => Inbound::Unexpected("a second CONNECT"),
                _ => Inbound::Unexpected("a server-to-client packet"),
            })
        }
        Version::V5 => {
            let packet = v5::Packet::read(stream, None).map_err(malformed)?;
            Ok(match packet {
                v5::Packet::Publish(mut p) => {
                    let topic_alias = p.properties.as_mut().and_then(|pr| pr.topic_alias.take());
                    Inbound::Publish {
                        pkid: p.pkid,
                        message: Message {
                            topic: String::from_utf8(p.topic.to_vec()).map_err(malformed)?,
                            payload: p.payload,
                            qos: p.qos as u8,
                            retain: p.retain,
                            props: p.properties,
                        },
                        topic_alias,
                    }
                }
                v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
                v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
                v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
                v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
                v5::Packet::Subscribe(s) => Inbound::Subscribe {
                    pkid: s.pkid,
                    sub_id: s.properties.and_then(|p| p.id),
                    requests: s
                        .filters
                        .into_iter()
                        .map(|f| SubRequest {
                            filter: f.path,
                            qos: f.qos as u8,
                            no_local: f.nolocal,
                            retain_as_published: f.preserve_retain,
                            retain_handling: match f.retain_forward_rule {
                                v5::RetainForwardRule::OnEverySubscribe => 0,
                                v5::RetainForwardRule::OnNewSubscribe => 1,
                                v5::RetainForwardRule::Never => 2,
                            },
                        })
                        .collect(),
                },
                v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                    pkid: u.pkid,
                    filters: u.filters,
                },
                v5::Packet::PingReq(_) => Inbound::PingReq,
                v5::Packet::Disconnect(d) => Inbound::Disconnect {
                    reason: d.reason_code as u8,
                    session_expiry_s: d.properties.and_then(|p| p.session_expiry_interval),
                },
                v5::Packet::Connect(..) => Inbound::Unexpected("a second CONNECT"),
                v5::Packet::Auth(_) => Inbound::Unexpected("AUTH (no enhanced authentication)"),
                _ => Inbound::Unexpected("a server-to-client packet"),
            })
        }
    }
}

fn v4_connack_code(code: ConnCode) -> v4::ConnectReturnCode {
    match code {
        ConnCode::Accepted => v4::ConnectReturnCode::Success,
        ConnCode::IdRejected => v4::ConnectReturnCode::BadClientId,
        ConnCode::Busy | ConnCode::Unavailable => v4::ConnectReturnCode::ServiceUnavailable,
        ConnCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
        ConnCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
    }
}

fn v5_connack_code(code: ConnCode) -> v5::ConnectReturnCode {
    match code {
        ConnCode::Accepted => v5::ConnectReturnCode::Success,
        ConnCode::IdRejected => v5::ConnectReturnCode::ClientIdentifierNotValid,
        ConnCode::Busy => v5::ConnectReturnCode::ServerBusy,
        ConnCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
        ConnCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
        ConnCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
    }
}

/// The CONNACK refusing an unsupported protocol level, in 3.1.1 form (§3.1.2.2: return code
/// 0x01), which every client version can read.
pub const CONNACK_UNSUPPORTED_LEVEL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];

/// Appends `packet` to `out` in `version`'s encoding.
pub fn encode(version: Version, packet: Outbound, out: &mut BytesMut) -> Result<(), WireError> {
    match version {
        Version::V311 => {
            let packet = match packet {
                Outbound::ConnAck {
                    session_present,
                    code,
                    ..
                } => v4::Packet::ConnAck(v4::ConnAck::new(v4_connack_code(code), session_present)),
                Outbound::Publish {
                    pkid,
                    dup,
                    qos,
                    retain,
                    topic,
                    payload,
                    ..
                } => v4::Packet::Publish(v4::Publish {
                    dup,
                    qos: v4_qos(qos),
                    retain,
                    topic,
                    pkid,
                    payload,
                }),
                Outbound::PubAck(pkid, _) => v4::Packet::PubAck(v4::PubAck::new(pkid)),
                Outbound::PubRec(pkid, _) => v4::Packet::PubRec(v4::PubRec::new(pkid)),
                Outbound::PubRel(pkid) => v4::Packet::PubRel(v4::PubRel::new(pkid)),
                Outbound::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
                Outbound::SubAck(pkid, codes) => v4::Packet::SubAck(v4::SubAck::new(
                    pkid,
                    codes
                        .into_iter()
                        .map(|c| match c {
                            SubCode::Granted(q) => v4::SubscribeReasonCode::Success(v4_qos(q)),
                            SubCode::NotAuthorized | SubCode::Invalid => {
                                v4::SubscribeReasonCode::Failure
                            }
                        })
                        .collect(),
                )),
                Outbound::UnsubAck(pkid, _) => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
                Outbound::PingResp => v4::Packet::PingResp,
                Outbound::Disconnect(_) => return Ok(()),
            };
            packet.write(out, usize::MAX).map(drop).map_err(malformed)
        }
        Version::V5 => {
            let packet = match packet {
                Outbound::ConnAck {
                    session_present,
                    code,
                    assigned_id,
                    session_expiry_s,
                    receive_max,
                    max_packet_bytes,
                } => {
                    let properties = (code == ConnCode::Accepted).then(|| v5::ConnAckProperties {
                        session_expiry_interval: session_expiry_s,
                        receive_max: Some(receive_max),
                        assigned_client_identifier: assigned_id,
                        shared_subscription_available: Some(1),
                        subscription_identifiers_available: Some(1),
                        wildcard_subscription_available: Some(1),
                        retain_available: Some(1),
                        max_qos: None,
                        max_packet_size: max_packet_bytes,
                        topic_alias_max: None,
                        reason_string: None,
                        user_properties: Vec::new(),
                        server_keep_alive: None,
                        response_information: None,
                        server_reference: None,
                        authentication_method: None,
                        authentication_data: None,
                    });
                    v5::Packet::ConnAck(v5::ConnAck {
                        session_present,
                        code: v5_connack_code(code),
                        properties,
                    })
                }
                Outbound::Publish {
                    pkid,
                    dup,
                    qos,
                    retain,
                    topic,
                    payload,
                    props,
                } => v5::Packet::Publish(v5::Publish {
                    dup,
                    qos: v5_qos(qos),
                    retain,
                    topic: Bytes::from(topic),
                    pkid,
                    payload,
                    properties: props,
                }),
                Outbound::PubAck(pkid, reason) => v5::Packet::PubAck(v5::PubAck {
                    pkid,
                    reason: match reason {
                        AckReason::Success => v5::PubAckReason::Success,
                        AckReason::NotAuthorized => v5::PubAckReason::NotAuthorized,
                        AckReason::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
                    },
                    properties: None,
                }),
                Outbound::PubRec(pkid, reason) => v5::Packet::PubRec(v5::PubRec {
                    pkid,
                    reason: match reason {
                        AckReason::Success => v5::PubRecReason::Success,
                        AckReason::NotAuthorized => v5::PubRecReason::NotAuthorized,
                        AckReason::QuotaExceeded => v5::PubRecReason::QuotaExceeded,
                    },
                    properties: None,
                }),
                Outbound::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
                Outbound::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
                Outbound::SubAck(pkid, codes) => v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes
                        .into_iter()
                        .map(|c| match c {
                            SubCode::Granted(q) => v5::SubscribeReasonCode::Success(v5_qos(q)),
                            SubCode::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                            SubCode::Invalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                        })
                        .collect(),
                    properties: None,
                }),
                Outbound::UnsubAck(pkid, count) => v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                }),
                Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
                Outbound::Disconnect(reason) => v5::Packet::Disconnect(v5::Disconnect::new(reason)),
            };
            packet.write(out, None).map(drop).map_err(malformed)
        }
    }
}

/// Consumes `n` bytes of `buf` (at most its length).
pub fn advance(buf: &mut BytesMut, n: usize) {
    let n = n.min(buf.len());
    buf.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{MqttVersion, connect_packet};

    #[test]
    fn parses_multi_byte_remaining_lengths_and_asks_for_more_bytes() {
        assert_eq!(parse_fixed_header(&[0x30]).unwrap(), None);
        let h = parse_fixed_header(&[0x30, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!((h.header_len, h.remaining_len), (3, 128));
        assert!(parse_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn detects_both_protocol_versions_from_connect() {
        for (version, want) in [
            (MqttVersion::V311, Version::V311),
            (MqttVersion::V5, Version::V5),
        ] {
            let frame = connect_packet(version);
            let header = parse_fixed_header(&frame).unwrap().unwrap();
            assert_eq!(connect_version(&frame, &header).unwrap(), want);
            let info = decode_connect(&mut BytesMut::from(&frame[..]), &header).unwrap();
            assert_eq!(info.version, want);
            assert!(info.clean_start);
        }
    }

    #[test]
    fn reads_pkid_of_an_oversize_publish_from_its_head() {
        // PUBLISH QoS 1, remaining length 1_000_000, topic "a/b", pkid 7.
        let mut head = vec![0x32, 0xc0, 0x84, 0x3d];
        head.extend_from_slice(&[0, 3, b'a', b'/', b'b', 0, 7]);
        let header = parse_fixed_header(&head).unwrap().unwrap();
        assert_eq!(header.remaining_len, 1_000_000);
        assert_eq!(publish_pkid(&head, &header).unwrap(), Some((1, 7)));
        assert_eq!(publish_pkid(&head[..6], &header).unwrap(), None);
    }

    #[test]
    fn packet_len_counts_the_fixed_header() {
        assert_eq!(packet_len(0), 2);
        assert_eq!(packet_len(127), 129);
        assert_eq!(packet_len(128), 131);
        assert_eq!(packet_len(2_097_152), 2_097_157);
    }

    #[test]
    fn v5_connack_announces_the_maximum_packet_size() {
        let connack = Outbound::ConnAck {
            session_present: false,
            code: ConnCode::Accepted,
            assigned_id: None,
            session_expiry_s: None,
            receive_max: 10,
            max_packet_bytes: Some(300_000),
        };
        let mut out = BytesMut::new();
        encode(Version::V5, connack, &mut out).unwrap();
        let header = parse_fixed_header(&out).unwrap().unwrap();
        let v5::Packet::ConnAck(ack) = v5::Packet::read(&mut out, None).unwrap() else {
            panic!("not a CONNACK");
        };
        assert_eq!(header.packet_type(), 2);
        assert_eq!(ack.properties.unwrap().max_packet_size, Some(300_000));
    }

    #[test]
    fn v5_disconnect_without_a_body_is_a_normal_disconnect() {
        let header = parse_fixed_header(&[0xe0, 0x00]).unwrap().unwrap();
        let mut stream = BytesMut::from(&[0xe0, 0x00][..]);
        let packet = decode(Version::V5, &mut stream, &header).unwrap();
        assert!(stream.is_empty());
        assert!(matches!(packet, Inbound::Disconnect { reason: 0, .. }));
    }

    #[test]
    fn suback_failure_codes_differ_by_version() {
        let codes = vec![SubCode::Granted(1), SubCode::NotAuthorized];
        let mut v4 = BytesMut::new();
        encode(Version::V311, Outbound::SubAck(9, codes.clone()), &mut v4).unwrap();
        assert_eq!(&v4[..], &[0x90, 4, 0, 9, 0x01, 0x80]);
        let mut v5 = BytesMut::new();
        encode(Version::V5, Outbound::SubAck(9, codes), &mut v5).unwrap();
        assert_eq!(&v5[..], &[0x90, 5, 0, 9, 0, 0x01, 0x87]);
    }
}
