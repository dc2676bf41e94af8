"""`AsyncHybridClient` and `HybridClient`: one core, an async and a sync face.

    async with AsyncHybridClient(edges=["ws://edge-a:8765", "ws://edge-b:8765"]) as client:
        result = await client.generate("a lighthouse at dusk", width=512, height=512)
        result.image.save("out.png")

A job goes to the edge that selection ranks first (`sdk/edges.py`); moving it to another
edge, before or after the plan, is `sdk/failover.py`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
import uuid
from collections.abc import Coroutine, Sequence
from ssl import SSLContext
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from hybridsr.imaging.lightsr import DeviceSR, create_backend
from hybridsr.imaging.sizes import generate_size
from hybridsr.protocol import (
    DEFAULT_POLICY,
    ClientStats,
    DeviceProfile,
    Enhance,
    Generate,
    Quote,
    encode_image,
)
from hybridsr.sdk.connection import Connection
from hybridsr.sdk.edges import Edge, EdgePool
from hybridsr.sdk.errors import HybridSRError, InvalidEdgeURL
from hybridsr.sdk.failover import TileRescue, run_on_edges
from hybridsr.sdk.inputs import (
    ImageInput,
    PreparedImage,
    enhance_scale,
    prepare_image,
    restore,
)
from hybridsr.sdk.job import DeviceJob, ProgressCallback, Route, StageTimeouts
from hybridsr.sdk.link import LinkProfile
from hybridsr.sdk.probe import probe_device
from hybridsr.sdk.profile_cache import profile_cache
from hybridsr.sdk.result import HybridResult

T = TypeVar("T")
__all__ = ["AsyncHybridClient", "HybridClient", "load_image"]


def client_ssl_context(cafile: str | None = None) -> SSLContext:
    """TLS settings that trust `cafile` (e.g. an operator's self-signed certificate)."""
    try:
        return ssl_module.create_default_context(cafile=cafile)
    except (OSError, ssl_module.SSLError) as exc:
        raise HybridSRError(f"cannot load CA certificate {cafile!r}: {exc}") from None


def load_image(image: ImageInput) -> np.ndarray:
    """Any supported still image as HxWx3 uint8 (alpha dropped: `enhance` keeps it);
    an unreadable or animated one is an `UnsupportedImage`."""
    return prepare_image(image).rgb


class AsyncHybridClient:
    """A device's client of one edge or several; jobs may run concurrently on it."""

    def __init__(self, edge: str | Sequence[str] | None = None, *,
                 edges: Sequence[str] | None = None, selection: str = "fastest",
                 device_sr: str | DeviceSR = "auto",
                 color_fix: str = "wavelet", image_format: str = "png",
                 tile_quality: str = "high",
                 profile: DeviceProfile | None = None, benchmark: bool = True,
                 token: str | None = None, ssl: SSLContext | bool | None = None,
                 retries: int = 4, connect_timeout: float = 10.0,
                 timeouts: StageTimeouts | None = None, resume: bool = True,
                 link: LinkProfile | None = None, measure_link: bool = True,
                 runtime: str = "auto", precision: str = "exact") -> None:
        urls = _edge_list(edge, edges)
        self.pool = EdgePool(urls, self._open, selection, self._stats_for)  # checks the URLs
        self.edge = urls[0]
        self.edges = urls
        # runtime/precision: the device SR's onnxruntime|openvino and exact|fast (named backends)
        self.backend = (create_backend(device_sr, runtime=runtime, precision=precision)
                        if isinstance(device_sr, str) else device_sr)
        self.color_fix = color_fix
        self.image_format = image_format
        self.tile_quality = tile_quality  # lossless | high | balanced: lossy tiles allowed?
        self._profile = profile
        self._benchmark = benchmark
        self.token = token
        self.ssl = ssl
        self.retries = retries  # rounds over the edges while they refuse for now
        self.connect_timeout = connect_timeout
        self.timeouts = timeouts or StageTimeouts()
        self.resume = resume  # reconnect and re-attach to running jobs after a lost connection
        self.link = link  # emulated link (benchmarks, tests); None: the real network
        self.measure_link = measure_link
        self._device_speed: float | None = None  # observed s per LR px of the device's SR
        self._current: Edge = self.pool.edges[0]  # the edge of the latest job

    async def __aenter__(self) -> AsyncHybridClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Probe this device once, and open one edge (the first that answers, in order).

        The other edges are opened when a job first needs them, and kept.
        """
        await self._ensure_profile()
        if any(e.conn is not None and e.conn.closed_reason is None for e in self.pool.edges):
            return
        error: HybridSRError | None = None
        for edge in self.pool.candidates():  # in order, those on backoff only if all are
            try:
                await self.pool.connect(edge)
                return
            except HybridSRError as exc:
                error = exc
        assert error is not None
        raise error

    async def _ensure_profile(self) -> DeviceProfile:
        if self._profile is None:
            self._profile = await asyncio.to_thread(probe_device, self.backend, self._benchmark)
        return self._profile

    async def _open(self, edge: Edge, timeout: float | None) -> Connection:
        """A new connection to `edge`, its link measured (RTT, bandwidth each way)."""
        profile = await self._ensure_profile()
        conn = await Connection.open(
            edge.url, profile, token=self.token, ssl=self.ssl, link=self.link,
            connect_timeout=min(self.connect_timeout, timeout or self.connect_timeout))
        if self.measure_link and edge.stats is None:
            try:
                edge.stats = await _measure(conn)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def measure(self, probe_bytes: int = 128 * 1024) -> ClientStats:
        """Measure the link to the latest job's edge again; returns `stats`."""
        self._current.stats = await _measure(self.connection, probe_bytes)
        return self.stats

    @property
    def stats(self) -> ClientStats | None:
        """The link to the latest job's edge and this device's SR speed, as sent with jobs."""
        return self._stats_for(self._current)

    @stats.setter
    def stats(self, value: ClientStats | None) -> None:
        self._device_speed = value.device_sr_s_per_lr_px if value is not None else None
        self._current.stats = value

    def _stats_for(self, edge: Edge) -> ClientStats | None:
        if edge.stats is None:
            return None
        return edge.stats.model_copy(update={"device_sr_s_per_lr_px": self._device_speed})

    def _learn(self, job: DeviceJob) -> None:
        """Keep the device's observed SR speed for the planner's next decision."""
        if job.device_px:
            self._device_speed = job.timings.device_sr / job.device_px
            if self._benchmark and (cache := profile_cache()) is not None:
                cache.observe(self.backend, self._device_speed * 1000.0)  # next start: known

    def _device_s_per_px(self) -> float:
        """This device's light SR, seconds per LR pixel: observed, else probed, else slow."""
        if self._device_speed is not None:
            return self._device_speed
        if self._profile is not None and self._profile.sr_ms_per_lr_pixel is not None:
            return self._profile.sr_ms_per_lr_pixel / 1000
        return 1e-4

    async def close(self) -> None:
        await self.pool.close()

    @property
    def profile(self) -> DeviceProfile | None:
        return self._profile

    @property
    def connection(self) -> Connection:
        """The connection to the latest job's edge (the first edge before any job)."""
        conn = self._current.conn or next((e.conn for e in self.pool.edges if e.conn), None)
        if conn is None:
            raise HybridSRError("not connected: use `async with` or call connect() first")
        return conn

    async def generate(self, prompt: str, *, width: int = 512, height: int = 512,
                       seed: int | None = None, negative_prompt: str = "",
                       policy: str = DEFAULT_POLICY, steps: int | None = None,
                       scale: int | None = None, threshold: float | None = None,
                       latency_budget_s: float | None = None, top_k: int | None = None,
                       job_id: str | None = None, on_progress: ProgressCallback | None = None
                       ) -> HybridResult:
        """Text → HR image of exactly `width`×`height`; the edge picks the LR size from the
        scale (any size: generated at the nearest larger one the edge supports, then cropped).

        `policy` is `hybrid` (the cost-aware planner) or a fixed split; `latency_budget_s`
        lets the planner trade denoising steps for speed; `threshold` (0..1) is the saliency
        a tile needs for diffusion SR: lower means more of the image is diffusion-enhanced.
        """
        await self.connect()  # the size is fitted to the limits of the first edge that answers
        w, h, edge_scale, note = generate_size(width, height, scale, policy,
                                               self.connection.welcome.limits)
        request = _build(Generate, job_id=job_id or uuid.uuid4().hex, prompt=prompt,
                         negative_prompt=negative_prompt, width=w, height=h, seed=seed,
                         policy=policy, steps=steps, scale=edge_scale, threshold=threshold,
                         image_format=self.image_format, tile_quality=self.tile_quality,
                         latency_budget_s=latency_budget_s,
                         top_k=top_k)
        quote = _build(Quote, job_id=request.job_id, width=w, height=h, policy=policy,
                       steps=steps, scale=edge_scale, latency_budget_s=latency_budget_s)
        result = await self._run(request, quote, None, on_progress)
        return restore(result, None, (width, height), self.backend, [note] if note else [],
                       crop=True)

    async def enhance(self, image: ImageInput | PreparedImage, *, scale: float | None = None,
                      prompt: str = "", seed: int | None = None, policy: str = DEFAULT_POLICY,
                      threshold: float | None = None, top_k: int | None = None,
                      job_id: str | None = None, on_progress: ProgressCallback | None = None
                      ) -> HybridResult:
        """Super-resolve an existing image: salient tiles by the edge, the rest here.

        `scale` may be any value from 1 to the edge's largest (a scale the edge lacks is
        served by its next larger one and resized down here); alpha, greyscale and EXIF
        orientation are kept, and every conversion is noted in `result.notes`.
        """
        prepared = await asyncio.to_thread(prepare_image, image)
        await self.connect()
        edge_scale, note = enhance_scale(scale, self.connection.welcome.limits)
        lr = prepared.rgb
        blob = await asyncio.to_thread(encode_image, lr, self.image_format)
        request = _build(Enhance, job_id=job_id or uuid.uuid4().hex, image=blob,
                         scale=edge_scale, prompt=prompt, seed=seed, policy=policy,
                         threshold=threshold, image_format=self.image_format,
                         tile_quality=self.tile_quality, top_k=top_k)
        quote = _build(Quote, job_id=request.job_id, kind="enhance", width=blob.width,
                       height=blob.height, policy=policy, scale=edge_scale)
        result = await self._run(request, quote, lr, on_progress)
        factor = scale if scale is not None else result.plan.scale
        size = (round(lr.shape[1] * factor), round(lr.shape[0] * factor))
        notes = [*prepared.notes, *([note] if note else [])]
        return await asyncio.to_thread(restore, result, prepared, size, self.backend, notes)

    async def _run(self, request: Generate | Enhance, quote: Quote, lr: np.ndarray | None,
                   on_progress: ProgressCallback | None) -> HybridResult:
        """The job on the first edge that takes it (`sdk/failover.py`); every edge tried is
        in the result's `edges`, and whatever moved the job in its `moves`."""
        route = Route()

        async def attempt(edge: Edge) -> HybridResult:
            return await self._on(edge, request, lr, on_progress, route)

        return await run_on_edges(self.pool, quote, attempt, route, self.retries,
                                  min(5.0, self.connect_timeout))

    async def _on(self, edge: Edge, request: Generate | Enhance, lr: np.ndarray | None,
                  on_progress: ProgressCallback | None, route: Route) -> HybridResult:
        """The job on one edge, from submission to the result (or a raise before the plan)."""
        async with edge.lock:  # not while the cancels are being sent
            edge.orphans.pop(request.job_id, None)  # back on this edge: resume it, not cancel
        conn = await self.pool.connect(edge)
        self._current = edge
        route.visit(edge.url)
        within = self.timeouts.failover if self.pool.several else self.timeouts.resume

        async def reconnect(broken: Connection) -> Connection:
            return await self.pool.reconnect(edge, broken, within)

        job = DeviceJob(conn, request.model_copy(update={"stats": self._stats_for(edge)}),
                        self.backend, lr_image=lr, color_fix=self.color_fix,
                        on_progress=on_progress, timeouts=self.timeouts,
                        reconnect=reconnect if self.resume else None,
                        rescue=self._rescue().for_job(edge, route) if self.pool.several
                        else None,
                        route=route,
                        on_orphan=lambda cancel: self.pool.orphaned(edge, cancel))
        result = await job.run()
        self.pool.worked(edge)
        self._learn(job)
        return result

    def _rescue(self) -> TileRescue:
        return TileRescue(self.pool, self.backend, self.image_format, self.timeouts,
                          self._device_s_per_px, min(2.0, self.connect_timeout))


def _edge_list(edge: str | Sequence[str] | None, edges: Sequence[str] | None) -> list[str]:
    """`edge` (one URL or a list) or `edges`, not both; at least one."""
    if edge is not None and edges is not None:
        raise InvalidEdgeURL("give `edge` or `edges`, not both")
    given = edges if edges is not None else edge
    if given is None:
        raise InvalidEdgeURL("give an edge URL (edge=...) or several (edges=[...])")
    urls = [given] if isinstance(given, str) else list(given)
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise InvalidEdgeURL(f"edge URLs must be non-empty strings, got {given!r}")
    return urls


def _build(model: type[T], **fields: Any) -> T:
    """A request message from the caller's arguments; a bad one is a `HybridSRError`."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise HybridSRError(f"invalid argument {where}: {first['msg']}") from None


async def _measure(conn: Connection, probe_bytes: int = 128 * 1024) -> ClientStats:
    """Round trip (best of 3 pings) and bandwidth each way (a padded ping each way)."""
    rtt = min([await conn.ping() for _ in range(3)])
    down = await conn.ping(reply_bytes=probe_bytes)
    up = await conn.ping(padding=probe_bytes)
    return ClientStats(
        rtt_s=round(rtt, 6),
        down_bytes_per_s=probe_bytes / max(down - rtt, 1e-6),
        up_bytes_per_s=probe_bytes / max(up - rtt, 1e-6),
    )


class HybridClient:
    """Blocking client for scripts: the async core runs on a private event-loop thread."""

    def __init__(self, edge: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        self._client = AsyncHybridClient(edge, **kwargs)  # first: a bad argument leaks nothing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="hybridsr-client")
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise HybridSRError("this HybridClient is closed; create a new one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> HybridClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self._call(self._client.connect())

    def generate(self, prompt: str, **kwargs: Any) -> HybridResult:
        return self._call(self._client.generate(prompt, **kwargs))

    def enhance(self, image: ImageInput, **kwargs: Any) -> HybridResult:
        return self._call(self._client.enhance(image, **kwargs))

    @property
    def profile(self) -> DeviceProfile | None:
        return self._client.profile

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
