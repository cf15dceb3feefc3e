"""Starting and stopping a `warren` process, and its control plane over HTTP.

Everything here goes through Warren's public faces only: the command line, the two
URL lines on stdout, and the HTTP API of docs/control-plane.md.
"""

import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref

__all__ = [
    "Broker",
    "Message",
    "Queue",
    "WarrenError",
    "BinaryNotFound",
    "StartError",
    "BrokerDied",
    "WaitTimeout",
    "ControlError",
    "find_binary",
]

# How long a broker may take to print its two URL lines. It needs milliseconds;
# the margin is for a loaded CI machine or a large data directory to recover.
DEFAULT_START_TIMEOUT = 30.0
# How long `stop` waits after SIGTERM before it kills: a graceful shutdown closes
# connections (their close timeout is 3 s) and flushes storage.
DEFAULT_STOP_TIMEOUT = 10.0
# Extra time an HTTP long poll is given beyond its own timeout before the socket
# gives up: the broker answers 408 itself when the wait runs out.
HTTP_SLACK = 5.0
# A plain call (snapshot, inject, restart …) that takes longer means the broker hangs.
HTTP_TIMEOUT = 60.0
STDERR_TAIL = 20
# The broker is local: an http_proxy in the environment must not route these calls.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WarrenError(Exception):
    """Base class of every error this package raises."""


class BinaryNotFound(WarrenError):
    """No `warren` binary was found."""


class StartError(WarrenError):
    """The broker did not become ready: it exited, or printed no URLs in time."""


class BrokerDied(WarrenError):
    """The broker process is gone (it exited or was killed) while in use."""


class WaitTimeout(WarrenError, TimeoutError):
    """A wait (`wait_until_idle`, `wait_for`) ran out; `.queue` is the last state seen."""

    def __init__(self, message, queue=None):
        super().__init__(message)
        self.queue = queue


