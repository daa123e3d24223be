"""Hostile or wrong input on the DMI socket gets a gRPC error with a reason, is counted, and
changes nothing; the socket is private to its owner and group and to one node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from edgetwin.config import load_settings
from edgetwin.mappers.dmi import DmiError
from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.node import Node
from tests.dmi.kubeedge_mapper import socket_folder
from tests.support import unique


@contextlib.asynccontextmanager
async def dmi_node(**dmi: object) -> AsyncIterator[Node]:
    with socket_folder() as sockets:
        settings = load_settings(
            node={"name": unique("node"), "data_dir": str(sockets)},
            broker={"port": 0},
            mappers=["mqtt"],
            dmi={"enabled": True, "socket": str(sockets / "dmi.sock"), **dmi},
        )
        async with Node(settings) as running:
            yield running


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with dmi_node() as running:
        yield running


async def _call(node: Node, method: str, request: Message, response: type[Message]) -> None:
    async with grpc.aio.insecure_channel(f"unix:{node.settings.dmi.socket}") as channel:
        call = channel.unary_unary(
            f"/v1beta1.DeviceManagerService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        await call(request, timeout=5)


def _register(protocol: str, address: bytes) -> pb.MapperRegisterRequest:
    info = pb.MapperInfo(name="m", version="1", protocol=protocol, address=address)
    return pb.MapperRegisterRequest(withData=True, mapper=info)


CASES = [
    ("MapperRegister", _register("", b"/tmp/x.sock"), "INVALID_ARGUMENT", "protocol is empty"),
    ("MapperRegister", _register("a/b", b"/tmp/x.sock"), "INVALID_ARGUMENT", "is not a name"),
    ("MapperRegister", _register("+", b"/tmp/x.sock"), "INVALID_ARGUMENT", "is not a name"),
    ("MapperRegister", _register("x", b"x.sock"), "INVALID_ARGUMENT", "absolute path"),
    ("MapperRegister", _register("x", b"/tmp/\xff"), "INVALID_ARGUMENT", "not UTF-8"),
    ("MapperRegister", _register("x", b"/tmp/a\nb"), "INVALID_ARGUMENT", "absolute path"),
    ("MapperRegister", _register("mqtt", b"/tmp/x.sock"), "FAILED_PRECONDITION", "own mapper"),
    (
        "ReportDeviceStatus",
        pb.ReportDeviceStatusRequest(
            deviceName="nope",
            reportedDevice=pb.DeviceStatus(
                twins=[pb.Twin(propertyName="t", reported=pb.TwinProperty(value="1"))]
            ),
        ),
        "NOT_FOUND",
        "default/nope",
    ),
    (
        "ReportDeviceStatus",
        pb.ReportDeviceStatusRequest(deviceName="nope"),
        "INVALID_ARGUMENT",
        "no twins",
    ),
    (
        "ReportDeviceStatus",
        pb.ReportDeviceStatusRequest(deviceName="a/b"),
        "INVALID_ARGUMENT",
        "",
    ),
    (
        "ReportDeviceStates",
        pb.ReportDeviceStatesRequest(deviceName="nope", state="exploded"),
        "INVALID_ARGUMENT",
        "unknown state",
    ),
    (
        "ReportDeviceStates",
        pb.ReportDeviceStatesRequest(deviceName="nope", state="online"),
        "NOT_FOUND",
        "default/nope",
    ),
]
RESPONSES: dict[str, type[Message]] = {
    "MapperRegister": pb.MapperRegisterResponse,
    "ReportDeviceStatus": pb.ReportDeviceStatusResponse,
    "ReportDeviceStates": pb.ReportDeviceStatesResponse,
}


@pytest.mark.parametrize(("method", "request_", "code", "words"), CASES)
async def test_bad_requests_get_a_reason_and_change_nothing(
    node: Node, method: str, request_: Message, code: str, words: str
) -> None:
    assert node.dmi is not None
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(node, method, request_, RESPONSES[method])
    assert refused.value.code().name == code
    assert words in (refused.value.details() or "")
    assert node.dmi.requests == {(method, code): 1}
    assert node.dmi.mappers == {}
    assert set(node.mappers) == {"mqtt"}
    assert not (node.settings.node.data_dir / "dmi-mappers.json").exists()


async def test_the_socket_is_for_owner_and_group_and_one_node(node: Node) -> None:
    path = node.settings.dmi.socket
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    with pytest.raises(DmiError, match="served by another process"):
        async with Node(node.settings.model_copy(update={"mappers": []})):
            pass
    assert path.is_socket()  # the first node's socket is left alone


async def test_a_stale_socket_of_a_killed_node_is_replaced(tmp_path: Path) -> None:
    with socket_folder() as sockets:
        stale = sockets / "dmi.sock"
        left = socket.socket(socket.AF_UNIX)
        left.bind(str(stale))  # bound, never listening: what a SIGKILLed node leaves
        left.close()
        settings = load_settings(
            node={"name": unique("node"), "data_dir": str(tmp_path)},
            broker={"port": 0},
            dmi={"enabled": True, "socket": str(stale)},
        )
        async with Node(settings) as node:
            assert node.dmi is not None
            assert stale.is_socket()


NOBODY = 65534
_CLIENT = """
import sys, grpc
from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
channel = grpc.insecure_channel("unix:" + sys.argv[1])
register = channel.unary_unary(
    "/v1beta1.DeviceManagerService/MapperRegister",
    request_serializer=pb.MapperRegisterRequest.SerializeToString,
    response_deserializer=pb.MapperRegisterResponse.FromString,
)
info = pb.MapperInfo(name="m", protocol="opcua", address=b"/tmp/none.sock")
try:
    register(pb.MapperRegisterRequest(withData=True, mapper=info), timeout=5)
