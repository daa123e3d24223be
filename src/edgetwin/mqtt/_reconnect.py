"""A broker connection served until it is closed: the first connection fails fast, later
losses are reconnected with jittered exponential backoff. The one session of the twin,
the mappers and ``acl --follow``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, Self, TypeVar

from edgetwin.errors import BrokerUnreachableError
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)


class Link(Protocol):
    """A connection to a broker, or an in-process link to the embedded one."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]: ...


LinkT = TypeVar("LinkT", bound=Link)

Batch = list[tuple[str, bytes]]


def one_by_one(
    on_message: Callable[[str, bytes], Awaitable[None]],
) -> Callable[[Batch], Awaitable[None]]:
    """An ``on_batch`` for a client that takes its messages one at a time, in order."""

    async def on_batch(batch: Batch) -> None:
        for topic, payload in batch:
            await on_message(topic, payload)

    return on_batch


class Session(Generic[LinkT]):
    """``async with Session(connect, ...)``: connected (or BrokerUnreachableError) and
    serving until the block ends.

    ``on_connect`` runs on every connection before its messages are served (subscribe,
    publish what the broker must have again); ``on_batch`` gets the messages, all that are
    waiting at a time; ``on_disconnect`` runs when a connection is lost or closed.
    """

    def __init__(
        self,
        connect: Callable[[], LinkT],
        *,
        on_connect: Callable[[LinkT], Awaitable[None]],
        on_batch: Callable[[Batch], Awaitable[None]],
        on_disconnect: Callable[[], None],
        max_delay: float,
        name: str,
    ) -> None:
        self._connect = connect
        self._on_connect = on_connect
        self._on_batch = on_batch
        self._on_disconnect = on_disconnect
        self._max_delay = max_delay
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._unserved: LinkT | None = None
        """The first connection, until the serving task has taken it over."""

    async def __aenter__(self) -> Self:
        first = self._connect()
        await first.__aenter__()  # a broker that cannot be reached is a clear error now
        try:
            await self._on_connect(first)
        except BaseException:
            await first.__aexit__(None, None, None)
            raise
        self._unserved = first
        self._task = start_guarded(self._serve(), self.name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)
        first, self._unserved = self._unserved, None
        if first is not None:  # stopped before the task ran: the link is still ours
            self._on_disconnect()
            await first.__aexit__(None, None, None)

    async def _serve(self) -> None:
        link: LinkT | None
        link, self._unserved = self._unserved, None
        backoff = Backoff(self._max_delay)
        while True:
            try:
                if link is None:
                    link = self._connect()
                    await link.__aenter__()
                    await self._on_connect(link)
                    log.info("%s connected again", self.name)
                backoff.reset()
                async for batch in link.batches():
                    await self._on_batch(batch)
            except BrokerUnreachableError as exc:
                log.warning("%s: %s; connecting again", self.name, exc)
            finally:
                self._on_disconnect()
                if link is not None:
                    await link.__aexit__(None, None, None)
                link = None
            await backoff.wait()
