"""Named, guarded background tasks: one that dies is logged when it dies, not found later;
and the jittered exponential backoff of tasks that retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def start_guarded(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_log_crash)
    return task


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a task and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s crashed", task.get_name(), exc_info=task.exception())


class Backoff:
    """Delays between retries: from ``first`` doubling up to ``max_delay``, each jittered
    by ±50 % so that many retrying clients spread out, and never over ``max_delay`` (the
    bound the settings promise); :meth:`reset` after a success. The one backoff of the
    node (broker links, watches, status writes, Modbus, DMI calls, mosquitto)."""

    def __init__(self, max_delay: float, first: float = 0.1) -> None:
        self.first = first
        self.max_delay = max_delay
        self._delay = first
        self.failures = 0
        """Failures since the last :meth:`reset`."""

    def next_delay(self) -> float:
        """The (jittered) delay before the next attempt; the one after it doubles."""
        delay = min(self._delay * random.uniform(0.5, 1.5), self.max_delay)  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, self.max_delay)
        self.failures += 1
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def longest(self) -> None:
        """Wait the longest delay from now on (an error that retrying soon will not fix)."""
        self._delay = self.max_delay

    def reset(self) -> None:
        self._delay = self.first
        self.failures = 0
