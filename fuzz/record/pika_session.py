#!/usr/bin/env python3
"""A pika session that walks the paths the seed tutorial uses and a few around
them: queues, exchanges, publish, get, consume, ack/nack/reject, confirms,
transactions, channel errors. Run through record_traffic.py."""
import sys

import pika

params = pika.URLParameters(sys.argv[1])
conn = pika.BlockingConnection(params)
ch = conn.channel()

# hello world
ch.queue_declare(queue="hello")
ch.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")
method, props, body = ch.basic_get(queue="hello", auto_ack=True)

# work queues: durable queue, persistent messages, prefetch 1, manual acks
ch.queue_declare(queue="task_queue", durable=True)
for i in range(3):
    ch.basic_publish(
        exchange="",
        routing_key="task_queue",
        body=("task %d" % i).encode(),
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )
ch.basic_qos(prefetch_count=1)
seen = 0
for method, props, body in ch.consume("task_queue", inactivity_timeout=1):
    if method is None:
        break
    seen += 1
    if seen == 1:
        ch.basic_nack(method.delivery_tag, requeue=True)
    elif seen == 2:
        ch.basic_reject(method.delivery_tag, requeue=False)
    else:
        ch.basic_ack(method.delivery_tag)
    if seen == 4:
        break
ch.cancel()

# routing and topics with headers and properties
ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
ch.queue_declare(queue="kern", arguments={"x-max-length": 10, "x-queue-type": "classic"})
ch.queue_bind(exchange="topic_logs", queue="kern", routing_key="kern.*")
ch.basic_publish(
    exchange="topic_logs",
    routing_key="kern.critical",
    body=b"A critical kernel error",
    properties=pika.BasicProperties(
        content_type="text/plain",
        headers={"n": 1, "d": __import__("decimal").Decimal("1.5"), "b": b"raw", "l": [1, "two"], "t": {"nested": True}},
        correlation_id="c1",
        reply_to="amq.rabbitmq.reply-to",
        message_id="m1",
        app_id="recorder",
    ),
)
ch.queue_purge("kern")
ch.queue_unbind(exchange="topic_logs", queue="kern", routing_key="kern.*")
ch.queue_delete("kern")
ch.exchange_delete("topic_logs")

# confirms and mandatory returns
ch.confirm_delivery()
ch.basic_publish(exchange="", routing_key="hello", body=b"confirmed")
try:
    ch.basic_publish(exchange="amq.direct", routing_key="nowhere", body=b"x", mandatory=True)
except pika.exceptions.UnroutableError:
    pass

# transactions
tx = conn.channel()
tx.tx_select()
tx.basic_publish(exchange="", routing_key="hello", body=b"in tx")
tx.tx_commit()
tx.basic_publish(exchange="", routing_key="hello", body=b"rolled back")
tx.tx_rollback()
tx.close()

# a channel error: 404 on a missing queue closes the channel
bad = conn.channel()
try:
    bad.queue_declare(queue="missing", passive=True)
except pika.exceptions.ChannelClosedByBroker:
    pass

# publish/subscribe last: a replay gets another server-named queue, so the bind
# by the recorded name fails there, and only what follows it is lost.
# publish/subscribe: fanout exchange, exclusive server-named queue
ch.exchange_declare(exchange="logs", exchange_type="fanout")
result = ch.queue_declare(queue="", exclusive=True)
ch.queue_bind(exchange="logs", queue=result.method.queue)
ch.basic_publish(exchange="logs", routing_key="", body=b"info: hi")
ch.basic_get(queue=result.method.queue, auto_ack=False)
ch.basic_recover(requeue=True)

ch.queue_delete("hello")
ch.queue_delete("task_queue")
conn.close()
