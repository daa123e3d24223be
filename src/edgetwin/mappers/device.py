"""One device served by a mapper: desired values written, properties polled, readings reported.

Each device has its own task, so a slow or silent device never holds up
another. Every round it first writes the desired values still pending (and
reads each back, reporting it at once), then reads the properties whose
``collectCycle`` has come round, in one call so the driver can coalesce
them, then reports what changed, each property at most once per
``reportCycle``. A device that does not answer is reported ``offline``;
the first answer after that makes it ``online`` and the pending desired
values are written straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from edgetwin.mappers.plugin import (
    DeviceDriver,
    DeviceUnavailableError,
    PropertyError,
)
from edgetwin.tasks import start_guarded, stop_task
from edgetwin.wire.messages import DeviceState
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

log = logging.getLogger(__name__)


class DeviceOutput(Protocol):
    """Where a device's reports go: the runtime, which publishes them on the twin API."""

    def report(self, device: str, twin: dict[str, Any]) -> None: ...
    def state(self, device: str, state: DeviceState) -> None: ...
    def write_failed(self, device: str, prop: str, value: str, reason: str) -> None: ...
    def read_failed(self, device: str, prop: str, reason: str) -> None: ...


class DeviceWorker:
    """A device's task; also the driver's :class:`~edgetwin.mappers.plugin.DeviceSink`."""

    def __init__(self, spec: DeviceSpecMessage, output: DeviceOutput) -> None:
        self.spec = spec
        self.id = spec.id
        self.properties = {p.name: p for p in spec.properties}
        self.output = output
        self.driver: DeviceDriver | None = None
        self.state: DeviceState | None = None
        self.pending: dict[str, str] = {}
        self.latest: dict[str, str] = {}
        self._reported: dict[str, tuple[str, float]] = {}
        self._read_back: set[str] = set()
        self._failing: dict[str, str] = {}
        self._next_poll: dict[str, float] = {}
        self._report_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, driver: DeviceDriver) -> None:
        self.driver = driver
        if driver.polled:
            now = time.monotonic()
            self._next_poll = dict.fromkeys(self.properties, now)
        self._task = start_guarded(self._run(), f"mapper-device-{self.id}")

    async def stop(self) -> None:
        await stop_task(self._task)
        if self.driver is not None:
            await self.driver.close()

    # --- from the runtime ------------------------------------------------------------------

    def desire(self, values: Mapping[str, str]) -> None:
        """Desired values to write (from a delta or the twin's document)."""
        for name, value in values.items():
            prop = self.properties.get(name)
            if prop is not None and prop.access_mode == "ReadWrite":
                self.pending[name] = value
        if self.pending:
            self._wake.set()

    def refused(self, names: set[str] | None) -> None:
        """The twin refused these reported properties (None: the whole report): report them
        again with the next reading, changed or not. Not at once, which could loop."""
        for name in list(self._reported) if names is None else names:
            self._reported.pop(name, None)

    def resync(self) -> None:
        """After a reconnection: the twin may have missed anything, so tell it all again."""
        self._reported.clear()
        if self.state is not None:
            self.output.state(self.id, self.state)
        self._wake.set()

    # --- the DeviceSink protocol -----------------------------------------------------------

    def push(self, values: Mapping[str, str]) -> None:
        own = self.driver is not None and self.driver.self_reporting
        if not own:
            self._online()
        self._take({k: v for k, v in values.items() if k in self.properties}, read_back=own)
        self._wake.set()

    def set_state(self, state: DeviceState) -> None:
        if state in ("online", "ok"):
            self._online()
        else:
            self._set_state(state, "the device says so")
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            reachable = await self._write_pending() if self.pending else True
            now = time.monotonic()
            due = [
                p
                for name, p in self.properties.items()
                if self._next_poll.get(name, now + 1) <= now
            ]
            if due:
                if reachable:
                    await self._poll(due)
                for prop in due:
                    cycle = prop.collect_cycle / 1000
                    self._next_poll[prop.name] = max(self._next_poll[prop.name] + cycle, now)
            self._flush()
            await self._sleep()

    async def _write_pending(self) -> bool:
        """Write every pending desired value; False if the device did not answer."""
        assert self.driver is not None
        for name, value in list(self.pending.items()):
            prop = self.properties[name]
            try:
                await self.driver.write(prop, value)
            except DeviceUnavailableError as exc:
                self._set_state("offline", str(exc))
                return False
            except PropertyError as exc:
                self._done(name, value)
                log.warning("device %s: cannot write %s=%s: %s", self.id, name, value, exc)
                self.output.write_failed(self.id, name, value, str(exc))
                continue
            self._done(name, value)
            if not self.driver.self_reporting:
                self._online()
            log.debug("device %s: wrote %s=%s", self.id, name, value)
            if self.driver.polled and not await self._poll([prop], read_back=True):
                return False
        return True

    def _done(self, name: str, value: str) -> None:
        if self.pending.get(name) == value:  # a newer desired value stays pending
            del self.pending[name]

    async def _poll(self, props: list[PropertySpec], *, read_back: bool = False) -> bool:
        assert self.driver is not None
        try:
            values = await self.driver.read(props)
        except DeviceUnavailableError as exc:
            self._set_state("offline", str(exc))
            return False
        self._online()
        self._take(values, read_back=read_back)
        return True

    def _take(self, values: Mapping[str, str | PropertyError], *, read_back: bool) -> None:
        for name, value in values.items():
            if isinstance(value, PropertyError):
                reason = str(value)
                if self._failing.get(name) != reason:
                    self._failing[name] = reason
                    log.warning("device %s: cannot read %s: %s", self.id, name, reason)
                    self.output.read_failed(self.id, name, reason)
                continue
            if self._failing.pop(name, None) is not None:
                log.info("device %s: %s reads again", self.id, name)
            self.latest[name] = value
            if read_back:
                self._read_back.add(name)

    def _flush(self) -> None:
        """Report what changed, each property at most once per reportCycle (read-backs at once)."""
        now = time.monotonic()
        self._report_at = None
        twin: dict[str, Any] = {}
        for name, value in self.latest.items():
            last = self._reported.get(name)
            if last is not None and last[0] == value:
                continue
            prop = self.properties[name]
            due = last[1] + prop.report_cycle / 1000 if last is not None else now
            if due <= now or name in self._read_back:
                twin[name] = {
                    "actual": {"value": value},
                    "metadata": {"type": prop.type.lower()},
                }
                self._reported[name] = (value, now)
            elif self._report_at is None or due < self._report_at:
                self._report_at = due
        self._read_back.clear()
        if twin:
            self.output.report(self.id, twin)

    async def _sleep(self) -> None:
        wake_at = min([*self._next_poll.values(), self._report_at or float("inf")], default=None)
        delay = None if wake_at in (None, float("inf")) else max(0.0, wake_at - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    # --- state -----------------------------------------------------------------------------

    def _online(self) -> None:
        if self.state != "online":
            if self.state is not None:
                log.info("device %s answers again", self.id)
            self._set_state("online", "")
            if self.pending:
                self._wake.set()

    def _set_state(self, state: DeviceState, reason: str) -> None:
        if self.state == state:
            return
        self.state = state
        if state == "offline":
            log.warning("device %s is offline: %s", self.id, reason)
        self.output.state(self.id, state)
