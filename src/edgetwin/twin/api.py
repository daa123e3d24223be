"""The MQTT twin API: each request checked, applied to the catalog's twins and answered.

Bad input never raises out of :meth:`TwinApi.handle`: it is answered with an
error result in KubeEdge's shape, counted by code and logged at most once per
device and reason every 10 s.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from edgetwin.config import TwinSettings
from edgetwin.errors import EdgetwinError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.rates import RateLimits
from edgetwin.twin.catalog import Catalog
from edgetwin.twin.history import Kind
from edgetwin.twin.manifests import parse_document
from edgetwin.twin.outcome import NOTHING, HistoryQuery, Outcome, Publication, delta_publication
from edgetwin.twin.state import DeviceTwin, PropertyTwin
from edgetwin.twin.values import InvalidValueError, Parsed
from edgetwin.twin.writes import write_status
from edgetwin.wire import topics
from edgetwin.wire.messages import (
    ApplyRequest,
    BadRequestError,
    Code,
    HistoryGetRequest,
    MembershipGetRequest,
    StateUpdateRequest,
    TwinEntry,
    TwinGetRequest,
    TwinUpdateRequest,
    WriteResultRequest,
    apply_result,
    document_message,
    error_result,
    event_id_of,
    history_result,
    membership_result,
    now_ms,
    parse_request,
    state_update_result,
    twin_get_result,
    twin_update_result,
)
from edgetwin.wire.names import split_device_id
from edgetwin.wire.resources import Resource

log = logging.getLogger(__name__)

ONLINE_STATES = frozenset({"online", "ok"})
_BUDGETED = frozenset(
    {
        topics.RequestKind.TWIN_UPDATE,
        topics.RequestKind.STATE_UPDATE,
        topics.RequestKind.HISTORY_GET,
        topics.RequestKind.WRITE_RESULT,
    }
)
"""The requests that write or read the store, and so count against a device's budget."""
APPLIED_BY = "edgetwin apply"
"""Who the history says applied resources sent with ``edgetwin apply``."""


