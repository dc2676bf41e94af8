"""Prometheus metrics for one edge, on a registry of its own (several edges per process work)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_COUNT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("hybridsr_jobs_total", "Jobs by outcome", ["outcome"],
                            registry=self.registry)
        self.refused = Counter("hybridsr_refused_total", "Refused frames and jobs by error code",
                               ["code"], registry=self.registry)
        self.active = Gauge("hybridsr_active_jobs", "Accepted, unfinished jobs",
                            registry=self.registry)
        self.queue_depth = Gauge("hybridsr_queue_depth", "Calls (sr: tiles) waiting per pipeline",
                                 ["worker"], registry=self.registry)
        self.stage = Histogram("hybridsr_stage_seconds", "Edge stage latency", ["stage"],
                               buckets=_BUCKETS, registry=self.registry)
        self.tiles = Counter("hybridsr_tiles_total", "Planned tiles by destination",
                             ["destination"], registry=self.registry)
        self.replicas = Gauge("hybridsr_backend_replicas", "Running model replicas",
                              registry=self.registry)
        self.inflight = Gauge("hybridsr_backend_inflight",
                              "Model calls in flight from this edge (ray backend)", ["call"],
                              registry=self.registry)
        self.retries = Gauge("hybridsr_backend_retries",
                             "Model calls repeated after a replica died or was full",
                             registry=self.registry)
        self.sessions = Gauge("hybridsr_sessions", "Open WebSocket sessions",
                              registry=self.registry)
        self.sr_batch_tiles = Histogram("hybridsr_sr_batch_tiles",
                                        "Tiles per diffusion-SR pipeline call",
                                        buckets=_COUNT_BUCKETS, registry=self.registry)
        self.sr_batch_jobs = Histogram("hybridsr_sr_batch_jobs",
                                       "Distinct jobs per diffusion-SR pipeline call",
                                       buckets=_COUNT_BUCKETS, registry=self.registry)

    def sr_call(self, tiles: int, jobs: int) -> None:
        """One diffusion-SR pipeline call of `tiles` tiles from `jobs` jobs."""
        self.sr_batch_tiles.observe(tiles)
        self.sr_batch_jobs.observe(jobs)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def handle_metrics(request: web.Request) -> web.Response:
    from hybridsr.server.edge import EDGE_KEY

    edge = request.app[EDGE_KEY]
    m = edge.metrics
    m.active.set(edge.active_jobs)
    load = edge.backend.load()
    m.queue_depth.labels("t2i").set(load.t2i_waiting)
    m.queue_depth.labels("sr").set(load.sr_tiles_waiting)
    m.queue_depth.labels("light").set(load.light_waiting)
    health = edge.backend.health()
    m.replicas.set(health.get("replicas", 0))
    for call, n in health.get("inflight", {}).items():
        m.inflight.labels(call).set(n)
    m.retries.set(health.get("retries", 0))
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
