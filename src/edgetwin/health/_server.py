"""A minimal HTTP/1.1 server for a few read-only GET endpoints, on the node's own event loop.

prometheus-client's own servers run in a thread (WSGI) and aiohttp costs
~27 MB of memory to import; a few read-only paths need neither. Each
connection serves one request and closes; a request must arrive within
:data:`READ_TIMEOUT` seconds and :data:`MAX_HEAD` bytes. A handler gets the
query string's parameters (the first value of each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Self
from urllib.parse import parse_qsl, urlsplit

from edgetwin.errors import EdgetwinError

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
MAX_HEAD = 8192

Response = tuple[int, str, bytes]
"""Status code, content type, body."""
Handler = Callable[[dict[str, str]], Awaitable[Response]]
"""Answers a path, given the query's parameters."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_HEADERS = (
    "X-Content-Type-Options: nosniff\r\n"
    "Cache-Control: no-store\r\n"
    "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n"
)
"""Every answer's: the page and its data load only from here, and nothing is cached."""


def always(response: Response) -> Handler:
    """A handler with a fixed answer."""

    async def handler(_query: dict[str, str]) -> Response:
        return response

    return handler


class HealthServer:
    """``async with HealthServer(host, port, routes)``: ``routes`` maps a path to its handler."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self.host = host
        self.port = port
        self._routes = routes
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEAD
            )
        except OSError as exc:
            raise EdgetwinError(
                f"the health endpoint cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            status, content_type, body = await self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{_HEADERS}Connection: close\r\n\r\n".encode()
                + (body if method == "GET" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that is slow, gone or sends too much gets nothing
        except Exception:
            log.exception("health endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, method: str, target: str) -> Response:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        try:
            url = urlsplit(target)
            query = dict(reversed(parse_qsl(url.query, max_num_fields=20)))
        except ValueError:
            return 400, "text/plain", b"bad request target\n"
        route = self._routes.get(url.path)
        if route is None:
            return 404, "text/plain", b"not found\n"
        return await route(query)


def _request_line(head: bytes) -> tuple[str, str]:
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    return method, rest.partition(" ")[0]
