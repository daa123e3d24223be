"""The node's Prometheus metrics, read from its parts when scraped.

The parts keep plain counters (the engine's accepted and rejected requests,
the broker gate's refusals, the cloud sync's stats); a collector turns them
into metric families on each scrape, so nothing on the message path calls
prometheus-client except the one latency histogram. Each node has its own
registry, so several nodes in one process (the tests) do not mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgetwin.broker import MosquittoBroker
from edgetwin.mappers import MapperRuntime
from edgetwin.twin import Store, TwinEngine
from edgetwin.twin.writes import CLOSED, OPEN
from edgetwin.wire.messages import Code

if TYPE_CHECKING:
    from edgetwin.auth import Tally
    from edgetwin.broker import EmbeddedBroker
    from edgetwin.cloud import CloudSync
    from edgetwin.mappers.dmi import DmiServer

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WRITE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Observed(Protocol):
    """What the metrics read: the parts of a running node."""

    @property
    def engine(self) -> TwinEngine: ...
    @property
    def store(self) -> Store: ...
    @property
    def broker(self) -> EmbeddedBroker | MosquittoBroker | None: ...
    @property
    def cloud(self) -> CloudSync | None: ...
    @property
    def mappers(self) -> dict[str, MapperRuntime]: ...
    @property
    def dmi(self) -> DmiServer | None: ...


class NodeMetrics:
    """A node's registry: the result latency histogram, and everything else read when scraped."""

    def __init__(self, node: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "edgetwin_twin_result_latency_seconds",
            "From a twin request's arrival to its result going out (committed first).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "edgetwin_write_seconds",
            "From a desired value being set to the device reporting it (its write read back).",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        node.engine.writes.observe_seconds = self.write_seconds.observe
        self.registry.register(_NodeCollector(node))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    def __init__(self, node: Observed) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._twin()
        yield from self._writes()
        yield from self._devices()
        broker = self._node.broker
        if isinstance(broker, MosquittoBroker):
            yield CounterMetricFamily(
                "edgetwin_broker_restarts",
                "Times the embedded mosquitto died and was started again.",
                value=broker.restarts,
            )
        elif broker is not None:
            yield GaugeMetricFamily(
                "edgetwin_broker_clients",
                "Clients connected to the embedded broker.",
                value=broker.connected_clients(),
            )
        if broker is not None:
            yield from self._broker(broker.tally)
        if self._node.cloud is not None:
            yield from self._cloud(self._node.cloud)
        if self._node.dmi is not None:
            yield from self._dmi(self._node.dmi)
        mappers = GaugeMetricFamily(
            "edgetwin_mapper_devices",
            "Devices each mapper of the node serves.",
            labels=["protocol"],
        )
        for protocol, runtime in self._node.mappers.items():
            mappers.add_metric([protocol], len(runtime.devices))
        yield mappers

    def _twin(self) -> Iterator[Metric]:
        engine = self._node.engine
        accepted = CounterMetricFamily(
            "edgetwin_twin_requests_accepted",
            "Twin API requests answered, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(engine.api.accepted.items()):
            accepted.add_metric([kind], count)
        yield accepted
        rejected = CounterMetricFamily(
            "edgetwin_twin_requests_rejected",
            "Twin API requests refused with an error result, by reason.",
            labels=["reason"],
        )
        for code, count in sorted(engine.api.rejected.items()):
            rejected.add_metric([_reason(code)], count)
        yield rejected
        refused = CounterMetricFamily(
            "edgetwin_twin_properties_refused",
            "Properties refused in twin/updates whose other properties were applied, by reason.",
            labels=["reason"],
        )
        for code, count in sorted(engine.api.refused_properties.items()):
            refused.add_metric([_reason(code)], count)
        yield refused
        yield CounterMetricFamily(
            "edgetwin_twin_reported_out_of_range",
            "Reported values stored although outside their model's minimum or maximum.",
            value=engine.api.out_of_range_reports,
        )
        suppressed = CounterMetricFamily(
            "edgetwin_log_lines_suppressed",
            "Log lines about refused requests and denials not written (at most one per "
            "sender and reason every 10 s is), by where.",
            labels=["source"],
        )
        suppressed.add_metric(["twin"], engine.api.rejections.suppressed)
        broker = self._node.broker
        if broker is not None:
            suppressed.add_metric(["broker"], broker.tally.log.suppressed)
        if self._node.dmi is not None:
            suppressed.add_metric(["dmi"], self._node.dmi.log_suppressed())
        yield suppressed

    def _writes(self) -> Iterator[Metric]:
        writes = self._node.engine.writes
        closed = CounterMetricFamily(
            "edgetwin_writes",
            "Writes of desired values closed, by result: written (read back), failed (the "
            "mapper's error), timedout (not read back in time).",
            labels=["result"],
        )
        for result in CLOSED:
            closed.add_metric([result], writes.closed[result])
        yield closed
        open_now = GaugeMetricFamily(
            "edgetwin_writes_open",
            "Desired values waiting to be read back, by phase (pending: not sent yet).",
            labels=["phase"],
        )
        phases = Counter(
            row.phase for twin in self._node.engine.devices.values() for row in twin.writes.values()
        )
        for phase in OPEN:
            open_now.add_metric([phase], phases[phase])
        yield open_now
        yield CounterMetricFamily(
            "edgetwin_write_drifts",
            "Written values the device changed afterwards (the node applied them again).",
            value=writes.drifts,
        )
        yield CounterMetricFamily(
            "edgetwin_write_results_stray",
            "Mappers' write errors that matched no write of the twin (late, or forged).",
            value=writes.stray_results,
        )
        yield GaugeMetricFamily(
            "edgetwin_history_rows",
            "Changes the history holds (history.max_rows at most).",
            value=self._node.store.history_rows,
        )

    def _devices(self) -> Iterator[Metric]:
        devices = self._node.engine.devices
        per_device = GaugeMetricFamily(
            "edgetwin_device_state",
            "1 for each device's current state.",
            labels=["device", "state"],
        )
        out_of_range = GaugeMetricFamily(
            "edgetwin_property_out_of_range",
            "1 for each property whose reported value is outside its model's bounds now.",
            labels=["device", "property"],
        )
        counts: Counter[str] = Counter()
        for device_id, twin in devices.items():
            per_device.add_metric([device_id, twin.state], 1)
            counts[twin.state] += 1
            for name in twin.out_of_range:
                out_of_range.add_metric([device_id, name], 1)
        yield per_device
        yield out_of_range
        by_state = GaugeMetricFamily("edgetwin_devices", "Devices by state.", labels=["state"])
        for state, count in sorted(counts.items()):
            by_state.add_metric([state], count)
        yield by_state

    def _broker(self, tally: Tally) -> Iterator[Metric]:
        yield _counted(
            "edgetwin_broker_connections_refused",
            "Connections (and Wills) the embedded broker refused, by reason.",
            ["reason"],
            tally.refused,
        )
        yield _counted(
            "edgetwin_broker_denied",
            "Publications and subscriptions the ACL denied, by action.",
            ["action"],
            tally.denied,
        )
        yield CounterMetricFamily(
            "edgetwin_broker_rate_limited",
            "Publications dropped for going over a client's message rate.",
            value=tally.rate_limited,
        )
        yield CounterMetricFamily(
            "edgetwin_broker_packets_too_large",
            "Connections closed for announcing a packet over broker.max_packet_bytes "
            "(amqtt; mosquitto closes them without a word).",
            value=tally.too_large,
        )

    def _dmi(self, dmi: DmiServer) -> Iterator[Metric]:
        yield _counted(
            "edgetwin_dmi_registrations",
            "KubeEdge mappers' registrations on the DMI socket, by protocol.",
            ["protocol"],
            dmi.registrations,
        )
        yield _counted(
            "edgetwin_dmi_requests",
            "Requests of mappers on the DMI socket, by method and answer (OK, or the gRPC "
            "status of the refusal: PERMISSION_DENIED, RESOURCE_EXHAUSTED for the rate, ...).",
            ["method", "code"],
            dmi.requests,
        )
        calls = CounterMetricFamily(
            "edgetwin_dmi_calls",
            "The node's calls to mappers, by protocol, method and result (ok; refused: the "
            "mapper answered with an error; unavailable: it did not answer).",
            labels=["protocol", "method", "result"],
        )
        pending = GaugeMetricFamily(
            "edgetwin_dmi_devices_pending",
            "Devices (and models) a mapper does not hold yet as the node has them.",
            labels=["protocol"],
        )
        for protocol, mapper in sorted(dmi.mappers.items()):
            for (method, result), count in sorted(mapper.handover.results.items()):
                calls.add_metric([protocol, method, result], count)
            pending.add_metric([protocol], mapper.handover.pending())
        yield calls
        yield pending

    def _cloud(self, cloud: CloudSync) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "edgetwin_cloud_connected",
            "1 while every watch reaches the API server.",
            value=int(cloud.connected),
        )
        yield GaugeMetricFamily(
            "edgetwin_cloud_synced", "1 once every watch has listed.", value=int(cloud.synced)
        )
        stats = cloud.stats()
        yield GaugeMetricFamily(
            "edgetwin_cloud_outbox_depth",
            "Status changes stored for the cluster and not yet written.",
            value=stats.pop("outbox_depth"),
        )
        for key, value in stats.items():
            yield CounterMetricFamily(f"edgetwin_cloud_{key}", f"Cloud sync: {key}.", value=value)


def _counted(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from counts by label value (a tuple of them for several labels)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    return family


def _reason(code: int) -> str:
    try:
        return Code(code).name.lower()
    except ValueError:
        return str(code)
