"""KubeEdge's Device Management Interface, served by the node on a unix socket.

A mapper built on KubeEdge's mapper-framework calls ``MapperRegister`` when it
starts and gets the devices and models of its protocol; it then reports
twins (``ReportDeviceStatus``) and states (``ReportDeviceStates``) here, and
the node calls the mapper's own socket (:mod:`.calls`) for every change.
Each protocol becomes a :class:`~edgetwin.mappers.dmi.mapper.DmiMapper` under
an ordinary mapper runtime, so DMI mappers are served exactly like the
node's own. Registrations are kept in a file beside the database, with what each
mapper holds (:class:`~.handover.Held`): a mapper registers only once, so
after a node restart the node calls it where it registered and sends it only
what changed meanwhile.

Who may use the socket: its permissions (``dmi.socket_mode``), then the
calling process's user or group as the kernel tells it (``SO_PEERCRED``,
:mod:`.peers`) against ``dmi.allowed_uids`` and ``dmi.allowed_gids``. Each
process has a rate (``dmi.rate``, ``dmi.burst``: a token bucket, where
edgecore has one bucket of 1 request a second for every mapper together).
Every request is checked, and a bad one gets a gRPC error with a reason, is
logged (rate-limited) and counted.
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
from edgetwin.mappers.dmi.handover import Held
from edgetwin.mappers.dmi.mapper import DeviceBook, DmiMapper
from edgetwin.mappers.dmi.peers import PeerSockets
from edgetwin.mappers.plugin import Mapper
from edgetwin.mappers.runtime import MapperRuntime
from edgetwin.rates import RateLimits
from edgetwin.wire.messages import STATE_SPELLINGS, string_map
from edgetwin.wire.names import split_device_id

log = logging.getLogger(__name__)

SERVICE = "v1beta1.DeviceManagerService"
REGISTRY_FILE = "dmi-mappers.json"
"""Registered mappers (protocol -> socket and what it holds), in the node's data folder."""
_UNIX_PATH_MAX = 107
_SAVE_AFTER = 0.2
"""Seconds between a change to what a mapper holds and the registry's write: one write for
a burst of calls."""


class DmiError(EdgetwinError):
    """The DMI socket cannot be served."""


class _Refused(Exception):  # noqa: N818 - a gRPC status, not an error of ours
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Registration:
    """One registered protocol: where its mapper listens and what it holds."""

    def __init__(self, address: str, held: Held) -> None:
        self.address = address
        self.held = held

    def dump(self) -> dict[str, Any]:
        return {"address": self.address, "devices": self.held.devices, "models": self.held.models}


