"""The official ``kubernetes`` client behind async calls: the only module that imports it.

The client is blocking (urllib3), so each call runs on a worker thread and a
watch reads its stream on one; :meth:`WatchStream.close` interrupts a read
that is blocked, so shutdown does not wait for the server. Errors come out
as the classes in :mod:`edgetwin.cloud._errors`, never as the client's own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

from edgetwin.cloud._errors import (
    ApiUnavailableError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GoneError,
    NotFoundError,
)
from edgetwin.errors import CloudError

log = logging.getLogger(__name__)

GROUP = "devices.kubeedge.io"
VERSION = "v1beta1"

Obj = dict[str, Any]


class KubeApi:
    """The DeviceModel, Device and DeviceStatus calls the sync needs."""

    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        in_cluster: bool = False,
        service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount"),
    ) -> None:
        configuration = client.Configuration()
        try:
            if in_cluster:  # KUBERNETES_SERVICE_HOST/PORT, and the pod's token and CA
                incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                    token_filename=str(service_account_dir / "token"),
                    cert_filename=str(service_account_dir / "ca.crt"),
                ).load_and_set(configuration)
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig) if kubeconfig else None,
                    client_configuration=configuration,
                )
        except (config.ConfigException, OSError, ValueError) as exc:
            source = (
                f"the service account in {service_account_dir}"
                if in_cluster
                else f"kubeconfig {kubeconfig}"
            )
            raise CloudError(f"cannot load {source}: {exc}") from exc
        configuration.retries = False  # the sync has its own backoff
        self.server = configuration.host
        self.namespace = _default_namespace(kubeconfig, in_cluster, service_account_dir)
        """The namespace kubectl would use with these credentials."""
        self._api_client = client.ApiClient(configuration)
        self._objects = client.CustomObjectsApi(self._api_client)

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[..., object], *args: object, **kwargs: object) -> Obj:
        """Run one blocking call on a worker thread; its JSON answer as a dict."""
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs, _request_timeout=(5, 30))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc) from exc
        if isinstance(result, dict):
            return result
        to_dict = getattr(result, "to_dict", None)
        return to_dict() if callable(to_dict) else {}

    def _lister(
        self, plural: str, namespace: str | None
    ) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The list call and its arguments: in one namespace, or in all (None)."""
        if namespace is None:
            return self._objects.list_cluster_custom_object, (GROUP, VERSION, plural)
        return self._objects.list_namespaced_custom_object, (GROUP, VERSION, namespace, plural)

    async def list(
        self, plural: str, namespace: str | None, field_selector: str = ""
    ) -> tuple[list[Obj], str]:
        """The objects and the list's resourceVersion, to watch from."""
        fn, args = self._lister(plural, namespace)
        body = await self._call(fn, *args, field_selector=field_selector)
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def watch(
        self,
        plural: str,
        namespace: str | None,
        resource_version: str,
        field_selector: str,
        timeout: int,
    ) -> WatchStream:
        fn, args = self._lister(plural, namespace)
        return WatchStream(
            fn,
            args,
            {
                "field_selector": field_selector,
                "resource_version": resource_version,
                "allow_watch_bookmarks": True,
                "timeout_seconds": timeout,
                "_request_timeout": (5, timeout + 30),
            },
        )

    async def get(self, plural: str, namespace: str, name: str) -> Obj:
        return await self._call(
            self._objects.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
        )

    async def create(self, plural: str, namespace: str, body: Obj) -> Obj:
        return await self._call(
            self._objects.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body
        )

    async def patch(
        self, plural: str, namespace: str, name: str, patch: Obj, *, status: bool = False
    ) -> Obj:
        """A JSON merge patch of the object, or of its status subresource."""
        method = (
            self._objects.patch_namespaced_custom_object_status
            if status
            else self._objects.patch_namespaced_custom_object
        )
        return await self._call(method, GROUP, VERSION, namespace, plural, name, patch)

    async def delete(self, plural: str, namespace: str, name: str, uid: str) -> Obj:
        """Delete the object, if it is still the one with this ``uid`` (else a conflict)."""
        options = {"preconditions": {"uid": uid}}
        return await self._call(
            self._objects.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body=options,
        )

    async def served_resources(self) -> set[str]:
        """What the cluster serves in devices.kubeedge.io/v1beta1: plurals, and subresources
        as ``plural/status`` (whether there is a DeviceStatus, and whether it has a status)."""
        listing = await self._call(self._objects.get_api_resources, GROUP, VERSION)
        return {str(resource["name"]) for resource in listing.get("resources") or []}


