"""KubeEdge v1beta1 manifests as KubeEdge's users write them, shared by the tests that read
them (the wire formats) and those that apply them to a real API server."""

KUBEEDGE_MODEL = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: temperature-model, namespace: default}
spec:
  protocol: modbus
  protocolConfigData: {slaveID: 1}
  properties:
    - name: temperature
      description: temperature in degree celsius
      type: INT
      accessMode: ReadWrite
      maximum: "100"
      minimum: "1"
      unit: degree celsius
      visitors: {protocolName: modbus, configData: {register: HoldingRegister, offset: 0, limit: 1}}
"""
