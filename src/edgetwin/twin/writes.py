"""Where each desired value's write stands: set, sent, then written, failed or timed out.

A desired value that differs from what the device reports opens a write,
*pending* until its delta goes out to the mappers, then *sent*. A report
equal to it closes it *written*; the mapper's error for it (on
``…/twin/update/delta/result``, as edgetwin's mappers and its DMI bridge
publish it) closes it *failed*, with the mapper's reason; no read-back
before its deadline closes it *timed out*. A failed or timed-out write
still becomes written if the value is read back later. A report that
differs from a written value is a *drift*: the write opens again, and the
twin's delta applies the value again.

Each move is a ``writes`` row and a history row in the change's batch, a
message on ``…/twin/write`` once it commits (``edgetwin set --wait`` and
other watchers), and a mark for the cluster (observed desired metadata).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from edgetwin.config import TwinSettings
from edgetwin.twin.history import History, Kind
from edgetwin.twin.outcome import Outcome, Publication
from edgetwin.twin.state import DeviceTwin
from edgetwin.twin.store.rows import WriteBatch, WriteRow
from edgetwin.wire import topics
from edgetwin.wire.messages import write_message

WRITE_TIMEOUT_ANNOTATION = "edgetwin.io/write-timeout"
"""On a DeviceModel: the write timeout of its properties (``desired.metadata.writeTimeout``
on a Device's property overrides it)."""
WRITE_TIMEOUT_METADATA = "writeTimeout"


class Phase(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    WRITTEN = "written"
    FAILED = "failed"
    TIMED_OUT = "timedout"


OPEN = (Phase.PENDING, Phase.SENT)
CLOSED = (Phase.WRITTEN, Phase.FAILED, Phase.TIMED_OUT)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}

CloudMark = Callable[[WriteBatch, DeviceTwin, str, int], None]
"""Tells the cloud sync a property's write moved (it writes the observed desired metadata)."""


def duration_ms(text: str) -> int:
    """``500ms``, ``10s``, ``2m``, ``1h`` or a number of seconds, in milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 10s or 2m")
    return max(1, round(float(match[1]) * _UNIT_MS[match[2]]))


def write_status(row: WriteRow) -> dict[str, Any]:
    """A write as the twin API and the page show it (times in epoch ms)."""
    status: dict[str, Any] = {"phase": row.phase, "value": row.value, "by": row.by}
    status["set"] = row.set_ms
    if row.sent_ms:
        status["sent"] = row.sent_ms
    status["at"] = row.at_ms
    if row.phase in OPEN:
        status["deadline"] = row.deadline_ms
    if row.reason:
        status["reason"] = row.reason
    return status


class WriteBook:
    """The writes of every device of the node, by (device, property)."""

    def __init__(self, settings: TwinSettings, history: History, result_qos: int) -> None:
        self.settings = settings
        self.history = history
        self.result_qos = result_qos
        self.cloud: CloudMark | None = None
        self._open: dict[tuple[str, str], int] = {}
        """The open writes' deadlines (the writes are each twin's ``writes``)."""
        self.closed: Counter[str] = Counter()
        """Writes closed, by phase (written, failed, timedout)."""
        self.drifts = 0
        self.stray_results = 0
        """Mappers' write errors for no open write of that value (late, or forged)."""
        self.observe_seconds: Callable[[float], None] = lambda _seconds: None
        """Told, for each write that is read back, the seconds from set to written."""

    # --- start-up -------------------------------------------------------------------------

    def restore(self, devices: Mapping[str, DeviceTwin], rows: Iterable[WriteRow]) -> None:
        for row in rows:
            twin = devices.get(row.device)
            if twin is not None and row.property in twin.properties:
                self._keep(twin, row)

    def forget(self, twin: DeviceTwin) -> None:
        """A device gone (its rows go with it in the store)."""
        for name in twin.writes:
            self._open.pop((twin.id, name), None)
        twin.writes.clear()

    # --- moves ----------------------------------------------------------------------------

    def desired_set(self, outcome: Outcome, twin: DeviceTwin, name: str, by: str, now: int) -> None:
        """A property's desired value was set (or deleted) by ``by``."""
        prop = twin.properties[name]
        key = twin.id, name
        self.history.record(
            outcome.batch, twin.id, name, Kind.DESIRED, prop.desired, at=now, detail=by
        )
        if prop.desired is None:
            if twin.writes.pop(name, None) is not None:
                self._open.pop(key, None)
                outcome.batch.writes[key] = None
            return
        if twin.pending(name) is None:
            phase, deadline, reason = Phase.WRITTEN, 0, "the device reports it already"
        else:
            phase, deadline, reason = Phase.PENDING, now + self._timeout_ms(twin, name), ""
        row = WriteRow(*key, phase, prop.desired, by, now, 0, now, deadline, reason)
        self._move(outcome, twin, row)

    def reported(self, outcome: Outcome, twin: DeviceTwin, name: str, now: int) -> None:
        """A property's reported value changed: a write read back, or a drift."""
        row = twin.writes.get(name)
        if row is None:
            return
        if twin.pending(name) is None:
            if row.phase != Phase.WRITTEN:
                self._move(outcome, twin, row._replace(phase=Phase.WRITTEN, at_ms=now, reason=""))
        elif row.phase == Phase.WRITTEN:
            self.drifts += 1
            reported = twin.properties[name].reported
            deadline = now + self._timeout_ms(twin, name)
            reason = f"drift: the device reported {reported}"
            self._move(
                outcome,
                twin,
                row._replace(
                    phase=Phase.PENDING, sent_ms=0, at_ms=now, deadline_ms=deadline, reason=reason
                ),
                event="drift",
            )

    def failed(
        self,
        outcome: Outcome,
        twin: DeviceTwin,
        name: str,
        now: int,
        *,
        value: str | None,
        reason: str,
    ) -> bool:
        """A mapper could not write ``value`` (None: the current one); False if no write of
        that value is open or was timed out."""
        row = twin.writes.get(name)
        if row is None or row.phase == Phase.WRITTEN or value not in (None, row.value):
            self.stray_results += 1
            return False
        if row.phase != Phase.FAILED or row.reason != reason:
            self._move(outcome, twin, row._replace(phase=Phase.FAILED, at_ms=now, reason=reason))
        return True

    def sent(self, outcome: Outcome, twin: DeviceTwin, now: int) -> None:
        """A delta with the device's pending values went out to the mappers."""
        for name in twin.delta():
            row = twin.writes.get(name)
            if row is not None and row.phase == Phase.PENDING:
                self._move(outcome, twin, row._replace(phase=Phase.SENT, sent_ms=now, at_ms=now))

    def expire(self, outcome: Outcome, devices: Mapping[str, DeviceTwin], now: int) -> None:
        """Close the open writes whose deadline has passed."""
        for key, deadline in list(self._open.items()):
            if deadline > now:
                continue
            twin = devices.get(key[0])
            row = twin.writes.get(key[1]) if twin is not None else None
            if twin is None or row is None or key[1] not in twin.properties:
                del self._open[key]
                continue
            seconds = self._timeout_ms(twin, key[1]) / 1000
            reason = f"not read back within {seconds:g} s"
            if twin.state not in ("online", "ok"):
                reason += f" (device {twin.state})"
            self._move(outcome, twin, row._replace(phase=Phase.TIMED_OUT, at_ms=now, reason=reason))

    def next_deadline(self) -> int | None:
        return min(self._open.values(), default=None)

    # --- inside ---------------------------------------------------------------------------

    def _move(self, outcome: Outcome, twin: DeviceTwin, row: WriteRow, event: str = "") -> None:
        key = row.device, row.property
        self._keep(twin, row)
        batch = outcome.batch
        batch.writes[key] = row
        detail = row.reason or row.by
        self.history.record(
            batch,
            row.device,
            row.property,
            Kind.WRITE,
            event or row.phase,
            at=row.at_ms,
            detail=detail,
        )
        if row.phase in CLOSED:
            self.closed[row.phase] += 1
        if row.phase == Phase.WRITTEN and row.at_ms > row.set_ms:
            self.observe_seconds((row.at_ms - row.set_ms) / 1000)
        if self.cloud is not None:
            self.cloud(batch, twin, row.property, row.at_ms)
        payload = write_message(row.property, row.at_ms, write_status(row))
        topic = topics.write_topic(row.device)
        outcome.notices.append(Publication(topic, payload, qos=self.result_qos))

    def _keep(self, twin: DeviceTwin, row: WriteRow) -> None:
        key = row.device, row.property
        twin.writes[row.property] = row
        if row.phase in OPEN:
            self._open[key] = row.deadline_ms
        else:
            self._open.pop(key, None)

    def _timeout_ms(self, twin: DeviceTwin, name: str) -> int:
        """The property's own, else its model's, else the node's (checked when applied)."""
        text = dict(twin.record.write_timeouts).get(name)
        if text is None and twin.model is not None:
            text = (twin.model.metadata.annotations or {}).get(WRITE_TIMEOUT_ANNOTATION)
        if text is not None:
            try:
                return duration_ms(text)
            except ValueError:
                pass  # refused when applied; a stored one from before falls back
        return round(self.settings.write_timeout * 1000)