class WatchStream:
    """``async for kind, obj in stream``: one watch request's events, read on a worker thread.

    :meth:`close` ends a read that waits for the server by shutting the response's
    socket, also when it comes while the request is still being sent: whichever of the
    two, the request or the close, comes second shuts it (:class:`_Shutter`), so no
    thread is left waiting for the server's next event (up to the watch timeout) at
    shutdown. A stream stopped between reads is closed at once, which closes its response.
    """

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Obj) -> None:
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._shutter = _Shutter()
        request = functools.wraps(fn)(functools.partial(self._shutter.request, fn))
        self._events = self._watch.stream(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        self._reading = False

    def __aiter__(self) -> AsyncIterator[tuple[str, Obj]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, Obj]]:
        try:
            while True:
                self._reading = True
                try:
                    event = await asyncio.to_thread(next, self._events, None)
                except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                    if self._shutter.closed:
                        return
                    raise translate(exc) from exc
                self._reading = False
                if event is None:
                    return
                yield str(event["type"]), event["raw_object"]
        finally:
            self.close()
            if not self._reading:  # between reads: the stream's own finally closes its
                self._events.close()  # response now (a read in flight ends on its thread)

    def close(self) -> None:
        """Stop the stream, interrupting a read that waits for the server."""
        self._watch.stop()  # type: ignore[no-untyped-call]
        self._shutter.close()


class _Shutter:
    """The response of a watch request, shut when the stream closes, whichever comes first.

    Apart from :class:`WatchStream` (which holds the stream that holds this), so that
    the two form no reference cycle: a stream let go of is finalised, and its response
    closed, at once, not by a later garbage collection (which warned of an open socket).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: Any = None
        self.closed = False

    def request(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        response = fn(*args, **kwargs)
        with self._lock:
            self._response = response
            closed = self.closed
        if closed:
            _shut(response)
        return response

    def close(self) -> None:
        with self._lock:
            self.closed = True
            response = self._response
        if response is not None:
            _shut(response)


def _shut(response: Any) -> None:  # noqa: ANN401 - urllib3's response
    """Shut the socket under a response, so a read blocked on it returns at once."""
    try:
        response.shutdown()
    except (ValueError, OSError):  # the read has ended, the socket gone: nothing to stop
        response.close()


def _default_namespace(kubeconfig: Path | None, in_cluster: bool, service_account_dir: Path) -> str:
    """The current context's namespace, or in a pod the pod's own; else ``default``."""
    try:
        if in_cluster:
            return (service_account_dir / "namespace").read_text().strip() or "default"
        _, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except (config.ConfigException, OSError):
        return "default"
    return str((current or {}).get("context", {}).get("namespace") or "default")


def translate(exc: Exception) -> CloudError:
    """One of our errors for what the client raised."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        reason = _reason(exc)
        table: dict[int, type[CloudError]] = {
            400: BadRequestError,
            403: ForbiddenError,
            404: NotFoundError,
            409: ConflictError,
            410: GoneError,
            422: BadRequestError,
        }
        kind = table.get(status, ApiUnavailableError)
        return kind(f"{status} {reason}")
    return ApiUnavailableError(f"the API server cannot be reached: {exc}")


def _reason(exc: Any) -> str:  # noqa: ANN401 - the client's ApiException is untyped
    try:
        body = orjson.loads(exc.body or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "")
