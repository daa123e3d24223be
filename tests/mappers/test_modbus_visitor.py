"""Modbus values to and from register words: each dataType, swap and scale, known layouts."""

from __future__ import annotations

from typing import Any

import pytest

from edgetwin.mappers import DeviceConfigError, PropertyError
from edgetwin.mappers.modbus.visitor import Visitor

HR = "HoldingRegister"

# (property type, visitor config, twin value, words on the wire)
LAYOUTS: list[tuple[str, dict[str, Any], str, list[int]]] = [
    ("INT", {"dataType": "int"}, "-2", [0xFFFE]),
    ("INT", {"dataType": "int"}, "32767", [0x7FFF]),
    ("INT", {"dataType": "int"}, "-32768", [0x8000]),
    ("INT", {"dataType": "uint"}, "32768", [0x8000]),
    ("INT", {"dataType": "uint"}, "65535", [0xFFFF]),
    ("INT", {"dataType": "int", "isSwap": True}, "258", [0x0201]),
    ("FLOAT", {"dataType": "int", "scale": 0.1}, "21.5", [215]),
    ("FLOAT", {"dataType": "int", "scale": 0.1}, "-0.5", [0xFFFB]),
    ("INT", {"dataType": "uint", "scale": 10}, "120", [12]),
    ("FLOAT", {"dataType": "uint", "scale": 0.5}, "10", [20]),
    # 0x12345678 in the four byte orders: ABCD, CDAB, BADC, DCBA
    ("INT", {"dataType": "int", "limit": 2}, "305419896", [0x1234, 0x5678]),
    ("INT", {"dataType": "int", "limit": 2, "isRegisterSwap": True}, "305419896", [0x5678, 0x1234]),
    ("INT", {"dataType": "int", "limit": 2, "isSwap": True}, "305419896", [0x3412, 0x7856]),
    (
        "INT",
        {"dataType": "int", "limit": 2, "isSwap": True, "isRegisterSwap": True},
        "305419896",
        [0x7856, 0x3412],
    ),
    ("INT", {"dataType": "int", "limit": 2}, "-2", [0xFFFF, 0xFFFE]),
    ("INT", {"dataType": "uint", "limit": 2}, "4294967295", [0xFFFF, 0xFFFF]),
    ("FLOAT", {"dataType": "int", "limit": 2, "scale": 0.001}, "-70000.123", [0xFBD3, 0xE205]),
    ("INT", {"dataType": "int", "limit": 4}, "72623859790382856", [0x0102, 0x0304, 0x0506, 0x0708]),
    (
        "INT",
        {"dataType": "int", "limit": 4, "isRegisterSwap": True},
        "72623859790382856",
        [0x0708, 0x0506, 0x0304, 0x0102],
    ),
    ("INT", {"dataType": "int", "limit": 4, "isSwap": True}, "-1", [0xFFFF] * 4),
    ("INT", {"dataType": "uint", "limit": 4}, "18446744073709551615", [0xFFFF] * 4),
    ("FLOAT", {"dataType": "float"}, "1.5", [0x3FC0, 0x0000]),
    ("FLOAT", {"dataType": "float"}, "0.1", [0x3DCC, 0xCCCD]),
    ("FLOAT", {"dataType": "float", "isRegisterSwap": True}, "1.5", [0x0000, 0x3FC0]),
    ("FLOAT", {"dataType": "float", "isSwap": True}, "-2.25", [0x10C0, 0x0000]),
    (
        "FLOAT",
        {"dataType": "float", "isSwap": True, "isRegisterSwap": True},
        "1.5",
        [0x0000, 0xC03F],
    ),
    ("FLOAT", {"dataType": "float", "scale": 0.5}, "3", [0x40C0, 0x0000]),
    ("DOUBLE", {"dataType": "double"}, "1.5", [0x3FF8, 0, 0, 0]),
    ("DOUBLE", {"dataType": "double"}, "0.1", [0x3FB9, 0x9999, 0x9999, 0x999A]),
    ("DOUBLE", {"dataType": "double", "isRegisterSwap": True}, "1.5", [0, 0, 0, 0x3FF8]),
    ("DOUBLE", {"dataType": "double", "isSwap": True}, "1.5", [0xF83F, 0, 0, 0]),
    ("DOUBLE", {"dataType": "double", "scale": 0.01}, "12.34", [0x4093, 0x4800, 0, 0]),
    ("BOOLEAN", {"dataType": "boolean"}, "true", [1]),
    ("BOOLEAN", {"dataType": "boolean"}, "false", [0]),
    ("BOOLEAN", {"dataType": "boolean", "isSwap": True}, "true", [0x0100]),
    ("STRING", {"dataType": "string", "limit": 3}, "abc", [0x6162, 0x6300, 0x0000]),
    ("STRING", {"dataType": "string", "limit": 2, "isSwap": True}, "abc", [0x6261, 0x0063]),
    (
        "STRING",
        {"dataType": "string", "limit": 2, "isRegisterSwap": True},
        "abcd",
        [0x6364, 0x6162],
    ),
    ("STRING", {"dataType": "string", "limit": 2}, "°C", [0xC2B0, 0x4300]),
    # dataType defaults from the property type
    ("INT", {}, "-7", [0xFFF9]),
    ("FLOAT", {}, "2.5", [0x4020, 0x0000]),
]


