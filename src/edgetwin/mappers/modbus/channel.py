"""A Modbus connection (a TCP endpoint or a serial line) shared by the devices on it.

Modbus has one request in flight per connection: on a serial line every
slave shares the wire, and many TCP gateways answer one request at a time.
So each channel is one queue and one worker. Writes go before reads, so a
desired value reaches the device ahead of the polls waiting behind it.

pymodbus's own reconnect is off; the worker reconnects on the next request,
with exponential backoff and jitter, and fails requests fast while it waits,
so a device that is gone is reported offline at once instead of stalling the
devices behind it.

pymodbus hands the next frame on the wire to whichever request waits, without
looking at its function code: on a serial line, the late answer to a request
that timed out would be taken for the answer to the next one (a holding
register read decoded as input registers). Each answer is checked against its
request, and one that does not match is dropped and the request sent again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from edgetwin.config import DEFAULTS
from edgetwin.mappers.plugin import DeviceConfigError, DeviceUnavailableError, PropertyError
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)

_PARITY = {"none": "N", "n": "N", "even": "E", "e": "E", "odd": "O", "o": "O"}
_GATEWAY_SILENT = frozenset({ExcCodes.GATEWAY_PATH_UNAVIABLE, ExcCodes.GATEWAY_NO_RESPONSE})
WRITE, READ = 0, 1
_READS = frozenset({1, 2, 3, 4})  # coils, discrete inputs, holding and input registers
_ERROR = 0x80
_RESENDS = 2
"""How many times a request is sent again after answers that belong to earlier ones."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a device is: ``ip``/``port`` (TCP) or ``serialPort`` and line settings (RTU)."""

    host: str | None = None
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> Endpoint:
        serial = config.get("serialPort")
        host = config.get("ip")
        if serial and host:
            raise DeviceConfigError("protocol: give either ip/port (TCP) or serialPort (RTU)")
        if isinstance(serial, str) and serial:
            parity = _PARITY.get(str(config.get("parity", "none")).lower())
            if parity is None:
                raise DeviceConfigError(
                    f"parity: {config.get('parity')!r} is not none, even or odd"
                )
            return cls(
                serial_port=serial,
                baudrate=_number(config, "baudRate", 19200, 50, 4_000_000),
                bytesize=_number(config, "dataBits", 8, 5, 8),
                parity=parity,
                stopbits=_number(config, "stopBits", 1, 1, 2),
            )
        if isinstance(host, str) and host:
            return cls(host=host, port=_number(config, "port", 502, 1, 65535))
        raise DeviceConfigError("protocol: missing ip (Modbus TCP) or serialPort (Modbus RTU)")

    def __str__(self) -> str:
        return self.serial_port or f"{self.host}:{self.port}"


def slave_id(config: Mapping[str, Any]) -> int:
    return _number(config, "slaveID", 1, 0, 247)


def _number(config: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DeviceConfigError(f"{key}: {value!r} is not a whole number in {low}..{high}")
    return value


def answers(request: ModbusPDU, response: ModbusPDU) -> bool:
    """Whether ``response`` is the answer to ``request`` (not a late one to another)."""
    if response.function_code & ~_ERROR != request.function_code:
        return False
    if response.isError():
        return True
    if request.function_code in _READS:
        got = len(response.bits) if request.function_code <= 2 else len(response.registers)
        return request.count <= got < request.count + 8
    return bool(response.address == request.address)


@dataclass(slots=True)
class _Job:
    request: ModbusPDU
    future: asyncio.Future[ModbusPDU]


class Channel:
    """One connection's queue and worker; ``await channel.call(...)`` runs one request."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float = 1.0,
        retries: int = 1,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self.users = 0
        self.requests = 0
        """Requests sent on the wire, for the benchmarks."""
        self.stray_answers = 0
        """Answers dropped because they belonged to an earlier request."""
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._client: ModbusBaseClient | None = None
        self._backoff = Backoff(reconnect_max_delay, first=0.2)
        self._retry_at = 0.0
        self._closed = False
        self._worker = start_guarded(self._work(), f"modbus-{endpoint}")

    async def call(self, request: ModbusPDU, *, priority: int = READ) -> ModbusPDU:
        """Send one request in turn; DeviceUnavailableError or PropertyError if it fails."""
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((priority, next(self._order), _Job(request, future)))
        return await future

    async def close(self) -> None:
        self._closed = True  # the worker also stops on its own if pymodbus swallows the cancel
        await stop_task(self._worker)
        while not self._queue.empty():
            _, _, job = self._queue.get_nowait()
            job.future.cancel()
        self._disconnect()

    async def _work(self) -> None:
        # pymodbus waits with asyncio.wait_for, which on Python 3.11 can swallow a
        # cancellation (CPython gh-86296); hence the flag as well as the cancel.
        while not self._closed:
            _, _, job = await self._queue.get()
            if job.future.done():  # its caller gave up
                continue
            try:
                result = await self._run(job.request)
            except (DeviceUnavailableError, PropertyError) as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)

    async def _run(self, request: ModbusPDU) -> ModbusPDU:
        client = await self._connected()
        for _ in range(_RESENDS + 1):
            response = await self._send(client, request)
            if answers(request, response):
                break
            self.stray_answers += 1
            log.debug("modbus %s: dropped an answer to an earlier request", self.endpoint)
        else:
            raise DeviceUnavailableError(f"{self.endpoint}: answers do not match the requests")
        if response.isError():
            code = response.exception_code
            name = ExcCodes(code).name if code in ExcCodes.__members__.values() else str(code)
            if code in _GATEWAY_SILENT:
                raise DeviceUnavailableError(f"{self.endpoint}: the gateway says {name}")
            raise PropertyError(f"the device answered with exception {code} ({name})")
        return response

    async def _send(self, client: ModbusBaseClient, request: ModbusPDU) -> ModbusPDU:
        self.requests += 1
        try:
            response: ModbusPDU = await client.execute(no_response_expected=False, request=request)
        except ConnectionException as exc:
            self._disconnect()
            raise DeviceUnavailableError(f"{self.endpoint}: connection lost ({exc})") from None
        except ModbusIOException:
            if not client.connected:
                self._disconnect()
            raise DeviceUnavailableError(
                f"{self.endpoint}: no answer within {self.timeout:g} s "
                f"({self.retries + 1} attempt(s))"
            ) from None
        except ModbusException as exc:
            raise PropertyError(f"{self.endpoint}: {exc}") from None
        return response

    async def _connected(self) -> ModbusBaseClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._disconnect()
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise DeviceUnavailableError(
                f"{self.endpoint}: not connected, next attempt in {wait:.1f} s"
            )
        client = self._make_client()
        if await client.connect():
            self._client = client
            if self._backoff.failures:
                log.info("modbus %s: connected again", self.endpoint)
            self._backoff.reset()
            return client
        client.close()
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        raise DeviceUnavailableError(f"{self.endpoint}: cannot connect")

    def _make_client(self) -> ModbusBaseClient:
        endpoint = self.endpoint
        if endpoint.serial_port is not None:
            return AsyncModbusSerialClient(
                endpoint.serial_port,
                baudrate=endpoint.baudrate,
                bytesize=endpoint.bytesize,
                parity=endpoint.parity,
                stopbits=endpoint.stopbits,
                timeout=self.timeout,
                retries=self.retries,
                reconnect_delay=0,
                name=f"edgetwin {endpoint}",
            )
        assert endpoint.host is not None
        return AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            timeout=self.timeout,
            retries=self.retries,
            reconnect_delay=0,
            name=f"edgetwin {endpoint}",
        )

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
