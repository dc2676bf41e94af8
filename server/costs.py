"""Cost models the planner predicts with: measured at start-up, refreshed from real jobs.

Every figure is in seconds or bytes. Edge costs come from timing the loaded pipelines;
device and link costs come from the client (its `hello` profile and the `stats` it sends
with each job). Anything missing or absurd falls back to a safe default, with a warning for
a job (a quote, asked for every job on every edge, logs it at DEBUG).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, replace

from hybridsr.protocol import ClientStats, DeviceProfile

log = logging.getLogger(__name__)


def _sane(value: float | None, low: float, high: float) -> bool:
    return value is not None and math.isfinite(value) and low <= value <= high


def fit_t2i(small: tuple[int, float, float], large: tuple[int, float, float]
            ) -> tuple[float, float, float, float] | None:
    """T2I cost as (per call, per px, per step, per step and px) from two image sizes, each
    `(px, seconds at 1 step, seconds at 3 steps)`: two lines through the two sizes.

    Each part stays >= 0 (on a busy CPU the timings can cross): a negative slope becomes a
    flat cost, a negative intercept a pure per-pixel one. The step share is floored at 30% of
    a 1-step call, as one busy moment must not make extra steps look free. None for timings
    no model can come from (not positive, not finite, one size twice).
    """
    if small[0] == large[0] or not all(_sane(v, 1e-9, 3600) for v in (*small[1:], *large[1:])):
        return None

    def line(px1: float, y1: float, px2: float, y2: float) -> tuple[float, float]:
        slope = (y2 - y1) / (px2 - px1)
        if slope <= 0:
            return (y1 + y2) / 2, 0.0
        base = y1 - slope * px1
        return (base, slope) if base >= 0 else (0.0, y2 / px2)

    (px1, one1, three1), (px2, one2, three2) = small, large
    step1, step2 = (max((three - one) / 2, 0.3 * one) for one, three in
                    ((one1, three1), (one2, three2)))
    step_base, per_step_px = line(px1, step1, px2, step2)
    base, per_px = line(px1, max(one1 - step1, 0.0), px2, max(one2 - step2, 0.0))
    return base, per_px, step_base, per_step_px


@dataclass
class EdgeCosts:
    """Edge compute: T2I per step per LR pixel, diffusion SR per batch, light SR per pixel."""

    t2i_s_per_step_px: float = 2e-6  # one denoising step, per LR pixel
    t2i_s_per_px: float = 2e-7  # text encoding + VAE decode, per LR pixel
    # … plus what a call costs whatever its size: on a GPU small images are launch-bound,
    # and a per-pixel model fitted at the profile's 64² predicted a 512² T2I 20x too slow.
    t2i_step_base_s: float = 0.0  # per denoising step
    t2i_base_s: float = 0.0  # per call
    sr_batch_base_s: float = 0.05  # one diffusion-SR call (all its steps), fixed part
    sr_s_per_tile_px: float = 2e-5  # … plus this per LR pixel of every tile in the batch
    light_s_per_px: float = 2e-5  # edge light SR per LR pixel
    service_s: float = 1.0  # mean edge busy time per job, for queueing estimates
    alpha: float = 0.3  # weight of the newest observation in the running averages
    spread: float = 0.1  # typical relative error of one SR call's prediction (robust)
    # How much slower diffusion SR runs while light SR computes beside it, and the other way
    # round: 1 where they use different hardware (a GPU and the CPU), up to 2 and more where
    # they share cores. Learned from calls that overlapped (see `observe_sr`).
    sr_beside_light: float = 1.0
    light_beside_sr: float = 1.0

    def __post_init__(self) -> None:
        # Recent diffusion-SR calls as (tile pixels in the batch, seconds), refitted as a
        # line; recent relative errors of the SR and light predictions. Not fields: the
        # costs stay plain numbers for reports and `asdict`.
        # Short windows: long enough that one stalled call is outvoted, short enough to
        # follow a machine whose load changes (a shared CPU, a GPU taking other work).
        self._sr_history: deque[tuple[int, float]] = deque(maxlen=16)
        self._residuals: deque[float] = deque(maxlen=32)
        self._light_history: deque[float] = deque(maxlen=9)
        self._beside: dict[str, deque[float]] = {"sr": deque(maxlen=9), "light": deque(maxlen=9)}

    def t2i(self, steps: int, lr_px: int) -> float:
        return (self.t2i_base_s + lr_px * self.t2i_s_per_px
                + steps * (self.t2i_step_base_s + lr_px * self.t2i_s_per_step_px))

    def sr_batch(self, tiles: int, tile_px: int) -> float:
        return self.sr_batch_base_s + tiles * tile_px * self.sr_s_per_tile_px

    def light(self, tile_px: int) -> float:
        return tile_px * self.light_s_per_px

    def observe_t2i(self, seconds: float, steps: int, lr_px: int) -> None:
        """Scale the T2I model toward what a real job took."""
        predicted = self.t2i(steps, lr_px)
        if _sane(seconds, 1e-6, 3600) and predicted > 0:
            ratio = self._step(seconds / predicted)
            self.t2i_s_per_px *= ratio
            self.t2i_s_per_step_px *= ratio
            self.t2i_base_s *= ratio
            self.t2i_step_base_s *= ratio

    def _step(self, error: float) -> float:
        """How far to move toward an observation: all the way when the model is off by more
        than 2x (e.g. a start-up profile taken while the CPU was oversubscribed)."""
        return error if not 0.5 <= error <= 2.0 else 1 + self.alpha * (error - 1)

    def observe_sr(self, seconds: float, tiles: int, tile_px: int, beside: float = 0.0
                   ) -> None:
        """Refit fixed and per-pixel cost from recent calls of different batch sizes.

        Scaling both parts by one ratio cannot learn that a batch of 4 costs far less than
        4 batches of 1 (the point of batching on a GPU); a line can. `beside`: the share of
        the call during which light SR computed too; such calls teach the slow-down instead.
        """
        if not _sane(seconds, 1e-6, 3600) or tiles <= 0 or tile_px <= 0:
            return
        if self._learn_beside("sr", seconds, self.sr_batch(tiles, tile_px), beside):
            return
        self._residual(seconds, self.sr_batch(tiles, tile_px))
        self._sr_history.append((tiles * tile_px, seconds))
        fitted = _theil_sen(list(self._sr_history))
        if fitted is not None:
            self.sr_batch_base_s, self.sr_s_per_tile_px = fitted
            return
        predicted = self.sr_batch(tiles, tile_px)  # one batch size seen so far: scale
        if predicted > 0:
            ratio = self._step(seconds / predicted)
            self.sr_batch_base_s *= ratio
            self.sr_s_per_tile_px *= ratio

    def observe_light(self, seconds: float, tile_px: int, beside: float = 0.0) -> None:
        """`tile_px`: pixels of the tile itself; the context around it is part of the cost."""
        if _sane(seconds, 1e-7, 600) and tile_px > 0 and self.light_s_per_px > 0:
            if self._learn_beside("light", seconds, self.light(tile_px), beside):
                return
            self._residual(seconds, self.light(tile_px))
            self._light_history.append(seconds / tile_px)
            if len(self._light_history) >= 3:  # the median: a busy moment is not the norm
                self.light_s_per_px = statistics.median(self._light_history)
            else:
                self.light_s_per_px *= self._step(seconds / tile_px / self.light_s_per_px)

    def _learn_beside(self, kind: str, seconds: float, alone: float, beside: float) -> bool:
        """A call that overlapped the other SR worker for `beside` of its time: learn the
        slow-down factor f from seconds = alone × (1 + (f − 1) × beside). True: consumed."""
        if beside < 0.25 or alone <= 0:
            return False
        factor = min(max(1 + (seconds / alone - 1) / beside, 1.0), 4.0)
        self._beside[kind].append(factor)
        value = statistics.median(self._beside[kind])
        if kind == "sr":
            self.sr_beside_light = value
        else:
            self.light_beside_sr = value
        return True

    def _residual(self, seconds: float, predicted: float) -> None:
        """Learn how far one call strays from its prediction (1.48 × the median absolute
        relative error: a standard deviation that one stalled call does not blow up)."""
        if predicted > 0:
            self._residuals.append(abs(seconds / predicted - 1))
            if len(self._residuals) >= 5:
                spread = 1.4826 * statistics.median(self._residuals)
                self.spread = min(max(spread, 0.02), 0.5)

    def observe_service(self, seconds: float) -> None:
        if _sane(seconds, 1e-6, 3600):
            self.service_s += self.alpha * (seconds - self.service_s)


def _theil_sen(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Fixed and per-pixel cost of SR calls as a robust line (Theil–Sen: the median of the
    pairwise slopes). A least-squares line was dragged up by the calls that ran while the
    CPU was busy elsewhere, and over-predicted every ordinary call after them."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1 :] if x2 != x1]
    if len(points) < 3 or not slopes:
        return None
    slope = max(statistics.median(slopes), 0.0)
    base = max(statistics.median(y - slope * x for x, y in points), 0.0)
    return base, slope


@dataclass(frozen=True)
class DeviceCosts:
    """The device's light SR speed; slow defaults so a silent device gets little work.

    `sr_s_per_px` is per LR pixel the model reads: a region of adjacent tiles plus the
    `context` the device's SR reads around it (`imaging.compose.read_px`).
    """

    sr_s_per_px: float = 1e-4  # about 0.1 s per 32x32 LR tile: a slow phone-class device
    stitch_s_per_hr_px: float = 5e-8
    context: int = 0  # LR pixels read around each region (the device says; 0: unknown)

    def sr(self, tile_px: int) -> float:
        return tile_px * self.sr_s_per_px

    @classmethod
    def from_client(cls, profile: DeviceProfile | None, stats: ClientStats | None,
                    quiet: bool = False) -> DeviceCosts:
        """`quiet`: a fallback is logged at DEBUG, not WARNING (quotes: many, and cheap)."""
        costs = cls()
        if profile is not None and profile.sr_context is not None:
            costs = replace(costs, context=profile.sr_context)
        level = logging.DEBUG if quiet else logging.WARNING
        measured = stats.device_sr_s_per_lr_px if stats else None
        if measured is None and profile is not None and profile.sr_ms_per_lr_pixel is not None:
            measured = profile.sr_ms_per_lr_pixel / 1000.0
        if measured is None:
            log.log(level, "device sent no SR timing; assuming a slow device")
        elif _sane(measured, 1e-9, 0.1):
            costs = replace(costs, sr_s_per_px=measured)
        else:
            log.log(level, "ignoring absurd device SR timing %r s/px; assuming a slow device",
                    measured)
        return costs


@dataclass(frozen=True)
class LinkCosts:
    """Round trip and bandwidth between this device and the edge."""

    rtt_s: float = 0.05
    down_bytes_per_s: float = 2.5e6  # 20 Mbit/s
    up_bytes_per_s: float = 1.25e6  # 10 Mbit/s

    def down(self, nbytes: float) -> float:
        return nbytes / self.down_bytes_per_s

    def up(self, nbytes: float) -> float:
        return nbytes / self.up_bytes_per_s

    @classmethod
    def from_client(cls, stats: ClientStats | None, quiet: bool = False) -> LinkCosts:
        """`quiet`: a fallback is logged at DEBUG, not WARNING (quotes: many, and cheap)."""
        costs = cls()
        level = logging.DEBUG if quiet else logging.WARNING
        if stats is None:
            log.log(level, "device sent no link measurements; assuming %s", costs)
            return costs
        fields = {}
        if _sane(stats.rtt_s, 0.0, 30.0):
            fields["rtt_s"] = stats.rtt_s
        if _sane(stats.down_bytes_per_s, 1e3, 1e11):
            fields["down_bytes_per_s"] = stats.down_bytes_per_s
        if _sane(stats.up_bytes_per_s, 1e3, 1e11):
            fields["up_bytes_per_s"] = stats.up_bytes_per_s
        if len(fields) < 3:
            log.log(level, "link measurements missing or absurd (%s); defaults for the rest",
                    stats)
        return replace(costs, **fields)


# Encoded size of an image, bytes per pixel, before anything is measured. PNG of
# photographic content is 1.5-2.5 B/px; each edge learns it per codec (`CodecCosts`).
DEFAULT_BYTES_PER_PX = 2.0


@dataclass
class CodecCost:
    """One tile codec: encoded bytes per pixel, edge encode and device decode seconds per px."""

    bytes_per_px: float
    encode_s_per_px: float
    decode_s_per_px: float


# Starting points, from NOTES.md (one 512² SR tile of a photo, Pillow, 2-core x86_64) and
# `benchmarks/codecs.py`; the edge refines bytes and encode time from every tile it sends.
# Decode time stays this machine's figure: devices do not report theirs yet. PNG: our own
# encoder (protocol/png.py, ISA-L) since 2026-11-30, 8% fewer bytes and ~9x less CPU than
# Pillow's level 1 (2.1 against 18.6 ms of CPU for a 512² tile).
DEFAULT_CODEC_COSTS: dict[str, tuple[float, float, float]] = {
    "png": (1.4, 1.0e-8, 3.0e-8),
    "webp": (1.3, 2.3e-7, 3.0e-8),
    "jpeg-q95": (0.2, 8.0e-9, 1.0e-8),
    "jpeg-q90": (0.13, 4.0e-9, 8.0e-9),
}


class CodecCosts:
    """What each codec costs on this edge: learned from the tiles it sends and probes."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.table = {name: CodecCost(*v) for name, v in DEFAULT_CODEC_COSTS.items()}
        self.seen: set[str] = set()
        self._encode: dict[str, deque[float]] = {}  # recent encode seconds per px

    def get(self, name: str) -> CodecCost:
        return self.table[name]

    def observe(self, name: str, nbytes: int, px: int, seconds: float) -> None:
        """One encoded image; the first one of a codec replaces its default outright.

        Bytes follow a running average (they change with the content); the encode time is
        the median of the last 9 (an encode timed while the edge's CPU was busy is not the
        norm, and the planner's codec choice should not follow it).
        """
        cost = self.table.get(name)
        if cost is None or px <= 0 or not _sane(seconds, 0.0, 600) or nbytes <= 0:
            return
        a = 1.0 if name not in self.seen else self.alpha
        self.seen.add(name)
        cost.bytes_per_px += a * (nbytes / px - cost.bytes_per_px)
        recent = self._encode.setdefault(name, deque(maxlen=9))
        recent.append(seconds / px)
        cost.encode_s_per_px = statistics.median(recent)

    def report(self) -> dict[str, dict[str, float]]:
        return {n: {"bytes_per_px": round(c.bytes_per_px, 4),
                    "encode_s_per_px": c.encode_s_per_px, "decode_s_per_px": c.decode_s_per_px}
                for n, c in self.table.items()}
