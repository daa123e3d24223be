"""What a DMI mapper should hold, what it holds, and the one task that makes them agree.

The node knows what a registered mapper should hold: the devices of its
protocol, each whole with its desired values, and their models (edgecore's
device cache). What the mapper holds is what it last accepted, kept as a
digest per device and model; the server saves it beside the registrations,
so a node that restarts knows what a mapper still running was given
(mapper-framework registers only when it starts, and ignores a
RegisterDevice for a device it has).

One task makes the two agree, one call at a time: models first, then
devices (RegisterDevice for a device the mapper lacks, UpdateDevice for one
it holds otherwise, RemoveDevice for one it should not hold), models
no device uses last. A mapper that is not there is waited for with the
node's one backoff; a call it refuses is counted, logged and tried again
with a backoff of that device's own, while the others go on. A registration
with data answers with everything the mapper should hold, which it then
holds: nothing else is sent for it. Level-triggered, as a controller is,
rather than a queue of calls that a restart or a refusal would lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.message import Message

from edgetwin.logs import ThrottledLog
from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.mappers.dmi.calls import MapperCallError, MapperCalls, MapperUnavailableError
from edgetwin.mappers.dmi.convert import digest
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)

Kind = Literal["device", "model"]


@dataclass(slots=True)
class Held:
    """What a mapper holds: the digest of each device and model it accepted, by id."""

    devices: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Failing:
    backoff: Backoff
    not_before: float


class Handover:
    """``handover.put_device(...)`` and friends; :meth:`close` when done."""

    def __init__(
        self,
        calls: MapperCalls,
        held: Held,
        *,
        max_delay: float,
        on_held: Callable[[], None],
    ) -> None:
        self.calls = calls
        self.held = held
        self.results: Counter[tuple[str, str]] = Counter()
        """Calls made, by method and result (ok, refused, unavailable)."""
        self._on_held = on_held
        self._max_delay = max_delay
        self._devices: dict[str, pb.Device] = {}
        self._models: dict[str, pb.DeviceModel] = {}
        self._digests: dict[tuple[Kind, str], str] = {}
        self._dirty: dict[tuple[Kind, str], None] = {}
        """What differs between wanted and held, in the order it came."""
        self._failing: dict[tuple[Kind, str], _Failing] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._unavailable = Backoff(max_delay)
        self._wake = asyncio.Event()
        self.log = ThrottledLog(log)
        self._task = start_guarded(self._run(), f"dmi-handover-{calls.protocol}")

    # --- what the mapper should hold -------------------------------------------------------

    def want(self, devices: list[pb.Device], models: list[pb.DeviceModel]) -> None:
        """Everything the mapper should hold, replacing what was wanted before."""
        device_ids, model_keys = {_id(d) for d in devices}, {_id(m) for m in models}
        for device_id in [d for d in self._devices if d not in device_ids]:
            self.remove_device(device_id)
        for model in models:
            self.put_model(model)
        for device in devices:
            self.put_device(device)
        for key in [k for k in self._models if k not in model_keys]:
            self.remove_model(key)
        # What the mapper holds and nothing wants (a device removed while the node was
        # down): taken away too.
        for device_id in self.held.devices:
            if device_id not in device_ids:
                self._put("device", device_id, None)
        for key in self.held.models:
            if key not in model_keys:
                self._put("model", key, None)

    def put_device(self, device: pb.Device) -> None:
        device_id = _id(device)
        self._devices[device_id] = device
        self._put("device", device_id, device)

    def remove_device(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        self._put("device", device_id, None)

    def put_model(self, model: pb.DeviceModel) -> None:
        key = _id(model)
        self._models[key] = model
        self._put("model", key, model)

    def remove_model(self, key: str) -> None:
        self._models.pop(key, None)
        self._put("model", key, None)

    def pending(self) -> int:
        """Devices and models the mapper does not hold yet as wanted."""
        return len(self._dirty)

    async def settled(self, device_id: str) -> None:
        """Wait until the mapper holds the device as wanted now; MapperCallError if it
        refuses it (the handover goes on trying)."""
        if ("device", device_id) not in self._dirty:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(device_id, []).append(future)
        await future

    async def registered(self, *, with_data: bool) -> pb.MapperRegisterResponse:
        """The mapper registered: with data, it gets and then holds everything wanted;
        without, it holds nothing and is given everything again, call by call.

        A call under way was for the mapper that was (sent now, it would reach the new
        one as a redundant call): it is dropped first."""
        await stop_task(self._task)
        self._unavailable.reset()
        self._task = start_guarded(self._run(), f"dmi-handover-{self.calls.protocol}")
        if not with_data:
            self.held.devices.clear()
            self.held.models.clear()
            for key in self._digests:
                self._dirty[key] = None
            self._wake.set()
            self._changed()
            return pb.MapperRegisterResponse()
        self.held.devices = {k: d for (kind, k), d in self._digests.items() if kind == "device"}
        self.held.models = {k: d for (kind, k), d in self._digests.items() if kind == "model"}
        self._dirty.clear()
        self._failing.clear()
        for device_id in list(self._waiters):
            self._settle(device_id, None)
        self._changed()
        return pb.MapperRegisterResponse(
            modelList=[self._models[k] for k in sorted(self._models)],
            deviceList=[self._devices[k] for k in sorted(self._devices)],
        )

    async def close(self) -> None:
        await stop_task(self._task)
        for device_id in list(self._waiters):
            self._settle(device_id, MapperCallError("the node is stopping"))
        await self.calls.close()

    # --- making them agree -----------------------------------------------------------------

    def _put(self, kind: Kind, key: str, message: Message | None) -> None:
        wanted = digest(message) if message is not None else None
        if wanted is None:
            self._digests.pop((kind, key), None)
        else:
            self._digests[kind, key] = wanted
        held = (self.held.devices if kind == "device" else self.held.models).get(key)
        if held == wanted:
            self._dirty.pop((kind, key), None)
            self._failing.pop((kind, key), None)
            if kind == "device":
                self._settle(key, None)
        else:
            self._dirty[kind, key] = None
            self._wake.set()

    async def _run(self) -> None:
        while True:
            item, wait = self._next()
            if item is None:
                self._wake.clear()
                if wait is None:
                    await self._wake.wait()
                else:
                    # A refused call's own backoff; anything new wakes the task earlier.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                continue
            await self._hand(item)

    def _next(self) -> tuple[tuple[Kind, str] | None, float | None]:
        """The next thing to hand over, or how long until a refused one may be tried again."""
        now = time.monotonic()
        soonest: float | None = None
        removals: list[tuple[Kind, str]] = []
        for kind in ("model", "device"):
            for item in self._dirty:
                if item[0] != kind:
                    continue
                failing = self._failing.get(item)
                if failing is not None and failing.not_before > now:
                    wait = failing.not_before - now
                    soonest = wait if soonest is None else min(soonest, wait)
                    continue
                if kind == "model" and item not in self._digests:
                    removals.append(item)  # a model no device should use: after the devices
                    continue
                if kind == "device" and not self._model_held(item[1]):
                    continue
                return item, None
        if removals:
            return removals[0], None
        return None, soonest

    def _model_held(self, device_id: str) -> bool:
        device = self._devices.get(device_id)
        if device is None:
            return True  # a removal
        key = f"{device.namespace}/{device.spec.deviceModelReference}"
        return self.held.models.get(key) == self._digests.get(("model", key))

    async def _hand(self, item: tuple[Kind, str]) -> None:
        kind, key = item
        wanted = self._digests.get(item)
        method, request, response_type = self._call_for(kind, key)
        try:
            await self.calls.call(method, request, response_type)
        except MapperUnavailableError as exc:
            self.results[method, "unavailable"] += 1
            self.log.write(
                self.calls.protocol,
                "unavailable",
                "DMI: mapper %s at %s does not answer (%s); trying again",
                self.calls.protocol,
                self.calls.address,
                exc,
            )
            await self._unavailable.wait()
            return
        except MapperCallError as exc:
            self.results[method, "refused"] += 1
            self._refused(item, method, exc)
            return
        self.results[method, "ok"] += 1
        self._unavailable.reset()
        if self._digests.get(item) != wanted:
            return  # changed while the call was made: still dirty, handed over again
        held = self.held.devices if kind == "device" else self.held.models
        if wanted is None:
            held.pop(key, None)
        else:
            held[key] = wanted
        self._dirty.pop(item, None)
        self._failing.pop(item, None)
        if kind == "device":
            self._settle(key, None)
        self._changed()

    def _call_for(self, kind: Kind, key: str) -> tuple[str, Message, type[Message]]:
        namespace, name = key.split("/", 1)
        if kind == "model":
            model = self._models.get(key)
            if model is None:
                remove = pb.RemoveDeviceModelRequest(modelName=name, modelNamespace=namespace)
                return "RemoveDeviceModel", remove, pb.RemoveDeviceModelResponse
            if key in self.held.models:
                update = pb.UpdateDeviceModelRequest(model=model)
                return "UpdateDeviceModel", update, pb.UpdateDeviceModelResponse
            create = pb.CreateDeviceModelRequest(model=model)
            return "CreateDeviceModel", create, pb.CreateDeviceModelResponse
        device = self._devices.get(key)
        if device is None:
            gone = pb.RemoveDeviceRequest(deviceName=name, deviceNamespace=namespace)
            return "RemoveDevice", gone, pb.RemoveDeviceResponse
        if key in self.held.devices:
            return "UpdateDevice", pb.UpdateDeviceRequest(device=device), pb.UpdateDeviceResponse
        register = pb.RegisterDeviceRequest(device=device)
        return "RegisterDevice", register, pb.RegisterDeviceResponse

    def _refused(self, item: tuple[Kind, str], method: str, exc: MapperCallError) -> None:
        failing = self._failing.get(item)
        if failing is None:
            failing = self._failing[item] = _Failing(Backoff(self._max_delay), 0.0)
        delay = failing.backoff.next_delay()
        failing.not_before = time.monotonic() + delay
        self.log.write(
            item[1],
            method,
            "DMI: mapper %s refused %s of %s %s: %s; trying again in %.1f s",
            self.calls.protocol,
            method,
            item[0],
            item[1],
            exc,
            delay,
        )
        if item[0] == "device":
            self._settle(item[1], exc)

    def _settle(self, device_id: str, error: MapperCallError | None) -> None:
        for future in self._waiters.pop(device_id, []):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _changed(self) -> None:
        try:
            self._on_held()
        except Exception:
            log.exception("DMI: what mapper %s holds could not be saved", self.calls.protocol)


def _id(message: pb.Device | pb.DeviceModel) -> str:
    return f"{message.namespace}/{message.name}"