class ControlError(WarrenError):
    """The control plane refused a call; `.status` and `.body` are its answer."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


def find_binary(binary=None):
    """The `warren` executable: the given path, else `$WARREN_BIN`, else the one
    installed with this package (the wheel's scripts directory), else the first on
    `$PATH`. A path given explicitly must be right: no silent fallback."""
    explicit = [("the binary argument", binary), ("$WARREN_BIN", os.environ.get("WARREN_BIN"))]
    for source, path in explicit:
        if path:
            path = os.fspath(path)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            raise BinaryNotFound(f"{source} names {path!r}, which is not an executable file")
    name = "warren.exe" if sys.platform == "win32" else "warren"
    # The wheel installs the binary beside the interpreter's scripts, which is not
    # always on PATH (a venv that was not activated).
    candidates = [os.path.join(d, name)
                  for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)) if d]
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BinaryNotFound(
        "no `warren` binary found: set WARREN_BIN to its path, put it on PATH, or "
        "install the wheel that ships it (pip install warren_broker-*.whl, built by "
        "`cargo xtask package`; or `cargo build --release -p warren-broker`)"
    )


def _ms(seconds):
    return max(0, int(round(seconds * 1000)))


def _body_json(body):
    """A message body in the control plane's encoding."""
    if isinstance(body, str):
        return {"body": body, "body_encoding": "string"}
    body = bytes(body)
    try:
        return {"body": body.decode("utf-8"), "body_encoding": "string"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "body_encoding": "base64"}


def _body_bytes(obj):
    if obj.get("body_encoding") == "base64":
        return base64.b64decode(obj.get("body", ""))
    return obj.get("body", "").encode("utf-8")


class Message:
    """One message in a queue as the snapshot shows it."""

    def __init__(self, raw):
        self.raw = raw
        self.body = _body_bytes(raw)
        self.properties = raw.get("properties", {})
        self.exchange = raw.get("exchange")
        self.routing_key = raw.get("routing_key")
        self.redelivered = raw.get("redelivered", False)

    @property
    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        flag = ", redelivered" if self.redelivered else ""
        return f"Message({self.body!r}{flag})"


class Queue:
    """A queue's state at one instant: counts, messages and consumers."""

    def __init__(self, raw):
        self.raw = raw
        self.name = raw["name"]
        self.vhost = raw.get("vhost", "/")
        self.durable = raw.get("durable", False)
        self.messages = raw.get("messages", 0)
        self.depth = raw.get("messages_ready", 0)
        self.unacked = raw.get("messages_unacknowledged", 0)
        self.consumers = raw.get("consumers", 0)
        self.ready_messages = [Message(m) for m in raw.get("ready", [])]
        self.unacked_messages = [Message(m) for m in raw.get("unacked", [])]

    @property
    def bodies(self):
        """The bodies of the ready messages, in queue order."""
        return [m.body for m in self.ready_messages]

    def __repr__(self):
        return (f"Queue({self.name!r}, vhost={self.vhost!r}, ready={self.depth}, "
                f"unacked={self.unacked}, consumers={self.consumers}, "
                f"bodies={self.bodies!r})")


def _options_to_args(options):
    """The broker's command line for the keyword options of `Broker.start`."""
    args = []
    host = options.pop("host", "127.0.0.1")
    port = options.pop("port", 0)
    management_port = options.pop("management_port", 0)
    # An IPv6 literal needs brackets in a socket address.
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    args += ["--bind", f"{shown}:{port}", "--management-bind", f"{shown}:{management_port}"]
    data_dir = options.pop("data_dir", None)
    if data_dir is not None:
        args += ["--data-dir", os.fspath(data_dir)]
    vhosts = options.pop("vhosts", ())
    if isinstance(vhosts, str):
        vhosts = [vhosts]
    for vhost in vhosts:
        args += ["--vhost", vhost]
    user = options.pop("user", None)
    if user is not None:
        args += ["--user", user]
    password = options.pop("password", None)
    if password is not None:
        args += ["--password", password]
    for user in options.pop("users", ()):
        # "name:password[:tags]", or a tuple (name, password[, tags]).
        if not isinstance(user, str):
            name, secret, *rest = user
            tags = rest[0] if rest else ()
            tags = tags if isinstance(tags, str) else ",".join(tags)
            user = f"{name}:{secret}" + (f":{tags}" if tags else "")
        args += ["--user-add", user]
    heartbeat = options.pop("heartbeat", None)
    if heartbeat is not None:
        args += ["--heartbeat", str(int(heartbeat))]
    if options.pop("virtual_clock", False):
        args.append("--virtual-clock")
    consumer_timeout = options.pop("consumer_timeout", None)
    if consumer_timeout is not None:
        # Seconds, as every duration in this API; 0 disables the timeout.
        args += ["--consumer-timeout", str(_ms(consumer_timeout))]
    watermark = options.pop("memory_high_watermark", None)
    if watermark is not None:
        args += ["--memory-high-watermark", str(int(watermark))]
    version = options.pop("rabbitmq_version", None)
    if version is not None:
        args += ["--rabbitmq-version", str(version)]
    args += [str(a) for a in options.pop("extra_args", ())]
    if options:
        raise TypeError(f"Broker.start() got unknown options: {', '.join(sorted(options))}")
    return args


def _read_lines(stream, lines):
    """Reader thread: hands each stdout line to `lines`; None at end of file."""
    for line in iter(stream.readline, b""):
        lines.put(line.decode("utf-8", "replace").rstrip("\r\n"))
    lines.put(None)


def _terminate(process, timeout):
    """SIGTERM, then SIGKILL if the process is still there after `timeout` seconds."""
    if process.poll() is not None:
        return process.returncode
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class Broker:
    """A running `warren` process.

    Start one with `Broker.start(**options)`; it is also a context manager that stops
    the broker on exit. The options mirror the command line: `data_dir`, `vhosts`,
    `user`, `password` (the default user), `users` (more users, each
    "name:password[:tags]" or a tuple; they get permissions only through
    `extra_args=["--permissions", …]`), `heartbeat` (seconds), `virtual_clock`, `consumer_timeout`
    (seconds; 0 disables), `memory_high_watermark` (bytes), `rabbitmq_version`
    ("3.10", "4.0" …), `host`, `port` and `management_port` (0: a free port, the
    default), `binary` (the executable), `start_timeout`, `extra_args`.
    """

    def __init__(self, process, url, management_url, user, password, log, args):
        self._process = process
        self.url = url
        self.management_url = management_url
        self.user = user
        self.password = password
        self.args = args
        self._log = log
        token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        self._auth = f"Basic {token}"
        # A broker the test forgot to stop must not outlive the interpreter.
        self._finalizer = weakref.finalize(self, _terminate, process, 1.0)

    # ---- life cycle -------------------------------------------------------------

    @classmethod
    def start(cls, **options):
        binary = options.pop("binary", None)
        start_timeout = options.pop("start_timeout", DEFAULT_START_TIMEOUT)
        user = options.get("user") or "guest"
        password = options.get("password") or "guest"
        flags = _options_to_args(dict(options))
        binary = find_binary(binary)
        args = [binary] + flags
        # Logs go to a file, not a pipe: nobody has to drain it, and its tail explains
        # a failure.
        log = tempfile.TemporaryFile(prefix="warren-", suffix=".log")
        try:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                close_fds=True,
            )
        except OSError as e:
            log.close()
            raise StartError(f"cannot run {binary!r}: {e}") from e
        lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stdout, lines),
                         name="warren-stdout", daemon=True).start()
        deadline = time.monotonic() + start_timeout
        got = []
        while len(got) < 2:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                _terminate(process, 1.0)
                tail = _tail(log)
                log.close()
                raise StartError(
                    f"warren printed {len(got)} of its 2 URL lines within {start_timeout} s "
                    f"(command: {' '.join(args)}){tail}") from None
            if line is None:
                code = process.wait()
                tail = _tail(log)
                log.close()
                hint = ""
                if len(got) == 1:
                    hint = " (it printed no management URL: is this binary older than --management-bind?)"
                raise StartError(
                    f"warren exited with status {code} before it was ready{hint} "
                    f"(command: {' '.join(args)}){tail}")
            got.append(line)
        return cls(process, got[0], got[1], user, password, log, args)

    def stop(self, timeout=DEFAULT_STOP_TIMEOUT):
        """SIGTERM (every connection gets 320 CONNECTION_FORCED), then SIGKILL if it
        has not exited within `timeout` seconds. Returns the exit status."""
        self._finalizer.detach()
        code = _terminate(self._process, timeout)
        if self._process.stdout:
            self._process.stdout.close()
        if not self._log.closed:
            self._log.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self):
        return self._process.pid

    @property
    def running(self):
        return self._process.poll() is None

    def log(self):
        """Everything the broker wrote to stderr so far."""
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __repr__(self):
        state = "running" if self.running else f"exited {self._process.returncode}"
        return f"Broker({self.url!r}, management={self.management_url!r}, pid={self.pid}, {state})"

    # ---- HTTP -------------------------------------------------------------------

    def _call(self, method, path, body=None, timeout=HTTP_TIMEOUT, ok=(200, 201, 204)):
        """One control-plane call: the decoded JSON answer (None for 204)."""
        if not self.running:
            raise self._died(f"{method} {path}")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.management_url + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            # Refused or reset: most likely the process just died. Say so rather
            # than showing a socket error.
            try:
                self._process.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            if not self.running:
                raise self._died(f"{method} {path}") from e
            raise ControlError(f"{method} {path}: no answer from {self.management_url}: {e}") from e
        answer = json.loads(raw) if raw else None
        if status in ok:
            return answer
        if status == 408:
            raise WaitTimeout(
                f"{method} {path}: {answer.get('reason', 'timed out') if answer else 'timed out'}",
                queue=Queue(answer["queue"]) if answer and answer.get("queue") else None)
        reason = answer.get("reason") if isinstance(answer, dict) else raw.decode("utf-8", "replace")
        raise ControlError(f"{method} {path}: {status} {reason}", status=status, body=answer)

    def _died(self, doing):
        code = self._process.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        return BrokerDied(f"the warren broker (pid {self.pid}, {self.url}) {how}; "
                          f"cannot {doing}{_tail(self._log)}")

    # ---- inspection ---------------------------------------------------------------

    def snapshot(self, vhost=None):
        """The whole state: queues (with messages), exchanges, bindings, connections,
        faults and the clock, as a dict (docs/control-plane.md)."""
        query = "" if vhost is None else "?vhost=" + urllib.parse.quote(vhost, safe="")
        return self._call("GET", "/api/warren/snapshot" + query)

    def queues(self, vhost=None):
        return [Queue(q) for q in self.snapshot(vhost)["queues"]]

    def queue(self, name, vhost="/"):
        """One queue's state; None when there is no such queue."""
        try:
            return Queue(self._call("GET", f"/api/warren/queues/{_q(vhost)}/{_q(name)}"))
        except ControlError as e:
            if e.status == 404:
                return None
            raise

    def connections(self, vhost=None):
        return self.snapshot(vhost)["connections"]

    # ---- waits --------------------------------------------------------------------

    def wait_until_idle(self, timeout=5.0):
        """Returns once nothing is in flight: every delivery that can be made was made
        and acknowledged or is waiting on its consumer. Raises WaitTimeout."""
        self._call("POST", "/api/warren/wait/idle", {"timeout_ms": _ms(timeout)},
                   timeout=timeout + HTTP_SLACK)

    def wait_for(self, queue, vhost="/", timeout=5.0, messages=None, empty=None,
                 no_unacked=None, consumers=None):
        """Waits until the queue meets every condition given (`messages` counts
        ready and unacked ones) and returns its state. Raises WaitTimeout."""
        body = {"timeout_ms": _ms(timeout)}
        for key, value in (("messages", messages), ("empty", empty),
                           ("no_unacked", no_unacked), ("consumers", consumers)):
            if value is not None:
                body[key] = value
        return Queue(self._call("POST", f"/api/warren/wait/queue/{_q(vhost)}/{_q(queue)}",
                                body, timeout=timeout + HTTP_SLACK))

    # ---- faults -------------------------------------------------------------------

    def inject(self, fault):
        """Adds a fault rule (see `Fault`); returns its id."""
        return self._call("POST", "/api/warren/faults", fault.to_json())["id"]

    def faults(self):
        return self._call("GET", "/api/warren/faults")

    def remove_fault(self, fault_id):
        self._call("DELETE", f"/api/warren/faults/{int(fault_id)}")

    def clear_faults(self):
        self._call("DELETE", "/api/warren/faults")

    def close_connection(self, connection, code=320, text="closed by the test"):
        self._call("POST", f"/api/warren/connections/{int(connection)}/close",
                   {"code": code, "text": text})

    def close_channel(self, connection, channel, code=406, text="closed by the test"):
        self._call("POST", f"/api/warren/connections/{int(connection)}/channels/{int(channel)}/close",
                   {"code": code, "text": text})

    def drop_connection(self, connection):
        """The socket just dies: no close frame."""
        self._call("POST", f"/api/warren/connections/{int(connection)}/drop")

    def cut_connection(self, connection):
        """The socket dies in the middle of a frame."""
        self._call("POST", f"/api/warren/connections/{int(connection)}/cut")

    def cancel_consumer(self, queue, consumer_tag, vhost="/"):
        self._call("POST", "/api/warren/consumers/cancel",
                   {"vhost": vhost, "queue": queue, "consumer_tag": consumer_tag})

    def memory_alarm(self, on=True):
        self._call("POST", "/api/warren/memory-alarm", {"on": bool(on)})

    # ---- clock, restart, crash, storage -------------------------------------------

    def clock(self):
        return self._call("GET", "/api/warren/clock")

    def advance(self, seconds):
        """Moves the virtual clock (start with virtual_clock=True): TTLs, queue expiry
        and consumer timeouts, at once. Heartbeats stay on real time."""
        return self._call("POST", "/api/warren/clock/advance", {"ms": _ms(seconds)})

    def restart(self):
        """As RabbitMQ restarts: every connection gets 320, durable queues and
        persistent messages stay. Returns once the broker serves again."""
        self._call("POST", "/api/warren/restart")

    def crash(self):
        """A power cut: sockets die without a close; with a data_dir, what was not
        fsynced is lost. Returns once the broker serves again."""
        self._call("POST", "/api/warren/crash")

    def stall_storage(self, on=True):
        self._call("POST", "/api/warren/storage/stall", {"on": bool(on)})

    # ---- seeding and tracing --------------------------------------------------------

    def seed(self, queue, body, vhost="/", properties=None):
        """Puts a message into an existing queue, as if it had been published."""
        request = {"vhost": vhost, "queue": queue}
        request.update(_body_json(body))
        if properties:
            request["properties"] = properties
        self._call("POST", "/api/warren/seed", request)

    def trace(self, on=True):
        """Starts (or stops) recording every frame, both ways."""
        self._call("POST", "/api/warren/trace", {"on": bool(on)})

    def trace_entries(self, connection=None):
        query = "" if connection is None else f"?connection={int(connection)}"
        return self._call("GET", "/api/warren/trace" + query)

    def trace_text(self):
        return self._raw_get("/api/warren/trace?format=text")

    def trace_html(self, path):
        """Writes the trace as one self-contained HTML file (the sequence diagram of
        every frame and the broker's state now) that opens in a browser with no
        server and no network: an artifact for a failing test. Returns the path."""
        html = self._raw_get("/api/warren/trace.html", raw=True)
        with open(path, "wb") as f:
            f.write(html)
        return path

    def trace_mermaid(self):
        """The trace as a Mermaid sequence diagram (text), for a failure message."""
        return self._raw_get("/api/warren/trace.mmd")

    def _raw_get(self, path, raw=False):
        request = urllib.request.Request(self.management_url + path)
        request.add_header("Authorization", self._auth)
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
                body = response.read()
                return body if raw else body.decode("utf-8")
        except (urllib.error.URLError, OSError) as e:
            if not self.running:
                raise self._died(f"GET {path}") from e
            raise ControlError(f"GET {path}: {e}") from e

    # ---- virtual hosts (RabbitMQ's management API) ----------------------------------

    def add_vhost(self, name):
        self._call("PUT", f"/api/vhosts/{_q(name)}")

    def delete_vhost(self, name):
        self._call("DELETE", f"/api/vhosts/{_q(name)}")

    def url_for(self, vhost):
        """The AMQP URL of this broker for another virtual host."""
        base = self.url.rsplit("/", 1)[0]
        return f"{base}/{_q(vhost)}"


def _q(segment):
    return urllib.parse.quote(segment, safe="")


def _tail(log):
    """The last lines the broker logged, for an error message."""
    if log.closed:
        return ""
    try:
        log.flush()
        log.seek(0)
        lines = log.read().decode("utf-8", "replace").splitlines()[-STDERR_TAIL:]
    except (OSError, ValueError):
        return ""
    if not lines:
        return "; it logged nothing"
    return "; its last log lines:\n    " + "\n    ".join(lines)
