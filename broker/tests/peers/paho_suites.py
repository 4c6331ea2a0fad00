"""Our own equivalents of the Eclipse Paho interoperability suites (eclipse/paho.mqtt.testing,
interoperability/client_test.py for MQTT 3.1.1 and client_test5.py for MQTT 5), one case per
suite test with the same name and the same checks, driven by the Eclipse Paho Python client
(paho-mqtt 2.x). Where a suite test needs a client that misbehaves or goes silent (a second
CONNECT, a wrong protocol name, a client that stops acknowledging or pinging, a topic alias 0,
too many unacknowledged QoS 2 PUBLISHes), the case writes raw MQTT packets instead, as the
suite's own test client does.

Run by broker/tests/paho_suites.rs as

    python paho_suites.py HOST PORT SUITE PREFIX [CASE ...]

SUITE is v311 or v5; PREFIX keeps topics and client ids apart from other users of the broker.
Prints one line per case: `RESULT {"suite": ..., "case": ..., "passed": ..., "detail": ...}`.
Exits 0 whatever the outcomes (the caller compares brokers); non-zero only if the script
itself breaks. Every wait is bounded.
"""

import json
import queue
import socket
import struct
import sys
import time
import traceback

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT, SUITE, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ONLY = set(sys.argv[5:])
WAIT_S = 10.0

