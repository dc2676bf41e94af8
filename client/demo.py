"""`hybridsr demo`: an edge in-process on a free localhost port, one job, files to look at.

This is the one place the client touches the server package, lazily, because the demo
needs the edge's models (the `[edge]` extra); the rest of the client never imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiohttp import web

from hybridsr.client.planimage import draw_plan
from hybridsr.protocol import DEFAULT_POLICY
from hybridsr.sdk import AsyncHybridClient, HybridResult, HybridSRError
from hybridsr.sdk.job import ProgressCallback

DEFAULT_PROMPT = "a red lighthouse on a rocky coast at dusk, detailed"


async def run_demo(out: Path, *, preset: str = "tiny", prompt: str = DEFAULT_PROMPT,
                   width: int = 512, height: int = 512, seed: int = 7,
                   policy: str = DEFAULT_POLICY, device_sr: str = "auto",
                   on_progress: ProgressCallback | None = None) -> HybridResult:
    try:
        from hybridsr.server.cli import quiet_model_libraries

        quiet_model_libraries()
        from hybridsr.server import EdgeConfig, create_app
    except ImportError as exc:
        raise HybridSRError(
            f"the demo runs an edge in-process and needs the edge extra "
            f"(pip install 'hybridsr[edge]'): {exc}"
        ) from None
    from hybridsr.server.models import ModelLoadError

    out.mkdir(parents=True, exist_ok=True)
    app = create_app(EdgeConfig(preset=preset, host="127.0.0.1", port=0))
    runner = web.AppRunner(app)
    print(f"starting an edge with preset {preset!r} ...", file=sys.stderr)
    try:
        await runner.setup()
    except ModelLoadError as exc:
        raise HybridSRError(str(exc)) from None
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with AsyncHybridClient(f"ws://127.0.0.1:{port}", device_sr=device_sr) as client:
            models = client.connection.welcome.models
            note = " (RANDOM weights: the image is noise-like; it shows the pipeline, not quality)"
            print(f"edge on 127.0.0.1:{port}: T2I {models.t2i}, SR {models.sr}"
                  f"{note if models.random_weights else ''}", file=sys.stderr)
            result = await client.generate(prompt, width=width, height=height, seed=seed,
                                           policy=policy, on_progress=on_progress)
    finally:
        await runner.cleanup()

    result.image.save(out / "final.png")
    result.lr_image.save(out / "lr.png")
    draw_plan(result.lr_image, result.plan).save(out / "plan.png")
    report = result.report()
    report["prompt"] = prompt
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return result
