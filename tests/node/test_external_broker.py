"""A node on an external mosquitto that wants TLS and a password: it connects with what the
settings give it, serves, and says in one line when the broker refuses it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetwin.config import Settings, load_settings
from edgetwin.errors import BrokerUnreachableError
from edgetwin.mqtt import BrokerAddress, MqttConnection, request
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.support import make_certificates, mosquitto, thermostat, thermostat_model, unique

SECRET = "pa55-word-for-tests"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    make_certificates(folder)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(folder / "passwd"), "node", SECRET],
        check=True,
        capture_output=True,
    )
    listener = (
        "allow_anonymous false\n"
        f"password_file {folder / 'passwd'}\n"
        f"cafile {folder / 'ca.crt'}\n"
        f"certfile {folder / 'server.crt'}\n"
        f"keyfile {folder / 'server.key'}\n"
    )
    with mosquitto(folder, listener) as port:
        yield port, folder / "ca.crt"


def _settings(tmp_path: Path, port: int, ca: Path, password: str) -> Settings:
    return load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        broker={
            "embedded": False,
            "port": port,
            "username": "node",
            "password": password,
            "tls": {"ca_file": str(ca)},
        },
    )


async def test_tls_and_password(
    tmp_path: Path, secure_broker: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port, ca = secure_broker
    caplog.set_level("DEBUG")
    async with Node(_settings(tmp_path, port, ca, SECRET)) as node:
        name = unique("dev")
        assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
        assert node.service.connected.is_set()
        # a request from the broker's other side reaches the twin over TLS
        address = BrokerAddress(port=port, username="node", password=SECRET, ca_file=ca, tls=True)
        async with MqttConnection(address) as client:
            get = topics.twin_get_topic(f"default/{name}")
            answer = await request(
                client, get, b'{"event_id": "tls"}', result_topic=f"{get}/result", event_id="tls"
            )
        assert b'"target"' in answer
    assert SECRET not in caplog.text


@pytest.mark.parametrize("password", ["wrong", ""])
async def test_refused_credentials_are_one_clear_error(
    tmp_path: Path, password: str, secure_broker: tuple[int, Path]
) -> None:
    port, ca = secure_broker
    with pytest.raises(
        BrokerUnreachableError, match=f"cannot connect to the MQTT broker at 127.0.0.1:{port}"
    ) as info:
        async with Node(_settings(tmp_path, port, ca, password)):
            pass
    assert "\n" not in str(info.value)
    assert password not in str(info.value) or password == ""


# paho 2.2 does not close its SSL socket when the handshake fails (client.py, _ssl_wrap_socket);
# CPython closes it when the object goes, with a ResourceWarning this test would turn into an error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_untrusted_certificate_is_refused(
    tmp_path: Path, secure_broker: tuple[int, Path]
) -> None:
    port, _ = secure_broker
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(other)
    with pytest.raises(
        BrokerUnreachableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
    ):
        async with Node(_settings(tmp_path, port, other / "ca.crt", SECRET)):
            pass
