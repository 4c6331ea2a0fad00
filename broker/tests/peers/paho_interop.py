"""Eclipse Paho (paho-mqtt 2.x) against dtop-broker, in MQTT 3.1.1 and 5.

Run by broker/tests/interop.rs as `python paho_interop.py HOST PORT`. Checks keep-alive 0,
QoS 0/1/2, retained messages, wills, shared subscriptions and persistent sessions; prints one line per
check and exits non-zero on the first failure. Every wait is bounded.
"""

import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT = sys.argv[1], int(sys.argv[2])
WAIT_S = 10.0


def client(protocol, client_id=None, clean=True, expiry=None, will=None, keepalive=30):
    cid = client_id or "paho-" + uuid.uuid4().hex[:8]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol,
                    clean_session=clean if protocol == mqtt.MQTTv311 else None)
    inbox = queue.Queue()
    c.on_message = lambda _c, _u, msg: inbox.put(msg)
    connacks = queue.Queue()
    c.on_connect = lambda _c, _u, flags, rc, props: connacks.put((flags, rc))
    subacks = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, rcs, props: subacks.put(rcs)
    if will:
        c.will_set(will[0], will[1], qos=1)
    kwargs = {}
    if protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        kwargs = {"clean_start": clean, "properties": props}
    c.connect(HOST, PORT, keepalive=keepalive, **kwargs)
    c.loop_start()
    flags, rc = connacks.get(timeout=WAIT_S)
    if rc != 0:
        raise AssertionError(f"CONNACK refused: {rc}")
    c.inbox, c.subacks, c.session_present = inbox, subacks, flags.session_present
    return c


def subscribe(c, topic, qos, protocol):
    if protocol == mqtt.MQTTv5:
        c.subscribe(topic, options=SubscribeOptions(qos=qos))
    else:
        c.subscribe(topic, qos)
    rcs = c.subacks.get(timeout=WAIT_S)
    assert all(not getattr(rc, "is_failure", False) and rc != 128 for rc in rcs), rcs


def publish(c, topic, payload, qos, retain=False):
    info = c.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(timeout=WAIT_S)
    assert info.is_published(), f"{topic} not acknowledged"


def receive(c, n, quiet=0.5):
    got = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(c.inbox.get(timeout=0.2))
        except queue.Empty:
            pass
    # Anything extra arriving shortly after is a failure too (duplicates).
    time.sleep(quiet)
    while not c.inbox.empty():
        got.append(c.inbox.get())
    return got


def stop(c, graceful=True):
    if graceful:
        c.disconnect()
    c.loop_stop()
    if not graceful:
        c.socket().close() if c.socket() else None


def check(name, protocol):
    tag = "v5" if protocol == mqtt.MQTTv5 else "v311"
    base = f"paho/{tag}/{name}/{uuid.uuid4().hex[:6]}"
    if name == "keepalive0":
        # Keep-alive 0 disables the keep-alive mechanism (3.1.1 §3.1.2.10, 5 §3.1.2.10).
        c = client(protocol, keepalive=0)
        subscribe(c, base, 1, protocol)
        publish(c, base, "still here", 1)
        got = [m.payload.decode() for m in receive(c, 1)]
        assert got == ["still here"], got
        stop(c)
    elif name == "qos":
        sub = client(protocol)
        subscribe(sub, base, 2, protocol)
        pub = client(protocol)
        for q in (0, 1, 2):
            publish(pub, base, f"q{q}", q)
        got = sorted((m.payload.decode(), m.qos) for m in receive(sub, 3))
        assert got == [("q0", 0), ("q1", 1), ("q2", 2)], got
        stop(sub), stop(pub)
    elif name == "retained":
        pub = client(protocol)
        publish(pub, base, "held", 1, retain=True)
        sub = client(protocol)
        subscribe(sub, base, 1, protocol)
        got = [(m.payload.decode(), m.retain) for m in receive(sub, 1)]
        assert got == [("held", True)], got
        stop(sub), stop(pub)
    elif name == "will":
        sub = client(protocol)
        subscribe(sub, base, 1, protocol)
        victim = client(protocol, will=(base, "gone"))
        victim.loop_stop()
        victim.socket().close()  # vanish without DISCONNECT
        got = [m.payload.decode() for m in receive(sub, 1)]
        assert got == ["gone"], got
        stop(sub)
    elif name == "shared":
        a, b = client(protocol), client(protocol)
        subscribe(a, f"$share/g/{base}", 1, protocol)
        subscribe(b, f"$share/g/{base}", 1, protocol)
        pub = client(protocol)
        for i in range(10):
            publish(pub, base, f"m{i}", 1)
        got_a, got_b = receive(a, 5, quiet=0.2), receive(b, 5, quiet=0.2)
        names = sorted(m.payload.decode() for m in got_a + got_b)
        assert names == sorted(f"m{i}" for i in range(10)), names
        assert got_a and got_b, (len(got_a), len(got_b))
        stop(a), stop(b), stop(pub)
    elif name == "persistent":
        cid = "paho-persist-" + uuid.uuid4().hex[:6]
        s1 = client(protocol, client_id=cid, clean=False, expiry=60)
        subscribe(s1, base, 1, protocol)
        stop(s1)
        pub = client(protocol)
        publish(pub, base, "queued", 1)
        s2 = client(protocol, client_id=cid, clean=False, expiry=60)
        assert s2.session_present, "session not present"
        got = [m.payload.decode() for m in receive(s2, 1)]
        assert got == ["queued"], got
        stop(s2), stop(pub)
    print(f"ok {tag} {name}", flush=True)


for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
    for name in ("keepalive0", "qos", "retained", "will", "shared", "persistent"):
        check(name, protocol)
print("all ok", flush=True)
