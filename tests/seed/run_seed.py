#!/usr/bin/env python3
"""Run the seed tutorial's pika examples against a broker and check what they print.

    python3 tests/seed/run_seed.py amqp://guest:guest@127.0.0.1:5672/%2f

The six example files beside this script are verbatim copies of the code blocks of
the seed document (shared/seed/000_bbd0b1e4cdb3ff2d.txt). For each run they are
copied to a temporary directory with exactly one change: the connection target
`pika.ConnectionParameters('localhost')` now points at the URL's host and port
(credentials and vhost are added only when the URL does not use pika's defaults).
The copies then run as separate processes, paired the way the tutorial means them
to be used, and their output is checked:

  hello world        the receiver prints Received b'Hello World!' (receiver first,
                     and also sender first so the message waits in the queue)
  work queues        two workers share persistent tasks, each task processed exactly
                     once; the unacked tasks of a killed worker go to the other one
  publish/subscribe  two subscribers both receive the log line; a line emitted
                     while nobody is subscribed reaches no one

Everything depends on the URL only, so the same script checks RabbitMQ and Warren.

With --refuses-transient-queues (a RabbitMQ 4.3, or `warren --rabbitmq-version
4.3`) the hello world scenarios are replaced by one that expects hello_send.py's
queue_declare(queue='hello') to be refused: RabbitMQ 4.3 denies queues that are
neither durable nor exclusive by default (deprecated feature
transient_nonexcl_queues), closing the connection with 541 INTERNAL_ERROR.
Every wait is bounded. The queues and the exchange the examples use (hello,
task_queue, logs) are deleted before and after, since the broker may be shared.
Exit status 0 only if every scenario passed; the last line is `N passed, N failed`.
"""

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = ["hello_send.py", "hello_receive.py", "worker_task_new.py", "worker.py",
            "emit_log.py", "receive_logs.py"]
TARGET = "pika.ConnectionParameters('localhost')"
WAITING = " [*] Waiting for messages. To exit press CTRL+C"

START_TIMEOUT = 20.0     # a consumer must be consuming within this
DELIVERY_TIMEOUT = 15.0  # a published message must show up within this
RUN_TIMEOUT = 30.0       # a producer must finish within this
QUIET_PERIOD = 1.0       # how long to watch for deliveries that must not happen


class Failure(Exception):
    pass


def parse_url(url):
    u = urllib.parse.urlparse(url)
    if u.scheme != "amqp":
        raise SystemExit("run_seed.py: expected an amqp:// URL, got %r" % url)
    path = u.path[1:] if u.path.startswith("/") else u.path
    return {
        "host": u.hostname or "localhost",
        "port": u.port or 5672,
        "user": urllib.parse.unquote(u.username or "guest"),
        "password": urllib.parse.unquote(u.password or "guest"),
        "vhost": urllib.parse.unquote(path) if path else "/",
    }


def connection_parameters_source(target):
    """The expression that replaces pika.ConnectionParameters('localhost')."""
    args = ["host=%r" % target["host"], "port=%d" % target["port"]]
    if target["vhost"] != "/":
        args.append("virtual_host=%r" % target["vhost"])
    if (target["user"], target["password"]) != ("guest", "guest"):
        args.append("credentials=pika.PlainCredentials(%r, %r)" % (target["user"], target["password"]))
    return "pika.ConnectionParameters(%s)" % ", ".join(args)


def prepare_examples(target, workdir):
    replacement = connection_parameters_source(target)
    for name in EXAMPLES:
        with open(os.path.join(HERE, name)) as f:
            source = f.read()
        if source.count(TARGET) != 1:
            raise SystemExit("run_seed.py: %s must contain %s exactly once" % (name, TARGET))
        with open(os.path.join(workdir, name), "w") as f:
            f.write(source.replace(TARGET, replacement))


def pika_params(target):
    import pika
    return pika.ConnectionParameters(host=target["host"], port=target["port"], virtual_host=target["vhost"],
                                     credentials=pika.PlainCredentials(target["user"], target["password"]),
                                     connection_attempts=1, socket_timeout=10, blocked_connection_timeout=10)


def delete_tutorial_entities(target):
    """Remove what the examples declare, so that leftovers of an earlier run (say,
    unacked tasks requeued into task_queue) cannot leak into this one, and so that
    a shared broker is left as it was found."""
    import pika
    conn = pika.BlockingConnection(pika_params(target))
    try:
        for kind, name in (("queue", "hello"), ("queue", "task_queue"), ("exchange", "logs")):
            ch = conn.channel()
            try:
                if kind == "queue":
                    ch.queue_delete(queue=name)
                else:
                    ch.exchange_delete(exchange=name)
                ch.close()
            except pika.exceptions.ChannelClosedByBroker as e:
                # RabbitMQ 3.10 answers delete-ok for a missing entity, other
                # brokers 404; either way it is gone, which is all we need.
                if e.reply_code != 404:
                    raise
    finally:
        conn.close()


