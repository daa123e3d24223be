from __future__ import annotations

from edgetwin.wire import topics
from edgetwin.wire.topics import RequestKind, parse_request_topic


def test_requests_parse_and_results_do_not() -> None:
    request = parse_request_topic("$hw/events/device/default/t1/twin/update")
    assert request is not None
    assert (request.kind, request.device) == (RequestKind.TWIN_UPDATE, "default/t1")
    assert request.result_topic == "$hw/events/device/default/t1/twin/update/result"
    assert parse_request_topic("$hw/events/device/default/t1/twin/update/result") is None
    assert parse_request_topic("$hw/events/device/default/t1/twin/update/delta") is None
    node = parse_request_topic("$hw/events/node/n1/membership/get")
    assert node is not None
    assert node.kind is RequestKind.MEMBERSHIP_GET


def test_no_filter_matches_what_the_twin_publishes() -> None:
    published = [
        topics.delta_topic("a/b"),
        topics.document_topic("a/b"),
        topics.twin_update_topic("a/b") + "/result",
        topics.twin_get_topic("a/b") + "/result",
        topics.membership_updated_topic("n1"),
        topics.spec_topic("modbus", "a/b"),
    ]
    for topic in published:
        for pattern in topics.request_filters("n1"):
            assert not _matches(pattern, topic), (pattern, topic)


def _matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    if len(p) != len(t):
        return False
    return all(a in ("+", b) for a, b in zip(p, t, strict=True))
