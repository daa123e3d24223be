"""The embedded broker's gate: who connects, what each client may do, and how fast.

Kept apart from amqtt so the rules are plain code; the broker calls
:meth:`Gate.authenticate` on CONNECT, :meth:`Gate.allows` on every publish,
subscribe and delivery, and :meth:`Gate.admit` on every publication. Refusals,
denials and drops go to its :class:`~edgetwin.auth.Tally`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from edgetwin.auth._access import ANONYMOUS_ADMIN, AccessPolicy, Action, Identity, Role
from edgetwin.auth._passwords import PasswordFile
from edgetwin.auth._tally import Tally
from edgetwin.config import DEFAULTS, AuthSettings
from edgetwin.rates import RateLimits

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
        self._told = RateLimits(1.0, 1.0)
        self.tally = Tally()

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
            self.tally.refuse(client, "no_credentials")
            return None
        internal = self._internal.get(user)
        if internal is not None and secrets.compare_digest(internal[0], password or ""):
            return internal[1]
        if password is None or not self._passwords.check(user, password):
            self.tally.refuse(client, "bad_credentials", user)
            return None
        return self._policy.identity(user)

    def _may(self, who: Identity, action: Action, topic: str) -> bool:
        return who.role is Role.ADMIN or self._policy.allows(who, action, topic)

    def allows(self, who: Identity, action: Action, topic: str, client: str) -> bool:
        if self._may(who, action, topic):
            return True
        if action is not Action.RECEIVE:  # a receive is filtered, not denied: wildcards are fine
            self.tally.deny(client, action, topic, who)
        return False

    def will_allowed(self, who: Identity, topic: str, client: str) -> bool:
        """Whether a Will may go to ``topic``: as a live publication, counted as a refused
        Will if not (mosquitto's plugin can check a Will only when it goes out)."""
        if self._may(who, Action.PUBLISH, topic):
            return True
        self.tally.refuse(client, "will_denied", topic)
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
        self.tally.limit(client, self._rates.rate)
        return False

    def tell(self, client: str) -> bool:
        """Whether a publication :meth:`admit` dropped is answered 429: the first one a
        second of each client (answering each would double a flood), as mosquitto's plugin."""
        return self._told.allow(client)