except grpc.RpcError as exc:
    print(exc.code().name, exc.details())
else:
    print("OK")
"""


async def _register_as_nobody(node: Node) -> str:
    """A MapperRegister from a process of user and group ``nobody``. It keeps the right to
    read any file (CAP_DAC_READ_SEARCH), so that it can run this venv's Python from root's
    home: the socket's mode and its credentials are what the node checks."""
    socket_path = node.settings.dmi.socket
    socket_path.parent.chmod(0o755)  # the test's folder; the socket's own mode is the test's
    nobody = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    read_any = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    done = await asyncio.to_thread(
        subprocess.run,
        ["setpriv", *nobody, *read_any, sys.executable, "-c", _CLIENT, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return done.stdout.strip()


async def test_a_process_of_a_user_not_allowed_is_refused_by_its_credentials() -> None:
    """The socket is open to everyone here (mode 0666): the kernel's word on who calls
    (SO_PEERCRED) is what refuses it."""
    async with dmi_node(socket_mode=0o666) as node:
        assert node.dmi is not None
        answer = await _register_as_nobody(node)
        assert answer.startswith("PERMISSION_DENIED")
        assert f"of uid {NOBODY} and gid {NOBODY} may not use this socket" in answer
        assert node.dmi.requests == {("MapperRegister", "PERMISSION_DENIED"): 1}
        assert node.dmi.mappers == {}


async def test_a_group_allowed_lets_another_user_s_mapper_register() -> None:
    async with dmi_node(socket_mode=0o666, allowed_gids=[NOBODY]) as node:
        assert node.dmi is not None
        assert await _register_as_nobody(node) == "OK"
        assert set(node.dmi.mappers) == {"opcua"}


async def test_a_process_over_its_rate_is_refused_until_it_slows_down() -> None:
    async with dmi_node(rate=0.5, burst=2) as node:
        assert node.dmi is not None
        states = pb.ReportDeviceStatesRequest(deviceName="nope", state="exploded")
        codes = []
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _call(node, "ReportDeviceStates", states, pb.ReportDeviceStatesResponse)
            codes.append(refused.value.code().name)
        assert codes == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"]
        assert "over 0.5 requests/s (dmi.rate)" in (refused.value.details() or "")
        assert node.dmi.requests["ReportDeviceStates", "RESOURCE_EXHAUSTED"] == 1
