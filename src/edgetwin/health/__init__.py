"""The node's health and metrics endpoint: /metrics (Prometheus), /healthz, /readyz, and
(``health.page``) a read-only page of the devices."""

from edgetwin.health._metrics import NodeMetrics, Observed
from edgetwin.health._page import page_routes
from edgetwin.health._server import Handler, HealthServer, Response, always

__all__ = [
    "Handler",
    "HealthServer",
    "NodeMetrics",
    "Observed",
    "Response",
    "always",
    "page_routes",
]
