"""A Modbus channel on a serial line whose slave answers late: stray answers are not taken.

The slave here is the test itself on the device end of a socat pty pair,
reading and writing RTU frames, so it can answer a request after the
channel has given up on it, exactly when the next request is on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from edgetwin.mappers.modbus.channel import Channel, Endpoint, answers
from edgetwin.mappers.plugin import DeviceUnavailableError
from tests.mappers.modbus_support import pty_pair


class HandSlave:
    """The device end of the line, answering when the test says so."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.framer = FramerRTU(DecodePDU(is_server=True))
        self.replies = FramerRTU(DecodePDU(is_server=False))
        self.buffer = b""
        self.readable = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self.readable.set)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)

    async def request(self) -> ModbusPDU:
        """The next request the master sent."""
        async with asyncio.timeout(10):
            while True:
                used, pdu = self.framer.handleFrame(self.buffer, 0, 0)
                self.buffer = self.buffer[used:]
                if pdu is not None:
                    return pdu
                await self.readable.wait()
                self.readable.clear()
                with contextlib.suppress(BlockingIOError):  # woken for what was read already
                    self.buffer += os.read(self.fd, 512)

    def answer(self, response: ModbusPDU) -> None:
        os.write(self.fd, self.replies.buildFrame(response))


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with pty_pair(tmp_path) as ends:
        yield ends


async def test_a_late_answer_is_not_taken_for_the_next_request(line: tuple[str, str]) -> None:
    device_end, mapper_end = line
    slave = HandSlave(device_end)
    channel = Channel(Endpoint(serial_port=mapper_end, baudrate=115200), timeout=0.2, retries=0)
    try:
        first = asyncio.ensure_future(
            channel.call(ReadHoldingRegistersRequest(address=0, count=2, dev_id=1))
        )
        unanswered = await slave.request()
        with pytest.raises(DeviceUnavailableError, match=r"no answer within 0\.2 s"):
            await first

        second = asyncio.ensure_future(
            channel.call(ReadInputRegistersRequest(address=2, count=2, dev_id=1))
        )
        asked = await slave.request()
        assert asked.function_code == 4
        slave.answer(ReadHoldingRegistersResponse(registers=[7, 7], dev_id=unanswered.dev_id))
        slave.answer(ReadInputRegistersResponse(registers=[1, 0xE240], dev_id=1))
        again = await slave.request()  # the channel dropped the stray answer and asked again
        assert (again.function_code, again.address, again.count) == (4, 2, 2)
        slave.answer(ReadInputRegistersResponse(registers=[1, 0xE240], dev_id=1))
        assert list((await second).registers) == [1, 0xE240]
        assert channel.stray_answers == 1
    finally:
        await channel.close()
        slave.close()


def test_answers_match_their_requests_by_function_count_and_address() -> None:
    holding = ReadHoldingRegistersRequest(address=0, count=2, dev_id=1)
    assert answers(holding, ReadHoldingRegistersResponse(registers=[1, 2]))
    assert not answers(holding, ReadInputRegistersResponse(registers=[1, 2]))
    assert not answers(holding, ReadHoldingRegistersResponse(registers=[1]))
    write = WriteSingleRegisterRequest(address=5, registers=[1], dev_id=1)
    assert answers(write, WriteSingleRegisterResponse(address=5, registers=[1]))
    assert not answers(write, WriteSingleRegisterResponse(address=4, registers=[1]))
    error = ReadHoldingRegistersResponse()
    error.function_code = 0x83  # an exception answer to a holding-register read
    assert answers(holding, error)
