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

from hybridsr.imaging.compose import device_regions, read_px
from hybridsr.imaging.saliency import select_foreground
from hybridsr.imaging.tiles import Tile
from hybridsr.protocol import ErrorCode, ProtocolError, TileSpec
from hybridsr.server.costs import (
    DEFAULT_BYTES_PER_PX,
    CodecCost,
    CodecCosts,
    DeviceCosts,
    EdgeCosts,
    LinkCosts,
)

EDGE_DIFFUSION = ("edge", "diffusion")
EDGE_LIGHT = ("edge", "light")
DEVICE_LIGHT = ("device", "light")
DEVICE_COPY = ("device", "copy")
REQUEST_BYTES = 2_000  # a `generate` frame, give or take the prompt


@dataclass
class JobShape:
    """What the planner needs to know about one job, apart from the costs."""

    kind: str  # "generate" | "enhance"
    lr_width: int
    lr_height: int
    scale: int
    steps: int
    tiles: Sequence[Tile]
    sr_batch: int = 4
    light_batch: int = 1  # edge light-SR tiles per call (torch batches on the GPU)
    sr_load: int = 0  # other jobs in their diffusion-SR phase: they share that worker
    # With cross-job batching (the backend packs tiles of all jobs into shared calls): the
    # diffusion-SR tiles ahead of this job, queued and running. None: no cross-job batching,
    # each job's calls are its own and `sr_load` jobs take turns.
    sr_tiles_ahead: int | None = None
    light_load: int = 0  # other jobs with edge light SR in progress: they share that worker
    queue_wait_s: float = 0.0
    bytes_per_px: float = DEFAULT_BYTES_PER_PX  # of the codec tiles and the LR image use
    encode_s_per_px: float = 0.0  # edge, per encoded pixel
    decode_s_per_px: float = 0.0  # device, per decoded pixel
    codec: str = "png"
    edge_light: bool = True  # whether the edge offers light SR at all

    @property
    def lr_px(self) -> int:
        return self.lr_width * self.lr_height


@dataclass
class Costs:
    edge: EdgeCosts = field(default_factory=EdgeCosts)
    device: DeviceCosts = field(default_factory=DeviceCosts)
    link: LinkCosts = field(default_factory=LinkCosts)


@dataclass(frozen=True)
class Prediction:
    """Seconds after the edge receives the request."""

    plan_sent: float
    plan_at_device: float
    edge_done: float  # last edge tile at the device
    device_done: float
    total: float  # final image on the device (+ the request's own trip)
    bytes_down: float
    edge_busy: float  # edge compute this job adds


def predict(shape: JobShape, costs: Costs, placement: Sequence[tuple[str, str]]
            ) -> Prediction:
    """Walk the job's timeline: T2I, plan transfer, edge SR batches, the downlink, the device."""
    e, d, link = costs.edge, costs.device, costs.link
    # Each edge worker is shared round-robin with the other jobs using it at the moment.
    sr_share, light_share = 1 + max(0, shape.sr_load), 1 + max(0, shape.light_load)
    t2i = e.t2i(shape.steps, shape.lr_px) if shape.kind == "generate" else 0.0
    # The LR image is encoded before the plan goes out and decoded on the device before its
    # SR starts; the edge's SR workers start once the plan is sent.
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
    sr_turns = []  # how long each of this job's SR batches holds up the job
    for k, (batch, cost) in enumerate(zip(sr_lots, sr_costs, strict=True)):
        if shape.sr_tiles_ahead is None:
            sr_turns.append(cost * sr_share)
        else:
            # Ahead of each batch: a batch of every other job in its SR phase (they take
            # turns), and never fewer than the tiles queued and running now.
            turn = (sr_share - 1) * len(batch)
            ahead = max(turn, shape.sr_tiles_ahead) if k == 0 else turn
            px = max(t.w * t.h for t in batch)
            sr_turns.append(shared_sr_round(e, ahead, len(batch), shape.sr_batch, px))
    # Light SR runs on its own worker, beside diffusion SR; each slows the other as learned.
    sr_done, light_done = side_by_side(
        sr_turns, [c * light_share for c in light_costs], plan_sent,
        e.sr_beside_light, e.light_beside_sr)
    ready: list[tuple[float, int]] = []  # (time the HR tile is ready at the edge, HR px)
    for done, batch in zip([*sr_done, *light_done], [*sr_lots, *light_lots], strict=True):
        ready += [(done, t.w * t.h * shape.scale**2) for t in batch]

    link_free = plan_sent + link.down(plan_bytes)  # the downlink carries one frame at a time
    encoder_free = plan_sent  # tiles are encoded one lot at a time, beside the SR workers
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
    # Each call strays by about `spread` of itself, independently: a side's spread grows
    # with the root of the sum of its calls' squares, not with their sum.
    finish = expected_max(edge_done, device_done,
                          e.spread * math.hypot(*sr_costs, *light_costs),
                          e.spread * math.hypot(*device_calls))
    total = finish + stitch + link.rtt_s / 2 + link.up(REQUEST_BYTES)
    return Prediction(plan_sent, plan_at_device, edge_done, device_done, total, bytes_down,
                      busy + t2i)


