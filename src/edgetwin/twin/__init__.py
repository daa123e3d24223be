"""The twin: engine, SQLite store, MQTT twin API service and manifests."""

from edgetwin.twin.catalog import Catalog, CloudView
from edgetwin.twin.engine import TwinEngine
from edgetwin.twin.manifests import load_manifests, parse_document, read_documents
from edgetwin.twin.outcome import Outcome, Publication
from edgetwin.twin.service import TwinLink, TwinService
from edgetwin.twin.state import DeviceTwin
from edgetwin.twin.store import Store

__all__ = [
    "Catalog",
    "CloudView",
    "DeviceTwin",
    "Outcome",
    "Publication",
    "Store",
    "TwinEngine",
    "TwinLink",
    "TwinService",
    "load_manifests",
    "parse_document",
    "read_documents",
]
