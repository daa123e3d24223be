"""A read-only page of the node's devices, and the JSON it reads (``health.page``).

``/`` lists each device (state, last seen) and each property's desired and
reported value and where its write stands; picking a property plots its
recent history with uPlot (vendored in ``static/``, MIT, from the npm
registry: no build chain). The page's script builds everything with
``textContent``: values come from devices and are never read as HTML, and
the server's Content-Security-Policy lets the page load nothing from
elsewhere.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from edgetwin.errors import StoreError
from edgetwin.health._metrics import Observed
from edgetwin.health._server import Handler, Response, always
from edgetwin.twin.history import history_event
from edgetwin.twin.writes import write_status
from edgetwin.wire.messages import now_ms

_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
_JSON = "application/json"
MAX_EVENTS = 10_000


def page_routes(node: Observed) -> dict[str, Handler]:
    """The page, its files, ``/api/devices`` and ``/api/history``."""
    folder = resources.files("edgetwin.health") / "static"
    routes = {
        f"/static/{name}": always((200, kind, (folder / name).read_bytes()))
        for name, kind in _STATIC.items()
    }
    routes["/"] = routes.pop("/static/index.html")

    async def devices(_query: dict[str, str]) -> Response:
        return 200, _JSON, orjson.dumps(_devices(node))

    async def history(query: dict[str, str]) -> Response:
        return await _history(node, query)

    routes["/api/devices"] = devices
    routes["/api/history"] = history
    return routes


def _devices(node: Observed) -> dict[str, Any]:
    engine = node.engine
    listed = []
    for device_id in sorted(engine.devices):
        twin = engine.devices[device_id]
        props = []
        for name, prop in twin.properties.items():
            entry: dict[str, Any] = {
                "name": name,
                "type": twin.rules[name].type.lower(),
                "desired": prop.desired,
                "reported": prop.reported,
                "reported_ts": prop.reported_ts or None,
            }
            if name in twin.out_of_range:
                entry["out_of_range"] = twin.out_of_range[name]
            if name in twin.writes:
                entry["write"] = write_status(twin.writes[name])
            props.append(entry)
        listed.append(
            {
                "id": device_id,
                "state": twin.state,
                "last_online": twin.last_online,
                "properties": props,
            }
        )
    return {"node": engine.node, "now": now_ms(), "devices": listed}


def _error(status: int, reason: str) -> Response:
    return status, _JSON, orjson.dumps({"error": reason})


async def _history(node: Observed, query: dict[str, str]) -> Response:
    """``?device=NS/NAME[&property=P][&since=MS][&limit=N]``: its changes, oldest first."""
    twin = node.engine.devices.get(query.get("device", ""))
    if twin is None:
        return _error(404, "no such device")
    prop = query.get("property") or None
    if prop is not None and prop not in twin.properties:
        return _error(404, "no such property")
    try:
        since = int(query.get("since", "0"))
        limit = int(query.get("limit", "1000"))
    except ValueError:
        return _error(400, "since and limit are whole numbers")
    if since < 0 or not 1 <= limit <= MAX_EVENTS:
        return _error(400, f"since is epoch ms, limit 1 to {MAX_EVENTS}")
    try:
        rows = await node.store.history(twin.id, prop, since, limit)
    except StoreError as exc:
        return _error(500, str(exc))
    events = [history_event(row) for row in rows]
    return 200, _JSON, orjson.dumps({"device": twin.id, "events": events})
