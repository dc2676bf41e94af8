"""Cost models the planner predicts with: measured at start-up, refreshed from real jobs.

Every figure is in seconds or bytes. Edge costs come from timing the loaded pipelines;
device and link costs come from the client (its `hello` profile and the `stats` it sends
with each job). Anything missing or absurd falls back to a safe default, with a warning.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, replace

from hybridsr.protocol import ClientStats, DeviceProfile

log = logging.getLogger(__name__)


def _sane(value: float | None, low: float, high: float) -> bool:
    return value is not None and math.isfinite(value) and low <= value <= high


@dataclass
class EdgeCosts:
    """Edge compute: T2I per step per LR pixel, diffusion SR per batch, light SR per pixel."""

    t2i_s_per_step_px: float = 2e-6  # one denoising step, per LR pixel
    t2i_s_per_px: float = 2e-7  # text encoding + VAE decode, per LR pixel
    sr_batch_base_s: float = 0.05  # one diffusion-SR call (all its steps), fixed part
    sr_s_per_tile_px: float = 2e-5  # … plus this per LR pixel of every tile in the batch
    light_s_per_px: float = 2e-5  # edge light SR per LR pixel
    service_s: float = 1.0  # mean edge busy time per job, for queueing estimates
    alpha: float = 0.3  # weight of the newest observation in the running averages

    def __post_init__(self) -> None:
        # Recent diffusion-SR calls as (tile pixels in the batch, seconds), refitted as a
        # line. Not a field: the costs stay plain numbers for reports and `asdict`.
        self._sr_history: deque[tuple[int, float]] = deque(maxlen=64)

    def t2i(self, steps: int, lr_px: int) -> float:
        return lr_px * (self.t2i_s_per_px + steps * self.t2i_s_per_step_px)

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

    def _step(self, error: float) -> float:
        """How far to move toward an observation: all the way when the model is off by more
        than 2x (e.g. a start-up profile taken while the CPU was oversubscribed)."""
        return error if not 0.5 <= error <= 2.0 else 1 + self.alpha * (error - 1)

    def observe_sr(self, seconds: float, tiles: int, tile_px: int) -> None:
        """Refit fixed and per-pixel cost from recent calls of different batch sizes.

        Scaling both parts by one ratio cannot learn that a batch of 4 costs far less than
        4 batches of 1 (the point of batching on a GPU); a least-squares line can.
        """
        if not _sane(seconds, 1e-6, 3600) or tiles <= 0 or tile_px <= 0:
            return
        self._sr_history.append((tiles * tile_px, seconds))
        xs = [x for x, _ in self._sr_history]
        ys = [y for _, y in self._sr_history]
        n = len(xs)
        mean_x, mean_y = sum(xs) / n, sum(ys) / n
        var = sum((x - mean_x) ** 2 for x in xs)
        if var > 0 and n >= 3:
            slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
            slope = max(slope, 0.0)
            base = max(mean_y - slope * mean_x, 0.0)
            self.sr_batch_base_s, self.sr_s_per_tile_px = base, slope
            return
        predicted = self.sr_batch(tiles, tile_px)  # one batch size seen so far: scale
        if predicted > 0:
            ratio = self._step(seconds / predicted)
            self.sr_batch_base_s *= ratio
            self.sr_s_per_tile_px *= ratio

    def observe_light(self, seconds: float, tile_px: int) -> None:
        """`tile_px`: pixels of the tile itself; the context around it is part of the cost."""
        if _sane(seconds, 1e-7, 600) and tile_px > 0 and self.light_s_per_px > 0:
            self.light_s_per_px *= self._step(seconds / tile_px / self.light_s_per_px)

    def observe_service(self, seconds: float) -> None:
        if _sane(seconds, 1e-6, 3600):
            self.service_s += self.alpha * (seconds - self.service_s)


@dataclass(frozen=True)
class DeviceCosts:
    """The device's light SR speed; slow defaults so a silent device gets little work."""

    sr_s_per_px: float = 1e-4  # about 0.1 s per 32x32 LR tile: a slow phone-class device
    stitch_s_per_hr_px: float = 5e-8

    def sr(self, tile_px: int) -> float:
        return tile_px * self.sr_s_per_px

    @classmethod
    def from_client(cls, profile: DeviceProfile | None, stats: ClientStats | None
                    ) -> DeviceCosts:
        costs = cls()
        measured = stats.device_sr_s_per_lr_px if stats else None
        if measured is None and profile is not None and profile.sr_ms_per_lr_pixel is not None:
            measured = profile.sr_ms_per_lr_pixel / 1000.0
        if measured is None:
            log.warning("device sent no SR timing; assuming a slow device")
        elif _sane(measured, 1e-9, 0.1):
            costs = replace(costs, sr_s_per_px=measured)
        else:
            log.warning("ignoring absurd device SR timing %r s/px; assuming a slow device",
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
    def from_client(cls, stats: ClientStats | None) -> LinkCosts:
        costs = cls()
        if stats is None:
            log.warning("device sent no link measurements; assuming %s", costs)
            return costs
        fields = {}
        if _sane(stats.rtt_s, 0.0, 30.0):
            fields["rtt_s"] = stats.rtt_s
        if _sane(stats.down_bytes_per_s, 1e3, 1e11):
            fields["down_bytes_per_s"] = stats.down_bytes_per_s
        if _sane(stats.up_bytes_per_s, 1e3, 1e11):
            fields["up_bytes_per_s"] = stats.up_bytes_per_s
        if len(fields) < 3:
            log.warning("link measurements missing or absurd (%s); defaults for the rest",
                        stats)
        return replace(costs, **fields)


# Encoded size of an image, bytes per pixel. PNG of photographic content is 1.5-2.5 B/px;
# measured per edge from what it really sends (see Edge.observe_bytes).
DEFAULT_BYTES_PER_PX = 2.0
