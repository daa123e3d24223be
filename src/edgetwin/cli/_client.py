"""The commands that talk to a running node over the MQTT twin API: apply, get, set, history,
acl."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
import uuid
from datetime import datetime
from typing import Any

import orjson
import yaml

from edgetwin.cli._acl import acl_text, write_if_changed
from edgetwin.config import Settings
from edgetwin.errors import EdgetwinError, RequestError
from edgetwin.mqtt import BrokerAddress, MqttConnection, request
from edgetwin.twin.manifests import parse_document, read_documents
from edgetwin.twin.writes import OPEN, Phase, duration_ms
from edgetwin.wire import topics
from edgetwin.wire.messages import now_ms
from edgetwin.wire.names import split_device_id

ANSWER_TIMEOUT = 10.0
"""Seconds a command waits for the node's answer (``--timeout``)."""
WRITE_TIMEOUT = 60.0
"""Seconds ``set --wait`` waits for the writes' outcome (``--timeout``): longer than the
node's own write timeout (``twin.write_timeout``), which closes every write it waits for."""


async def run_command(args: argparse.Namespace, settings: Settings) -> None:
    address = BrokerAddress.from_settings(settings.broker)
    node = settings.node.name
    wait = getattr(args, "wait", False)
    timeout = args.timeout or (WRITE_TIMEOUT if wait else ANSWER_TIMEOUT)
    async with MqttConnection(address, client_id=f"edgetwin-cli-{uuid.uuid4().hex[:8]}") as mqtt:
        asker = _Asker(mqtt, timeout)
        if args.command == "apply":
            await _apply(asker, node, args)
        elif args.command == "set" and wait:
            await _set_and_wait(mqtt, args, timeout)
        elif args.command == "set":
            await _set(asker, args)
        elif args.command == "history":
            await _history(asker, args)
        elif args.command == "acl":
            await _acl(asker, node, settings, args)
        elif args.what == "devices":
            await _get_devices(asker, node, args.output)
        else:
            await _get_device(asker, args)


