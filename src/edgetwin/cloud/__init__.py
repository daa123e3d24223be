"""The cloud sync with Kubernetes; the only layer that imports the ``kubernetes`` client."""

from edgetwin.cloud._sync import CloudSync

__all__ = ["CloudSync"]
