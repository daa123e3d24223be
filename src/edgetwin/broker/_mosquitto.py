"""mosquitto as the node's embedded broker: a child process the node configures and restarts.

amqtt, in the node's own process, tops out near 3,000 messages/s on this
class of machine before the twin does any work; mosquitto passes ten times
that. When the binary is there (``broker.engine: auto``) the node writes a
mosquitto configuration from its settings into ``<data_dir>/mosquitto/``:
the listener (and a TLS listener), the packet size limit, and edgetwin's
plugin (``mosquitto_plugin.c``, built with the package) with its rules file:
``broker.auth``'s users and roles, the password hashes (the configured users'
and the node's own clients', whose passwords live only in this process), the
node's devices and the per-client message rate. The plugin decides who
connects and what each client may do with the same rules as amqtt's gate, and
tells each refusal, denial and drop on mosquitto's log, which this reads into
the same :class:`~edgetwin.auth.Tally` (mosquitto refuses control characters
in client ids, user names and topics, so no client can start a line of its
own). The rules file is rewritten whenever the node's devices change, and
mosquitto reads it again on SIGHUP. If mosquitto dies it is started again with
backoff; the twin and the mappers reconnect as they do to any broker.

What amqtt does and this does not: a Will the client may not publish refuses
its CONNECT on amqtt; mosquitto tells a plugin nothing of a Will until it goes
out, and drops it then (counted the same). And the in-process link: the twin
is a client over TCP.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import getpass
import logging
import os
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self
from urllib.parse import unquote

from edgetwin.auth import (
    BURST_SECONDS,
    REFUSALS,
    AccessPolicy,
    Action,
    DeviceEntry,
    Identity,
    PasswordFile,
    Role,
    Tally,
    hash_password,
)
from edgetwin.config import AuthSettings, BrokerSettings
from edgetwin.errors import BrokerStartError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.tasks import Backoff, start_guarded, stop_task

log = logging.getLogger(__name__)

_RUNNING = re.compile(r"mosquitto version \S+ running")
_OPENING = re.compile(r"Opening ipv[46] listen socket on port (\d+)")
_START_TIMEOUT = 10.0
_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_PR_SET_PDEATHSIG = 1
_TOLD = "edgetwin: "
"""How the plugin's lines in mosquitto's log begin."""


def find_mosquitto(configured: Path | None = None) -> Path | None:
    """The mosquitto binary: the configured one, else on PATH or in the sbin folders."""
    if configured is not None:
        return configured
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return next((Path(p) for p in _SEARCH if os.access(p, os.X_OK)), None)


def find_plugin() -> Path | None:
    """edgetwin's mosquitto plugin, if the package was built with it (it needs mosquitto's
    headers, libssl's and a C compiler when it is installed)."""
    return min(Path(__file__).parent.glob("_mosquitto_plugin*.so"), default=None)


def _die_with_parent() -> Callable[[], None] | None:
    """For the child, before it runs mosquitto: SIGTERM when the node dies, even by SIGKILL,
    so a killed node leaves no broker behind holding its port (Linux's PR_SET_PDEATHSIG)."""
    libc_name = ctypes.util.find_library("c")
    prctl = getattr(ctypes.CDLL(libc_name), "prctl", None) if libc_name else None
    if prctl is None:
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


