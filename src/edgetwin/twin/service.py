"""The MQTT twin API: subscribe, answer in order, publish only what is committed.

One task takes every message that is waiting at once and applies them to the
engine in arrival order; the batch's rows go to the store's group commit as
one submission, and the batch joins an ordered queue. A second task takes
that queue in order, waits for each commit and publishes the results,
deltas and documents, so while one transaction is being written the next
batch is read and applied. If a commit fails, the
waiting callers get an error result and the engine reloads the devices
concerned from the store before it handles another message.

Around the batches: a delta that went out marks its device's pending writes
sent, a task times out writes past their deadline, and a history/get is
answered from the store once what came before it has committed.

The connection is re-made with backoff when the broker goes away; on every
connection the retained specs and pending deltas are published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, Self

from edgetwin.config import DEFAULTS
from edgetwin.errors import BrokerUnreachableError, StoreError
from edgetwin.mqtt import Session
from edgetwin.tasks import start_guarded, stop_task
from edgetwin.twin.engine import TwinEngine
from edgetwin.twin.history import history_event
from edgetwin.twin.outcome import NOTHING, HistoryQuery, Outcome, Publication
from edgetwin.twin.store import Store, WriteBatch
from edgetwin.wire import topics
from edgetwin.wire.messages import now_ms
from edgetwin.wire.resources import Resource

log = logging.getLogger(__name__)

BY_MANIFESTS = "manifests"
"""Who the history says applied resources given to :meth:`TwinService.apply` by default."""
_DELTA = "twin/update/delta"


class TwinLink(Protocol):
    """The twin's connection to the broker: an MQTT client, or an in-process link."""

    @property
    def address(self) -> object: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def subscribe(self, filters: Sequence[str], qos: int = 1) -> object: ...
    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None: ...
    def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]: ...


