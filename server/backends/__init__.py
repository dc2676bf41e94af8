"""The seam between a job and the pipelines: one interface, one implementation per engine.

`server/job.py` asks a `Backend` for T2I, diffusion SR of tiles and light SR, and reads its
load and costs for the planner; it never touches a pipeline or a worker itself. `local` runs
the pipelines in this process, one worker thread each; `ray` runs them in Ray Serve replicas
(`pip install "hybridsr[cluster]"`; Ray is imported only when that backend starts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from hybridsr.server.costs import EdgeCosts

StepCallback = Callable[[int, int], None]  # (step done, total); called from any thread
T = TypeVar("T")
SRCallObserver = Callable[[int, int], None]  # (tiles, distinct jobs) of one SR pipeline call


class BackendStartError(RuntimeError):
    """The backend cannot start (missing package, unreachable cluster); one line says why."""


@dataclass(frozen=True)
class SRTile:
    """One LR tile to enhance, with everything that decides its pixels.

    Prompt, seed and scale belong to the tile, not to a batch: a tile gives the same output
    whichever tiles (of whichever jobs) share its pipeline call.
    """

    image: np.ndarray  # LR crop, HxWx3 uint8: the tile and `context` pixels on every side
    scale: int
    prompt: str
    negative_prompt: str
    seed: int | None
    job_id: str = ""
    context: int = 0  # LR pixels around the tile in `image` (see `Backend.sr_context`)

    @property
    def tile_px(self) -> int:
        """Pixels of the tile itself: costs are per tile pixel, its context included."""
        h, w = self.image.shape[:2]
        return max(h - 2 * self.context, 1) * max(w - 2 * self.context, 1)


@dataclass(frozen=True)
class BackendInfo:
    """What the edge tells clients about its models."""

    t2i: str
    sr: str
    device: str  # "cpu", "cuda", ... where the pipelines run
    light: str  # the light-SR backend's name


@dataclass(frozen=True)
class BackendLoad:
    """The backend's load as the planner sees it now."""

    t2i_waiting: int = 0  # T2I calls queued behind the one running
    sr_tiles_waiting: int = 0  # diffusion-SR tiles queued, over all jobs
    light_waiting: int = 0  # light-SR calls queued
    sr_tiles_running: int = 0  # diffusion-SR tiles in the calls running now
    sr_shared: bool = False  # whether SR calls are shared by tiles of different jobs


class Backend(Protocol):
    """Where the edge's models run. Every method may be called from the event loop at once
    by many jobs; the backend serialises, batches and applies backpressure itself."""

    name: str
    costs: EdgeCosts  # the planner's edge cost model, refined by every call
    on_sr_call: SRCallObserver | None  # set by the edge: called once per SR pipeline call

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def info(self) -> BackendInfo: ...

    def load(self) -> BackendLoad: ...

    def health(self) -> dict:
        """What `/healthz` and `/metrics` show about the backend (replicas, calls in flight)."""
        ...

    @property
    def light_context(self) -> int:
        """LR pixels of context a light-SR tile needs for seamless output."""
        ...

    @property
    def sr_context(self) -> int:
        """LR pixels of context around each tile that heavy SR is given (0: the tile alone);
        the HR of the whole window comes back and the job cuts its tile out."""
        ...

    async def text_to_image(
        self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
        seed: int | None, on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> np.ndarray: ...

    async def super_resolve(
        self, tiles: list[SRTile], on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> list[np.ndarray]:
        """Diffusion SR of one job's tiles; returns HR tiles of exactly scale × input size."""
        ...

    async def light_sr(self, crop: np.ndarray, scale: int, tile_px: int | None = None
                       ) -> np.ndarray:
        """Light SR of one LR crop (tile plus context); `tile_px` (the tile's own pixels)
        teaches the cost model, None does not."""
        ...

    @property
    def light_batch(self) -> int:
        """Light-SR crops worth sending in one `light_sr_batch` call (1: one at a time)."""
        ...

    async def light_sr_batch(self, crops: list[np.ndarray], scale: int, tile_px: int,
                             observe: bool = True) -> list[np.ndarray]:
        """Light SR of several crops in one call; `tile_px`: their tiles' pixels in all
        (`observe=False`: the cost model does not learn from it)."""
        ...


def timed(fn: Callable[[], T]) -> Callable[[], tuple[T, float]]:
    """Time `fn` inside the worker thread that runs it, so queueing is not counted as
    compute (the cost model learns from these seconds)."""

    def run() -> tuple[T, float]:
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0

    return run


def pad_to_multiple(tile: np.ndarray, m: int) -> np.ndarray:
    """Edge-pad a tile to the model's size factor; callers crop the output back."""
    h, w = tile.shape[:2]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return tile
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode="edge")


BACKENDS = ("local", "ray")


def create_backend(name: str, config, preset) -> Backend:
    """The backend an operator asked for (`--backend`)."""
    if name == "local":
        from hybridsr.server.backends.local import LocalBackend

        return LocalBackend(config, preset)
    if name == "ray":
        from hybridsr.server.backends.ray import RayBackend

        return RayBackend(config, preset)
    raise ValueError(f"unknown backend {name!r}; choose from: {', '.join(BACKENDS)}")