class TwinApi:
    """Answers the requests of devices, mappers and ``edgetwin`` commands."""

    def __init__(self, catalog: Catalog, settings: TwinSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        self.accepted: Counter[str] = Counter()
        """Answered requests by kind (twin/update, ...), for the metrics."""
        self.rejected: Counter[int] = Counter()
        """Rejected requests by error code, for the metrics."""
        self.refused_properties: Counter[int] = Counter()
        """Properties refused in twin/updates that were otherwise applied, by error code."""
        self.out_of_range_reports = 0
        """Reported values kept although outside their model's bounds."""
        self.rejections = ThrottledLog(log)
        """The log of refused requests: one line per device and reason every 10 s at most."""
        rate = settings.max_updates_per_device_per_second
        self._budgets = RateLimits(rate, rate * 2)
        self._told = RateLimits(1.0, 1.0)
        """When a device over its budget is next answered 429: once a second."""
        kinds = topics.RequestKind
        self._handlers: dict[topics.RequestKind, Callable[[topics.Request, bytes], Outcome]] = {
            kinds.TWIN_UPDATE: self._twin_update,
            kinds.TWIN_GET: self._twin_get,
            kinds.STATE_UPDATE: self._state_update,
            kinds.MEMBERSHIP_GET: self._membership_get,
            kinds.NODE_APPLY: self._apply_request,
            kinds.HISTORY_GET: self._history_get,
            kinds.WRITE_RESULT: self._write_result,
        }

    def handle(self, request: topics.Request, payload: bytes) -> Outcome:
        """Answer one request; never raises for bad input."""
        if request.kind in _BUDGETED and not self._budgets.allow(request.device):
            return self._over_budget(request, payload)
        try:
            self._check_size(payload)
            outcome = self._handlers[request.kind](request, payload)
            self.accepted[request.kind.value] += 1
            return outcome  # noqa: TRY300 - the counting belongs with the answer
        except BadRequestError as exc:
            known = request.device in self.catalog.devices
            sender = request.device if known else "unknown device"
            self.rejections.write(
                sender,
                str(exc.code),
                "rejected %s on %s: %s",
                request.kind.value,
                request.topic,
                exc.reason,
            )
            self.rejected[exc.code] += 1
            if request.kind is topics.RequestKind.WRITE_RESULT:
                return Outcome()  # a result is not answered
            result = error_result(exc.event_id, exc.code, exc.reason)
            return Outcome(publications=[self.reply(request.result_topic, result)])

    def reply(self, topic: str, payload: bytes) -> Publication:
        """A result or document: at the configured QoS."""
        return Publication(topic, payload, qos=self.settings.result_qos)

    def store_failed(self, outcome: Outcome) -> Publication | None:
        """The error result for a request whose commit failed (counted), if it waits for one."""
        if outcome.on_failure is None:
            return None
        topic, event_id = outcome.on_failure
        self.rejected[Code.STORE_FAILED] += 1
        return self.reply(topic, error_result(event_id, Code.STORE_FAILED, "store write failed"))

    def _check_size(self, payload: bytes) -> None:
        limit = self.settings.max_payload_bytes
        if len(payload) > limit:
            raise BadRequestError(
                f"payload of {len(payload)} bytes is over the limit of {limit}", Code.TOO_LARGE
            )

    def _over_budget(self, request: topics.Request, payload: bytes) -> Outcome:
        """A request over its device's budget: counted; answered 429 (with its event_id) once
        a second per device, and otherwise dropped unread, so that a flood costs the twin a
        topic parse and a token bucket a message, and twice the traffic in answers none."""
        self.rejected[Code.TOO_MANY_REQUESTS] += 1
        if request.kind is topics.RequestKind.WRITE_RESULT or not self._told.allow(request.device):
            return NOTHING
        rate = self._budgets.rate
        reason = (
            f"device {request.device} is over {rate:g} updates/s "
            "(twin.max_updates_per_device_per_second); more are dropped unanswered this second"
        )
        sender = request.device if request.device in self.catalog.devices else "unknown device"
        self.rejections.write(sender, "429", "rejected %s: %s", request.topic, reason)
        result = error_result(event_id_of(payload), Code.TOO_MANY_REQUESTS, reason)
        return Outcome(publications=[self.reply(request.result_topic, result)])

    def _twin(self, request: topics.Request, event_id: str) -> DeviceTwin:
        twin = self.catalog.devices.get(request.device)
        if twin is not None:  # a known id is a valid one
            return twin
        try:
            split_device_id(request.device)
        except ValueError as exc:
            raise BadRequestError(str(exc), Code.BAD_REQUEST, event_id) from None
        raise BadRequestError(f"unknown device {request.device}", Code.NOT_FOUND, event_id)

    def _twin_update(self, request: topics.Request, payload: bytes) -> Outcome:
        """Apply each property of a twin/update that fits; refuse the others one by one.

        A reported value must parse as its type; one outside the model's bounds is
        stored and flagged. A desired value must also be within bounds and its
        property ReadWrite. ``null`` deletes a property's values. If no property
        could be applied the whole message is refused, in KubeEdge's error shape.
        """
        message = parse_request(TwinUpdateRequest, payload)
        event_id = message.event_id
        twin = self._twin(request, event_id)
        if len(message.twin) > self.settings.max_properties_per_update:
            raise BadRequestError(
                f"twin names {len(message.twin)} properties, more than the limit of "
                f"{self.settings.max_properties_per_update}",
                Code.TOO_LARGE,
                event_id,
            )
        refused, readings = self._refusals(twin, message, request.topic)
        now = now_ms()
        by = f"mqtt/{message.by}" if message.by else "mqtt"
        # The delta can only change in the properties this update touches that have a
        # desired value now, or get one from it.
        pending_before = {
            n: twin.pending(n)
            for n in message.twin
            if n not in refused and twin.properties[n].desired is not None
        }
        outcome = Outcome()
        accepted: dict[str, Any] = {}
        document: dict[str, Any] = {}
        flagged: dict[str, str] = {}
        expected = False
        for name, entry in message.twin.items():
            if name in refused:
                continue
            old = twin.properties[name]
            owned = dict(twin.record.desired).get(name) if entry is None else None
            new = _updated(old, entry, owned, now)
            twin.properties[name] = new
            self._changed(outcome, twin, name, old, by=by, now=now)
            if entry is None:
                accepted[name] = None
                self._flag_range(twin, name, None)
            else:
                expected = expected or entry.expected is not None
                accepted[name] = new.sides(
                    desired=entry.expected is not None, reported=entry.actual is not None
                )
                if entry.actual is not None:
                    flag = self._flag_range(twin, name, readings[name])
                    if flag is not None:
                        flagged[name] = flag
            document[name] = {"last": old.sides(versions=True), "current": new.sides(versions=True)}

        result_topic = request.result_topic
        result = twin_update_result(event_id, now, accepted, refused, flagged)
        outcome.publications.append(self.reply(result_topic, result))
        if not accepted:
            return outcome  # an empty twin: nothing changed
        changed = any(twin.pending(n) != before for n, before in pending_before.items())
        if (changed or expected) and (delta := twin.delta()):
            outcome.publications.append(delta_publication(twin, event_id, delta))
        document_topic = topics.document_topic(twin.id)
        outcome.publications.append(
            self.reply(document_topic, document_message(event_id, now, document))
        )
        outcome.on_failure = result_topic, event_id
        return outcome

    def _changed(
        self, outcome: Outcome, twin: DeviceTwin, name: str, old: PropertyTwin, *, by: str, now: int
    ) -> None:
        """What a property's change means beyond its row: the cluster's outbox, the history,
        and its write (set by ``by``, or read back)."""
        new = twin.properties[name]
        outcome.batch.add_twin(twin.row(name))
        catalog = self.catalog
        if catalog.cloud is not None:
            catalog.cloud.twin_changed(outcome.batch, twin, name, now)
        if new.reported != old.reported:
            catalog.history.record(
                outcome.batch, twin.id, name, Kind.REPORTED, new.reported, at=now
            )
        if new.desired_version != old.desired_version:
            catalog.writes.desired_set(outcome, twin, name, by, now)
        elif new.reported_version != old.reported_version:
            catalog.writes.reported(outcome, twin, name, now)

    def _refusals(
        self, twin: DeviceTwin, message: TwinUpdateRequest, topic: str
    ) -> tuple[dict[str, tuple[Code, str]], dict[str, Parsed]]:
        """The properties of a twin/update that cannot be applied, with code and reason,
        and the typed readings of the others; BadRequestError if none can be applied."""
        refused: dict[str, tuple[Code, str]] = {}
        readings: dict[str, Parsed] = {}
        for name, entry in message.twin.items():
            try:
                reading = self._checked(twin, name, entry)
            except BadRequestError as exc:
                refused[name] = exc.code, exc.reason
            else:
                if reading is not None:
                    readings[name] = reading
        if refused and len(refused) == len(message.twin):
            code = next(iter(refused.values()))[0]
            reason = "; ".join(r for _, r in refused.values())
            raise BadRequestError(reason, code, message.event_id)
        for code, reason in refused.values():
            self.refused_properties[code] += 1
            self.rejections.write(twin.id, str(code), "refused in %s: %s", topic, reason)
        return refused, readings

    def _checked(self, twin: DeviceTwin, name: str, entry: TwinEntry | None) -> Parsed | None:
        """The typed reading of one property of a twin/update (None if it has none);
        BadRequestError if the property cannot be applied."""
        rule = twin.rules.get(name)
        if rule is None:
            raise BadRequestError(f"device {twin.id} has no property {name!r}", Code.NOT_FOUND)
        if entry is None:
            return None
        limit = self.settings.max_value_length
        if entry.expected is not None:
            if rule.read_only:
                raise BadRequestError(
                    f"twin.{name}.expected: property is ReadOnly and takes no desired value",
                    Code.FORBIDDEN,
                )
            try:
                rule.parse(entry.expected.value, limit)
            except InvalidValueError as exc:
                raise BadRequestError(
                    f"twin.{name}.expected.value: {exc}", Code.BAD_REQUEST
                ) from None
        if entry.actual is None:
            return None
        try:
            return rule.parse_type(entry.actual.value, limit)
        except InvalidValueError as exc:
            raise BadRequestError(f"twin.{name}.actual.value: {exc}", Code.BAD_REQUEST) from None

    def _flag_range(self, twin: DeviceTwin, name: str, reading: Parsed | None) -> str | None:
        """Flag a reported value outside its bounds; log it once per property and value."""
        before = twin.out_of_range.get(name)
        problem = twin.flag_range(name, reading)
        if problem is not None:
            self.out_of_range_reports += 1
            if problem != before:
                log.warning(
                    "device %s reported %s out of range (kept): %s",
                    printable(twin.id),
                    printable(name),
                    printable(problem),
                )
        return problem

    def _twin_get(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(TwinGetRequest, payload)
        twin = self._twin(request, message.event_id)
        document = twin.twin_document()
        for name, entry in document.items():
            row = twin.writes.get(name)
            if row is not None:
                entry["write"] = write_status(row)
        result = twin_get_result(message.event_id, document, twin.state, twin.last_online)
        return Outcome(publications=[self.reply(request.result_topic, result)])

    def _state_update(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(StateUpdateRequest, payload)
        twin = self._twin(request, message.event_id)
        now = now_ms()
        outcome = Outcome()
        if twin.state != message.state:
            history = self.catalog.history
            history.record(outcome.batch, twin.id, "", Kind.STATE, message.state, at=now)
        twin.state = message.state
        if message.state in ONLINE_STATES:
            twin.last_online = now
        outcome.batch.states[twin.id] = twin.state_row()
        if self.catalog.cloud is not None:
            self.catalog.cloud.state_changed(outcome.batch, twin, now)
        device = {"name": twin.record.name, **twin.state_status()}
        result = state_update_result(message.event_id, now, device, twin.last_online)
        outcome.publications.append(self.reply(request.result_topic, result))
        outcome.on_failure = request.result_topic, message.event_id
        return outcome

    def _membership_get(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(MembershipGetRequest, payload)
        catalog = self.catalog
        members = [catalog.member(twin, detail=True) for twin in catalog.devices.values()]
        following = catalog.cloud.scope if catalog.cloud is not None else None
        result = membership_result(message.event_id, members, following)
        return Outcome(publications=[self.reply(request.result_topic, result)])

    def _history_get(self, request: topics.Request, payload: bytes) -> Outcome:
        """Checked here; the service answers it from the store."""
        message = parse_request(HistoryGetRequest, payload)
        twin = self._twin(request, message.event_id)
        if message.property is not None and message.property not in twin.properties:
            raise BadRequestError(
                f"device {twin.id} has no property {message.property!r}",
                Code.NOT_FOUND,
                message.event_id,
            )
        query = HistoryQuery(
            twin.id,
            message.property,
            message.since,
            message.limit,
            request.result_topic,
            message.event_id,
        )
        return Outcome(query=query)

    def history_answer(self, query: HistoryQuery, events: list[dict[str, Any]]) -> Publication:
        return self.reply(query.result_topic, history_result(query.event_id, query.device, events))

    def _write_result(self, request: topics.Request, payload: bytes) -> Outcome:
        """A mapper could not write a desired value: the write failed, with its reason."""
        message = parse_request(WriteResultRequest, payload)
        twin = self._twin(request, message.event_id)
        if message.property not in twin.properties:
            raise BadRequestError(f"device {twin.id} has no property {message.property!r}")
        outcome = Outcome()
        if message.code < Code.BAD_REQUEST:
            return outcome  # not an error: nothing to record
        reason = printable(message.reason) or f"code {message.code}"
        writes = self.catalog.writes
        if not writes.failed(
            outcome, twin, message.property, now_ms(), value=message.value, reason=reason
        ):
            self.rejections.write(
                twin.id,
                "stray",
                "a write error for %s of %s matches no write of the twin: %s",
                printable(message.property),
                twin.id,
                reason,
            )
        return outcome

    def _apply_request(self, request: topics.Request, payload: bytes) -> Outcome:
        """``edgetwin apply`` over MQTT: what parses is applied, the rest reported."""
        message = parse_request(ApplyRequest, payload)
        resources: list[Resource] = []
        errors: list[str] = []
        for index, document in enumerate(message.documents):
            try:
                resources.append(parse_document(document, f"documents[{index}]"))
            except EdgetwinError as exc:
                errors.append(str(exc))
        outcome = self.catalog.apply_resources(resources, APPLIED_BY)
        applied = [f"{r.kind} {r.metadata.namespace}/{r.metadata.name}" for r in resources]
        result = apply_result(message.event_id, applied, errors + outcome.errors)
        outcome.publications.append(self.reply(request.result_topic, result))
        return outcome


def _updated(
    old: PropertyTwin, entry: TwinEntry | None, spec_desired: str | None, now: int
) -> PropertyTwin:
    """A property's twin after one entry of a twin/update (checked already).

    ``None`` deletes the reported value, and the desired one unless the Device's
    spec sets it: the cluster owns that one.
    """
    new = old.copy()
    expected = entry.expected if entry is not None else None
    actual = entry.actual if entry is not None else None
    if entry is None and old.desired is not None and old.desired != spec_desired:
        new.desired, new.desired_ts = None, now
        new.desired_version += 1
    if entry is None and old.reported is not None:
        new.reported, new.reported_ts = None, now
        new.reported_version += 1
    if expected is not None:
        new.desired, new.desired_ts = expected.value, now
        new.desired_version += 1
    if actual is not None:
        new.reported, new.reported_ts = actual.value, now
        new.reported_version += 1
    return new
