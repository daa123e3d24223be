"""The Modbus mapper (TCP and RTU, through pymodbus), registered as ``modbus``."""

from edgetwin.mappers.modbus.mapper import ModbusMapper

__all__ = ["ModbusMapper"]
