"""The embedded MQTT broker (amqtt), so one command runs a whole node."""

from edgetwin.broker._embedded import EmbeddedBroker
from edgetwin.broker._local import LocalConnection

__all__ = ["EmbeddedBroker", "LocalConnection"]