TOPICS = [PREFIX + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
WILDTOPICS = [PREFIX + t for t in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
NOSUBSCRIBE_TOPICS = ("test/nosubscribe",)
A_ID, B_ID = PREFIX + "myclientid", PREFIX + "myclientid2"


# --- raw MQTT packets, for the clients that must misbehave -----------------------------------

def varint(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


PROP_KINDS = {0x01: "b", 0x02: "i", 0x03: "s", 0x08: "s", 0x09: "d", 0x0B: "v", 0x11: "i",
              0x12: "s", 0x13: "h", 0x15: "s", 0x16: "d", 0x17: "b", 0x18: "i", 0x19: "b",
              0x1A: "s", 0x1C: "s", 0x1F: "s", 0x21: "h", 0x22: "h", 0x23: "h", 0x24: "b",
              0x25: "b", 0x26: "p", 0x27: "i", 0x28: "b", 0x29: "b", 0x2A: "b"}


def props(pairs):
    """MQTT 5 properties from (id, value) pairs."""
    body = bytearray()
    for pid, value in pairs:
        kind = PROP_KINDS[pid]
        body += varint(pid)
        if kind == "b":
            body += bytes([value])
        elif kind == "h":
            body += struct.pack("!H", value)
        elif kind == "i":
            body += struct.pack("!I", value)
        elif kind == "v":
            body += varint(value)
        elif kind in "sd":
            body += mstr(value)
        else:
            body += mstr(value[0]) + mstr(value[1])
    return varint(len(body)) + bytes(body)


def parse_props(data, at):
    """(dict of id -> value, next offset); user properties collect in a list."""
    length, shift, n = 0, 0, 0
    while True:
        byte = data[at + n]
        length |= (byte & 0x7F) << shift
        n, shift = n + 1, shift + 7
        if not byte & 0x80:
            break
    at += n
    end, out = at + length, {}
    while at < end:
        pid = data[at]
        at += 1
        kind = PROP_KINDS[pid]
        if kind == "b":
            value, at = data[at], at + 1
        elif kind == "h":
            value, at = struct.unpack("!H", data[at:at + 2])[0], at + 2
        elif kind == "i":
            value, at = struct.unpack("!I", data[at:at + 4])[0], at + 4
        elif kind == "v":
            value, shift = 0, 0
            while True:
                byte = data[at]
                at += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        elif kind in "sd":
            size = struct.unpack("!H", data[at:at + 2])[0]
            value, at = data[at + 2:at + 2 + size], at + 2 + size
        else:
            k = struct.unpack("!H", data[at:at + 2])[0]
            key = data[at + 2:at + 2 + k]
            at += 2 + k
            v = struct.unpack("!H", data[at:at + 2])[0]
            value, at = (key, data[at + 2:at + 2 + v]), at + 2 + v
        if pid == 0x26:
            out.setdefault(pid, []).append(value)
        else:
            out[pid] = value
    return out, end


def frame(byte1, body):
    return bytes([byte1]) + varint(len(body)) + body


def raw_connect(v5, client_id, clean=True, keepalive=60, conn_props=(), name="MQTT",
                will=None):
    """`will`: (topic, payload, qos, will properties)."""
    flags = 0x02 if clean else 0
    payload = mstr(client_id)
    if will:
        topic, message, qos, will_props = will
        flags |= 0x04 | (qos << 3)
        payload += (props(will_props) if v5 else b"") + mstr(topic) + mstr(message)
    body = mstr(name) + bytes([5 if v5 else 4, flags]) + struct.pack("!H", keepalive)
    body += (props(conn_props) if v5 else b"") + payload
    return frame(0x10, body)


def raw_publish(v5, topic, payload, qos, pkid=0, pub_props=()):
    body = mstr(topic) + (struct.pack("!H", pkid) if qos else b"")
    body += (props(pub_props) if v5 else b"") + payload
    return frame(0x30 | (qos << 1), body)


def raw_subscribe(v5, pkid, filters):
    body = struct.pack("!H", pkid) + (props([]) if v5 else b"")
    for topic, options in filters:
        body += mstr(topic) + bytes([options])
    return frame(0x82, body)


class Raw:
    """A socket that speaks MQTT packet by packet."""

    def __init__(self, v5):
        self.v5 = v5
        self.sock = socket.create_connection((HOST, PORT), timeout=WAIT_S)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read(self, timeout=WAIT_S):
        """(type, flags, body), or None when the server closed the connection; raises
        socket.timeout when nothing complete arrived in time."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                length, shift, n = 0, 0, 1
                while n < len(self.buf):
                    byte = self.buf[n]
                    length |= (byte & 0x7F) << shift
                    shift, n = shift + 7, n + 1
                    if not byte & 0x80:
                        if len(self.buf) >= n + length:
                            packet = self.buf[:n + length]
                            self.buf = self.buf[n + length:]
                            return packet[0] >> 4, packet[0] & 0x0F, packet[n:]
                        break
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def connack(self):
        """(accepted, properties) of the CONNACK, or (None, {}) if the server closed."""
        packet = self.read()
        if packet is None:
            return None, {}
        kind, _, body = packet
        assert kind == 2, f"expected CONNACK, got packet type {kind}"
        connack_props = parse_props(body, 2)[0] if self.v5 and len(body) > 2 else {}
        return body[1] == 0, connack_props

    def closed_within(self, timeout):
        """Whether the server ends the connection (DISCONNECT or close) within `timeout`;
        returns the DISCONNECT reason if one came, True for a plain close, False if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                packet = self.read(max(0.05, deadline - time.monotonic()))
            except socket.timeout:
                return False
            if packet is None:
                return True
            if packet[0] == 14:
                return packet[2][0] if packet[2] else 0
        return False

    def close(self):
        self.sock.close()


# --- Paho clients ------------------------------------------------------------------------------

class Peer:
    """An Eclipse Paho client with its callbacks collected."""

    def __init__(self, client_id, v5, clean=True, keepalive=60, conn_props=None, will=None,
                 manual_ack=False):
        self.v5 = v5
        kwargs = {"client_id": client_id, "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
        if not v5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if manual_ack:
            self.c.manual_ack_set(True)
        self.messages, self.subacks, self.disconnects = [], queue.Queue(), []
        self.connacks = queue.Queue()
        self.c.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.c.on_subscribe = lambda _c, _u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_connect = lambda _c, _u, flags, rc, p: self.connacks.put((flags, rc, p))
        self.c.on_disconnect = lambda _c, _u, flags, rc, p: self.disconnects.append(rc)
        if will:
            topic, payload, will_props = will
            self.c.will_set(topic, payload, qos=0, properties=will_props)
        ckw = {}
        if v5:
            ckw = {"clean_start": clean, "properties": conn_props}
        self.c.connect(HOST, PORT, keepalive=keepalive, **ckw)
        self.c.loop_start()
        self.flags, self.rc, self.props = self.connacks.get(timeout=WAIT_S)
        if self.rc.is_failure:
            self.c.loop_stop()
            raise AssertionError(f"CONNACK refused: {self.rc}")
        self.session_present = self.flags.session_present

    def subscribe(self, filters, sub_props=None):
        """`filters`: [(topic, qos or SubscribeOptions)]; returns the reason codes."""
        if self.v5:
            items = [(t, o if isinstance(o, SubscribeOptions) else SubscribeOptions(qos=o))
                     for t, o in filters]
            self.c.subscribe(items, properties=sub_props)
        else:
            self.c.subscribe(list(filters))
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic, payload, qos=0, retain=False, pub_props=None, wait=True):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=pub_props)
        if wait and qos:
            info.wait_for_publish(timeout=WAIT_S)
        return info

    def unsubscribe(self, topics):
        self.c.unsubscribe(topics)

    def disconnect(self, disc_props=None):
        self.c.disconnect(properties=disc_props) if self.v5 else self.c.disconnect()
        self.c.loop_stop()

    def terminate(self):
        """Drops the connection without DISCONNECT, as a crashed client would."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()

    def wait_messages(self, n, limit_s=3.0):
        deadline = time.monotonic() + limit_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


def p5(kind, **values):
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def cleanup_sessions(v5):
    for cid in (A_ID, B_ID):
        peer = Peer(cid, v5, clean=True)
        peer.disconnect()


def clean_retained(v5):
    peer = Peer(PREFIX + "clean-retained", v5)
    peer.subscribe([(PREFIX + "#", 0)])
    time.sleep(1)
    for msg in list(peer.messages):
        if msg.retain:
            peer.publish(msg.topic, b"", 0, retain=True)
    time.sleep(0.1)
    peer.disconnect()


CASES = []


def case(suite):
    def register(fn):
        CASES.append((suite, fn.__name__, fn))
        return fn
    return register


def qos_set(messages):
    return sorted(m.qos for m in messages)


# --- cases shared by both suites (same names, same checks) -------------------------------------

def basic(v5, name):
    a = Peer(A_ID, v5)
    a.disconnect()
    a = Peer(A_ID, v5)
    assert not a.session_present, "a clean connection has no session"
    a.subscribe([(TOPICS[0], 2)])
    a.publish(TOPICS[0], b"qos 0")
    a.publish(TOPICS[0], b"qos 1", 1)
    a.publish(TOPICS[0], b"qos 2", 2)
    a.wait_messages(3, 2)
    time.sleep(0.5)
    a.disconnect()
    assert len(a.messages) == 3, f"{len(a.messages)} of 3 messages"
    # A second CONNECT on one connection is a protocol error: the server must close it.
    raw = Raw(v5)
    raw.send(raw_connect(v5, A_ID))
    assert raw.connack()[0], "first CONNECT refused"
    raw.send(raw_connect(v5, A_ID))
    assert raw.closed_within(3) is not False, "second CONNECT on a socket was accepted"
    raw.close()
    # A wrong protocol name must not be accepted.
    raw = Raw(v5)
    raw.send(raw_connect(v5, A_ID, name="hj"))
    try:
        accepted = raw.connack()[0]
    except (socket.timeout, AssertionError):
        accepted = False
    raw.close()
    assert not accepted, "CONNECT with protocol name 'hj' accepted"


@case("v311")
def testBasic():
    basic(False, "testBasic")


@case("v5")
def test_basic():
    basic(True, "test_basic")


@case("v311")
def test_retained_messages():
    a = Peer(A_ID, False)
    assert not a.session_present
    a.publish(TOPICS[1], b"qos 0", 0, retain=True)
    a.publish(TOPICS[2], b"qos 1", 1, retain=True)
    a.publish(TOPICS[3], b"qos 2", 2, retain=True)
    time.sleep(1)
    a.subscribe([(WILDTOPICS[5], 2)])
    a.wait_messages(3, 2)
    time.sleep(0.5)
    a.disconnect()
    assert len(a.messages) == 3, f"{len(a.messages)} of 3 retained messages"
    a = Peer(A_ID, False)
    a.publish(TOPICS[1], b"", 0, retain=True)
    a.publish(TOPICS[2], b"", 1, retain=True)
    a.publish(TOPICS[3], b"", 2, retain=True)
    time.sleep(1)
    a.subscribe([(WILDTOPICS[5], 2)])
    time.sleep(1)
    a.disconnect()
    assert len(a.messages) == 0, f"cleared retained messages still sent: {len(a.messages)}"


@case("v5")
def test_retained_message():
    pp = p5(PacketTypes.PUBLISH, UserProperty=[("a", "2"), ("c", "3")])
    a = Peer(A_ID, True)
    a.publish(TOPICS[1], b"qos 0", 0, retain=True, pub_props=pp)
    a.publish(TOPICS[2], b"qos 1", 1, retain=True, pub_props=pp)
    a.publish(TOPICS[3], b"qos 2", 2, retain=True, pub_props=pp)
    time.sleep(1)
    a.subscribe([(WILDTOPICS[5], 2)])
    a.wait_messages(3, 2)
    time.sleep(0.5)
    a.disconnect()
    clean_retained(True)
    assert len(a.messages) == 3, f"{len(a.messages)} of 3 retained messages"
    for m in a.messages:
        user = getattr(m.properties, "UserProperty", None)
        assert sorted(user or []) == [("a", "2"), ("c", "3")], f"user properties {user}"
    assert qos_set(a.messages) == [0, 1, 2], qos_set(a.messages)


def will_silent_client(v5, keepalive, will_props=()):
    """A raw client with a will that stops talking (no pings), so keep-alive ends it."""
    raw = Raw(v5)
    raw.send(raw_connect(v5, A_ID, keepalive=keepalive,
                         will=(TOPICS[2], b"will message", 0, list(will_props))))
    assert raw.connack()[0], "CONNECT with a will refused"
    return raw


@case("v5")
def test_will_message():
    raw = will_silent_client(True, 2, [(0x18, 0), (0x26, ("a", "2")), (0x26, ("c", "3"))])
    b = Peer(B_ID, True, clean=False)
    b.subscribe([(TOPICS[2], 2)])
    # Keep-alive 2 s: the server ends the silent client within 3 s and sends its will.
    b.wait_messages(1, 10)
    b.disconnect()
    raw.close()
    assert len(b.messages) == 1, f"{len(b.messages)} will messages"
    user = getattr(b.messages[0].properties, "UserProperty", None)
    assert user == [("a", "2"), ("c", "3")], f"will user properties {user}"


@case("v311")
def test_zero_length_clientid():
    raw = Raw(False)
    raw.send(raw_connect(False, "", clean=False))
    accepted, _ = raw.connack()
    raw.close()
    assert not accepted, "empty client id with clean session 0 accepted"
    raw = Raw(False)
    raw.send(raw_connect(False, "", clean=True))
    accepted, _ = raw.connack()
    raw.close()
    assert accepted, "empty client id with clean session 1 refused"


@case("v5")
def test_zero_length_clientid():
    for clean in (False, True):
        raw = Raw(True)
        raw.send(raw_connect(True, "", clean=clean))
        accepted, _ = raw.connack()
        raw.close()
        assert accepted, f"empty client id with clean start {clean} refused"


def offline_message_queueing(v5):
    expiry = p5(PacketTypes.CONNECT, SessionExpiryInterval=99999) if v5 else None
    # 3.1.1: clean session 0; 5: a clean start with a long Session Expiry Interval.
    a = Peer(A_ID, v5, clean=v5, conn_props=expiry)
    a.subscribe([(WILDTOPICS[5], 2)])
    a.disconnect()
    b = Peer(B_ID, v5, clean=True)
    b.publish(TOPICS[1], b"qos 0", 0)
    b.publish(TOPICS[2], b"qos 1", 1)
    b.publish(TOPICS[3], b"qos 2", 2)
    time.sleep(1)
    b.disconnect()
    a = Peer(A_ID, v5, clean=False)
    if not v5:
        assert a.session_present, "session not present"
    a.wait_messages(3, 2)
    time.sleep(0.5)
    a.disconnect()
    assert len(a.messages) in (2, 3), f"{len(a.messages)} queued messages"


@case("v311")
def test_offline_message_queueing():
    offline_message_queueing(False)


@case("v5")
def test_offline_message_queueing_v5():
    offline_message_queueing(True)


def overlapping_subscriptions(v5):
    a = Peer(A_ID, v5)
    a.subscribe([(WILDTOPICS[6], 2), (WILDTOPICS[0], 1)])
    a.publish(TOPICS[3], b"overlapping topic filters", 2)
    a.wait_messages(2, 1)
    time.sleep(0.5)
    a.disconnect()
    qoss = qos_set(a.messages)
    assert qoss in ([2], [1, 2]), f"delivered QoS {qoss}"


@case("v311")
def test_overlapping_subscriptions():
    overlapping_subscriptions(False)


@case("v5")
def test_overlapping_subscriptions_v5():
    overlapping_subscriptions(True)


def keepalive(v5):
    raw = Raw(v5)
    raw.send(raw_connect(v5, A_ID, keepalive=5, will=(TOPICS[4], b"keepalive expiry", 0, [])))
    assert raw.connack()[0]
    b = Peer(B_ID, v5, keepalive=0)
    b.subscribe([(TOPICS[4], 2)])
    # Keep-alive 5 s: the server must end the silent client within 7.5 s (one and a half
    # intervals) and send its will; the suite waits 15 s.
    b.wait_messages(1, 15)
    time.sleep(0.5)
    b.disconnect()
    raw.close()
    assert len(b.messages) == 1, f"{len(b.messages)} will messages"


@case("v311")
def test_keepalive():
    keepalive(False)


@case("v5")
def test_keepalive_v5():
    keepalive(True)


def redelivery_on_reconnect(v5):
    # A client that subscribes, publishes to itself and then stops processing anything it
    # receives (no PUBACK, PUBREC or PUBREL), as the suite's paused client does.
    expiry = [(0x11, 99999)] if v5 else []
    raw = Raw(v5)
    raw.send(raw_connect(v5, B_ID, clean=False, conn_props=expiry))
    assert raw.connack()[0]
    raw.send(raw_subscribe(v5, 1, [(WILDTOPICS[6], 2)]))
    kind = raw.read()[0]
    assert kind == 9, f"expected SUBACK, got {kind}"
    raw.send(raw_publish(v5, TOPICS[1], b"", 1, pkid=2))
    raw.send(raw_publish(v5, TOPICS[3], b"", 2, pkid=3))
    time.sleep(1)
    raw.send(frame(0xE0, b"\x00\x00" if v5 else b""))
    raw.close()
    b = Peer(B_ID, v5, clean=False,
             conn_props=p5(PacketTypes.CONNECT, SessionExpiryInterval=99999) if v5 else None)
    b.wait_messages(2, 3)
    time.sleep(0.5)
    b.disconnect()
    assert len(b.messages) == 2, f"{len(b.messages)} of 2 messages redelivered"


@case("v311")
def test_redelivery_on_reconnect():
    redelivery_on_reconnect(False)


@case("v5")
def test_redelivery_on_reconnect_v5():
    redelivery_on_reconnect(True)


def subscribe_failure(v5):
    a = Peer(A_ID, v5)
    rcs = a.subscribe([(NOSUBSCRIBE_TOPICS[0], 2)])
    a.disconnect()
    value = rcs[0].value
    assert value == 0x80, f"reason code {value:#x}, not 0x80"


@case("v311")
def test_subscribe_failure():
    subscribe_failure(False)


@case("v5")
def test_subscribe_failure_v5():
    subscribe_failure(True)


def dollar_topics(v5):
    b = Peer(B_ID, v5, keepalive=0)
    # `+/+` as in the suite: it must not match `$`-topics; other traffic on a shared broker is
    # not counted.
    b.subscribe([("+/+", 2)])
    time.sleep(0.5)
    b.publish("$" + TOPICS[1], b"", 1)
    time.sleep(0.5)
    b.disconnect()
    dollar = [m.topic for m in b.messages if m.topic.startswith("$")]
    assert not dollar, f"wildcard matched {dollar}"


@case("v311")
def test_dollar_topics():
    dollar_topics(False)


@case("v5")
def test_dollar_topics_v5():
    dollar_topics(True)


def unsubscribe(v5):
    b = Peer(B_ID, v5)
    for t in TOPICS[:3]:
        b.subscribe([(t, 2)])
    time.sleep(0.5)
    b.unsubscribe([TOPICS[0]])
    time.sleep(0.2)
    b.messages.clear()
    a = Peer(A_ID, v5)
    a.publish(TOPICS[0], b"topic 0 - unsubscribed", 1)
    a.publish(TOPICS[1], b"topic 1", 1)
    a.publish(TOPICS[2], b"topic 2", 1)
    b.wait_messages(2, 2)
    time.sleep(0.5)
    b.disconnect()
    a.disconnect()
    assert len(b.messages) == 2, f"{len(b.messages)} of 2 messages"


@case("v311")
def test_unsubscribe():
    unsubscribe(False)


@case("v5")
def test_unsubscribe_v5():
    unsubscribe(True)


# --- MQTT 5 only -------------------------------------------------------------------------------

@case("v5")
def test_session_expiry():
    def connect(expiry, clean):
        return Peer(A_ID, True, clean=clean,
                    conn_props=p5(PacketTypes.CONNECT, SessionExpiryInterval=expiry))

    a = connect(0, True)
    assert not a.session_present
    a.subscribe([(TOPICS[0], 2)])
    a.disconnect()
    a = connect(0, False)
    assert not a.session_present, "expiry 0: session outlived the connection"
    a.disconnect()
    a = connect(5, True)
    a.subscribe([(TOPICS[0], 2)])
    a.disconnect()
    time.sleep(2)
    a = connect(5, False)
    assert a.session_present, "expiry 5: session gone after 2 s"
    a.disconnect()
    time.sleep(6)
    a = connect(5, False)
    assert not a.session_present, "expiry 5: session still there after 6 s"
    a.disconnect()
    a = connect(1, True)
    a.subscribe([(TOPICS[0], 2)])
    a.disconnect(p5(PacketTypes.DISCONNECT, SessionExpiryInterval=5))
    time.sleep(3)
    a = connect(1, False)
    assert a.session_present, "DISCONNECT's expiry 5 not applied"
    a.disconnect(p5(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    a = connect(1, False)
    assert not a.session_present, "DISCONNECT's expiry 0 not applied"
    a.disconnect()


def three_qos_with(pp):
    a = Peer(A_ID, True)
    a.subscribe([(TOPICS[0], 2)])
    for qos in range(3):
        a.publish(TOPICS[0], b"", qos, pub_props=pp)
    a.wait_messages(3, 5)
    a.disconnect()
    assert len(a.messages) == 3, f"{len(a.messages)} of 3 messages"
    assert qos_set(a.messages) == [0, 1, 2], qos_set(a.messages)
    return a.messages


@case("v5")
def test_user_properties():
    messages = three_qos_with(p5(PacketTypes.PUBLISH, UserProperty=[("a", "2"), ("c", "3")]))
    for m in messages:
        user = getattr(m.properties, "UserProperty", None)
        assert sorted(user or []) == [("a", "2"), ("c", "3")], f"user properties {user}"


@case("v5")
def test_payload_format():
    messages = three_qos_with(
        p5(PacketTypes.PUBLISH, PayloadFormatIndicator=1, ContentType="My name"))
    for m in messages:
        assert getattr(m.properties, "ContentType", None) == "My name", m.properties
        assert getattr(m.properties, "PayloadFormatIndicator", None) == 1, m.properties


@case("v5")
def test_publication_expiry():
    b = Peer(B_ID, True, conn_props=p5(PacketTypes.CONNECT, SessionExpiryInterval=99999))
    b.subscribe([(TOPICS[0], 2)])
    b.disconnect(p5(PacketTypes.DISCONNECT, SessionExpiryInterval=999999999))
    a = Peer(A_ID, True)
    a.publish(TOPICS[0], b"qos 1 - expire", 1, pub_props=p5(PacketTypes.PUBLISH,
                                                              MessageExpiryInterval=1))
    a.publish(TOPICS[0], b"qos 2 - expire", 2, pub_props=p5(PacketTypes.PUBLISH,
                                                              MessageExpiryInterval=1))
    a.publish(TOPICS[0], b"qos 1 - don't expire", 1,
              pub_props=p5(PacketTypes.PUBLISH, MessageExpiryInterval=6))
    a.publish(TOPICS[0], b"qos 2 - don't expire", 2,
              pub_props=p5(PacketTypes.PUBLISH, MessageExpiryInterval=6))
    time.sleep(3)
    b = Peer(B_ID, True, clean=False)
    b.wait_messages(2, 3)
    time.sleep(1)
    b.disconnect()
    a.disconnect()
    got = [(m.payload, getattr(m.properties, "MessageExpiryInterval", None))
           for m in b.messages]
    assert len(got) == 2, f"delivered {got}"
    assert all(left is not None and left < 6 for _, left in got), f"intervals not reduced: {got}"


@case("v5")
def test_subscribe_options():
    # No Local
    a, b = Peer(A_ID, True), Peer(B_ID, True)
    a.subscribe([(TOPICS[0], SubscribeOptions(qos=2, noLocal=True))])
    b.subscribe([(TOPICS[0], SubscribeOptions(qos=2, noLocal=True))])
    a.publish(TOPICS[0], b"noLocal test", 1)
    b.wait_messages(1, 3)
    time.sleep(0.5)
    a.disconnect()
    b.disconnect()
    assert a.messages == [], "No Local: the publisher received its own message"
    assert len(b.messages) == 1, f"No Local: other client got {len(b.messages)}"
    # Retain As Published
    a = Peer(A_ID, True)
    a.subscribe([(TOPICS[0], SubscribeOptions(qos=2, retainAsPublished=True))])
    a.publish(TOPICS[0], b"retain as published false", 1)
    a.publish(TOPICS[0], b"retain as published true", 1, retain=True)
    a.wait_messages(2, 3)
    time.sleep(0.5)
    a.disconnect()
    assert [m.retain for m in a.messages] == [False, True], \
        f"retain flags {[m.retain for m in a.messages]}"
    clean_retained(True)
    # Retain Handling 1: retained messages on a new subscription only.
    a = Peer(A_ID, True)
    a.publish(TOPICS[1], b"qos 0", 0, retain=True)
    a.publish(TOPICS[2], b"qos 1", 1, retain=True)
    a.publish(TOPICS[3], b"qos 2", 2, retain=True)
    time.sleep(1)
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=1))])
    a.wait_messages(3, 2)
    time.sleep(0.5)
    assert qos_set(a.messages) == [0, 1, 2], f"handling 1, new: QoS {qos_set(a.messages)}"
    a.messages.clear()
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=1))])
    time.sleep(1)
    assert len(a.messages) == 0, f"handling 1, repeated: {len(a.messages)} sent"
    a.disconnect()
    # Retain Handling 2: never.
    a = Peer(A_ID, True)
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=2))])
    time.sleep(1)
    assert len(a.messages) == 0, f"handling 2: {len(a.messages)} sent"
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=2))])
    time.sleep(1)
    assert len(a.messages) == 0, f"handling 2, repeated: {len(a.messages)} sent"
    a.disconnect()
    # Retain Handling 0: on every subscription.
    a = Peer(A_ID, True)
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=0))])
    a.wait_messages(3, 2)
    time.sleep(0.5)
    assert qos_set(a.messages) == [0, 1, 2], f"handling 0: QoS {qos_set(a.messages)}"
    a.messages.clear()
    a.subscribe([(WILDTOPICS[5], SubscribeOptions(qos=2, retainHandling=0))])
    a.wait_messages(3, 2)
    time.sleep(0.5)
    assert qos_set(a.messages) == [0, 1, 2], f"handling 0, repeated: {qos_set(a.messages)}"
    a.disconnect()
    clean_retained(True)


@case("v5")
def test_assigned_clientid():
    raw = Raw(True)
    raw.send(raw_connect(True, "", clean=True))
    accepted, connack_props = raw.connack()
    raw.close()
    assert accepted, "empty client id refused"
    assigned = connack_props.get(0x12)
    assert assigned, "no Assigned Client Identifier"


@case("v5")
def test_subscribe_identifiers():
    a = Peer(A_ID, True)
    a.subscribe([(TOPICS[0], 2)], p5(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=456789))
    b = Peer(B_ID, True)
    b.subscribe([(TOPICS[0], 2)], p5(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2))
    b.subscribe([(TOPICS[0] + "/#", 2)], p5(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=3))
    b.publish(TOPICS[0], b"sub identifier test", 1)
    a.wait_messages(1, 3)
    b.wait_messages(1, 3)
    time.sleep(0.5)
    a.disconnect()
    b.disconnect()
    assert len(a.messages) == 1, f"a got {len(a.messages)}"
    ids = getattr(a.messages[0].properties, "SubscriptionIdentifier", None)
    assert ids and ids[0] == 456789, f"a's identifiers {ids}"
    # One message matching two subscriptions: either one PUBLISH carrying both identifiers
    # (as the suite expects), which the check below requires.
    assert len(b.messages) == 1, f"b got {len(b.messages)} messages"
    ids = set(getattr(b.messages[0].properties, "SubscriptionIdentifier", None) or [])
    assert ids == {2, 3}, f"b's identifiers {ids}"


@case("v5")
def test_request_response():
    a, b = Peer(A_ID, True), Peer(B_ID, True)
    a.subscribe([(TOPICS[0], SubscribeOptions(qos=2, noLocal=True))])
    b.subscribe([(TOPICS[0], SubscribeOptions(qos=2, noLocal=True))])
    a.publish(TOPICS[0], b"request", 1,
              pub_props=p5(PacketTypes.PUBLISH, ResponseTopic=TOPICS[0], CorrelationData=b"334"))
    b.wait_messages(1, 3)
    assert len(b.messages) == 1, f"responder got {len(b.messages)}"
    request = b.messages[0].properties
    assert getattr(request, "ResponseTopic", None) == TOPICS[0], request
    assert getattr(request, "CorrelationData", None) == b"334", request
    b.publish(request.ResponseTopic, b"response", 1,
              pub_props=p5(PacketTypes.PUBLISH, CorrelationData=request.CorrelationData))
    a.wait_messages(1, 3)
    a.disconnect()
    b.disconnect()
    assert len(a.messages) == 1, f"requester got {len(a.messages)}"


@case("v5")
def test_client_topic_alias():
    # Topic alias 0 is never valid: the server must disconnect.
    raw = Raw(True)
    raw.send(raw_connect(True, A_ID))
    accepted, _ = raw.connack()
    assert accepted
    raw.send(raw_publish(True, TOPICS[0], b"topic alias 0", 1, pkid=1, pub_props=[(0x23, 0)]))
    ended = raw.closed_within(2)
    raw.close()
    assert ended is not False, "topic alias 0 accepted"
    raw = Raw(True)
    raw.send(raw_connect(True, A_ID, conn_props=[(0x22, 0), (0x11, 99999)]))
    accepted, connack_props = raw.connack()
    assert accepted
    alias_max = connack_props.get(0x22, 0)
    if alias_max == 0:
        raw.close()
        return
    # The server accepts client aliases: set alias 1, use it, and check it dies with the
    # connection.
    raw.send(raw_subscribe(True, 1, [(TOPICS[0], 2)]))
    received = []

    def drain(n, limit_s):
        deadline = time.monotonic() + limit_s
        while len(received) < n and time.monotonic() < deadline:
            try:
                packet = raw.read(max(0.05, deadline - time.monotonic()))
            except socket.timeout:
                break
            if packet is None:
                break
            if packet[0] == 3:
                received.append(packet)
                qos = (packet[1] >> 1) & 3
                if qos == 1:
                    topic_len = struct.unpack("!H", packet[2][:2])[0]
                    pkid = packet[2][2 + topic_len:4 + topic_len]
                    raw.send(frame(0x40, pkid))

    raw.send(raw_publish(True, TOPICS[0], b"topic alias 1", 1, pkid=2, pub_props=[(0x23, 1)]))
    drain(1, 3)
    raw.send(raw_publish(True, "", b"topic alias 2", 1, pkid=3, pub_props=[(0x23, 1)]))
    drain(2, 3)
    assert len(received) == 2, f"{len(received)} of 2 aliased messages"
    raw.send(frame(0xE0, b"\x00\x00"))
    raw.close()
    raw = Raw(True)
    raw.send(raw_connect(True, A_ID, clean=False, conn_props=[(0x11, 99999)]))
    assert raw.connack()[0]
    raw.send(raw_publish(True, "", b"topic alias 4", 1, pkid=4, pub_props=[(0x23, 1)]))
    ended = raw.closed_within(2)
    raw.close()
    assert ended is not False, "an alias from the previous connection was still known"


@case("v5")
def test_server_topic_alias():
    def run(conn_props):
        a = Peer(A_ID, True, conn_props=conn_props)
        a.subscribe([(TOPICS[0], 2)])
        for qos in range(3):
            a.publish(TOPICS[0], b"topic alias 1", qos)
        a.wait_messages(3, 3)
        a.disconnect()
        assert len(a.messages) == 3, f"{len(a.messages)} of 3 messages"
        return [getattr(m.properties, "TopicAlias", None) for m in a.messages]

    # paho-mqtt resolves aliases before its callback, so the alias property is what shows.
    aliases = run(p5(PacketTypes.CONNECT, TopicAliasMaximum=1))
    assert aliases[0] and aliases[0] > 0, f"no topic alias set: {aliases}"
    assert aliases[1] == aliases[0] and aliases[2] == aliases[0], f"aliases {aliases}"
    assert run(None) == [None] * 3, "aliases sent to a client that allows none"
    assert run(p5(PacketTypes.CONNECT, TopicAliasMaximum=0)) == [None] * 3


@case("v5")
def test_maximum_packet_size():
    a = Peer(A_ID, True)
    server_max = getattr(a.props, "MaximumPacketSize", 2 ** 28 - 1)
    a.disconnect()
    if server_max < 65535:
        raw = Raw(True)
        raw.send(raw_connect(True, A_ID))
        assert raw.connack()[0]
        raw.send(raw_publish(True, TOPICS[0], b"." * server_max, 0))
        ended = raw.closed_within(2)
        raw.close()
        assert ended == 0x95, f"a packet above the server's maximum: {ended}, not 0x95"
    # The client accepts at most 64 bytes.
    a = Peer(A_ID, True, conn_props=p5(PacketTypes.CONNECT, MaximumPacketSize=64))
    a.subscribe([(TOPICS[0], 2)])
    a.publish(TOPICS[0], b"." * 32, 0)
    a.wait_messages(1, 3)
    assert len(a.messages) == 1, f"small message: {len(a.messages)} received"
    a.publish(TOPICS[0], b"." * 64, 1)
    a.wait_messages(2, 3)
    a.disconnect()
    assert len(a.messages) == 1, \
        f"a PUBLISH above the client's 64-byte maximum was sent ({len(a.messages)} messages)"


@case("v5")
def test_server_keep_alive():
    a = Peer(A_ID, True, keepalive=120)
    server_keep_alive = getattr(a.props, "ServerKeepAlive", None)
    a.disconnect()
    assert server_keep_alive == 60, f"Server Keep Alive {server_keep_alive}, not 60"


@case("v5")
def test_flow_control1():
    # The client allows 2 unacknowledged QoS 1/2 messages and acknowledges by hand.
    a = Peer(A_ID, True, manual_ack=True,
             conn_props=p5(PacketTypes.CONNECT, ReceiveMaximum=2, SessionExpiryInterval=0))
    a.subscribe([(TOPICS[0], 2)])
    for i in range(1, 4):
        a.publish(TOPICS[0], f"message {i}".encode(), 1)
    a.wait_messages(2, 3)
    time.sleep(1)
    held = list(a.messages)
    assert len(held) == 2, f"{len(held)} messages with Receive Maximum 2 and none acknowledged"
    a.c.ack(held[0].mid, 1)
    a.wait_messages(3, 3)
    assert len(a.messages) == 3, "the third message did not follow the first acknowledgement"
    for m in a.messages[1:]:
        a.c.ack(m.mid, 1)
    time.sleep(0.2)
    a.disconnect()


@case("v5")
def test_flow_control2():
    raw = Raw(True)
    raw.send(raw_connect(True, A_ID))
    accepted, connack_props = raw.connack()
    assert accepted
    receive_max = connack_props.get(0x21, 65535)
    # One QoS 2 PUBLISH more than the server's Receive Maximum, none released.
    for pkid in range(1, receive_max + 2):
        raw.send(raw_publish(True, TOPICS[0], f"message {pkid}".encode(), 2, pkid=pkid))
    deadline = time.monotonic() + 5
    reason = None
    while time.monotonic() < deadline:
        try:
            packet = raw.read(max(0.05, deadline - time.monotonic()))
        except socket.timeout:
            break
        if packet is None:
            reason = "closed without DISCONNECT"
            break
        if packet[0] == 14:
            reason = packet[2][0] if packet[2] else 0
            break
    raw.close()
    assert reason == 0x93, f"Receive Maximum exceeded: got {reason!r}, not DISCONNECT 0x93"


@case("v5")
def test_will_delay():
    def run(delay_s, expiry_s, want_s):
        b = Peer(B_ID, True)
        b.subscribe([(TOPICS[0], 2)])
        a = Peer(A_ID, True, conn_props=p5(PacketTypes.CONNECT, SessionExpiryInterval=expiry_s),
                 will=(TOPICS[0], b"test_will_delay will message",
                       p5(PacketTypes.WILLMESSAGE, WillDelayInterval=delay_s)))
        # Timed from just before the connection drops, so the server cannot have seen the
        # drop before the clock started.
        start = time.monotonic()
        a.terminate()
        b.wait_messages(1, want_s + 3)
        took_s = time.monotonic() - start
        b.disconnect()
        assert b.messages, f"no will (delay {delay_s} s, expiry {expiry_s} s)"
        assert b.messages[0].payload == b"test_will_delay will message"
        # The suite's tolerance: one second either side.
        assert abs(took_s - want_s) <= 1, \
            f"will after {took_s:.1f} s, want {want_s} s (delay {delay_s}, expiry {expiry_s})"
        cleanup_sessions(True)

    run(3, 5, 4)
    run(5, 0, 1)
    run(5, 2, 3)


@case("v5")
def test_shared_subscriptions():
    shared_sub = "$share/sharename/" + PREFIX + "x"
    shared_pub = PREFIX + "x"
    a, b = Peer(A_ID, True), Peer(B_ID, True)
    a.subscribe([(shared_sub, 2), (TOPICS[0], 2)])
    b.subscribe([(shared_sub, 2), (TOPICS[0], 2)])
    b.publish(TOPICS[0], b"message 0", 0)
    a.wait_messages(1, 2)
    b.wait_messages(1, 2)
    time.sleep(0.5)
    assert (len(a.messages), len(b.messages)) == (1, 1), \
        f"plain subscription: {len(a.messages)}, {len(b.messages)}"
    a.messages.clear()
    b.messages.clear()
    b.publish(shared_pub, b"message 0", 0)
    time.sleep(1)
    a.disconnect()
    b.disconnect()
    assert len(a.messages) + len(b.messages) == 1, \
        f"shared subscription delivered {len(a.messages) + len(b.messages)} times"


def main():
    for suite, name, fn in CASES:
        # The v5 suite's names are those of client_test5.py; shared helpers registered under a
        # `_v5` suffix report the suite's own name.
        reported = name[:-3] if name.endswith("_v5") else name
        if suite != SUITE or (ONLY and reported not in ONLY):
            continue
        try:
            cleanup_sessions(suite == "v5")
            fn()
            passed, detail = True, ""
        except AssertionError as e:
            passed, detail = False, str(e) or "assertion failed"
        except Exception as e:  # a broker that breaks the client fails the case, with why
            passed, detail = False, f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        print("RESULT " + json.dumps({"suite": suite, "case": reported, "passed": passed,
                                      "detail": detail}), flush=True)


main()
