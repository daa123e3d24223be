"""Serving a broker connection forever: reconnect with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, Self, TypeVar

from edgetwin.errors import BrokerUnreachableError

log = logging.getLogger(__name__)


class Link(Protocol):
    """A connection to a broker, or an in-process link to the embedded one."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]: ...


LinkT = TypeVar("LinkT", bound=Link)


async def serve_reconnecting(
    first: LinkT | None,
    connect: Callable[[], LinkT],
    *,
    on_connect: Callable[[LinkT], Awaitable[None]],
    on_batch: Callable[[list[tuple[str, bytes]]], Awaitable[None]],
    on_disconnect: Callable[[], None],
    max_delay: float,
    name: str,
) -> None:
    """Hand the messages to ``on_batch``, all that are waiting at a time; on loss, connect
    again and call ``on_connect``.

    ``first`` is a link already connected (and announced); the loop owns and closes it.
    """
    link = first
    delay = 0.1
    while True:
        try:
            if link is None:
                link = connect()
                await link.__aenter__()
                await on_connect(link)
                log.info("%s connected again", name)
            delay = 0.1
            async for batch in link.batches():
                await on_batch(batch)
        except BrokerUnreachableError as exc:
            log.warning("%s: %s; retrying in %.1f s", name, exc, delay)
        finally:
            on_disconnect()
            if link is not None:
                await link.__aexit__(None, None, None)
            link = None
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
        delay = min(delay * 2, max_delay)
