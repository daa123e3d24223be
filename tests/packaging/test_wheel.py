"""What ships is tested as shipped: a wheel built from the project's files, installed into an
empty venv, runs a node that serves KubeEdge's DMI (its generated messages are in the wheel);
and those messages are KubeEdge's contract, the proto in shared/, unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from tests.dmi.kubeedge_mapper import socket_folder
from tests.metrics import http
from tests.support import NodeProcess, free_port, unique

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT.parent / "shared" / "kubeedge" / "dmi_v1beta1_api.proto"


def test_the_dmi_messages_in_git_are_kubeedge_s_contract(tmp_path: Path) -> None:
    """scripts/gen-dmi's output is kept in git; it must describe the proto as it is."""
    shutil.copy(PROTO, tmp_path / PROTO.name)
    described = tmp_path / "dmi.pb"
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        ["protoc", f"-I{tmp_path}", f"-I{include}", f"--descriptor_set_out={described}", PROTO.name]
    )
    assert code == 0
    expected = descriptor_pb2.FileDescriptorSet.FromString(described.read_bytes()).file[0]
    for message in expected.message_type:  # the generated code leaves json_name out
        _without_json_names(message)
    kept = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert kept == expected, "the contract changed: run scripts/gen-dmi and commit its output"


def _without_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _without_json_names(nested)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty venv with the wheel built from the files git has (as a clean checkout would)."""
    source = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = source / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name.decode(), target)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(dist.glob("edgetwin-*.whl"))
    subprocess.run(
        [str(venv / "bin/pip"), "--disable-pip-version-check", "-q", "install", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


def test_the_wheel_holds_no_test_or_build_file(installed: Path) -> None:
    site = next(installed.glob("lib/python*/site-packages/edgetwin"))
    assert (site / "mappers/dmi/_api/dmi_v1beta1_api_pb2.py").is_file()
    assert (site / "py.typed").is_file()
    assert (site / "health/static/uPlot.iife.min.js").is_file()
    assert not any(site.rglob("*.go"))


async def test_a_node_from_the_wheel_serves_dmi_and_its_page(
    installed: Path, tmp_path: Path
) -> None:
    with socket_folder() as sockets:
        dmi = sockets / "dmi.sock"
        health = free_port()
        env = {
            "EDGETWIN_DMI__ENABLED": "true",
            "EDGETWIN_DMI__SOCKET": str(dmi),
            "EDGETWIN_HEALTH__PAGE": "true",
            "EDGETWIN_HEALTH__PORT": str(health),
        }
        program = (str(installed / "bin/edgetwin"),)
        with NodeProcess(tmp_path, node=unique("node"), env=env, program=program):
            async with grpc.aio.insecure_channel(f"unix:{dmi}") as channel:
                register = channel.unary_unary(
                    "/v1beta1.DeviceManagerService/MapperRegister",
                    request_serializer=pb.MapperRegisterRequest.SerializeToString,
                    response_deserializer=pb.MapperRegisterResponse.FromString,
                )
                info = pb.MapperInfo(name="m", protocol="opcua", address=b"/tmp/none.sock")
                answer = await register(pb.MapperRegisterRequest(withData=True, mapper=info))
            for path in ("/", "/static/page.js", "/static/uPlot.iife.min.js"):
                assert (await http(health, path))[0] == 200, path
        assert list(answer.deviceList) == []
