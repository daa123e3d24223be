"""Protocol mappers: plugins that speak only the MQTT twin API (see edgetwin.wire)."""
