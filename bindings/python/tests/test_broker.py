"""The package's own tests: starting, stopping, and every way it can go wrong, each a
clear error and never a hang. The fake binaries are shell scripts that misbehave on
purpose; the rest runs the real `warren` (WARREN_BIN, the wheel's, or PATH)."""

import os
import signal
import socket
import stat
import subprocess

import pytest

from warren_broker import (BinaryNotFound, Broker, BrokerDied, Fault, StartError,
                           WaitTimeout)


def script(tmp_path, body):
    path = tmp_path / 'fake-warren'
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_missing_binary_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv('WARREN_BIN', str(tmp_path / 'nowhere'))
    with pytest.raises(BinaryNotFound, match='WARREN_BIN names .*nowhere'):
        Broker.start()


def test_a_broker_that_exits_at_once_shows_its_log(tmp_path):
    binary = script(tmp_path, 'echo "warren: Address already in use (os error 98)" >&2; exit 1\n')
    with pytest.raises(StartError, match=r'exited with status 1(.|\n)*Address already in use'):
        Broker.start(binary=binary)


def test_a_binary_without_the_management_url_is_named(tmp_path):
    binary = script(tmp_path, 'echo amqp://guest:guest@127.0.0.1:1/%2f; exit 0\n')
    with pytest.raises(StartError, match='printed no management URL'):
        Broker.start(binary=binary)


def test_a_broker_that_never_gets_ready_is_killed_after_the_timeout(tmp_path):
    binary = script(tmp_path, 'exec sleep 60\n')
    with pytest.raises(StartError, match='printed 0 of its 2 URL lines within 0.5 s'):
        Broker.start(binary=binary, start_timeout=0.5)


def test_stop_kills_a_broker_that_ignores_sigterm(tmp_path):
    binary = script(tmp_path, "trap '' TERM\necho amqp://x\necho http://127.0.0.1:1\n"
                              "while :; do sleep 1; done\n")
    broker = Broker.start(binary=binary)
    assert broker.stop(timeout=0.5) == -signal.SIGKILL


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match='virtual_clok'):
        Broker.start(virtual_clok=True)


# ---- with the real binary ----------------------------------------------------------


def test_start_stop_and_urls():
    with Broker.start() as broker:
        assert broker.url.startswith('amqp://guest:guest@127.0.0.1:')
        assert broker.management_url.startswith('http://127.0.0.1:')
        assert broker.queues() == []
    assert not broker.running
    assert broker._process.returncode == 0      # SIGTERM is a graceful shutdown


def test_a_port_in_use_is_named():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartError, match='(?i)address already in use|in use'):
            Broker.start(port=port)


def test_a_broker_that_dies_mid_test_is_reported():
    broker = Broker.start()
    os.kill(broker.pid, signal.SIGKILL)
    broker._process.wait()
    with pytest.raises(BrokerDied, match='killed by signal 9'):
        broker.queues()
    broker.stop()


def test_a_wait_that_runs_out_raises_wait_timeout():
    with Broker.start() as broker:
        with pytest.raises(WaitTimeout):
            broker.wait_for('nothing-here', messages=1, timeout=0.2)


def test_a_fault_without_an_action_is_refused_before_sending():
    with pytest.raises(ValueError, match='no action'):
        Fault.on_any_publish().nth(3).to_json()


def test_the_virtual_clock_moves():
    with Broker.start(virtual_clock=True) as broker:
        before = broker.clock()['now_ms']
        broker.advance(90)
        assert broker.clock()['now_ms'] == before + 90_000


def test_rabbitmq_version_chooses_which_rabbitmq_to_behave_like():
    pika = pytest.importorskip('pika', reason='the version test drives the broker with pika')
    with Broker.start(rabbitmq_version='4.3') as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        props = conn._impl.server_properties
        text = lambda v: v.decode() if isinstance(v, bytes) else v
        assert text(props['product']) == 'RabbitMQ'
        assert text(props['version']) == '4.3.5'
        # RabbitMQ 4.3 denies queues neither durable nor exclusive by default.
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
            conn.channel().queue_declare('hello')
        assert refused.value.reply_code == 541
        assert 'transient_nonexcl_queues' in refused.value.reply_text
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.channel().queue_declare('task_queue', durable=True)
        conn.close()
        assert [q.name for q in broker.queues()] == ['task_queue']


def test_the_trace_file_and_the_mermaid_text_show_what_the_test_did(tmp_path):
    pika = pytest.importorskip('pika', reason='the trace test drives the broker with pika')
    with Broker.start() as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare(queue='orders-py')
        ch.basic_publish(exchange='', routing_key='orders-py', body=b'order 1')
        for method, _, body in ch.consume('orders-py', inactivity_timeout=10):
            assert body == b'order 1'
            ch.basic_ack(method.delivery_tag)
            break
        ch.cancel()
        broker.wait_for('orders-py', empty=True, no_unacked=True)

        path = broker.trace_html(tmp_path / 'trace.html')
        html = (tmp_path / 'trace.html').read_text('utf-8')
        assert path == tmp_path / 'trace.html'
        assert html.lstrip().lower().startswith('<!doctype html>')
        # One file: nothing to fetch from elsewhere.
        assert '<script src' not in html and '<link' not in html
        for seen in ('orders-py', 'basic.publish', 'basic.deliver', 'basic.ack'):
            assert seen in html, seen

        diagram = broker.trace_mermaid()
        conn.close()
    lines = diagram.splitlines()
    assert lines[0] == 'sequenceDiagram'
    assert '    participant B as broker' in lines
    arrows = [line.strip() for line in lines if '->>' in line]
    publish = next(a for a in arrows if 'basic.publish' in a)
    assert publish.startswith('C') and '->>B: ch1 basic.publish' in publish
    assert 'orders-py' in publish
    assert any(a.startswith('B->>C') and 'basic.deliver' in a for a in arrows), arrows
    assert any(a.startswith('C') and '->>B: ch1 basic.ack' in a for a in arrows), arrows
    # In the order they happened.
    order = [m for a in arrows for m in ('basic.publish', 'basic.deliver', 'basic.ack') if f' {m}' in a]
    assert order == ['basic.publish', 'basic.deliver', 'basic.ack'], order


def test_the_warren_fixture_is_a_running_broker(warren):
    assert warren.running
    assert warren.queues() == []


def test_the_session_fixture_gives_a_vhost_of_its_own(warren_session):
    assert warren_session.url.endswith('/' + warren_session.vhost.replace('/', '%2F'))
    assert warren_session.queues() == []
