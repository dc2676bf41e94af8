"""The planner's search as it was before it was made fast: the reference it must agree with.

Straightforward on purpose: `predict` walks every tile of a placement, `place_hybrid` predicts
every split point in full, and the device's regions come from the SDK's own grouping
(`compose.device_regions`). tests/test_planner_equivalence.py checks that the planner's
placements are identical to these and its predictions equal to float tolerance. Copied from
server/planner.py at commit cd1d681 (the cost models and `JobShape` are the planner's; the
model has since moved to server/timeline.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hybridsr.imaging.compose import device_regions, read_px
from hybridsr.imaging.saliency import select_foreground
from hybridsr.imaging.tiles import Tile
from hybridsr.server.costs import CodecCosts, DeviceCosts, EdgeCosts
from hybridsr.server.planner import LOSSY_GAIN, LOSSY_MIN_SAVING_S, place, with_codec
from hybridsr.server.timeline import (
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    REQUEST_BYTES,
    Costs,
    JobShape,
    Prediction,
)


def predict(shape: JobShape, costs: Costs, placement: Sequence[tuple[str, str]]
            ) -> Prediction:
    e, d, link = costs.edge, costs.device, costs.link
    sr_share, light_share = 1 + max(0, shape.sr_load), 1 + max(0, shape.light_load)
    t2i = e.t2i(shape.steps, shape.lr_px) if shape.kind == "generate" else 0.0
    generate = shape.kind == "generate"
    plan_sent = shape.queue_wait_s + t2i + (shape.lr_px * shape.encode_s_per_px if generate
                                            else 0.0)
    plan_bytes = shape.lr_px * shape.bytes_per_px if generate else 200.0
    plan_at_device = plan_sent + link.rtt_s / 2 + link.down(plan_bytes) \
        + (shape.lr_px * shape.decode_s_per_px if generate else 0.0)

    tiles = list(shape.tiles)
    diffusion = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_DIFFUSION]
    light = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_LIGHT]
    on_device = [t for t, p in zip(tiles, placement, strict=True) if p[0] == "device"]

    sr_lots = [diffusion[i : i + max(1, shape.sr_batch)]
               for i in range(0, len(diffusion), max(1, shape.sr_batch))]
    lot = max(1, shape.light_batch)
    light_lots = [light[i : i + lot] for i in range(0, len(light), lot)]
    sr_costs = [e.sr_batch(len(b), max(t.w * t.h for t in b)) for b in sr_lots]
    light_costs = [e.light(sum(t.w * t.h for t in b)) for b in light_lots]
    busy = sum(sr_costs) + sum(light_costs)
    sr_turns = []
    for k, (batch, cost) in enumerate(zip(sr_lots, sr_costs, strict=True)):
        if shape.sr_tiles_ahead is None:
            sr_turns.append(cost * sr_share)
        else:
            turn = (sr_share - 1) * len(batch)
            ahead = max(turn, shape.sr_tiles_ahead) if k == 0 else turn
            px = max(t.w * t.h for t in batch)
            sr_turns.append(shared_sr_round(e, ahead, len(batch), shape.sr_batch, px))
    sr_done, light_done = side_by_side(
        sr_turns, [c * light_share for c in light_costs], plan_sent,
        e.sr_beside_light, e.light_beside_sr)
    ready: list[tuple[float, int]] = []
    for done, batch in zip([*sr_done, *light_done], [*sr_lots, *light_lots], strict=True):
        ready += [(done, t.w * t.h * shape.scale**2) for t in batch]

    link_free = plan_sent + link.down(plan_bytes)
    encoder_free = plan_sent
    bytes_down = plan_bytes
    for when, hr_px in sorted(ready):
        encoder_free = max(encoder_free, when) + hr_px * shape.encode_s_per_px
        nbytes = hr_px * shape.bytes_per_px
        link_free = max(link_free, encoder_free) + link.down(nbytes)
        bytes_down += nbytes
    last_decode = max(ready)[1] * shape.decode_s_per_px if ready else 0.0
    edge_done = link_free + link.rtt_s / 2 + last_decode if ready else plan_at_device

    device_calls = device_sr_calls(
        shape, d, [t for t, p in zip(tiles, placement, strict=True) if p == DEVICE_LIGHT])
    device_done = plan_at_device + sum(device_calls)
    hr_px = shape.lr_px * shape.scale**2
    stitch = hr_px * d.stitch_s_per_hr_px if on_device or ready else 0.0
    finish = expected_max(edge_done, device_done,
                          e.spread * math.hypot(*sr_costs, *light_costs),
                          e.spread * math.hypot(*device_calls))
    total = finish + stitch + link.rtt_s / 2 + link.up(REQUEST_BYTES)
    return Prediction(plan_sent, plan_at_device, edge_done, device_done, total, bytes_down,
                      busy + t2i)


def device_sr_calls(shape: JobShape, d: DeviceCosts, tiles: Sequence[Tile]) -> list[float]:
    return [d.sr(read_px(region, d.context, shape.lr_width, shape.lr_height))
            for region in device_regions(tiles)]


def shared_sr_round(e: EdgeCosts, ahead: int, own: int, batch: int, tile_px: int) -> float:
    batch, total = max(1, batch), max(0, ahead) + own
    full, rest = divmod(total, batch)
    return full * e.sr_batch(batch, tile_px) + (e.sr_batch(rest, tile_px) if rest else 0.0)


def side_by_side(first: Sequence[float], second: Sequence[float], start: float,
                 slow_first: float = 1.0, slow_second: float = 1.0
                 ) -> tuple[list[float], list[float]]:
    """The two workers stepped from one call's end to the next."""
    done: tuple[list[float], list[float]] = ([], [])
    queues = (list(first), list(second))
    slow = (slow_first, slow_second)
    left = [q[0] if q else 0.0 for q in queues]
    t = start
    while queues[0] or queues[1]:
        both = bool(queues[0] and queues[1])
        rate = [1 / slow[k] if both else 1.0 for k in (0, 1)]
        dt = min(left[k] / rate[k] for k in (0, 1) if queues[k])
        t += dt
        for k in (0, 1):
            if not queues[k]:
                continue
            left[k] -= dt * rate[k]
            if left[k] <= 1e-12:
                done[k].append(t)
                queues[k].pop(0)
                left[k] = queues[k][0] if queues[k] else 0.0
    return done


