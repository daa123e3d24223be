"""What a protocol mapper implements, and how edgetwin finds one.

A mapper is a class registered under the entry-point group ``edgetwin.mappers``
with its protocol as the name, in any installed package::

    [project.entry-points."edgetwin.mappers"]
    echo = "edgetwin_echo:EchoMapper"

The runtime (:mod:`edgetwin.mappers.runtime`) does everything that is the same
for every protocol: it learns the devices from the twin's retained spec
messages, takes desired values from the deltas, polls each property every
``collectCycle``, reports at most every ``reportCycle``, and tracks whether a
device answers. A mapper only opens a :class:`DeviceDriver` per device, which
reads and writes that device's properties.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import ClassVar, Protocol

from edgetwin.errors import EdgetwinError
from edgetwin.wire.messages import DeviceState
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

ENTRY_POINT_GROUP = "edgetwin.mappers"


class DeviceConfigError(EdgetwinError):
    """A device's protocol or visitor config cannot be used; the message names the field."""


class DeviceUnavailableError(EdgetwinError):
    """The device did not answer (or its connection is down): it is offline."""


class PropertyError(EdgetwinError):
    """The device answered, but this property could not be read or written."""


class DeviceSink(Protocol):
    """What a driver may tell the runtime unasked (devices that push their readings)."""

    def push(self, values: Mapping[str, str]) -> None:
        """New readings, by property name, as the twin's strings."""

    def set_state(self, state: DeviceState) -> None:
        """The device said it is online or offline (an availability message)."""


class MapperLink(Protocol):
    """The mapper's MQTT connection, for protocols whose devices speak MQTT themselves."""

    async def subscribe_device_topics(self, filters: Sequence[str]) -> None: ...
    async def unsubscribe_device_topics(self, filters: Sequence[str]) -> None: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


class DeviceDriver(ABC):
    """One device of a mapper's protocol, opened from its merged spec."""

    polled: ClassVar[bool] = True
    """False for devices that push their readings; the runtime then never calls read."""

    self_reporting: ClassVar[bool] = False
    """True when the device's own runtime (a KubeEdge mapper over DMI) decides its state
    and its report cycle: its pushes are reported as they come, its state only as it says."""

    @abstractmethod
    async def read(self, properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        """Read these properties: a value or the error of each.

        Raises DeviceUnavailableError when the device does not answer at all.
        """

    @abstractmethod
    async def write(self, prop: PropertySpec, value: str) -> None:
        """Write a desired value (the twin's string, already checked against the model).

        Raises PropertyError if the device refuses it or it does not fit the
        register, DeviceUnavailableError if the device does not answer.
        """

    async def close(self) -> None:  # noqa: B027 - most drivers hold nothing of their own
        """Release what the device holds; shared connections are the mapper's."""


class Mapper(ABC):
    """A protocol's mapper: one per process, opening a driver per device."""

    protocol: str
    """The protocol it serves: a class attribute of a plugin, set per instance for DMI."""

    async def start(self, link: MapperLink) -> None:  # noqa: B027 - optional hook
        """Called once connected; ``link`` stays valid across reconnections."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Called after every driver is closed."""

    @abstractmethod
    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        """A driver for this device; DeviceConfigError if its config cannot be used.

        Must not wait for the device: connections are made on first use.
        """

    async def removed(self, device: str) -> None:  # noqa: B027 - optional hook
        """The device left this node (its spec was cleared), after its driver was closed.

        Not called at shutdown, when drivers are closed too.
        """

    def on_message(self, topic: str, payload: bytes) -> None:  # noqa: B027 - optional hook
        """A message on a topic subscribed through the link (not the twin's topics)."""


def available_mappers() -> dict[str, str]:
    """Installed mappers: protocol -> ``module:Class``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_mapper(protocol: str) -> Mapper:
    """The installed mapper for ``protocol``, instantiated with no arguments."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=protocol)
    if not found:
        known = ", ".join(sorted(available_mappers())) or "none"
        raise EdgetwinError(
            f"no mapper for protocol {protocol!r} is installed (installed: {known})"
        )
    entry = next(iter(found))
    try:
        factory = entry.load()
    except Exception as exc:
        raise EdgetwinError(
            f"mapper {protocol!r} ({entry.value}) cannot be loaded: {exc}"
        ) from None
    mapper = factory()
    if not isinstance(mapper, Mapper):
        raise EdgetwinError(f"mapper {protocol!r} ({entry.value}) is not an edgetwin Mapper")
    if getattr(mapper, "protocol", protocol) != protocol:
        raise EdgetwinError(
            f"mapper {entry.value} is registered as {protocol!r} but serves {mapper.protocol!r}"
        )
    return mapper
