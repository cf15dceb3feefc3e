"""Warren, an AMQP 0-9-1 broker that stands in for RabbitMQ in tests, from Python.

    from warren_broker import Broker, Fault

    with Broker.start(virtual_clock=True) as broker:
        ...  # connect pika, kombu … to broker.url
        broker.inject(Fault.on_any_publish().nth(3).nack_confirm())
        broker.advance(30 * 60)
        broker.wait_until_idle()

The pytest plugin (this package's `pytest11` entry point) adds the fixtures `warren`
(a fresh broker per test) and `warren_session` (one broker, a fresh vhost per test).
"""

from ._broker import (
    BinaryNotFound,
    Broker,
    BrokerDied,
    ControlError,
    Message,
    Queue,
    StartError,
    WaitTimeout,
    WarrenError,
    find_binary,
)
from ._fault import Fault

__all__ = [
    "BinaryNotFound",
    "Broker",
    "BrokerDied",
    "ControlError",
    "Fault",
    "Message",
    "Queue",
    "StartError",
    "WaitTimeout",
    "WarrenError",
    "find_binary",
]
