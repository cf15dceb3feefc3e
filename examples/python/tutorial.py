"""The seed tutorial's programs (tests/seed/), as application code that a test can call.

Each function is the body of one of the tutorial's scripts, taking the broker's URL
instead of connecting to 'localhost', and returning what the script printed.
"""

import threading
import time

import pika
import pika.exceptions


def connect(url):
    return pika.BlockingConnection(pika.URLParameters(url))


# ---- hello world (hello_send.py, hello_receive.py) ---------------------------------

def send_hello(url):
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare(queue='hello')
    channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
    connection.close()


def receive_hello(url, count=1, timeout=5.0):
    """Consumes `count` messages from 'hello' (auto-ack), as hello_receive.py does."""
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare(queue='hello')
    received = []
    for _method, _properties, body in channel.consume('hello', auto_ack=True, inactivity_timeout=timeout):
        if body is None:
            break
        received.append(body)
        if len(received) == count:
            break
    connection.close()
    return received


# ---- work queues (worker_task_new.py, worker.py) -----------------------------------

def new_task(url, message):
    """Publishes a persistent task to the durable 'task_queue'."""
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare(queue='task_queue', durable=True)
    channel.basic_publish(
        exchange='', routing_key='task_queue', body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    connection.close()


class Worker:
    """worker.py in a thread: prefetch 1, manual acks, one second of work per '.'
    in the task (here `seconds_per_dot`, so tests need not sleep)."""

    def __init__(self, url, seconds_per_dot=0.0):
        self.url = url
        self.seconds_per_dot = seconds_per_dot
        self.done = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error = None

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the worker did not start consuming: {self._error}")
        return self

    def _run(self):
        try:
            self._connection = connect(self.url)
            channel = self._connection.channel()
            self._channel = channel
            channel.queue_declare(queue='task_queue', durable=True)
            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(queue='task_queue', on_message_callback=self._callback)
            self._ready.set()
            channel.start_consuming()
            self._connection.close()
        except Exception as e:  # the test sees it through start() or stop()
            self._error = e
            self._ready.set()

    def _callback(self, ch, method, properties, body):
        time.sleep(body.count(b'.') * self.seconds_per_dot)
        self.done.append(body)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def stop(self):
        if self._thread.is_alive():
            self._connection.add_callback_threadsafe(self._channel.stop_consuming)
            self._thread.join(10)
        if self._error:
            raise self._error


# ---- publish/subscribe (emit_log.py, receive_logs.py) ------------------------------

def emit_log(url, message):
    connection = connect(url)
    channel = connection.channel()
    channel.exchange_declare(exchange='logs', exchange_type='fanout')
    channel.basic_publish(exchange='logs', routing_key='', body=message)
    connection.close()


class LogReceiver:
    """receive_logs.py: an exclusive, server-named queue bound to 'logs'."""

    def __init__(self, url):
        self.connection = connect(url)
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange='logs', exchange_type='fanout')
        result = self.channel.queue_declare(queue='', exclusive=True)
        self.queue = result.method.queue
        self.channel.queue_bind(exchange='logs', queue=self.queue)

    def receive(self, count, timeout=5.0):
        received = []
        for _m, _p, body in self.channel.consume(self.queue, auto_ack=True, inactivity_timeout=timeout):
            if body is None:
                break
            received.append(body)
            if len(received) == count:
                break
        return received

    def close(self):
        self.connection.close()


# ---- best practices: publisher confirms, retried --------------------------------------

class ConfirmingPublisher:
    """Publishes with confirms and retries a nacked message, up to `attempts` times."""

    def __init__(self, url, queue):
        self.connection = connect(url)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.queue_declare(queue=queue, durable=True)
        self.queue = queue

    def publish(self, body, attempts=3):
        """Returns how many attempts it took; raises NackError once it gives up."""
        for attempt in range(1, attempts + 1):
            try:
                self.channel.basic_publish(
                    exchange='', routing_key=self.queue, body=body,
                    properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
                return attempt
            except pika.exceptions.NackError:
                if attempt == attempts:
                    raise

    def close(self):
        self.connection.close()


# ---- best practices: messages that expire -------------------------------------------

def schedule_reminder(url, text, ttl_ms=30 * 60 * 1000):
    """A reminder is only useful for 30 minutes: the queue drops it after that."""
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare(queue='reminders', durable=True, arguments={'x-message-ttl': ttl_ms})
    channel.basic_publish(exchange='', routing_key='reminders', body=text)
    connection.close()


def next_reminder(url):
    """The next reminder still valid, or None."""
    connection = connect(url)
    channel = connection.channel()
    method, _properties, body = channel.basic_get('reminders', auto_ack=True)
    connection.close()
    return body if method else None
