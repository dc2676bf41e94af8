"""The edge application, assembled in one place; models load in `on_startup`.

Shutdown (SIGTERM under `run_app`): stop listening, refuse new jobs with a retry hint, let
running jobs finish (up to `drain_timeout_s`), close the sessions, then free the models.
"""

from __future__ import annotations

import logging

from aiohttp import WSCloseCode, web

from hybridsr.protocol import WEBSOCKET_PATH
from hybridsr.server.config import EdgeConfig
from hybridsr.server.edge import EDGE_KEY, Edge
from hybridsr.server.metrics import handle_metrics
from hybridsr.server.oneshot import handle_generate, handle_quote
from hybridsr.server.security import auth_middleware
from hybridsr.server.session import handle_session

log = logging.getLogger(__name__)


async def handle_health(request: web.Request) -> web.Response:
    edge: Edge = request.app[EDGE_KEY]
    return web.json_response(
        {
            "status": "draining" if edge.draining else "ok",
            "preset": edge.preset.name,
            "random_weights": edge.preset.random_weights,
            "active_jobs": edge.active_jobs,
            "jobs_completed": edge.jobs_completed,
            "backend": edge.backend.health(),
        }
    )


async def _start_edge(app: web.Application) -> None:
    await app[EDGE_KEY].start()


async def _drain(app: web.Application) -> None:
    edge = app[EDGE_KEY]
    if not edge.draining:  # `hybridsr-edge serve` has drained already, before stopping aiohttp
        log.info("shutting down: draining %d running job(s)", edge.active_jobs)
        if not await edge.drain(edge.config.drain_timeout_s):
            log.warning("drain timeout: %d job(s) still running are cancelled",
                        edge.active_jobs)
    for ws in list(edge.websockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"edge shutting down")


async def _close_edge(app: web.Application) -> None:
    await app[EDGE_KEY].close()


def create_app(config: EdgeConfig | None = None) -> web.Application:
    config = config or EdgeConfig()
    middlewares = [auth_middleware(config.token)] if config.token else []
    app = web.Application(client_max_size=1024 * 1024, middlewares=middlewares)
    app[EDGE_KEY] = Edge(config)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get(WEBSOCKET_PATH, handle_session)
    app.router.add_post("/v1/generate", handle_generate)
    app.router.add_post("/v1/quote", handle_quote)
    app.on_startup.append(_start_edge)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close_edge)
    return app
