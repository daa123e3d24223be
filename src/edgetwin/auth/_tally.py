"""What a broker refused, denied and dropped: counted for the metrics and logged, throttled.

One tally for both embedded brokers, so the counters and the log lines are the same
whichever runs: amqtt's gate calls it as it decides, and the node's mosquitto through
what edgetwin's plugin tells on mosquitto's log. A refused connection is logged once per
reason every :data:`~edgetwin.logs.LOG_EVERY` seconds (a client that has not
authenticated can change its id or port at every attempt), a denial or a rate limit once
per client and reason.
"""

from __future__ import annotations

import logging
from collections import Counter

from edgetwin.auth._access import Action, Identity
from edgetwin.logs import ThrottledLog

log = logging.getLogger(__name__)

REFUSALS = {
    "no_credentials": "connection of {client}: no user name",
    "bad_credentials": "connection of {client}: wrong user name or password ({detail})",
    "client_id_taken": "connection of {client}: its client id names another user's "
    "session ({detail})",
    "will_denied": "the Will of {client}: it may not publish on {detail!r}",
    "tls_handshake": "connection of {client}: TLS handshake failed: {detail}",
}
"""What a broker refused for each reason: a client (its id or address), and what goes
with the reason (the user, the Will's topic, the TLS error)."""


class Tally:
    """Refusals, denials and drops of one broker."""

    def __init__(self) -> None:
        self.log = ThrottledLog(log)
        self.refused: Counter[str] = Counter()
        """Refused connections (and Wills), by reason."""
        self.denied: Counter[str] = Counter()
        """Denied publications and subscriptions, by action."""
        self.rate_limited = 0
        """Publications dropped for going over a client's rate."""
        self.too_large = 0
        """Connections closed for announcing a packet over the size limit."""

    def refuse(self, client: str, reason: str, detail: str = "") -> None:
        """Count and log a refusal; ``reason`` is one of :data:`REFUSALS`."""
        self.refused[reason] += 1
        why = REFUSALS[reason].format(client=client, detail=detail)
        self.log.write("", reason, "refused %s", why)

    def deny(self, client: str, action: Action, topic: str, who: Identity) -> None:
        self.denied[action.value] += 1
        self.log.write(client, action.value, "denied %s %s to %s", action.value, topic, who)

    def limit(self, client: str, rate: float, dropped: int = 1) -> None:
        self.rate_limited += dropped
        self.log.write(client, "rate", "%s is over %g messages/s; dropped", client, rate)

    def packet_too_large(self, peer: str, size: int, limit: int) -> None:
        self.too_large += 1
        self.log.write(
            "", "size", "closed %s: a %d-byte packet is over %d bytes", peer, size, limit
        )
