"""The `clients` section's patterns through pika, written as pika's tutorials write
them (BlockingConnection; basic_publish per message; basic_consume with a callback
and start_consuming). One run per invocation, one result line on stdout:

    pika_client.py MODE URL QUEUE N  ->  RESULT secs=S   (RESULT p50_us=U for roundtrip)

pika's BlockingChannel waits for each confirm inside basic_publish once
confirm_delivery() is on, so the confirm pattern is one publish-and-confirm at a time:
that is how its users get confirms. The orchestrator deletes the queue afterwards.
"""

import sys
import time

import pika


def main():
    mode, url, queue, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    durable = mode in ("confirm", "seed-publish", "seed-consume")
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent) if durable else None
    body = b"x" * 16
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=durable)

    def publish_all():
        for _ in range(n):
            ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)

    def wait_all():
        while ch.queue_declare(queue=queue, durable=durable, passive=True).method.message_count < n:
            time.sleep(0.001)

    start = time.monotonic()
    if mode in ("publish", "seed-publish"):
        publish_all()
        wait_all()
    elif mode in ("consume", "seed-consume"):
        publish_all()
        wait_all()
        cch = conn.channel()
        cch.basic_qos(prefetch_count=1000 if mode == "consume" else 1)
        seen = [0]

        def callback(ch, method, properties, body):
            ch.basic_ack(delivery_tag=method.delivery_tag)
            seen[0] += 1
            if seen[0] == n:
                ch.stop_consuming()

        start = time.monotonic()
        cch.basic_consume(queue=queue, on_message_callback=callback)
        cch.start_consuming()
    elif mode == "confirm":
        ch.confirm_delivery()
        publish_all()
    elif mode == "roundtrip":
        sub = pika.BlockingConnection(pika.URLParameters(url))
        cch = sub.channel()
        stream = cch.consume(queue=queue, auto_ack=True)
        warmup = n // 10
        samples = []
        for i in range(n + warmup):
            t = time.monotonic()
            ch.basic_publish(exchange="", routing_key=queue, body=body)
            next(stream)
            if i >= warmup:
                samples.append(time.monotonic() - t)
        samples.sort()
        cch.cancel()
        sub.close()
        conn.close()
        print(f"RESULT p50_us={samples[len(samples) // 2] * 1e6:.1f}")
        return
    else:
        sys.exit(f"unknown mode {mode!r}")
    took = time.monotonic() - start
    conn.close()
    print(f"RESULT secs={took:.6f}")


main()
