"""A device's merged spec: what a mapper needs to serve it, with no local device list.

The twin publishes it retained on :func:`edgetwin.wire.topics.spec_topic`.
Model settings are defaults; the device overrides them key by key
(``protocol.configData`` over the model's ``protocolConfigData``, a device
property's ``visitors.configData`` over the model property's visitors).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict
from pydantic.dataclasses import dataclass

from edgetwin.wire.resources import AccessMode, Device, DeviceModel, PropertyType

DEFAULT_CYCLE_MS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class PropertySpec:
    """One property of the spec message.

    A slotted dataclass, not a model: a mapper keeps one per property of every device
    it serves, and a model instance cost ~1 KB more (its ``__dict__`` and the set of
    fields it was given), 8 of the 9.6 KB a device of the Modbus test model took."""

    name: str
    type: PropertyType
    access_mode: AccessMode
    minimum: str | None = None
    maximum: str | None = None
    unit: str | None = None
    visitors: dict[str, Any]
    collect_cycle: int
    report_cycle: int
    report_to_cloud: bool


class DeviceSpecMessage(BaseModel):
    """The retained spec message; ``properties`` are the device's twins."""

    model_config = ConfigDict(frozen=True)

    id: str
    namespace: str
    name: str
    model: str
    node: str | None = None
    protocol: str
    protocol_config: dict[str, Any]
    properties: list[PropertySpec]
    methods: list[dict[str, Any]] = []


class Desired(NamedTuple):
    """A property's desired value as the twin has it, with its metadata (the Device's own
    ``desired.metadata``, and ``timestamp`` where it has none): what KubeEdge hands a
    mapper with the device."""

    value: str
    metadata: dict[str, str]


def merge_spec(device: Device, model: DeviceModel, node: str | None = None) -> DeviceSpecMessage:
    """Merge a device with its model; only properties the model defines are kept.

    ``node`` is the node serving the device (its ``nodeName`` if not given), so
    mappers on a broker shared by several nodes serve only their own node's devices.
    """
    by_name = {p.name: p for p in device.spec.properties}
    properties = []
    for model_prop in model.spec.properties:
        own = by_name.get(model_prop.name)
        if own is None and device.spec.properties:
            continue
        model_visitors = _config_of(model_prop.visitors)
        own_visitors = (own.visitors.config_data if own and own.visitors else None) or {}
        collect = (own.collect_cycle if own else None) or DEFAULT_CYCLE_MS
        properties.append(
            PropertySpec(
                name=model_prop.name,
                type=model_prop.type,
                access_mode=model_prop.access_mode,
                minimum=model_prop.minimum,
                maximum=model_prop.maximum,
                unit=model_prop.unit,
                visitors={**model_visitors, **own_visitors},
                collect_cycle=collect,
                report_cycle=(own.report_cycle if own else None) or collect,
                report_to_cloud=bool(own.report_to_cloud) if own else False,
            )
        )
    own_protocol = device.spec.protocol
    return DeviceSpecMessage(
        id=device.id,
        namespace=device.metadata.namespace,
        name=device.metadata.name,
        model=model.metadata.name,
        node=node or device.spec.node_name,
        protocol=device.protocol_name(model) or "",
        protocol_config={
            **(model.spec.protocol_config_data or {}),
            **((own_protocol.config_data if own_protocol else None) or {}),
        },
        properties=properties,
        methods=device.spec.methods or [],
    )


def _config_of(visitors: dict[str, Any] | None) -> dict[str, Any]:
    """A model property's visitors: ``{protocolName, configData}`` or a bare config mapping."""
    if not visitors:
        return {}
    config = visitors.get("configData")
    if isinstance(config, dict):
        return config
    return {k: v for k, v in visitors.items() if k != "protocolName"}
