"""Protocol mappers: plugins that speak only the MQTT twin API (see edgetwin.wire).

:mod:`edgetwin.mappers.plugin` is what a mapper implements, and
:mod:`edgetwin.mappers.runtime` what runs one, inside a node or on its own.
"""

from edgetwin.mappers.plugin import (
    DeviceConfigError,
    DeviceDriver,
    DeviceSink,
    DeviceUnavailableError,
    Mapper,
    MapperLink,
    PropertyError,
    available_mappers,
    load_mapper,
)
from edgetwin.mappers.runtime import MapperRuntime

__all__ = [
    "DeviceConfigError",
    "DeviceDriver",
    "DeviceSink",
    "DeviceUnavailableError",
    "Mapper",
    "MapperLink",
    "MapperRuntime",
    "PropertyError",
    "available_mappers",
    "load_mapper",
]
