"""The node's MQTT client (MQTT 3.1.1 on asyncio), and serving a connection that comes back."""

from edgetwin.mqtt._client import BrokerAddress, MqttConnection, request
from edgetwin.mqtt._reconnect import Link, Session, one_by_one

__all__ = ["BrokerAddress", "Link", "MqttConnection", "Session", "one_by_one", "request"]
