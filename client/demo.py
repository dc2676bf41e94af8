"""`hybridsr demo`: edges in-process on free localhost ports, two jobs, files to look at.

1. text-to-image on the `tiny` preset (random weights: it shows the pipeline, not quality);
2. a real photograph enhanced x4 on the `realesrgan` preset (real weights, offline), with the
   original as ground truth; its results page is `index.html`.

This is the one place the client touches the server package, lazily, because the demo
needs the edge's models (the `[edge]` extra); the rest of the client never imports it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from hybridsr.client.page import write_page
from hybridsr.client.planimage import draw_plan
from hybridsr.protocol import DEFAULT_POLICY
from hybridsr.sdk import AsyncHybridClient, HybridResult, HybridSRError
from hybridsr.sdk.job import ProgressCallback

DEFAULT_PROMPT = "a red lighthouse on a rocky coast at dusk, detailed"
PHOTO_CREDIT = ("Astronaut Eileen Collins, NASA (public domain), as shipped in scikit-image's "
                "data; the original is the ground truth, the input is it downscaled x4.")


@contextlib.asynccontextmanager
async def local_edge(preset: str, device_sr: str) -> AsyncIterator[AsyncHybridClient]:
    """An edge with `preset` on a free 127.0.0.1 port and a client connected to it."""
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
            yield client
    finally:
        await runner.cleanup()


def save_job(result: HybridResult, out: Path, **extra: object) -> None:
    """final.png, lr.png, plan.png and report.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    result.image.save(out / "final.png")
    result.lr_image.save(out / "lr.png")
    draw_plan(result.lr_image, result.plan).save(out / "plan.png")
    report = {**result.report(), **extra}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


async def run_demo(out: Path, *, preset: str = "tiny", prompt: str = DEFAULT_PROMPT,
                   width: int = 512, height: int = 512, seed: int = 7,
                   policy: str = DEFAULT_POLICY, device_sr: str = "auto",
                   on_progress: ProgressCallback | None = None) -> HybridResult:
    """The text-to-image job: files in `out`, its page in `out/generate.html`."""
    async with local_edge(preset, device_sr) as client:
        result = await client.generate(prompt, width=width, height=height, seed=seed,
                                       policy=policy, on_progress=on_progress)
    save_job(result, out, prompt=prompt)
    write_page(result, out / "generate.html", title=f"hybridsr: “{prompt}”",
               notes=(f"Text-to-image on the {preset!r} preset.",))
    return result


def demo_photo() -> tuple[np.ndarray, str] | None:
    """A real photograph from an installed package (scikit-image's), or None."""
    try:
        from skimage import data
    except ImportError:
        return None
    return np.asarray(data.astronaut())[..., :3], PHOTO_CREDIT


async def run_photo_demo(out: Path, photo: np.ndarray, *, credit: str = "",
                         ground_truth: bool = True, policy: str = DEFAULT_POLICY,
                         device_sr: str = "auto",
                         on_progress: ProgressCallback | None = None) -> HybridResult:
    """Enhance a photo x4 with real Real-ESRGAN weights; files in `out/photo`, page `index.html`.

    With `ground_truth`, the photo is first downscaled x4 and the original shown beside.
    """
    h, w = photo.shape[:2]
    original = Image.fromarray(photo)
    lr = (original.crop((0, 0, w // 4 * 4, h // 4 * 4))
          .resize((w // 4, h // 4), Image.Resampling.BICUBIC) if ground_truth else original)
    async with local_edge("realesrgan", device_sr) as client:
        result = await client.enhance(np.asarray(lr), scale=4, policy=policy,
                                      on_progress=on_progress)
    save_job(result, out / "photo")
    reference = original.crop((0, 0, w // 4 * 4, h // 4 * 4)) if ground_truth else None
    notes = ["A real photograph enhanced x4 with real weights, offline: Real-ESRGAN x4plus for "
             "salient tiles at the edge, the compact Real-ESRGAN for light SR on the device.",
             "The text-to-image job of this demo (random weights) is in generate.html."]
    if credit:
        notes.append(credit)
    write_page(result, out / "index.html", title="hybridsr: a photograph, enhanced x4",
               notes=tuple(notes), reference=reference)
    return result
