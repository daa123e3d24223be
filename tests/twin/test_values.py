"""Property values against the DeviceModel: a table of what passes and what does not."""

from __future__ import annotations

import pytest

from edgetwin.twin.values import InvalidValueError, PropertyRule
from edgetwin.wire.resources import ModelProperty


def rule(kind: str, minimum: str | None = None, maximum: str | None = None) -> PropertyRule:
    return PropertyRule.from_model(
        ModelProperty(name="p", type=kind, minimum=minimum, maximum=maximum)  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("kind", "value", "parsed"),
    [
        ("INT", "42", 42),
        ("INT", "-7", -7),
        ("INT", "+3", 3),
        ("FLOAT", "2.5", 2.5),
        ("DOUBLE", "-1e3", -1000.0),
        ("FLOAT", ".5", 0.5),
        ("BOOLEAN", "true", True),
        ("BOOLEAN", "F", False),
        ("BOOLEAN", "1", True),
        ("BYTES", "aGVsbG8=", b"hello"),
        ("STRING", "", ""),
        ("STRING", "héllo ✓ +#/", "héllo ✓ +#/"),
        ("STREAM", "rtsp://x", "rtsp://x"),
    ],
)
def test_good_values(kind: str, value: str, parsed: object) -> None:
    assert rule(kind).parse(value, 100) == parsed


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        ("INT", "4.2", "not an integer"),
        ("INT", " 4", "not an integer"),
        ("INT", "1_000", "not an integer"),
        ("INT", "", "not an integer"),
        ("FLOAT", "nan", "finite"),
        ("FLOAT", "inf", "finite"),
        ("DOUBLE", "1e400", "too large"),
        ("FLOAT", "0x10", "finite"),
        ("BOOLEAN", "yes", "boolean"),
        ("BYTES", "!!", "base64"),
        ("STRING", "x" * 101, "longer than 100"),
        ("STRING", "\ud800", "UTF-8"),
    ],
)
def test_bad_values(kind: str, value: str, words: str) -> None:
    with pytest.raises(InvalidValueError, match=words):
        rule(kind).parse(value, 100)


def test_bounds() -> None:
    bounded = rule("FLOAT", "5", "35.5")
    assert bounded.parse("35.5", 100) == 35.5
    with pytest.raises(InvalidValueError, match=r"above the maximum 35\.5"):
        bounded.parse("35.6", 100)
    with pytest.raises(InvalidValueError, match="below the minimum 5"):
        bounded.parse("4", 100)
    assert rule("STRING", "5", "6").parse("anything", 100) == "anything"  # bounds are numeric only


def test_a_model_with_a_bad_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="minimum 'low' is not a number"):
        rule("INT", "low")


def test_sameness_by_type() -> None:
    assert rule("FLOAT").same("25", "25.0")
    assert rule("INT").same("7", "+7")
    assert rule("BOOLEAN").same("true", "1")
    assert not rule("STRING").same("25", "25.0")
    assert not rule("FLOAT").same("25", None)
    assert rule("FLOAT").same(None, None)
