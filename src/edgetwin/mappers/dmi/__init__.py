"""KubeEdge's Device Management Interface (gRPC on a unix socket): KubeEdge's own mappers
(mapper-framework, any protocol) drive the node's devices unchanged."""

from edgetwin.mappers.dmi.server import DmiError, DmiServer

__all__ = ["DmiError", "DmiServer"]
