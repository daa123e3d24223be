"""The payloads of the MQTT twin API, in KubeEdge's shapes.

Requests are parsed strictly with pydantic straight from JSON bytes (values
must be JSON strings: ``"25"``, not ``25``). Replies are plain dicts encoded
with orjson; the builders below are the only place their shape is written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

DeviceState = Literal["online", "offline", "ok", "unhealthy", "unknown"]

STATE_SPELLINGS: dict[str, DeviceState] = {
    "online": "online",
    "offline": "offline",
    "ok": "ok",
    "unhealthy": "unhealthy",
    "unknown": "unknown",
    "disconnected": "offline",
}
"""What ``state/update`` takes, in any case: KubeEdge's states, and ``disconnected``,
which KubeEdge's mapper runtime reports for a device it lost (KubeEdge's edge drops it)."""


class Code(IntEnum):
    """Error codes in results (HTTP-like, as KubeEdge's)."""

    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_FOUND = 404
    TOO_LARGE = 413
    TOO_MANY_REQUESTS = 429
    STORE_FAILED = 500


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    event_id: Annotated[str, StringConstraints(max_length=256)] = ""
    timestamp: int = 0


class ValueField(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    value: str
    metadata: dict[str, Any] | None = None


class TwinEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    expected: ValueField | None = None
    actual: ValueField | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_a_side(self) -> TwinEntry:
        if self.expected is None and self.actual is None:
            raise ValueError("a twin entry needs 'expected' or 'actual'")
        return self


By = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")]
"""Who a client says it is (``edgetwin set`` sends ``cli:<user>``): a claim, kept as
``mqtt/<claim>`` beside the desired values it sets."""


class TwinUpdateRequest(_Request):
    twin: dict[str, TwinEntry | None]
    """``None`` (JSON null) deletes the property's values, as on KubeEdge's edge."""
    by: By | None = None


class WriteResultRequest(_Request):
    """A mapper's error for a desired value it could not write (``…/twin/update/delta/result``)."""

    property: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    value: str | None = None
    """The desired value it could not write; none: the current one."""
    code: int
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


class HistoryGetRequest(_Request):
    """``edgetwin history``: a device's changes, of one property or all, since a time."""

    property: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    since: int = Field(0, ge=0)
    """Epoch milliseconds; 0: as far back as the history goes."""
    limit: int = Field(1000, ge=1, le=10_000)


class TwinGetRequest(_Request):
    pass


class StateUpdateRequest(_Request):
    state: DeviceState

    @field_validator("state", mode="before")
    @classmethod
    def _spelling(cls, value: object) -> object:
        if isinstance(value, str):
            return STATE_SPELLINGS.get(value.lower(), value)
        return value


class MembershipGetRequest(_Request):
    pass


class ApplyRequest(_Request):
    """``edgetwin apply``: manifests sent to a running node."""

    documents: list[dict[str, Any]] = Field(min_length=1)


RequestT = TypeVar("RequestT", bound=_Request)


class BadRequestError(Exception):
    """A request that cannot be parsed; ``reason`` names the field."""

    def __init__(self, reason: str, code: Code = Code.BAD_REQUEST, event_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.event_id = event_id


def string_map(value: object) -> dict[str, str]:
    """The string entries of a decoded JSON object (nothing, if it is not one)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def parse_request(model: type[RequestT], payload: bytes) -> RequestT:
    """Parse a request payload or raise BadRequestError with a one-line reason."""
    try:
        return model.model_validate_json(payload or b"{}")
    except ValidationError as exc:
        raise BadRequestError(_reason(exc), event_id=event_id_of(payload)) from None


def _reason(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    return f"{where}: {message}" if where else message


def event_id_of(payload: bytes) -> str:
    """Best effort: the event_id of a request that failed to parse, so the caller can match it."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and len(event_id) <= 256 else ""


def _error_body(event_id: str, code: int, reason: str) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": now_ms(), "code": int(code), "reason": reason}


def error_result(event_id: str, code: int, reason: str) -> bytes:
    return orjson.dumps(_error_body(event_id, code, reason))


def twin_update_result(
    event_id: str,
    timestamp: int,
    twin: dict[str, Any],
    errors: Mapping[str, tuple[int, str]],
    out_of_range: dict[str, str],
) -> bytes:
    """The answer to a twin/update: the sides each applied property got (None: deleted),
    and what was refused (code, reason) or kept out of range (why), by property."""
    body: dict[str, Any] = {"event_id": event_id, "timestamp": timestamp, "twin": twin}
    if errors:
        body["errors"] = {n: {"code": int(c), "reason": r} for n, (c, r) in errors.items()}
    if out_of_range:
        body["out_of_range"] = out_of_range
    return orjson.dumps(body)


def twin_get_result(
    event_id: str, twin: dict[str, Any], state: str, last_online: int | None
) -> bytes:
    """The answer to a twin/get: the whole twin document and the device's state."""
    body = {
        "event_id": event_id,
        "timestamp": now_ms(),
        "twin": twin,
        "state": state,
        "last_online_time": last_online,
    }
    return orjson.dumps(body)


def state_update_result(
    event_id: str, timestamp: int, device: dict[str, Any], last_online: int | None
) -> bytes:
    """The answer to a state/update: the device (name, state, lastOnlineTime) as stored."""
    body = {
        "event_id": event_id,
        "timestamp": timestamp,
        "device": device,
        "last_online_time": last_online,
    }
    return orjson.dumps(body)


def membership_result(event_id: str, devices: list[dict[str, Any]], following: str | None) -> bytes:
    """The answer to a membership/get; ``following`` says what the cloud sync follows."""
    body: dict[str, Any] = {"event_id": event_id, "timestamp": now_ms(), "devices": devices}
    if following is not None:
        body["cloud"] = {"following": following}
    return orjson.dumps(body)


def membership_updated(added: list[dict[str, Any]], removed: list[dict[str, Any]]) -> bytes:
    """The devices that joined and left the node."""
    body = {
        "event_id": "",
        "timestamp": now_ms(),
        "added_devices": added,
        "removed_devices": removed,
    }
    return orjson.dumps(body)


def apply_result(event_id: str, applied: list[str], errors: list[str]) -> bytes:
    """The answer to ``edgetwin apply``: what was applied, and one line per error."""
    body = {"event_id": event_id, "timestamp": now_ms(), "applied": applied, "errors": errors}
    return orjson.dumps(body)


def delta_message(event_id: str, twin: dict[str, Any], delta: dict[str, str]) -> bytes:
    """A twin/update/delta: the whole twin document and the desired values pending."""
    body = {"event_id": event_id, "timestamp": now_ms(), "twin": twin, "delta": delta}
    return orjson.dumps(body)


def document_message(event_id: str, timestamp: int, twin: dict[str, Any]) -> bytes:
    """A twin/update/document: each changed property's ``last`` and ``current`` sides."""
    return orjson.dumps({"event_id": event_id, "timestamp": timestamp, "twin": twin})


def twin_update_request(event_id: str, twin: dict[str, Any]) -> bytes:
    """A twin/update, as a mapper sends it."""
    return orjson.dumps({"event_id": event_id, "timestamp": now_ms(), "twin": twin})


def state_update_request(event_id: str, state: str) -> bytes:
    """A state/update, as a mapper sends it."""
    return orjson.dumps({"event_id": event_id, "timestamp": now_ms(), "state": state})


def get_request(event_id: str) -> bytes:
    """A twin/get or membership/get: nothing but the event id to answer to."""
    return orjson.dumps({"event_id": event_id})


def accepted_result(event_id: str = "") -> bytes:
    """A request taken without anything more to say (a mapper's spec result)."""
    return orjson.dumps({"event_id": event_id, "timestamp": now_ms(), "accepted": True})


def write_failed_result(prop: str, value: str, reason: str) -> bytes:
    """A mapper's answer to a delta it could not write to the device (the twin records the
    write failed, with ``reason``)."""
    body = _error_body("", Code.BAD_REQUEST, reason)
    return orjson.dumps({**body, "property": prop, "value": value})


def write_message(prop: str, timestamp: int, status: dict[str, Any]) -> bytes:
    """A write's move (``…/twin/write``): the property and where its write stands now."""
    return orjson.dumps({"event_id": "", "timestamp": timestamp, "property": prop, "write": status})


def history_result(event_id: str, device: str, events: list[dict[str, Any]]) -> bytes:
    """The answer to a history/get: the device's changes asked for, oldest first."""
    body = {"event_id": event_id, "timestamp": now_ms(), "device": device, "events": events}
    return orjson.dumps(body)
