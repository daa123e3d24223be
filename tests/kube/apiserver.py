"""A local HTTP server that behaves like the Kubernetes API server for the resources we use.

Not a mock of our code: a stand-in for kube-apiserver, which cannot run here,
driven by the official ``kubernetes`` client and by ``kubectl``. What it
does as the real one does:

- every write bumps a cluster-wide ``resourceVersion``; lists carry it;
- watches stream chunked JSON events from a ``resourceVersion``, with
  ``BOOKMARK`` events when asked, ``timeoutSeconds``, and an ``ERROR`` event
  with code 410 (Expired) for a version older than the last compaction;
- an object entering or leaving a field selector is ADDED or DELETED for
  that watch;
- field selectors on ``metadata.name``, ``metadata.namespace`` and each
  resource's selectable fields; any other label is a 400;
- merge patch (RFC 7386); a ``metadata.resourceVersion`` in a PUT or patch
  that is not the current one is a 409, and so is creating an existing name;
- the status subresource: the main resource ignores ``status``, ``/status``
  changes only ``status``;
- deleting an object deletes the objects it owns;
- discovery (``/api``, ``/apis``, group versions), so kubectl can use it;
- 403 for chosen (verb, resource) pairs, and a mode without DeviceStatus (a
  cluster older than KubeEdge 1.23).

It runs on a thread of its own (ThreadingHTTPServer) on 127.0.0.1 and a free
port, and can be stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False
    selectable: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DEVICES = Resource(
    "devices.kubeedge.io", "v1beta1", "devices", "Device", selectable=("spec.nodeName",)
)
DEVICE_MODELS = Resource("devices.kubeedge.io", "v1beta1", "devicemodels", "DeviceModel")
DEVICE_STATUSES = Resource(
    "devices.kubeedge.io", "v1beta1", "devicestatuses", "DeviceStatus", status=True
)
BUILTIN = [
    Resource("", "v1", "namespaces", "Namespace", namespaced=False),
    Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status=True,
    ),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass
class Event:
    rv: int
    type: str
    resource: Resource
    obj: Obj
    before: Obj | None


class FakeKubeAPI:
    """The server's state and its HTTP front; ``with FakeKubeAPI() as api: api.url``."""

    def __init__(
        self,
        *,
        device_status: bool = True,
        node_selector: bool = True,
        bookmark_interval: float = 0.5,
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        self.tls = tls
        self.token = token  # when set, requests must carry "Authorization: Bearer <token>"
        self.resources = [DEVICES, DEVICE_MODELS, *BUILTIN]
        if device_status:
            self.resources.append(DEVICE_STATUSES)
        if not node_selector:
            self.resources[0] = Resource("devices.kubeedge.io", "v1beta1", "devices", "Device")
        self.bookmark_interval = bookmark_interval
        self.forbidden: set[tuple[str, str]] = set()
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.request_times: list[tuple[float, str, str]] = []  # (monotonic, method, path)
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._events: list[Event] = []
        self._rv = 1000
        self._compacted = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._connections: set[socket.socket] = set()
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(_Handler):
            server_api = api

        self._stopping = False
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every open watch, as an API server that goes away."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._cond:  # and every open connection, keep-alive ones too
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Any, ca_file: Any = None) -> Any:
        token = self.token or "test-token-not-a-secret"
        cluster: Obj = {"server": self.url}
        if ca_file is not None:
            cluster["certificate-authority"] = str(ca_file)
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": cluster}],
                    "users": [{"name": "node", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {"cluster": "fake", "user": "node", "namespace": "default"},
                        }
                    ],
                }
            )
        )
        return path

    # --- state, for tests ------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def compact(self) -> None:
        """Forget the event history: older resourceVersions now get 410 Gone."""
        with self._cond:
            self._compacted = self._rv
            self._events.clear()

    async def until(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        """Until a condition on the server's state holds: woken by every write, not polled."""

        def wait() -> None:
            with self._cond:
                if not self._cond.wait_for(condition, timeout):
                    raise TimeoutError(f"the API server's state did not get there in {timeout:g} s")

        await asyncio.to_thread(wait)

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, path, _ in self.requests if m == method and fragment in path)

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        with self._cond:
            found = self._objects.get((resource.plural, namespace, name))
            return copy.deepcopy(found) if found else None

    # --- the API --------------------------------------------------------------------------------

    def find(self, group: str, version: str, plural: str) -> Resource:
        for resource in self.resources:
            if (resource.group, resource.version, resource.plural) == (group, version, plural):
                return resource
        raise ApiError(
            404, "NotFound", f"the server could not find the requested resource ({plural})"
        )

    def check_allowed(self, verb: str, resource: Resource, subresource: str) -> None:
        name = f"{resource.plural}/{subresource}" if subresource else resource.plural
        if (verb, name) in self.forbidden or (verb, resource.plural) in self.forbidden:
            raise ApiError(
                403,
                "Forbidden",
                f'{name} is forbidden: User "system:serviceaccount:default:edgetwin" '
                f'cannot {verb} resource "{name}" in API group "{resource.group}"',
            )

    def list(self, resource: Resource, namespace: str | None, selector: str) -> Obj:
        match = _selector(resource, selector)
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (plural, ns, _), o in sorted(self._objects.items())
                if plural == resource.plural and namespace in (None, ns) and match(o)
            ]
            rv = self._rv
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if resource.namespaced:
            meta["namespace"] = namespace
        key = (resource.plural, namespace if resource.namespaced else "", name)
        with self._cond:
            if key in self._objects:
                raise ApiError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            if resource.status:
                body.pop("status", None)
            body["apiVersion"], body["kind"] = resource.api_version, resource.kind
            return self._commit(resource, key, body, None, "ADDED")

    def replace(
        self, resource: Resource, key: tuple[str, str, str], body: Obj, sub: str, patch: bool
    ) -> Obj:
        with self._cond:
            current = self._objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{key[2]}" not found')
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{key[2]}": '
                    "the object has been modified; please apply your changes to the "
                    "latest version and try again",
                )
            new = _merge(copy.deepcopy(current), body) if patch else copy.deepcopy(body)
            if sub == "status":  # only status changes through /status
                new = {**copy.deepcopy(current), "status": new.get("status")}
            elif resource.status:
                new["status"] = copy.deepcopy(current.get("status"))
                if new["status"] is None:
                    new.pop("status")
            for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                if fixed in current["metadata"]:
                    new.setdefault("metadata", {})[fixed] = current["metadata"][fixed]
            if sub != "status" and new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if new == current:
                return copy.deepcopy(current)
            return self._commit(resource, key, new, current, "MODIFIED")

    def delete(self, resource: Resource, key: tuple[str, str, str]) -> Obj:
        with self._cond:
            current = self._objects.pop(key, None)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{key[2]}" not found')
            gone = self._commit(resource, key, current, current, "DELETED", store=False)
            uid = current["metadata"]["uid"]
            for other_key, other in list(self._objects.items()):  # garbage-collect dependents
                owners = other["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    dependent = next(r for r in self.resources if r.plural == other_key[0])
                    self.delete(dependent, other_key)
            return gone

    def _commit(
        self,
        resource: Resource,
        key: tuple[str, str, str],
        obj: Obj,
        before: Obj | None,
        kind: str,
        *,
        store: bool = True,
    ) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if store:
            self._objects[key] = obj
        self._events.append(Event(self._rv, kind, resource, copy.deepcopy(obj), before))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        selector: str,
        since: str,
        bookmarks: bool,
        timeout: float,
    ) -> Iterator[Obj]:
        """The events of one watch request, as the API server sends them."""
        match = _selector(resource, selector)
        deadline = time.monotonic() + timeout
        with self._cond:
            if since in ("", "0"):
                start = self._rv
                initial = [
                    copy.deepcopy(o)
                    for (p, ns, _), o in sorted(self._objects.items())
                    if p == resource.plural and namespace in (None, ns) and match(o)
                ]
            else:
                start, initial = int(since), []
                if start < self._compacted:
                    yield {
                        "type": "ERROR",
                        "object": ApiError(
                            410, "Expired", f"too old resource version: {start} ({self._compacted})"
                        ).status(),
                    }
                    return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        last_bookmark = time.monotonic()
        position = start
        while True:
            with self._cond:
                pending = [e for e in self._events if e.rv > position]
                if not pending:
                    wait = min(deadline, last_bookmark + self.bookmark_interval) - time.monotonic()
                    if not self._stopping and wait > 0:
                        self._cond.wait(wait)
                    pending = [e for e in self._events if e.rv > position]
                stopping, rv = self._stopping, self._rv
            if stopping:
                return
            for event in pending:
                position = event.rv
                if event.resource.plural != resource.plural:
                    continue
                ns = event.obj["metadata"].get("namespace")
                if namespace not in (None, ns):
                    continue
                now, was = match(event.obj), event.before is not None and match(event.before)
                kind = event.type
                if kind == "MODIFIED" and now != was:
                    kind = "ADDED" if now else "DELETED"
                elif not (now or (kind == "DELETED" and was)):
                    continue
                yield {"type": kind, "object": copy.deepcopy(event.obj)}
            if time.monotonic() >= deadline:
                return
            if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                last_bookmark = time.monotonic()
                position = max(position, rv)
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": resource.kind,
                        "apiVersion": resource.api_version,
                        "metadata": {"resourceVersion": str(position)},
                    },
                }

    def discovery(self, path: str) -> Obj:
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url}
                ],
            }
        groups: dict[str, list[str]] = {}
        for r in self.resources:
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)

        def group(name: str) -> Obj:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [group(g) for g in groups],
            }
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **group(parts[1])}
        group_name, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        entries = []
        for r in self.resources:
            if (r.group, r.version) != (group_name, version):
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            entries.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
            if r.status:
                entries.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not entries:
            raise ApiError(404, "NotFound", f"no resources in {path}")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group_name}/{version}" if group_name else version,
            "resources": entries,
        }


