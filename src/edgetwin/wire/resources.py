"""KubeEdge ``devices.kubeedge.io/v1beta1`` resources: DeviceModel, Device, DeviceStatus.

The shapes follow KubeEdge 1.23 so its manifests load unchanged. Unknown
fields are kept (``extra="allow"``) and the models dump with
``by_alias=True, exclude_unset=True``, so a document loads and dumps back to
itself. Names are checked here, because they become topic levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from edgetwin.wire.names import (
    device_id,
    name_problem,
    namespace_problem,
    property_problem,
    protocol_problem,
)

API_VERSION: Final = "devices.kubeedge.io/v1beta1"

PropertyType = Literal["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"]
AccessMode = Literal["ReadWrite", "ReadOnly"]


class KubeModel(BaseModel):
    """Camel-case JSON names, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, populate_by_name=True, frozen=False
    )

    def to_document(self) -> dict[str, Any]:
        """The JSON/YAML document, as it was loaded plus what was set since."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class ObjectMeta(KubeModel):
    name: str
    namespace: str = "default"
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    resource_version: str | None = None
    uid: str | None = None
    generation: int | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        problem = namespace_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class LocalObjectReference(KubeModel):
    name: str


class CustomizedConfig(KubeModel):
    """A protocol or visitor ``{protocolName, configData}`` pair."""

    protocol_name: str | None = None
    config_data: dict[str, Any] | None = None

    @field_validator("protocol_name")
    @classmethod
    def _check_protocol(cls, value: str | None) -> str | None:
        return _checked_protocol(value)


class TwinProperty(KubeModel):
    """A value with metadata; values are strings on the wire."""

    value: str = ""
    metadata: dict[str, str] | None = None


class ModelProperty(KubeModel):
    name: str
    description: str | None = None
    type: PropertyType = "STRING"
    access_mode: AccessMode = "ReadWrite"
    minimum: str | None = None
    maximum: str | None = None
    unit: str | None = None
    visitors: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = property_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _upper_type(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DeviceModelSpec(KubeModel):
    protocol: str | None = None
    protocol_config_data: dict[str, Any] | None = None
    properties: list[ModelProperty] = Field(default_factory=list)

    @field_validator("protocol")
    @classmethod
    def _check_protocol(cls, value: str | None) -> str | None:
        return _checked_protocol(value)

    @model_validator(mode="after")
    def _unique_properties(self) -> DeviceModelSpec:
        _check_unique(p.name for p in self.properties)
        return self


class DeviceProperty(KubeModel):
    name: str
    desired: TwinProperty | None = None
    visitors: CustomizedConfig | None = None
    report_cycle: int | None = Field(None, ge=0)
    collect_cycle: int | None = Field(None, ge=0)
    report_to_cloud: bool | None = None
    push_method: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = property_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class StateReport(KubeModel):
    report_to_cloud: bool | None = None
    report_cycle: int | None = Field(None, ge=0)


class DeviceSpec(KubeModel):
    device_model_ref: LocalObjectReference | None = None
    node_name: str | None = None
    protocol: CustomizedConfig | None = None
    properties: list[DeviceProperty] = Field(default_factory=list)
    methods: list[dict[str, Any]] | None = None
    state_report: StateReport | None = None

    @model_validator(mode="after")
    def _unique_properties(self) -> DeviceSpec:
        _check_unique(p.name for p in self.properties)
        return self


class Twin(KubeModel):
    property_name: str
    reported: TwinProperty | None = None
    observed_desired: TwinProperty | None = None


class DeviceStatusFields(KubeModel):
    """The status block: of a DeviceStatus, or of a Device on KubeEdge before 1.23."""

    twins: list[Twin] | None = None
    state: str | None = None
    last_online_time: str | None = None


class DeviceModel(KubeModel):
    api_version: Literal["devices.kubeedge.io/v1beta1"] = API_VERSION
    kind: Literal["DeviceModel"] = "DeviceModel"
    metadata: ObjectMeta
    spec: DeviceModelSpec = Field(default_factory=DeviceModelSpec)

    @property
    def key(self) -> str:
        return device_id(self.metadata.namespace, self.metadata.name)

    def property(self, name: str) -> ModelProperty | None:
        for prop in self.spec.properties:
            if prop.name == name:
                return prop
        return None


class Device(KubeModel):
    api_version: Literal["devices.kubeedge.io/v1beta1"] = API_VERSION
    kind: Literal["Device"] = "Device"
    metadata: ObjectMeta
    spec: DeviceSpec = Field(default_factory=DeviceSpec)
    status: DeviceStatusFields | None = None

    @property
    def id(self) -> str:
        return device_id(self.metadata.namespace, self.metadata.name)

    @property
    def model_name(self) -> str | None:
        ref = self.spec.device_model_ref
        return ref.name if ref else None

    @property
    def model_key(self) -> str | None:
        """The ``<namespace>/<name>`` of its DeviceModel (models live in the device's namespace)."""
        name = self.model_name
        return device_id(self.metadata.namespace, name) if name else None

    def protocol_name(self, model: DeviceModel | None) -> str | None:
        """The device's protocol, else the model's."""
        own = self.spec.protocol.protocol_name if self.spec.protocol else None
        return own or (model.spec.protocol if model else None)


class DeviceStatus(KubeModel):
    api_version: Literal["devices.kubeedge.io/v1beta1"] = API_VERSION
    kind: Literal["DeviceStatus"] = "DeviceStatus"
    metadata: ObjectMeta
    status: DeviceStatusFields = Field(default_factory=DeviceStatusFields)


Resource = DeviceModel | Device | DeviceStatus


def _checked_protocol(value: str | None) -> str | None:
    problem = protocol_problem(value) if value else None
    if problem:
        raise ValueError(problem)
    return value


def _check_unique(names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"property {name!r} is listed twice")
        seen.add(name)
