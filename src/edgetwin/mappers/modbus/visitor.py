"""A property's Modbus visitor config, and its values to and from register words.

Config keys (KubeEdge's Modbus visitor): ``register`` (CoilRegister,
DiscreteInputRegister, HoldingRegister, InputRegister), ``offset``,
``limit`` (registers, or bits for coils and discrete inputs), ``scale``,
``isSwap`` (swap the two bytes of each word), ``isRegisterSwap`` (reverse the
word order), ``dataType``: ``int`` and ``uint`` (16, 32 or 64 bits by
``limit``), ``float`` (32 bits), ``double`` (64 bits), ``boolean``,
``string`` (UTF-8, ``limit`` registers, padded with NULs).

Words are what Modbus carries: 16-bit values, high byte first. A value
``0x12345678`` as ``int`` with limit 2 is ``[0x1234, 0x5678]``; with
``isRegisterSwap`` ``[0x5678, 0x1234]``; with ``isSwap`` ``[0x3412, 0x7856]``.
A scaled register holds ``value / scale``: with scale 0.1, 21.5 is 215.
Scaling is done in decimal, so 215 reads back as exactly ``21.5``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from edgetwin.mappers.plugin import DeviceConfigError, PropertyError
from edgetwin.wire.resources import PropertyType

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class Register(StrEnum):
    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"

    @property
    def is_bit(self) -> bool:
        return self in (Register.COIL, Register.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (Register.COIL, Register.HOLDING)

    @property
    def max_read(self) -> int:
        """The most items one read request may ask for (the Modbus limits)."""
        return 2000 if self.is_bit else 125


class DataType(StrEnum):
    INT = "int"
    UINT = "uint"
    FLOAT = "float"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    STRING = "string"


_DEFAULT_TYPE: dict[str, DataType] = {
    "INT": DataType.INT,
    "FLOAT": DataType.FLOAT,
    "DOUBLE": DataType.DOUBLE,
    "BOOLEAN": DataType.BOOLEAN,
    "STRING": DataType.STRING,
}
_DEFAULT_LIMIT = {DataType.FLOAT: 2, DataType.DOUBLE: 4}
_INT_FORMATS = {1: "h", 2: "i", 4: "q"}
_WIDTHS = {DataType.FLOAT: (2, "f"), DataType.DOUBLE: (4, "d")}


@dataclass(frozen=True, slots=True)
class Visitor:
    """Where a property lives on the device and how its value is encoded."""

    register: Register
    offset: int
    limit: int
    data_type: DataType
    property_type: PropertyType
    scale: Decimal | None = None
    swap_bytes: bool = False
    swap_words: bool = False
    _one_word: bool = field(init=False, repr=False, compare=False)
    """An INT property in one register, unscaled: decoded without struct or Decimal."""

    def __post_init__(self) -> None:
        one_word = (
            self.limit == 1
            and self.data_type in (DataType.INT, DataType.UINT)
            and self.property_type == "INT"
            and self.scale is None
            and not self.swap_bytes
        )
        object.__setattr__(self, "_one_word", one_word)

    @property
    def end(self) -> int:
        return self.offset + self.limit

    @classmethod
    def parse(cls, config: Mapping[str, Any], property_type: PropertyType) -> Visitor:
        """The visitor of a property; DeviceConfigError names the key that is wrong."""
        register_name = config.get("register")
        try:
            register = Register(str(register_name))
        except ValueError:
            choices = ", ".join(r.value for r in Register)
            raise DeviceConfigError(
                f"register: {register_name!r} is not one of {choices}"
                if register_name is not None
                else "register: missing"
            ) from None
        offset = _integer(config, "offset", None, 0, 65535)
        data_type = _data_type(config, register, property_type)
        limit = _integer(config, "limit", _DEFAULT_LIMIT.get(data_type, 1), 1, register.max_read)
        visitor = cls(
            register=register,
            offset=offset,
            limit=limit,
            data_type=data_type,
            property_type=property_type,
            scale=_scale(config),
            swap_bytes=_flag(config, "isSwap"),
            swap_words=_flag(config, "isRegisterSwap"),
        )
        visitor._check()
        return visitor

    def _check(self) -> None:
        if self.end > 65536:
            raise DeviceConfigError(f"offset + limit: {self.end} is past the last address 65535")
        if self.register.is_bit and (self.data_type != DataType.BOOLEAN or self.limit != 1):
            raise DeviceConfigError(
                f"dataType: a {self.register.value} holds one bit: use dataType boolean, limit 1"
            )
        if self.data_type in (DataType.INT, DataType.UINT) and self.limit not in _INT_FORMATS:
            raise DeviceConfigError(f"limit: an {self.data_type} is 1, 2 or 4 registers")
        width = _WIDTHS.get(self.data_type)
        if width and self.limit != width[0]:
            raise DeviceConfigError(f"limit: a {self.data_type} is {width[0]} registers")
        if self.scale is not None and self.data_type in (DataType.BOOLEAN, DataType.STRING):
            raise DeviceConfigError(f"scale: a {self.data_type} cannot be scaled")

    # --- reading -------------------------------------------------------------------------

    def decode(self, items: Sequence[int] | Sequence[bool]) -> str:
        """The twin's string for what was read (``limit`` words, or one bit)."""
        if self._one_word:  # the common case, and the hot path of polling
            word = int(items[0])
            signed = self.data_type == DataType.INT and word >= 0x8000
            return str(word - 0x10000 if signed else word)
        if self.register.is_bit:
            return _text(bool(items[0]), self.property_type)
        data = self._bytes(items)
        match self.data_type:
            case DataType.BOOLEAN:
                return _text(any(data), self.property_type)
            case DataType.STRING:
                return data.rstrip(b"\x00").decode("utf-8", errors="replace")
            case DataType.FLOAT | DataType.DOUBLE:
                raw = struct.unpack(">" + _WIDTHS[self.data_type][1], data)[0]
                if not math.isfinite(raw):
                    raise PropertyError(f"the device holds {raw}, not a number")
                # float32 has 7 significant digits: 0.1 reads as 0.1, not 0.10000000149011612
                digits = format(raw, ".7g") if self.data_type == DataType.FLOAT else repr(raw)
                return _text(self._scaled(Decimal(digits)), self.property_type)
            case _:
                code = _INT_FORMATS[self.limit]
                if self.data_type == DataType.UINT:
                    code = code.upper()
                number = struct.unpack(">" + code, data)[0]
                return _text(self._scaled(Decimal(number)), self.property_type)

    def _bytes(self, words: Sequence[int] | Sequence[bool]) -> bytes:
        ordered = list(reversed(words)) if self.swap_words else list(words)
        data = b"".join(int(w).to_bytes(2, "big") for w in ordered)
        return _swap_pairs(data) if self.swap_bytes else data

    def _scaled(self, number: Decimal) -> Decimal:
        return number * self.scale if self.scale is not None else number

    # --- writing -------------------------------------------------------------------------

    def encode(self, value: str) -> list[int] | bool:
        """Words (or a coil's bit) for a desired value; PropertyError if it does not fit."""
        if self.register.is_bit:
            return _boolean(value)
        match self.data_type:
            case DataType.BOOLEAN:
                data = (1 if _boolean(value) else 0).to_bytes(2 * self.limit, "big")
            case DataType.STRING:
                data = value.encode("utf-8")
                if len(data) > 2 * self.limit:
                    raise PropertyError(f"{len(data)} bytes do not fit in {self.limit} register(s)")
                data = data.ljust(2 * self.limit, b"\x00")
            case DataType.FLOAT | DataType.DOUBLE:
                number = float(self._unscaled(value))
                try:
                    data = struct.pack(">" + _WIDTHS[self.data_type][1], number)
                except OverflowError:
                    raise PropertyError(f"{value} is too large for a {self.data_type}") from None
            case _:
                data = self._pack_int(value)
        if self.swap_bytes:
            data = _swap_pairs(data)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        return list(reversed(words)) if self.swap_words else words

    def _unscaled(self, value: str) -> Decimal:
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise PropertyError(f"{value!r} is not a number") from None
        if not number.is_finite():
            raise PropertyError(f"{value!r} is not a finite number")
        return number / self.scale if self.scale is not None else number

    def _pack_int(self, value: str) -> bytes:
        raw = self._unscaled(value).to_integral_value(ROUND_HALF_EVEN)
        bits = 16 * self.limit
        low, high = (
            (0, 2**bits - 1)
            if self.data_type == DataType.UINT
            else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        if not low <= raw <= high:
            raise PropertyError(
                f"{value} is {raw} in the register, outside {low}..{high} of a {bits}-bit "
                f"{self.data_type}"
            )
        return int(raw).to_bytes(2 * self.limit, "big", signed=self.data_type == DataType.INT)


def _swap_pairs(data: bytes) -> bytes:
    swapped = bytearray(data)
    swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
    return bytes(swapped)


def _text(value: bool | Decimal, property_type: PropertyType) -> str:
    """A reading as the twin's string for the property's type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if property_type == "BOOLEAN":
        return "true" if value else "false"
    if property_type == "INT":
        return str(int(value.to_integral_value(ROUND_HALF_EVEN)))
    return format(value.normalize(), "f")


def _boolean(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    try:
        return Decimal(value) != 0
    except InvalidOperation:
        raise PropertyError(f"{value!r} is not a boolean") from None


def _data_type(
    config: Mapping[str, Any], register: Register, property_type: PropertyType
) -> DataType:
    given = config.get("dataType")
    if given is None:
        if register.is_bit:
            return DataType.BOOLEAN
        default = _DEFAULT_TYPE.get(property_type)
        if default is None:
            raise DeviceConfigError(f"dataType: missing, and {property_type} has no default")
        return default
    try:
        return DataType(str(given).lower())
    except ValueError:
        choices = ", ".join(t.value for t in DataType)
        raise DeviceConfigError(f"dataType: {given!r} is not one of {choices}") from None


def _integer(config: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = config.get(key, default)
    if value is None:
        raise DeviceConfigError(f"{key}: missing")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeviceConfigError(f"{key}: {value!r} is not a whole number")
    if not low <= value <= high:
        raise DeviceConfigError(f"{key}: {value} is outside {low}..{high}")
    return value


def _scale(config: Mapping[str, Any]) -> Decimal | None:
    value = config.get("scale")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DeviceConfigError(f"scale: {value!r} is not a number")
    try:
        scale = Decimal(str(value))
    except InvalidOperation:
        raise DeviceConfigError(f"scale: {value!r} is not a number") from None
    if not scale.is_finite() or scale == 0:
        raise DeviceConfigError(f"scale: {value!r} must be a non-zero number")
    return None if scale == 1 else scale


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise DeviceConfigError(f"{key}: {value!r} is not true or false")
