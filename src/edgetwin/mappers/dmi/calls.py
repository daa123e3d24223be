"""The edge's calls to one mapper's ``DeviceMapperService``, on the socket it registered.

A call either gets the mapper's answer, or fails in one of two ways that
the caller (:mod:`.handover`) treats apart: the mapper is not there now
(:class:`MapperUnavailableError`: its socket is gone, it is restarting, it
did not answer in time), or it answered with an error
(:class:`MapperCallError`, the mapper's reason).
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message

from edgetwin.errors import EdgetwinError
from edgetwin.logs import printable

SERVICE = "v1beta1.DeviceMapperService"
_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

Response = TypeVar("Response", bound=Message)


class MapperCallError(EdgetwinError):
    """The mapper answered a call with an error; the message is its reason."""


class MapperUnavailableError(MapperCallError):
    """The mapper did not answer: its socket is gone or it took too long."""


class MapperCalls:
    """``await calls.call(...)``; :meth:`close` when done."""

    def __init__(self, protocol: str, address: str, *, timeout: float) -> None:
        self.protocol = protocol
        self.address = address
        self.timeout = timeout
        self._channel = _channel(address)

    async def call(self, method: str, request: Message, response_type: type[Response]) -> Response:
        """One call, answered or failed (MapperUnavailableError, MapperCallError)."""
        stub = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            response: Response = await stub(request, timeout=self.timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            details = printable(exc.details() or exc.code().name)
            if exc.code() in _UNAVAILABLE:
                raise MapperUnavailableError(details) from exc
            raise MapperCallError(details) from exc
        return response

    async def retarget(self, address: str) -> None:
        """The mapper registered again, perhaps on another socket: call it there from now."""
        if address == self.address:
            return
        old, self._channel, self.address = self._channel, _channel(address), address
        await old.close()

    async def close(self) -> None:
        await self._channel.close()


def _channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{address}")
