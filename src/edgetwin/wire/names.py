"""Checks for the names that end up in MQTT topics and SQLite keys.

Namespaces and names follow Kubernetes (DNS-1123), which also keeps MQTT
wildcards (``+``, ``#``) and level separators (``/``) out of every topic the
twin builds from them.
"""

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PROPERTY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9_])?")
_PROTOCOL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def namespace_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes namespace, or None if it is one."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        return f"namespace {value!r} must be a DNS-1123 label (a-z, 0-9, '-'; at most 63)"
    return None


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes object name, or None if it is one."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        return f"name {value!r} must be a DNS-1123 subdomain (a-z, 0-9, '-', '.'; at most 253)"
    return None


def property_problem(value: str) -> str | None:
    """Why ``value`` is not a usable property name, or None if it is one."""
    if len(value) > 128 or not _PROPERTY.fullmatch(value):
        return f"property name {value!r} must be 1-128 of A-Z, a-z, 0-9, '.', '_', '-'"
    return None


def protocol_problem(value: str) -> str | None:
    """Why ``value`` is not a usable protocol name, or None if it is one."""
    if len(value) > 63 or not _PROTOCOL.fullmatch(value):
        return f"protocol name {value!r} must be 1-63 of A-Z, a-z, 0-9, '.', '_', '-'"
    return None


def device_id(namespace: str, name: str) -> str:
    """The twin's id for a device: ``<namespace>/<name>``, two topic levels."""
    return f"{namespace}/{name}"


def split_device_id(value: str) -> tuple[str, str]:
    """Split and check ``<namespace>/<name>``; raises ValueError with the reason."""
    parts = value.split("/")
    if len(parts) != 2:
        raise ValueError(f"device id {value!r} must be <namespace>/<name>")
    namespace, name = parts
    problem = namespace_problem(namespace) or name_problem(name)
    if problem:
        raise ValueError(problem)
    return namespace, name