def expected_max(a: float, b: float, sd_a: float, sd_b: float) -> float:
    theta = math.hypot(sd_a, sd_b)
    if theta <= 1e-12:
        return max(a, b)
    alpha = (a - b) / theta
    cdf = 0.5 * (1 + math.erf(alpha / math.sqrt(2)))
    pdf = math.exp(-alpha * alpha / 2) / math.sqrt(2 * math.pi)
    return a * cdf + b * (1 - cdf) + theta * pdf


def place_hybrid(scores: Sequence[float], threshold: float, shape: JobShape, costs: Costs
                 ) -> list[tuple[str, str]]:
    """`place("hybrid", ...)`: every split point predicted in full."""
    fg = select_foreground(scores, threshold)
    background = sorted((i for i, f in enumerate(fg) if not f), key=lambda i: -scores[i])
    n = len(background)
    stride = max(1, n // 24)
    batch = max(1, shape.sr_batch)
    batch_stride = batch * max(1, n // (24 * batch))
    diffusion_counts = sorted({*range(0, n + 1, batch_stride), n})
    best: tuple[float, int, int] | None = None
    for k_diff in diffusion_counts:
        light_counts = sorted({*range(0, n - k_diff + 1, stride), n - k_diff}) \
            if shape.edge_light else [0]
        for k_light in light_counts:
            placement = _split(fg, background, k_diff, k_light)
            total = predict(shape, costs, placement).total
            if best is None or total < best[0] * 0.999:
                best = (total, k_diff, k_light)
    assert best is not None
    return _split(fg, background, best[1], best[2])


def _split(fg: Sequence[bool], background: Sequence[int], k_diff: int, k_light: int
           ) -> list[tuple[str, str]]:
    placement = [EDGE_DIFFUSION if f else DEVICE_LIGHT for f in fg]
    for rank, i in enumerate(background):
        if rank < k_diff:
            placement[i] = EDGE_DIFFUSION
        elif rank < k_diff + k_light:
            placement[i] = EDGE_LIGHT
    return placement


def choose_codec(policy: str, scores: Sequence[float], threshold: float, shape: JobShape,
                 costs: Costs, codecs: CodecCosts, lossless: str, lossy: Sequence[str],
                 quality: str) -> tuple[str, list[tuple[str, str]], Prediction]:
    """Every codec candidate planned from scratch."""
    options = []
    for name in (lossless, *lossy):
        trial = with_codec(shape, name, codecs.get(name))
        placement = (place_hybrid(scores, threshold, trial, costs) if policy == "hybrid"
                     else place(policy, scores, threshold, trial, costs))
        options.append((name, placement, predict(trial, costs, placement)))
    best = options[0]
    if len(options) > 1:
        fastest = min(options[1:], key=lambda o: o[2].total)
        saving = best[2].total - fastest[2].total
        if saving >= LOSSY_GAIN[quality] * best[2].total \
                and saving >= LOSSY_MIN_SAVING_S[quality]:
            best = fastest
    return best


def choose_steps(shape: JobShape, costs: Costs, budget_s: float, most: int, fg_share: float,
                 policy: str) -> int:
    """Every step count predicted, as `estimate` predicts it."""
    for steps in range(most, 0, -1):
        trial = JobShape(**{**shape.__dict__, "steps": steps})
        n = len(trial.tiles)
        guess = [0.0 if i >= round(fg_share * n) else 1.0 for i in range(n)]
        quick = "split-device" if policy == "hybrid" else policy
        if predict(trial, costs, place(quick, guess, 0.5, trial, costs)).total <= budget_s:
            return steps
    return 1
