"""KubeEdge's Device Management Interface, served by the node on a unix socket.

A mapper built on KubeEdge's mapper-framework calls ``MapperRegister`` when it
starts and gets the devices and models of its protocol; it then reports
twins (``ReportDeviceStatus``) and states (``ReportDeviceStates``) here, and
the node calls the mapper's own socket (:mod:`.calls`) for every change.
Each protocol becomes a :class:`~edgetwin.mappers.dmi.mapper.DmiMapper` under
an ordinary mapper runtime, so DMI mappers are served exactly like the
node's own. Registrations are kept in a file beside the database: a mapper
registers only once, so after a node restart the node calls it where it
registered.

Whoever may connect to the socket may register a mapper and report for the
devices of registered protocols (as on KubeEdge's edge): its permissions,
``dmi.socket_mode``, are the boundary. Every request is checked, and a bad
one gets a gRPC error with a reason, is logged (rate-limited) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, Self

import grpc
import orjson
from google.protobuf.message import Message

from edgetwin.config import DEFAULTS, DmiSettings
from edgetwin.errors import EdgetwinError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.mappers.dmi.calls import MapperCalls
from edgetwin.mappers.dmi.mapper import DmiMapper
from edgetwin.mappers.plugin import Mapper
from edgetwin.mappers.runtime import MapperRuntime
from edgetwin.wire.messages import STATE_SPELLINGS
from edgetwin.wire.names import split_device_id

log = logging.getLogger(__name__)

SERVICE = "v1beta1.DeviceManagerService"
REGISTRY_FILE = "dmi-mappers.json"
"""Registered mappers (protocol -> socket), in the node's data folder."""
_UNIX_PATH_MAX = 107


class DmiError(EdgetwinError):
    """The DMI socket cannot be served."""


class _Refused(Exception):  # noqa: N818 - a gRPC status, not an error of ours
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class DmiServer:
    """``async with DmiServer(...)``: the socket served, registered mappers' runtimes running."""

    def __init__(
        self,
        settings: DmiSettings,
        data_dir: Path,
        runtimes: dict[str, MapperRuntime],
        runtime_for: Callable[[Mapper], MapperRuntime],
        *,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
    ) -> None:
        self.settings = settings
        self.path = settings.socket
        self.registry = data_dir / REGISTRY_FILE
        self.runtimes = runtimes
        """The node's mapper runtimes by protocol; DMI mappers' are added here."""
        self.mappers: dict[str, DmiMapper] = {}
        self.refused: Counter[str] = Counter()
        """Requests answered with an error, by gRPC status name."""
        self._runtime_for = runtime_for
        self._max_delay = reconnect_max_delay
        self._lock = asyncio.Lock()
        self._log = ThrottledLog(log)
        self._stack = contextlib.AsyncExitStack()
        self._server: grpc.aio.Server | None = None

    async def __aenter__(self) -> Self:
        _claim(self.path)
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", self.settings.max_message_bytes)]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        try:
            server.add_insecure_port(f"unix:{self.path}")
        except RuntimeError as exc:
            raise DmiError(f"cannot listen on {self.path}: {exc}") from exc
        await server.start()
        self._server = server
        try:
            self.path.chmod(self.settings.socket_mode)
            for protocol, address in _load(self.registry).items():
                await self._serve(protocol, address)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("DMI: KubeEdge mappers register on %s", self.path)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await self._stack.aclose()
        for protocol in self.mappers:
            self.runtimes.pop(protocol, None)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # --- DeviceManagerService ---------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(
            handler: Callable[[Any], Awaitable[Any]],
            request_type: type[Message],
            response_type: type[Message],
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                self._answering(handler),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "MapperRegister": unary(
                    self._register, pb.MapperRegisterRequest, pb.MapperRegisterResponse
                ),
                "ReportDeviceStatus": unary(
                    self._report_status, pb.ReportDeviceStatusRequest, pb.ReportDeviceStatusResponse
                ),
                "ReportDeviceStates": unary(
                    self._report_states, pb.ReportDeviceStatesRequest, pb.ReportDeviceStatesResponse
                ),
            },
        )

    def _answering(
        self, handler: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: ANN401
            try:
                return await handler(request)
            except _Refused as refused:
                self.refused[refused.code.name] += 1
                self._log.write(
                    refused.code.name,
                    handler.__name__,
                    "DMI: refused: %s",
                    printable(refused.reason),
                )
                await context.abort(refused.code, refused.reason)

        return answer

    async def _register(self, request: pb.MapperRegisterRequest) -> pb.MapperRegisterResponse:
        info = request.mapper
        protocol = _protocol(info.protocol)
        address = _address(info.address)
        async with self._lock:
            mapper = self.mappers.get(protocol)
            if mapper is None:
                if protocol in self.runtimes:
                    _refuse(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"protocol {protocol} is served by the node's own mapper",
                    )
                mapper = await self._serve(protocol, address)
            else:
                await mapper.calls.retarget(address)
            registrations = _load(self.registry)
            if registrations.get(protocol) != address:
                _save(self.registry, {**registrations, protocol: address})
        log.info(
            "DMI: mapper %s %s registered for protocol %s at %s",
            printable(info.name),
            printable(info.version),
            protocol,
            address,
        )
        if not request.withData:
            return pb.MapperRegisterResponse()
        return mapper.registration()

    async def _report_status(
        self, request: pb.ReportDeviceStatusRequest
    ) -> pb.ReportDeviceStatusResponse:
        device = _device(request.deviceNamespace, request.deviceName)
        twins = request.reportedDevice.twins
        if not twins:
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, "the request has no twins")
        values = {t.propertyName: t.reported.value for t in twins if t.HasField("reported")}
        if not any(mapper.reported(device, values) for mapper in self.mappers.values()):
            _refuse(grpc.StatusCode.NOT_FOUND, f"no registered mapper serves device {device}")
        return pb.ReportDeviceStatusResponse()

    async def _report_states(
        self, request: pb.ReportDeviceStatesRequest
    ) -> pb.ReportDeviceStatesResponse:
        device = _device(request.deviceNamespace, request.deviceName)
        state = STATE_SPELLINGS.get(request.state.lower())
        if state is None:
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, f"unknown state {request.state[:64]!r}")
        served = next(
            (m.devices[device] for m in self.mappers.values() if device in m.devices), None
        )
        if served is None:
            _refuse(grpc.StatusCode.NOT_FOUND, f"no registered mapper serves device {device}")
        served.sink.set_state(state)
        return pb.ReportDeviceStatesResponse()

    async def _serve(self, protocol: str, address: str) -> DmiMapper:
        calls = MapperCalls(
            protocol, address, timeout=self.settings.call_timeout, max_delay=self._max_delay
        )
        mapper = DmiMapper(protocol, calls)
        try:
            runtime = await self._stack.enter_async_context(self._runtime_for(mapper))
        except EdgetwinError as exc:
            await calls.close()
            _refuse(grpc.StatusCode.UNAVAILABLE, f"the node cannot serve {protocol}: {exc}")
        self.runtimes[protocol] = runtime
        self.mappers[protocol] = mapper
        return mapper


