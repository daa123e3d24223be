"""The commands that talk to a running node over the MQTT twin API: apply, get, set, acl."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import orjson
import yaml

from edgetwin.cli._acl import acl_text, write_if_changed
from edgetwin.config import Settings
from edgetwin.errors import EdgetwinError, RequestError
from edgetwin.mqtt import BrokerAddress, MqttConnection, request
from edgetwin.twin.manifests import parse_document, read_documents
from edgetwin.wire import topics
from edgetwin.wire.names import split_device_id


async def run_command(args: argparse.Namespace, settings: Settings) -> None:
    address = BrokerAddress.from_settings(settings.broker)
    node = settings.node.name
    async with MqttConnection(address, client_id=f"edgetwin-cli-{uuid.uuid4().hex[:8]}") as mqtt:
        asker = _Asker(mqtt, args.timeout)
        if args.command == "apply":
            await _apply(asker, node, args)
        elif args.command == "set":
            await _set(asker, args)
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


async def _set(ask: _Asker, args: argparse.Namespace) -> None:
    device = _device_arg(args.device)
    twin: dict[str, Any] = {}
    for assignment in args.assignments:
        prop, sep, value = assignment.partition("=")
        if not sep or not prop:
            raise EdgetwinError(f"{assignment!r} must be PROP=VALUE")
        twin[prop] = {"expected": {"value": value}}
    result = await ask(topics.twin_update_topic(device), {"twin": twin})
    for prop, sides in result.get("twin", {}).items():
        print(f"{device} {prop}: desired {sides['expected']['value']}")


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
    rows = [["PROPERTY", "TYPE", "DESIRED", "REPORTED", "IN SYNC"]]
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
            ]
        )
    _table(rows)
    for note in notes:
        print(note)


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
