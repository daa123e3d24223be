"""Who may use the broker: password files (mosquitto's format), roles and topic rules, the gate.

Plain code with no broker in it: the embedded broker calls the :class:`Gate`,
and ``edgetwin acl --mosquitto`` writes the same rules for mosquitto.
"""

from edgetwin.auth._access import (
    AccessPolicy,
    Action,
    DeviceEntry,
    Identity,
    Role,
    mosquitto_acl,
)
from edgetwin.auth._gate import Gate
from edgetwin.auth._passwords import PasswordFile, check_password, hash_password

__all__ = [
    "AccessPolicy",
    "Action",
    "DeviceEntry",
    "Gate",
    "Identity",
    "PasswordFile",
    "Role",
    "check_password",
    "hash_password",
    "mosquitto_acl",
]
