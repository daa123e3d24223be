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


class TwinUpdateRequest(_Request):
    twin: dict[str, TwinEntry | None]
    """``None`` (JSON null) deletes the property's values, as on KubeEdge's edge."""


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


def parse_request(model: type[RequestT], payload: bytes) -> RequestT:
    """Parse a request payload or raise BadRequestError with a one-line reason."""
    try:
        return model.model_validate_json(payload or b"{}")
    except ValidationError as exc:
        raise BadRequestError(_reason(exc), event_id=_event_id_of(payload)) from None


def _reason(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    return f"{where}: {message}" if where else message


def _event_id_of(payload: bytes) -> str:
    """Best effort: the event_id of a request that failed to parse, so the caller can match it."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and len(event_id) <= 256 else ""


def error_body(event_id: str, code: int, reason: str) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": now_ms(), "code": int(code), "reason": reason}


def error_result(event_id: str, code: int, reason: str) -> bytes:
    return orjson.dumps(error_body(event_id, code, reason))


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


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)
