"""The start-up profile: time the backend's pipelines once, to seed the planner's costs.

Real jobs refine the cost model from then on (`EdgeCosts.observe_*`); this only makes the
first plans sensible.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from hybridsr.imaging.tiles import Tile, context_window
from hybridsr.protocol import EdgeProfile
from hybridsr.server.backends import Backend, SRTile
from hybridsr.server.presets import Preset

log = logging.getLogger(__name__)


async def measure_profile(backend: Backend, preset: Preset, tile: int, sr_batch: int
                          ) -> EdgeProfile:
    """Warm up, then time T2I (1 and 3 steps), SR (1 tile and a batch) and light SR."""
    m, c = preset.size_multiple, backend.costs
    side = max(8 * m, 64)
    px = side * side
    scale = max(preset.scales)

    # 1. T2I: the difference between 1 and 3 steps is the per-step share. An enhance-only
    #    preset has no T2I: its SR is timed on a textured test image instead.
    if preset.has_t2i:
        lr = await backend.text_to_image("warm-up", "", side, side, 1, 0, observe=False)
        one = await _timed_t2i(backend, side, 1)
        three = await _timed_t2i(backend, side, 3)
        # Floor the step share: on a busy CPU the difference can come out near zero, and the
        # planner would then take extra steps to be free.
        per_step = max((three - one) / 2, 0.3 * one) / px
        c.t2i_s_per_step_px, c.t2i_s_per_px = per_step, max(one / px - per_step, 0.0)
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
    t0 = time.perf_counter()
    if lot == 1:
        await backend.light_sr(centre, scale)
    else:
        await backend.light_sr_batch([centre] * lot, scale, lot * tile_px)
    c.light_s_per_px = (time.perf_counter() - t0) / (lot * tile_px)

    t2i_s = c.t2i(preset.t2i_steps, px) if preset.has_t2i else 0.0
    c.service_s = t2i_s + c.sr_batch(4, tile_px)
    log.info("edge costs measured: %s", c)
    per_step = round(c.t2i_s_per_step_px * px, 5) if preset.has_t2i else None
    return EdgeProfile(t2i_s_per_step=per_step, sr_s_per_tile=round(single, 5))


async def _timed_t2i(backend: Backend, side: int, steps: int) -> float:
    t0 = time.perf_counter()
    await backend.text_to_image("profile", "", side, side, steps, 0, observe=False)
    return time.perf_counter() - t0
