"""In a pod: the node finds the API server from KUBERNETES_SERVICE_HOST/PORT and speaks
HTTPS with the service account's CA and token; the token never reaches the log."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import pytest

from edgetwin.config import load_settings
from tests.kube.apiserver import FakeKubeAPI
from tests.kube.conftest import Cluster, synced_node
from tests.support import make_certificates, unique


async def test_service_account_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs / "server.crt", certs / "server.key")
    token = f"sa-{uuid.uuid4().hex}"
    with (
        FakeKubeAPI(tls=tls, token=token, bookmark_interval=0.2) as api,
        Cluster(api, api.kubeconfig(tmp_path / "kubeconfig", ca_file=certs / "ca.crt")) as cluster,
    ):
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text(token)
        (account / "ca.crt").write_bytes((certs / "ca.crt").read_bytes())
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        node_name, name = unique("node"), unique("dev")
        await cluster.add_thermostat(name, node_name)
        settings = load_settings(
            node={"name": node_name, "data_dir": str(tmp_path / "data")},
            broker={"port": 0},
            cloud={"in_cluster": True, "service_account_dir": str(account)},
        )
        async with synced_node(settings) as node:
            assert f"default/{name}" in node.engine.devices
    assert token not in caplog.text
    assert api.count("GET", "/devices") >= 1
