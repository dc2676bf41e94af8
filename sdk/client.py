"""`AsyncHybridClient` and `HybridClient`: one core, an async and a sync face.

    async with AsyncHybridClient("ws://edge:8765") as client:
        result = await client.generate("a lighthouse at dusk", width=512, height=512)
        result.image.save("out.png")
"""

from __future__ import annotations

import asyncio
import random
import ssl as ssl_module
import threading
import uuid
from collections.abc import Coroutine
from ssl import SSLContext
from typing import Any, TypeVar

import numpy as np

from hybridsr.imaging.lightsr import DeviceSR, create_backend
from hybridsr.imaging.sizes import generate_size
from hybridsr.protocol import (
    DEFAULT_POLICY,
    ClientStats,
    DeviceProfile,
    Enhance,
    Generate,
    encode_image,
)
from hybridsr.sdk.connection import Connection
from hybridsr.sdk.errors import EdgeRefused, EdgeUnavailable, HybridSRError
from hybridsr.sdk.inputs import (
    ImageInput,
    PreparedImage,
    enhance_scale,
    prepare_image,
    restore,
)
from hybridsr.sdk.job import DeviceJob, ProgressCallback, StageTimeouts
from hybridsr.sdk.link import LinkProfile
from hybridsr.sdk.probe import probe_device
from hybridsr.sdk.profile_cache import profile_cache
from hybridsr.sdk.result import HybridResult

T = TypeVar("T")
RETRYABLE = frozenset({"busy", "rate_limited", "shutting_down"})


