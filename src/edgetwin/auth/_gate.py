"""The embedded broker's gate: who connects, what each client may do, and how fast.

Kept apart from amqtt so the rules are plain code; the broker calls
:meth:`Gate.authenticate` on CONNECT, :meth:`Gate.allows` on every publish,
subscribe and delivery, and :meth:`Gate.admit` on every publication. Refusals
and denials are counted for the metrics and logged, so that a flood cannot
flood the log: a denial or a rate limit once per client and reason every
:data:`~edgetwin.logs.LOG_EVERY` seconds at most, a refused connection once per reason.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from edgetwin.auth._access import ANONYMOUS_ADMIN, AccessPolicy, Action, Identity, Role
from edgetwin.auth._passwords import PasswordFile
from edgetwin.config import DEFAULTS, AuthSettings
from edgetwin.logs import ThrottledLog
from edgetwin.rates import RateLimits

log = logging.getLogger(__name__)

BURST_SECONDS = 2.0


class Gate:
    """Authentication, ACL and per-client rate limits for one broker."""

    def __init__(
        self,
        auth: AuthSettings,
        protocol_of: Callable[[str], str | None],
        *,
        client_certs: bool = False,
        max_messages_per_second: float = DEFAULTS.broker.max_messages_per_second,
    ) -> None:
        self.enabled = auth.password_file is not None or client_certs
        """Anonymous clients are refused and the ACL applies; otherwise everyone is admin."""
        self._passwords = (
            PasswordFile.load(auth.password_file) if auth.password_file else PasswordFile(Path())
        )
        self._policy = AccessPolicy(auth, protocol_of)
        self._internal: dict[str, tuple[str, Identity]] = {}
        self._rates = RateLimits(max_messages_per_second, max_messages_per_second * BURST_SECONDS)
        self.log = ThrottledLog(log)
        self.refused: Counter[str] = Counter()
        """Refused connections, by reason."""
        self.denied: Counter[str] = Counter()
        """Denied publications and subscriptions, by action."""
        self.rate_limited = 0
        """Publications dropped for going over a client's rate."""
        self.too_large = 0
        """Connections closed for announcing a packet over the size limit."""

    def internal_user(self, identity: Identity) -> tuple[str, str]:
        """Credentials, known only to this process, for a client of ours (a mapper of the node)."""
        password = secrets.token_urlsafe(24)
        self._internal[identity.user] = (password, identity)
        return identity.user, password

    def authenticate(
        self, user: str | None, password: str | None, cert_user: str | None, client: str
    ) -> Identity | None:
        """The identity of a connecting client, or None (logged and counted) if it is refused.

        A verified client certificate names the user (its CN), as mosquitto's
        ``use_identity_as_username`` does; otherwise the password must match.
        """
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if cert_user:
            return self._policy.identity(cert_user)
        if not user:
            self.refuse(client, "no_credentials", "no user name")
            return None
        internal = self._internal.get(user)
        if internal is not None and secrets.compare_digest(internal[0], password or ""):
            return internal[1]
        if password is None or not self._passwords.check(user, password):
            self.refuse(client, "bad_credentials", f"wrong user name or password ({user})")
            return None
        return self._policy.identity(user)

    def refuse(self, client: str, reason: str, why: str) -> None:
        """Count and log a refused connection (``client``: its id, or its address).

        Logged once per reason every :data:`~edgetwin.logs.LOG_EVERY` seconds: a client that
        has not authenticated can change its id or port at every attempt.
        """
        self.refused[reason] += 1
        self.log.write("", reason, "refused connection of %s: %s", client, why)

    def allows(self, who: Identity, action: Action, topic: str, client: str) -> bool:
        if who.role is Role.ADMIN or self._policy.allows(who, action, topic):
            return True
        if action is not Action.RECEIVE:  # a receive is filtered, not denied: wildcards are fine
            self.denied[action.value] += 1
            self.log.write(client, action.value, "denied %s %s to %s", action.value, topic, who)
        return False

    def admit(self, who: Identity | None, client: str) -> bool:
        """Whether one more publication of ``client`` is within its rate (a token bucket).

        Mappers and admins that logged in (the node's own mappers among them) are
        not limited: they are trusted, and a mapper's reports for many devices
        come from one client. Devices are, and so is everyone when the broker
        asks nobody who they are.
        """
        if who is not None and who.user and who.role in (Role.ADMIN, Role.MAPPER):
            return True
        if self._rates.allow(client):
            return True
        self.rate_limited += 1
        rate = self._rates.rate
        self.log.write(client, "rate", "%s is over %g messages/s; dropped", client, rate)
        return False

    def packet_too_large(self, peer: str, size: int, limit: int) -> None:
        self.too_large += 1
        self.log.write(
            "", "size", "closed %s: a %d-byte packet is over %d bytes", peer, size, limit
        )
