"""Fault rules for `Broker.inject`, built the way the Rust `Fault` is.

    Fault.on_publish_to("orders").nth(3).close_channel(406, "orders are closed")
    Fault.on_any_publish().times(2).nack_confirm()
    Fault.on_publish_routed_to("audit").on_channel(2).withhold_confirm()
"""

__all__ = ["Fault"]


class Fault:
    """Where a fault fires (an event, narrowed to a channel or connection, the nth
    or the next N times) and what it does there (its action)."""

    def __init__(self, on, **target):
        self._rule = {"on": on}
        self._rule.update(target)

    @classmethod
    def on_publish_to(cls, exchange):
        """Publishes to this exchange ("" is the default exchange)."""
        return cls("publish_to", exchange=exchange)

    @classmethod
    def on_publish_routed_to(cls, queue):
        """Publishes that the broker routes to this queue."""
        return cls("publish_routed_to", queue=queue)

    @classmethod
    def on_any_publish(cls):
        return cls("any_publish")

    @classmethod
    def on_ack(cls):
        return cls("ack")

    def on_channel(self, channel):
        self._rule["channel"] = int(channel)
        return self

    def on_connection(self, connection):
        """Only this connection's events (ids from `Broker.connections()`)."""
        self._rule["connection"] = int(connection)
        return self

    def nth(self, n):
        """Fires on the nth event in scope only (1 is the first)."""
        self._rule["nth"] = int(n)
        return self

    def times(self, n):
        """Fires on the next n events in scope."""
        self._rule["times"] = int(n)
        return self

    def close_channel(self, code=406, text="fault injected"):
        return self._act({"type": "close_channel", "code": int(code), "text": text})

    def close_connection(self, code=320, text="fault injected"):
        return self._act({"type": "close_connection", "code": int(code), "text": text})

    def nack_confirm(self):
        return self._act({"type": "nack_confirm"})

    def withhold_confirm(self):
        return self._act({"type": "withhold_confirm"})

    def _act(self, action):
        self._rule["action"] = action
        return self

    def to_json(self):
        if "action" not in self._rule:
            raise ValueError(f"fault {self._rule} has no action: end it with close_channel(), "
                             "close_connection(), nack_confirm() or withhold_confirm()")
        return dict(self._rule)

    def __repr__(self):
        return f"Fault({self._rule})"
