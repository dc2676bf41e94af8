"""The `ray` backend: the pipelines run in Ray Serve replicas; this edge is a Ray driver.

The aiohttp edge keeps sessions, plans and job logs; every model call goes through a
`DeploymentHandle` to the `EdgeModels` deployment (`ray_deployments.py`). Either this front
door deploys its own application (`--ray-address local` starts Ray in this process), or it
attaches to one that `hybridsr-edge deploy` runs on a cluster (`--ray-app NAME`), shared by
several front doors.

What Serve gives and how it maps onto the edge:
- backpressure (`BackPressureError`, from `max_queued_requests`) → `busy` with a retry hint
  before the plan; after it, tiles wait and retry (the plan is a promise);
- a replica that dies (`ActorDiedError` and kin) → the call is retried on another or a
  replaced replica;
- a cancelled job → `response.cancel()` on every outstanding call (cancelling the awaiting
  asyncio task alone does not reach the replica);
- costs → every call returns its compute seconds; load → this edge's in-flight calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from hybridsr.protocol import ErrorCode, ProtocolError
from hybridsr.server.backends import (
    BackendInfo,
    BackendLoad,
    BackendStartError,
    SRCallObserver,
    SRTile,
    StepCallback,
)
from hybridsr.server.config import EdgeConfig
from hybridsr.server.costs import EdgeCosts
from hybridsr.server.models import JobCancelled
from hybridsr.server.presets import Preset

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.05  # how often an outstanding call looks at its job's cancel flag
RETRIES = 4  # per call, after a replica died or the queue was full
RETRY_AFTER_S = 1.0  # the hint a refused job gets


def import_ray():
    """`ray` and `ray.serve`, or a one-line error saying how to get them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise BackendStartError(
            f"the ray backend needs Ray Serve ({exc.name} is missing): "
            "pip install 'hybridsr[cluster]'") from None
    return ray, serve


def connect(address: str, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start Ray here for "local"; True if we started it.

    Already connected (a test session, a notebook): reuse that instance.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address != "local" and (os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(
            os.path.expanduser("~/.ray/auth_token"))):
        # Ray 2.60 clusters use token auth by default, but a joining driver only sends its
        # token when told to (read when ray is imported, so before that).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray, serve = import_ray()
    if ray.is_initialized():
        return False
    if address not in ("local", "auto"):
        _check_reachable(address)
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        serve.start(proxy_location="Disabled")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendStartError(
            f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]} "
            "(a cluster with token auth needs its token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token)") from None
    return address == "local"


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: `ray.init` waits a long time for an absent cluster."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise BackendStartError(
            f"cannot reach the Ray cluster at {address!r} (expected host:port of its head "
            f"node): {getattr(exc, 'strerror', None) or exc}") from None


def app_spec(config: EdgeConfig, gpus: bool) -> dict:
    """What a replica needs to build its pipelines, and the Serve options it runs under."""
    return dict(
        preset=config.preset, t2i_model=config.t2i_model, sr_model=config.sr_model,
        device=config.device, torch_threads=config.torch_threads,
        light_threads=config.light_threads, sr_batch=config.sr_batch,
        sr_batch_wait_ms=config.sr_batch_wait_ms,
        cross_job_batching=config.cross_job_batching, replicas=config.replicas,
        min_replicas=config.min_replicas, max_replicas=config.max_replicas,
        replica_cpus=config.replica_cpus, gpus=gpus,
        max_queued=config.max_jobs * (config.sr_batch + 2),
    )


def deploy(config: EdgeConfig, app_name: str, wait: bool = True) -> None:
    """Run (or rescale) the model deployment as Serve application `app_name`; `wait`: until
    it runs, else return once the controller has it."""
    ray, serve = import_ray()
    from hybridsr.server.backends.ray_deployments import build_app

    gpus = ray.cluster_resources().get("GPU", 0) > 0  # one GPU per replica where there are any
    app = build_app(app_spec(config, gpus))
    if wait:
        serve.run(app, name=app_name, route_prefix=None)
    else:
        serve._run(app, name=app_name, route_prefix=None, _blocking=False)


