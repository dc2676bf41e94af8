"""The start-up profile: time the backend's pipelines once, to seed the planner's costs.

Real jobs refine the cost model from then on (`EdgeCosts.observe_*`); this only makes the
first plans sensible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from hybridsr.imaging.tiles import Tile, context_window
from hybridsr.protocol import EdgeProfile
from hybridsr.server.backends import Backend, SRTile
from hybridsr.server.costs import fit_t2i
from hybridsr.server.presets import Preset

log = logging.getLogger(__name__)


async def measure_profile(backend: Backend, preset: Preset, tile: int, sr_batch: int
                          ) -> EdgeProfile:
    """Warm up, then time T2I (1 and 3 steps), SR (1 tile and a batch), light SR, and SR
    with light SR beside it."""
    m, c = preset.size_multiple, backend.costs
    side = max(8 * m, 64)
    px = side * side
    scale = max(preset.scales)

    # 1. T2I at 1 and 3 steps (the difference is the per-step share) and at two sizes (a
    #    fixed and a per-pixel part: a GPU is launch-bound at these sizes). An enhance-only
    #    preset has no T2I: its SR is timed on a textured test image instead.
    if preset.has_t2i:
        lr = await backend.text_to_image("warm-up", "", side, side, 1, 0, observe=False)
        await backend.text_to_image("warm-up", "", 2 * side, 2 * side, 1, 0, observe=False)
        sizes = []
        for s in (side, 2 * side):
            sizes.append((s * s, await _timed_t2i(backend, s, 1), await _timed_t2i(backend, s, 3)))
        fitted = fit_t2i(*sizes)
        if fitted is None:  # absurd timings: the defaults, refined by the first jobs
            log.warning("T2I start-up timings unusable (%s); keeping default costs", sizes)
        else:
            c.t2i_base_s, c.t2i_s_per_px, c.t2i_step_base_s, c.t2i_s_per_step_px = fitted
    else:
        lr = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)

    # 2. Diffusion SR: one tile, then a batch, gives a fixed and a per-pixel part. Each
    #    tile goes with the context jobs give it: its cost is part of the tile's.
    crop = lr[:tile, :tile]
    tile_px = crop.shape[0] * crop.shape[1]
    batch = max(2, sr_batch)
    sr_ctx = backend.sr_context
    window = context_window(lr, Tile(0, 0, 0, crop.shape[1], crop.shape[0]), sr_ctx)

    def tiles(n: int) -> list[SRTile]:
        return [SRTile(window, scale, "", "", i, context=sr_ctx) for i in range(n)]

    await backend.super_resolve(tiles(1), observe=False)  # warm-up
    t0 = time.perf_counter()
    await backend.super_resolve(tiles(1), observe=False)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    await backend.super_resolve(tiles(batch), observe=False)
    many = time.perf_counter() - t0
    c.sr_s_per_tile_px = max(many - single, 1e-9) / ((batch - 1) * tile_px)
    c.sr_batch_base_s = max(single - tile_px * c.sr_s_per_tile_px, 0.0)

    # 3. Light SR, per tile pixel with its context (how the planner predicts it).
    ctx = backend.light_context
    centre = np.pad(crop, ((ctx, ctx), (ctx, ctx), (0, 0)), mode="reflect")
    await backend.light_sr(centre, scale)  # warm-up (the first call may convert the model)
    lot = max(1, backend.light_batch)  # as jobs call it: a batch where the runtime batches

    async def light_lot() -> None:
        if lot == 1:
            await backend.light_sr(centre, scale)
        else:
            await backend.light_sr_batch([centre] * lot, scale, lot * tile_px, observe=False)

    t0 = time.perf_counter()
    await light_lot()
    c.light_s_per_px = (time.perf_counter() - t0) / (lot * tile_px)

    # 4. Both SR workers at once: where they share hardware (a CPU edge) each slows the
    #    other. Jobs learn how much only once they overlap, and the first such job was
    #    predicted 20-40% too fast (RESULTS.md); time it here. Nothing reaches the
    #    per-call history, the spread or the metrics: only the two slow-down factors.
    sr_spans, light_spans = await side_by_side_spans(
        lambda: backend.super_resolve(tiles(batch), observe=False), light_lot)
    if sr_beside := mean_beside(sr_spans, light_spans):  # one sample each, as a job gives
        c.observe_sr(sr_beside[0], batch, tile_px, beside=sr_beside[1])
    if light_beside := mean_beside(light_spans, sr_spans):
        c.observe_light(light_beside[0], lot * tile_px, beside=light_beside[1])

    t2i_s = c.t2i(preset.t2i_steps, px) if preset.has_t2i else 0.0
    c.service_s = t2i_s + c.sr_batch(4, tile_px)
    log.info("edge costs measured: %s", c)
    per_step = (round(c.t2i_step_base_s + c.t2i_s_per_step_px * px, 5) if preset.has_t2i
                else None)
    return EdgeProfile(t2i_s_per_step=per_step, sr_s_per_tile=round(single, 5))


async def _timed_t2i(backend: Backend, side: int, steps: int) -> float:
    t0 = time.perf_counter()
    await backend.text_to_image("profile", "", side, side, steps, 0, observe=False)
    return time.perf_counter() - t0


Span = tuple[float, float]  # (start, end) of one call, perf_counter seconds


async def side_by_side_spans(first: Callable[[], Awaitable[object]],
                             second: Callable[[], Awaitable[object]], calls: int = 2
                             ) -> tuple[list[Span], list[Span]]:
    """Call each in a loop, both at once, until each has finished `calls` calls; the spans
    of all their calls. The slower one's calls all ran while the other was computing."""
    spans: tuple[list[Span], list[Span]] = ([], [])
    done = asyncio.Event()

    async def loop(call: Callable[[], Awaitable[object]], mine: list[Span],
                   other: list[Span]) -> None:
        try:
            while not done.is_set():
                t0 = time.perf_counter()
                await call()
                mine.append((t0, time.perf_counter()))
                if len(mine) >= calls and len(other) >= calls:
                    done.set()
        finally:  # a call that raised stops the other loop too
            done.set()

    await asyncio.gather(loop(first, spans[0], spans[1]), loop(second, spans[1], spans[0]))
    return spans


def mean_beside(calls: list[Span], other: list[Span], least: float = 0.9
                ) -> tuple[float, float] | None:
    """Mean seconds of the calls in `calls` that overlapped `other` for at least `least` of
    their time (the last, cut short, is left out), and the mean share that overlapped."""
    shares = []
    for start, end in calls:
        if end > start:
            shared = sum(max(0.0, min(end, e) - max(start, s)) for s, e in other)
            shares.append((end - start, shared / (end - start)))
    kept = [(seconds, share) for seconds, share in shares if share >= least]
    if not kept:
        return None
    return (sum(s for s, _ in kept) / len(kept), sum(f for _, f in kept) / len(kept))
