"""The mapper runtime: a mapper's devices, learnt and served over the MQTT twin API alone.

It subscribes to the retained specs of its protocol and learns each device
of its node from them (an empty retained spec removes it), answering on the spec's
``/result`` topic whether the config is usable. It asks the twin for each
device's twin (``twin/get``) to learn desired values it has not written,
and then follows the deltas. Readings go to ``twin/update`` as ``actual``
values, device state to ``state/update``; a reading the twin refused (its
``twin/update/result`` says so) is reported again with the next reading, even
unchanged. After a reconnection it asks and tells the twin everything again,
so either side may restart at any time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Sequence
from typing import Any, Self

import orjson
from pydantic import ValidationError

from edgetwin.config import DEFAULTS
from edgetwin.errors import BrokerUnreachableError
from edgetwin.mappers.device import DeviceWorker
from edgetwin.mappers.plugin import DeviceConfigError, Mapper
from edgetwin.mqtt import BrokerAddress, MqttConnection, Session, one_by_one
from edgetwin.wire import topics
from edgetwin.wire.messages import (
    Code,
    DeviceState,
    accepted_result,
    error_result,
    get_request,
    state_update_request,
    string_map,
    twin_update_request,
    write_failed_result,
)
from edgetwin.wire.spec import DeviceSpecMessage

log = logging.getLogger(__name__)


class MapperRuntime:
    """``async with MapperRuntime(mapper, address)``: serving until the block ends."""

    def __init__(
        self,
        mapper: Mapper,
        address: BrokerAddress,
        *,
        node: str | None = None,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
    ) -> None:
        self.mapper = mapper
        self.node = node
        """Serve only this node's devices (all, if None): a broker may serve many nodes."""
        self.protocol = mapper.protocol
        self.address = address
        self.reconnect_max_delay = reconnect_max_delay
        self.devices: dict[str, DeviceWorker] = {}
        self.refused: dict[str, str] = {}
        """Devices whose config cannot be used, and why."""
        self.connected = asyncio.Event()
        self._client_id = f"edgetwin-mapper-{self.protocol}-{uuid.uuid4().hex[:8]}"
        self._event_prefix = f"{self._client_id}-"
        self._events = itertools.count()
        self._device_filters: list[str] = []
        self._mqtt: MqttConnection | None = None
        self._session = Session(
            self._connection,
            on_connect=self._on_connect,
            on_batch=one_by_one(self._on_message),
            on_disconnect=self._on_disconnect,
            max_delay=self.reconnect_max_delay,
            name=f"mapper {self.protocol}",
        )

    async def __aenter__(self) -> Self:
        await self.mapper.start(self)
        try:
            await self._session.__aenter__()
        except BaseException:
            await self.mapper.stop()
            raise
        log.info("mapper %s connected to %s", self.protocol, self.address)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.__aexit__(None, None, None)
        for worker in list(self.devices.values()):
            await worker.stop()
        self.devices.clear()
        await self.mapper.stop()

    # --- the MapperLink protocol, for mappers of devices that speak MQTT -------------------

    async def subscribe_device_topics(self, filters: Sequence[str]) -> None:
        new = [f for f in filters if f not in self._device_filters]
        self._device_filters.extend(new)
        if new and self._mqtt is not None:
            await self._mqtt.subscribe(new)

    async def unsubscribe_device_topics(self, filters: Sequence[str]) -> None:
        gone = [f for f in filters if f in self._device_filters]
        for topic_filter in gone:
            self._device_filters.remove(topic_filter)
        if gone and self._mqtt is not None:
            await self._mqtt.unsubscribe(gone)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        mqtt = self._mqtt
        if mqtt is None:
            log.debug("not connected; dropped a message to %s", topic)
            return
        try:
            mqtt.publish_nowait(topic, payload, qos=qos, retain=retain)
        except BrokerUnreachableError as exc:
            log.debug("%s", exc)

    # --- the DeviceOutput protocol, for the device workers ---------------------------------

    def report(self, device: str, twin: dict[str, Any]) -> None:
        self.publish(topics.twin_update_topic(device), twin_update_request(self._event_id(), twin))

    def state(self, device: str, state: DeviceState) -> None:
        self.publish(
            topics.state_update_topic(device), state_update_request(self._event_id(), state)
        )

    def write_failed(self, device: str, prop: str, value: str, reason: str) -> None:
        self.publish(topics.delta_result_topic(device), write_failed_result(prop, value, reason))

    def read_failed(self, device: str, prop: str, reason: str) -> None:
        self._spec_result(device, f"property {prop}: {reason}")

    # --- serving ---------------------------------------------------------------------------

    def _event_id(self) -> str:
        return f"{self._event_prefix}{next(self._events)}"

    async def _on_connect(self, mqtt: MqttConnection) -> None:
        await mqtt.subscribe(
            [
                topics.spec_filter(self.protocol),
                topics.DELTA_FILTER,
                topics.TWIN_GET_RESULT_FILTER,
                topics.TWIN_UPDATE_RESULT_FILTER,
                *self._device_filters,
            ]
        )
        self._mqtt = mqtt
        self.connected.set()
        for worker in self.devices.values():
            worker.resync()
            self._ask_twin(worker.id)

    def _connection(self) -> MqttConnection:
        return MqttConnection(self.address, client_id=self._client_id)

    def _on_disconnect(self) -> None:
        self.connected.clear()
        self._mqtt = None

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.startswith(topics.MAPPER_PREFIX + "/"):
            device = topics.device_of(topic, f"{topics.MAPPER_PREFIX}/{self.protocol}", "spec")
            if device is not None:
                await self._on_spec(device, payload)
        elif topic.startswith(topics.DEVICE_PREFIX + "/"):
            self._on_twin_message(topic, payload)
        else:
            try:
                self.mapper.on_message(topic, payload)
            except Exception:
                log.exception("mapper %s failed on a message on %s", self.protocol, topic)

    async def _on_spec(self, device: str, payload: bytes) -> None:
        old = self.devices.get(device)
        if not payload:
            self.refused.pop(device, None)
            if old is not None:
                del self.devices[device]
                await old.stop()
                await self.mapper.removed(device)
                log.info("mapper %s: device %s removed", self.protocol, device)
            return
        try:
            spec = DeviceSpecMessage.model_validate_json(payload)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            self._refuse(device, f"spec cannot be read: {where}: {error['msg']}")
            return
        if self.node is not None and spec.node not in (None, self.node):
            log.debug("mapper %s: %s belongs to node %s", self.protocol, device, spec.node)
            return
        if old is not None:
            if old.spec == spec:
                return  # the retained spec again, after a reconnection
            del self.devices[device]
            await old.stop()
        worker = DeviceWorker(spec, self)
        try:
            driver = await self.mapper.open(spec, worker)
        except DeviceConfigError as exc:
            self._refuse(device, str(exc))
            return
        except Exception as exc:
            log.exception("mapper %s failed to open device %s", self.protocol, device)
            self._refuse(device, f"the mapper failed: {exc}")
            return
        self.refused.pop(device, None)
        self.devices[device] = worker
        worker.start(driver)
        self._spec_result(device, None)
        self._ask_twin(device)
        log.info("mapper %s: serving device %s", self.protocol, device)

    def _refuse(self, device: str, reason: str) -> None:
        log.warning("mapper %s: device %s: %s", self.protocol, device, reason)
        self.refused[device] = reason
        self._spec_result(device, reason)
        self.state(device, "unhealthy")

    def _spec_result(self, device: str, reason: str | None) -> None:
        if reason is None:
            payload = accepted_result()
        else:
            payload = error_result("", Code.BAD_REQUEST, reason)
        self.publish(topics.spec_result_topic(self.protocol, device), payload)

    def _ask_twin(self, device: str) -> None:
        self.publish(topics.twin_get_topic(device), get_request(self._event_id()))

    def _on_twin_message(self, topic: str, payload: bytes) -> None:
        delta = topics.device_of(topic, topics.DEVICE_PREFIX, "twin/update/delta")
        got = topics.device_of(topic, topics.DEVICE_PREFIX, "twin/get/result")
        result = topics.device_of(topic, topics.DEVICE_PREFIX, "twin/update/result")
        device = delta or got or result
        worker = self.devices.get(device) if device else None
        if worker is None:
            return
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("mapper %s: %s is not JSON", self.protocol, topic)
            return
        if not isinstance(body, dict):
            return
        if delta is not None:
            worker.desire(string_map(body.get("delta")))
        elif not str(body.get("event_id", "")).startswith(self._event_prefix):
            return  # an answer to someone else
        elif got is not None:
            worker.desire(_unwritten(body.get("twin")))
        elif "code" in body:
            worker.refused(None)
        elif isinstance(body.get("errors"), dict):
            worker.refused(set(body["errors"]))


def _unwritten(twin: object) -> dict[str, str]:
    """From a twin document: the desired values that differ from the reported ones."""
    if not isinstance(twin, dict):
        return {}
    out: dict[str, str] = {}
    for name, sides in twin.items():
        if not isinstance(sides, dict):
            continue
        desired = _value(sides.get("expected"))
        if desired is not None and not _same(desired, _value(sides.get("actual"))):
            out[name] = desired
    return out


def _value(side: object) -> str | None:
    value = side.get("value") if isinstance(side, dict) else None
    return value if isinstance(value, str) else None


def _same(a: str, b: str | None) -> bool:
    if b is None:
        return False
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False
