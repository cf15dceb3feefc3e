"""The seed tutorial's programs tested on a fresh Warren broker per test (the `warren`
fixture of the warren_broker pytest plugin)."""

import pika
import pytest

from warren_broker import Broker, Fault

import tutorial


def test_hello_world(warren):
    tutorial.send_hello(warren.url)
    # The message waits in the queue until someone receives it.
    assert warren.queue('hello').bodies == [b'Hello World!']
    assert tutorial.receive_hello(warren.url) == [b'Hello World!']
    assert warren.wait_for('hello', empty=True).messages == 0


def test_workers_share_the_tasks_and_ack_each(warren):
    workers = [tutorial.Worker(warren.url).start() for _ in range(2)]
    tasks = [f'task {i}{"." * (i % 3)}'.encode() for i in range(10)]
    for task in tasks:
        tutorial.new_task(warren.url, task)
    # Every task acked, then nothing left in flight: no sleep, no polling in the test.
    warren.wait_for('task_queue', empty=True, no_unacked=True)
    warren.wait_until_idle()
    for worker in workers:
        worker.stop()
    done = workers[0].done + workers[1].done
    assert sorted(done) == sorted(tasks)
    # prefetch 1: both workers got a share.
    assert workers[0].done and workers[1].done


def test_a_seeded_task_is_worked_off(warren):
    tutorial.new_task(warren.url, b'first')       # declares the durable queue
    warren.seed('task_queue', b'seeded', properties={'delivery_mode': 2})
    worker = tutorial.Worker(warren.url).start()
    warren.wait_for('task_queue', empty=True, no_unacked=True)
    worker.stop()
    assert worker.done == [b'first', b'seeded']


def test_every_subscriber_gets_each_log_line(warren):
    receivers = [tutorial.LogReceiver(warren.url) for _ in range(2)]
    tutorial.emit_log(warren.url, 'info: Hello World!')
    for receiver in receivers:
        assert receiver.receive(1) == [b'info: Hello World!']
        receiver.close()
    # The exclusive queues went with their connections: a line emitted now reaches no one.
    tutorial.emit_log(warren.url, 'info: nobody listens')
    warren.wait_until_idle()
    assert [q.name for q in warren.queues()] == []


def test_a_nacked_publish_is_retried(warren):
    publisher = tutorial.ConfirmingPublisher(warren.url, 'orders')
    # The third publish's confirm is a nack, as when RabbitMQ cannot take a message.
    warren.inject(Fault.on_any_publish().nth(3).nack_confirm())
    attempts = [publisher.publish(f'order {i}'.encode()) for i in range(1, 6)]
    publisher.close()
    assert attempts == [1, 1, 2, 1, 1]
    # Each order is in the queue; a nacked one may or may not be (RabbitMQ's rule),
    # so the consumer must tolerate the duplicate.
    bodies = warren.queue('orders').bodies
    assert sorted(set(bodies)) == [f'order {i}'.encode() for i in range(1, 6)]


def test_a_nacked_publish_is_given_up_after_three_attempts(warren):
    publisher = tutorial.ConfirmingPublisher(warren.url, 'orders')
    warren.inject(Fault.on_publish_routed_to('orders').times(3).nack_confirm())
    with pytest.raises(pika.exceptions.NackError):
        publisher.publish(b'order 1')
    assert publisher.publish(b'order 2') == 1
    publisher.close()


@pytest.mark.warren(virtual_clock=True)
def test_a_reminder_expires_after_thirty_minutes(warren):
    tutorial.schedule_reminder(warren.url, 'stand up')
    warren.advance(29 * 60)
    assert warren.queue('reminders').bodies == [b'stand up']
    warren.advance(2 * 60)      # thirty-one minutes, in no time
    assert warren.queue('reminders').bodies == []
    assert tutorial.next_reminder(warren.url) is None


def test_durable_tasks_survive_a_restart(warren):
    tutorial.new_task(warren.url, b'resize 1.png')
    tutorial.new_task(warren.url, b'resize 2.png')
    # A transient message on a transient queue does not survive, as in RabbitMQ.
    tutorial.send_hello(warren.url)
    warren.restart()
    assert warren.queue('hello') is None
    worker = tutorial.Worker(warren.url).start()
    warren.wait_for('task_queue', empty=True, no_unacked=True)
    worker.stop()
    assert worker.done == [b'resize 1.png', b'resize 2.png']


def test_confirmed_tasks_survive_a_crash(tmp_path):
    with Broker.start(data_dir=tmp_path) as broker:
        publisher = tutorial.ConfirmingPublisher(broker.url, 'task_queue')
        publisher.publish(b'resize 1.png')     # confirmed: on disk
        publisher.close()
        broker.crash()                         # a power cut, then recovery from the files
        assert broker.queue('task_queue').bodies == [b'resize 1.png']