class TwinService:
    """``async with TwinService(...)``: connected and serving until the block ends."""

    def __init__(
        self,
        engine: TwinEngine,
        store: Store,
        connect: Callable[[], TwinLink],
        *,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
        observe_latency: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        self.engine = engine
        self._observe_latency = observe_latency
        """Told, for each request, the seconds from its arrival to its result going out."""
        self.store = store
        self.connected = asyncio.Event()
        self._mqtt: TwinLink | None = None
        self._outbound: deque[tuple[asyncio.Future[None], list[Outcome], float | None]] = deque()
        self._outbound_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._writes_moved = asyncio.Event()
        self._expirer: asyncio.Task[None] | None = None
        self._queries: set[asyncio.Task[None]] = set()
        self._session = Session(
            connect,
            on_connect=self._on_connect,
            on_batch=self._on_batch,
            on_disconnect=self._on_disconnect,
            max_delay=reconnect_max_delay,
            name="twin API",
        )

    async def __aenter__(self) -> Self:
        await self._session.__aenter__()
        self._publisher = start_guarded(self._publish_loop(), "twin-publish")
        self._expirer = start_guarded(self._expire_loop(), "twin-write-deadlines")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._expirer)
        for query in list(self._queries):
            await stop_task(query)
        await self._session.__aexit__(None, None, None)
        await self._drained.wait()  # let committed results go out before we disconnect
        await stop_task(self._publisher)

    # --- resources --------------------------------------------------------------------------

    async def apply(self, resources: list[Resource], by: str = BY_MANIFESTS) -> list[str]:
        """Apply resources (models first), wait for the commit; the errors, one line each.
        ``by`` names where they come from, for the history."""
        outcome = self.engine.catalog.apply_resources(resources, by)
        await self._dispatch(outcome)
        return outcome.errors

    async def remove(self, device_ids: list[str], by: str = BY_MANIFESTS) -> None:
        """Remove devices, wait for the commit."""
        outcome = Outcome()
        for device_id in device_ids:
            outcome.extend(self.engine.catalog.remove_device(device_id, by))
        await self._dispatch(outcome)

    # --- serving ----------------------------------------------------------------------------

    async def _on_connect(self, mqtt: TwinLink) -> None:
        await mqtt.subscribe(topics.request_filters(self.engine.node))
        self._mqtt = mqtt
        self._publish(self.engine.catalog.startup_publications())
        self.connected.set()
        log.info("twin API connected to %s as node %s", mqtt.address, self.engine.node)

    def _on_disconnect(self) -> None:
        self.connected.clear()
        self._mqtt = None

    async def _on_batch(self, batch: list[tuple[str, bytes]]) -> None:
        if self.store.failed_devices:
            await self._reload_failed_devices()
        received = time.perf_counter()
        outcomes = []
        for topic, payload in batch:
            request = topics.parse_request_topic(topic)
            if request is not None:
                outcome = self.engine.api.handle(request, payload)
                if outcome is not NOTHING:
                    outcomes.append(outcome)
        if outcomes:
            self._enqueue(outcomes, received)

    def _enqueue(
        self, outcomes: list[Outcome], received: float | None = None
    ) -> asyncio.Future[None]:
        rows = WriteBatch()
        for outcome in outcomes:
            self.engine.announce_membership(outcome)
            rows.merge(outcome.batch)
        if rows.writes:
            self._writes_moved.set()
        future = self.store.submit(rows)
        self._outbound.append((future, outcomes, received))
        self._drained.clear()
        self._outbound_ready.set()
        return future

    async def _dispatch(self, outcome: Outcome) -> None:
        future = self._enqueue([outcome])
        # Shielded: a caller that is cancelled must not cancel the commit the publisher awaits.
        with contextlib.suppress(StoreError):
            await asyncio.shield(future)

    async def _reload_failed_devices(self) -> None:
        ids = self.store.take_failed_devices()
        snapshot = await self.store.load()
        self.engine.catalog.restore_devices(snapshot, ids)
        log.warning("reloaded %d device(s) from the store after a failed write", len(ids))

    async def _publish_loop(self) -> None:
        while True:
            await self._outbound_ready.wait()
            self._outbound_ready.clear()
            while self._outbound:
                await self._publish_next()
            self._drained.set()

    async def _publish_next(self) -> None:
        """Publish the oldest batch once committed (its own frame, so nothing outlives it)."""
        future, outcomes, received = self._outbound[0]
        try:
            if not future.done():  # usually done: the whole batch committed together
                await asyncio.wait((future,))  # never cancels the future, never raises its error
        finally:
            self._outbound.popleft()
        if future.cancelled() or future.exception() is not None:
            pubs = [p for o in outcomes if (p := self.engine.api.store_failed(o)) is not None]
        else:
            pubs = [pub for outcome in outcomes for pub in outcome.all_publications()]
            for outcome in outcomes:
                if outcome.query is not None:
                    self._answer_later(outcome.query)
        self._publish(pubs)
        if received is not None:
            seconds = time.perf_counter() - received
            for _ in outcomes:
                self._observe_latency(seconds)

    def _publish(self, pubs: list[Publication]) -> None:
        mqtt = self._mqtt
        if mqtt is None:
            if pubs:
                log.debug("not connected; %d message(s) not published", len(pubs))
            return
        deltas = []
        try:
            for pub in pubs:
                mqtt.publish_nowait(pub.topic, pub.payload, qos=pub.qos, retain=pub.retain)
                if pub.topic.endswith(_DELTA):
                    deltas.append(pub.topic)
        except BrokerUnreachableError as exc:
            log.debug("%s", exc)
        if deltas:
            devices = {topics.device_of(t, topics.DEVICE_PREFIX, _DELTA) for t in deltas}
            sent = self.engine.writes_sent(d for d in devices if d is not None)
            if sent.batch:
                self._enqueue([sent])

    async def _expire_loop(self) -> None:
        """Time out each open write when its deadline passes."""
        while True:
            deadline = self.engine.writes.next_deadline()
            delay = None if deadline is None else max(0.0, (deadline - now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._writes_moved.wait()
            self._writes_moved.clear()
            expired = self.engine.expire_writes()
            if expired.batch:
                self._enqueue([expired])

    def _answer_later(self, query: HistoryQuery) -> None:
        task = start_guarded(self._answer(query), "twin-history-query")
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)

    async def _answer(self, query: HistoryQuery) -> None:
        try:
            rows = await self.store.history(query.device, query.prop, query.since_ms, query.limit)
        except StoreError as exc:
            log.warning("history of %s not read: %s", query.device, exc)
            return
        events = [history_event(row) for row in rows]
        self._publish([self.engine.api.history_answer(query, events)])
