"""Super-resolve several images concurrently over one connection with the async client.

    python examples/enhance_async.py ws://127.0.0.1:8765 a.png b.png
"""

import asyncio
import sys
from pathlib import Path

from hybridsr.sdk import AsyncHybridClient, ProgressEvent


def show(name: str):
    def on_progress(event: ProgressEvent) -> None:
        if event.stage == "tiles":
            print(f"{name}: {event.done}/{event.total} tiles", end="\r", file=sys.stderr)

    return on_progress


async def main(edge: str, paths: list[str]) -> None:
    async with AsyncHybridClient(edge) as client:
        results = await asyncio.gather(
            *(client.enhance(p, scale=4, on_progress=show(p)) for p in paths)
        )
    for path, result in zip(paths, results, strict=True):
        out = Path(path).with_suffix(".x4.png")
        result.image.save(out)
        print(f"{out}: {result.image.size}, {result.timings.total:.2f}s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
