"""A simulated Modbus TCP thermostat (a real pymodbus server) for examples/thermostat.

Registers of slave 1, as examples/thermostat/model.yaml maps them:

- holding register 0: target temperature in tenths of a degree (writable);
- input register 0: current temperature in tenths of a degree;
- discrete input 0: whether it is heating (or cooling) towards the target.

Every ``step`` seconds the current temperature moves ``rate`` degrees towards
the target, so a new target shows as a climbing reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Self

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgetwin.errors import EdgetwinError
from edgetwin.tasks import start_guarded, stop_task

log = logging.getLogger(__name__)

_HOLDING, _INPUT, _DISCRETE = 3, 4, 2  # function codes naming the register tables


class ThermostatSimulator:
    """``async with ThermostatSimulator(port=5020)``: serving until the block ends."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        unit: int = 1,
        start: float = 18.0,
        target: float = 21.0,
        rate: float = 0.2,
        step: float = 0.5,
    ) -> None:
        self.host, self.port, self.unit = host, port, unit
        self.current = start
        self.rate, self.step = rate, step
        device = SimDevice(
            unit,
            simdata=(
                [SimData(0, count=1, values=False, datatype=DataType.BITS)],
                [SimData(0, count=1, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            ),
        )
        self._initial_target = round(target * 10)
        self._server: ModbusTcpServer | None = None
        self._device = device
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        server = ModbusTcpServer([self._device], address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise EdgetwinError(f"cannot listen on {self.host}:{self.port} (in use?)") from None
        self._server = server
        await server.async_setValues(self.unit, _HOLDING, 0, [self._initial_target])
        await self._publish()
        self._task = start_guarded(self._run(), "thermostat-simulator")
        log.info("simulated thermostat on modbus://%s:%d slave %d", self.host, self.port, self.unit)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    async def target(self) -> float:
        assert self._server is not None
        (raw,) = await self._server.async_getValues(self.unit, _HOLDING, 0, 1)
        return _signed(int(raw)) / 10

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.step)
            target = await self.target()
            gap = target - self.current
            self.current += max(-self.rate, min(self.rate, gap))
            await self._publish(heating=abs(gap) > 0.05)

    async def _publish(self, *, heating: bool = False) -> None:
        assert self._server is not None
        await self._server.async_setValues(
            self.unit, _INPUT, 0, [round(self.current * 10) & 0xFFFF]
        )
        await self._server.async_setValues(self.unit, _DISCRETE, 0, [heating])


def _signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word
