"""One settings model, built of small sections, fed by a YAML file and the environment.

Every field has a default, so ``edgetwin run`` with no file runs a standalone
node. Environment variables override the file: ``EDGETWIN_<SECTION>__<FIELD>``,
for example ``EDGETWIN_BROKER__PORT=1884``; command-line flags override both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from edgetwin.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSettings(_Section):
    name: str = Field(
        default_factory=socket.gethostname,
        description="This node's name; only devices whose spec.nodeName is this name belong here.",
    )
    data_dir: Path = Field(Path(), description="Where the SQLite file lives.")


class TlsSettings(_Section):
    ca_file: Path | None = Field(
        None, description="CA bundle that signed the broker's certificate."
    )
    cert_file: Path | None = Field(None, description="Client certificate, for mutual TLS.")
    key_file: Path | None = Field(None, description="Client key, for mutual TLS.")
    insecure: bool = Field(
        default=False, description="Skip the broker hostname check (testing only)."
    )


class AuthSettings(_Section):
    """Who may use the embedded broker, and for what (see ``edgetwin acl``)."""

    password_file: Path | None = Field(
        None,
        description=(
            "Users and salted password hashes (mosquitto_passwd format). Setting it, or "
            "requiring client certificates, refuses anonymous clients and turns the ACL on."
        ),
    )
    admins: list[str] = Field(
        default_factory=list, description="Users who may do everything (the CLI, tools)."
    )
    mappers: dict[str, str] = Field(
        default_factory=dict,
        description="User -> protocol: a mapper may serve only that protocol's devices.",
    )
    devices: dict[str, str] = Field(
        default_factory=dict,
        description="User -> <namespace>/<name>: a device may use only its own twin topics.",
    )


class TlsListenerSettings(_Section):
    """A TLS listener of the embedded broker, beside the plain one."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8883, ge=0, le=65535, description="Port (0: any free port).")
    cert_file: Path = Field(description="The broker's certificate (PEM, chain first).")
    key_file: Path = Field(description="The broker's private key (PEM).")
    ca_file: Path | None = Field(
        None, description="CA bundle that client certificates must chain to."
    )
    require_client_cert: bool = Field(
        default=False,
        description="Refuse clients without a certificate; a certificate's CN is the user name.",
    )


class BrokerSettings(_Section):
    embedded: bool = Field(
        default=True, description="Run an embedded broker; false means use an external one."
    )
    engine: Literal["auto", "mosquitto", "amqtt"] = Field(
        "auto",
        description="The embedded broker: mosquitto as a child process the node configures "
        "and restarts, or amqtt in the node's process; auto takes mosquitto if its binary "
        "is found and edgetwin was installed with its plugin for it.",
    )
    mosquitto: Path | None = Field(
        None, description="The mosquitto binary (default: on PATH, or /usr/sbin/mosquitto)."
    )
    host: str = Field("127.0.0.1", description="Broker host (the embedded one binds here).")
    port: int = Field(1883, ge=0, le=65535, description="Broker port (0: any free port).")
    username: str | None = Field(None, description="Username for an external broker.")
    password: SecretStr | None = Field(None, description="Password for an external broker.")
    tls: TlsSettings | None = Field(None, description="TLS to an external broker.")
    keepalive: int = Field(30, ge=5, description="MQTT keep-alive in seconds.")
    reconnect_max_delay: float = Field(
        10.0, gt=0, description="Upper bound of the reconnect backoff, seconds."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls_listener: TlsListenerSettings | None = Field(
        None, description="Also listen with TLS (embedded broker)."
    )
    max_messages_per_second: float = Field(
        1000.0,
        gt=0,
        description="Most publications per second one client may send (burst: 2 s); over "
        "it they are dropped, the first each second answered 429 if a twin request; "
        "logged-in admins and mappers are not limited.",
    )
    max_packet_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=268_435_455,
        description="Largest MQTT packet the embedded broker takes; a client that announces "
        "a bigger one is disconnected before it is read.",
    )


class StoreSettings(_Section):
    file_name: str = Field("edgetwin.db", description="SQLite file name inside node.data_dir.")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL",
        description="SQLite synchronous mode: FULL survives power loss, NORMAL process crashes.",
    )
    max_batch: int = Field(
        2000, ge=1, description="Most updates written in one transaction (group commit)."
    )


class TwinSettings(_Section):
    max_payload_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest MQTT request payload the twin accepts."
    )
    max_value_length: int = Field(
        64 * 1024, ge=1, description="Longest property value, in UTF-8 characters."
    )
    max_properties_per_update: int = Field(
        1000, ge=1, description="Most properties one twin/update may carry."
    )
    max_devices: int = Field(10_000, ge=1, description="Most devices this node serves.")
    max_updates_per_device_per_second: float = Field(
        1000.0,
        gt=0,
        description="Most twin/update and state/update requests one device may make a second "
        "(two seconds' worth may come at once); over it, one a second is answered 429 and "
        "the rest are dropped unread, so that one flooding device cannot starve the others "
        "(bench/flood.py).",
    )
    write_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a desired value may wait to be read back from the device before "
        "its write is reported timed out. A DeviceModel's annotation "
        "edgetwin.io/write-timeout and a Device property's desired.metadata.writeTimeout "
        "(e.g. 10s, 500ms) override it.",
    )
    max_properties_per_device: int = Field(
        1000, ge=1, description="Most properties one device (its model) may have."
    )
    result_qos: Literal[0, 1] = Field(
        0,
        description=(
            "QoS of results and documents (KubeEdge's eventbus default is 0). Deltas, specs "
            "and membership updates always go at QoS 1."
        ),
    )


