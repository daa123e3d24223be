"""Argument parsing, logging, signals and one-line errors for every command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetwin.cli import _client
from edgetwin.config import Settings, load_settings
from edgetwin.errors import EdgetwinError

log = logging.getLogger("edgetwin")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML settings file")
    common.add_argument("--node", help="node name (default: the host name)")
    common.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker to use")
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the node's answer"
    )

    parser = argparse.ArgumentParser(prog="edgetwin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="run a node")
    run.add_argument("--manifests", type=Path, help="Device/DeviceModel YAML file or folder")
    run.add_argument("--data-dir", type=Path, help="folder for the SQLite file")
    run.add_argument("--external-broker", action="store_true", help="do not embed a broker")
    run.add_argument("--kubeconfig", type=Path, help="follow this cluster's Devices (cloud sync)")
    run.add_argument(
        "--namespace", action="append", help="a namespace to follow (repeatable; default: default)"
    )

    apply = commands.add_parser(
        "apply", parents=[common, client], help="add or update devices/models"
    )
    apply.add_argument("-f", "--filename", type=Path, required=True, help="YAML file or folder")

    get = commands.add_parser("get", parents=[common, client], help="show devices")
    get.add_argument("what", choices=["devices", "device"])
    get.add_argument("device", nargs="?", help="NAMESPACE/NAME (for 'get device')")
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    set_ = commands.add_parser("set", parents=[common, client], help="set desired property values")
    set_.add_argument("device", help="NAMESPACE/NAME")
    set_.add_argument("assignments", nargs="+", metavar="PROP=VALUE")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.node:
        overrides.setdefault("node", {})["name"] = args.node
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise EdgetwinError(f"--broker must be HOST:PORT, not {args.broker!r}")
        overrides["broker"] = {"host": host, "port": int(port)}
    if getattr(args, "data_dir", None):
        overrides.setdefault("node", {})["data_dir"] = str(args.data_dir)
    if getattr(args, "manifests", None):
        overrides["manifests"] = str(args.manifests)
    if getattr(args, "external_broker", False):
        overrides.setdefault("broker", {})["embedded"] = False
    if getattr(args, "kubeconfig", None):
        overrides.setdefault("cloud", {})["kubeconfig"] = str(args.kubeconfig)
    if getattr(args, "namespace", None):
        overrides.setdefault("cloud", {})["namespaces"] = args.namespace
    return load_settings(args.config, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        _configure_logging(settings.log.level)
        if args.command == "run":
            asyncio.run(_run(settings))
        else:
            asyncio.run(_client.run_command(args, settings))
    except EdgetwinError as exc:
        print(f"edgetwin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    # Imported here: apply/get/set need neither the broker nor the store.
    from edgetwin.node import run_node  # noqa: PLC0415

    await run_node(settings, stop=stop)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("amqtt", "transitions", "aiosqlite", "mqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