@pytest.mark.parametrize(("kind", "config", "value", "words"), LAYOUTS)
def test_value_round_trips_through_known_words(
    kind: str, config: dict[str, Any], value: str, words: list[int]
) -> None:
    visitor = Visitor.parse({"register": HR, "offset": 0, **config}, kind)  # type: ignore[arg-type]
    assert visitor.encode(value) == words
    assert visitor.decode(words) == value


@pytest.mark.parametrize("register", ["CoilRegister", "DiscreteInputRegister"])
def test_bits_are_booleans(register: str) -> None:
    visitor = Visitor.parse({"register": register, "offset": 3}, "BOOLEAN")
    assert visitor.encode("true") is True
    assert visitor.encode("0") is False
    assert visitor.decode([True]) == "true"
    assert visitor.decode([False]) == "false"


def test_input_register_reading_formats_by_property_type() -> None:
    as_int = Visitor.parse({"register": "InputRegister", "offset": 0, "scale": 0.1}, "INT")
    assert as_int.decode([215]) == "22"  # rounded half to even
    as_bool = Visitor.parse(
        {"register": "InputRegister", "offset": 0, "dataType": "int"}, "BOOLEAN"
    )
    assert as_bool.decode([3]) == "true"
    nan = Visitor.parse({"register": HR, "offset": 0, "dataType": "float"}, "FLOAT")
    with pytest.raises(PropertyError, match="not a number"):
        nan.decode([0x7FC0, 0])


@pytest.mark.parametrize(
    ("kind", "config", "value", "reason"),
    [
        ("INT", {"dataType": "int"}, "32768", "outside -32768..32767"),
        ("INT", {"dataType": "uint"}, "-1", "outside 0..65535"),
        ("FLOAT", {"dataType": "int", "scale": 0.1}, "3276.8", "outside"),
        ("FLOAT", {"dataType": "float"}, "1e39", "too large"),
        ("STRING", {"dataType": "string", "limit": 1}, "abc", "do not fit"),
        ("INT", {"dataType": "int"}, "ten", "not a number"),
        ("BOOLEAN", {"dataType": "boolean"}, "maybe", "not a boolean"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    kind: str, config: dict[str, Any], value: str, reason: str
) -> None:
    visitor = Visitor.parse({"register": HR, "offset": 0, **config}, kind)  # type: ignore[arg-type]
    with pytest.raises(PropertyError, match=reason):
        visitor.encode(value)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"offset": 0}, "register: missing"),
        ({"register": "Holding", "offset": 0}, "register: 'Holding' is not one of"),
        ({"register": HR}, "offset: missing"),
        ({"register": HR, "offset": -1}, "offset: -1 is outside"),
        ({"register": HR, "offset": "x"}, "offset: 'x' is not a whole number"),
        ({"register": HR, "offset": 65535, "limit": 2, "dataType": "float"}, "past the last"),
        (
            {"register": HR, "offset": 0, "dataType": "int", "limit": 3},
            "limit: an int is 1, 2 or 4",
        ),
        ({"register": HR, "offset": 0, "dataType": "float", "limit": 1}, "limit: a float is 2"),
        ({"register": HR, "offset": 0, "dataType": "decimal"}, "dataType: 'decimal'"),
        ({"register": HR, "offset": 0, "scale": 0}, "scale: 0 must be a non-zero"),
        ({"register": HR, "offset": 0, "scale": "big"}, "scale: 'big' is not a number"),
        ({"register": HR, "offset": 0, "isSwap": "yes"}, "isSwap: 'yes'"),
        ({"register": "CoilRegister", "offset": 0, "dataType": "int"}, "holds one bit"),
        ({"register": HR, "offset": 0, "dataType": "string", "scale": 2}, "cannot be scaled"),
        ({"register": HR, "offset": 0, "limit": 126}, "limit: 126 is outside 1..125"),
    ],
)
def test_bad_visitor_config_names_the_key(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(DeviceConfigError, match=reason):
        Visitor.parse(config, "INT")
