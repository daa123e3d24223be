"""Simulated devices for the examples and the tests: a Modbus thermostat, an MQTT sensor."""

from edgetwin.simulate.mqtt_sensor import MqttSensorSimulator
from edgetwin.simulate.thermostat import ThermostatSimulator

__all__ = ["MqttSensorSimulator", "ThermostatSimulator"]
