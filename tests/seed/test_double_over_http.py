#!/usr/bin/env python3
"""Warren as a test double for a pika application, driven over HTTP only.

The tutorial's worker pattern (durable queue, persistent messages, manual
acks), tested the way a Python test suite would: the `warren` binary runs with
a management listener and a virtual clock, and the test reads and steers the
broker through /api/warren/ (docs/control-plane.md) with nothing but urllib:

  1. read a queue's depth and message bodies;
  2. wait until the worker acked everything;
  3. make the third publish fail (its confirm is nacked);
  4. advance the clock past a message TTL;
  5. crash the broker and see the durable queue survive.

Run: python3 tests/seed/test_double_over_http.py path/to/warren
Prints one "ok: ..." line per step and exits non-zero on the first failure.
"""

import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import pika


class Warren:
    """The `warren` binary on free ports, with its two stdout lines read."""

    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1:0", "--management-bind", "127.0.0.1:0",
             "--virtual-clock"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.amqp_url = self.proc.stdout.readline().strip()
        self.http_url = self.proc.stdout.readline().strip()
        self.auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def call(self, method, path, body=None):
        """One HTTP call; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method,
                                     headers={"Authorization": self.auth,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text else None

    def queue(self, name):
        return self.call("GET", "/api/warren/queues/%2F/" + urllib.parse.quote(name, safe=""))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def main(binary):
    w = Warren(binary)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(w.amqp_url))
        ch = conn.channel()
        ch.queue_declare(queue="task_queue", durable=True)
        persistent = pika.BasicProperties(delivery_mode=pika.spec.PERSISTENT_DELIVERY_MODE)
        for body in ["resize 1.png", "resize 2.png", "resize 3.png"]:
            ch.basic_publish(exchange="", routing_key="task_queue", body=body,
                             properties=persistent)

        # 1. The queue's depth and bodies, over HTTP. Publishes are asynchronous:
        # wait until the broker has them rather than sleep.
        status, q = w.call("POST", "/api/warren/wait/queue/%2F/task_queue",
                           {"messages": 3, "timeout_ms": 10000})
        check(status == 200 and q["messages"] == 3, "the queue holds 3 messages")
        check([m["body"] for m in q["ready"]] == ["resize 1.png", "resize 2.png", "resize 3.png"],
              "their bodies are there, in order")
        check(q["ready"][0]["properties"]["delivery_mode"] == 2, "they are persistent")

        # 2. A worker (the tutorial's, on its own connection) acks them all.
        def worker():
            wc = pika.BlockingConnection(pika.URLParameters(w.amqp_url))
            wch = wc.channel()
            wch.basic_qos(prefetch_count=1)
            done = []

            def callback(ch, method, properties, body):
                ch.basic_ack(delivery_tag=method.delivery_tag)
                done.append(body)
                if len(done) == 3:
                    ch.stop_consuming()

            wch.basic_consume(queue="task_queue", on_message_callback=callback)
            wch.start_consuming()
            wc.close()

        t = threading.Thread(target=worker)
        t.start()
        status, q = w.call("POST", "/api/warren/wait/queue/%2F/task_queue",
                           {"empty": True, "no_unacked": True, "timeout_ms": 10000})
        t.join()
        check(status == 200 and q["messages"] == 0, "the worker acked everything")

        # 3. The third publish to the queue fails: its confirm is a nack.
        status, rule = w.call("POST", "/api/warren/faults",
                              {"on": "publish_routed_to", "queue": "task_queue", "nth": 3,
                               "action": {"type": "nack_confirm"}})
        check(status == 201, "a fault rule is armed")
        ch.confirm_delivery()
        outcomes = []
        for i in range(4):
            try:
                ch.basic_publish(exchange="", routing_key="task_queue", body=f"order {i}",
                                 properties=persistent)
                outcomes.append("ack")
            except pika.exceptions.NackError:
                outcomes.append("nack")
        check(outcomes == ["ack", "ack", "nack", "ack"], "only the third publish was nacked")
        _, rules = w.call("GET", "/api/warren/faults")
        check(rules[0]["fired"] == 1, "the rule fired once")
        w.call("DELETE", "/api/warren/faults")

        # 4. A 30-minute TTL crossed on the virtual clock, in no time.
        ch.queue_declare(queue="expiring", arguments={"x-message-ttl": 30 * 60 * 1000})
        ch.basic_publish(exchange="", routing_key="expiring", body="stale soon")
        status, _ = w.call("POST", "/api/warren/wait/queue/%2F/expiring",
                           {"messages": 1, "timeout_ms": 10000})
        check(status == 200, "the message is queued")
        status, clock = w.call("POST", "/api/warren/clock/advance", {"ms": 30 * 60 * 1000 + 1})
        check(status == 200 and clock["now_ms"] == 30 * 60 * 1000 + 1, "the clock moved 30 minutes")
        status, q = w.call("POST", "/api/warren/wait/queue/%2F/expiring",
                           {"empty": True, "timeout_ms": 10000})
        check(status == 200, "the message expired")

        # 5. A crash: the connection dies, the durable queue and its persistent
        # messages stay, the transient queue goes.
        status, _ = w.call("POST", "/api/warren/crash")
        check(status == 204, "the broker crashed and came back")
        try:
            ch.basic_publish(exchange="", routing_key="task_queue", body="after")
            conn.process_data_events(time_limit=1)
            lost = False
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed,
                pika.exceptions.StreamLostError):
            lost = True
        check(lost, "the client's connection was lost")
        status, q = w.queue("task_queue")
        # Four: a nacked confirm does not unpublish its message (RabbitMQ nacks
        # what it could not take care of; Warren's fault keeps it queued).
        check(status == 200 and [m["body"] for m in q["ready"]] == [f"order {i}" for i in range(4)],
              "the durable queue kept its persistent messages")
        status, _ = w.queue("expiring")
        check(status == 404, "the transient queue is gone")
    finally:
        w.stop()


if __name__ == "__main__":
    main(sys.argv[1])
