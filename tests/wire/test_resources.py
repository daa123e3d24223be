"""KubeEdge v1beta1 manifests load, keep unknown fields and dump back to the same document."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetwin.errors import ManifestError
from edgetwin.twin.manifests import load_manifests, parse_document, read_documents
from edgetwin.wire.resources import Device, DeviceModel, DeviceStatus
from edgetwin.wire.spec import merge_spec
from tests.manifests import KUBEEDGE_MODEL

EXAMPLES = Path(__file__).parents[2] / "examples"

KUBEEDGE_DEVICE = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: beta1-device
  namespace: default
  labels: {model: temperature-model}
  annotations: {note: kept}
spec:
  deviceModelRef: {name: temperature-model}
  nodeName: edge-node
  protocol:
    protocolName: modbus
    configData: {serialPort: /dev/ttyS0, baudRate: 9600, dataBits: 8, parity: even, stopBits: 1}
  properties:
    - name: temperature
      desired:
        value: "30"
        metadata: {type: int}
      collectCycle: 10000
      reportCycle: 10000
      reportToCloud: true
      pushMethod:
        mqtt: {address: "tcp://127.0.0.1:1883", topic: temperature, qos: 0, retained: false}
      visitors:
        protocolName: modbus
        configData: {register: HoldingRegister, offset: 2, limit: 1, scale: 1, isSwap: true,
                     isRegisterSwap: true, dataType: int}
  methods:
    - name: setValue
      propertyNames: [temperature]
  stateReport: {reportToCloud: true, reportCycle: 5000}
  futureField: {anything: [1, 2, 3]}
status:
  twins:
    - propertyName: temperature
      reported: {value: "29", metadata: {timestamp: "1700000000000", type: int}}
      observedDesired: {value: "30", metadata: {timestamp: "1700000000000"}}
  state: online
  lastOnlineTime: "2026-11-22T10:00:00Z"
"""

KUBEEDGE_STATUS = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceStatus
metadata:
  name: beta1-device
  namespace: default
  ownerReferences:
    - {apiVersion: devices.kubeedge.io/v1beta1, kind: Device, name: beta1-device, uid: abc}
status:
  twins:
    - propertyName: temperature
      reported: {value: "29", metadata: {timestamp: "1700000000000", type: int}}
  state: online
  lastOnlineTime: "2026-11-22T10:00:00Z"
"""


@pytest.mark.parametrize(
    "text", [KUBEEDGE_DEVICE, KUBEEDGE_MODEL, KUBEEDGE_STATUS], ids=["device", "model", "status"]
)
def test_manifest_dumps_back_to_the_same_document(text: str) -> None:
    document = yaml.safe_load(text)
    resource = parse_document(document)
    assert resource.to_document() == document


def test_fields_are_typed() -> None:
    device = parse_document(yaml.safe_load(KUBEEDGE_DEVICE))
    assert isinstance(device, Device)
    assert device.id == "default/beta1-device"
    assert device.spec.properties[0].desired is not None
    assert device.spec.properties[0].desired.value == "30"
    assert device.spec.properties[0].collect_cycle == 10000
    assert device.spec.state_report is not None
    assert device.spec.state_report.report_cycle == 5000
    assert device.status is not None
    assert device.status.twins is not None
    assert device.status.twins[0].observed_desired is not None
    status = parse_document(yaml.safe_load(KUBEEDGE_STATUS))
    assert isinstance(status, DeviceStatus)
    assert status.status.state == "online"


def test_merged_spec_overrides_model_key_by_key() -> None:
    model = parse_document(yaml.safe_load(KUBEEDGE_MODEL))
    device = parse_document(yaml.safe_load(KUBEEDGE_DEVICE))
    assert isinstance(model, DeviceModel)
    assert isinstance(device, Device)
    spec = merge_spec(device, model)
    assert spec.protocol_config == {
        "slaveID": 1,
        "serialPort": "/dev/ttyS0",
        "baudRate": 9600,
        "dataBits": 8,
        "parity": "even",
        "stopBits": 1,
    }
    (prop,) = spec.properties
    assert prop.visitors["offset"] == 2
    assert prop.visitors["limit"] == 1
    assert prop.visitors["isSwap"] is True
    assert (prop.collect_cycle, prop.report_cycle) == (10000, 10000)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["metadata"].update(name="Bad+Name"), "metadata.name"),
        (lambda d: d["metadata"].update(name="a/b"), "metadata.name"),
        (lambda d: d["metadata"].update(namespace="ns#"), "metadata.namespace"),
        (lambda d: d["spec"]["properties"][0].update(name="a+b"), "spec.properties[0].name"),
        (
            lambda d: d["spec"]["properties"][0].update(collectCycle=-1),
            "spec.properties[0].collectCycle",
        ),
        (lambda d: d["spec"]["properties"].append({"name": "temperature"}), "listed twice"),
        (
            lambda d: d["spec"]["protocol"].update(protocolName="mod/bus"),
            "spec.protocol.protocolName",
        ),
        (lambda d: d.update(apiVersion="devices.kubeedge.io/v1alpha2"), "apiVersion"),
        (lambda d: d.update(kind="Pod"), "kind"),
    ],
)
def test_bad_manifest_names_the_field(change, words: str) -> None:  # type: ignore[no-untyped-def]
    document = yaml.safe_load(KUBEEDGE_DEVICE)
    change(document)
    with pytest.raises(ManifestError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_document(document)


def test_read_documents_from_a_folder_and_lists(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(KUBEEDGE_MODEL + "\n---\n" + KUBEEDGE_DEVICE)
    (tmp_path / "b.yml").write_text(
        yaml.safe_dump({"kind": "List", "items": [yaml.safe_load(KUBEEDGE_STATUS)]})
    )
    (tmp_path / "notes.txt").write_text("ignored")
    kinds = [r.kind for r in load_manifests(tmp_path)]
    assert kinds == ["DeviceModel", "Device", "DeviceStatus"]


def test_examples_load() -> None:
    kinds = sorted(r.kind for r in load_manifests(EXAMPLES / "thermostat"))
    assert kinds == ["Device", "DeviceModel"]


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_documents(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        read_documents(broken)
