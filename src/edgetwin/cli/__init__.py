"""The ``edgetwin`` command: a thin wrapper over the node and the MQTT twin API."""

from edgetwin.cli._main import main

__all__ = ["main"]
