"""edgetwin: an edge-side device twin and IoT bridge.

The public names are re-exported here; modules below are private layers.
"""

from edgetwin.config import Settings, load_settings
from edgetwin.errors import (
    BrokerStartError,
    BrokerUnreachableError,
    ConfigError,
    EdgetwinError,
    ManifestError,
    RequestError,
    StoreError,
)

__all__ = [
    "BrokerStartError",
    "BrokerUnreachableError",
    "ConfigError",
    "EdgetwinError",
    "ManifestError",
    "RequestError",
    "Settings",
    "StoreError",
    "load_settings",
]
__version__ = "0.1.0"