class DmiServer:
    """``async with DmiServer(...)``: the socket served, registered mappers' runtimes running."""

    def __init__(
        self,
        settings: DmiSettings,
        data_dir: Path,
        runtimes: dict[str, MapperRuntime],
        runtime_for: Callable[[Mapper], MapperRuntime],
        book: DeviceBook,
        *,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
    ) -> None:
        self.settings = settings
        self.path = settings.socket
        self.registry = data_dir / REGISTRY_FILE
        self.runtimes = runtimes
        """The node's mapper runtimes by protocol; DMI mappers' are added here."""
        self.mappers: dict[str, DmiMapper] = {}
        self.requests: Counter[tuple[str, str]] = Counter()
        """Requests answered, by method and gRPC status name (OK or the refusal's)."""
        self.registrations: Counter[str] = Counter()
        """Mapper registrations, by protocol."""
        self._runtime_for = runtime_for
        self._book = book
        self._max_delay = reconnect_max_delay
        self._registered: dict[str, _Registration] = {}
        self._rates = RateLimits(settings.rate, settings.burst)
        self._lock = asyncio.Lock()
        self._log = ThrottledLog(log)
        self._stack = contextlib.AsyncExitStack()
        self._server: grpc.aio.Server | None = None
        self._peers = PeerSockets(self.path)
        self._save_handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Self:
        _claim(self.path)
        try:
            await self._stack.enter_async_context(self._peers)
            self.path.chmod(self.settings.socket_mode)
            server = grpc.aio.server(
                options=[("grpc.max_receive_message_length", self.settings.max_message_bytes)]
            )
            server.add_generic_rpc_handlers((self._handlers(),))
            try:
                server.add_insecure_port(f"unix:{self._peers.inner}")
            except RuntimeError as exc:
                raise DmiError(f"cannot listen on {self._peers.inner}: {exc}") from exc
            await server.start()
            self._server = server
            self._registered = _load(self.registry)
            for protocol, registration in self._registered.items():
                await self._serve(protocol, registration)
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
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def log_suppressed(self) -> int:
        """Log lines about refused requests and calls not written (throttled)."""
        return self._log.suppressed + sum(m.handover.log.suppressed for m in self.mappers.values())

    # --- DeviceManagerService ---------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[[Any], Awaitable[Any]], type[Message], type[Message]]]
        methods = {
            "MapperRegister": (
                self._register,
                pb.MapperRegisterRequest,
                pb.MapperRegisterResponse,
            ),
            "ReportDeviceStatus": (
                self._report_status,
                pb.ReportDeviceStatusRequest,
                pb.ReportDeviceStatusResponse,
            ),
            "ReportDeviceStates": (
                self._report_states,
                pb.ReportDeviceStatesRequest,
                pb.ReportDeviceStatesResponse,
            ),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                method: grpc.unary_unary_rpc_method_handler(
                    self._answering(method, handler),
                    request_deserializer=request_type.FromString,
                    response_serializer=response_type.SerializeToString,
                )
                for method, (handler, request_type, response_type) in methods.items()
            },
        )

    def _answering(
        self, method: str, handler: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: ANN401
            try:
                self._admit(context.peer())
                response = await handler(request)
            except _Refused as refused:
                self.requests[method, refused.code.name] += 1
                self._log.write(
                    refused.code.name,
                    method,
                    "DMI: refused %s: %s",
                    method,
                    printable(refused.reason),
                )
                await context.abort(refused.code, refused.reason)
                raise  # abort raises; this is not reached
            self.requests[method, "OK"] += 1
            return response

        return answer

    def _admit(self, grpc_peer: str) -> None:
        """The caller's process may use the socket, and is within its rate."""
        peer = self._peers.peer(grpc_peer)
        if peer is None:
            _refuse(grpc.StatusCode.PERMISSION_DENIED, "the caller's process is not known")
        settings = self.settings
        if peer.uid not in settings.allowed_uids and peer.gid not in settings.allowed_gids:
            _refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                f"process {peer.pid} of uid {peer.uid} and gid {peer.gid} may not use this "
                "socket (dmi.allowed_uids, dmi.allowed_gids)",
            )
        if not self._rates.allow(str(peer.pid)):
            _refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"process {peer.pid} is over {settings.rate:g} requests/s (dmi.rate)",
            )

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
                registration = _Registration(address, Held())
                mapper = await self._serve(protocol, registration)
                self._registered[protocol] = registration
            else:
                await mapper.calls.retarget(address)
                self._registered[protocol].address = address
            answer = await mapper.registration(with_data=request.withData)
            self._save()
        self.registrations[protocol] += 1
        log.info(
            "DMI: mapper %s %s registered for protocol %s at %s; given %d device(s), %d model(s)",
            printable(info.name),
            printable(info.version),
            protocol,
            address,
            len(answer.deviceList),
            len(answer.modelList),
        )
        return answer

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

    async def _serve(self, protocol: str, registration: _Registration) -> DmiMapper:
        calls = MapperCalls(protocol, registration.address, timeout=self.settings.call_timeout)
        mapper = DmiMapper(
            protocol,
            calls,
            self._book,
            registration.held,
            max_delay=self._max_delay,
            on_held=self._save_soon,
        )
        try:
            runtime = await self._stack.enter_async_context(self._runtime_for(mapper))
        except EdgetwinError as exc:
            await mapper.stop()
            _refuse(grpc.StatusCode.UNAVAILABLE, f"the node cannot serve {protocol}: {exc}")
        self.runtimes[protocol] = runtime
        self.mappers[protocol] = mapper
        return mapper

    def _save_soon(self) -> None:
        if self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(_SAVE_AFTER, self._save)

    def _save(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        data = {p: r.dump() for p, r in self._registered.items()}
        temporary = self.registry.with_name(self.registry.name + ".tmp")
        try:
            temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
            temporary.replace(self.registry)
        except OSError as exc:
            log.warning("DMI: %s cannot be written: %s", self.registry, exc)


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


def _load(registry: Path) -> dict[str, _Registration]:
    """Registered mappers by protocol, and what each holds (a file of an older node has
    only their sockets: they are given everything again)."""
    try:
        data = orjson.loads(registry.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("DMI: %s cannot be read, registrations forgotten: %s", registry, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, _Registration] = {}
    for protocol, entry in data.items():
        if isinstance(entry, str):
            out[protocol] = _Registration(entry, Held())
        elif isinstance(entry, dict) and isinstance(entry.get("address"), str):
            held = Held(string_map(entry.get("devices")), string_map(entry.get("models")))
            out[protocol] = _Registration(entry["address"], held)
    return out
