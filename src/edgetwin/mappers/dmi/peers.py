"""Who is on the other end of the DMI socket: each connection's process, from the kernel.

gRPC's Python server does not tell a handler which process called it. So
the public socket is ours: each connection is accepted here, its peer's
pid, uid and gid read with ``SO_PEERCRED`` (the kernel's word, which a
client cannot forge), and its bytes passed on to gRPC's own socket in a
folder only the node's user can enter. The connection to gRPC is bound to
an abstract name of its own, which gRPC gives as the call's peer
(``unix-abstract:…``), so a handler finds the credentials of its caller
with :meth:`PeerSockets.peer`. A refused peer is not cut off: its calls are
answered with a reason, which tells its owner what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CHUNK = 65536
ABSTRACT = "unix-abstract:"


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


class PeerSockets:
    """``async with PeerSockets(public)``: ``public`` served, gRPC to listen on :attr:`inner`."""

    def __init__(self, public: Path) -> None:
        self.public = public
        self.inner = Path()
        """Where gRPC listens: in a folder of mode 0700, made on entering."""
        self._names = itertools.count()
        self._prefix = f"edgetwin-dmi-{os.getpid()}-{os.urandom(4).hex()}-"
        self._peers: dict[str, Peer] = {}
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self.inner = Path(tempfile.mkdtemp(prefix=".edgetwin-dmi-", dir=self.public.parent))
        self.inner /= "grpc.sock"
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.public))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        # Closed, not cancelled: asyncio logs a connection's task that ends cancelled.
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        shutil.rmtree(self.inner.parent, ignore_errors=True)

    def peer(self, grpc_peer: str) -> Peer | None:
        """The process behind a call, from its ``context.peer()``."""
        return self._peers.get(grpc_peer.removeprefix(ABSTRACT))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._writers.add(writer)
        name = f"{self._prefix}{next(self._names)}"
        inner_writer: asyncio.StreamWriter | None = None
        try:
            own = writer.get_extra_info("socket")
            self._peers[name] = Peer(
                *_CREDENTIALS.unpack(
                    own.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
                )
            )
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                inner.bind("\0" + name)
                inner.setblocking(False)  # noqa: FBT003 - its one argument
                await asyncio.get_running_loop().sock_connect(inner, str(self.inner))
            except OSError:
                inner.close()
                raise
            inner_reader, inner_writer = await asyncio.open_unix_connection(sock=inner)
            self._writers.add(inner_writer)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except OSError as exc:
            log.debug("DMI: a connection ended: %s", exc)
        finally:
            self._peers.pop(name, None)
            for end in (writer, inner_writer):
                if end is not None:
                    end.close()
                    self._writers.discard(end)
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
