"""Moving a job between edges: the client's fail-over, before and after the plan.

Before the plan (`run_on_edges`): an edge that refuses for now, goes away or goes silent
hands the same request (same job id) to the next edge in the selection's order; a round in
which every edge refuses for now backs off. After the plan (`TileRescue`, `DeviceJob` step
5): the diffusion tiles a lost edge never sent go to another edge when its quote is sooner
than this device's own light SR; the rest are done here.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from hybridsr.imaging.compose import device_regions, read_px
from hybridsr.imaging.lightsr import DeviceSR
from hybridsr.protocol import Enhance, Generate, Plan, Quote, TileSpec, encode_image
from hybridsr.sdk.edges import RETRYABLE, Edge, EdgePool, backoff_delay
from hybridsr.sdk.errors import EdgeProtocolError, EdgeRefused, EdgeUnavailable, HybridSRError
from hybridsr.sdk.job import DeviceJob, Rescue, Route, StageTimeouts
from hybridsr.sdk.result import HybridResult

RESCUE_IN_FLIGHT = 2  # tiles a rescuing edge is sent at once (each its own `enhance` job)
Attempt = Callable[[Edge], Awaitable[HybridResult]]  # the whole job on one edge


async def run_on_edges(pool: EdgePool, quote: Quote, attempt: Attempt, route: Route,
                       retries: int, quote_timeout: float) -> HybridResult:
    """Try the edges in the selection's order; a round where all refuse for now backs off.

    Whatever moved the job goes into `route.moves`. `retries` is the number of extra rounds.
    """
    error: HybridSRError | None = None  # the latest failure
    refusal: EdgeRefused | None = None  # the first refusal of the request itself
    for turn in range(retries + 1):
        hint: float | None = None
        for ranked in await pool.rank(quote, quote_timeout):
            edge = ranked.edge
            try:
                return await attempt(edge)
            except EdgeRefused as exc:
                route.moves.append(f"{edge.url}: refused ({exc.code.value}) before the plan")
                if exc.code not in RETRYABLE:
                    if not pool.several:
                        raise  # this request is wrong for this edge: retrying cannot help
                    refusal = refusal or exc  # another edge may take it (other limits)
                    continue
                pool.failed(edge, exc, exc.retry_after_s)
                hint = min(hint or math.inf, exc.retry_after_s or 0.5)
                error = exc
            except (EdgeUnavailable, EdgeProtocolError) as exc:
                pool.failed(edge, exc)
                route.moves.append(f"{edge.url}: {exc}")
                error = exc
                if not pool.several:
                    raise  # one edge gone: nothing to wait for, say so now
        if error is None or turn == retries:
            break  # every edge refused the request itself, or no rounds are left
        await asyncio.sleep(backoff_delay(turn, hint))
    raise refusal or error or EdgeUnavailable("no edge could take the job")


@dataclass
class TileRescue:
    """Step 5 of a job that lost its edge after the plan: another edge, if it is sooner."""

    pool: EdgePool
    backend: DeviceSR
    image_format: str
    timeouts: StageTimeouts
    device_s_per_px: Callable[[], float]  # this device's light SR: observed, else probed
    quote_timeout: float

    def for_job(self, lost: Edge, route: Route) -> Rescue:
        """The `rescue` callback of one job on `lost`."""

        async def rescue(request: Generate | Enhance, plan: Plan, lr: np.ndarray,
                         specs: list[TileSpec]) -> dict[int, np.ndarray]:
            self.pool.failed(lost, "lost mid-job")
            edge = await self._sooner_edge(plan, specs, lost)
            if edge is None:
                return {}
            route.visit(edge.url)
            gate = asyncio.Semaphore(RESCUE_IN_FLIGHT)

            async def one(spec: TileSpec) -> tuple[int, np.ndarray | None]:
                async with gate:
                    return spec.index, await self._tile(edge, request, plan, lr, spec)

            done = await asyncio.gather(*(one(spec) for spec in specs))
            return {index: hr for index, hr in done if hr is not None}

        return rescue

    async def _sooner_edge(self, plan: Plan, specs: list[TileSpec], lost: Edge
                           ) -> Edge | None:
        """The edge whose quote for the missing tiles beats this device's light SR, if any."""
        others = self.pool.candidates(exclude=lost)
        if not others:
            return None
        widest = max(specs, key=lambda s: s.w * s.h)
        quote = Quote(job_id=uuid.uuid4().hex, kind="enhance", width=widest.w,
                      height=widest.h, scale=plan.scale, policy="edge-diffusion-all")
        ranked = await self.pool.by_quote(others, quote, self.quote_timeout)
        best = ranked[0] if ranked else None
        if best is None or best.quote is None or best.quote.refusal is not None \
                or best.quote.predicted_s is None:
            return None
        edge_s = best.quote.predicted_s * math.ceil(len(specs) / RESCUE_IN_FLIGHT)
        read = sum(read_px(r, self.backend.context, plan.lr_width, plan.lr_height)
                   for r in device_regions(specs))
        device_s = read * self.device_s_per_px()
        return best.edge if edge_s < device_s else None

    async def _tile(self, edge: Edge, request: Generate | Enhance, plan: Plan,
                    lr: np.ndarray, spec: TileSpec) -> np.ndarray | None:
        """One missing tile as an `enhance` of its LR crop; None: the device does it.

        The crop is the tile itself and its seed the one the first edge would have used, so
        the same model gives the same pixels.
        """
        crop = np.ascontiguousarray(lr[spec.y : spec.y + spec.h, spec.x : spec.x + spec.w])
        seed = None if request.seed is None else (request.seed + 7919 * spec.index) % 2**31
        try:
            conn = await self.pool.connect(edge)
            sub = Enhance(job_id=uuid.uuid4().hex, image=encode_image(crop, self.image_format),
                          scale=plan.scale, prompt=request.prompt,
                          negative_prompt=request.negative_prompt, seed=seed,
                          policy="edge-diffusion-all", image_format=self.image_format,
                          stats=self.pool.stats_for(edge))
            job = DeviceJob(conn, sub, self.backend, lr_image=crop, color_fix="none",
                            timeouts=self.timeouts,
                            on_orphan=lambda cancel: self.pool.orphaned(edge, cancel))
            result = await job.run()
        except HybridSRError:
            return None
        return None if result.degraded else np.asarray(result.image)
