"""The pytest plugin (entry point `pytest11`): the fixtures `warren` and `warren_session`.

    def test_worker(warren):                      # a fresh broker for this test
        ...

    @pytest.mark.warren(virtual_clock=True)       # options for Broker.start
    def test_ttl(warren):
        ...

    def test_fast(warren_session):                # one broker per session, and a
        ...                                       # fresh virtual host for this test
"""

import collections
import itertools

import pytest

from ._broker import Broker


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "warren(**options): options for the broker of the `warren` fixture "
        "(those of warren_broker.Broker.start)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows what its broker logged (connections, closes …)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("warren", "warren_session"):
        broker = getattr(item, "funcargs", {}).get(name)
        broker = getattr(broker, "broker", broker)
        if isinstance(broker, Broker):
            log = broker.log()
            report.sections.append((f"warren broker log ({name})", log[-8000:] or "(nothing)"))


@pytest.fixture
def warren(request):
    """A fresh Warren broker for this test, stopped after it."""
    marker = request.node.get_closest_marker("warren")
    options = dict(marker.kwargs) if marker else {}
    broker = Broker.start(**options)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def warren_session_broker(request):
    """The one broker that `warren_session` hands out virtual hosts of. It starts
    with one unused vhost for each test that asks for `warren_session`, so that every
    such test gets a vhost that nothing touched before."""
    wanting = sum(1 for item in request.session.items
                  if "warren_session" in getattr(item, "fixturenames", ()))
    vhosts = [f"test-{n}" for n in range(1, wanting + 1)]
    broker = Broker.start(vhosts=vhosts)
    broker._unused_vhosts = collections.deque(vhosts)
    try:
        yield broker
    finally:
        broker.stop()


_vhost_numbers = itertools.count(1)


@pytest.fixture
def warren_session(warren_session_broker):
    """The session's broker, seen through a virtual host of this test's own: `.url`
    points at it and the queue calls default to it. Its connections are closed after
    the test. restart(), crash(), advance() and faults act on the whole broker (the
    faults are cleared after each test)."""
    broker = warren_session_broker
    if broker._unused_vhosts:
        vhost = broker._unused_vhosts.popleft()
    else:
        # A test that was not collected with the others (pytest's own tests of
        # plugins do this): a vhost made now, through RabbitMQ's management API.
        vhost = f"extra-{next(_vhost_numbers)}"
        broker.add_vhost(vhost)
    view = VhostBroker(broker, vhost)
    try:
        yield view
    finally:
        if broker.running:
            broker.clear_faults()
            for connection in broker.connections(vhost):
                broker.close_connection(connection["id"], 320,
                                        "the test is over")


class VhostBroker:
    """A broker seen through one virtual host."""

    def __init__(self, broker, vhost):
        # Calls not defined here (restart, inject …) go to the broker itself.
        self.broker = broker
        self.vhost = vhost
        self.url = broker.url_for(vhost)
        self.management_url = broker.management_url

    def queue(self, name, vhost=None):
        return self.broker.queue(name, vhost or self.vhost)

    def queues(self, vhost=None):
        return self.broker.queues(vhost or self.vhost)

    def snapshot(self, vhost=None):
        return self.broker.snapshot(vhost or self.vhost)

    def connections(self, vhost=None):
        return self.broker.connections(vhost or self.vhost)

    def wait_for(self, queue, vhost=None, **conditions):
        return self.broker.wait_for(queue, vhost or self.vhost, **conditions)

    def seed(self, queue, body, vhost=None, properties=None):
        self.broker.seed(queue, body, vhost or self.vhost, properties)

    def cancel_consumer(self, queue, consumer_tag, vhost=None):
        self.broker.cancel_consumer(queue, consumer_tag, vhost or self.vhost)

    def __getattr__(self, name):
        return getattr(self.broker, name)

    def __repr__(self):
        return f"VhostBroker({self.url!r})"
