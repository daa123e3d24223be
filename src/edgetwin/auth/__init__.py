"""Who may use the broker: password files (mosquitto's format), roles and topic rules, the gate.

Plain code with no broker in it: the embedded broker calls the :class:`Gate`, the
node's mosquitto has the same rules through edgetwin's plugin, both count what they
refuse in a :class:`Tally`, and ``edgetwin acl --mosquitto`` writes the same rules for
a mosquitto of one's own.
"""

from edgetwin.auth._access import (
    AccessPolicy,
    Action,
    DeviceEntry,
    Identity,
    Role,
    mosquitto_acl,
)
from edgetwin.auth._gate import BURST_SECONDS, Gate
from edgetwin.auth._passwords import PasswordFile, check_password, hash_password
from edgetwin.auth._tally import REFUSALS, Tally

__all__ = [
    "BURST_SECONDS",
    "REFUSALS",
    "AccessPolicy",
    "Action",
    "DeviceEntry",
    "Gate",
    "Identity",
    "PasswordFile",
    "Role",
    "Tally",
    "check_password",
    "hash_password",
    "mosquitto_acl",
]
