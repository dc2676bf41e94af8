"""One worker task per pipeline: a bounded queue in front of a single thread.

diffusers pipelines are not thread-safe (their schedulers keep per-call state), so each
pipeline is only ever called by its own worker, one call at a time, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class PipelineWorker:
    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        self._queue: asyncio.Queue[tuple[Callable[[], Any], asyncio.Future]] = asyncio.Queue(
            maxsize=max_queue
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"worker-{name}")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"worker-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Queue `fn` and wait for its result; raises `asyncio.QueueFull` when full."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            fn, fut = await self._queue.get()
            if fut.cancelled():  # the job went away while queued
                continue
            try:
                result = await loop.run_in_executor(self._executor, fn)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(result)
