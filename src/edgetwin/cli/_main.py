"""Argument parsing, logging, signals and one-line errors for every command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from edgetwin.cli import _client
from edgetwin.cli._acl import MosquittoAclFollower
from edgetwin.cli._logs import configure_logging
from edgetwin.cli._notify import systemd_notifier
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
        "--timeout",
        type=float,
        help="seconds to wait for the node's answer (default 10; 60 for set --wait)",
    )

    parser = argparse.ArgumentParser(prog="edgetwin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="run a node")
    run.add_argument("--manifests", type=Path, help="Device/DeviceModel YAML file or folder")
    run.add_argument("--data-dir", type=Path, help="folder for the SQLite file")
    run.add_argument("--external-broker", action="store_true", help="do not embed a broker")
    run.add_argument("--kubeconfig", type=Path, help="follow this cluster's Devices (cloud sync)")
    run.add_argument(
        "--namespace",
        action="append",
        help="a namespace to follow (repeatable; default: the kubeconfig context's)",
    )
    run.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="follow this node's devices in every namespace",
    )
    run.add_argument(
        "--mapper", action="append", metavar="PROTOCOL", help="run this mapper too (repeatable)"
    )

    mapper = commands.add_parser(
        "mapper", parents=[common], help="run one protocol mapper against a broker"
    )
    mapper.add_argument("protocol", help="the mapper's protocol, e.g. modbus or mqtt")

    simulate = commands.add_parser("simulate", help="run a simulated device")
    devices = simulate.add_subparsers(dest="device", required=True)
    thermostat = devices.add_parser("thermostat", help="a Modbus TCP thermostat")
    thermostat.add_argument("--host", default="127.0.0.1", help="address to listen on")
    thermostat.add_argument("--port", type=int, default=5020, help="Modbus TCP port")
    thermostat.add_argument("--unit", type=int, default=1, help="Modbus slave id")
    thermostat.add_argument(
        "--start", type=float, default=18.0, help="room temperature at start, degrees C"
    )
    sensor = devices.add_parser(
        "mqtt-sensor", parents=[common], help="a JSON sensor on MQTT (Zigbee2MQTT style)"
    )
    sensor.add_argument("--name", default="sensor-01", help="the zigbee2mqtt/<name> topics")
    sensor.add_argument("--interval", type=float, default=1.0, help="seconds between readings")

    _client_commands(commands, [common, client])

    acl = commands.add_parser(
        "acl",
        parents=[common, client],
        help="write mosquitto's acl_file for broker.auth's roles and the node's devices",
    )
    acl.add_argument(
        "--mosquitto", action="store_true", required=True, help="in mosquitto's acl_file format"
    )
    acl.add_argument("-o", "--output", type=Path, help="write here instead of to stdout")
    acl.add_argument(
        "--follow",
        action="store_true",
        help="keep running: write the file again whenever the node's devices change",
    )
    acl.add_argument(
        "--reload-pid-file",
        type=Path,
        help="mosquitto's pid_file: send it SIGHUP after each write (with --follow)",
    )

    passwd = commands.add_parser(
        "passwd", help="add or change a user in a password file (mosquitto_passwd format)"
    )
    passwd.add_argument("file", type=Path, help="the password file (created if missing)")
    passwd.add_argument("user", help="the user name")
    passwd.add_argument("--delete", action="store_true", help="remove the user instead")
    passwd.add_argument(
        "--stdin", action="store_true", help="read the password from stdin, not a prompt"
    )
    return parser


def _client_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """The commands that ask a running node over MQTT: apply, get, set, history."""
    apply = commands.add_parser("apply", parents=parents, help="add or update devices/models")
    apply.add_argument("-f", "--filename", type=Path, required=True, help="YAML file or folder")

    get = commands.add_parser("get", parents=parents, help="show devices")
    get.add_argument("what", choices=["devices", "device"])
    get.add_argument("device", nargs="?", help="NAMESPACE/NAME (for 'get device')")
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    set_ = commands.add_parser("set", parents=parents, help="set desired property values")
    set_.add_argument("device", help="NAMESPACE/NAME")
    set_.add_argument("assignments", nargs="+", metavar="PROP=VALUE")
    set_.add_argument(
        "--wait",
        action="store_true",
        help="wait until each value is written to the device (read back), or its write "
        "failed or timed out; exit 1 with the reason then",
    )

    history = commands.add_parser("history", parents=parents, help="show what changed on a device")
    history.add_argument("device", help="NAMESPACE/NAME")
    history.add_argument("property", nargs="?", help="only this property's changes")
    history.add_argument("--since", metavar="DURATION", help="e.g. 10m, 2h (default: all kept)")
    history.add_argument("--limit", type=int, default=1000, help="the latest N changes")
    history.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


# Options that set one setting as given: option -> (section, key); section "" is the top.
_SETTING_OF = {
    "node": ("node", "name"),
    "data_dir": ("node", "data_dir"),
    "manifests": ("", "manifests"),
    "kubeconfig": ("cloud", "kubeconfig"),
    "namespace": ("cloud", "namespaces"),
    "all_namespaces": ("cloud", "all_namespaces"),
    "mapper": ("", "mappers"),
}


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for option, (section, key) in _SETTING_OF.items():
        value = getattr(args, option, None)
        if value:
            value = str(value) if isinstance(value, Path) else value
            (overrides.setdefault(section, {}) if section else overrides)[key] = value
    if getattr(args, "broker", None):
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise EdgetwinError(f"--broker must be HOST:PORT, not {args.broker!r}")
        overrides.setdefault("broker", {}).update(host=host, port=int(port))
    if getattr(args, "external_broker", False):
        overrides.setdefault("broker", {})["embedded"] = False
    return load_settings(getattr(args, "config", None), **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "passwd":
            _passwd(args)
            return 0
        settings = _settings(args)
        configure_logging(settings.log.level, settings.log.format)
        service = _SERVICES.get(args.command)
        if args.command == "acl" and args.follow:
            service = _acl_follower
        if service is not None:
            asyncio.run(_serve_until_signal(service(args, settings)))
        else:
            asyncio.run(_client.run_command(args, settings))
    except EdgetwinError as exc:
        print(f"edgetwin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve_until_signal(service: AbstractAsyncContextManager[object]) -> None:
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
    notify = systemd_notifier()
    async with service:
        notify("READY=1")
        await stop.wait()
        notify("STOPPING=1")


# The long-running commands. Imported when run: apply/get/set need none of them.


def _node(_args: argparse.Namespace, settings: Settings) -> AbstractAsyncContextManager[object]:
    from edgetwin.node import Node  # noqa: PLC0415

    return Node(settings)


def _mapper(args: argparse.Namespace, settings: Settings) -> AbstractAsyncContextManager[object]:
    from edgetwin.mappers import MapperRuntime, load_mapper  # noqa: PLC0415
    from edgetwin.mqtt import BrokerAddress  # noqa: PLC0415

    return MapperRuntime(
        load_mapper(args.protocol),
        BrokerAddress.from_settings(settings.broker),
        node=settings.node.name,
        reconnect_max_delay=settings.broker.reconnect_max_delay,
    )


def _simulator(args: argparse.Namespace, settings: Settings) -> AbstractAsyncContextManager[object]:
    from edgetwin.mqtt import BrokerAddress  # noqa: PLC0415
    from edgetwin.simulate import MqttSensorSimulator, ThermostatSimulator  # noqa: PLC0415

    if args.device == "thermostat":
        return ThermostatSimulator(args.host, args.port, unit=args.unit, start=args.start)
    address = BrokerAddress.from_settings(settings.broker)
    return MqttSensorSimulator(address, args.name, args.interval)


def _acl_follower(
    args: argparse.Namespace, settings: Settings
) -> AbstractAsyncContextManager[object]:
    if args.output is None:
        raise EdgetwinError("acl --follow needs -o FILE: the acl_file to keep up to date")
    return MosquittoAclFollower(settings, args.output, args.reload_pid_file)


_SERVICES: dict[
    str, Callable[[argparse.Namespace, Settings], AbstractAsyncContextManager[object]]
] = {"run": _node, "mapper": _mapper, "simulate": _simulator}


def _passwd(args: argparse.Namespace) -> None:
    """Add, change or delete one user; the password never appears on the command line."""
    from edgetwin.auth import PasswordFile  # noqa: PLC0415

    passwords = PasswordFile.load(args.file) if args.file.exists() else PasswordFile(args.file)
    if args.delete:
        if passwords.entries.pop(args.user, None) is None:
            raise EdgetwinError(f"{args.file} has no user {args.user!r}")
    else:
        if args.stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {args.user}: ")
            if getpass.getpass("again: ") != password:
                raise EdgetwinError("the passwords differ")
        if not password:
            raise EdgetwinError("the password may not be empty")
        passwords.set(args.user, password)
    passwords.save()
