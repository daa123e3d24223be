"""The MQTT topics of the twin API (KubeEdge conventions) and their parsing.

A device id is ``<namespace>/<name>``: two topic levels under
``$hw/events/device/``. Requests arrive on the filters in
:data:`REQUEST_FILTERS`; the reply goes to the request topic plus
``/result``. The filters with one level too few or too many catch ids that
are not ``<namespace>/<name>``, so their senders get an error result instead
of silence.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

DEVICE_PREFIX = "$hw/events/device"
NODE_PREFIX = "$hw/events/node"
MAPPER_PREFIX = "$hw/events/mapper"


class RequestKind(Enum):
    TWIN_UPDATE = "twin/update"
    TWIN_GET = "twin/get"
    STATE_UPDATE = "state/update"
    MEMBERSHIP_GET = "membership/get"
    NODE_APPLY = "manifests/apply"
    HISTORY_GET = "history/get"
    WRITE_RESULT = "twin/update/delta/result"
    """A mapper's error for a desired value: taken, never answered."""


_DEVICE_KINDS = (
    RequestKind.TWIN_UPDATE,
    RequestKind.TWIN_GET,
    RequestKind.STATE_UPDATE,
    RequestKind.HISTORY_GET,
)
_NODE_KINDS = (RequestKind.MEMBERSHIP_GET, RequestKind.NODE_APPLY)


def request_filters(node: str) -> list[str]:
    """Every filter the twin subscribes to for requests."""
    filters = []
    for kind in _DEVICE_KINDS:
        filters.append(f"{DEVICE_PREFIX}/+/+/{kind.value}")
        filters.append(f"{DEVICE_PREFIX}/+/{kind.value}")
        filters.append(f"{DEVICE_PREFIX}/+/+/+/{kind.value}")
    filters.extend(f"{NODE_PREFIX}/{node}/{kind.value}" for kind in _NODE_KINDS)
    filters.append(DELTA_RESULT_FILTER)
    return filters


class Request(NamedTuple):
    """A parsed request topic: what is asked and of which device (``""`` for node requests)."""

    kind: RequestKind
    device: str
    topic: str

    @property
    def result_topic(self) -> str:
        return f"{self.topic}/result"


_DEVICE_SUFFIXES = tuple((f"/{kind.value}", kind) for kind in _DEVICE_KINDS)
_NODE_SUFFIXES = tuple((f"/{kind.value}", kind) for kind in _NODE_KINDS)


def parse_request_topic(topic: str) -> Request | None:
    """Which request a topic carries, or None if it is not one of ours."""
    if topic.startswith(DEVICE_PREFIX + "/"):
        device = device_of(topic, DEVICE_PREFIX, RequestKind.WRITE_RESULT.value)
        if device is not None:
            return Request(RequestKind.WRITE_RESULT, device, topic)
        for suffix, kind in _DEVICE_SUFFIXES:
            if topic.endswith(suffix):
                return Request(kind, topic[len(DEVICE_PREFIX) + 1 : -len(suffix)], topic)
    elif topic.startswith(NODE_PREFIX + "/"):
        for suffix, kind in _NODE_SUFFIXES:
            if topic.endswith(suffix):
                return Request(kind, "", topic)
    return None


def device_topic(device: str, suffix: str) -> str:
    return f"{DEVICE_PREFIX}/{device}/{suffix}"


def twin_update_topic(device: str) -> str:
    return device_topic(device, RequestKind.TWIN_UPDATE.value)


def twin_get_topic(device: str) -> str:
    return device_topic(device, RequestKind.TWIN_GET.value)


def state_update_topic(device: str) -> str:
    return device_topic(device, RequestKind.STATE_UPDATE.value)


def delta_topic(device: str) -> str:
    return device_topic(device, "twin/update/delta")


def document_topic(device: str) -> str:
    return device_topic(device, "twin/update/document")


def membership_get_topic(node: str) -> str:
    return f"{NODE_PREFIX}/{node}/{RequestKind.MEMBERSHIP_GET.value}"


def membership_updated_topic(node: str) -> str:
    return f"{NODE_PREFIX}/{node}/membership/updated"


def apply_topic(node: str) -> str:
    return f"{NODE_PREFIX}/{node}/{RequestKind.NODE_APPLY.value}"


def spec_topic(protocol: str, device: str) -> str:
    """Retained: a device's merged spec, for the mappers of its protocol."""
    return f"{MAPPER_PREFIX}/{protocol}/{device}/spec"


def spec_filter(protocol: str) -> str:
    return f"{MAPPER_PREFIX}/{protocol}/+/+/spec"


def spec_result_topic(protocol: str, device: str) -> str:
    """A mapper's answer to a device's spec: accepted, or why its config cannot be used."""
    return f"{spec_topic(protocol, device)}/result"


def delta_result_topic(device: str) -> str:
    """A mapper's error for a desired value it could not write to the device."""
    return device_topic(device, RequestKind.WRITE_RESULT.value)


def write_topic(device: str) -> str:
    """Where the twin tells each move of a device's writes (pending, sent, written, ...)."""
    return device_topic(device, "twin/write")


def history_get_topic(device: str) -> str:
    return device_topic(device, RequestKind.HISTORY_GET.value)


DELTA_FILTER = f"{DEVICE_PREFIX}/+/+/twin/update/delta"
DELTA_RESULT_FILTER = f"{DEVICE_PREFIX}/+/+/{RequestKind.WRITE_RESULT.value}"
TWIN_GET_RESULT_FILTER = f"{DEVICE_PREFIX}/+/+/twin/get/result"
TWIN_UPDATE_RESULT_FILTER = f"{DEVICE_PREFIX}/+/+/twin/update/result"


def device_of(topic: str, prefix: str, suffix: str) -> str | None:
    """The ``<namespace>/<name>`` between prefix and suffix, if the topic has that shape."""
    if not topic.startswith(prefix + "/") or not topic.endswith("/" + suffix):
        return None
    middle = topic[len(prefix) + 1 : -len(suffix) - 1]
    return middle if middle.count("/") == 1 else None
