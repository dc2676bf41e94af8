"""The edge application, assembled in one place; models load in `on_startup`."""

from __future__ import annotations

from aiohttp import web

from hybridsr.protocol import WEBSOCKET_PATH
from hybridsr.server.config import EdgeConfig
from hybridsr.server.edge import EDGE_KEY, Edge
from hybridsr.server.oneshot import handle_generate
from hybridsr.server.session import handle_session


async def handle_health(request: web.Request) -> web.Response:
    edge: Edge = request.app[EDGE_KEY]
    return web.json_response(
        {
            "status": "draining" if edge.draining else "ok",
            "preset": edge.preset.name,
            "random_weights": edge.preset.random_weights,
            "active_jobs": edge.active_jobs,
            "jobs_completed": edge.jobs_completed,
        }
    )


async def _start_edge(app: web.Application) -> None:
    await app[EDGE_KEY].start()


async def _close_edge(app: web.Application) -> None:
    await app[EDGE_KEY].close()


def create_app(config: EdgeConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[EDGE_KEY] = Edge(config or EdgeConfig())
    app.router.add_get("/healthz", handle_health)
    app.router.add_get(WEBSOCKET_PATH, handle_session)
    app.router.add_post("/v1/generate", handle_generate)
    app.on_startup.append(_start_edge)
    app.on_cleanup.append(_close_edge)
    return app
