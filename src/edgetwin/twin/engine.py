"""The twin engine: requests and resources in, store rows and MQTT messages out.

The engine holds every device's twin in memory and changes it synchronously,
so the order messages arrive in is the order they apply in. It does no I/O:
each call returns an :class:`Outcome`, the rows the store must commit and
the messages to publish once they have. If a commit fails, the service asks
the engine to :meth:`TwinEngine.restore_devices` from the store, which is
the truth.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from edgetwin.config import TwinSettings
from edgetwin.errors import EdgetwinError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.twin.manifests import parse_document
from edgetwin.twin.state import DeviceRecord, DeviceTwin, PropertyTwin
from edgetwin.twin.store.rows import (
    DeviceRow,
    OutboxRow,
    Snapshot,
    StateRow,
    TwinRow,
    WriteBatch,
)
from edgetwin.twin.values import InvalidValueError, Parsed, PropertyRule
from edgetwin.wire import topics
from edgetwin.wire.messages import (
    ApplyRequest,
    BadRequestError,
    Code,
    MembershipGetRequest,
    StateUpdateRequest,
    TwinEntry,
    TwinGetRequest,
    TwinUpdateRequest,
    encode,
    error_result,
    now_ms,
    parse_request,
    twin_update_result,
)
from edgetwin.wire.names import split_device_id
from edgetwin.wire.resources import Device, DeviceModel, Resource
from edgetwin.wire.spec import merge_spec

log = logging.getLogger(__name__)

ONLINE_STATES = frozenset({"online", "ok"})


class Publication(NamedTuple):
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(slots=True)
class Outcome:
    """The effect of one request or resource change.

    ``publications`` go out after ``batch`` has committed; if the commit fails,
    an error result goes to ``on_failure`` (result topic, event id) instead.
    """

    batch: WriteBatch = field(default_factory=WriteBatch)
    publications: list[Publication] = field(default_factory=list)
    on_failure: tuple[str, str] | None = None
    errors: list[str] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.batch.merge(other.batch)
        self.publications.extend(other.publications)
        self.errors.extend(other.errors)
        self.added.extend(other.added)
        self.removed.extend(other.removed)


class TwinEngine:
    """Every device twin of one node."""

    def __init__(self, node: str, settings: TwinSettings) -> None:
        self.node = node
        self.settings = settings
        self.devices: dict[str, DeviceTwin] = {}
        self.models: dict[str, DeviceModel] = {}
        self._specs: dict[str, tuple[str, bytes]] = {}  # device -> (spec topic, payload)
        self._rules: dict[str, dict[str, PropertyRule]] = {}  # model -> its compiled rules
        self.accepted: Counter[str] = Counter()
        """Answered requests by kind (twin/update, ...), for the metrics."""
        self.rejected: Counter[int] = Counter()
        """Rejected requests by error code, for the metrics."""
        self.refused_properties: Counter[int] = Counter()
        """Properties refused in twin/updates that were otherwise applied, by error code."""
        self.out_of_range_reports = 0
        """Reported values kept although outside their model's bounds."""
        self.report_to_cloud = False
        self.membership_listeners: list[Callable[[], None]] = []
        """Told when devices join or leave the node (the broker rewrites its ACL)."""
        """Set when a cloud sync runs: changes then also go to the outbox."""
        self.cloud_pending: set[str] = set()
        self.rejections = ThrottledLog(log)
        """The log of refused requests: one line per device and reason every 10 s at most."""
        self.cloud_scope: str | None = None
        """What the cloud sync follows, in words, for membership/get (None: no cloud)."""
        """Devices with changes the cluster has not seen yet."""
        self.cloud_updates = 0
        """Changes marked for the cluster (each a device field), for the metrics."""

    # --- start-up -------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Load the store's contents; no rows or messages come of it."""
        for key, body in snapshot.models.items():
            model = DeviceModel.model_validate_json(body)
            self.models[key] = model
            self._rules[key] = _compile(model)
        stored_twins: dict[str, dict[str, PropertyTwin]] = {}
        for device, name, desired, d_ts, d_version, reported, r_ts, r_version in snapshot.twins:
            stored_twins.setdefault(device, {})[name] = PropertyTwin(
                desired, d_ts, d_version, reported, r_ts, r_version
            )
        for device_id, stored in snapshot.devices.items():
            twin = DeviceTwin(DeviceRecord.from_json(stored.body), state=stored.state)
            twin.last_online = stored.last_online
            twin.twins = stored_twins.get(device_id, {})
            self.devices[device_id] = twin
            self._bind_model(twin)
            if stored.spec_topic and stored.spec:
                self._specs[device_id] = (stored.spec_topic, stored.spec)

    def restore_devices(self, snapshot: Snapshot, device_ids: set[str]) -> None:
        """Replace the named devices' twins with the store's after a failed commit."""
        for device_id in device_ids:
            self.devices.pop(device_id, None)
        partial = Snapshot(
            models={},
            devices={k: v for k, v in snapshot.devices.items() if k in device_ids},
            twins=[row for row in snapshot.twins if row[0] in device_ids],
        )
        self.restore(partial)

    def startup_publications(self) -> list[Publication]:
        """What to (re)publish on every connection: specs (retained) and pending deltas."""
        pubs = [Publication(topic, payload, retain=True) for topic, payload in self._specs.values()]
        for twin in self.devices.values():
            delta = twin.delta()
            if delta:
                pubs.append(self._delta_publication(twin, "", delta))
        return pubs

    # --- the MQTT twin API ------------------------------------------------------------------

    def handle(self, request: topics.Request, payload: bytes) -> Outcome:
        """Answer one request; never raises for bad input."""
        try:
            self._check_size(payload)
            match request.kind:
                case topics.RequestKind.TWIN_UPDATE:
                    outcome = self._twin_update(request, payload)
                case topics.RequestKind.TWIN_GET:
                    outcome = self._twin_get(request, payload)
                case topics.RequestKind.STATE_UPDATE:
                    outcome = self._state_update(request, payload)
                case topics.RequestKind.MEMBERSHIP_GET:
                    outcome = self._membership_get(request, payload)
                case topics.RequestKind.NODE_APPLY:
                    outcome = self._apply_request(request, payload)
            self.accepted[request.kind.value] += 1
            return outcome  # noqa: TRY300 - the counting belongs with the answer
        except BadRequestError as exc:
            sender = request.device if request.device in self.devices else "unknown device"
            self.rejections.write(
                sender,
                str(exc.code),
                "rejected %s on %s: %s",
                request.kind.value,
                request.topic,
                exc.reason,
            )
            self.rejected[exc.code] += 1
            result = error_result(exc.event_id, exc.code, exc.reason)
            return Outcome(publications=[self.reply(request.result_topic, result)])

    def _check_size(self, payload: bytes) -> None:
        limit = self.settings.max_payload_bytes
        if len(payload) > limit:
            raise BadRequestError(
                f"payload of {len(payload)} bytes is over the limit of {limit}", Code.TOO_LARGE
            )

    def _device(self, request: topics.Request, event_id: str) -> DeviceTwin:
        twin = self.devices.get(request.device)
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
        device = self._device(request, event_id)
        if len(message.twin) > self.settings.max_properties_per_update:
            raise BadRequestError(
                f"twin names {len(message.twin)} properties, more than the limit of "
                f"{self.settings.max_properties_per_update}",
                Code.TOO_LARGE,
                event_id,
            )
        refused, readings = self._refusals(device, message, request.topic)
        now = now_ms()
        # The delta can only change in the properties this update touches that have a
        # desired value now, or get one from it.
        pending_before = {
            n: device.pending(n)
            for n in message.twin
            if n not in refused and device.twins[n].desired is not None
        }
        outcome = Outcome()
        accepted: dict[str, Any] = {}
        document: dict[str, Any] = {}
        flagged: dict[str, str] = {}
        expected = False
        for name, entry in message.twin.items():
            if name in refused:
                continue
            old = device.twins[name]
            owned = dict(device.device.desired).get(name) if entry is None else None
            new = _updated(old, entry, owned, now)
            device.twins[name] = new
            outcome.batch.add_twin(_row(device.id, name, new))
            self._mark_for_cloud(outcome.batch, device, name, now)
            if entry is None:
                accepted[name] = None
                self._flag_range(device, name, None)
            else:
                expected = expected or entry.expected is not None
                accepted[name] = new.sides(
                    desired=entry.expected is not None, reported=entry.actual is not None
                )
                if entry.actual is not None:
                    flag = self._flag_range(device, name, readings[name])
                    if flag is not None:
                        flagged[name] = flag
            document[name] = {"last": old.sides(versions=True), "current": new.sides(versions=True)}

        result_topic = request.result_topic
        result = twin_update_result(event_id, now, accepted, refused, flagged)
        outcome.publications.append(self.reply(result_topic, result))
        if not accepted:
            return outcome  # an empty twin: nothing changed
        changed = any(device.pending(n) != before for n, before in pending_before.items())
        if (changed or expected) and (delta := device.delta()):
            outcome.publications.append(self._delta_publication(device, event_id, delta))
        outcome.publications.append(
            self.reply(
                topics.document_topic(device.id),
                encode({"event_id": event_id, "timestamp": now, "twin": document}),
            )
        )
        outcome.on_failure = result_topic, event_id
        return outcome

    def _refusals(
        self, device: DeviceTwin, message: TwinUpdateRequest, topic: str
    ) -> tuple[dict[str, tuple[Code, str]], dict[str, Parsed]]:
        """The properties of a twin/update that cannot be applied, with code and reason,
        and the typed readings of the others; BadRequestError if none can be applied."""
        refused: dict[str, tuple[Code, str]] = {}
        readings: dict[str, Parsed] = {}
        for name, entry in message.twin.items():
            try:
                reading = self._checked(device, name, entry)
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
            self.rejections.write(device.id, str(code), "refused in %s: %s", topic, reason)
        return refused, readings

    def _checked(self, device: DeviceTwin, name: str, entry: TwinEntry | None) -> Parsed | None:
        """The typed reading of one property of a twin/update (None if it has none);
        BadRequestError if the property cannot be applied."""
        rule = device.rules.get(name)
        if rule is None:
            raise BadRequestError(f"device {device.id} has no property {name!r}", Code.NOT_FOUND)
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

    def _flag_range(self, device: DeviceTwin, name: str, reading: Parsed | None) -> str | None:
        """Flag a reported value outside its bounds; log it once per property and value."""
        before = device.out_of_range.get(name)
        problem = device.flag_range(name, reading)
        if problem is not None:
            self.out_of_range_reports += 1
            if problem != before:
                log.warning(
                    "device %s reported %s out of range (kept): %s",
                    printable(device.id),
                    printable(name),
                    printable(problem),
                )
        return problem

    def _twin_get(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(TwinGetRequest, payload)
        device = self._device(request, message.event_id)
        body = {
            "event_id": message.event_id,
            "timestamp": now_ms(),
            "twin": device.twin_document(),
            "state": device.state,
            "last_online_time": device.last_online,
        }
        return Outcome(publications=[self.reply(request.result_topic, encode(body))])

    def _state_update(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(StateUpdateRequest, payload)
        device = self._device(request, message.event_id)
        now = now_ms()
        device.state = message.state
        if message.state in ONLINE_STATES:
            device.last_online = now
        outcome = Outcome()
        outcome.batch.states[device.id] = StateRow(device.id, device.state, device.last_online)
        if self.report_to_cloud and device.device.state_to_cloud:
            self.cloud_pending.add(device.id)
            self.cloud_updates += 1
            value = encode(_state_status(device))
            outcome.batch.outbox[device.id, "state"] = OutboxRow(device.id, "state", value, now)
        body = {
            "event_id": message.event_id,
            "timestamp": now,
            "device": {"name": device.device.name, **_state_status(device)},
            "last_online_time": device.last_online,
        }
        outcome.publications.append(self.reply(request.result_topic, encode(body)))
        outcome.on_failure = request.result_topic, message.event_id
        return outcome

    def _membership_get(self, request: topics.Request, payload: bytes) -> Outcome:
        message = parse_request(MembershipGetRequest, payload)
        body = {
            "event_id": message.event_id,
            "timestamp": now_ms(),
            "devices": [self._member(twin, detail=True) for twin in self.devices.values()],
        }
        if self.cloud_scope is not None:
            body["cloud"] = {"following": self.cloud_scope}
        return Outcome(publications=[self.reply(request.result_topic, encode(body))])

    # --- resources (manifests, the cloud) ---------------------------------------------------

    def apply_resources(self, resources: list[Resource]) -> Outcome:
        """Apply resources, models first; errors are collected, one line each."""
        outcome = Outcome()
        for resource in sorted(resources, key=lambda r: not isinstance(r, DeviceModel)):
            if isinstance(resource, DeviceModel):
                outcome.extend(self.apply_model(resource))
            elif isinstance(resource, Device):
                outcome.extend(self.apply_device(resource))
            else:
                outcome.errors.append(
                    f"DeviceStatus {resource.metadata.name}: written by the node, not applied"
                )
        for error in outcome.errors:
            log.warning("apply: %s", error)
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
        outcome = self.apply_resources(resources)
        body = {
            "event_id": message.event_id,
            "timestamp": now_ms(),
            "applied": [f"{r.kind} {r.metadata.namespace}/{r.metadata.name}" for r in resources],
            "errors": errors + outcome.errors,
        }
        outcome.publications.append(self.reply(request.result_topic, encode(body)))
        return outcome

    def apply_model(self, model: DeviceModel) -> Outcome:
        """Add or replace a DeviceModel; its devices' twins follow it."""
        outcome = Outcome()
        if self.models.get(model.key) == model:
            return outcome
        limit = self.settings.max_properties_per_device
        if len(model.spec.properties) > limit:
            outcome.errors.append(
                f"DeviceModel {model.key}: {len(model.spec.properties)} properties, more than "
                f"the limit of {limit} (twin.max_properties_per_device)"
            )
            return outcome
        try:
            rules = _compile(model)
        except ValueError as exc:
            outcome.errors.append(f"DeviceModel {model.key}: {exc}")
            return outcome
        self.models[model.key] = model
        self._rules[model.key] = rules
        outcome.batch.models[model.key] = model.model_dump_json(
            by_alias=True, exclude_unset=True
        ).encode()
        for twin in self.devices.values():
            if twin.device.model_key == model.key:
                outcome.extend(self._resync(twin, previous=None))
        return outcome

    def apply_device(self, device: Device) -> Outcome:
        """Add or replace a Device of this node; a device of another node is removed."""
        node = device.spec.node_name
        if node and node != self.node:
            if device.id in self.devices:
                return self.remove_device(device.id)
            return Outcome(errors=[f"Device {device.id} belongs to node {node!r}, not this one"])
        problem = self._desired_problem(device)
        if problem:
            return Outcome(errors=[problem])
        existing = self.devices.get(device.id)
        if existing is None and len(self.devices) >= self.settings.max_devices:
            served = len(self.devices)
            why = f"this node already serves {served} devices, the limit (twin.max_devices)"
            return Outcome(errors=[f"Device {device.id}: {why}"])
        previous = existing.device if existing else None
        record = DeviceRecord.from_device(device)
        if previous is not None and previous.body == record.body:
            return Outcome()  # unchanged: a relist, or an echo of our own status write
        twin = existing or DeviceTwin(record)
        twin.device = record
        self.devices[device.id] = twin
        outcome = Outcome()
        if existing is None:
            outcome.batch.states[device.id] = StateRow(device.id, twin.state, twin.last_online)
            outcome.added.append(self._member(twin))
        outcome.extend(self._resync(twin, previous))
        return outcome

    def protocol_of(self, device_id: str) -> str | None:
        """The protocol of a device of this node (None if it has none or is not here)."""
        twin = self.devices.get(device_id)
        return twin.device.protocol_name(twin.model) if twin else None

    def remove_device(self, device_id: str) -> Outcome:
        twin = self.devices.pop(device_id, None)
        outcome = Outcome()
        if twin is None:
            return outcome
        outcome.batch.devices[device_id] = None
        spec = self._specs.pop(device_id, None)
        if spec is not None:
            outcome.publications.append(Publication(spec[0], b"", retain=True))
        outcome.removed.append(self._member(twin))
        return outcome

    def _desired_problem(self, device: Device) -> str | None:
        model = self.models.get(device.model_key or "")
        if model is None:
            return None
        for index, prop in enumerate(device.spec.properties):
            model_prop = model.property(prop.name)
            where = f"Device {device.id} spec.properties[{index}]"
            if model_prop is None:
                return f"{where}.name: model {model.metadata.name} has no property {prop.name!r}"
            if prop.desired is None or prop.desired.value == "":
                continue
            rule = self._rules[model.key][prop.name]
            if rule.read_only:
                return f"{where}.desired: property {prop.name} is ReadOnly"
            try:
                rule.parse(prop.desired.value, self.settings.max_value_length)
            except InvalidValueError as exc:
                return f"{where}.desired.value: {exc}"
        return None

    def _bind_model(self, twin: DeviceTwin) -> None:
        """Point a device at its model and rebuild its rules; twins of dropped properties go."""
        key = twin.device.model_key or ""
        twin.model = self.models.get(key)
        rules = self._rules.get(key, {})
        wanted = twin.device.property_names
        if wanted and not wanted.issuperset(rules):
            rules = {n: r for n, r in rules.items() if n in wanted}
        twin.rules = rules  # shared with the model's other devices when they use all of it
        twins = twin.twins
        if twins.keys() != rules.keys():
            twin.twins = {name: twins.get(name) or PropertyTwin() for name in rules}
        twin.out_of_range.clear()
        for name in twin.twins:
            twin.flag_range(name)

    def _resync(self, twin: DeviceTwin, previous: DeviceRecord | None) -> Outcome:
        """Rebuild a device's rules and spec, and take desired values its spec changed."""
        outcome = Outcome()
        self._bind_model(twin)
        now = now_ms()
        old_desired = dict(previous.desired) if previous else {}
        changed_desired = False
        for name, value in twin.device.desired:
            if name not in twin.rules or old_desired.get(name) == value:
                continue
            current = twin.twins[name]
            if current.desired == value:
                continue
            current.desired, current.desired_ts = value, now
            current.desired_version += 1
            changed_desired = True
            self._mark_for_cloud(outcome.batch, twin, name, now)
        for name, prop_twin in twin.twins.items():
            outcome.batch.add_twin(_row(twin.id, name, prop_twin))
        spec = self._refresh_spec(twin)
        if spec is not None:
            outcome.publications.extend(spec)
        outcome.batch.devices[twin.id] = DeviceRow(twin.device.body, *self._specs.get(twin.id, ()))
        delta = twin.delta()
        if delta and changed_desired:
            outcome.publications.append(self._delta_publication(twin, "", delta))
        return outcome

    def _refresh_spec(self, twin: DeviceTwin) -> list[Publication] | None:
        """Recompute the retained spec; the messages to send if it changed."""
        old = self._specs.get(twin.id)
        new: tuple[str, bytes] | None = None
        protocol = twin.device.protocol_name(twin.model)
        if twin.model is not None and protocol:
            try:
                merged = merge_spec(twin.device.device(), twin.model, self.node)
            except ValidationError as exc:
                log.warning("device %s has no usable spec: %s", twin.id, exc)
            else:
                new = (
                    topics.spec_topic(protocol, twin.id),
                    merged.model_dump_json(exclude_none=True).encode(),
                )
        if new == old:
            return None
        pubs = []
        if old is not None and (new is None or new[0] != old[0]):
            pubs.append(Publication(old[0], b"", retain=True))
        if new is None:
            self._specs.pop(twin.id, None)
        else:
            self._specs[twin.id] = new
            pubs.append(Publication(new[0], new[1], retain=True))
        return pubs

    # --- the cluster's view -----------------------------------------------------------------

    def _mark_for_cloud(self, batch: WriteBatch, device: DeviceTwin, name: str, now: int) -> None:
        if self.report_to_cloud and name in device.device.to_cloud:
            self.cloud_pending.add(device.id)
            self.cloud_updates += 1
            entry = _twin_status(device, name)
            batch.outbox[device.id, f"twin/{name}"] = OutboxRow(
                device.id, f"twin/{name}", encode(entry), now
            )

    def cloud_status(self, device_id: str) -> dict[str, Any] | None:
        """The device's whole ``status`` as the cluster keeps it, or None if it is gone.

        Whole, because a merge patch replaces ``twins`` (a list) as one value.
        """
        device = self.devices.get(device_id)
        if device is None:
            return None
        status: dict[str, Any] = {
            "twins": [
                _twin_status(device, name)
                for name in sorted(device.device.to_cloud)
                if name in device.twins and device.twins[name].reported is not None
            ]
        }
        if device.device.state_to_cloud:
            status |= _state_status(device)
        return status

    # --- messages ---------------------------------------------------------------------------

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

    def _delta_publication(
        self, twin: DeviceTwin, event_id: str, delta: dict[str, str]
    ) -> Publication:
        body = {
            "event_id": event_id,
            "timestamp": now_ms(),
            "twin": twin.twin_document(),
            "delta": delta,
        }
        return Publication(topics.delta_topic(twin.id), encode(body))

    def _member(self, twin: DeviceTwin, *, detail: bool = False) -> dict[str, Any]:
        member: dict[str, Any] = {
            "id": twin.id,
            "namespace": twin.device.namespace,
            "name": twin.device.name,
            "model": twin.device.model_name,
            "protocol": twin.device.protocol_name(twin.model),
        }
        if detail:
            delta = twin.delta()
            member |= {
                "state": twin.state,
                "last_online_time": twin.last_online,
                "properties": len(twin.twins),
                "pending": sorted(delta),
            }
            if self.report_to_cloud:
                member["cloud"] = "pending" if twin.id in self.cloud_pending else "synced"
        return member

    def announce_membership(self, outcome: Outcome) -> None:
        """Turn the devices an outcome added and removed into one ``membership/updated``."""
        if not outcome.added and not outcome.removed:
            return
        for listener in self.membership_listeners:
            listener()
        body = {
            "event_id": "",
            "timestamp": now_ms(),
            "added_devices": outcome.added,
            "removed_devices": outcome.removed,
        }
        topic = topics.membership_updated_topic(self.node)
        outcome.publications.append(Publication(topic, encode(body)))
        outcome.added, outcome.removed = [], []


def _row(device: str, name: str, twin: PropertyTwin) -> TwinRow:
    return TwinRow(
        device,
        name,
        twin.desired,
        twin.desired_ts,
        twin.desired_version,
        twin.reported,
        twin.reported_ts,
        twin.reported_version,
    )


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


def _compile(model: DeviceModel) -> dict[str, PropertyRule]:
    """A model's property rules; ValueError if a bound is not a number."""
    return {prop.name: PropertyRule.from_model(prop) for prop in model.spec.properties}


def _twin_status(device: DeviceTwin, name: str) -> dict[str, Any]:
    """One ``status.twins[]`` entry: reported and observed desired, metadata as strings."""
    twin = device.twins[name]
    entry: dict[str, Any] = {"propertyName": name}
    kind = device.rules[name].type.lower()
    if twin.reported is not None:
        metadata = {"timestamp": str(twin.reported_ts), "type": kind}
        if name in device.out_of_range:
            metadata["outOfRange"] = device.out_of_range[name]
        entry["reported"] = {"value": twin.reported, "metadata": metadata}
    if twin.desired is not None:
        entry["observedDesired"] = {
            "value": twin.desired,
            "metadata": {"timestamp": str(twin.desired_ts), "type": kind},
        }
    return entry


def _state_status(device: DeviceTwin) -> dict[str, Any]:
    out: dict[str, Any] = {"state": device.state}
    if device.last_online is not None:
        when = datetime.fromtimestamp(device.last_online / 1000, UTC)
        out["lastOnlineTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out
