"""Hostile or wrong input on the DMI socket gets a gRPC error with a reason, is counted, and
changes nothing; the socket is private to its owner and group and to one node."""

from __future__ import annotations

import socket
import stat
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


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    with socket_folder() as sockets:
        settings = load_settings(
            node={"name": unique("node"), "data_dir": str(sockets)},
            broker={"port": 0},
            mappers=["mqtt"],
            dmi={"enabled": True, "socket": str(sockets / "dmi.sock")},
        )
        async with Node(settings) as running:
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