def device_sr_calls(shape: JobShape, d: DeviceCosts, tiles: Sequence[Tile]) -> list[float]:
    """Seconds of each light-SR call the device makes for `tiles`: one per region of
    adjacent tiles (as `sdk/job.py` runs them), priced per LR pixel it reads."""
    return [d.sr(read_px(region, d.context, shape.lr_width, shape.lr_height))
            for region in device_regions(tiles)]


def shared_sr_round(e: EdgeCosts, ahead: int, own: int, batch: int, tile_px: int) -> float:
    """Seconds until `own` tiles are done behind `ahead` other tiles, with cross-job batching:
    every tile takes the next free place in a call of up to `batch` tiles, whoever's it is.

    What a job waits for is the tiles ahead of it, not the jobs ahead times their batches:
    tiles of many jobs share a call, and a call of 16 costs little more than one on a GPU.
    """
    batch, total = max(1, batch), max(0, ahead) + own
    full, rest = divmod(total, batch)
    return full * e.sr_batch(batch, tile_px) + (e.sr_batch(rest, tile_px) if rest else 0.0)


def side_by_side(first: Sequence[float], second: Sequence[float], start: float,
                 slow_first: float = 1.0, slow_second: float = 1.0
                 ) -> tuple[list[float], list[float]]:
    """Finish times of two workers' queues of calls (seconds each, when alone), each worker
    running `slow_*` times slower while the other one is busy too."""
    done: tuple[list[float], list[float]] = ([], [])
    queues = (list(first), list(second))
    slow = (slow_first, slow_second)
    left = [q[0] if q else 0.0 for q in queues]  # alone-seconds left of each current call
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
    """E[max(A, B)] of two independent normal finish times (Clark, 1961).

    Edge and device work side by side and the job ends with the later one. At the balance
    point the planner aims for, max(E[A], E[B]) under-predicts: whichever side runs late
    sets the finish. With spreads of 10%, two equal halves end about 6% after either's
    mean; far apart, the later one's mean is the answer.
    """
    theta = math.hypot(sd_a, sd_b)
    if theta <= 1e-12:
        return max(a, b)
    alpha = (a - b) / theta
    cdf = 0.5 * (1 + math.erf(alpha / math.sqrt(2)))
    pdf = math.exp(-alpha * alpha / 2) / math.sqrt(2 * math.pi)
    return a * cdf + b * (1 - cdf) + theta * pdf


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


def _balance(fg: Sequence[bool], scores: Sequence[float], shape: JobShape, costs: Costs
             ) -> list[tuple[str, str]]:
    """Split the background tiles three ways so that the whole job finishes soonest.

    The most salient background tiles may join the foreground in diffusion SR (nearly free
    when batching on an idle GPU), the next ones go to edge light SR, the rest stay on the
    device. Every split point is predicted; on a tie the device keeps the work, so the
    shared edge is spared. The candidates include the fixed splits `split-device` (nothing
    moved), `split-edge` (all to edge light) and `edge-diffusion-all` (all to diffusion),
    so the plan is never predicted slower than any of them.
    """
    background = sorted((i for i, f in enumerate(fg) if not f), key=lambda i: -scores[i])
    n = len(background)
    # At most ~24 × 25 predictions, whatever the tile count: a 1024² LR image has 1,600
    # tiles and each prediction walks all of them.
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
    for name in (lossless, *lossy):
        trial = with_codec(shape, name, codecs.get(name))
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
    """The most denoising steps whose predicted latency fits the budget (else `default`)."""
    if budget_s is None:
        return default
    for steps in range(most, 0, -1):
        trial = JobShape(**{**shape.__dict__, "steps": steps})
        if _rough_total(trial, costs, policy, fg_share) <= budget_s:
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