class HistorySettings(_Section):
    """The history of accepted changes, kept in the twin's SQLite file (``edgetwin history``)."""

    enabled: bool = Field(
        default=True,
        description="Keep a history of every accepted change: desired and reported values, "
        "state, writes' outcomes and Device changes.",
    )
    max_rows: int = Field(
        1_000_000,
        ge=1000,
        description="Most changes kept for the whole node (about 80 MB on disk: 79 bytes a "
        "change, measured); the oldest go first.",
    )
    max_age: float = Field(
        7 * 86400.0, gt=0, description="Seconds a change is kept (default: a week)."
    )


class CloudSettings(_Section):
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig of the cluster; setting it turns the cloud sync on."
    )
    in_cluster: bool = Field(
        default=False, description="Use the pod's service-account credentials instead."
    )
    service_account_dir: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount"),
        description="Where the pod's service-account token and CA are (with in_cluster).",
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description=(
            "Namespaces whose devices to follow; none: the kubeconfig context's namespace "
            "(in a pod, the pod's; else default), as kubectl does."
        ),
    )
    all_namespaces: bool = Field(
        default=False,
        description=(
            "Follow this node's devices in every namespace (needs the ClusterRole in "
            "crds/rbac-all-namespaces.yaml); instead of namespaces."
        ),
    )
    watch_timeout: int = Field(
        300, ge=1, description="Seconds a watch request stays open before it is renewed."
    )
    retry_max_delay: float = Field(
        30.0, gt=0, description="Upper bound of the backoff after API errors, seconds."
    )
    status_interval: float = Field(
        1.0, gt=0, description="Least time between two status writes for one device, seconds."
    )
    rate_limit: float = Field(
        20.0, gt=0, description="Most status requests per second for the whole node."
    )

    @property
    def enabled(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.all_namespaces and self.namespaces:
            raise ValueError("namespaces and all_namespaces exclude each other: set one")
        return self


class DmiSettings(_Section):
    """KubeEdge's Device Management Interface: KubeEdge's mappers (mapper-framework) register
    on this socket and serve the devices of their protocol."""

    enabled: bool = Field(default=False, description="Serve the DMI socket.")
    socket: Path = Field(
        Path("/etc/kubeedge/dmi.sock"),
        description="The unix socket KubeEdge's mappers dial (their common.edgecore_sock).",
    )
    socket_mode: int = Field(
        0o660,
        ge=0,
        le=0o777,
        description="Permissions of the socket: who may connect is who may register a mapper "
        "and report for its devices.",
    )
    call_timeout: float = Field(
        5.0, gt=0, description="Seconds a call to a mapper may take before it is retried."
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request a mapper may send."
    )
    allowed_uids: list[int] = Field(
        default_factory=lambda: sorted({0, os.getuid()}),
        description="Users (uid, from the socket's SO_PEERCRED) whose processes may use the "
        "socket; by default root and the node's own user.",
    )
    allowed_gids: list[int] = Field(
        default_factory=list,
        description="Groups (gid) whose processes may use the socket too, whatever their user.",
    )
    rate: float = Field(
        500.0,
        gt=0,
        description="Requests a second each mapper process may make, sustained: a report a "
        "second from 500 devices, ~40 % of a core here (bench/dmi.py; edgecore allows 1 a "
        "second for all mappers together).",
    )
    burst: int = Field(
        1000, ge=1, description="Requests a mapper process may make at once above its rate."
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field(
        "text", description="text for people, json (one object a line) for log collectors."
    )


class HealthSettings(_Section):
    enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    host: str = Field("127.0.0.1", description="Address of the health and metrics endpoint.")
    port: int = Field(9464, ge=0, le=65535, description="Its port (0: any free port).")
    page: bool = Field(
        default=False,
        description="Also serve a read-only page of the devices at / (their values, writes and "
        "history plots): off by default, as it shows every device to whoever reaches the port.",
    )


class Settings(_Section):
    """All of edgetwin's settings."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    twin: TwinSettings = Field(default_factory=TwinSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    dmi: DmiSettings = Field(default_factory=DmiSettings)
    manifests: Path | None = Field(
        None, description="A folder or file of Device/DeviceModel YAML loaded at start."
    )
    mappers: list[str] = Field(
        default_factory=list,
        description="Protocol mappers to run inside the node, by protocol (e.g. [modbus, mqtt]).",
    )

    @property
    def database_path(self) -> Path:
        return self.node.data_dir / self.store.file_name


DEFAULTS = Settings()
"""Every setting's default, for code that takes one as an argument: each default's one home
is its Field above."""

ENV_PREFIX = "EDGETWIN_"


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None, **overrides: object
) -> Settings:
    """Settings from a YAML file (optional), then the environment, then explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        data = loaded or {}
    _merge(data, environment_settings(os.environ if environ is None else environ))
    _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_first_error(exc)}") from None


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGETWIN_BROKER__PORT=1884`` as ``{"broker": {"port": "1884"}}``."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        *sections, name = key[len(ENV_PREFIX) :].lower().split("__")
        target = out
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"environment variable {key} sets a key inside a value")
        target[name] = value
    return out


def _merge(target: dict[str, Any], changes: Mapping[str, object]) -> None:
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = dict(value)
        else:
            target[key] = value


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"
