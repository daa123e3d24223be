"""The embedded MQTT broker, so one command runs a whole node: mosquitto as a supervised
child when it is installed, else amqtt in the node's own process."""

from edgetwin.broker._embedded import EmbeddedBroker
from edgetwin.broker._local import LocalConnection
from edgetwin.broker._mosquitto import MosquittoBroker, find_mosquitto

__all__ = ["EmbeddedBroker", "LocalConnection", "MosquittoBroker", "find_mosquitto"]
