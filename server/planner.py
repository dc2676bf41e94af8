"""The planner: LR size, steps and every tile's destination, from measured costs.

Foreground tiles (score ≥ threshold) always get diffusion SR on the edge. For `hybrid`, the
background tiles then go to device light SR or edge light SR, whichever makes the whole job
finish sooner (device and edge finishing together), counting the transfer of the LR image
and of every HR tile. The fixed policies place tiles by rule and are predicted the same way,
so every plan states when it expects to finish.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from hybridsr.imaging.saliency import select_foreground
from hybridsr.imaging.tiles import Tile
from hybridsr.protocol import ErrorCode, ProtocolError, TileSpec
from hybridsr.server.costs import CodecCost, CodecCosts
from hybridsr.server.timeline import (
    DEVICE_COPY,
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    Costs,
    DeviceSide,
    EdgeWork,
    JobShape,
    Prediction,
    Timeline,
    predict,
)


def place(policy: str, scores: Sequence[float], threshold: float, shape: JobShape,
          costs: Costs, top_k: int | None = None) -> list[tuple[str, str]]:
    """Each tile's (destination, method) under `policy`."""
    fg = select_foreground(scores, threshold)
    n = len(scores)
    if policy == "edge-diffusion-all":
        return [EDGE_DIFFUSION] * n
    if policy == "split-device":
        return [EDGE_DIFFUSION if f else DEVICE_LIGHT for f in fg]
    if policy == "split-edge":
        return [EDGE_DIFFUSION if f else EDGE_LIGHT for f in fg]
    if policy == "edge-light-all":
        return [EDGE_LIGHT] * n
    if policy == "device-light-all":
        return [DEVICE_LIGHT] * n
    if policy == "direct-hr":
        return [DEVICE_COPY] * n
    if policy == "top-k":
        k = top_k if top_k is not None else max(1, round(0.25 * n))
        ranked = sorted(range(n), key=lambda i: -scores[i])[:k]
        chosen = set(ranked)
        return [EDGE_DIFFUSION if i in chosen else DEVICE_LIGHT for i in range(n)]
    if policy == "hybrid":
        return _balance(fg, scores, shape, costs)
    raise ProtocolError(ErrorCode.UNKNOWN_POLICY, f"unknown policy {policy!r}")


def _balance(fg: Sequence[bool], scores: Sequence[float], shape: JobShape, costs: Costs,
             reuse: CodecFree | None = None) -> list[tuple[str, str]]:
    """Split the background tiles three ways so that the whole job finishes soonest.

    The most salient background tiles may join the foreground in diffusion SR (nearly free
    when batching on an idle GPU), the next ones go to edge light SR, the rest stay on the
    device. Every split point is considered; on a tie the device keeps the work, so the
    shared edge is spared. The candidates include the fixed splits `split-device` (nothing
    moved), `split-edge` (all to edge light) and `edge-diffusion-all` (all to diffusion),
    so the plan is never predicted slower than any of them.

    A split that cannot beat the best so far, by a lower bound of its total
    (`Timeline.least_total`), is not predicted in full: the same plan as predicting every
    split, with far fewer predictions. `reuse`: what a search of the same job with another
    codec worked out.
    """
    background = sorted((i for i, f in enumerate(fg) if not f), key=lambda i: -scores[i])
    # A tile's rank among the background (-1: foreground): a split is three ranges of it.
    # The device keeps the least salient tiles: ranks k_diff + k_light and up.
    rank = np.full(len(fg), -1)
    rank[background] = np.arange(len(background))
    timeline = Timeline(shape, costs)
    reuse = CodecFree() if reuse is None else reuse
    # HR pixels the edge sends when the device keeps ranks m and up: the foreground's, plus
    # the background's before rank m.
    edge_hr_px = float(timeline.hr_px[rank < 0].sum()) + np.concatenate(
        ([0.0], timeline.hr_px[background].cumsum()))
    best = (math.inf, 0, 0)
    for k_diff, light_counts in _split_points(len(background), shape):
        diffusion = timeline.diffusion_lots(np.flatnonzero(rank < k_diff))
        # The device's side, priced in one pass for this row's splits that could beat the
        # best even with the device idle; the others stay hopeless as the best improves.
        leaving = [k_diff + k_light for k_light in light_counts]
        hopeful = [kept for kept in leaving if not _beaten(
            best[0], timeline.least_total(diffusion, edge_hr_px[kept], IDLE_DEVICE))]
        missing = [kept for kept in hopeful if kept not in reuse.device]
        if missing:
            sides = timeline.device(rank >= np.array(missing)[:, None])
            reuse.device.update(zip(missing, sides, strict=True))
        for k_light in light_counts:
            kept = k_diff + k_light
            device = reuse.device.get(kept)
            if device is None or _beaten(best[0], timeline.least_total(
                    diffusion, edge_hr_px[kept], device)):
                continue
            work = reuse.edge.get((k_diff, k_light))
            if work is None:
                light = timeline.light_lots(np.flatnonzero((rank >= k_diff) & (rank < kept)))
                work = reuse.edge[k_diff, k_light] = timeline.edge_work(diffusion, light)
            total = timeline.prediction(timeline.edge(work), device).total
            if total < best[0] * 0.999:
                best = (total, k_diff, k_light)
    return _split(fg, background, best[1], best[2])


