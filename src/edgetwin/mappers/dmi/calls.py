"""The edge's calls to one mapper's ``DeviceMapperService``: in order, retried while it is away.

A mapper built on KubeEdge's mapper-framework registers once, when it
starts; after that the edge calls it on its own socket. Calls go one at a
time in the order they were made, so a device is never updated before it
is registered. A call the mapper cannot take now (it is restarting, its
socket is gone) is retried with backoff until it answers; a call it
refuses is logged and, if someone waits for it, raised as
:class:`MapperCallError`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from edgetwin.errors import EdgetwinError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)

SERVICE = "v1beta1.DeviceMapperService"
_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class MapperCallError(EdgetwinError):
    """The mapper answered a call with an error; the message is its reason."""


@dataclass(slots=True)
class _Call:
    method: str
    request: Message
    response_type: type[Message]
    future: asyncio.Future[Message] | None


class MapperCalls:
    """``calls.send(...)`` or ``await calls.call(...)``; :meth:`close` when done."""

    def __init__(self, protocol: str, address: str, *, timeout: float, max_delay: float) -> None:
        self.protocol = protocol
        self.address = address
        self.timeout = timeout
        self._backoff = Backoff(max_delay)
        self._channel = _channel(address)
        self._queue: asyncio.Queue[_Call] = asyncio.Queue()
        self._log = ThrottledLog(log)
        self._task = start_guarded(self._run(), f"dmi-calls-{protocol}")

    def send(self, method: str, request: Message, response_type: type[Message]) -> None:
        """Queue a call nobody waits for (its failure is logged)."""
        self._queue.put_nowait(_Call(method, request, response_type, None))

    async def call(self, method: str, request: Message, response_type: type[Message]) -> Any:  # noqa: ANN401 - the response_type's message
        """Queue a call and wait for the mapper's answer; MapperCallError if it refuses."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Call(method, request, response_type, future))
        return await future

    async def retarget(self, address: str) -> None:
        """The mapper registered again, perhaps on another socket: call it there from now."""
        if address == self.address:
            return
        old, self._channel, self.address = self._channel, _channel(address), address
        await old.close()

    async def close(self) -> None:
        await stop_task(self._task)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(MapperCallError("the node is stopping"))
        await self._channel.close()

    async def _run(self) -> None:
        while True:
            call = await self._queue.get()
            try:
                response = await self._until_answered(call)
            except MapperCallError as exc:
                log.warning("mapper %s refused %s: %s", self.protocol, call.method, exc)
                if call.future is not None and not call.future.done():
                    call.future.set_exception(exc)
            else:
                if call.future is not None and not call.future.done():
                    call.future.set_result(response)

    async def _until_answered(self, call: _Call) -> Message:
        while True:
            method = self._channel.unary_unary(
                f"/{SERVICE}/{call.method}",
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            )
            try:
                response: Message = await method(
                    call.request, timeout=self.timeout, wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                details = printable(exc.details() or exc.code().name)
                if exc.code() not in _RETRIED:
                    raise MapperCallError(details) from exc
                self._log.write(
                    self.protocol,
                    "unavailable",
                    "mapper %s at %s does not answer (%s); retrying",
                    self.protocol,
                    printable(self.address),
                    details,
                )
                await self._backoff.wait()
            else:
                self._backoff.reset()
                return response


def _channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{address}")
