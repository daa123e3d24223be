"""The embedded MQTT broker, so one command runs a whole node: mosquitto as a supervised
child when it is installed, else amqtt in the node's own process.

amqtt is imported only when a node runs it (``EmbeddedBroker`` loads it on first use):
a node on mosquitto does not pay for it in memory.
"""

from typing import TYPE_CHECKING

from edgetwin.broker._local import LocalConnection
from edgetwin.broker._mosquitto import MosquittoBroker, find_mosquitto, find_plugin

if TYPE_CHECKING:
    from edgetwin.broker._embedded import EmbeddedBroker


def __getattr__(name: str) -> object:
    if name == "EmbeddedBroker":
        from edgetwin.broker._embedded import EmbeddedBroker  # noqa: PLC0415 - see above

        return EmbeddedBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EmbeddedBroker", "LocalConnection", "MosquittoBroker", "find_mosquitto", "find_plugin"]
