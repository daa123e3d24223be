"""Fuzzing the topic parsing, the payload parsing and the engine: 100,000 generated inputs
from the network's side, and not one unhandled exception.

Hypothesis builds 1,000 requests (four tests of 250) shaped like the twin API's, from
valid to nonsense; each is sent as it is and as 99 byte-level mutants of it (flips,
insertions, cuts, splices, truncations), as a mutation fuzzer would: structured inputs
reach deep into the parsing, mutants hit its edges, and both stay fast.

Every request the topic parser accepts gets exactly the one answer on its result topic
the engine gives for it, whether a result or an error with a code and a reason. The
per-device budget is set out of reach: it drops requests unanswered by design, and
tests/api/test_limits.py tests it.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edgetwin.config import TwinSettings
from edgetwin.twin.engine import TwinEngine
from edgetwin.wire import topics
from tests.support import thermostat, thermostat_model

EXAMPLES = 250
MUTANTS = 99
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same inputs on every machine: a CI failure replays here
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
NODE = "fuzz-node"
NAMES = ["target", "current", "count", "enabled", "label", "blob", "nope", "", "$", "#", "+"]


def _engine() -> TwinEngine:
    engine = TwinEngine(
        NODE,
        TwinSettings(
            max_payload_bytes=4096, max_value_length=64, max_updates_per_device_per_second=1e9
        ),
    )
    outcome = engine.catalog.apply_resources(
        [thermostat_model(), thermostat("a"), thermostat("b")], "test"
    )
    assert outcome.errors == []
    return engine


ENGINE = _engine()

levels = st.one_of(
    st.sampled_from(["default", "a", "b", "+", "#", "", "$hw", "twin", "update", "get"]),
    st.text(max_size=8),
)
topic_strategy = st.one_of(
    st.builds(
        lambda ns, name, kind: f"{topics.DEVICE_PREFIX}/{ns}/{name}/{kind}",
        levels,
        levels,
        st.sampled_from(["twin/update", "twin/get", "state/update", "twin/update/result"]),
    ),
    st.builds(
        lambda node, kind: f"{topics.NODE_PREFIX}/{node}/{kind}",
        st.sampled_from([NODE, "other", ""]),
        st.sampled_from(["membership/get", "manifests/apply"]),
    ),
    st.lists(levels, max_size=8).map("/".join),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
sides = st.fixed_dictionaries(
    {},
    optional={
        "expected": st.fixed_dictionaries({"value": json_values | st.text(max_size=80)}),
        "actual": st.fixed_dictionaries({"value": json_values | st.text(max_size=80)}),
        "metadata": json_values,
    },
)
twin_update = st.fixed_dictionaries(
    {"twin": st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), sides | json_values)},
    optional={"event_id": json_values, "timestamp": json_values},
)
requests = st.one_of(
    twin_update.map(orjson.dumps),
    st.fixed_dictionaries(
        {"state": st.sampled_from(["online", "offline", "ok", "broken", ""]) | json_values},
        optional={"event_id": st.text(max_size=300)},
    ).map(orjson.dumps),
    st.fixed_dictionaries({"documents": st.lists(json_values, max_size=3)}).map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.binary(max_size=300),
    st.binary(min_size=4097, max_size=5000),
)


def _mutants(payload: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(MUTANTS):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            match rng.randrange(5):
                case 0 if data:
                    data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
                case 1:
                    data[at:at] = rng.choice([b'"', b"{", b"}", b"[", b":", b",", b"\\", b"\xff"])
                case 2:
                    del data[at : at + rng.randint(1, 8)]
                case 3:
                    data[at:at] = data[rng.randrange(len(data) + 1) :][: rng.randint(1, 16)]
                case _:
                    data = data[:at]
        out.append(bytes(data))
    return out


def _answer(topic: str, payload: bytes, seed: int) -> None:
    """The payload and its mutants to ``topic``: 100 inputs."""
    for variant in (payload, *_mutants(payload, seed)):
        _answer_one(topic, variant)


def _answer_one(topic: str, payload: bytes) -> None:
    request = topics.parse_request_topic(topic)
    if request is None:
        return
    outcome = ENGINE.api.handle(request, payload)
    answers = [p for p in outcome.publications if p.topic == request.result_topic]
    assert len(answers) == 1, (topic, payload)
    body: dict[str, Any] = orjson.loads(answers[0].payload)
    if "code" in body:
        assert isinstance(body["reason"], str)
        assert body["reason"]


seeds = st.integers(0, 2**32)
devices = st.sampled_from(["default/a", "default/b"])


@FUZZ
@given(topic=topic_strategy, payload=requests, seed=seeds)
def test_any_topic_and_payload(topic: str, payload: bytes, seed: int) -> None:
    _answer(topic, payload, seed)


@FUZZ
@given(device=devices, payload=requests, seed=seeds)
def test_twin_updates_of_real_devices(device: str, payload: bytes, seed: int) -> None:
    _answer(topics.twin_update_topic(device), payload, seed)


@FUZZ
@given(
    device=devices,
    kind=st.sampled_from([topics.state_update_topic, topics.twin_get_topic]),
    payload=requests,
    seed=seeds,
)
def test_state_updates_and_gets_of_real_devices(
    device: str, kind: Any, payload: bytes, seed: int
) -> None:
    _answer(kind(device), payload, seed)


@FUZZ
@given(
    kind=st.sampled_from([topics.membership_get_topic, topics.apply_topic]),
    payload=requests,
    seed=seeds,
)
def test_node_requests(kind: Any, payload: bytes, seed: int) -> None:
    _answer(kind(NODE), payload, seed)
