"""The MQTT mapper: devices that speak their own JSON over MQTT, as Zigbee2MQTT's do.

Protocol ``configData``:

- ``stateTopic`` (required): where the device publishes its state as a JSON
  object, e.g. ``zigbee2mqtt/living-room``.
- ``commandTopic``: where desired values are sent, e.g. ``zigbee2mqtt/living-room/set``.
- ``availabilityTopic``: ``online``/``offline``, plain or as ``{"state": "online"}``;
  without one, a device is online once it publishes its state.

Visitor ``configData`` of a property:

- ``path``: where the value sits in the state JSON, dotted (``climate.setpoint``,
  ``channels.0``); the property's name by default.
- ``commandPath``: where a desired value goes in the command JSON; ``path`` by default.
- ``commandTopic``: this property's own command topic.
- ``valueMap``: twin value to device value, e.g. ``{"true": "ON", "false": "OFF"}``;
  read back the other way.

A desired value is sent as JSON typed by the property (a number for INT,
FLOAT and DOUBLE, true/false for BOOLEAN, else a string), nested along
``commandPath``: ``{"climate": {"setpoint": 25}}``. The device's next state
message is the read-back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from edgetwin.mappers.plugin import (
    DeviceConfigError,
    DeviceDriver,
    DeviceSink,
    DeviceUnavailableError,
    Mapper,
    MapperLink,
    PropertyError,
)
from edgetwin.wire.messages import DeviceState
from edgetwin.wire.resources import PropertyType
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 256 * 1024
_AVAILABILITY: dict[str, DeviceState] = {"online": "online", "offline": "offline"}


class MqttJsonMapper(Mapper):
    """``mqtt``: JSON devices on the mapper's own broker."""

    protocol = "mqtt"

    def __init__(self) -> None:
        self._link: MapperLink | None = None
        self._routes: dict[str, list[MqttJsonDevice]] = {}

    async def start(self, link: MapperLink) -> None:
        self._link = link

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        assert self._link is not None, "start() comes first"
        device = MqttJsonDevice(self, spec, sink)
        new = [t for t in device.topics if t not in self._routes]
        for topic in device.topics:
            self._routes.setdefault(topic, []).append(device)
        await self._link.subscribe_device_topics(new)
        return device

    async def release(self, device: MqttJsonDevice) -> None:
        gone = []
        for topic in device.topics:
            users = self._routes.get(topic, [])
            if device in users:
                users.remove(device)
            if not users:
                self._routes.pop(topic, None)
                gone.append(topic)
        if gone and self._link is not None:
            await self._link.unsubscribe_device_topics(gone)

    def send(self, topic: str, payload: bytes) -> None:
        assert self._link is not None
        self._link.publish(topic, payload)

    def on_message(self, topic: str, payload: bytes) -> None:
        for device in self._routes.get(topic, ()):
            device.on_message(topic, payload)


@dataclass(frozen=True, slots=True)
class _Visitor:
    path: tuple[str, ...]
    command_path: tuple[str, ...]
    command_topic: str | None
    to_device: Mapping[str, Any]
    from_device: Mapping[str, str]

    @classmethod
    def parse(cls, prop: PropertySpec) -> _Visitor:
        config = prop.visitors
        path = _path(config.get("path", prop.name), "path")
        value_map = config.get("valueMap") or {}
        if not isinstance(value_map, dict) or not all(isinstance(k, str) for k in value_map):
            raise DeviceConfigError("valueMap: must map twin values (strings) to device values")
        return cls(
            path=path,
            command_path=_path(config["commandPath"], "commandPath")
            if "commandPath" in config
            else path,
            command_topic=_topic(config, "commandTopic", required=False),
            to_device=value_map,
            from_device={_json_text(v): k for k, v in value_map.items()},
        )


