"""The twin: engine, SQLite store, MQTT twin API service and manifests."""

from edgetwin.twin.engine import Outcome, Publication, TwinEngine
from edgetwin.twin.manifests import load_manifests, parse_document, read_documents
from edgetwin.twin.service import TwinLink, TwinService
from edgetwin.twin.store import Store

__all__ = [
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
