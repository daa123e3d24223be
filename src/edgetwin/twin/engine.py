"""The twin engine: requests and resources in, store rows and MQTT messages out.

The engine holds every device's twin in memory and changes it synchronously,
so the order messages arrive in is the order they apply in. It does no I/O:
each call returns an :class:`Outcome`, the rows the store must commit and
the messages to publish once they have. If a commit fails, the service asks
the engine to :meth:`TwinEngine.restore_devices` from the store, which is
the truth.

Its parts: the :class:`Catalog` (devices and models, as resources apply
them) and the :class:`TwinApi` (the MQTT requests); a :class:`CloudView`
from the cloud sync, when one runs, hears of every change the cluster must
see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from edgetwin.config import DEFAULTS, TwinSettings
from edgetwin.twin.api import TwinApi
from edgetwin.twin.catalog import Catalog, CloudView
from edgetwin.twin.history import History
from edgetwin.twin.outcome import Outcome, Publication
from edgetwin.twin.writes import WriteBook
from edgetwin.wire import topics
from edgetwin.wire.messages import membership_updated, now_ms


class TwinEngine:
    """Every device twin of one node."""

    def __init__(
        self,
        node: str,
        settings: TwinSettings,
        cloud: CloudView | None = None,
        *,
        history: bool = DEFAULTS.history.enabled,
    ) -> None:
        self.node = node
        self.history = History(enabled=history)
        self.writes = WriteBook(settings, self.history, settings.result_qos)
        if cloud is not None:
            self.writes.cloud = cloud.write_changed
        self.catalog = Catalog(node, settings, cloud, self.writes, self.history)
        self.api = TwinApi(self.catalog, settings)
        self.devices = self.catalog.devices
        """The catalog's devices (the same dict), read by most of the node's parts."""
        self.membership_listeners: list[Callable[[], None]] = []
        """Told when devices join or leave the node, or move to another protocol (the
        broker rewrites its ACL)."""

    def writes_sent(self, device_ids: Iterable[str]) -> Outcome:
        """Deltas of these devices went out to the mappers: their pending writes are sent."""
        outcome, now = Outcome(), now_ms()
        for device_id in device_ids:
            twin = self.devices.get(device_id)
            if twin is not None:
                self.writes.sent(outcome, twin, now)
        return outcome

    def expire_writes(self) -> Outcome:
        """Writes past their deadline, timed out."""
        outcome = Outcome()
        self.writes.expire(outcome, self.devices, now_ms())
        return outcome

    def announce_membership(self, outcome: Outcome) -> None:
        """Turn the devices an outcome added and removed into one ``membership/updated``."""
        if outcome.added or outcome.removed or outcome.protocol_changed:
            for listener in self.membership_listeners:
                listener()
        outcome.protocol_changed = False
        if not outcome.added and not outcome.removed:
            return
        topic = topics.membership_updated_topic(self.node)
        payload = membership_updated(outcome.added, outcome.removed)
        outcome.publications.append(Publication(topic, payload))
        outcome.added, outcome.removed = [], []