def _selector(resource: Resource, selector: str) -> Any:
    terms = []
    for term in filter(None, selector.split(",")):
        negate = "!=" in term
        field, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
        if field not in ("metadata.name", "metadata.namespace", *resource.selectable):
            raise ApiError(
                400,
                "BadRequest",
                f'"{field}" is not a known field selector: only '
                f'"metadata.name", "metadata.namespace"',
            )
        terms.append((field.split("."), value, negate))

    def match(obj: Obj) -> bool:
        for path, value, negate in terms:
            found: Any = obj
            for part in path:
                found = found.get(part) if isinstance(found, dict) else None
            if ((found or "") == value) == negate:
                return False
        return True

    return match


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Go's net/http (the real API server) does
    server_api: FakeKubeAPI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def setup(self) -> None:
        super().setup()
        with self.server_api._cond:
            self.server_api._connections.add(self.connection)

    def finish(self) -> None:
        with self.server_api._cond:
            self.server_api._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.server_api
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        api.requests.append((method, url.path, query))
        api.request_times.append((time.monotonic(), method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            self._check_token()
            if url.path in ("/api", "/apis") or (method == "GET" and _is_discovery(url.path)):
                self._send(200, api.discovery(url.path))
                return
            if url.path.startswith("/openapi") or url.path == "/version":
                self._send(404, ApiError(404, "NotFound", "not served here").status())
                return
            self._route(api, method, url.path, query, json.loads(raw) if raw else {})
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _check_token(self) -> None:
        token = self.server_api.token
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if token and (scheme.lower() != "bearer" or given != token):  # schemes are case-blind
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(
        self, api: FakeKubeAPI, method: str, path: str, query: dict[str, list[str]], body: Obj
    ) -> None:
        parts = path.strip("/").split("/")
        group, version, rest = (
            ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        )
        namespace: str | None = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = api.find(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not (sub == "status" and resource.status):
            raise ApiError(404, "NotFound", f"no subresource {sub}")

        def arg(key: str) -> str:
            return query.get(key, [""])[0]

        verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        if verb == "list" and arg("watch") in ("true", "1"):
            verb = "watch"
        api.check_allowed(verb, resource, sub)
        ns = namespace or ""
        if verb == "watch":
            events = api.watch(
                resource,
                namespace,
                arg("fieldSelector"),
                arg("resourceVersion"),
                arg("allowWatchBookmarks") == "true",
                float(arg("timeoutSeconds") or 1800),
            )
            self._stream(events)
        elif verb == "list":
            self._send(200, api.list(resource, namespace, arg("fieldSelector")))
        elif verb == "create":
            self._send(201, api.create(resource, ns, body))
        elif name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs a name")
        elif verb == "get":
            found = api.get(resource, ns, name)
            if found is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            self._send(200, found if not sub else {**found})
        elif verb == "delete":
            self._send(200, api.delete(resource, (resource.plural, ns, name)))
        else:
            kind = self.headers.get("Content-Type", "")
            if verb == "patch" and "json-patch" in kind:
                raise ApiError(415, "UnsupportedMediaType", f"{kind} is not supported here")
            self._send(
                200, api.replace(resource, (resource.plural, ns, name), body, sub, verb == "patch")
            )

    def _send(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[Obj]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _is_discovery(path: str) -> bool:
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) in (2, 3))