def _refuse(code: grpc.StatusCode, reason: str) -> NoReturn:
    raise _Refused(code, reason)


def _protocol(text: str) -> str:
    """A protocol name: it becomes a level of MQTT topics, so no wildcards or separators."""
    if not text:
        _refuse(grpc.StatusCode.INVALID_ARGUMENT, "mapper.protocol is empty")
    if len(text) > 63 or not text.isprintable() or any(c in text for c in "/+#$ "):
        _refuse(grpc.StatusCode.INVALID_ARGUMENT, f"mapper.protocol {text[:64]!r} is not a name")
    return text


def _address(raw: bytes) -> str:
    """The mapper's socket: an absolute path."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        _refuse(grpc.StatusCode.INVALID_ARGUMENT, "mapper.address is not UTF-8")
    if not text.startswith("/") or len(raw) > _UNIX_PATH_MAX or not text.isprintable():
        _refuse(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"mapper.address {text[:120]!r} is not the absolute path of a unix socket",
        )
    return text


def _device(namespace: str, name: str) -> str:
    device = f"{namespace or 'default'}/{name}"
    try:
        split_device_id(device)
    except ValueError as exc:
        _refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return device


def _claim(path: Path) -> None:
    """Make the socket's place ready: its folder, and no stale socket of a node that died."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: left by a node that was killed
    else:
        raise DmiError(f"{path} is served by another process (another node?)")
    finally:
        probe.close()


def _load(registry: Path) -> dict[str, str]:
    """Registered mappers: protocol -> socket."""
    try:
        data = orjson.loads(registry.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("DMI: %s cannot be read, registrations forgotten: %s", registry, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _save(registry: Path, registrations: dict[str, str]) -> None:
    temporary = registry.with_name(registry.name + ".tmp")
    temporary.write_bytes(orjson.dumps(registrations, option=orjson.OPT_SORT_KEYS))
    temporary.replace(registry)
