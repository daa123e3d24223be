"""The DMI socket: how many mapper reports a second the node takes, and what each costs it, to
choose the default rate limit (``dmi.rate``) from a measure rather than edgecore's 1 a second.

A node process (``edgetwin run``, DMI on, its rate limit lifted, ``--devices`` devices of
a protocol no mapper of its own serves) and, in this process, a stand-in mapper: its
``DeviceMapperService`` answers every call, and it registers and then sends
``ReportDeviceStatus`` (one property) for the devices in turn, ``--in-flight`` calls at a
time from worker processes (``--clients``), so the client is not the limit. The check that
it is not: the same clients against a gRPC server that answers without doing anything
must be several times faster. Reported: reports/s, node CPU per report, and the
reports a node spends a core on.

Run: ``.venv/bin/python -m bench.dmi [--devices N] [--reports N] [--clients N]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import grpc
from tests.support import NodeProcess, device_manifest, model_manifest, write_manifests

from bench.throughput import cpu_seconds
from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb

PROTOCOL = "benchdmi"
REPORT = "/v1beta1.DeviceManagerService/ReportDeviceStatus"


def _request(i: int, devices: int) -> bytes:
    twin = pb.Twin(propertyName="count", reported=pb.TwinProperty(value=str(i)))
    return pb.ReportDeviceStatusRequest(
        deviceName=f"d{i % devices}",
        deviceNamespace="default",
        reportedDevice=pb.DeviceStatus(twins=[twin]),
    ).SerializeToString()


def _client(socket: str, method: str, devices: int, count: int, in_flight: int) -> None:
    async def run() -> None:
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            call = channel.unary_unary(method)
            queue = iter(range(count))

            async def worker() -> None:
                for i in queue:
                    await call(_request(i, devices), timeout=30)

            await asyncio.gather(*(worker() for _ in range(in_flight)))

    asyncio.run(run())


def _drive(socket: str, method: str, devices: int, reports: int, clients: int) -> float:
    """Reports per second from ``clients`` processes."""
    ctx = multiprocessing.get_context("spawn")
    each = reports // clients
    procs = [
        ctx.Process(target=_client, args=(socket, method, devices, each, 32))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return each * clients / (time.perf_counter() - started)


class _Mapper:
    """A DeviceMapperService that takes every call."""

    async def __aenter__(self) -> str:
        self.folder = tempfile.mkdtemp(prefix="dmib-", dir="/tmp")
        self.path = f"{self.folder}/mapper.sock"
        self.server = grpc.aio.server()

        def ok(response: type) -> grpc.RpcMethodHandler:
            async def answer(_request: bytes, _context: object) -> bytes:
                return response().SerializeToString()  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(answer)

        methods = {
            "RegisterDevice": ok(pb.RegisterDeviceResponse),
            "UpdateDevice": ok(pb.UpdateDeviceResponse),
            "RemoveDevice": ok(pb.RemoveDeviceResponse),
            "CreateDeviceModel": ok(pb.CreateDeviceModelResponse),
            "UpdateDeviceModel": ok(pb.UpdateDeviceModelResponse),
            "RemoveDeviceModel": ok(pb.RemoveDeviceModelResponse),
            "MapperRegister": ok(pb.MapperRegisterResponse),
            "ReportDeviceStatus": ok(pb.ReportDeviceStatusResponse),
        }
        for service in ("v1beta1.DeviceMapperService", "v1beta1.DeviceManagerService"):
            handler = grpc.method_handlers_generic_handler(service, methods)
            self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix:{self.path}")
        await self.server.start()
        return self.path

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=40_000)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()

    async with _Mapper() as bare:
        raw = await asyncio.to_thread(
            _drive, bare, REPORT, args.devices, args.reports, args.clients
        )
    print(f"clients against a gRPC server that does nothing: {raw:,.0f} calls/s")

    with tempfile.TemporaryDirectory(prefix="dmib-", dir="/tmp") as folder:
        data = Path(folder)
        model = model_manifest("bench", PROTOCOL, [{"name": "count", "type": "INT"}])
        devices = [
            device_manifest(f"d{i}", "bench", PROTOCOL, {}, [{"name": "count"}])
            for i in range(args.devices)
        ]
        manifests = write_manifests(data / "manifests", devices, model)
        socket = data / "dmi.sock"
        env = {
            "EDGETWIN_DMI__ENABLED": "true",
            "EDGETWIN_DMI__SOCKET": str(socket),
            "EDGETWIN_DMI__RATE": "1e9",
            "EDGETWIN_DMI__BURST": "1000000000",
        }
        node = NodeProcess(data, node="bench", manifests=manifests, env=env)
        with node:
            async with (
                _Mapper() as mapper_socket,
                grpc.aio.insecure_channel(f"unix:{socket}") as channel,
            ):
                register = channel.unary_unary(
                    "/v1beta1.DeviceManagerService/MapperRegister",
                    request_serializer=pb.MapperRegisterRequest.SerializeToString,
                    response_deserializer=pb.MapperRegisterResponse.FromString,
                )
                info = pb.MapperInfo(
                    name="bench", protocol=PROTOCOL, address=mapper_socket.encode()
                )
                answer = await register(pb.MapperRegisterRequest(withData=True, mapper=info))
                print(f"registered: the answer holds {len(answer.deviceList)} device(s)")
                assert node.proc is not None
                pid = node.proc.pid
                await asyncio.to_thread(_drive, str(socket), REPORT, args.devices, 2000, 1)
                cpu = cpu_seconds(pid)
                rate = await asyncio.to_thread(
                    _drive, str(socket), REPORT, args.devices, args.reports, args.clients
                )
                per_report = (cpu_seconds(pid) - cpu) / args.reports * 1e6
    print(f"node: {rate:,.0f} reports/s, {per_report:.0f} µs of node CPU per report")
    print(f"one core of the node takes {1e6 / per_report:,.0f} reports/s")
    print(f"os.cpu_count() = {os.cpu_count()}")


if __name__ == "__main__":
    asyncio.run(main())
