"""The errors edgetwin raises, rooted in one class.

Each error reads as one sentence a user understands; the CLI prints
``str(error)`` and nothing else.
"""


class EdgetwinError(Exception):
    """Base of every error edgetwin raises on purpose."""


class ConfigError(EdgetwinError):
    """The configuration file or an environment variable is wrong."""


class ManifestError(EdgetwinError):
    """A Device or DeviceModel manifest is missing, unreadable or invalid."""


class BrokerStartError(EdgetwinError):
    """The embedded MQTT broker could not start (for example, the port is in use)."""


class BrokerUnreachableError(EdgetwinError):
    """The MQTT broker could not be reached or refused the connection."""


class StoreError(EdgetwinError):
    """The SQLite store could not be opened, migrated or written."""


class CloudError(EdgetwinError):
    """The Kubernetes API refused a request or could not be reached."""


class RequestError(EdgetwinError):
    """A request over the MQTT twin API failed or got no answer."""