def _free_port(host: str) -> int:
    """A port free now on ``host``, for a listener asked on port 0 (mosquitto has no port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class MosquittoBroker:
    """``async with MosquittoBroker(binary, settings, folder, devices) as broker``.

    ``plugin`` is :func:`find_plugin`'s; ``devices`` lists the node's devices and their
    protocols, for the ACL: call :meth:`devices_changed` when that list changes.
    """

    def __init__(
        self,
        binary: Path,
        plugin: Path,
        settings: BrokerSettings,
        folder: Path,
        devices: Callable[[], Iterable[DeviceEntry]],
    ) -> None:
        self.binary = binary
        self.plugin = plugin
        self.settings = settings
        self.folder = folder
        self._devices = devices
        self.host = settings.host
        self.port = settings.port
        tls = settings.tls_listener
        self.tls_port: int | None = tls.port if tls else None
        self.auth_enabled = settings.auth.password_file is not None or bool(
            tls and tls.require_client_cert
        )
        self._internal: dict[str, tuple[str, str, Identity]] = {}
        """The node's own clients: user -> (password, its hash, identity)."""
        self._rewrite: asyncio.Handle | None = None
        """A rewrite of the auth files already asked for in this loop turn."""
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lines = ThrottledLog(log)
        self._child_setup = _die_with_parent()
        self.restarts = 0
        """Times mosquitto died and was started again."""
        self.tally = Tally()
        """What the plugin refused, denied and dropped."""
        self._policy = AccessPolicy(settings.auth, _no_protocol)
        """Who each user is (the roles of the rules last written)."""
        self.rules_written = 0
        """The version of the rules last written."""
        self.rules_in_force = 0
        """The version of the rules mosquitto has read (it reads them on SIGHUP)."""
        self.restarted = asyncio.Event()
        """Set once mosquitto has been started again after it died (cleared when it dies)."""

    # --- files --------------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.folder / "mosquitto.conf"

    def _config(self) -> str:
        settings = self.settings
        lines = [
            "# Written by edgetwin at every start from its broker settings; edits are lost.",
            f"user {getpass.getuser()}",  # as root mosquitto would switch to 'mosquitto'
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",
            f"max_packet_size {settings.max_packet_bytes}",
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            "persistence true",
            f"persistence_location {self.folder}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp false",
        ]
        tls = settings.tls_listener
        if tls is not None:
            lines += [
                f"listener {self.tls_port} {tls.host}",
                f"certfile {tls.cert_file.resolve()}",
                f"keyfile {tls.key_file.resolve()}",
            ]
            if tls.ca_file is not None:
                lines.append(f"cafile {tls.ca_file.resolve()}")
            if tls.require_client_cert:
                lines += ["require_certificate true", "use_identity_as_username true"]
        lines += [
            f"allow_anonymous {str(not self.auth_enabled).lower()}",  # the plugin decides
            f"plugin {self.plugin}",
            f"plugin_opt_rules {self.rules_path}",
        ]
        return "\n".join(lines) + "\n"

    @property
    def rules_path(self) -> Path:
        return self.folder / "rules"

    def _auth(self) -> AuthSettings:
        """broker.auth with the node's own clients added under their roles."""
        auth = self.settings.auth
        admins = [*auth.admins]
        mappers = dict(auth.mappers)
        for user, (_password, _hash, identity) in self._internal.items():
            if identity.role is Role.MAPPER:
                mappers[user] = identity.scope
            else:
                admins.append(user)
        return auth.model_copy(update={"admins": admins, "mappers": mappers})

    def _write_rules(self) -> None:
        """The plugin's rules (see mosquitto_plugin.c): the users, with their roles and
        password hashes (the configured users' and the node's own), and the devices."""
        self._rewrite = None
        configured = self.settings.auth.password_file
        hashes = PasswordFile.load(configured).entries if configured else {}
        hashes |= {user: entry for user, (_, entry, _) in self._internal.items()}
        auth = self._auth()
        self._policy = policy = AccessPolicy(auth, _no_protocol)
        rate = self.settings.max_messages_per_second
        self.rules_written += 1
        rows = [
            ("version", str(self.rules_written)),
            ("auth", "1" if self.auth_enabled else "0"),
            ("rate", f"{rate:g}", f"{rate * BURST_SECONDS:g}"),
        ]
        for user in sorted({*hashes, *auth.admins, *auth.mappers, *auth.devices}):
            who = policy.identity(user)
            rows.append(("user", user, who.role.value, who.scope, hashes.get(user, "-")))
        rows += [("device", device.id, device.protocol) for device in self._devices()]
        lines = ["# Written by edgetwin for its mosquitto plugin; edits are lost."]
        for row in rows:
            if any(not field.isprintable() for field in row):  # a tab or a line break
                log.error("broker rules: %s cannot be given to mosquitto", printable(row[1]))
            else:
                lines.append("\t".join(row))
        _write_private(self.rules_path, "\n".join(lines) + "\n")

    def internal_user(self, identity: Identity) -> tuple[str, str]:
        """Credentials for a client of this process (the twin, a mapper); without
        ``broker.auth`` too, where they spare it the per-client rate.

        Ask before the broker starts, and they are in its rules from the first moment;
        asked later, mosquitto knows them once it has reloaded, which this asks for.
        """
        known = self._internal.get(identity.user)
        if known is not None:
            return identity.user, known[0]
        password = secrets.token_urlsafe(24)  # random and long: few hash iterations do
        entry = hash_password(password, iterations=1000)
        self._internal[identity.user] = (password, entry, identity)
        if self._proc is not None:
            self._reload()
        return identity.user, password

    def devices_changed(self) -> None:
        """Have the auth files rewritten and mosquitto read them again, once for all the
        changes of this event-loop turn."""
        if self.auth_enabled and self._rewrite is None:
            self._rewrite = asyncio.get_running_loop().call_soon(self._reload)

    @property
    def rules_in_force_now(self) -> bool:
        """Whether mosquitto has read the rules for the devices as they are now."""
        return self._rewrite is None and self.rules_in_force == self.rules_written

    def _reload(self) -> None:
        self._write_rules()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGHUP)

    # --- the process --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = _free_port(self.host)
        tls = self.settings.tls_listener
        if tls is not None and self.tls_port == 0:
            self.tls_port = _free_port(tls.host)
        _write_private(self.conf_path, self._config())
        self._write_rules()
        await self._start()
        self._supervisor = start_guarded(self._supervise(), "mosquitto-supervisor")
        log.info(
            "embedded MQTT broker (mosquitto, pid %d) listening on %s:%d%s%s",
            self.pid or 0,
            self.host,
            self.port,
            f", TLS on {tls.host}:{self.tls_port}" if tls else "",
            ", authentication and ACL on" if self.auth_enabled else "",
        )
        return self

    async def _start(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.binary),
                "-c",
                str(self.conf_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=self._child_setup,
            )
        except OSError as exc:
            raise BrokerStartError(f"cannot start mosquitto ({self.binary}): {exc}") from exc
        try:
            await self._until_running(proc)
        except BaseException:  # timed out, exited, or cancelled while starting
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        self._proc = proc

    async def _until_running(self, proc: asyncio.subprocess.Process) -> None:
        """Until mosquitto says it runs (its listeners are open); BrokerStartError if not."""
        assert proc.stderr is not None
        said: list[str] = []
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                while not said or not _RUNNING.search(said[-1]):
                    line = await proc.stderr.readline()
                    if not line:  # it exited
                        await proc.wait()
                        raise self._start_error(proc.returncode, said)
                    said.append(line.decode(errors="replace").strip())
                    self._forward(said[-1])  # the plugin's first rules are told before this
        except TimeoutError:
            last = printable(" / ".join(said[-3:]))
            raise BrokerStartError(
                f"mosquitto did not start within {_START_TIMEOUT:g} s: {last}"
            ) from None

    def _start_error(self, code: int | None, said: list[str]) -> BrokerStartError:
        if any("Address already in use" in line for line in said):
            opening = [m for line in said if (m := _OPENING.search(line))]
            port = opening[-1].group(1) if opening else str(self.port)
            tls = self.settings.tls_listener
            host = tls.host if tls is not None and port == str(self.tls_port) else self.host
            return BrokerStartError(f"cannot listen on {host}:{port}: the port is in use")
        return BrokerStartError(
            f"mosquitto exited ({code}) at start: {printable(' / '.join(said[-3:]))}"
        )

    async def _supervise(self) -> None:
        """Forward mosquitto's log; start it again if it dies."""
        backoff = Backoff(self.settings.reconnect_max_delay)
        while True:
            proc = self._proc
            assert proc is not None
            assert proc.stderr is not None
            async for raw in proc.stderr:
                self._forward(raw.decode(errors="replace").strip())
            code = await proc.wait()
            self.restarts += 1
            self.restarted.clear()
            log.error("mosquitto exited (%d); starting it again", code)
            while True:
                await backoff.wait()
                try:
                    await self._start()
                    log.warning("mosquitto started again (pid %d)", self.pid or 0)
                    self.restarted.set()
                    break
                except BrokerStartError as exc:
                    log.error("%s", exc)  # noqa: TRY400 - the reason is the message
            backoff.reset()

    def _forward(self, line: str) -> None:
        if line.startswith(_TOLD):
            self._count(line[len(_TOLD) :].split(" "))
        elif "Error" in line or "Warning" in line:
            self._lines.write("mosquitto", line[:40], "mosquitto: %s", printable(line))
        else:
            log.debug("mosquitto: %s", printable(line))

    def _count(self, fields: list[str]) -> None:
        """One line of the plugin's: a refusal, a denial, or drops over a client's rate."""
        match [_field(f) for f in fields]:
            case ["refused", reason, client, detail] if reason in REFUSALS:
                self.tally.refuse(client, reason, detail)
            case ["denied", "publish" | "subscribe" as action, client, user, topic]:
                self.tally.deny(client, Action(action), topic, self._policy.identity(user))
            case ["rate_limited", count, client] if count.isdigit():
                self.tally.limit(client, self.settings.max_messages_per_second, int(count))
            case ["rules", version] if version.isdigit():
                self.rules_in_force = int(version)
            case _:
                log.warning("mosquitto plugin: %s", printable(" ".join(fields)))

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._supervisor)  # no restart from here on
        if self._rewrite is not None:
            self._rewrite.cancel()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.info("embedded MQTT broker (mosquitto) stopped")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _no_protocol(_device: str) -> None:
    """Roles only: the plugin has the devices' protocols."""


def _field(text: str) -> str:
    """A field of the plugin's line: percent-escaped, "-" when empty."""
    return "" if text == "-" else unquote(text, errors="replace")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it names users, or holds hashes)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
