"""The node's read-only page in a real browser (Debian's headless Chromium): after ``edgetwin
set`` it shows the value written to a real Modbus server and plots the property's history; a
device's value that looks like HTML stays text. And what its JSON endpoints refuse."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from edgetwin.config import load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.mappers.modbus_support import modbus_device, modbus_mapper, modbus_model, tcp_slaves
from tests.mappers.watch import DeviceWatch
from tests.metrics import http
from tests.support import Paho, run_cli, thermostat, thermostat_model, unique


@pytest.fixture
async def page_node(broker_kind: str, tmp_path: Path) -> Any:
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        broker={"engine": broker_kind, "port": 0},
        store={"synchronous": "NORMAL"},
        health={"port": 0, "page": True},
    )
    async with Node(settings) as node:
        yield node


class _Page(HTMLParser):
    """The rendered DOM: each table row's data attributes and cell texts, and the plot box."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.plot: dict[str, str | None] = {}
        self.canvases = 0
        self.elements: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.add(tag)
        found = dict(attrs)
        if tag == "tr":
            self.rows.append((found, []))
        elif tag == "td" and self.rows:
            self._cell = []
        elif tag == "div" and found.get("id") == "plot":
            self.plot = found
        elif tag == "canvas":
            self.canvases += 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell))
            self._cell = None

    def cells(self, device: str, prop: str) -> list[str]:
        for attrs, cells in self.rows:
            if attrs.get("data-device") == device and attrs.get("data-property") == prop:
                return cells
        raise AssertionError(f"no row for {device} {prop}")


def _browse(url: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed: run scripts/test, which installs it")
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # the tests run as root here
            "--disable-gpu",
            "--virtual-time-budget=5000",  # the page's fetches and first refresh, then the DOM
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_page_shows_a_set_value_written_and_plots_its_history(page_node: Node) -> None:
    node = page_node
    async with tcp_slaves() as slaves, modbus_mapper(node):
        model, name = unique("model"), unique("dev")
        device = f"default/{name}"
        protocol = {"ip": "127.0.0.1", "port": slaves.server.comm_params.source_address[1]}
        assert (
            await node.service.apply(
                [modbus_model(model), modbus_device(name, model, {**protocol, "slaveID": 1})]
            )
            == []
        )
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_reported(setpoint="0")
            where = ("--broker", f"127.0.0.1:{node.broker_port}", "--node", node.settings.node.name)
            done = await asyncio.to_thread(
                run_cli, "set", device, "setpoint=21.5", "--wait", *where
            )
            assert done.returncode == 0, done.stderr
        async with Paho(node.broker_port) as client:  # a value that looks like HTML
            update = topics.twin_update_topic(device)
            await client.subscribe(f"{update}/result")
            html = '<img src="x" onerror="alert(1)">'
            answer = await client.request(update, {"twin": {"label": {"actual": {"value": html}}}})
            assert "code" not in answer

        assert node.health_port is not None
        query = urlencode({"device": device, "property": "setpoint"})
        dom = await asyncio.to_thread(_browse, f"http://127.0.0.1:{node.health_port}/?{query}")
    page = _Page()
    page.feed(dom)
    name_, kind, desired, reported, write, _seen = page.cells(device, "setpoint")
    assert (name_, kind, desired, reported, write) == (
        "setpoint",
        "float",
        "21.5",
        "21.5",
        "written",
    )
    assert page.cells(device, "label")[3] == html  # as text
    assert "img" not in page.elements
    assert page.canvases >= 1
    assert int(page.plot["data-points"] or 0) >= 2  # 0, then 21.5
    assert page.plot["data-last"] == "21.5"


async def test_the_page_s_data_refuses_what_it_cannot_answer(page_node: Node) -> None:
    port = page_node.health_port
    assert port is not None
    name = unique("dev")
    assert await page_node.service.apply([thermostat_model(), thermostat(name)]) == []
    status, body = await http(port, "/api/devices")
    assert status == 200
    assert [d["id"] for d in orjson.loads(body)["devices"]] == [f"default/{name}"]
    history = f"/api/history?device=default/{name}"
    for target, code in [
        (history, 200),
        ("/api/history", 404),
        ("/api/history?device=default/nobody", 404),
        (f"{history}&property=nothing", 404),
        (f"{history}&since=soon", 400),
        (f"{history}&limit=0", 400),
        (f"{history}&limit=10001", 400),
        ("/static/../_page.py", 404),
        ("/static/page.js?x=1", 200),
    ]:
        assert (await http(port, target))[0] == code, target
    status, _ = await http(port, "/", method="POST")
    assert status == 405


async def test_the_page_is_off_by_default(node: Node) -> None:
    assert node.health_port is not None
    assert (await http(node.health_port, "/"))[0] == 404
    assert (await http(node.health_port, "/api/devices"))[0] == 404
