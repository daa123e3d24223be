"""The MQTT client adapter: the one place that knows aiomqtt."""

from edgetwin.mqtt._client import BrokerAddress, MqttConnection, request

__all__ = ["BrokerAddress", "MqttConnection", "request"]
