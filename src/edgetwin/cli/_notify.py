"""Readiness for systemd (``Type=notify``): ``READY=1`` once serving, ``STOPPING=1`` at the end.

The protocol is one datagram to the unix socket named by ``NOTIFY_SOCKET``
(sd_notify(3); a name starting with ``@`` is in the abstract namespace).
Written here rather than taken from a package: the C binding (python-systemd)
needs libsystemd to build, and the pure-Python ones are unmaintained.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    """Tell systemd ``state`` if it started this process to be told; otherwise nothing."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s at %s: %s", state, address, exc)
