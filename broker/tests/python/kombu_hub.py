"""kombu with py-amqp, consuming the way Celery's workers do: on kombu's event loop.

A Consumer with prefetch_count=1 on a connection registered with a Hub; two
messages wait in the queue; the callback acks each message 0.1 s later from a
timer thread through hub.call_soon. Both must be delivered and acked, and the
queue delete that follows (its consumer still there) must succeed. Issue 18,
item 3: against Warren, the delete met a basic.cancel sent before its
delete-ok, which py-amqp took for the broker cancelling its consumer.

    python3 kombu_hub.py URL [RUNS]

Prints one line per run and exits 1 if any run failed.
"""

import os
import sys
import threading
import time

from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub, set_event_loop

# Far above the 0.2 s the two delayed acks take: a stall, not a slow machine,
# is what fails a run.
DEADLINE = 5.0


def run(url, n):
    qname = "warren-kombu-hub-%d-%d" % (os.getpid(), n)
    hub = Hub()
    set_event_loop(hub)
    conn = Connection(url, transport="pyamqp")
    conn.ensure_connection()
    ch = conn.channel()
    queue = Queue(qname, channel=ch, durable=False, auto_delete=False)
    queue.declare()
    try:
        producer = Producer(conn.channel())
        for i in range(2):
            producer.publish("task-%d" % i, routing_key=qname)
        acked = []

        def on_message(body, message):
            def later():
                time.sleep(0.1)
                hub.call_soon(lambda: (message.ack(), acked.append(body)))

            threading.Thread(target=later, daemon=True).start()

        consumer = Consumer(ch, queues=[queue], callbacks=[on_message], prefetch_count=1)
        conn.register_with_event_loop(hub)
        consumer.consume()
        start = time.monotonic()
        while len(acked) < 2 and time.monotonic() < start + DEADLINE:
            hub.run_once()
        if acked != ["task-0", "task-1"]:
            return "acked %r within %.0f s, expected both tasks in order" % (acked, DEADLINE)
        # Deleting the queue under its own consumer: delete-ok must come before
        # the basic.cancel that tells the channel its consumer is gone.
        queue.delete()
        return None
    except Exception as e:  # the failure is the report
        try:
            Queue(qname, channel=conn.channel()).delete()
        except Exception:
            pass
        return "%s: %s" % (type(e).__name__, e)
    finally:
        hub.close()
        conn.release()


def main():
    url = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    failed = 0
    for n in range(runs):
        err = run(url, n)
        print("run %d: %s" % (n + 1, err or "both acked, queue deleted"), flush=True)
        failed += err is not None
    print("%d of %d runs passed" % (runs - failed, runs))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