IDLE_DEVICE = DeviceSide(0.0, 0.0)


def _beaten(best: float, least: float) -> bool:
    """Whether a split predicted to take at least `least` cannot replace the best so far
    (it must be 0.1% sooner; the margin covers rounding between the bound and the total)."""
    return best * 0.999 <= (1 - 1e-9) * least


@dataclass
class CodecFree:
    """What `_balance` works out for a job that no codec changes, kept for the next codec's
    search: the device's side by how many background tiles leave the device, and the edge's
    SR (when each tile is ready) by split. Bytes and encode times are the codec's."""

    device: dict[int, DeviceSide] = field(default_factory=dict)
    edge: dict[tuple[int, int], EdgeWork] = field(default_factory=dict)


def _split_points(n: int, shape: JobShape) -> list[tuple[int, list[int]]]:
    """The splits `_balance` tries for `n` background tiles, in order: each k_diff with its
    k_lights. At most ~24 × 25, whatever the tile count: a 1024² LR image has 1,600 tiles.
    """
    stride = max(1, n // 24)
    batch = max(1, shape.sr_batch)
    batch_stride = batch * max(1, n // (24 * batch))
    return [(k_diff, sorted({*range(0, n - k_diff + 1, stride), n - k_diff})
             if shape.edge_light else [0])
            for k_diff in sorted({*range(0, n + 1, batch_stride), n})]


def _split(fg: Sequence[bool], background: Sequence[int], k_diff: int, k_light: int
           ) -> list[tuple[str, str]]:
    placement = [EDGE_DIFFUSION if f else DEVICE_LIGHT for f in fg]
    for rank, i in enumerate(background):
        if rank < k_diff:
            placement[i] = EDGE_DIFFUSION
        elif rank < k_diff + k_light:
            placement[i] = EDGE_LIGHT
    return placement


# What a lossy codec must save before the planner gives up lossless tiles, per quality
# preference: a share of the lossless plan's predicted total AND a number of seconds. The
# seconds keep short jobs lossless wherever a few tens of ms decide (nobody sees them, and
# identical loopback jobs used to flip between PNG and JPEG on the jitter of learned encode
# times); the share keeps long jobs lossless unless the saving is a real part of the wait.
LOSSY_GAIN = {"high": 0.10, "balanced": 0.03}
LOSSY_MIN_SAVING_S = {"high": 0.25, "balanced": 0.1}


def with_codec(shape: JobShape, name: str, cost: CodecCost) -> JobShape:
    return replace(shape, codec=name, bytes_per_px=cost.bytes_per_px,
                   encode_s_per_px=cost.encode_s_per_px, decode_s_per_px=cost.decode_s_per_px)


@dataclass(frozen=True)
class CodecChoice:
    codec: str
    shape: JobShape
    placement: list[tuple[str, str]]
    prediction: Prediction


def choose_codec(policy: str, scores: Sequence[float], threshold: float, shape: JobShape,
                 costs: Costs, codecs: CodecCosts, lossless: str, lossy: Sequence[str],
                 quality: str, top_k: int | None = None) -> CodecChoice:
    """The codec for this job's tiles and LR image, with the placement planned for it.

    Every candidate is planned and predicted in full (cheaper bytes can move tiles to the
    edge); lossless wins unless a lossy codec of the job's quality preference is predicted
    to save `LOSSY_GAIN` of the job and `LOSSY_MIN_SAVING_S`: a slow link, or a lossless
    encode that holds the job up.
    """
    options = []
    reuse = CodecFree()  # hybrid's searches share what the codec does not change
    for name in (lossless, *lossy):
        trial = with_codec(shape, name, codecs.get(name))
        if policy == "hybrid":
            placement = _balance(select_foreground(scores, threshold), scores, trial, costs,
                                 reuse)
        else:
            placement = place(policy, scores, threshold, trial, costs, top_k)
        options.append(CodecChoice(name, trial, placement, predict(trial, costs, placement)))
    best = options[0]
    if len(options) > 1:
        fastest = min(options[1:], key=lambda o: o.prediction.total)
        saving = best.prediction.total - fastest.prediction.total
        if saving >= LOSSY_GAIN[quality] * best.prediction.total \
                and saving >= LOSSY_MIN_SAVING_S[quality]:
            best = fastest
    return best


def choose_steps(shape: JobShape, costs: Costs, budget_s: float | None, default: int,
                 most: int, fg_share: float, policy: str) -> int:
    """The most denoising steps whose predicted latency fits the budget (else `default`).

    Steps change only the T2I time, and everything else the job does comes after it: one
    prediction, moved by the difference in T2I time, prices every step count.
    """
    if budget_s is None:
        return default
    base = _rough_total(replace(shape, steps=most), costs, policy, fg_share)
    for steps in range(most, 0, -1):
        t2i_saved = (costs.edge.t2i(most, shape.lr_px) - costs.edge.t2i(steps, shape.lr_px)
                     if shape.kind == "generate" else 0.0)
        if base - t2i_saved <= budget_s:
            return steps
    return 1


def choose_scale(width: int, height: int, scales: Sequence[int], multiple: int,
                 shape_for: Callable[[int], JobShape], costs: Costs, budget_s: float | None,
                 policy: str, fg_share: float = 0.5) -> int:
    """The smallest allowed scale whose job is predicted to fit the budget, else the largest.

    A smaller scale means a larger LR image: more of the picture made by the T2I model and
    less invented by SR, at a higher T2I cost (e.g. 2048²: 1024²×2 if it fits, else 512²×4).
    """
    valid = [s for s in sorted(scales) if width % (s * multiple) == 0
             and height % (s * multiple) == 0]
    if not valid:
        return max(scales)
    if budget_s is None:
        return valid[-1]
    for scale in valid:
        if _rough_total(shape_for(scale), costs, policy, fg_share) <= budget_s:
            return scale
    return valid[-1]


def estimate(shape: JobShape, costs: Costs, policy: str, fg_share: float = 0.5) -> Prediction:
    """The prediction before the LR image exists: `fg_share` of the tiles foreground.

    Hybrid is predicted as split-device, which it never exceeds: cheap, and on the safe side.
    """
    n = len(shape.tiles)
    guess = [0.0 if i >= round(fg_share * n) else 1.0 for i in range(n)]
    quick = "split-device" if policy == "hybrid" else policy
    return predict(shape, costs, place(quick, guess, 0.5, shape, costs))


def _rough_total(shape: JobShape, costs: Costs, policy: str, fg_share: float) -> float:
    return estimate(shape, costs, policy, fg_share).total


def to_specs(tiles: Sequence[Tile], scores: Sequence[float],
             placement: Sequence[tuple[str, str]]) -> list[TileSpec]:
    return [
        TileSpec(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h, destination=dest, method=method,
                 score=round(float(s), 4) if math.isfinite(s) else 0.0)
        for t, s, (dest, method) in zip(tiles, scores, placement, strict=True)
    ]
