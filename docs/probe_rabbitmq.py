#!/usr/bin/env python3
"""Probe an AMQP 0-9-1 broker with raw frames and print exactly what it answers.

Warren must behave like RabbitMQ wherever a client can observe it, including on
malformed input that no ordinary client library will ever send. This script speaks
the wire protocol by hand (stdlib only: socket + struct) so that every odd case can
be sent, and prints what the broker did: decoded methods with their fields, content
frames, raw bytes where the answer is not a frame, and whether and when the socket
was closed.

    python3 docs/probe_rabbitmq.py [URL] [CASE-SUBSTRING ...]

URL defaults to amqp://guest:guest@127.0.0.1:5672/%2f. Every case runs on its own
connection; entities are named probe-<random>-... and deleted afterwards. The
results against RabbitMQ 3.10 are written up in docs/rabbitmq-observed.md.
"""

import os
import socket
import struct
import sys
import time
import urllib.parse

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# (class_id, method_id) -> (name, [(field, type)]). Types: octet short long
# longlong shortstr longstr bit table.
METHODS = {
    (10, 10): ("connection.start", [("version_major", "octet"), ("version_minor", "octet"),
                                    ("server_properties", "table"), ("mechanisms", "longstr"),
                                    ("locales", "longstr")]),
    (10, 11): ("connection.start-ok", [("client_properties", "table"), ("mechanism", "shortstr"),
                                       ("response", "longstr"), ("locale", "shortstr")]),
    (10, 20): ("connection.secure", [("challenge", "longstr")]),
    (10, 21): ("connection.secure-ok", [("response", "longstr")]),
    (10, 30): ("connection.tune", [("channel_max", "short"), ("frame_max", "long"), ("heartbeat", "short")]),
    (10, 31): ("connection.tune-ok", [("channel_max", "short"), ("frame_max", "long"), ("heartbeat", "short")]),
    (10, 40): ("connection.open", [("virtual_host", "shortstr"), ("reserved_1", "shortstr"), ("reserved_2", "bit")]),
    (10, 41): ("connection.open-ok", [("reserved_1", "shortstr")]),
    (10, 50): ("connection.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                    ("class_id", "short"), ("method_id", "short")]),
    (10, 51): ("connection.close-ok", []),
    (10, 60): ("connection.blocked", [("reason", "shortstr")]),
    (10, 61): ("connection.unblocked", []),
    (10, 70): ("connection.update-secret", [("new_secret", "longstr"), ("reason", "shortstr")]),
    (10, 71): ("connection.update-secret-ok", []),
    (20, 10): ("channel.open", [("reserved_1", "shortstr")]),
    (20, 11): ("channel.open-ok", [("reserved_1", "longstr")]),
    (20, 20): ("channel.flow", [("active", "bit")]),
    (20, 21): ("channel.flow-ok", [("active", "bit")]),
    (20, 40): ("channel.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                 ("class_id", "short"), ("method_id", "short")]),
    (20, 41): ("channel.close-ok", []),
    (40, 10): ("exchange.declare", [("reserved_1", "short"), ("exchange", "shortstr"), ("type", "shortstr"),
                                    ("passive", "bit"), ("durable", "bit"), ("auto_delete", "bit"),
                                    ("internal", "bit"), ("no_wait", "bit"), ("arguments", "table")]),
    (40, 11): ("exchange.declare-ok", []),
    (40, 20): ("exchange.delete", [("reserved_1", "short"), ("exchange", "shortstr"),
                                   ("if_unused", "bit"), ("no_wait", "bit")]),
    (40, 21): ("exchange.delete-ok", []),
    (40, 30): ("exchange.bind", [("reserved_1", "short"), ("destination", "shortstr"), ("source", "shortstr"),
                                 ("routing_key", "shortstr"), ("no_wait", "bit"), ("arguments", "table")]),
    (40, 31): ("exchange.bind-ok", []),
    (40, 40): ("exchange.unbind", [("reserved_1", "short"), ("destination", "shortstr"), ("source", "shortstr"),
                                   ("routing_key", "shortstr"), ("no_wait", "bit"), ("arguments", "table")]),
    (40, 51): ("exchange.unbind-ok", []),
    (50, 10): ("queue.declare", [("reserved_1", "short"), ("queue", "shortstr"), ("passive", "bit"),
                                 ("durable", "bit"), ("exclusive", "bit"), ("auto_delete", "bit"),
                                 ("no_wait", "bit"), ("arguments", "table")]),
    (50, 11): ("queue.declare-ok", [("queue", "shortstr"), ("message_count", "long"), ("consumer_count", "long")]),
    (50, 20): ("queue.bind", [("reserved_1", "short"), ("queue", "shortstr"), ("exchange", "shortstr"),
                              ("routing_key", "shortstr"), ("no_wait", "bit"), ("arguments", "table")]),
    (50, 21): ("queue.bind-ok", []),
    (50, 30): ("queue.purge", [("reserved_1", "short"), ("queue", "shortstr"), ("no_wait", "bit")]),
    (50, 31): ("queue.purge-ok", [("message_count", "long")]),
    (50, 40): ("queue.delete", [("reserved_1", "short"), ("queue", "shortstr"), ("if_unused", "bit"),
                                ("if_empty", "bit"), ("no_wait", "bit")]),
    (50, 41): ("queue.delete-ok", [("message_count", "long")]),
    (50, 50): ("queue.unbind", [("reserved_1", "short"), ("queue", "shortstr"), ("exchange", "shortstr"),
                                ("routing_key", "shortstr"), ("arguments", "table")]),
    (50, 51): ("queue.unbind-ok", []),
    (60, 10): ("basic.qos", [("prefetch_size", "long"), ("prefetch_count", "short"), ("global", "bit")]),
    (60, 11): ("basic.qos-ok", []),
    (60, 20): ("basic.consume", [("reserved_1", "short"), ("queue", "shortstr"), ("consumer_tag", "shortstr"),
                                 ("no_local", "bit"), ("no_ack", "bit"), ("exclusive", "bit"),
                                 ("no_wait", "bit"), ("arguments", "table")]),
    (60, 21): ("basic.consume-ok", [("consumer_tag", "shortstr")]),
    (60, 30): ("basic.cancel", [("consumer_tag", "shortstr"), ("no_wait", "bit")]),
    (60, 31): ("basic.cancel-ok", [("consumer_tag", "shortstr")]),
    (60, 40): ("basic.publish", [("reserved_1", "short"), ("exchange", "shortstr"), ("routing_key", "shortstr"),
                                 ("mandatory", "bit"), ("immediate", "bit")]),
    (60, 50): ("basic.return", [("reply_code", "short"), ("reply_text", "shortstr"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr")]),
    (60, 60): ("basic.deliver", [("consumer_tag", "shortstr"), ("delivery_tag", "longlong"),
                                 ("redelivered", "bit"), ("exchange", "shortstr"), ("routing_key", "shortstr")]),
    (60, 70): ("basic.get", [("reserved_1", "short"), ("queue", "shortstr"), ("no_ack", "bit")]),
    (60, 71): ("basic.get-ok", [("delivery_tag", "longlong"), ("redelivered", "bit"), ("exchange", "shortstr"),
                                ("routing_key", "shortstr"), ("message_count", "long")]),
    (60, 72): ("basic.get-empty", [("reserved_1", "shortstr")]),
    (60, 80): ("basic.ack", [("delivery_tag", "longlong"), ("multiple", "bit")]),
    (60, 90): ("basic.reject", [("delivery_tag", "longlong"), ("requeue", "bit")]),
    (60, 100): ("basic.recover-async", [("requeue", "bit")]),
    (60, 110): ("basic.recover", [("requeue", "bit")]),
    (60, 111): ("basic.recover-ok", []),
    (60, 120): ("basic.nack", [("delivery_tag", "longlong"), ("multiple", "bit"), ("requeue", "bit")]),
    (85, 10): ("confirm.select", [("no_wait", "bit")]),
    (85, 11): ("confirm.select-ok", []),
    (90, 10): ("tx.select", []),
    (90, 11): ("tx.select-ok", []),
    (90, 20): ("tx.commit", []),
    (90, 21): ("tx.commit-ok", []),
    (90, 30): ("tx.rollback", []),
    (90, 31): ("tx.rollback-ok", []),
}
BY_NAME = {name: (key, fields) for key, (name, fields) in METHODS.items()}

BASIC_PROPS = [("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
               ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
               ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
               ("timestamp", "longlong"), ("type", "shortstr"), ("user_id", "shortstr"),
               ("app_id", "shortstr"), ("cluster_id", "shortstr")]


# ---------------------------------------------------------------- encoding

def enc_shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("B", len(b)) + b


def enc_longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def enc_value(v):
    if isinstance(v, bool):
        return b"t" + struct.pack("B", 1 if v else 0)
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, (str, bytes)):
        return b"S" + enc_longstr(v)
    if isinstance(v, dict):
        return b"F" + enc_table(v)
    if isinstance(v, list):
        inner = b"".join(enc_value(x) for x in v)
        return b"A" + struct.pack(">I", len(inner)) + inner
    if v is None:
        return b"V"
    raise TypeError(v)


def enc_table_body(d):
    return b"".join(enc_shortstr(k) + enc_value(v) for k, v in d.items())


def enc_table(d):
    body = enc_table_body(d)
    return struct.pack(">I", len(body)) + body


def enc_fields(fields, values):
    out, bits = bytearray(), []

    def flush():
        if bits:
            n = 0
            for i, b in enumerate(bits):
                n |= (1 if b else 0) << i
            out.extend(struct.pack("B", n))
            bits.clear()

    for name, typ in fields:
        v = values.get(name)
        if typ == "bit":
            if len(bits) == 8:
                flush()
            bits.append(bool(v))
            continue
        flush()
        if typ == "octet":
            out += struct.pack("B", v or 0)
        elif typ == "short":
            out += struct.pack(">H", v or 0)
        elif typ == "long":
            out += struct.pack(">I", v or 0)
        elif typ == "longlong":
            out += struct.pack(">Q", v or 0)
        elif typ == "shortstr":
            out += enc_shortstr(v or "")
        elif typ == "longstr":
            out += enc_longstr(v or "")
        elif typ == "table":
            out += v if isinstance(v, bytes) else enc_table(v or {})
    flush()
    return bytes(out)


def enc_method(name, **values):
    (cls, mid), fields = BY_NAME[name]
    return struct.pack(">HH", cls, mid) + enc_fields(fields, values)


def enc_frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


def enc_header(body_size, class_id=60, **props):
    flags, vals = 0, {}
    for i, (name, _typ) in enumerate(BASIC_PROPS):
        if name in props:
            flags |= 1 << (15 - i)
            vals[name] = props[name]
    plist = [(n, t) for n, t in BASIC_PROPS if n in props]
    return struct.pack(">HHQH", class_id, 0, body_size, flags) + enc_fields(plist, vals)


# ---------------------------------------------------------------- decoding

class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, n):
        if self.i + n > len(self.d):
            raise ValueError("truncated")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def shortstr(self):
        return self.take(self.unpack("B")).decode(errors="replace")

    def longstr(self):
        raw = self.take(self.unpack(">I"))
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw

    def table(self):
        sub = Reader(self.take(self.unpack(">I")))
        out = {}
        while sub.i < len(sub.d):
            k = sub.shortstr()
            out[k] = sub.value()
        return out

    def value(self):
        t = chr(self.take(1)[0])
        simple = {"t": ">B", "b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I",
                  "l": ">q", "L": ">Q", "f": ">f", "d": ">d", "T": ">Q"}
        if t in simple:
            v = self.unpack(simple[t])
            return bool(v) if t == "t" else v
        if t == "S":
            return self.longstr()
        if t == "F":
            return self.table()
        if t == "A":
            sub = Reader(self.take(self.unpack(">I")))
            arr = []
            while sub.i < len(sub.d):
                arr.append(sub.value())
            return arr
        if t == "D":
            scale = self.unpack("B")
            return ("decimal", scale, self.unpack(">I"))
        if t == "V":
            return None
        if t == "x":
            return self.take(self.unpack(">I"))
        raise ValueError("unknown field type %r" % t)


def dec_fields(r, fields):
    out, bitbyte, bitpos = {}, 0, 8
    for name, typ in fields:
        if typ == "bit":
            if bitpos == 8:
                bitbyte, bitpos = r.unpack("B"), 0
            out[name] = bool(bitbyte & (1 << bitpos))
            bitpos += 1
            continue
        bitpos = 8
        if typ == "octet":
            out[name] = r.unpack("B")
        elif typ == "short":
            out[name] = r.unpack(">H")
        elif typ == "long":
            out[name] = r.unpack(">I")
        elif typ == "longlong":
            out[name] = r.unpack(">Q")
        elif typ == "shortstr":
            out[name] = r.shortstr()
        elif typ == "longstr":
            out[name] = r.longstr()
        elif typ == "table":
            out[name] = r.table()
    return out


def dec_method(payload):
    r = Reader(payload)
    cls, mid = r.unpack(">H"), r.unpack(">H")
    if (cls, mid) not in METHODS:
        return "unknown(%d.%d)" % (cls, mid), {"raw": payload[4:]}
    name, fields = METHODS[(cls, mid)]
    try:
        return name, dec_fields(r, fields)
    except ValueError as e:
        return name, {"decode_error": str(e), "raw": payload}


def dec_header(payload):
    r = Reader(payload)
    cls, weight, size, flags = r.unpack(">H"), r.unpack(">H"), r.unpack(">Q"), r.unpack(">H")
    plist = [(n, t) for i, (n, t) in enumerate(BASIC_PROPS) if flags & (1 << (15 - i))]
    props = dec_fields(r, plist) if cls == 60 else {}
    return {"class_id": cls, "weight": weight, "body_size": size, "properties": props}


def fmt_fields(d, skip_reserved=True):
    parts = []
    for k, v in d.items():
        if skip_reserved and k.startswith("reserved_") and not v:
            continue
        parts.append("%s=%r" % (k, v))
    return "(" + ", ".join(parts) + ")"


# ---------------------------------------------------------------- a probe connection

class Closed(Exception):
    pass


class Probe:
    """One raw connection; everything sent and received is logged with a timestamp."""

    def __init__(self, url, name, log):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 5672
        self.user = urllib.parse.unquote(u.username or "guest")
        self.password = urllib.parse.unquote(u.password or "guest")
        path = u.path[1:] if u.path.startswith("/") else u.path
        self.vhost = urllib.parse.unquote(path) if path else "/"
        self.url, self.name, self.log = url, name, log
        self.sock = socket.create_connection((self.host, self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.t0 = time.monotonic()
        self.start = self.tune = None
        self.frame_max = 131072
        self.auto_close_ok = True
        self.closed = False
        self.close_ok_delay = 1.0
        # A refused handshake is sometimes answered only after a delay; wait long
        # enough to see it.
        self.handshake_quiet = 6.0

    def ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    def note(self, text):
        self.log.append("[%5dms] %s" % (self.ms(), text))

    # -- raw I/O
    def send_raw(self, data, label=None):
        self.note("C> %s" % (label or "raw %r" % data))
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.note("   send failed: %s" % e.__class__.__name__)

    def send(self, name, ch=1, **values):
        shown = {k: v for k, v in values.items() if k not in ("client_properties",)}
        self.send_raw(enc_frame(FRAME_METHOD, ch, enc_method(name, **values)),
                      "ch%d %s%s" % (ch, name, fmt_fields(shown)))

    def publish(self, ch, exchange, routing_key, body=b"x", mandatory=False, immediate=False, **props):
        body = body.encode() if isinstance(body, str) else body
        data = enc_frame(FRAME_METHOD, ch, enc_method("basic.publish", exchange=exchange, routing_key=routing_key,
                                                      mandatory=mandatory, immediate=immediate))
        data += enc_frame(FRAME_HEADER, ch, enc_header(len(body), **props))
        if body:
            data += enc_frame(FRAME_BODY, ch, body)
        self.send_raw(data, "ch%d basic.publish(exchange=%r, routing_key=%r%s%s) + header + body %r" % (
            ch, exchange, routing_key, ", mandatory=True" if mandatory else "",
            ", immediate=True" if immediate else "", body))

    def fill(self, timeout):
        """Read more bytes; returns False on timeout, raises Closed on EOF."""
        if self.eof:
            raise Closed()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
            self.note("S> connection reset (RST)")
        if not data:
            self.eof = True
            self.note("S> socket closed by server (EOF)")
            raise Closed()
        self.buf += data
        return True

    def read_frame(self, timeout):
        """Returns (type, channel, payload) or None on timeout; raises Closed on EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                ftype, ch, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload, end = self.buf[7:7 + size], self.buf[7 + size]
                    self.buf = self.buf[8 + size:]
                    if end != FRAME_END:
                        self.note("S> frame with bad end byte 0x%02x" % end)
                    return ftype, ch, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self.fill(left):
                return None

    def describe(self, ftype, ch, payload):
        if ftype == FRAME_METHOD:
            name, fields = dec_method(payload)
            return name, "ch%d %s%s" % (ch, name, fmt_fields(fields)), fields
        if ftype == FRAME_HEADER:
            h = dec_header(payload)
            return "header", "ch%d content-header(class_id=%d, body_size=%d, properties=%r)" % (
                ch, h["class_id"], h["body_size"], h["properties"]), h
        if ftype == FRAME_BODY:
            return "body", "ch%d content-body %r" % (ch, payload), payload
        if ftype == FRAME_HEARTBEAT:
            return "heartbeat", "ch%d heartbeat" % ch, None
        return "?", "frame type %d ch%d payload %r" % (ftype, ch, payload), None

    def collect(self, quiet=0.4, until=None, max_wait=5.0):
        """Log every frame until `quiet` seconds pass without one, the method named
        `until` arrives, or the socket closes. Server-initiated closes are answered
        (channel.close-ok at once; connection.close-ok only if the server has not
        closed the socket within a second, so that its own closing time shows)."""
        got = []
        deadline = time.monotonic() + max_wait
        try:
            while time.monotonic() < deadline:
                f = self.read_frame(quiet)
                if f is None:
                    break
                name, text, fields = self.describe(*f)
                self.note("S> " + text)
                got.append((name, f[1], fields))
                if name == "channel.close" and self.auto_close_ok:
                    self.send("channel.close-ok", ch=f[1])
                if name == "connection.close":
                    self.await_server_close()
                    break
                if until and name == until:
                    break
        except Closed:
            pass
        return got

    def await_server_close(self):
        try:
            end = time.monotonic() + self.close_ok_delay
            while time.monotonic() < end:
                f = self.read_frame(end - time.monotonic())
                if f is not None:
                    self.note("S> " + self.describe(*f)[1])
            self.note("   (socket still open %gs after connection.close)" % self.close_ok_delay)
            if self.auto_close_ok:
                self.send("connection.close-ok", ch=0)
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    if self.read_frame(end - time.monotonic()) is None:
                        break
                self.note("   (socket still open 2s after close-ok)")
        except Closed:
            pass

    def rpc(self, name, ch=1, expect=None, **values):
        self.send(name, ch, **values)
        return self.collect(until=expect)

    # -- handshake
    def handshake(self, mechanism="PLAIN", response=None, vhost=None, capabilities=True,
                  tune_ok=None, open_conn=True, open_channel=True, log_start=False):
        self.send_raw(PROTOCOL_HEADER, "protocol header AMQP 0-9-1")
        f = self.read_frame(5)
        if f is None:
            raise Closed()
        name, fields = dec_method(f[2])
        self.start = fields
        self.note("S> connection.start(version=%s-%s, mechanisms=%r, locales=%r%s)" % (
            fields["version_major"], fields["version_minor"], fields["mechanisms"], fields["locales"],
            ", server_properties=%r" % fields["server_properties"] if log_start else ", ..."))
        props = {"product": "warren-probe", "platform": "python"}
        if capabilities:
            # Same capabilities as pika announces; authentication_failure_close in
            # particular changes how RabbitMQ reports a refused login.
            props["capabilities"] = {"authentication_failure_close": True, "basic.nack": True,
                                     "connection.blocked": True, "consumer_cancel_notify": True,
                                     "publisher_confirms": True}
        if response is None:
            response = b"\x00" + self.user.encode() + b"\x00" + self.password.encode()
        self.send("connection.start-ok", ch=0, client_properties=props, mechanism=mechanism,
                  response=response, locale="en_US")
        got = self.collect(until="connection.tune", quiet=self.handshake_quiet)
        if not got or got[-1][0] != "connection.tune":
            return False
        self.tune = got[-1][2]
        t = dict(self.tune)
        t["heartbeat"] = 0
        if tune_ok:
            t.update(tune_ok)
        self.frame_max = t["frame_max"] or 131072
        self.send("connection.tune-ok", ch=0, **t)
        if not open_conn:
            return True
        self.send("connection.open", ch=0, virtual_host=self.vhost if vhost is None else vhost)
        got = self.collect(until="connection.open-ok", quiet=self.handshake_quiet)
        if not got or got[-1][0] != "connection.open-ok":
            return False
        if open_channel:
            return self.open_channel(1)
        return True

    def open_channel(self, ch):
        got = self.rpc("channel.open", ch=ch, expect="channel.open-ok")
        return bool(got) and got[-1][0] == "channel.open-ok"

    def close(self):
        if self.eof or self.closed:
            return
        self.closed = True
        try:
            self.send("connection.close", ch=0, reply_code=200, reply_text="bye")
            self.collect(until="connection.close-ok", quiet=1.0)
        except OSError:
            pass
        finally:
            self.sock.close()


# ---------------------------------------------------------------- cases

CASES = []


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


class Ctx:
    """What a case gets: the URL, a prefix for unique names, the log, and a list of
    entities to delete once the case is over (on a fresh connection)."""

    def __init__(self, url, prefix, log):
        self.url, self.prefix, self.log = url, prefix, log
        self.cleanup = []
        self.probes = []
        self.n = 0

    def name(self, kind):
        self.n += 1
        return "%s-%s%d" % (self.prefix, kind, self.n)

    def queue(self, kind="q"):
        n = self.name(kind)
        self.cleanup.append(("queue", n))
        return n

    def exchange(self, kind="x"):
        n = self.name(kind)
        self.cleanup.append(("exchange", n))
        return n

    def probe(self, label="conn"):
        self.log.append("--- new connection: %s" % label)
        p = Probe(self.url, label, self.log)
        self.probes.append(p)
        return p

    def connected(self, label="conn", **kw):
        p = self.probe(label)
        if not p.handshake(**kw):
            raise RuntimeError("handshake failed")
        return p


def raw_exchange(ctx, data, wait=3.0):
    """Send raw bytes on a fresh socket and report exactly what comes back."""
    p = ctx.probe("raw")
    p.send_raw(data)
    received = b""
    end = time.monotonic() + wait
    closed_at = None
    while time.monotonic() < end:
        try:
            if not p.fill(end - time.monotonic()):
                break
            p.note("S> %d bytes" % len(p.buf))
            received += p.buf
            p.buf = b""
        except Closed:
            closed_at = p.ms()
            break
    p.note("S> bytes received: %r (hex %s)" % (received, received.hex()))
    if received.startswith(b"\x01\x00\x00") and len(received) > 7:
        name, fields = dec_method(received[7:7 + struct.unpack(">I", received[3:7])[0]])
        p.note("   decoded as %s%s" % (name, fmt_fields(fields)))
    p.note("   socket %s" % ("closed by server at %dms" % closed_at if closed_at is not None
                              else "still open after %.1fs" % wait))


@case("header: AMQP\\x00\\x00\\x09\\x00")
def _(ctx):
    raw_exchange(ctx, b"AMQP\x00\x00\x09\x00")


@case("header: HTTP/1.1")
def _(ctx):
    raw_exchange(ctx, b"HTTP/1.1")


@case("header: GET / HTTP/1.1 request")
def _(ctx):
    raw_exchange(ctx, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


@case("header: AMQP\\x01\\x01\\x00\\x09 (0-9 old style)")
def _(ctx):
    raw_exchange(ctx, b"AMQP\x01\x01\x00\x09")


@case("header: AMQP\\x01\\x01\\x08\\x00 (0-8)")
def _(ctx):
    raw_exchange(ctx, b"AMQP\x01\x01\x08\x00")


@case("header: AMQP\\x00\\x01\\x00\\x00 (AMQP 1.0)")
def _(ctx):
    raw_exchange(ctx, b"AMQP\x00\x01\x00\x00")


@case("header: AMQP\\x03\\x01\\x00\\x00 (AMQP 1.0 SASL)")
def _(ctx):
    raw_exchange(ctx, b"AMQP\x03\x01\x00\x00")


@case("header: only 4 bytes AMQP then silence")
def _(ctx):
    raw_exchange(ctx, b"AMQP", wait=13.0)


@case("header: correct, then silence (handshake timeout?)")
def _(ctx):
    raw_exchange(ctx, PROTOCOL_HEADER, wait=13.0)


@case("handshake: connection.start contents and connection.tune")
def _(ctx):
    p = ctx.probe()
    p.handshake(log_start=True, open_channel=False)
    p.note("   tune proposed: %r" % p.tune)
    p.close()


@case("handshake: bad password, PLAIN, with authentication_failure_close capability")
def _(ctx):
    p = ctx.probe()
    p.handshake(response=b"\x00guest\x00wrong")


@case("handshake: bad password, PLAIN, no capabilities")
def _(ctx):
    p = ctx.probe()
    p.handshake(response=b"\x00guest\x00wrong", capabilities=False)


@case("handshake: unknown user, PLAIN")
def _(ctx):
    p = ctx.probe()
    p.handshake(response=b"\x00nobody-probe\x00x")


@case("handshake: malformed PLAIN response (no NULs)")
def _(ctx):
    p = ctx.probe()
    p.handshake(response=b"guestguest")


@case("handshake: AMQPLAIN good credentials")
def _(ctx):
    p = ctx.probe()
    resp = enc_table_body({"LOGIN": p.user, "PASSWORD": p.password})
    ok = p.handshake(mechanism="AMQPLAIN", response=resp, open_channel=False)
    p.note("   handshake ok: %s" % ok)
    p.close()


@case("handshake: AMQPLAIN bad password")
def _(ctx):
    p = ctx.probe()
    p.handshake(mechanism="AMQPLAIN", response=enc_table_body({"LOGIN": p.user, "PASSWORD": "wrong"}))


@case("handshake: unknown mechanism FOO")
def _(ctx):
    p = ctx.probe()
    p.handshake(mechanism="FOO")


@case("handshake: EXTERNAL mechanism (not offered)")
def _(ctx):
    p = ctx.probe()
    p.handshake(mechanism="EXTERNAL", response=b"")


@case("handshake: unknown vhost on connection.open")
def _(ctx):
    p = ctx.probe()
    p.handshake(vhost="probe-no-such-vhost")


@case("handshake: tune-ok channel_max=0, then open channel 2048 and 65535")
def _(ctx):
    p = ctx.probe()
    if p.handshake(tune_ok={"channel_max": 0}):
        p.rpc("channel.open", ch=2048)
        p.rpc("channel.open", ch=65535)
    p.close()


@case("handshake: tune-ok frame_max=1024 (< 4096)")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"frame_max": 1024})
    p.close()


@case("handshake: tune-ok frame_max=4096 (minimum)")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"frame_max": 4096})
    p.close()


@case("handshake: tune-ok frame_max=0 (unlimited)")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"frame_max": 0})
    p.close()


@case("handshake: tune-ok frame_max larger than server's (1 MiB)")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"frame_max": 1 << 20})
    p.close()


@case("handshake: tune-ok channel_max larger than server's (4000)")
def _(ctx):
    p = ctx.probe()
    if p.handshake(tune_ok={"channel_max": 4000}, open_channel=False):
        p.rpc("channel.open", ch=3000)
    p.close()


@case("handshake: tune-ok channel_max=0, no connection.open")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"channel_max": 0}, open_conn=False)
    p.collect(quiet=5.0)


@case("handshake: tune-ok channel_max=3, then open channels 1..4 and reuse ids")
def _(ctx):
    p = ctx.probe()
    if p.handshake(tune_ok={"channel_max": 3}, open_channel=False):
        for ch in (1, 2, 3, 4):
            p.rpc("channel.open", ch=ch)
    p.close()


@case("handshake: tune-ok heartbeat=1, then silence (heartbeat timeout)")
def _(ctx):
    p = ctx.probe()
    p.handshake(tune_ok={"heartbeat": 1}, open_channel=False)
    p.collect(quiet=6.0, max_wait=8.0)


@case("handshake: connection.open without tune-ok")
def _(ctx):
    p = ctx.probe()
    p.send_raw(PROTOCOL_HEADER, "protocol header")
    p.read_frame(5)
    p.send("connection.start-ok", ch=0, client_properties={}, mechanism="PLAIN",
           response=b"\x00guest\x00guest", locale="en_US")
    p.collect(until="connection.tune")
    p.send("connection.open", ch=0, virtual_host="/")
    p.collect(quiet=2.0)
    p.close()


@case("handshake: channel.open before connection.open")
def _(ctx):
    p = ctx.probe()
    p.handshake(open_conn=False)
    p.rpc("channel.open", ch=1)
    p.close()


@case("handshake: unknown locale xx_XX")
def _(ctx):
    p = ctx.probe()
    p.send_raw(PROTOCOL_HEADER, "protocol header")
    p.read_frame(5)
    p.send("connection.start-ok", ch=0, client_properties={}, mechanism="PLAIN",
           response=b"\x00guest\x00guest", locale="xx_XX")
    got = p.collect(until="connection.tune", quiet=3.0)
    if got and got[-1][0] == "connection.tune":
        p.send("connection.tune-ok", ch=0, channel_max=2047, frame_max=131072, heartbeat=0)
        p.rpc("connection.open", ch=0, virtual_host="/", expect="connection.open-ok")
    p.close()


# -- frames

@case("frame: unknown frame type 9 on channel 0")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(9, 0, b"abc"), "frame type 9 ch0 payload 'abc'")
    p.collect()


@case("frame: unknown frame type 9 on channel 1")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(9, 1, b"abc"), "frame type 9 ch1 payload 'abc'")
    p.collect()


@case("frame: frame end byte 0x00 instead of 0xCE")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("queue.declare", queue=q), end=0),
               "ch1 queue.declare(%s) with end byte 0x00" % q)
    p.collect()


@case("frame: body frame larger than negotiated frame_max 4096")
def _(ctx):
    p = ctx.connected(tune_ok={"frame_max": 4096})
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    body = b"b" * 5000
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(len(body)))
               + enc_frame(FRAME_BODY, 1, body), "publish with one 5000-byte body frame (frame_max 4096)")
    p.collect()


@case("frame: header announcing a 2 GiB payload, nothing more sent")
def _(ctx):
    p = ctx.connected()
    p.send_raw(struct.pack(">BHI", 1, 1, 0x7FFFFFFF), "frame header type 1 ch1 size 0x7fffffff")
    p.collect(quiet=2.0)


@case("frame: heartbeat on channel 1")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_HEARTBEAT, 1, b""), "heartbeat frame on ch1")
    p.collect()


@case("frame: heartbeat with non-empty payload on channel 0")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_HEARTBEAT, 0, b"xx"), "heartbeat frame ch0 payload 'xx'")
    p.collect()


@case("frame: method on channel 5 that was never opened")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", ch=5, queue=ctx.queue())


@case("frame: channel.close-ok on channel 5 that was never opened")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.close-ok", ch=5)
    p.close()


@case("frame: channel.open on an already open channel")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.open", ch=1)


@case("frame: channel.open with id above channel_max (2048 / 3000)")
def _(ctx):
    p = ctx.connected()
    p.note("   negotiated channel_max %d" % p.tune["channel_max"])
    p.rpc("channel.open", ch=p.tune["channel_max"])
    p.rpc("channel.open", ch=p.tune["channel_max"] + 1)


@case("frame: body frame with no preceding publish")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_BODY, 1, b"hello"), "ch1 content-body 'hello'")
    p.collect()


@case("frame: content header when a method was expected")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_HEADER, 1, enc_header(5)), "ch1 content-header body_size=5")
    p.collect()


@case("frame: method frame while body is due (header said 10, sent 5)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(10))
               + enc_frame(FRAME_BODY, 1, b"12345"), "publish, header body_size=10, body '12345'")
    p.send("queue.declare", queue=q, passive=True)
    p.collect()


@case("frame: method frame while header is due (publish then method)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send("basic.publish", routing_key=q)
    p.send("queue.declare", queue=q, passive=True)
    p.collect()


@case("frame: body longer than header's body_size (5 announced, 10 sent)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(5))
               + enc_frame(FRAME_BODY, 1, b"1234567890"), "publish, header body_size=5, body '1234567890'")
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("basic.get", queue=q, no_ack=True)


@case("frame: body split in two frames, second one overshoots")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(6))
               + enc_frame(FRAME_BODY, 1, b"1234")
               + enc_frame(FRAME_BODY, 1, b"5678"), "publish, header body_size=6, bodies '1234' '5678'")
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("basic.get", queue=q, no_ack=True)


@case("frame: header body_size=0 followed by an empty body frame")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(0))
               + enc_frame(FRAME_BODY, 1, b""), "publish, header body_size=0, empty body frame")
    p.rpc("queue.declare", queue=q, passive=True)


@case("frame: content header with class_id 50 instead of 60")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
               + enc_frame(FRAME_HEADER, 1, enc_header(1, class_id=50))
               + enc_frame(FRAME_BODY, 1, b"x"), "publish, header class_id=50 body_size=1, body 'x'")
    p.collect()


@case("frame: unknown class id 999 in method frame")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_METHOD, 1, struct.pack(">HH", 999, 10)), "ch1 method 999.10 no args")
    p.collect()


@case("frame: unknown method id 99 in queue class")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_METHOD, 1, struct.pack(">HH", 50, 99)), "ch1 method 50.99 no args")
    p.collect()


@case("frame: server-only content method sent by client (basic.deliver), then a method")
def _(ctx):
    p = ctx.connected()
    p.send("basic.deliver", consumer_tag="x", delivery_tag=1, exchange="", routing_key="q")
    p.collect()
    p.rpc("basic.qos", prefetch_count=1)


@case("frame: server-only method sent by client (queue.declare-ok / basic.consume-ok)")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare-ok", queue="x", message_count=0, consumer_count=0)
    p.open_channel(2)
    p.rpc("basic.consume-ok", ch=2, consumer_tag="x")
    p.close()


@case("frame: payload exactly frame_max and frame_max+1 (frame_max 4096)")
def _(ctx):
    p = ctx.connected(tune_ok={"frame_max": 4096})
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    for size in (4096, 4097):
        body = b"b" * size
        p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("basic.publish", routing_key=q))
                   + enc_frame(FRAME_HEADER, 1, enc_header(len(body)))
                   + enc_frame(FRAME_BODY, 1, body), "publish with body frame payload %d (frame_max 4096)" % size)
        p.rpc("queue.declare", queue=q, passive=True)


@case("frame: method frame larger than frame_max (frame_max 4096, 5000-byte queue.declare arguments)")
def _(ctx):
    p = ctx.connected(tune_ok={"frame_max": 4096})
    p.rpc("queue.declare", queue=ctx.queue(), arguments={"x-pad": "p" * 5000})


@case("frame: frame error, client never sends close-ok (how long until the server closes?)")
def _(ctx):
    p = ctx.connected()
    p.close_ok_delay = 40.0
    p.send_raw(enc_frame(9, 0, b""), "frame type 9 ch0")
    p.collect()


@case("frame: truncated method arguments (queue.declare with 2 arg bytes)")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_METHOD, 1, struct.pack(">HH", 50, 10) + b"\x00\x00"),
               "ch1 queue.declare payload = class+method+2 bytes")
    p.collect()


@case("frame: method frame with empty payload")
def _(ctx):
    p = ctx.connected()
    p.send_raw(enc_frame(FRAME_METHOD, 1, b""), "ch1 method frame size 0")
    p.collect()


@case("frame: method args with trailing garbage bytes")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.send_raw(enc_frame(FRAME_METHOD, 1, enc_method("queue.declare", queue=q) + b"GARBAGE"),
               "ch1 queue.declare(%s) + 7 trailing bytes" % q)
    p.collect()


@case("frame: queue.declare on channel 0")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", ch=0, queue=ctx.queue())


@case("frame: channel.open on channel 0")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.open", ch=0)


@case("frame: content (publish) on channel 0")
def _(ctx):
    p = ctx.connected()
    p.publish(0, "", "x")
    p.collect()


@case("frame: connection method (connection.tune-ok) on channel 1")
def _(ctx):
    p = ctx.connected()
    p.rpc("connection.tune-ok", ch=1, channel_max=10, frame_max=4096, heartbeat=0)


@case("frame: connection.open again after open")
def _(ctx):
    p = ctx.connected()
    p.rpc("connection.open", ch=0, virtual_host="/")


@case("frame: invalid UTF-8 in queue name")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue=b"probe-\xff\xfe")


# -- exchanges

@case("exchange: declare amq.direct, type direct, non-passive")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange="amq.direct", type="direct", durable=True)
    p.rpc("exchange.declare", exchange="amq.direct", type="direct", durable=False)


@case("exchange: declare amq.direct with type fanout")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange="amq.direct", type="fanout", durable=True)


@case("exchange: passive declare amq.direct and the default exchange")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange="amq.direct", passive=True)
    p.rpc("exchange.declare", exchange="", passive=True)


@case("exchange: declare a new name starting with amq.")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange="amq.%s" % ctx.name("x"), type="direct")


@case("exchange: declare the default exchange '' non-passive")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange="", type="direct", durable=True)


@case("exchange: delete amq.direct")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.delete", exchange="amq.direct")


@case("exchange: delete the default exchange ''")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.delete", exchange="")


@case("exchange: declare with unknown type foo")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange=ctx.exchange(), type="foo")


@case("exchange: declare with empty type")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange=ctx.exchange(), type="")


@case("exchange: passive declare of a missing exchange")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.declare", exchange=ctx.exchange(), type="direct", passive=True)


@case("exchange: passive declare with another type than existing")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="direct")
    p.rpc("exchange.declare", exchange=x, type="fanout", passive=True)


@case("exchange: redeclare with another type")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="direct")
    p.rpc("exchange.declare", exchange=x, type="fanout")


@case("exchange: redeclare with another durable flag")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="direct")
    p.rpc("exchange.declare", exchange=x, type="direct", durable=True)


@case("exchange: redeclare with another auto_delete / internal / arguments")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="direct")
    p.rpc("exchange.declare", exchange=x, type="direct", auto_delete=True)
    p.open_channel(2)
    p.rpc("exchange.declare", ch=2, exchange=x, type="direct", internal=True)
    p.open_channel(3)
    p.rpc("exchange.declare", ch=3, exchange=x, type="direct", arguments={"alternate-exchange": "amq.fanout"})


@case("exchange: delete if_unused while bound")
def _(ctx):
    p = ctx.connected()
    x, q = ctx.exchange(), ctx.queue()
    p.rpc("exchange.declare", exchange=x, type="direct")
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.bind", queue=q, exchange=x, routing_key="k")
    p.rpc("exchange.delete", exchange=x, if_unused=True)


@case("exchange: delete if_unused when it is only a source of an e2e binding / only a destination")
def _(ctx):
    p = ctx.connected()
    a, b = ctx.exchange(), ctx.exchange()
    p.rpc("exchange.declare", exchange=a, type="fanout")
    p.rpc("exchange.declare", exchange=b, type="fanout")
    p.rpc("exchange.bind", destination=b, source=a)
    p.rpc("exchange.delete", exchange=b, if_unused=True)
    p.rpc("exchange.delete", exchange=a, if_unused=True)


@case("exchange: delete a missing exchange")
def _(ctx):
    p = ctx.connected()
    p.rpc("exchange.delete", exchange=ctx.exchange())


@case("exchange: bind a queue to the default exchange ''")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.bind", queue=q, exchange="", routing_key=q)


@case("exchange: unbind a queue from the default exchange ''")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.unbind", queue=q, exchange="", routing_key=q)


@case("exchange: queue.bind to a missing exchange")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.bind", queue=q, exchange=ctx.exchange(), routing_key="k")


@case("exchange: queue.bind of a missing queue")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.bind", queue=ctx.queue(), exchange="amq.direct", routing_key="k")


@case("exchange: queue.bind with both missing")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.bind", queue=ctx.queue(), exchange=ctx.exchange(), routing_key="k")


@case("exchange: queue.bind twice (same binding)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.bind", queue=q, exchange="amq.direct", routing_key="k")
    p.rpc("queue.bind", queue=q, exchange="amq.direct", routing_key="k")


@case("exchange: queue.unbind of a binding that does not exist")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.unbind", queue=q, exchange="amq.direct", routing_key="nope")


@case("exchange: queue.unbind with missing exchange / missing queue")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.unbind", queue=q, exchange=ctx.exchange(), routing_key="k")
    p.open_channel(2)
    p.rpc("queue.unbind", ch=2, queue=ctx.queue(), exchange="amq.direct", routing_key="k")


@case("exchange: exchange.bind to missing source / destination")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="fanout")
    p.rpc("exchange.bind", destination=x, source=ctx.exchange())
    p.open_channel(2)
    p.rpc("exchange.bind", ch=2, destination=ctx.exchange(), source=x)


@case("exchange: publish to an internal exchange")
def _(ctx):
    p = ctx.connected()
    x = ctx.exchange()
    p.rpc("exchange.declare", exchange=x, type="fanout", internal=True)
    p.publish(1, x, "k")
    p.collect()


# -- queues

@case("queue: passive declare of a missing queue")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue=ctx.queue(), passive=True)


@case("queue: passive declare with empty name (no current queue)")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue="", passive=True)


@case("queue: passive declare ignores other flags (durable=True on non-durable queue)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.declare", queue=q, passive=True, durable=True, arguments={"x-message-ttl": 5})


@case("queue: redeclare with other durable")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.declare", queue=q, durable=True)


@case("queue: redeclare non-exclusive queue as exclusive (same connection)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.declare", queue=q, exclusive=True)


@case("queue: redeclare exclusive queue as non-exclusive (same connection)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q, exclusive=True)
    p.rpc("queue.declare", queue=q)


@case("queue: redeclare with other auto_delete")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.declare", queue=q, auto_delete=True)


@case("queue: redeclare with other x-message-ttl / with ttl removed / added")
def _(ctx):
    p = ctx.connected()
    q, q2 = ctx.queue(), ctx.queue()
    p.rpc("queue.declare", queue=q, arguments={"x-message-ttl": 1000})
    p.rpc("queue.declare", queue=q, arguments={"x-message-ttl": 2000})
    p.open_channel(2)
    p.rpc("queue.declare", ch=2, queue=q)
    p.open_channel(3)
    p.rpc("queue.declare", ch=3, queue=q2)
    p.rpc("queue.declare", ch=3, queue=q2, arguments={"x-message-ttl": 1000})


@case("queue: redeclare with an argument RabbitMQ does not check (x-probe-unknown)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q, arguments={"x-probe-unknown": 1})
    p.rpc("queue.declare", queue=q, arguments={"x-probe-unknown": 2})


@case("queue: declare with invalid x-message-ttl (negative / string)")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue=ctx.queue(), arguments={"x-message-ttl": -1})
    p.open_channel(2)
    p.rpc("queue.declare", ch=2, queue=ctx.queue(), arguments={"x-message-ttl": "abc"})


@case("queue: declare with unknown x-queue-type")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue=ctx.queue(), arguments={"x-queue-type": "probe"})


@case("queue: exclusive queue used from another connection")
def _(ctx):
    owner = ctx.connected("owner")
    q = ctx.queue()
    owner.rpc("queue.declare", queue=q, exclusive=True)
    other = ctx.connected("other")
    ch = [1]

    def fresh():
        ch[0] += 1
        other.open_channel(ch[0])
        return ch[0]

    other.rpc("queue.declare", ch=1, queue=q, exclusive=True)
    other.rpc("queue.declare", ch=fresh(), queue=q)
    other.rpc("queue.declare", ch=fresh(), queue=q, passive=True)
    other.rpc("basic.consume", ch=fresh(), queue=q)
    other.rpc("queue.bind", ch=fresh(), queue=q, exchange="amq.fanout")
    other.rpc("queue.unbind", ch=fresh(), queue=q, exchange="amq.fanout")
    other.rpc("queue.purge", ch=fresh(), queue=q)
    other.rpc("basic.get", ch=fresh(), queue=q)
    other.rpc("queue.delete", ch=fresh(), queue=q)
    c = fresh()
    other.publish(c, "", q, b"to-exclusive")
    other.rpc("queue.declare", ch=c, queue=q, passive=True)
    owner.rpc("queue.declare", queue=q, passive=True)
    other.close()
    owner.close()


@case("queue: exclusive queue used from another channel of the same connection")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q, exclusive=True)
    p.open_channel(2)
    p.rpc("basic.consume", ch=2, queue=q, no_ack=True)
    p.rpc("queue.delete", ch=2, queue=q)
    p.close()


@case("queue: declare a name starting with amq.")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue="amq.%s" % ctx.name("q"))


@case("queue: passive declare of a name starting with amq. (missing)")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue="amq.%s" % ctx.name("q"), passive=True)


@case("queue: server-named queue (name format)")
def _(ctx):
    p = ctx.connected()
    for _i in range(2):
        got = p.rpc("queue.declare", queue="", exclusive=True)
    p.note("   name length: %d" % len(got[-1][2]["queue"]))
    p.rpc("queue.declare", queue="", durable=True, auto_delete=True)
    p.rpc("queue.declare", queue="", passive=True)
    p.close()


@case("queue: empty-name declare refers to last declared queue on the channel (queue.bind/purge with '')")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("queue.bind", queue="", exchange="amq.fanout")
    p.publish(1, "amq.fanout", "")
    p.rpc("queue.purge", queue="")
    p.rpc("queue.unbind", queue="", exchange="amq.fanout")
    p.rpc("queue.delete", queue="")


@case("queue: delete if_empty on a non-empty queue")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q)
    p.rpc("queue.delete", queue=q, if_empty=True)


@case("queue: delete if_unused with a consumer")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.open_channel(2)
    p.rpc("queue.delete", ch=2, queue=q, if_unused=True)


@case("queue: delete a queue that has a consumer (consumer_cancel_notify)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.open_channel(2)
    p.rpc("queue.delete", ch=2, queue=q)
    p.collect()
    p.close()


@case("queue: purge of a missing queue")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.purge", queue=ctx.queue())


@case("queue: delete of a missing queue")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.delete", queue=ctx.queue())
    p.rpc("queue.delete", queue=ctx.queue(), if_empty=True, if_unused=True)


@case("queue: declare-ok / purge-ok / delete-ok counts")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    for i in range(3):
        p.publish(1, "", q, b"m%d" % i)
    p.rpc("queue.declare", queue=q)
    p.open_channel(2)
    p.rpc("basic.qos", ch=2, prefetch_count=1)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c1")
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("queue.purge", queue=q)
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("basic.cancel", ch=2, consumer_tag="c1")
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("channel.close", ch=2, reply_code=200, reply_text="bye")
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("queue.delete", queue=q)


@case("queue: declare with no_wait=True")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q, no_wait=True)
    p.rpc("queue.declare", queue=q, passive=True)


@case("queue: name of 256+ chars impossible; 255-char name")
def _(ctx):
    p = ctx.connected()
    q = (ctx.queue() + "-" + "n" * 255)[:255]
    ctx.cleanup.append(("queue", q))
    p.rpc("queue.declare", queue=q)


# -- basic

@case("basic: publish to a missing exchange, then queue.declare on the same channel")
def _(ctx):
    p = ctx.connected()
    p.auto_close_ok = False
    p.publish(1, ctx.exchange(), "k")
    p.send("queue.declare", queue=ctx.queue())
    p.collect(quiet=1.0)
    p.send("channel.close-ok")
    p.collect()
    p.close()


@case("basic: publish to a missing exchange, then a second publish and a declare")
def _(ctx):
    p = ctx.connected()
    p.auto_close_ok = False
    x = ctx.exchange()
    p.publish(1, x, "k")
    p.publish(1, x, "k")
    p.send("exchange.declare", exchange=x, passive=True)
    p.collect(quiet=1.0)
    p.send("channel.close-ok")
    p.collect()
    p.close()


@case("basic: publish immediate=true")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, immediate=True)
    p.collect()


@case("basic: mandatory publish, unroutable (basic.return fields)")
def _(ctx):
    p = ctx.connected()
    p.publish(1, "amq.direct", "probe-nowhere", b"returned", mandatory=True,
              content_type="text/plain", delivery_mode=2, headers={"h": 1})
    p.collect()
    p.publish(1, "", ctx.queue(), b"returned2", mandatory=True)
    p.collect()
    p.close()


@case("basic: non-mandatory unroutable publish (silently dropped)")
def _(ctx):
    p = ctx.connected()
    p.publish(1, "amq.direct", "probe-nowhere", b"dropped")
    p.rpc("basic.qos", prefetch_count=1)
    p.close()


@case("basic: consume on a missing queue")
def _(ctx):
    p = ctx.connected()
    p.rpc("basic.consume", queue=ctx.queue())


@case("basic: consume with server-generated consumer tag (format)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q)
    p.close()


@case("basic: duplicate consumer tag on the same channel")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="dup")
    p.rpc("basic.consume", queue=q, consumer_tag="dup")


@case("basic: same consumer tag on two channels")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="dup")
    p.open_channel(2)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="dup")
    p.close()


@case("basic: exclusive consume on a queue that has a consumer")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.open_channel(2)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c2", exclusive=True)


@case("basic: consume on a queue that has an exclusive consumer")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", exclusive=True)
    p.open_channel(2)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c2")


@case("basic: ack of an unknown delivery tag")
def _(ctx):
    p = ctx.connected()
    p.send("basic.ack", delivery_tag=99)
    p.collect()


@case("basic: double ack")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q)
    p.rpc("basic.get", queue=q)
    p.send("basic.ack", delivery_tag=1)
    p.send("basic.ack", delivery_tag=1)
    p.collect()


@case("basic: ack delivery_tag=0 multiple=true (nothing outstanding, then 2 outstanding)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.send("basic.ack", delivery_tag=0, multiple=True)
    p.collect()
    p.publish(1, "", q)
    p.publish(1, "", q)
    p.rpc("basic.get", queue=q)
    p.rpc("basic.get", queue=q)
    p.send("basic.ack", delivery_tag=0, multiple=True)
    p.rpc("queue.declare", queue=q, passive=True)
    p.close()


@case("basic: ack delivery_tag=0 multiple=false")
def _(ctx):
    p = ctx.connected()
    p.send("basic.ack", delivery_tag=0, multiple=False)
    p.collect()


@case("basic: ack multiple=true with a tag above the highest outstanding")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q)
    p.rpc("basic.get", queue=q)
    p.send("basic.ack", delivery_tag=5, multiple=True)
    p.collect()


@case("basic: nack / reject of an unknown delivery tag")
def _(ctx):
    p = ctx.connected()
    p.send("basic.nack", delivery_tag=7, requeue=True)
    p.collect()
    p.open_channel(2)
    p.send("basic.reject", ch=2, delivery_tag=7, requeue=True)
    p.collect()


@case("basic: ack of a delivery made with no_ack=true")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q)
    p.rpc("basic.get", queue=q, no_ack=True)
    p.send("basic.ack", delivery_tag=1)
    p.collect()


@case("basic: ack on another channel than the delivery's")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q)
    p.rpc("basic.get", queue=q)
    p.open_channel(2)
    p.send("basic.ack", ch=2, delivery_tag=1)
    p.collect()


@case("basic: reject requeue=true then get (redelivered flag)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, b"r")
    p.rpc("basic.get", queue=q)
    p.send("basic.reject", delivery_tag=1, requeue=True)
    p.rpc("basic.get", queue=q)
    p.close()


@case("basic: basic.get on an empty queue / missing queue")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("basic.get", queue=q)
    p.rpc("basic.get", queue=ctx.queue())


@case("basic: basic.get counts")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    for i in range(3):
        p.publish(1, "", q, b"g%d" % i, delivery_mode=2, content_type="text/plain")
    for _i in range(4):
        p.rpc("basic.get", queue=q, no_ack=True)
    p.close()


@case("basic: qos prefetch_size != 0")
def _(ctx):
    p = ctx.connected()
    p.rpc("basic.qos", prefetch_size=1000, prefetch_count=10)


@case("basic: qos global=true")
def _(ctx):
    p = ctx.connected()
    p.rpc("basic.qos", prefetch_count=10, **{"global": True})
    p.close()


@case("basic: recover requeue=false")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, b"rec")
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.rpc("basic.recover", requeue=False)
    p.close()


@case("basic: recover requeue=true")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, b"rec")
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.rpc("basic.recover", requeue=True)
    p.close()


@case("basic: recover-async")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, b"rec")
    p.rpc("basic.consume", queue=q, consumer_tag="c1")
    p.rpc("basic.recover-async", requeue=True)
    p.close()


@case("basic: cancel of an unknown consumer tag")
def _(ctx):
    p = ctx.connected()
    p.rpc("basic.cancel", consumer_tag="probe-nope")
    p.close()


@case("basic: confirm.select then tx.select")
def _(ctx):
    p = ctx.connected()
    p.rpc("confirm.select")
    p.rpc("tx.select")


@case("basic: tx.select then confirm.select")
def _(ctx):
    p = ctx.connected()
    p.rpc("tx.select")
    p.rpc("confirm.select")


@case("basic: tx.commit / tx.rollback without tx.select")
def _(ctx):
    p = ctx.connected()
    p.rpc("tx.commit")
    p.open_channel(2)
    p.rpc("tx.rollback", ch=2)


@case("basic: confirm.select twice")
def _(ctx):
    p = ctx.connected()
    p.rpc("confirm.select")
    p.rpc("confirm.select")
    p.close()


@case("basic: confirms with mandatory unroutable publish (return vs ack order)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("confirm.select")
    p.publish(1, "amq.direct", "probe-nowhere", b"m1", mandatory=True)
    p.publish(1, "amq.direct", "probe-nowhere", b"m2")
    p.publish(1, "", q, b"m3", mandatory=True)
    p.publish(1, "", ctx.queue(), b"m4", mandatory=True)
    p.collect(quiet=0.8)
    p.close()


@case("basic: publish to a missing exchange in confirm mode")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("confirm.select")
    p.publish(1, "", q, b"ok-first")
    p.publish(1, ctx.exchange(), "k", b"to-missing")
    p.collect(quiet=0.8)


@case("basic: tx publish, commit, rollback; mandatory unroutable in tx")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.rpc("tx.select")
    p.publish(1, "", q, b"t1")
    p.publish(1, "amq.direct", "probe-nowhere", b"t2", mandatory=True)
    p.rpc("queue.declare", queue=q, passive=True)
    p.rpc("tx.commit")
    p.rpc("queue.declare", queue=q, passive=True)
    p.publish(1, "", q, b"t3")
    p.rpc("tx.rollback")
    p.rpc("queue.declare", queue=q, passive=True)
    p.close()


@case("basic: deliveries and redelivery after channel close (requeue order, redelivered flag)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    for i in range(3):
        p.publish(1, "", q, b"d%d" % i)
    p.open_channel(2)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c1")
    p.rpc("channel.close", ch=2, reply_code=200, reply_text="bye")
    p.open_channel(3)
    p.rpc("basic.consume", ch=3, queue=q, consumer_tag="c2", no_ack=True)
    p.close()


# -- channel

@case("channel: channel.flow active=false")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.flow", active=False)


@case("channel: channel.flow active=true")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.flow", active=True)
    p.close()


@case("channel: client channel.close, then more frames before close-ok")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.send("channel.close", reply_code=200, reply_text="bye")
    p.send("queue.declare", queue=q)
    p.publish(1, "", q)
    p.collect()
    p.open_channel(2)
    p.rpc("queue.declare", ch=2, queue=q, passive=True)
    p.close()


@case("channel: server channel.close, client sends methods instead of close-ok")
def _(ctx):
    p = ctx.connected()
    p.auto_close_ok = False
    p.rpc("queue.declare", queue=ctx.queue(), passive=True)
    p.rpc("queue.declare", queue=ctx.queue())
    p.rpc("channel.open")
    p.rpc("channel.close-ok")
    p.rpc("basic.qos", prefetch_count=1)


@case("channel: method on a channel after it was closed (close/close-ok done)")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.close", reply_code=200, reply_text="bye")
    p.rpc("queue.declare", queue=ctx.queue())


@case("channel: reopen a channel id after close")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.close", reply_code=200, reply_text="bye")
    p.rpc("channel.open", ch=1)
    p.close()


@case("channel: client channel.close with an error code")
def _(ctx):
    p = ctx.connected()
    p.rpc("channel.close", reply_code=404, reply_text="client says not found", class_id=50, method_id=10)
    p.close()


@case("connection: client connection.close then more frames before close-ok")
def _(ctx):
    p = ctx.connected()
    p.send("connection.close", ch=0, reply_code=200, reply_text="bye")
    p.send("queue.declare", queue=ctx.queue())
    p.collect(quiet=1.0)


@case("connection: after client close / close-ok, how long does the server keep the socket?")
def _(ctx):
    p = ctx.connected()
    p.send("connection.close", ch=0, reply_code=200, reply_text="bye")
    p.closed = True
    p.collect(quiet=35.0, max_wait=36.0)


@case("connection: socket closed right after publish (is the message kept?)")
def _(ctx):
    p = ctx.connected()
    q = ctx.queue()
    p.rpc("queue.declare", queue=q)
    p.publish(1, "", q, b"last-words")
    p.sock.close()
    p.eof = True
    time.sleep(0.3)
    p2 = ctx.connected("check")
    p2.rpc("queue.declare", queue=q, passive=True)
    p2.close()


# ---------------------------------------------------------------- streams

STREAM = {"x-queue-type": "stream"}


def stream_with(ctx, p, n=3):
    """Declares a stream and publishes n messages to it, confirmed."""
    q = ctx.queue("s")
    p.rpc("queue.declare", queue=q, durable=True, arguments=STREAM)
    p.rpc("confirm.select")
    for i in range(n):
        p.publish(1, "", q, "m%d" % i)
    p.collect(quiet=0.5)
    return q


@case("stream: consume, ack, then unknown delivery tags")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p)
    p.rpc("basic.qos", prefetch_count=2)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", arguments={"x-stream-offset": "first"})
    p.rpc("basic.ack", delivery_tag=1)
    p.rpc("basic.ack", delivery_tag=99)
    p.rpc("basic.qos", prefetch_count=2)


@case("stream: nack of an unknown tag")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p)
    p.rpc("basic.qos", prefetch_count=2)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", arguments={"x-stream-offset": "first"})
    p.rpc("basic.nack", delivery_tag=99, requeue=True)
    p.rpc("basic.qos", prefetch_count=2)


@case("stream: exclusive consumer, then a second consumer on another channel")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p, 0)
    p.rpc("basic.qos", prefetch_count=2)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", exclusive=True)
    p.rpc("channel.open", ch=2)
    p.rpc("basic.qos", ch=2, prefetch_count=2)
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c2")
    p.rpc("basic.consume", ch=2, queue=q, consumer_tag="c3", exclusive=True)


@case("stream: basic.recover on a stream consumer's channel")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p)
    p.rpc("basic.qos", prefetch_count=2)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", arguments={"x-stream-offset": "first"})
    p.rpc("basic.recover", requeue=True)


@case("stream: bad x-stream-offset values")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p, 1)
    p.close()
    for value in ["foo", True, "2"]:
        p = ctx.connected(repr(value))
        p.rpc("basic.qos", prefetch_count=2)
        p.rpc("basic.consume", queue=q, consumer_tag="c1", arguments={"x-stream-offset": value})


@case("stream: bad x-max-age")
def _(ctx):
    p = ctx.connected()
    p.rpc("queue.declare", queue=ctx.queue("s"), durable=True,
          arguments={"x-queue-type": "stream", "x-max-age": "bad"})


@case("stream: declare-ok counts, get, purge, cancel, delete")
def _(ctx):
    p = ctx.connected()
    q = stream_with(ctx, p)
    p.rpc("queue.declare", queue=q, durable=True, arguments=STREAM)
    p.rpc("basic.qos", prefetch_count=5)
    p.rpc("basic.consume", queue=q, consumer_tag="c1", arguments={"x-stream-offset": "first"})
    p.rpc("basic.cancel", consumer_tag="c1")
    p.rpc("queue.delete", queue=q, if_empty=True)
    p.rpc("queue.declare", queue=q, durable=True, arguments=STREAM)
    p.rpc("basic.get", queue=q)


# ---------------------------------------------------------------- driver

def cleanup(url, items, log):
    if not items:
        return
    try:
        p = Probe(url, "cleanup", [])
        if not p.handshake(open_channel=False):
            return
        ch = 0
        for kind, name in items:
            ch += 1
            if not p.open_channel(ch):
                break
            if kind == "queue":
                p.rpc("queue.delete", ch=ch, queue=name)
            else:
                p.rpc("exchange.delete", ch=ch, exchange=name)
        p.close()
    except (OSError, Closed, RuntimeError) as e:
        log.append("   cleanup failed: %r" % e)


def main():
    args = sys.argv[1:]
    url = args[0] if args and "://" in args[0] else "amqp://guest:guest@127.0.0.1:5672/%2f"
    filters = [a for a in args if "://" not in a]
    prefix = "probe-%s" % os.urandom(4).hex()
    print("# probing %s, entity prefix %s" % (url, prefix))
    for name, fn in CASES:
        if filters and not any(f in name for f in filters):
            continue
        log = []
        ctx = Ctx(url, prefix, log)
        try:
            fn(ctx)
        except (OSError, Closed, RuntimeError) as e:
            log.append("   (case ended: %r)" % e)
        for p in ctx.probes:
            try:
                p.close()
            except (OSError, Closed):
                pass
        cleanup(url, ctx.cleanup, log)
        print("\n## %s" % name)
        for line in log:
            print(line.replace(prefix, "probe-<id>"))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