def backoff_delay(attempt: int, retry_after_s: float | None, cap_s: float = 30.0) -> float:
    """Exponential backoff from the edge's hint, with jitter so clients do not stampede."""
    base = max(retry_after_s or 0.5, 0.05)
    return min(cap_s, base * 2**attempt) * random.uniform(0.5, 1.0)


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
    """A device's connection to one edge; jobs may run concurrently on it."""

    def __init__(self, edge: str, *, device_sr: str | DeviceSR = "auto",
                 color_fix: str = "wavelet", image_format: str = "png",
                 tile_quality: str = "high",
                 profile: DeviceProfile | None = None, benchmark: bool = True,
                 token: str | None = None, ssl: SSLContext | bool | None = None,
                 retries: int = 4, connect_timeout: float = 10.0,
                 timeouts: StageTimeouts | None = None, resume: bool = True,
                 link: LinkProfile | None = None, measure_link: bool = True,
                 runtime: str = "auto", precision: str = "exact") -> None:
        self.edge = edge
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
        self.retries = retries  # for busy / rate_limited / shutting_down, before acceptance
        self.connect_timeout = connect_timeout
        self.timeouts = timeouts or StageTimeouts()
        self.resume = resume  # reconnect and re-attach to running jobs after a lost connection
        self._reconnect_lock = asyncio.Lock()
        self.link = link  # emulated link (benchmarks, tests); None: the real network
        self.measure_link = measure_link
        self.stats: ClientStats | None = None  # latest link and device measurements
        self._conn: Connection | None = None

    async def __aenter__(self) -> AsyncHybridClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._conn is not None:
            return
        if self._profile is None:
            self._profile = await asyncio.to_thread(probe_device, self.backend, self._benchmark)
        self._conn = await Connection.open(self.edge, self._profile, token=self.token,
                                           ssl=self.ssl, link=self.link,
                                           connect_timeout=self.connect_timeout)
        if self.measure_link:
            await self.measure()

    async def measure(self, probe_bytes: int = 128 * 1024) -> ClientStats:
        """Round trip (best of 3 pings) and bandwidth each way (a padded ping each way)."""
        conn = self.connection
        rtt = min([await conn.ping() for _ in range(3)])
        down = await conn.ping(reply_bytes=probe_bytes)
        up = await conn.ping(padding=probe_bytes)
        previous = self.stats.device_sr_s_per_lr_px if self.stats else None
        self.stats = ClientStats(
            rtt_s=round(rtt, 6),
            down_bytes_per_s=probe_bytes / max(down - rtt, 1e-6),
            up_bytes_per_s=probe_bytes / max(up - rtt, 1e-6),
            device_sr_s_per_lr_px=previous,
        )
        return self.stats

    def _learn(self, job: DeviceJob) -> None:
        """Keep the device's observed SR speed for the planner's next decision."""
        if job.device_px and self.stats is not None:
            speed = job.timings.device_sr / job.device_px
            self.stats = self.stats.model_copy(update={"device_sr_s_per_lr_px": speed})
            if self._benchmark and (cache := profile_cache()) is not None:
                cache.observe(self.backend, speed * 1000.0)  # the next start need not measure

    async def _reconnect(self, broken: Connection) -> Connection:
        """A fresh connection for every job that lost `broken`; retried with backoff."""
        async with self._reconnect_lock:
            if self._conn is not None and self._conn is not broken:
                return self._conn  # another job already reconnected
            try:
                await asyncio.wait_for(broken.close(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._conn = None
            assert self._profile is not None
            deadline = asyncio.get_running_loop().time() + self.timeouts.resume
            attempt = 0
            while True:
                try:
                    self._conn = await Connection.open(
                        self.edge, self._profile, token=self.token, ssl=self.ssl,
                        link=self.link,
                        connect_timeout=min(self.connect_timeout, self.timeouts.resume))
                    return self._conn
                except EdgeUnavailable:
                    delay = backoff_delay(attempt, 0.2, cap_s=2.0)
                    if asyncio.get_running_loop().time() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    attempt += 1

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    @property
    def profile(self) -> DeviceProfile | None:
        return self._profile

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise HybridSRError("not connected: use `async with` or call connect() first")
        return self._conn

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
        await self.connect()
        w, h, edge_scale, note = generate_size(width, height, scale, policy,
                                               self.connection.welcome.limits)
        request = Generate(
            job_id=job_id or uuid.uuid4().hex, prompt=prompt, negative_prompt=negative_prompt,
            width=w, height=h, seed=seed, policy=policy, steps=steps, scale=edge_scale,
            threshold=threshold, image_format=self.image_format,
            tile_quality=self.tile_quality, latency_budget_s=latency_budget_s, top_k=top_k,
            stats=self.stats,
        )
        result = await self._run(request, None, on_progress)
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
        request = Enhance(
            job_id=job_id or uuid.uuid4().hex, image=encode_image(lr, self.image_format),
            scale=edge_scale, prompt=prompt, seed=seed, policy=policy, threshold=threshold,
            image_format=self.image_format, tile_quality=self.tile_quality, top_k=top_k,
            stats=self.stats,
        )
        result = await self._run(request, lr, on_progress)
        factor = scale if scale is not None else result.plan.scale
        size = (round(lr.shape[1] * factor), round(lr.shape[0] * factor))
        notes = [*prepared.notes, *([note] if note else [])]
        return await asyncio.to_thread(restore, result, prepared, size, self.backend, notes)

    async def _run(self, request: Generate | Enhance, lr: np.ndarray | None,
                   on_progress: ProgressCallback | None) -> HybridResult:
        for attempt in range(self.retries + 1):
            job = DeviceJob(self.connection, request, self.backend, lr_image=lr,
                            color_fix=self.color_fix, on_progress=on_progress,
                            timeouts=self.timeouts,
                            reconnect=self._reconnect if self.resume else None)
            try:
                result = await job.run()
                self._learn(job)
                return result
            except EdgeRefused as exc:
                # These refusals come before acceptance: nothing ran, resubmitting is safe.
                if exc.code not in RETRYABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(backoff_delay(attempt, exc.retry_after_s))
        raise AssertionError("unreachable")


class HybridClient:
    """Blocking client for scripts: the async core runs on a private event-loop thread."""

    def __init__(self, edge: str, **kwargs: Any) -> None:
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
