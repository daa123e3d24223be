"""The cloud sync with Kubernetes; the only layer that imports the ``kubernetes`` client."""

from edgetwin.cloud._ledger import CloudLedger, device_status
from edgetwin.cloud._sync import CloudSync

__all__ = ["CloudLedger", "CloudSync", "device_status"]