class MqttJsonDevice(DeviceDriver):
    """One JSON device: its state parsed as it arrives, commands sent as JSON."""

    polled: ClassVar[bool] = False

    def __init__(self, mapper: MqttJsonMapper, spec: DeviceSpecMessage, sink: DeviceSink) -> None:
        config = spec.protocol_config
        self._mapper = mapper
        self._sink = sink
        self.id = spec.id
        self.state_topic = _topic(config, "stateTopic", required=True)
        self.command_topic = _topic(config, "commandTopic", required=False)
        self.availability_topic = _topic(config, "availabilityTopic", required=False)
        self.visitors: dict[str, _Visitor] = {}
        for prop in spec.properties:
            try:
                visitor = _Visitor.parse(prop)
            except DeviceConfigError as exc:
                raise DeviceConfigError(
                    f"property {prop.name}: visitors.configData.{exc}"
                ) from None
            if prop.access_mode == "ReadWrite" and not (
                visitor.command_topic or self.command_topic
            ):
                raise DeviceConfigError(
                    f"property {prop.name}: ReadWrite needs a commandTopic (protocol or visitor)"
                )
            self.visitors[prop.name] = visitor
        self.topics = [t for t in (self.state_topic, self.availability_topic) if t]
        self.available: bool | None = None
        self._bad_state = False

    async def read(self, properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        del properties
        return {}  # never polled: the device pushes its state

    async def write(self, prop: PropertySpec, value: str) -> None:
        if self.available is False:
            raise DeviceUnavailableError(f"{self.availability_topic} says offline")
        visitor = self.visitors[prop.name]
        device_value = visitor.to_device.get(value, _typed(value, prop.type))
        body: Any = device_value
        for key in reversed(visitor.command_path):
            body = {key: body}
        topic = visitor.command_topic or self.command_topic
        assert topic is not None
        self._mapper.send(topic, orjson.dumps(body))

    async def close(self) -> None:
        await self._mapper.release(self)

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.availability_topic:
            state = _availability(payload)
            if state is None:
                log.warning(
                    "device %s: availability %r is not online/offline", self.id, payload[:64]
                )
                return
            self.available = state == "online"
            self._sink.set_state(state)
        if topic == self.state_topic:
            self._on_state(payload)

    def _on_state(self, payload: bytes) -> None:
        problem = None
        if len(payload) > MAX_STATE_BYTES:
            problem = f"state of {len(payload)} bytes is over {MAX_STATE_BYTES}"
        else:
            try:
                state = orjson.loads(payload)
            except orjson.JSONDecodeError:
                state = None
            if not isinstance(state, dict):
                problem = "state is not a JSON object"
        if problem is not None:
            if not self._bad_state:
                log.warning("device %s: %s on %s; ignored", self.id, problem, self.state_topic)
            self._bad_state = True
            return
        self._bad_state = False
        values = {}
        for name, visitor in self.visitors.items():
            found = _lookup(state, visitor.path)
            if found is not None:
                text = _json_text(found)
                values[name] = visitor.from_device.get(text, text)
        self._sink.push(values)


def _topic(config: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = config.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DeviceConfigError(f"{key}: {'missing' if value is None else repr(value)}")
    if "+" in value or "#" in value or "\x00" in value:
        raise DeviceConfigError(f"{key}: {value!r} has MQTT wildcards; name one topic")
    if value.startswith("$"):
        raise DeviceConfigError(f"{key}: {value!r} is a broker or twin topic ($…)")
    return value


def _path(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, str) or not value or any(not p for p in value.split(".")):
        raise DeviceConfigError(f"{key}: {value!r} is not a dotted path like a.b.c")
    return tuple(value.split("."))


def _lookup(state: Any, path: tuple[str, ...]) -> Any:  # noqa: ANN401 - JSON
    for key in path:
        if isinstance(state, dict):
            state = state.get(key)
        elif isinstance(state, list) and key.isdigit() and int(key) < len(state):
            state = state[int(key)]
        else:
            return None
    return state


def _json_text(value: Any) -> str:  # noqa: ANN401 - JSON
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def _typed(value: str, kind: PropertyType) -> Any:  # noqa: ANN401 - JSON
    try:
        if kind == "INT":
            return int(value)
        if kind in ("FLOAT", "DOUBLE"):
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
    except ValueError:
        raise PropertyError(f"{value!r} is not a number") from None
    if kind == "BOOLEAN":
        return value.lower() in ("1", "t", "true")
    return value


def _availability(payload: bytes) -> DeviceState | None:
    text = payload.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        text = str(body.get("state", "")) if isinstance(body, dict) else ""
    return _AVAILABILITY.get(text.lower())
