"""The MQTT client adapter: the one place that knows aiomqtt (and, under it, paho).

Every client sets ``TCP_NODELAY``: without it a QoS 1 request/response pays
Nagle against delayed ACKs (40+ ms a round trip). :meth:`MqttConnection.publish_nowait`
hands a message to paho without waiting for its PUBACK, so a batch of results
costs one socket write each instead of one awaited round trip each; paho
still completes the QoS 1 flow.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import aiomqtt
import orjson

from edgetwin.config import BrokerSettings
from edgetwin.errors import BrokerUnreachableError, RequestError

log = logging.getLogger(__name__)

_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect; built from the broker settings."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    tls: bool = False
    keepalive: int = 30

    @classmethod
    def from_settings(cls, settings: BrokerSettings, port: int | None = None) -> BrokerAddress:
        tls = settings.tls
        return cls(
            host=settings.host,
            port=settings.port if port is None else port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            ca_file=tls.ca_file if tls else None,
            cert_file=tls.cert_file if tls else None,
            key_file=tls.key_file if tls else None,
            tls_insecure=tls.insecure if tls else False,
            tls=tls is not None,
            keepalive=settings.keepalive,
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class MqttConnection:
    """One connection to the broker: ``async with MqttConnection(address) as mqtt: ...``.

    Raises BrokerUnreachableError if the broker cannot be reached or says no.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        persistent: bool = False,
    ) -> None:
        self.address = address
        self._persistent = persistent
        self.client_id = client_id or f"edgetwin-{uuid.uuid4().hex[:12]}"
        self._will = will
        self._client: aiomqtt.Client | None = None

    def _make_client(self) -> aiomqtt.Client:
        address = self.address
        tls_params = None
        if address.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(address.ca_file) if address.ca_file else None,
                certfile=str(address.cert_file) if address.cert_file else None,
                keyfile=str(address.key_file) if address.key_file else None,
            )
        will = None
        if self._will is not None:
            will = aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True)
        return aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=self.client_id,
            keepalive=address.keepalive,
            tls_params=tls_params,
            tls_insecure=address.tls_insecure if address.tls else None,
            socket_options=_NODELAY,
            will=will,
            clean_session=not self._persistent,
            timeout=10,
            max_inflight_messages=1000,
        )

    async def __aenter__(self) -> Self:
        client = self._make_client()
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachableError(
                f"cannot connect to the MQTT broker at {self.address}: {exc}"
            ) from None
        self._client = client
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as error:
                log.debug("disconnect from %s: %s", self.address, error)

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None:
            raise BrokerUnreachableError(f"not connected to the MQTT broker at {self.address}")
        return self._client

    async def subscribe(self, filters: Sequence[str], qos: int = 1) -> None:
        try:
            await self.client.subscribe([(f, qos) for f in filters])
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachableError(f"subscribe at {self.address} failed: {exc}") from None

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        try:
            await self.client.unsubscribe(list(filters))
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachableError(f"unsubscribe at {self.address} failed: {exc}") from None

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1, wait for the broker's acknowledgement."""
        try:
            await self.client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachableError(f"publish to {self.address} failed: {exc}") from None

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a publication in paho without awaiting its acknowledgement."""
        info = self.client._client.publish(topic, payload, qos=qos, retain=retain)  # noqa: SLF001
        if info.rc != 0:
            raise BrokerUnreachableError(f"publish to {self.address} failed (paho rc {info.rc})")

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Incoming messages as ``(topic, payload)``; ends with BrokerUnreachableError on loss."""
        try:
            async for message in self.client.messages:
                payload = message.payload
                yield message.topic.value, payload if isinstance(payload, bytes) else b""
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachableError(f"lost the MQTT broker at {self.address}: {exc}") from None


async def request(
    mqtt: MqttConnection,
    topic: str,
    payload: bytes,
    *,
    result_topic: str,
    event_id: str,
    wait: float = 10.0,
) -> bytes:
    """Publish a request and wait for the result carrying the same event_id."""
    await mqtt.subscribe([result_topic])

    async def wait_for_result() -> bytes:
        async for got_topic, got in mqtt.messages():
            if got_topic != result_topic:
                continue
            try:
                body = orjson.loads(got)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict) and body.get("event_id") == event_id:
                return got
        raise RequestError(f"no result on {result_topic}")

    waiter = asyncio.create_task(wait_for_result(), name="mqtt-request")
    try:
        await mqtt.publish(topic, payload)
        async with asyncio.timeout(wait):
            return await waiter
    except TimeoutError:
        raise RequestError(
            f"no answer on {result_topic} within {wait:g} s (is the node running?)"
        ) from None
    finally:
        waiter.cancel()
