"""A device's merged spec in the DMI's messages, as KubeEdge's edge sends them to a mapper.

KubeEdge converts a Device to ``v1beta1.Device`` with the model's defaults
merged in (``GetOverriddenDevice``), and each value of a ``configData`` to a
``google.protobuf.Any`` holding a wrapper: strings, booleans, numbers
(KubeEdge's JSON numbers all become ``FloatValue``; here whole numbers are
``Int64Value`` so that ports and offsets stay exact, both of which
mapper-framework decodes). Nested values, which KubeEdge cannot convert,
travel as their JSON text in a ``StringValue``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.wire.spec import Desired, DeviceSpecMessage, PropertySpec


def device_message(spec: DeviceSpecMessage, desired: Mapping[str, Desired]) -> pb.Device:
    """The device as a mapper gets it, whole: each property carries its desired value."""
    return pb.Device(
        name=spec.name,
        namespace=spec.namespace,
        spec=pb.DeviceSpec(
            deviceModelReference=spec.model,
            protocol=pb.ProtocolConfig(
                protocolName=spec.protocol, configData=_customized(spec.protocol_config)
            ),
            properties=[_property(spec.protocol, p, desired.get(p.name)) for p in spec.properties],
            methods=[
                pb.DeviceMethod(
                    name=str(m.get("name", "")),
                    description=str(m.get("description", "")),
                    propertyNames=[str(n) for n in m.get("propertyNames") or []],
                )
                for m in spec.methods
            ],
        ),
        status=pb.DeviceStatus(reportToCloud=True),
    )


def model_properties(spec: DeviceSpecMessage) -> dict[str, pb.ModelProperty]:
    """The model's properties as far as this device shows them, by name."""
    return {
        p.name: pb.ModelProperty(
            name=p.name,
            type=p.type,
            accessMode=p.access_mode,
            minimum=p.minimum or "",
            maximum=p.maximum or "",
            unit=p.unit or "",
        )
        for p in spec.properties
    }


def model_message(
    namespace: str, name: str, properties: Mapping[str, pb.ModelProperty]
) -> pb.DeviceModel:
    return pb.DeviceModel(
        name=name,
        namespace=namespace,
        spec=pb.DeviceModelSpec(properties=[properties[n] for n in sorted(properties)]),
    )


def digest(message: Message) -> str:
    """What a message holds, in 32 hex digits: what a mapper was given, kept to compare."""
    data = message.SerializeToString(deterministic=True)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _property(protocol: str, prop: PropertySpec, desired: Desired | None) -> pb.DeviceProperty:
    metadata = {"type": prop.type.lower(), **(desired.metadata if desired else {})}
    return pb.DeviceProperty(
        name=prop.name,
        # mapper-framework reads desired and visitors without checking they are set.
        desired=pb.TwinProperty(value=desired.value if desired else "", metadata=metadata),
        visitors=pb.VisitorConfig(protocolName=protocol, configData=_customized(prop.visitors)),
        reportCycle=prop.report_cycle,
        collectCycle=prop.collect_cycle,
        reportToCloud=prop.report_to_cloud,
    )


def _customized(config: Mapping[str, Any]) -> pb.CustomizedValue:
    data = {}
    for key, value in config.items():
        packed = any_pb2.Any()
        packed.Pack(_wrapped(value))
        data[key] = packed
    return pb.CustomizedValue(data=data)


def _wrapped(value: object) -> Message:
    if isinstance(value, bool):
        return wrappers_pb2.BoolValue(value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return wrappers_pb2.Int64Value(value=value)
    if isinstance(value, float):
        return wrappers_pb2.FloatValue(value=value)
    if isinstance(value, str):
        return wrappers_pb2.StringValue(value=value)
    return wrappers_pb2.StringValue(value=orjson.dumps(value).decode())
