"""The Ray Serve deployment whose replicas hold the edge's pipelines (imported only with Ray).

One replica = one `load_models` (T2I and diffusion SR share weights for img2img presets)
plus the light-SR runtime, each pipeline behind its own single thread (diffusers pipelines
are not thread-safe). Diffusion-SR tiles from any job, and any front door, meet in one
`@serve.batch` queue per replica: tiles of one shape and scale share a pipeline call, each
with its own prompt and generator, so a tile's pixels do not depend on its batch-mates.

Every call returns its compute seconds (timed in the pipeline thread), so the front door's
cost model learns from the replicas, not from its own view of queueing and transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from hybridsr.server.backends import pad_to_multiple, timed

DEPLOYMENT = "EdgeModels"




class EdgeModels:
    """A replica: the preset's pipelines and light SR, one thread per pipeline."""

    def __init__(self, spec: dict) -> None:
        from hybridsr.imaging.lightsr import create_backend
        from hybridsr.server.models import load_models
        from hybridsr.server.presets import get_preset

        self.preset = get_preset(spec["preset"], spec.get("t2i_model"), spec.get("sr_model"))
        if spec.get("torch_threads"):
            import torch

            torch.set_num_threads(spec["torch_threads"])
        self.t2i, self.sr, self.device = load_models(self.preset, spec.get("device", "auto"))
        self.light = create_backend("auto", spec.get("light_threads"))
        self._pools = {k: ThreadPoolExecutor(1, thread_name_prefix=k)
                       for k in ("t2i", "sr", "light")}
        self._sr_batch.set_max_batch_size(max(1, int(spec.get("sr_batch", 4))))
        self._sr_batch.set_batch_wait_timeout_s(spec.get("sr_batch_wait_ms", 5.0) / 1000)
        self.batches: deque[tuple[int, int]] = deque(maxlen=256)  # (tiles, jobs) per SR call
        self.running = {"t2i": 0, "sr": 0, "light": 0}  # pipeline calls now computing
        self.cross_job = bool(spec.get("cross_job_batching", True))
        self.held_tiles = 0  # SR tiles this replica holds: queued for a batch or computing

    def info(self) -> dict:
        """What the front door tells clients, and its light-SR context."""
        return {"t2i": self.t2i.name, "sr": self.sr.name, "device": self.device,
                "light": self.light.name, "light_context": self.light.context,
                "sr_context": int(getattr(self.sr, "context", 0)), "pid": os.getpid()}

    def stats(self) -> dict:
        return {"pid": os.getpid(), "running": dict(self.running),
                "held_tiles": self.held_tiles, "batches": list(self.batches)}

    async def _run(self, kind: str, fn: Callable[[], Any]) -> Any:
        self.running[kind] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pools[kind], fn)
        finally:
            self.running[kind] -= 1

    async def text_to_image(self, prompt: str, negative_prompt: str, width: int, height: int,
                            steps: int, seed: int | None) -> AsyncIterator[tuple]:
        """Stream ("step", done, total) events, then ("image", array, seconds).

        A cancelled call (`response.cancel()`) raises CancelledError here; the pipeline
        thread then stops at its next step through the cancel flag.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple] = asyncio.Queue()
        cancelled = threading.Event()

        def on_step(done: int, total: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("step", done, total))

        work = asyncio.ensure_future(self._run("t2i", timed(lambda: self.t2i(
            prompt, negative_prompt, width, height, steps, seed, on_step, cancelled))))
        try:
            while not work.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            image, seconds = work.result()
            yield ("image", image, seconds)
        except BaseException:
            cancelled.set()
            raise

    async def sr_tile(self, item: dict) -> dict:
        """Diffusion SR of one tile: {"image", "scale", "prompt", "negative_prompt", "seed",
        "job_id", "tile_px" (the tile's own pixels, without its context)} → {"image",
        "seconds", "tiles", "jobs", "tile_px"} or {"error"}."""
        self.held_tiles += 1
        try:
            return await self._sr_batch(item)
        finally:
            self.held_tiles -= 1

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def _sr_batch(self, items: list[dict]) -> list[dict]:
        """Diffusion SR of tiles from any jobs: one pipeline call per (scale, padded shape).

        A failing group returns its error as a value, so it fails only its own tiles' jobs.
        """
        m = self.preset.size_multiple
        groups: dict[tuple, list[int]] = {}
        padded = [pad_to_multiple(it["image"], m) for it in items]
        for i, (it, p) in enumerate(zip(items, padded, strict=True)):
            job = None if self.cross_job else it["job_id"]  # off: one job's tiles per call
            groups.setdefault((it["scale"], p.shape, job), []).append(i)
        out: list[dict] = [{} for _ in items]
        for (scale, _, _), idx in groups.items():
            jobs = len({items[i]["job_id"] for i in idx})
            self.batches.append((len(idx), jobs))

            def call(idx=idx, scale=scale):
                return self.sr([padded[i] for i in idx], scale,
                               [items[i]["prompt"] for i in idx],
                               [items[i]["negative_prompt"] for i in idx],
                               [items[i]["seed"] for i in idx])

            try:
                images, seconds = await self._run("sr", timed(call))
            except Exception as exc:  # this group's tiles fail, their batch-mates do not
                for i in idx:
                    out[i] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            for k, i in enumerate(idx):
                h, w = items[i]["image"].shape[:2]
                out[i] = {"image": images[k][: h * scale, : w * scale],
                          # the whole call's figures travel with its first tile only
                          "seconds": seconds if k == 0 else None, "tiles": len(idx),
                          "jobs": jobs, "tile_px": items[i].get(
                              "tile_px", padded[i].shape[0] * padded[i].shape[1])}
        return out

    async def light_sr(self, crop: np.ndarray, scale: int) -> tuple[np.ndarray, float]:
        return await self._run("light", timed(lambda: self.light.upscale(crop, scale)))


def deployment_options(spec: dict) -> dict:
    """Serve options from the operator's flags: replicas, GPUs, backpressure limits."""
    sr_batch = max(1, int(spec.get("sr_batch", 4)))
    lo = int(spec.get("min_replicas") or spec.get("replicas") or 1)
    hi = int(spec.get("max_replicas") or max(lo, int(spec.get("replicas") or 1)))
    actor: dict[str, float] = {"num_cpus": float(spec.get("replica_cpus", 1.0))}
    if spec.get("gpus"):
        actor["num_gpus"] = 1
    options: dict[str, Any] = dict(
        ray_actor_options=actor,
        # a full SR batch, plus a T2I stream and light-SR calls beside it (`max_ongoing`
        # overrides it: a Serve config file's operator, or a test of backpressure)
        max_ongoing_requests=int(spec.get("max_ongoing") or 2 * sr_batch + 4),
        max_queued_requests=int(spec.get("max_queued", 256)),
        health_check_period_s=float(spec.get("health_check_period_s", 2.0)),
        graceful_shutdown_timeout_s=5.0,
    )
    if hi > lo:
        options["autoscaling_config"] = {
            "min_replicas": lo, "max_replicas": hi, "initial_replicas": lo,
            "target_ongoing_requests": sr_batch, "upscale_delay_s": 10,
            "downscale_delay_s": 300,
        }
    else:
        options["num_replicas"] = lo
    return options


SCALING_KEYS = ("replicas", "min_replicas", "max_replicas", "replica_cpus", "gpus", "max_queued",
                "max_ongoing", "health_check_period_s")


def build_app(spec: dict):
    """The Serve application for `spec` (a Serve config file's `args`: see README).

    Replicas get only what builds their models, and the deployment's version names those
    (and our code's version), so a change of scale alone is applied in place by Serve
    (replicas added or removed). Without a version, every `serve.run` gets a random one
    and replaces all replicas, models and all.
    """
    deployment = serve.deployment(EdgeModels, name=DEPLOYMENT)
    model_spec = {k: v for k, v in spec.items() if k not in SCALING_KEYS}
    # `version` is internal to Serve's Python API since 2.x (its configs derive their own)
    return deployment.options(version=_model_version(model_spec), _internal=True,
                              **deployment_options(spec)).bind(model_spec)


def _model_version(model_spec: dict) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("hybridsr")
    except PackageNotFoundError:  # run from a source tree
        ours = "source"
    text = json.dumps([ours, model_spec], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
