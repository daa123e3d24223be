"""A simulated MQTT JSON sensor in the manner of a Zigbee2MQTT device, for examples/mqtt-sensor.

It publishes ``{"temperature", "humidity", "led"}`` on ``zigbee2mqtt/<name>``
every ``interval`` seconds and at once after a command, takes commands such
as ``{"led": "ON"}`` on ``zigbee2mqtt/<name>/set``, and keeps
``zigbee2mqtt/<name>/availability`` (retained) at ``online``, with a will
that turns it ``offline`` if the sensor vanishes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any, Self

import orjson

from edgetwin.errors import BrokerUnreachableError
from edgetwin.mqtt import BrokerAddress, MqttConnection
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)


class MqttSensorSimulator:
    """``async with MqttSensorSimulator(address)``: publishing until the block ends."""

    def __init__(
        self, address: BrokerAddress, name: str = "sensor-01", interval: float = 1.0
    ) -> None:
        self.address = address
        self.name = name
        self.interval = interval
        self.state_topic = f"zigbee2mqtt/{name}"
        self.command_topic = f"{self.state_topic}/set"
        self.availability_topic = f"{self.state_topic}/availability"
        self.state: dict[str, Any] = {"temperature": 21.0, "humidity": 45, "led": "OFF"}
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = start_guarded(self._run(), f"mqtt-sensor-{self.name}")
        log.info("simulated sensor %s on %s", self.state_topic, self.address)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        backoff = Backoff(5.0, first=0.2)
        while True:
            try:
                await self._serve()
            except BrokerUnreachableError as exc:
                log.warning("sensor %s: %s; connecting again", self.name, exc)
            await backoff.wait()

    async def _serve(self) -> None:
        will = (self.availability_topic, b"offline")
        async with MqttConnection(self.address, will=will) as mqtt:
            await mqtt.subscribe([self.command_topic])
            await mqtt.publish(self.availability_topic, b"online", retain=True)
            publisher = start_guarded(self._publish_loop(mqtt), f"mqtt-sensor-{self.name}-publish")
            try:
                async for _topic, payload in mqtt.messages():
                    if self._command(payload):
                        await mqtt.publish(self.state_topic, orjson.dumps(self.state))
            finally:
                await stop_task(publisher)

    def _command(self, payload: bytes) -> bool:
        try:
            command = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("sensor %s: command is not JSON", self.name)
            return False
        if not isinstance(command, dict):
            return False
        known = {k: v for k, v in command.items() if k == "led" and v in ("ON", "OFF")}
        self.state.update(known)
        return bool(known)

    async def _publish_loop(self, mqtt: MqttConnection) -> None:
        while True:
            elapsed = time.monotonic() - self._started
            self.state["temperature"] = round(21.0 + 2 * math.sin(elapsed / 60), 1)
            self.state["humidity"] = 45 + random.randint(-2, 2)  # noqa: S311 - a simulation
            await mqtt.publish(self.state_topic, orjson.dumps(self.state))
            await asyncio.sleep(self.interval)
