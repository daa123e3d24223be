"""Who may publish, subscribe and receive what: the broker's ACL, and the same rules for mosquitto.

Three roles, each named by user in ``broker.auth``:

- an **admin** (the CLI, tools) may do everything;
- a **mapper** serves one protocol: its own ``$hw/events/mapper/<protocol>/…``
  specs (it answers them on ``…/spec/result``), the twin topics of the devices
  of that protocol (a wildcard subscription is allowed, and only those devices'
  messages are delivered), and any topic outside ``$`` — the devices' own MQTT
  topics, for mappers such as the MQTT one;
- a **device** may publish and receive only under its own
  ``$hw/events/device/<namespace>/<name>/``.

Anyone else authenticated may do nothing. The rules for mappers need each
device's protocol, which the twin knows; :func:`mosquitto_acl` writes them out
for one list of devices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from edgetwin.config import AuthSettings
from edgetwin.wire import topics


class Action(Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class Role(Enum):
    ADMIN = "admin"
    MAPPER = "mapper"
    DEVICE = "device"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated client: its user name, role, and the protocol or device it is for."""

    user: str
    role: Role
    scope: str = ""

    def __str__(self) -> str:
        return f"{self.user} ({self.role.value}{' ' + self.scope if self.scope else ''})"


ANONYMOUS_ADMIN = Identity("", Role.ADMIN)
"""Everyone, when the broker has no authentication configured."""

_DEVICE = topics.DEVICE_PREFIX + "/"
_MAPPER = topics.MAPPER_PREFIX + "/"


class AccessPolicy:
    """The roles of ``broker.auth`` applied to topics; ``protocol_of`` names a device's protocol."""

    def __init__(self, auth: AuthSettings, protocol_of: Callable[[str], str | None]) -> None:
        self._auth = auth
        self._protocol_of = protocol_of

    def identity(self, user: str) -> Identity:
        auth = self._auth
        if user in auth.admins:
            return Identity(user, Role.ADMIN)
        if user in auth.mappers:
            return Identity(user, Role.MAPPER, auth.mappers[user])
        if user in auth.devices:
            return Identity(user, Role.DEVICE, auth.devices[user])
        return Identity(user, Role.NONE)

    def allows(self, who: Identity, action: Action, topic: str) -> bool:
        """Whether ``who`` may do ``action`` on ``topic`` (a filter, for SUBSCRIBE)."""
        match who.role:
            case Role.ADMIN:
                return True
            case Role.DEVICE:
                return topic.startswith(f"{_DEVICE}{who.scope}/")
            case Role.MAPPER:
                return self._mapper_allows(who.scope, action, topic)
            case _:
                return False

    def _mapper_allows(self, protocol: str, action: Action, topic: str) -> bool:
        if not topic.startswith("$"):
            return True
        if topic.startswith(f"{_MAPPER}{protocol}/"):
            return action is not Action.PUBLISH or topic.endswith("/spec/result")
        if not topic.startswith(_DEVICE):
            return False
        namespace, _, rest = topic[len(_DEVICE) :].partition("/")
        name = rest.partition("/")[0]
        if action is Action.SUBSCRIBE and "+" in (namespace, name):
            return "#" not in (namespace, name)  # any device's, delivered only for its own
        return self._protocol_of(f"{namespace}/{name}") == protocol


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A device and its protocol, as the node's membership lists them."""

    id: str
    protocol: str


def mosquitto_acl(auth: AuthSettings, devices: Iterable[DeviceEntry]) -> str:
    """The same rules as an ``acl_file`` for mosquitto 2 (which filters wildcard reads per topic).

    mosquitto's ``#`` does not match topics that begin with ``$``, so admins
    and mappers get ``$hw/…`` lines of their own.
    """
    by_protocol: dict[str, list[str]] = {}
    for device in devices:
        by_protocol.setdefault(device.protocol, []).append(device.id)
    lines = ["# Written by `edgetwin acl --mosquitto`; the roles are in broker.auth.", ""]
    for user in auth.admins:
        lines += [f"user {user}", "topic readwrite #", "topic readwrite $hw/#", ""]
    for user, protocol in auth.mappers.items():
        lines += [
            f"user {user}",
            "topic readwrite #",
            f"topic read {_MAPPER}{protocol}/#",
            f"topic write {_MAPPER}{protocol}/+/+/spec/result",
        ]
        lines += [f"topic readwrite {_DEVICE}{d}/#" for d in sorted(by_protocol.get(protocol, []))]
        lines.append("")
    for user, device_id in auth.devices.items():
        lines += [f"user {user}", f"topic readwrite {_DEVICE}{device_id}/#", ""]
    return "\n".join(lines)