class Proc:
    """One example running as a subprocess; its output lines are collected by a
    thread so that waits can be bounded."""

    def __init__(self, workdir, script, *args):
        self.label = " ".join((script,) + args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([sys.executable, "-u", script] + list(args), cwd=workdir, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, bufsize=1)
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def wait_until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if predicate(self.lines):
                    return
                left = deadline - time.monotonic()
                if self.eof and not predicate(self.lines):
                    try:
                        status = self.p.wait(2)
                    except subprocess.TimeoutExpired:
                        status = "unknown: still running with stdout closed"
                    raise Failure("%s exited (status %s) before it printed %s" % (self.label, status, what))
                if left <= 0:
                    raise Failure("%s did not print %s within %gs" % (self.label, what, timeout))
                self.cond.wait(min(left, 0.2))

    def wait_line(self, text, timeout):
        self.wait_until(lambda lines: text in lines, timeout, repr(text))

    def finish(self, timeout):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure("%s did not exit within %gs" % (self.label, timeout))
        with self.cond:
            deadline = time.monotonic() + 2
            while not self.eof and time.monotonic() < deadline:
                self.cond.wait(0.1)
        if self.p.returncode != 0:
            raise Failure("%s exited with status %d" % (self.label, self.p.returncode))

    def stop(self):
        """Stop a consumer the way its own banner says: CTRL+C."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass


def received(body):
    # The examples print the bytes repr of the body.
    return " [x] Received %r" % body


class Scenario:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, script, *args):
        proc = Proc(self.workdir, script, *args)
        self.procs.append(proc)
        return proc

    def consumer(self, script):
        proc = self.start(script)
        proc.wait_line(WAITING, START_TIMEOUT)
        return proc

    def run(self, script, *args, expect=None):
        proc = self.start(script, *args)
        proc.finish(RUN_TIMEOUT)
        if expect is not None and expect not in proc.snapshot():
            raise Failure("%s printed %r, expected the line %r" % (proc.label, proc.snapshot(), expect))
        return proc

    def cleanup(self):
        for proc in self.procs:
            proc.stop()

    def transcript(self):
        out = []
        for proc in self.procs:
            out.append("  --- %s (exit %s)" % (proc.label, proc.p.poll()))
            out.extend("  | " + line for line in proc.snapshot()[-40:])
        return "\n".join(out)


# ---------------------------------------------------------------- scenarios

def hello_world_receiver_first(s):
    receiver = s.consumer("hello_receive.py")
    s.run("hello_send.py", expect=" [x] Sent 'Hello World!'")
    receiver.wait_line(received(b"Hello World!"), DELIVERY_TIMEOUT)
    time.sleep(QUIET_PERIOD)
    got = [l for l in receiver.snapshot() if l.startswith(" [x] Received")]
    if got != [received(b"Hello World!")]:
        raise Failure("receiver printed %r, expected exactly one Hello World!" % got)


def hello_world_sender_first(s):
    s.run("hello_send.py", expect=" [x] Sent 'Hello World!'")
    receiver = s.consumer("hello_receive.py")
    receiver.wait_line(received(b"Hello World!"), DELIVERY_TIMEOUT)


def hello_world_refused(s):
    """RabbitMQ 4.3: the first queue_declare of the tutorial closes the connection."""
    proc = s.start("hello_send.py")
    try:
        proc.finish(RUN_TIMEOUT)
    except Failure:
        pass
    out = "\n".join(proc.snapshot())
    if proc.p.returncode in (0, None):
        raise Failure("hello_send.py exited with %s, expected the declare to be refused" % proc.p.returncode)
    for expected in ("541", "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated."):
        if expected not in out:
            raise Failure("hello_send.py's error does not say %r:\n%s" % (expected, out))


def task_lines(lines, prefix):
    out = []
    for line in lines:
        m = re.fullmatch(r" \[x\] Received b'(%s[^']*)'" % re.escape(prefix), line)
        if m:
            out.append(m.group(1))
    return out


def work_queues(s):
    workers = [s.consumer("worker.py"), s.consumer("worker.py")]
    tasks = ["task-%d" % i for i in range(1, 7)]
    for task in tasks:
        s.run("worker_task_new.py", task, expect=" [x] Sent %s" % task)

    def all_done(_lines):
        seen = [t for w in workers for t in task_lines(w.snapshot(), "task-")]
        return len(seen) >= len(tasks)

    workers[0].wait_until(all_done, DELIVERY_TIMEOUT, "(together with the other worker) all %d tasks" % len(tasks))
    time.sleep(QUIET_PERIOD)
    per_worker = [task_lines(w.snapshot(), "task-") for w in workers]
    seen = per_worker[0] + per_worker[1]
    if sorted(seen) != sorted(tasks):
        raise Failure("tasks were not each processed exactly once: worker 1 got %r, worker 2 got %r"
                      % tuple(per_worker))
    if not per_worker[0] or not per_worker[1]:
        raise Failure("the two workers did not share the tasks: worker 1 got %r, worker 2 got %r"
                      % tuple(per_worker))
    for w in workers:
        done = w.snapshot().count(" [x] Done")
        if done != len(task_lines(w.snapshot(), "task-")):
            raise Failure("%s printed %d Done lines for %d tasks" % (w.label, done,
                                                                   len(task_lines(w.snapshot(), "task-"))))

    # A slow task (one second per dot) is killed mid-work. The tutorial's worker never
    # acks, so everything that worker ever received must go to the surviving one.
    slow = "slow-task ........"
    s.run("worker_task_new.py", slow, expect=" [x] Sent %s" % slow)

    def someone_got_slow(_lines):
        return any(received(slow.encode()) in w.snapshot() for w in workers)

    workers[0].wait_until(someone_got_slow, DELIVERY_TIMEOUT, "(either worker) the slow task")
    victim = 0 if received(slow.encode()) in workers[0].snapshot() else 1
    survivor = workers[1 - victim]
    victim_tasks = task_lines(workers[victim].snapshot(), "task-")
    before = len(survivor.snapshot())
    workers[victim].kill()
    survivor.wait_until(lambda lines: received(slow.encode()) in lines[before:], DELIVERY_TIMEOUT,
                        "the slow task after the other worker was killed")
    time.sleep(QUIET_PERIOD)
    redelivered = task_lines(survivor.snapshot()[before:], "task-")
    if sorted(redelivered) != sorted(victim_tasks):
        raise Failure("after the kill the survivor got %r again; the killed worker had left %r unacked"
                      % (redelivered, victim_tasks))


def publish_subscribe(s):
    subscribers = [s.consumer("receive_logs.py"), s.consumer("receive_logs.py")]
    s.run("emit_log.py", expect=" [x] Sent info: Hello World!")
    for sub in subscribers:
        sub.wait_line(received(b"info: Hello World!"), DELIVERY_TIMEOUT)
    time.sleep(QUIET_PERIOD)
    for sub in subscribers:
        n = sub.snapshot().count(received(b"info: Hello World!"))
        if n != 1:
            raise Failure("%s received the log line %d times" % (sub.label, n))


def publish_before_subscribe(s):
    # A fanout exchange keeps nothing: a line emitted while no queue is bound is gone.
    s.run("emit_log.py", expect=" [x] Sent info: Hello World!")
    sub = s.consumer("receive_logs.py")
    time.sleep(QUIET_PERIOD)
    got = [l for l in sub.snapshot() if l.startswith(" [x] Received")]
    if got:
        raise Failure("a subscriber that started after the publish received %r" % got)


SCENARIOS = [
    ("hello world: receiver started first", hello_world_receiver_first),
    ("hello world: sender first, message waits in the queue", hello_world_sender_first),
    ("work queues: two workers, each task once, redelivery after a worker is killed", work_queues),
    ("publish/subscribe: two subscribers both receive the log line", publish_subscribe),
    ("publish/subscribe: a line emitted before anyone subscribed is not received", publish_before_subscribe),
]


def wait_for_broker(target, timeout=15.0):
    """None when the broker's port accepts connections, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((target["host"], target["port"]), timeout=2).close()
            return None
        except OSError as e:
            if time.monotonic() > deadline:
                return "cannot reach %s:%d: %s" % (target["host"], target["port"], e)
            time.sleep(0.2)


REFUSED_SCENARIOS = [
    ("hello world: queue_declare(queue='hello') is refused (transient_nonexcl_queues)", hello_world_refused),
] + [sc for sc in SCENARIOS if not sc[0].startswith("hello world")]


def main():
    global SCENARIOS
    args = sys.argv[1:]
    if "--refuses-transient-queues" in args:
        args.remove("--refuses-transient-queues")
        SCENARIOS = REFUSED_SCENARIOS
    if len(args) != 1:
        raise SystemExit("usage: run_seed.py amqp://USER:PASSWORD@HOST:PORT/VHOST [--refuses-transient-queues]")
    target = parse_url(args[0])
    try:
        import pika  # noqa: F401  (the examples need it too; fail early and clearly)
    except ImportError:
        raise SystemExit("run_seed.py: the Python package pika is not installed (pip install pika)")
    unreachable = wait_for_broker(target)
    if unreachable:
        print("FAIL all scenarios: %s" % unreachable)
        print("0 passed, %d failed" % len(SCENARIOS))
        sys.exit(1)
    workdir = tempfile.mkdtemp(prefix="warren-seed-")
    prepare_examples(target, workdir)
    passed = failed = 0
    try:
        for name, fn in SCENARIOS:
            s = Scenario(workdir)
            t0 = time.monotonic()
            try:
                delete_tutorial_entities(target)
                fn(s)
            except Failure as e:
                failed += 1
                s.cleanup()
                print("FAIL %s: %s\n%s" % (name, e, s.transcript()), flush=True)
                continue
            except Exception:
                failed += 1
                s.cleanup()
                print("FAIL %s: harness error\n%s%s" % (name, traceback.format_exc(), s.transcript()), flush=True)
                continue
            s.cleanup()
            passed += 1
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    finally:
        try:
            delete_tutorial_entities(target)
        except Exception as e:
            print("warning: could not delete hello/task_queue/logs: %r" % e, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
