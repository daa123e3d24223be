"""Property values: checked against the DeviceModel and compared by their type.

Values are strings on the wire. Rather than KubeEdge's character whitelist,
any UTF-8 string up to a configured length is allowed; typed properties must
parse (INT, FLOAT, DOUBLE, BOOLEAN as Go's strconv.ParseBool, BYTES as
base64). A desired value must also lie within the model's minimum and
maximum; a reported one out of them is kept and flagged, since it is what
the device said (KubeEdge's edge checks the type of readings, not their
range). NaN and infinities are never numbers here. Comparison is by type,
so a desired ``"25"`` and a reported ``"25.0"`` of a FLOAT property are in
sync.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from edgetwin.wire.resources import ModelProperty, PropertyType

_INT = re.compile(r"[+-]?\d{1,19}")
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_NUMERIC = frozenset({"INT", "FLOAT", "DOUBLE"})

Parsed = int | float | bool | bytes | str


class InvalidValueError(Exception):
    """A value that does not fit its property; the message says why."""


@dataclass(frozen=True, slots=True)
class PropertyRule:
    """What a DeviceModel allows for one property, compiled once per model."""

    name: str
    type: PropertyType
    read_only: bool
    minimum: float | None
    maximum: float | None

    @classmethod
    def from_model(cls, prop: ModelProperty) -> PropertyRule:
        return cls(
            name=prop.name,
            type=prop.type,
            read_only=prop.access_mode == "ReadOnly",
            minimum=_bound(prop, prop.minimum, "minimum"),
            maximum=_bound(prop, prop.maximum, "maximum"),
        )

    def parse(self, value: str, max_length: int) -> Parsed:
        """The typed value within the model's bounds, or InvalidValueError with the reason."""
        parsed = self.parse_type(value, max_length)
        problem = self.range_problem(parsed, value)
        if problem is not None:
            raise InvalidValueError(problem)
        return parsed

    def parse_type(self, value: str, max_length: int) -> Parsed:
        """The typed value, bounds not checked (a reading is a fact, in range or not)."""
        if len(value) > max_length:
            raise InvalidValueError(f"value is longer than {max_length} characters")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidValueError("value is not valid UTF-8") from None
        return _parse(self.type, value)

    def range_problem(self, parsed: Parsed, text: str) -> str | None:
        """Why a typed value (``text`` as given) is outside the model's bounds, or None."""
        if isinstance(parsed, int | float) and not isinstance(parsed, bool):
            if self.minimum is not None and parsed < self.minimum:
                return f"{text} is below the minimum {_fmt(self.minimum)}"
            if self.maximum is not None and parsed > self.maximum:
                return f"{text} is above the maximum {_fmt(self.maximum)}"
        return None

    def stored_range_problem(self, value: str | None) -> str | None:
        """:meth:`range_problem` of a stored value (None if it is unset or does not parse)."""
        if value is None or (self.minimum is None and self.maximum is None):
            return None
        try:
            return self.range_problem(_parse(self.type, value), value)
        except InvalidValueError:
            return None

    def same(self, a: str | None, b: str | None) -> bool:
        """Whether two stored values mean the same thing for this property's type."""
        if a is None or b is None:
            return a is b
        if a == b:
            return True
        try:
            return _parse(self.type, a) == _parse(self.type, b)
        except InvalidValueError:
            return False


def _parse(kind: PropertyType, value: str) -> Parsed:
    parser = _PARSERS.get(kind)
    return parser(value) if parser else value


def _parse_int(value: str) -> int:
    if not _INT.fullmatch(value):
        raise InvalidValueError(f"{value!r} is not an integer")
    return int(value)


def _parse_float(value: str) -> float:
    if not _FLOAT.fullmatch(value):
        raise InvalidValueError(f"{value!r} is not a finite number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidValueError(f"{value!r} is too large for a floating-point number")
    return number


def _parse_bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidValueError(f"{value!r} is not a boolean (true or false)")


def _parse_bytes(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidValueError("value is not base64") from None


_PARSERS: dict[str, Callable[[str], Parsed]] = {
    "INT": _parse_int,
    "FLOAT": _parse_float,
    "DOUBLE": _parse_float,
    "BOOLEAN": _parse_bool,
    "BYTES": _parse_bytes,
}


def _bound(prop: ModelProperty, text: str | None, which: str) -> float | None:
    if text is None or text == "" or prop.type not in _NUMERIC:
        return None
    if not _FLOAT.fullmatch(text.strip()):
        raise ValueError(f"property {prop.name}: {which} {text!r} is not a number")
    return float(text)


def _fmt(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)