class _Asker:
    """Requests to the node, each waiting for the result with its own event_id."""

    def __init__(self, mqtt: MqttConnection, wait: float) -> None:
        self.mqtt = mqtt
        self.wait = wait

    async def __call__(self, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        event_id = uuid.uuid4().hex
        raw = await request(
            self.mqtt,
            topic,
            orjson.dumps({"event_id": event_id, **body}),
            result_topic=f"{topic}/result",
            event_id=event_id,
            wait=self.wait,
        )
        result: dict[str, Any] = orjson.loads(raw)
        if "code" in result:
            raise RequestError(f"{result.get('reason')} (code {result['code']})")
        return result


def _device_arg(value: str | None) -> str:
    if not value:
        raise EdgetwinError("name the device as NAMESPACE/NAME")
    try:
        split_device_id(value)
    except ValueError as exc:
        raise EdgetwinError(str(exc)) from None
    return value


async def _apply(ask: _Asker, node: str, args: argparse.Namespace) -> None:
    documents = read_documents(args.filename)
    for index, document in enumerate(documents):  # check locally first: errors name the file
        parse_document(document, f"{args.filename} (document {index + 1})")
    result = await ask(topics.apply_topic(node), {"documents": documents})
    for name in result.get("applied", []):
        print(f"{name} applied")
    if result.get("errors"):
        raise EdgetwinError("; ".join(result["errors"]))


def _set_body(args: argparse.Namespace) -> dict[str, Any]:
    """A twin/update setting the desired values of ``set``, saying it comes from the CLI."""
    twin: dict[str, Any] = {}
    for assignment in args.assignments:
        prop, sep, value = assignment.partition("=")
        if not sep or not prop:
            raise EdgetwinError(f"{assignment!r} must be PROP=VALUE")
        twin[prop] = {"expected": {"value": value}}
    user = re.sub(r"[^A-Za-z0-9._@-]", "", getpass.getuser())[:48] or "unknown"
    return {"twin": twin, "by": f"cli:{user}"}


def _print_set(device: str, result: dict[str, Any]) -> None:
    for prop, sides in result.get("twin", {}).items():
        print(f"{device} {prop}: desired {sides['expected']['value']}")


async def _set(ask: _Asker, args: argparse.Namespace) -> None:
    device = _device_arg(args.device)
    _print_set(device, await ask(topics.twin_update_topic(device), _set_body(args)))


async def _set_and_wait(mqtt: MqttConnection, args: argparse.Namespace, limit: float) -> None:
    """``set --wait``: set, then follow each write until it is written, failed or timed out."""
    device = _device_arg(args.device)
    waiter = _WriteWaiter(mqtt, device)
    try:
        async with asyncio.timeout(limit):
            await waiter.run(_set_body(args))
    except TimeoutError:
        left = ", ".join(f"{p} {w.get('phase', 'pending')}" for p, w in waiter.open().items())
        raise EdgetwinError(f"no outcome within {limit:g} s: {left}") from None
    failed = []
    for prop, write in sorted(waiter.writes.items()):
        if write["phase"] == Phase.WRITTEN:
            print(f"{device} {prop}: written ({write['at'] - write['set']} ms)")
        else:
            failed.append(f"{prop} {_phase_words(write)}")
    if failed:
        raise EdgetwinError(f"{device}: " + "; ".join(failed))


class _WriteWaiter:
    """Sets desired values and follows their writes on ``…/twin/write``, with a twin/get
    after the set for what happened before the first move arrived."""

    def __init__(self, mqtt: MqttConnection, device: str) -> None:
        self.mqtt = mqtt
        self.device = device
        self.set_ms: int | None = None
        self.writes: dict[str, dict[str, Any]] = {}
        self._set_id = uuid.uuid4().hex
        self._get_id = uuid.uuid4().hex

    def open(self) -> dict[str, dict[str, Any]]:
        return {p: w for p, w in self.writes.items() if w.get("phase") in (None, *OPEN)}

    async def run(self, body: dict[str, Any]) -> None:
        device = self.device
        set_topic, get_topic = topics.twin_update_topic(device), topics.twin_get_topic(device)
        await self.mqtt.subscribe(
            [topics.write_topic(device), f"{set_topic}/result", f"{get_topic}/result"]
        )
        self.writes = {prop: {} for prop in body["twin"]}
        await self.mqtt.publish(set_topic, orjson.dumps({"event_id": self._set_id, **body}))
        async for topic, payload in self.mqtt.messages():
            try:
                message = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("event_id") == self._set_id and topic == f"{set_topic}/result":
                await self._set_result(message, get_topic)
            elif message.get("event_id") == self._get_id:
                for prop, entry in (message.get("twin") or {}).items():
                    self._take(prop, entry.get("write"))
            elif topic == topics.write_topic(device):
                self._take(message.get("property"), message.get("write"))
            if self.set_ms is not None and not self.open():
                return

    async def _set_result(self, message: dict[str, Any], get_topic: str) -> None:
        if "code" in message:
            raise RequestError(f"{message.get('reason')} (code {message['code']})")
        _print_set(self.device, message)
        self.set_ms = int(message["timestamp"])
        await self.mqtt.publish(get_topic, orjson.dumps({"event_id": self._get_id}))

    def _take(self, prop: object, write: object) -> None:
        """A write of ours, if it is one: the one the set opened, or a later one (superseded)."""
        if self.set_ms is None or prop not in self.writes or not isinstance(write, dict):
            return
        if write.get("set") == self.set_ms:
            self.writes[str(prop)] = write
        elif isinstance(write.get("set"), int) and write["set"] > self.set_ms:
            self.writes[str(prop)] = {
                **write,
                "phase": Phase.FAILED,
                "reason": f"superseded by {write.get('value')!r} from {write.get('by')}",
            }


async def _acl(ask: _Asker, node: str, settings: Settings, args: argparse.Namespace) -> None:
    """The mosquitto acl_file for broker.auth's roles and the node's devices now."""
    text, count = acl_text(settings, await ask(topics.membership_get_topic(node), {}))
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_if_changed(args.output, text)
        print(f"{args.output}: {count} device(s)")


async def _get_devices(ask: _Asker, node: str, output: str) -> None:
    result = await ask(topics.membership_get_topic(node), {})
    devices = result.get("devices", [])
    if output != "table":
        _dump(devices, output)
        return
    following = (result.get("cloud") or {}).get("following")
    if following:
        print(f"following {following} of the cluster", file=sys.stderr)
    cloud = any("cloud" in d for d in devices)
    rows = [
        ["DEVICE", "MODEL", "PROTOCOL", "STATE", "IN SYNC", "PENDING"]
        + (["CLOUD"] if cloud else [])
    ]
    for d in sorted(devices, key=lambda d: d["id"]):
        pending = d.get("pending", [])
        row = [
            d["id"],
            d.get("model") or "-",
            d.get("protocol") or "-",
            d.get("state") or "unknown",
            f"{d.get('properties', 0) - len(pending)}/{d.get('properties', 0)}",
            ",".join(pending) or "-",
        ]
        rows.append(row + ([d.get("cloud", "-")] if cloud else []))
    _table(rows)


async def _get_device(ask: _Asker, args: argparse.Namespace) -> None:
    device = _device_arg(args.device)
    result = await ask(topics.twin_get_topic(device), {})
    if args.output != "table":
        result.pop("event_id", None)
        _dump({"id": device, **result}, args.output)
        return
    print(f"device: {device}   state: {result.get('state')}")
    rows = [["PROPERTY", "TYPE", "DESIRED", "REPORTED", "IN SYNC", "WRITE"]]
    notes = []
    for prop, twin in sorted(result.get("twin", {}).items()):
        desired = twin.get("expected", {}).get("value")
        reported = twin.get("actual", {}).get("value")
        flag = twin.get("out_of_range")
        if flag:
            notes.append(f"! {prop}: reported value out of range, kept: {flag}")
        rows.append(
            [
                prop,
                twin.get("metadata", {}).get("type", ""),
                "-" if desired is None else desired,
                ("-" if reported is None else reported) + (" !" if flag else ""),
                "yes" if desired is None or desired == reported else "no",
                _phase_words(twin["write"]) if "write" in twin else "-",
            ]
        )
    _table(rows)
    for note in notes:
        print(note)


def _phase_words(write: dict[str, Any]) -> str:
    """A write as the WRITE column says it: ``pending 3s``, ``written``, ``failed: <why>``."""
    phase = write.get("phase")
    if phase in OPEN:
        return f"{phase} {max(0, now_ms() - int(write.get('set', 0))) // 1000}s"
    if phase == Phase.TIMED_OUT:
        return f"timed out: {write.get('reason', '')}".rstrip(": ")
    if phase == Phase.FAILED:
        return f"failed: {write.get('reason', '')}".rstrip(": ")
    return str(phase)


async def _history(ask: _Asker, args: argparse.Namespace) -> None:
    device = _device_arg(args.device)
    body: dict[str, Any] = {"limit": args.limit}
    if args.property:
        body["property"] = args.property
    if args.since:
        try:
            body["since"] = now_ms() - duration_ms(args.since)
        except ValueError as exc:
            raise EdgetwinError(f"--since: {exc}") from None
    result = await ask(topics.history_get_topic(device), body)
    events = result.get("events", [])
    if args.output != "table":
        _dump({"device": device, "events": events}, args.output)
        return
    rows = [["TIME", "PROPERTY", "KIND", "VALUE", "DETAIL"]]
    for event in events:
        when = datetime.fromtimestamp(event["ts"] / 1000).astimezone()
        rows.append(
            [
                when.isoformat(timespec="milliseconds"),
                event.get("property", "-"),
                event["kind"],
                "-" if event.get("value") is None else str(event["value"]),
                event.get("detail", ""),
            ]
        )
    _table(rows)


def _dump(value: object, output: str) -> None:
    if output == "json":
        sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(value, sort_keys=False))


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
