"""Readiness for systemd (``Type=notify``): ``READY=1`` once serving, ``STOPPING=1`` at the end.

The protocol is one datagram to the unix socket named by ``NOTIFY_SOCKET``
(sd_notify(3); a name starting with ``@`` is in the abstract namespace).
Written here rather than taken from a package: the C binding (python-systemd)
needs libsystemd to build, and the pure-Python ones are unmaintained. The
variable is taken out of the environment first, as sd_notify's
``unset_environment`` does: the node's mosquitto would otherwise inherit it
and say READY=1 before the node is.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)


def systemd_notifier() -> Callable[[str], None]:
    """A function telling systemd a state, if systemd started this process to be told."""
    address = os.environ.pop("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]

    def notify(state: str) -> None:
        if not address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("cannot tell systemd %s: %s", state, exc)

    return notify