class RayBackend:
    name = "ray"

    def __init__(self, config: EdgeConfig, preset: Preset) -> None:
        self.config = config
        self.preset = preset
        self.costs = EdgeCosts()
        self.on_sr_call: SRCallObserver | None = None  # (tiles, jobs) of every SR call seen
        self.owns_app = not config.ray_app
        self.app_name = config.ray_app or f"hybridsr-{preset.name}-{uuid.uuid4().hex[:6]}"
        self.handle: Any = None
        self._info: dict = {}
        self._started_ray = False
        self.inflight = {"t2i": 0, "sr": 0, "light": 0}
        self.replicas = 0  # RUNNING replicas, from serve.status()
        self.retries = 0  # calls repeated after a replica died or the queue was full
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        address = self.config.ray_address or "local"
        self._started_ray = await asyncio.to_thread(connect, address)
        _, serve = import_ray()
        if self.owns_app:
            log.info("deploying Serve app %s on %s", self.app_name, address)
            await asyncio.to_thread(deploy, self.config, self.app_name)
        try:
            self.handle = await asyncio.to_thread(serve.get_app_handle, self.app_name)
        except Exception as exc:  # no such application on this cluster
            raise BackendStartError(
                f"no Serve application {self.app_name!r} on the cluster at {address!r} "
                f"(start it with `hybridsr-edge deploy --ray-app {self.app_name}`): "
                f"{type(exc).__name__}") from None
        self._info = await self._call("t2i", lambda: self.handle.info.remote())
        await self._refresh_replicas()
        self._watch = asyncio.create_task(self._watch_replicas())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        _, serve = import_ray()
        if self.owns_app and self.handle is not None:
            await asyncio.to_thread(serve.delete, self.app_name)
        if self._started_ray:
            import ray

            await asyncio.to_thread(serve.shutdown)
            await asyncio.to_thread(ray.shutdown)

    def info(self) -> BackendInfo:
        i = self._info
        return BackendInfo(t2i=i["t2i"], sr=i["sr"], device=i["device"], light=i["light"])

    def load(self) -> BackendLoad:
        r, n = max(self.replicas, 1), self.inflight
        running = min(n["sr"], r * self.config.sr_batch)  # what the replicas' batches hold
        return BackendLoad(t2i_waiting=max(0, n["t2i"] - r),
                           sr_tiles_waiting=n["sr"] - running, sr_tiles_running=running,
                           light_waiting=max(0, n["light"] - r),
                           sr_shared=self.config.cross_job_batching)

    def health(self) -> dict:
        return {"backend": self.name, "app": self.app_name, "replicas": self.replicas,
                "inflight": dict(self.inflight), "retries": self.retries}

    @property
    def light_context(self) -> int:
        return int(self._info["light_context"])

    @property
    def sr_context(self) -> int:
        return int(self._info.get("sr_context", 0))

    async def text_to_image(
        self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
        seed: int | None, on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> np.ndarray:
        def stream():
            return self.handle.options(stream=True).text_to_image.remote(
                prompt, negative_prompt, width, height, steps, seed)

        image, seconds = await self._call("t2i", stream, cancelled, stream=True,
                                          on_step=on_step, busy_is_error=True)
        if observe:
            self.costs.observe_t2i(seconds, steps, width * height)
        return image

    async def super_resolve(
        self, tiles: list[SRTile], on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> list[np.ndarray]:
        """One call per tile: the replica's batch queue groups them with other jobs' tiles."""

        async def one(t: SRTile) -> dict:
            item = {"image": t.image, "scale": t.scale, "prompt": t.prompt,
                    "negative_prompt": t.negative_prompt, "seed": t.seed, "job_id": t.job_id,
                    "tile_px": t.tile_px}
            return await self._call("sr", lambda: self.handle.sr_tile.remote(item), cancelled)

        tasks = [asyncio.ensure_future(one(t)) for t in tiles]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()  # each cancels its own outstanding call
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for r in results:
            if "error" in r:
                raise RuntimeError(f"diffusion SR failed in a replica: {r['error']}")
            if r["seconds"] is None:  # the call's figures came with its first tile
                continue
            if observe:
                self.costs.observe_sr(r["seconds"], r["tiles"], r["tile_px"])
            if self.on_sr_call is not None:
                self.on_sr_call(r["tiles"], r["jobs"])
        return [r["image"] for r in results]

    async def light_sr(self, crop: np.ndarray, scale: int, tile_px: int | None = None
                       ) -> np.ndarray:
        image, seconds = await self._call(
            "light", lambda: self.handle.light_sr.remote(crop, scale))
        if tile_px:
            self.costs.observe_light(seconds, tile_px)
        return image

    @property
    def light_batch(self) -> int:
        return 1  # the light replica takes one crop per call

    async def light_sr_batch(self, crops: list[np.ndarray], scale: int, tile_px: int,
                             observe: bool = True) -> list[np.ndarray]:
        share = tile_px // max(1, len(crops)) if observe else None
        return [await self.light_sr(crop, scale, share) for crop in crops]

    # -- one call through the handle: cancel, retry, backpressure --------------------------

    async def _call(self, kind: str, make: Callable[[], Any],
                    cancelled: threading.Event | None = None, stream: bool = False,
                    on_step: StepCallback | None = None, busy_is_error: bool = False) -> Any:
        """Run one handle call to the end, retrying where a replica died or the queue was
        full; a job cancelled meanwhile cancels the call in the replica."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

        transient = (ActorDiedError, ActorUnavailableError, RayActorError,
                     ReplicaUnavailableError)
        self.inflight[kind] += 1
        try:
            for attempt in range(RETRIES + 1):
                if cancelled is not None and cancelled.is_set():
                    raise JobCancelled()
                try:
                    if stream:
                        return await self._stream(make(), cancelled, on_step)
                    return await _until_cancelled(make(), cancelled)
                except BackPressureError:
                    if busy_is_error:
                        raise ProtocolError(ErrorCode.BUSY, "the model replicas are busy; "
                                            "retry later", retry_after_s=RETRY_AFTER_S) from None
                    if attempt == RETRIES:
                        raise
                    log.info("%s call refused by backpressure; retrying", kind)
                except transient as exc:
                    if attempt == RETRIES:
                        raise
                    log.warning("%s call lost its replica (%s); retrying", kind,
                                type(exc).__name__)
                self.retries += 1
                await asyncio.sleep(min(0.25 * 2**attempt, 2.0))
            raise AssertionError("unreachable")
        finally:
            self.inflight[kind] -= 1

    async def _stream(self, gen: Any, cancelled: threading.Event | None,
                      on_step: StepCallback | None) -> Any:
        """Read a streaming T2I call: step events go to `on_step`, the last event is the
        image and its compute seconds."""
        while True:
            event = await _until_cancelled(gen.__anext__(), cancelled, gen)
            if event[0] == "step":
                if on_step is not None:
                    on_step(event[1], event[2])
            else:
                return event[1], event[2]

    async def _refresh_replicas(self) -> None:
        _, serve = import_ray()
        from hybridsr.server.backends.ray_deployments import DEPLOYMENT

        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.app_name)
        dep = app.deployments.get(DEPLOYMENT) if app else None
        states = dep.replica_states if dep else {}
        self.replicas = sum(n for state, n in states.items() if str(state).endswith("RUNNING"))

    async def _watch_replicas(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._refresh_replicas()
            except Exception as exc:  # the controller restarting: keep the last count
                log.debug("serve.status failed: %s", exc)


async def _until_cancelled(awaitable: Awaitable | Any, cancelled: threading.Event | None,
                           response: Any = None) -> Any:
    """Await a handle call; when the job is cancelled (or this task is), cancel the call in
    the replica too: cancelling only the awaiting task does not reach it."""
    response = response if response is not None else awaitable
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if done:
                return task.result()
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
    except BaseException:
        if not task.done():
            response.cancel()
            task.cancel()
        raise
