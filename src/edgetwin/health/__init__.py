"""The node's health and metrics endpoint: /metrics (Prometheus), /healthz, /readyz."""

from edgetwin.health._metrics import NodeMetrics, Observed
from edgetwin.health._server import HealthServer

__all__ = ["HealthServer", "NodeMetrics", "Observed"]
