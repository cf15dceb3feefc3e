"""Property-based tests: Hypothesis generates sequences of publishes, work, worker
crashes and broker restarts, runs each on a fresh Warren broker, and checks that every
confirmed task is done. A failure shrinks to a minimal sequence."""

import pika
import pytest
from hypothesis import given, settings, strategies as st

from warren_broker import Broker

QUEUE = 'tasks'

steps = st.lists(st.sampled_from(['publish', 'work', 'crash', 'restart']), max_size=12)


class Worker:
    """The code under test: takes one task, does it, acks it. `ack_first` is the
    classic bug of acking on receipt, before the work is done."""

    def __init__(self, broker, ack_first=False):
        self.broker = broker
        self.ack_first = ack_first
        self.done = []
        self.connect()

    def connect(self):
        params = pika.URLParameters(self.broker.url)
        params.client_properties = {'connection_name': 'worker'}
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=QUEUE, durable=True)

    def work_one(self, crash=False):
        """Does one task, or dies in the middle of it when `crash`."""
        method, _properties, body = self.channel.basic_get(QUEUE)
        if method is None:
            return False
        if self.ack_first:
            self.channel.basic_ack(method.delivery_tag)
        if crash:
            # The process dies mid-task: its socket goes without a close.
            [conn] = [c for c in self.broker.connections()
                      if c.get('client_properties', {}).get('connection_name') == 'worker']
            self.broker.drop_connection(conn['id'])
            self.broker.wait_for(QUEUE, no_unacked=True)
            self.connect()
            return True
        self.done.append(body)
        if not self.ack_first:
            self.channel.basic_ack(method.delivery_tag)
        return True


class Publisher:
    def __init__(self, broker):
        self.broker = broker
        self.connect()

    def connect(self):
        self.connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.queue_declare(queue=QUEUE, durable=True)

    def publish(self, body):
        self.channel.basic_publish(
            exchange='', routing_key=QUEUE, body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))


def run_case(sequence, ack_first=False):
    """Runs one generated sequence on a fresh broker and checks the property."""
    with Broker.start() as broker:
        publisher, worker = Publisher(broker), Worker(broker, ack_first)
        published = []
        for step in sequence:
            if step == 'publish':
                body = f'task {len(published)}'.encode()
                publisher.publish(body)          # confirmed: the broker has it
                published.append(body)
            elif step == 'work':
                worker.work_one()
            elif step == 'crash':
                worker.work_one(crash=True)
            elif step == 'restart':
                # pika's BlockingConnection reads only when called, so it would
                # leave the broker's 320 close unanswered until the broker's close
                # timeout (3 s): the clients close first, then the broker restarts.
                publisher.connection.close()
                worker.connection.close()
                broker.restart()
                publisher.connect()
                worker.connect()
        while worker.work_one():
            pass
        publisher.connection.close()
        worker.connection.close()
        # Every confirmed task is done at least once (a redelivery may repeat one).
        assert sorted(set(worker.done)) == sorted(published), \
            f'tasks lost: {sorted(set(published) - set(worker.done))}'


@settings(max_examples=40, deadline=None)
@given(steps)
def test_every_confirmed_task_is_done(sequence):
    run_case(sequence)


def test_the_ack_first_bug_is_found_and_shrunk():
    seen = []

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              print_blob=False)
    @given(steps)
    def property_with_the_bug(sequence):
        seen.append(sequence)
        run_case(sequence, ack_first=True)

    with pytest.raises(AssertionError, match='tasks lost'):
        property_with_the_bug()
    # Hypothesis replays the smallest failing sequence last: a task, and a worker
    # that acked it and died.
    assert seen[-1] == ['publish', 'crash']
