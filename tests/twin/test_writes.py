"""The write lifecycle in the engine: how each write moves, what a write error from the
network may change (nothing but an open write of its own value), deadlines from the
property, the model and the node, and who set each value."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edgetwin.config import TwinSettings
from edgetwin.twin import Outcome, TwinEngine
from edgetwin.twin.store import HistoryRow
from edgetwin.wire import topics
from edgetwin.wire.messages import now_ms
from edgetwin.wire.resources import Device, DeviceModel
from tests.support import thermostat, thermostat_model

DEVICE = "default/d1"


def _engine(desired: dict[str, str] | None = None, timeout: str | None = None) -> TwinEngine:
    engine = TwinEngine("n1", TwinSettings(write_timeout=30.0))
    model = thermostat_model()
    if timeout is not None:
        document: dict[str, Any] = model.to_document()
        document["metadata"]["annotations"] = {"edgetwin.io/write-timeout": timeout}
        model = DeviceModel.model_validate(document)
    outcome = engine.catalog.apply_resources(
        [model, thermostat("d1", desired=desired or {"target": "22"})], "cluster"
    )
    assert outcome.errors == []
    return engine


def _ask(engine: TwinEngine, topic: str, body: dict[str, Any] | bytes) -> Outcome:
    request = topics.parse_request_topic(topic)
    assert request is not None
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return engine.api.handle(request, payload)


def _report(engine: TwinEngine, **values: str) -> Outcome:
    twin = {name: {"actual": {"value": value}} for name, value in values.items()}
    return _ask(engine, topics.twin_update_topic(DEVICE), {"twin": twin})


def _phase(engine: TwinEngine, prop: str = "target") -> str:
    return engine.devices[DEVICE].writes[prop].phase


def test_a_write_moves_from_set_to_sent_to_written_and_each_move_is_kept() -> None:
    engine = _engine()
    write = engine.devices[DEVICE].writes["target"]
    assert (write.phase, write.value, write.by) == ("pending", "22", "cluster")
    sent = engine.writes_sent([DEVICE])
    assert _phase(engine) == "sent"
    assert [(r.kind, r.value) for r in map(HistoryRow._make, sent.batch.history)] == [
        ("write", "sent")
    ]
    notice = orjson.loads(sent.notices[0].payload)
    assert sent.notices[0].topic == f"$hw/events/device/{DEVICE}/twin/write"
    assert notice["property"] == "target"
    assert notice["write"]["phase"] == "sent"

    outcome = _report(engine, target="22.0")  # the same value, as the device writes it
    assert _phase(engine) == "written"
    assert outcome.batch.writes[DEVICE, "target"].phase == "written"
    assert [(r.kind, r.value) for r in map(HistoryRow._make, outcome.batch.history)] == [
        ("reported", "22.0"),
        ("write", "written"),
    ]
    assert engine.writes.closed["written"] == 1


def test_a_value_the_device_already_reports_is_written_at_once() -> None:
    engine = _engine()
    _report(engine, target="22")
    set_again = _ask(
        engine,
        topics.twin_update_topic(DEVICE),
        {"twin": {"target": {"expected": {"value": "22"}}}, "by": "cli:alice"},
    )
    write = engine.devices[DEVICE].writes["target"]
    assert (write.phase, write.by) == ("written", "mqtt/cli:alice")
    assert write.reason == "the device reports it already"
    assert not any(p.topic.endswith("/twin/update/delta") for p in set_again.publications)


@pytest.mark.parametrize(
    "by", ["cli alice", "cli:\nalice", "", "x" * 65, 42, "cluster/../x"], ids=repr
)
def test_who_sets_a_value_is_a_checked_claim(by: object) -> None:
    engine = _engine()
    body = {"event_id": "e", "twin": {"target": {"expected": {"value": "23"}}}, "by": by}
    outcome = _ask(engine, topics.twin_update_topic(DEVICE), body)
    result = orjson.loads(outcome.publications[0].payload)
    assert result["code"] == 400
    assert result["reason"].startswith("by:")
    assert engine.devices[DEVICE].writes["target"].value == "22"


def _write_error(engine: TwinEngine, body: dict[str, Any] | bytes) -> Outcome:
    return _ask(engine, topics.delta_result_topic(DEVICE), body)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        {"property": "target", "code": "400", "reason": "x"},  # a string code
        {"property": "target", "reason": "no code"},
        {"property": "target", "code": 400, "reason": "x" * 1025},
        {"property": "", "code": 400},
        {"property": "nothing-like-it", "code": 400, "reason": "x"},
    ],
    ids=["not-json", "array", "string-code", "no-code", "long-reason", "no-name", "unknown"],
)
def test_a_malformed_write_error_changes_nothing_and_gets_no_answer(
    body: dict[str, Any] | bytes,
) -> None:
    engine = _engine()
    outcome = _write_error(engine, body)
    assert outcome.publications == []
    assert not outcome.batch
    assert _phase(engine) == "pending"
    assert sum(engine.api.rejected.values()) == 1


def test_a_write_error_fails_only_the_open_write_of_its_own_value() -> None:
    engine = _engine()
    stale = _write_error(engine, {"property": "target", "value": "21", "code": 400, "reason": "x"})
    assert not stale.batch
    assert engine.writes.stray_results == 1
    not_an_error = _write_error(engine, {"property": "target", "code": 200})
    assert not not_an_error.batch

    reason = "illegal\ndata address\x1b[31m"
    outcome = _write_error(
        engine, {"property": "target", "value": "22", "code": 400, "reason": reason}
    )
    write = engine.devices[DEVICE].writes["target"]
    assert write.phase == "failed"
    assert write.reason == "illegal\\ndata address\\x1b[31m"
    assert outcome.publications == []  # a result is never answered
    assert outcome.notices  # the move is told

    _report(engine, target="22")  # read back after all: written, late
    assert _phase(engine) == "written"
    after = _write_error(engine, {"property": "target", "code": 400, "reason": "late"})
    assert not after.batch
    assert _phase(engine) == "written"
    assert engine.writes.stray_results == 2


def test_a_write_times_out_at_the_deadline_of_its_property_else_its_model() -> None:
    engine = _engine(timeout="2s")
    set_at = engine.devices[DEVICE].writes["target"].set_ms
    assert engine.writes.next_deadline() == set_at + 2000
    outcome = Outcome()
    engine.writes.expire(outcome, engine.devices, set_at + 1999)
    assert not outcome.batch
    engine.writes.expire(outcome, engine.devices, set_at + 2000)
    write = engine.devices[DEVICE].writes["target"]
    assert (write.phase, write.reason) == ("timedout", "not read back within 2 s (device unknown)")
    assert engine.writes.next_deadline() is None

    device: dict[str, Any] = thermostat("d1", desired={"target": "23"}).to_document()
    device["spec"]["properties"][0]["desired"]["metadata"] = {"writeTimeout": "500ms"}
    engine.catalog.apply_device(Device.model_validate(device), "cluster")
    set_at = engine.devices[DEVICE].writes["target"].set_ms
    assert engine.writes.next_deadline() == set_at + 500


def test_the_node_s_write_timeout_is_the_default() -> None:
    engine = _engine()
    write = engine.devices[DEVICE].writes["target"]
    assert write.deadline_ms - write.set_ms == 30_000


@pytest.mark.parametrize("text", ["soon", "-1s", "0", "10 s", "1d"])
def test_a_write_timeout_that_is_not_a_duration_is_refused_where_it_is_written(
    text: str,
) -> None:
    engine = TwinEngine("n1", TwinSettings())
    document: dict[str, Any] = thermostat_model().to_document()
    document["metadata"]["annotations"] = {"edgetwin.io/write-timeout": text}
    outcome = engine.catalog.apply_model(DeviceModel.model_validate(document), "cluster")
    not_a_duration = f"{text!r} is not a duration such as 500ms, 10s or 2m"
    where = "DeviceModel default/thermostat: metadata.annotations[edgetwin.io/write-timeout]"
    assert outcome.errors == [f"{where}: {not_a_duration}"]
    engine.catalog.apply_model(thermostat_model(), "cluster")
    device: dict[str, Any] = thermostat("d1", desired={"target": "23"}).to_document()
    device["spec"]["properties"][0]["desired"]["metadata"] = {"writeTimeout": text}
    outcome = engine.catalog.apply_device(Device.model_validate(device), "cluster")
    where = "Device default/d1 spec.properties[0].desired.metadata.writeTimeout"
    assert outcome.errors == [f"{where}: {not_a_duration}"]


def test_a_drift_opens_the_write_again_and_sends_the_value_again() -> None:
    engine = _engine()
    _report(engine, target="22")
    outcome = _report(engine, target="19")
    write = engine.devices[DEVICE].writes["target"]
    assert (write.phase, write.reason) == ("pending", "drift: the device reported 19")
    assert engine.writes.drifts == 1
    deltas = [p for p in outcome.publications if p.topic.endswith("/twin/update/delta")]
    assert orjson.loads(deltas[0].payload)["delta"] == {"target": "22"}
    assert ("write", "drift") in [
        (r.kind, r.value) for r in map(HistoryRow._make, outcome.batch.history)
    ]


def test_spec_changes_and_state_are_in_the_history() -> None:
    engine = _engine()
    changed = engine.catalog.apply_device(
        thermostat("d1", desired={"target": "24"}, node="n1"), "cluster"
    )
    spec = [r for r in map(HistoryRow._make, changed.batch.history) if r.kind == "spec"]
    assert [(r.value, r.detail) for r in spec] == [
        ("changed", "by cluster: nodeName, properties[target]")
    ]
    state = _ask(engine, topics.state_update_topic(DEVICE), {"state": "online"})
    assert [(r.kind, r.value) for r in map(HistoryRow._make, state.batch.history)] == [
        ("state", "online")
    ]
    again = _ask(engine, topics.state_update_topic(DEVICE), {"state": "online"})
    assert again.batch.history == []
    removed = engine.catalog.remove_device(DEVICE, "cluster")
    assert [(r.kind, r.value, r.detail) for r in map(HistoryRow._make, removed.batch.history)] == [
        ("spec", "removed", "by cluster")
    ]
    assert removed.batch.writes == {}


def test_history_requests_are_checked_before_the_store_is_asked() -> None:
    engine = _engine()
    history = topics.history_get_topic(DEVICE)
    since = now_ms() - 60_000
    ok = _ask(engine, history, {"event_id": "h", "property": "target", "since": since})
    assert ok.query is not None
    assert (ok.query.device, ok.query.prop, ok.query.since_ms) == (DEVICE, "target", since)
    for body, code in [
        ({"event_id": "h", "property": "nothing"}, 404),
        ({"event_id": "h", "limit": 0}, 400),
        ({"event_id": "h", "limit": 10_001}, 400),
        ({"event_id": "h", "since": -1}, 400),
    ]:
        outcome = _ask(engine, history, body)
        assert outcome.query is None
        assert orjson.loads(outcome.publications[0].payload)["code"] == code
    unknown = _ask(engine, topics.history_get_topic("default/nobody"), {"event_id": "h"})
    assert orjson.loads(unknown.publications[0].payload)["code"] == 404
