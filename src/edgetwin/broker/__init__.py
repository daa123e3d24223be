"""The embedded MQTT broker (amqtt), so one command runs a whole node."""

from edgetwin.broker._embedded import EmbeddedBroker

__all__ = ["EmbeddedBroker"]
