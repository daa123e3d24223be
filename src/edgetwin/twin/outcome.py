"""What a change of the twin amounts to: store rows, and the messages to send once they commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edgetwin.twin.state import DeviceTwin
from edgetwin.twin.store.rows import WriteBatch
from edgetwin.wire import topics
from edgetwin.wire.messages import delta_message


class Publication(NamedTuple):
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


class HistoryQuery(NamedTuple):
    """A history/get to answer from the store, once the batch it came in has committed."""

    device: str
    prop: str | None
    since_ms: int
    limit: int
    result_topic: str
    event_id: str


@dataclass(slots=True)
class Outcome:
    """The effect of one request or resource change.

    ``publications`` go out after ``batch`` has committed, then ``notices`` (the
    writes' moves, after the result that caused them); if the commit fails, an
    error result goes to ``on_failure`` (result topic, event id) instead.
    """

    batch: WriteBatch = field(default_factory=WriteBatch)
    publications: list[Publication] = field(default_factory=list)
    notices: list[Publication] = field(default_factory=list)
    on_failure: tuple[str, str] | None = None
    errors: list[str] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    protocol_changed: bool = False
    """A device of the node moved to another protocol (another mapper's to serve)."""
    query: HistoryQuery | None = None

    def all_publications(self) -> list[Publication]:
        return [*self.publications, *self.notices]

    def extend(self, other: Outcome) -> None:
        self.batch.merge(other.batch)
        self.publications.extend(other.publications)
        self.notices.extend(other.notices)
        self.errors.extend(other.errors)
        self.added.extend(other.added)
        self.removed.extend(other.removed)
        self.protocol_changed |= other.protocol_changed


def delta_publication(twin: DeviceTwin, event_id: str, delta: dict[str, str]) -> Publication:
    """The desired values a device has yet to reach, with its whole twin document."""
    payload = delta_message(event_id, twin.twin_document(), delta)
    return Publication(topics.delta_topic(twin.id), payload)


NOTHING = Outcome()
"""The outcome of a request dropped unanswered (one over its device's budget): nothing to
store or send, shared by all of them so that a flood allocates nothing; never extended."""
