"""Each embedded broker's TLS listener: client certificates name the user; bad ones are refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import yaml

from edgetwin.broker import EmbeddedBroker
from edgetwin.config import load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.support import EDGETWIN, Paho, env_without_edgetwin, thermostat, thermostat_model, unique


@dataclass
class TlsNode:
    node: Node
    port: int
    ca: trustme.CA
    folder: Path

    def context(self, cert: trustme.LeafCert | None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context

    def client(self, cert: trustme.LeafCert | None) -> Paho:
        return Paho(self.port, tls=self.context(cert))


@pytest.fixture(params=["amqtt", "mosquitto"])
async def tls_node(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[TlsNode]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.crt")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.crt")
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        store={"synchronous": "NORMAL"},
        broker={
            "port": 0,
            "engine": request.param,
            "tls_listener": {
                "port": 0,
                "cert_file": str(tmp_path / "server.crt"),
                "key_file": str(tmp_path / "server.key"),
                "ca_file": str(tmp_path / "ca.crt"),
                "require_client_cert": True,
            },
            "auth": {"admins": ["admin"], "devices": {"dev-a": "default/a"}},
        },
    )
    async with Node(settings) as node:
        assert await node.service.apply([thermostat_model(), thermostat("a")]) == []
        assert node.broker is not None
        assert node.broker.tls_port is not None
        yield TlsNode(node, node.broker.tls_port, ca, tmp_path)


def _client_cert(ca: trustme.CA, user: str, *, expired: bool = False) -> trustme.LeafCert:
    if not expired:
        return ca.issue_cert(f"{user}.clients.example", common_name=user)
    now = dt.datetime.now(dt.UTC)
    return ca.issue_cert(
        f"{user}.clients.example",
        common_name=user,
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(days=1),
    )


async def test_a_client_certificate_names_the_user(tls_node: TlsNode) -> None:
    async with tls_node.client(_client_cert(tls_node.ca, "admin")) as admin:
        get = topics.twin_get_topic("default/a")
        assert await admin.subscribe(f"{get}/result") == [True]
        result = await admin.request(get, {"event_id": "1"})
    assert "target" in result["twin"]
    async with tls_node.client(_client_cert(tls_node.ca, "dev-a")) as device:
        # A device by its certificate: its own topics only.
        granted = await device.subscribe("$hw/events/device/default/a/#", "$hw/#")
        assert granted == [True, False]


@pytest.mark.parametrize("problem", ["expired", "untrusted", "none"])
async def test_bad_or_missing_client_certificates_are_refused(
    tls_node: TlsNode, problem: str
) -> None:
    if problem == "expired":
        cert: trustme.LeafCert | None = _client_cert(tls_node.ca, "admin", expired=True)
    elif problem == "untrusted":
        cert = _client_cert(trustme.CA(), "admin")
    else:
        cert = None
    with pytest.raises(OSError):  # a TLS alert, or a reset
        async with tls_node.client(cert):
            pass
    async with tls_node.client(_client_cert(tls_node.ca, "admin")):
        pass  # a good one still gets in; by now the refusal has been handled
    broker = tls_node.node.broker
    if isinstance(broker, EmbeddedBroker):
        assert broker.tally.refused == {"tls_handshake": 1}


async def test_the_cli_over_tls_with_a_client_certificate(tls_node: TlsNode) -> None:
    folder = tls_node.folder
    _client_cert(tls_node.ca, "admin").private_key_and_cert_chain_pem.write_to_path(
        folder / "admin.pem"
    )
    config = folder / "cli.yaml"
    broker = {
        "host": "127.0.0.1",
        "port": tls_node.port,
        "tls": {
            "ca_file": str(folder / "ca.crt"),
            "cert_file": str(folder / "admin.pem"),
            "key_file": str(folder / "admin.pem"),
        },
    }
    config.write_text(
        yaml.safe_dump({"node": {"name": tls_node.node.settings.node.name}, "broker": broker})
    )
    shown = await asyncio.to_thread(
        subprocess.run,
        [*EDGETWIN, "get", "devices", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env_without_edgetwin(),
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "default/a" in shown.stdout
