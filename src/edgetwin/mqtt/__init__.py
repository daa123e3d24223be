"""The MQTT client adapter: the one place that knows aiomqtt."""

from edgetwin.mqtt._client import BrokerAddress, MqttConnection, request
from edgetwin.mqtt._reconnect import Link, serve_reconnecting

__all__ = ["BrokerAddress", "Link", "MqttConnection", "request", "serve_reconnecting"]
