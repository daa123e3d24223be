"""Property-based tests of the engine: after any sequence of requests, the twin holds exactly
the accepted values (each property on its own: a desired value must fit type and bounds, a
reported one its type), the delta is {p: desired | desired set and != reported (by type)},
and versions never decrease."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetwin.config import TwinSettings
from edgetwin.twin.engine import TwinEngine
from edgetwin.wire import topics
from tests.support import thermostat, thermostat_model

PROPS = {"target": "FLOAT", "count": "INT", "enabled": "BOOLEAN", "label": "STRING"}
VALUES = {
    "target": st.sampled_from(["5", "20", "20.0", "35", "35.0", "36", "-1", "abc", "NaN"]),
    "count": st.sampled_from(["0", "1", "+1", "999", "-5", "1.5", ""]),
    "enabled": st.sampled_from(["true", "True", "1", "false", "0", "F", "maybe"]),
    "label": st.text(max_size=5),
}


def _equal(kind: str, a: str, b: str) -> bool:
    """The oracle's own sameness by type, written apart from the engine's."""
    if kind == "FLOAT":
        return float(a) == float(b)
    if kind == "INT":
        return int(a) == int(b)
    if kind == "BOOLEAN":
        return (a in {"true", "True", "1", "t", "T", "TRUE"}) == (
            b in {"true", "True", "1", "t", "T", "TRUE"}
        )
    return a == b


def _valid(prop: str, value: str, side: str) -> bool:
    kind = PROPS[prop]
    bounded = side == "expected"  # a reading out of bounds is kept (and flagged)
    try:
        if kind == "FLOAT":
            number = float(value)
            return (not bounded or 5 <= number <= 35) and value.lower() != "nan"
        if kind == "INT":
            whole = int(value)
            return (not bounded or 0 <= whole <= 1_000_000) and "." not in value
    except ValueError:
        return False
    if kind == "BOOLEAN":
        return value in {"true", "True", "1", "false", "0", "F"}
    return True


@st.composite
def updates(draw: st.DrawFn) -> dict[str, Any]:
    props = draw(st.lists(st.sampled_from(sorted(PROPS)), min_size=1, max_size=3, unique=True))
    twin: dict[str, Any] = {}
    for prop in props:
        entry: dict[str, Any] = {}
        for side in draw(st.sampled_from([["expected"], ["actual"], ["expected", "actual"]])):
            entry[side] = {"value": draw(VALUES[prop])}
        twin[prop] = entry
    return twin


@settings(max_examples=300, deadline=None)
@given(st.lists(updates(), max_size=25))
def test_delta_and_versions_follow_the_accepted_updates(sequence: list[dict[str, Any]]) -> None:
    engine = TwinEngine("n1", TwinSettings())
    engine.catalog.apply_model(thermostat_model(), "test")
    engine.catalog.apply_device(thermostat("d1"), "test")
    device = "default/d1"
    request = topics.parse_request_topic(topics.twin_update_topic(device))
    assert request is not None
    desired: dict[str, str] = {}
    reported: dict[str, str] = {}
    versions = dict.fromkeys(PROPS, (0, 0))
    for twin in sequence:
        outcome = engine.api.handle(request, orjson.dumps({"twin": twin}))
        result = orjson.loads(outcome.publications[0].payload)
        accepted = {
            p: e for p, e in twin.items() if all(_valid(p, v["value"], s) for s, v in e.items())
        }
        assert ("code" not in result) == bool(accepted), (twin, result)
        assert set(result.get("twin", {})) == set(accepted), (twin, result)
        assert set(result.get("errors", {})) == (set(twin) - set(accepted) if accepted else set())
        for prop, entry in accepted.items():
            if "expected" in entry:
                desired[prop] = entry["expected"]["value"]
            if "actual" in entry:
                reported[prop] = entry["actual"]["value"]
        held = engine.devices[device]
        for prop in PROPS:
            now = held.properties[prop]
            assert (now.desired, now.reported) == (desired.get(prop), reported.get(prop))
            version = (now.desired_version, now.reported_version)
            assert version >= versions[prop]
            assert version[0] >= versions[prop][0]
            assert version[1] >= versions[prop][1]
            versions[prop] = version
        expected_delta = {
            p: d
            for p, d in desired.items()
            if p not in reported or not _equal(PROPS[p], d, reported[p])
        }
        assert held.delta() == expected_delta
