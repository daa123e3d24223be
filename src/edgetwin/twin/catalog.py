"""The node's devices and models: resources applied, rules compiled, specs merged.

A Device applied here gets its model's compiled rules (the properties the
Device names, or all of them), a property twin for each, and, when it has a
protocol, the merged spec its mapper reads, retained on the spec topic. A
model applied again rebinds its devices; desired values the Device's spec
changed are taken and sent as a delta.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from edgetwin.config import TwinSettings
from edgetwin.twin.history import History, Kind
from edgetwin.twin.outcome import Outcome, Publication, delta_publication
from edgetwin.twin.state import DeviceRecord, DeviceTwin, PropertyTwin
from edgetwin.twin.store.rows import DeviceRow, Snapshot, WriteBatch
from edgetwin.twin.values import InvalidValueError, PropertyRule
from edgetwin.twin.writes import (
    WRITE_TIMEOUT_ANNOTATION,
    WRITE_TIMEOUT_METADATA,
    WriteBook,
    duration_ms,
)
from edgetwin.wire import topics
from edgetwin.wire.messages import now_ms
from edgetwin.wire.resources import Device, DeviceModel, Resource
from edgetwin.wire.spec import Desired, DeviceSpecMessage, merge_spec

log = logging.getLogger(__name__)


class CloudView(Protocol):
    """What the cloud sync keeps of the twin's changes (``edgetwin.cloud`` has it).

    Each mark adds the outbox row the cluster must see to the change's own
    batch, so the row commits with the change or not at all.
    """

    scope: str | None
    """What the sync follows, in words (None until it starts)."""

    def twin_changed(self, batch: WriteBatch, twin: DeviceTwin, name: str, now: int) -> None: ...

    def write_changed(self, batch: WriteBatch, twin: DeviceTwin, name: str, now: int) -> None: ...

    def state_changed(self, batch: WriteBatch, twin: DeviceTwin, now: int) -> None: ...

    def is_pending(self, device_id: str) -> bool:
        """Whether the device has changes the cluster has not seen yet."""
        ...


class Catalog:
    """Every Device and DeviceModel of one node, as twins bound to their rules."""

    def __init__(
        self,
        node: str,
        settings: TwinSettings,
        cloud: CloudView | None,
        writes: WriteBook,
        history: History,
    ) -> None:
        self.node = node
        self.settings = settings
        self.cloud = cloud
        self.writes = writes
        self.history = history
        self.devices: dict[str, DeviceTwin] = {}
        self.models: dict[str, DeviceModel] = {}
        self._rules: dict[str, dict[str, PropertyRule]] = {}  # model -> its compiled rules
        self.specs: dict[str, tuple[str, bytes]] = {}
        """Each device's merged spec: (spec topic, payload)."""

    # --- start-up -------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Load the store's contents; no rows or messages come of it."""
        for key, body in snapshot.models.items():
            model = DeviceModel.model_validate_json(body)
            self.models[key] = model
            self._rules[key] = _compile(model)
        stored: dict[str, dict[str, PropertyTwin]] = {}
        for device_id, name, desired, d_ts, d_version, reported, r_ts, r_version in snapshot.twins:
            stored.setdefault(device_id, {})[name] = PropertyTwin(
                desired, d_ts, d_version, reported, r_ts, r_version
            )
        for device_id, row in snapshot.devices.items():
            twin = DeviceTwin(DeviceRecord.from_json(row.body), state=row.state)
            twin.last_online = row.last_online
            twin.properties = stored.get(device_id, {})
            self.devices[device_id] = twin
            self._bind_model(twin)
            if row.spec_topic and row.spec:
                self.specs[device_id] = (row.spec_topic, row.spec)
        self.writes.restore(self.devices, snapshot.writes)

    def restore_devices(self, snapshot: Snapshot, device_ids: set[str]) -> None:
        """Replace the named devices' twins with the store's after a failed commit."""
        for device_id in device_ids:
            twin = self.devices.pop(device_id, None)
            if twin is not None:
                self.writes.forget(twin)
        partial = Snapshot(
            models={},
            devices={k: v for k, v in snapshot.devices.items() if k in device_ids},
            twins=[row for row in snapshot.twins if row[0] in device_ids],
            writes=[row for row in snapshot.writes if row.device in device_ids],
        )
        self.restore(partial)

    def startup_publications(self) -> list[Publication]:
        """What to (re)publish on every connection: specs (retained) and pending deltas."""
        pubs = [Publication(topic, payload, retain=True) for topic, payload in self.specs.values()]
        for twin in self.devices.values():
            delta = twin.delta()
            if delta:
                pubs.append(delta_publication(twin, "", delta))
        return pubs

    # --- resources ------------------------------------------------------------------------

    def apply_resources(self, resources: list[Resource], by: str) -> Outcome:
        """Apply resources, models first; errors are collected, one line each. ``by`` says
        where they come from (the cluster, manifests, ``edgetwin apply``), for the history."""
        outcome = Outcome()
        for resource in sorted(resources, key=lambda r: not isinstance(r, DeviceModel)):
            if isinstance(resource, DeviceModel):
                outcome.extend(self.apply_model(resource, by))
            elif isinstance(resource, Device):
                outcome.extend(self.apply_device(resource, by))
            else:
                outcome.errors.append(
                    f"DeviceStatus {resource.metadata.name}: written by the node, not applied"
                )
        for error in outcome.errors:
            log.warning("apply: %s", error)
        return outcome

    def apply_model(self, model: DeviceModel, by: str) -> Outcome:
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
            timeout = (model.metadata.annotations or {}).get(WRITE_TIMEOUT_ANNOTATION)
            if timeout is not None:
                _check_duration(f"metadata.annotations[{WRITE_TIMEOUT_ANNOTATION}]", timeout)
        except ValueError as exc:
            outcome.errors.append(f"DeviceModel {model.key}: {exc}")
            return outcome
        self.models[model.key] = model
        self._rules[model.key] = rules
        outcome.batch.models[model.key] = model.model_dump_json(
            by_alias=True, exclude_unset=True
        ).encode()
        for twin in self.devices.values():
            if twin.record.model_key == model.key:
                outcome.extend(self._resync(twin, previous=None, by=by))
        return outcome

    def apply_device(self, device: Device, by: str) -> Outcome:
        """Add or replace a Device of this node; a device of another node is removed."""
        node = device.spec.node_name
        if node and node != self.node:
            if device.id in self.devices:
                return self.remove_device(device.id, by)
            return Outcome(errors=[f"Device {device.id} belongs to node {node!r}, not this one"])
        problem = self._desired_problem(device)
        if problem:
            return Outcome(errors=[problem])
        existing = self.devices.get(device.id)
        if existing is None and len(self.devices) >= self.settings.max_devices:
            served = len(self.devices)
            why = f"this node already serves {served} devices, the limit (twin.max_devices)"
            return Outcome(errors=[f"Device {device.id}: {why}"])
        previous = existing.record if existing else None
        record = DeviceRecord.from_device(device)
        if previous is not None and previous.body == record.body:
            return Outcome()  # unchanged: a relist, or an echo of our own status write
        twin = existing or DeviceTwin(record)
        twin.record = record
        self.devices[device.id] = twin
        outcome = Outcome()
        if existing is None:
            outcome.batch.states[device.id] = twin.state_row()
            outcome.added.append(self.member(twin))
        change, fields = spec_change(previous.body if previous else None, record.body)
        detail = f"by {by}: {fields}" if fields else f"by {by}"
        self.history.record(
            outcome.batch, device.id, "", Kind.SPEC, change, at=now_ms(), detail=detail
        )
        outcome.extend(self._resync(twin, previous, by))
        return outcome

    def remove_device(self, device_id: str, by: str) -> Outcome:
        twin = self.devices.pop(device_id, None)
        outcome = Outcome()
        if twin is None:
            return outcome
        self.writes.forget(twin)
        self.history.record(
            outcome.batch, device_id, "", Kind.SPEC, "removed", at=now_ms(), detail=f"by {by}"
        )
        outcome.batch.devices[device_id] = None
        spec = self.specs.pop(device_id, None)
        if spec is not None:
            outcome.publications.append(Publication(spec[0], b"", retain=True))
        outcome.removed.append(self.member(twin))
        return outcome

    def device_specs(self, protocol: str) -> list[DeviceSpecMessage]:
        """The merged specs of the devices of ``protocol`` (what a mapper of it serves)."""
        return [
            DeviceSpecMessage.model_validate_json(payload)
            for device_id, (topic, payload) in self.specs.items()
            if topic == topics.spec_topic(protocol, device_id)
        ]

    def desired_values(self, device_id: str) -> dict[str, Desired]:
        """A device's desired values, each with the metadata its Device gives it."""
        twin = self.devices.get(device_id)
        if twin is None:
            return {}
        spec = orjson.loads(twin.record.body).get("spec") or {}
        metadata = {
            p["name"]: (p.get("desired") or {}).get("metadata") or {}
            for p in spec.get("properties") or []
        }
        return {
            name: Desired(
                prop.desired,
                {"timestamp": str(prop.desired_ts), **metadata.get(name, {})},
            )
            for name, prop in twin.properties.items()
            if prop.desired is not None
        }

    def protocol_of(self, device_id: str) -> str | None:
        """The protocol of a device of this node (None if it has none or is not here)."""
        twin = self.devices.get(device_id)
        return twin.record.protocol_name(twin.model) if twin else None

    def member(self, twin: DeviceTwin, *, detail: bool = False) -> dict[str, Any]:
        """A device as membership messages list it; with ``detail``, its state as well."""
        record = twin.record
        member: dict[str, Any] = {
            "id": twin.id,
            "namespace": record.namespace,
            "name": record.name,
            "model": record.model_name,
            "protocol": record.protocol_name(twin.model),
        }
        if detail:
            member |= {
                "state": twin.state,
                "last_online_time": twin.last_online,
                "properties": len(twin.properties),
                "pending": sorted(twin.delta()),
            }
            if self.cloud is not None:
                member["cloud"] = "pending" if self.cloud.is_pending(twin.id) else "synced"
        return member

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
            timeout = (prop.desired.metadata or {}).get(WRITE_TIMEOUT_METADATA)
            if timeout is not None:
                try:
                    _check_duration(f"desired.metadata.{WRITE_TIMEOUT_METADATA}", timeout)
                except ValueError as exc:
                    return f"{where}.{exc}"
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
        key = twin.record.model_key or ""
        twin.model = self.models.get(key)
        rules = self._rules.get(key, {})
        wanted = twin.record.property_names
        if wanted and not wanted.issuperset(rules):
            rules = {n: r for n, r in rules.items() if n in wanted}
        twin.rules = rules  # shared with the model's other devices when they use all of it
        props = twin.properties
        if props.keys() != rules.keys():
            twin.properties = {name: props.get(name) or PropertyTwin() for name in rules}
        twin.out_of_range.clear()
        for name in twin.properties:
            twin.flag_range(name)

    def _resync(self, twin: DeviceTwin, previous: DeviceRecord | None, by: str) -> Outcome:
        """Rebuild a device's rules and spec, and take desired values its spec changed."""
        outcome = Outcome()
        self._bind_model(twin)
        now = now_ms()
        old_desired = dict(previous.desired) if previous else {}
        changed_desired = False
        for name, value in twin.record.desired:
            if name not in twin.rules or old_desired.get(name) == value:
                continue
            prop = twin.properties[name]
            if prop.desired == value:
                continue
            prop.desired, prop.desired_ts = value, now
            prop.desired_version += 1
            changed_desired = True
            if self.cloud is not None:
                self.cloud.twin_changed(outcome.batch, twin, name, now)
            self.writes.desired_set(outcome, twin, name, by, now)
        for name in twin.properties:
            outcome.batch.add_twin(twin.row(name))
        topic_before = self.specs.get(twin.id, _NO_SPEC)[0]
        spec = self._refresh_spec(twin)
        if spec is not None:
            outcome.publications.extend(spec)
            # The spec topic names the protocol: the device is another mapper's now.
            outcome.protocol_changed = self.specs.get(twin.id, _NO_SPEC)[0] != topic_before
        outcome.batch.devices[twin.id] = DeviceRow(twin.record.body, *self.specs.get(twin.id, ()))
        delta = twin.delta()
        if delta and changed_desired:
            outcome.publications.append(delta_publication(twin, "", delta))
        return outcome

    def _refresh_spec(self, twin: DeviceTwin) -> list[Publication] | None:
        """Recompute the retained spec; the messages to send if it changed."""
        old = self.specs.get(twin.id)
        new: tuple[str, bytes] | None = None
        protocol = twin.record.protocol_name(twin.model)
        if twin.model is not None and protocol:
            try:
                merged = merge_spec(twin.record.device(), twin.model, self.node)
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
            self.specs.pop(twin.id, None)
        else:
            self.specs[twin.id] = new
            pubs.append(Publication(new[0], new[1], retain=True))
        return pubs


_NO_SPEC = ("", b"")


def spec_change(old: bytes | None, new: bytes) -> tuple[str, str]:
    """What applying a Device did, for the history: added or changed, and which parts of
    its spec changed (``nodeName``, ``properties[target]``, ...)."""
    if old is None:
        return "added", ""
    before = orjson.loads(old).get("spec") or {}
    after = orjson.loads(new).get("spec") or {}
    fields = sorted(
        k
        for k in before.keys() | after.keys()
        if k != "properties" and before.get(k) != after.get(k)
    )
    props_before = {p["name"]: p for p in before.get("properties") or []}
    props_after = {p["name"]: p for p in after.get("properties") or []}
    fields += [
        f"properties[{name}]"
        for name in sorted(props_before.keys() | props_after.keys())
        if props_before.get(name) != props_after.get(name)
    ]
    return "changed", ", ".join(fields) or "metadata"


def _check_duration(where: str, text: str) -> None:
    try:
        duration_ms(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _compile(model: DeviceModel) -> dict[str, PropertyRule]:
    """A model's property rules; ValueError if a bound is not a number."""
    return {prop.name: PropertyRule.from_model(prop) for prop in model.spec.properties}
