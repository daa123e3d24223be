"""KubeEdge's Device Management Interface (gRPC on a unix socket): KubeEdge's own mappers
(mapper-framework, any protocol) drive the node's devices unchanged."""

import os

# gRPC's fork handlers (on by default) run in every child the node forks, its mosquitto
# among them, and could abort it there ("epoll_wait error: Bad file descriptor", seen in the
# suite once in ~460 starts). No child of the node uses gRPC: off, before gRPC is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from edgetwin.mappers.dmi.server import DmiError, DmiServer

__all__ = ["DmiError", "DmiServer"]
