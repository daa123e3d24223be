"""The edgetwin command as a user runs it: a node process, then apply, get and set against it,
and a one-line error for each way it can go wrong."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import orjson
import pytest
import yaml

from tests.support import NodeProcess, free_port, run_cli, unique

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def running(tmp_path: Path):  # type: ignore[no-untyped-def]
    with NodeProcess(tmp_path, node=unique("node")) as node:
        yield node


def _common(node: NodeProcess) -> list[str]:
    return ["--node", node.node, "--broker", f"127.0.0.1:{node.port}"]


def test_apply_get_set_flow(running: NodeProcess) -> None:
    common = _common(running)
    applied = run_cli("apply", "-f", str(EXAMPLES / "thermostat"), *common)
    assert applied.returncode == 0, applied.stderr
    assert "Device default/thermostat-01 applied" in applied.stdout

    table = run_cli("get", "devices", *common)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["DEVICE", "MODEL", "PROTOCOL", "STATE", "IN", "SYNC", "PENDING"]
    assert row.split() == [
        "default/thermostat-01",
        "thermostat-model",
        "modbus",
        "unknown",
        "2/3",
        "target-temperature",
    ]

    done = run_cli("set", "default/thermostat-01", "target-temperature=25", *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "default/thermostat-01 target-temperature: desired 25"

    as_json = run_cli("get", "device", "default/thermostat-01", "-o", "json", *common)
    document = orjson.loads(as_json.stdout)
    assert document["twin"]["target-temperature"]["expected"]["value"] == "25"
    as_yaml = yaml.safe_load(
        run_cli("get", "device", "default/thermostat-01", "-o", "yaml", *common).stdout
    )
    assert as_yaml["twin"] == document["twin"]
    table = run_cli("get", "device", "default/thermostat-01", *common).stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    # No mapper here: the delta went out, and nothing has read the value back yet.
    assert rows["target-temperature"][:6] == [
        "target-temperature",
        "float",
        "25",
        "-",
        "no",
        "sent",
    ]
    assert re.fullmatch(r"\d+s", rows["target-temperature"][6])


def test_set_refusals_are_one_line(running: NodeProcess) -> None:
    common = _common(running)
    assert run_cli("apply", "-f", str(EXAMPLES / "thermostat"), *common).returncode == 0
    for args, words in [
        (["default/thermostat-01", "target-temperature=99"], "above the maximum 35 (code 400)"),
        (["default/thermostat-01", "current-temperature=20"], "ReadOnly"),
        (["default/nope", "x=1"], "unknown device default/nope (code 404)"),
        (["default/thermostat-01", "novalue"], "must be PROP=VALUE"),
        (["thermostat-01", "x=1"], "<namespace>/<name>"),
    ]:
        result = run_cli("set", *args, *common)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("edgetwin: error: ")
        assert words in result.stderr


def test_bad_manifest_names_the_field(running: NodeProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    document = yaml.safe_load((EXAMPLES / "thermostat" / "device.yaml").read_text())
    document["spec"]["properties"][0]["collectCycle"] = "often"
    bad.write_text(yaml.safe_dump(document))
    result = run_cli("apply", "-f", str(bad), *_common(running))
    assert result.returncode == 1
    assert "spec.properties[0].collectCycle" in result.stderr
    assert result.stderr.count("\n") == 1


def test_sigint_and_sigterm_stop_cleanly(tmp_path: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        node = NodeProcess(tmp_path / sig.name, node=unique("node")).start()
        assert node.stop(sig) == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--manifests", "/no/such/dir"], "/no/such/dir does not exist"),
        (["run", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
        (["get", "devices", "--broker", "nonsense"], "--broker must be HOST:PORT"),
    ],
)
def test_one_line_errors(args: list[str], words: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1
    assert result.stderr == f"edgetwin: error: {result.stderr.removeprefix('edgetwin: error: ')}"
    assert words in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_config_value_is_named(tmp_path: Path) -> None:
    config = tmp_path / "edgetwin.yaml"
    config.write_text("broker:\n  port: seventy\n")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 1
    assert "invalid configuration: broker.port" in result.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--data-dir", str(tmp_path), "--broker", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr


@pytest.mark.parametrize("command", [["get", "devices"], ["run", "--external-broker"]])
def test_broker_unreachable(command: list[str], tmp_path: Path) -> None:
    port = free_port()
    result = (
        run_cli(*command, "--data-dir", str(tmp_path), "--broker", f"127.0.0.1:{port}")
        if command[0] == "run"
        else run_cli(*command, "--broker", f"127.0.0.1:{port}")
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("edgetwin: error:")]
    assert errors == [result.stderr.splitlines()[-1]]
    assert f"cannot connect to the MQTT broker at 127.0.0.1:{port}" in errors[0]


def test_no_node_answers(tmp_path: Path, mosquitto_port: int) -> None:
    result = run_cli(
        "get",
        "devices",
        "--node",
        "absent",
        "--timeout",
        "0.5",
        "--broker",
        f"127.0.0.1:{mosquitto_port}",
    )
    assert result.returncode == 1
    assert "within 0.5 s (is the node running?)" in result.stderr
