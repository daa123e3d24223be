"""Password files in mosquitto's format, so one file serves the embedded broker and mosquitto.

Each line is ``username:hash``. mosquitto 2 writes ``$7$<iterations>$<salt>$<hash>``
(PBKDF2-HMAC-SHA512, 64-byte hash, base64 fields); 1.x wrote
``$6$<salt>$<hash>`` (one SHA-512 of password and salt). Both are read; new
entries are written as ``$7$`` with many more iterations than mosquitto's 101,
which mosquitto reads too since the count is in the entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgetwin.errors import ConfigError

ITERATIONS = 20_000
_SALT_BYTES = 12
_HASH_BYTES = 64


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    """A new ``$7$`` entry for ``password`` with a random salt."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def check_password(entry: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` or ``$6$`` entry; False for anything else."""
    parts = entry.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, digest = int(parts[2]), _unb64(parts[3]), _unb64(parts[4])
            if not 1 <= iterations <= 10_000_000:
                return False
            given = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
        elif len(parts) == 4 and parts[1] == "6":
            salt, digest = _unb64(parts[2]), _unb64(parts[3])
            given = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(given, digest)


@dataclass
class PasswordFile:
    """The entries of one password file, by user name."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PasswordFile:
        """Read ``path``; ConfigError names the line that is not ``user:hash``."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"password file {path} cannot be read: {exc.strerror}") from None
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, entry = line.partition(":")
            if not sep or not user or not entry.startswith("$"):
                raise ConfigError(f"password file {path}, line {number}: not 'user:hash'")
            entries[user] = entry
        return cls(path, entries)

    def check(self, user: str, password: str) -> bool:
        entry = self.entries.get(user)
        return entry is not None and check_password(entry, password)

    def set(self, user: str, password: str) -> None:
        if not user or ":" in user or "\n" in user:
            raise ConfigError(f"user name {user!r} may not be empty or hold ':' or a newline")
        self.entries[user] = hash_password(password)

    def save(self) -> None:
        """Write the file (mode 0600) through a temporary file, so a crash leaves the old one."""
        text = "".join(f"{user}:{entry}\n" for user, entry in self.entries.items())
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
